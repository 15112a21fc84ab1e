//! Loom models of the protocols where the device and the hosts meet without a lock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ism-firmware --release --test loom` (and
//! `--lib` for the lease's own model); `scripts/test.sh` does both with
//! `CARGO_TARGET_DIR=target/loom`. Without `--cfg loom` this file is empty.
//!
//! Under `cfg(loom)` the firmware library compiles only its `lease` module, so:
//! * the **move-vs-unregister** models use the real [`ism_firmware::lease::Lease`];
//! * the **SBA signal/clear**, **cursor update** and **quiet page** (`ism-run`'s, between
//!   two libraries: preload/src/quiet.rs) models are self-contained replicas of the
//!   protocol, step by step and with the same memory orderings as the code they model
//!   (named at each model), over loom atomics. A change to those functions must be
//!   mirrored here.
//!
//! Each protocol also has a model of a plausible mistake, marked `#[should_panic]`, to show
//! that the model does detect a broken protocol.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use loom::sync::Arc;
use loom::thread;

use ism_firmware::lease::Lease;

/// Explores every interleaving of `f` (no preemption bound: the models are small enough,
/// about 12 s for the whole file in release).
fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = None;
    b.check(f);
}

// ------------------------------------------------------------------ SBA signal / clear

/// Summary bit `s` in SBA byte 0 (`SbaFlags::SUMMARY`).
const SUMMARY: u8 = 0x80;
/// The DMB's bit in its `dmb_bits` byte (`sba::dmb_bit`).
const DMB_BIT: u8 = 0x20;
/// The DMBE mask bit of DMBE 0 (`sba::dmbe_mask_bit(0)` = 0x1000, high byte).
const MASK_BIT: u8 = 0x10;

/// The three SBA places the protocol touches. The sim's memory domain does every byte
/// operation as an `AcqRel` read-modify-write (`MemoryDomain::fetch_or_u8`, `fetch_and_u8`,
/// `swap_u8`), which is what this uses; the DMBE mask's two bytes change together, in one
/// doubleword read-modify-write (`fetch_or_u64` / `fetch_and_u64`), so one atomic stands
/// for them (`mask_hi`).
#[derive(Default)]
struct Sba {
    flags: AtomicU8,
    dmb_bits: AtomicU8,
    mask_hi: AtomicU8,
}

/// Model of `Device::signal_dmb` (firmware/src/device.rs): DMBE mask, DMB bit, summary;
/// the interrupt is raised afterwards (the model's "next run" stands for it). `mask_first`
/// false models the mistake of setting the DMB bit before the mask.
fn device_signal(sba: &Sba, mask_first: bool) {
    if mask_first {
        sba.mask_hi.fetch_or(MASK_BIT, Ordering::AcqRel);
        sba.dmb_bits.fetch_or(DMB_BIT, Ordering::AcqRel);
    } else {
        sba.dmb_bits.fetch_or(DMB_BIT, Ordering::AcqRel);
        sba.mask_hi.fetch_or(MASK_BIT, Ordering::AcqRel);
    }
    sba.flags.fetch_or(SUMMARY, Ordering::AcqRel);
}

/// Model of one run of `IsmDriver::handle_irq` (host-driver/src/ism/driver.rs) for one DMB:
/// `irq::take_flags` clears the summary, then `irq::take_dmb_signals` swaps the DMB byte to
/// zero and, for a set bit, takes the mask (`irq::take_mask`) and delivers it. Returns the delivered
/// mask, if any. `clear_summary_first` false models the mistake of clearing the summary
/// after the walk.
fn handler_run(sba: &Sba, clear_summary_first: bool) -> Option<u8> {
    if clear_summary_first {
        sba.flags.fetch_and(!SUMMARY, Ordering::AcqRel);
    }
    let bits = sba.dmb_bits.swap(0, Ordering::AcqRel);
    let delivered = (bits & DMB_BIT != 0).then(|| sba.mask_hi.swap(0, Ordering::AcqRel));
    if !clear_summary_first {
        sba.flags.fetch_and(!SUMMARY, Ordering::AcqRel);
    }
    delivered
}

/// A signal raised concurrently with a handler run: when both are done, either the run
/// delivered it, with its DMBE mask bit, or the DMB bit and the summary are still set, so
/// the next run (which the interrupt raised after the summary triggers, and which a poller
/// finds through `irq_pending`) delivers it.
fn sba_model(mask_first: bool, clear_summary_first: bool) {
    check(move || {
        let sba = Arc::new(Sba::default());
        let device = {
            let sba = sba.clone();
            thread::spawn(move || device_signal(&sba, mask_first))
        };
        let delivered = handler_run(&sba, clear_summary_first);
        device.join().unwrap();
        match delivered {
            Some(mask) => assert!(mask & MASK_BIT != 0, "delivered without its DMBE mask"),
            None => {
                let flags = sba.flags.load(Ordering::Acquire);
                let bits = sba.dmb_bits.load(Ordering::Acquire);
                assert!(
                    flags & SUMMARY != 0 && bits & DMB_BIT != 0,
                    "signal lost: not delivered and not pending (flags {flags:#x}, bits {bits:#x})"
                );
                // The next run delivers it.
                let next = handler_run(&sba, clear_summary_first);
                assert!(next.is_some_and(|m| m & MASK_BIT != 0), "next run delivers");
            }
        }
    });
}

#[test]
fn sba_signal_is_never_lost() {
    sba_model(true, true);
}

#[test]
#[should_panic(expected = "signal lost")]
fn sba_model_catches_summary_cleared_after_the_walk() {
    sba_model(true, false);
}

#[test]
#[should_panic(expected = "delivered without its DMBE mask")]
fn sba_model_catches_dmb_bit_before_mask() {
    sba_model(false, true);
}

// ------------------------------------------------------------------ move vs unregister

/// Model of `Device::try_store_block` racing `Device::unreg_dmb` and a re-registration of
/// the same table slot, with the real `Lease` (`DmbTable::lease` / `revoke` / `publish`).
/// The DMB's memory is a loom `UnsafeCell`: a move's write that is not ordered before the
/// new owner's use of the memory is a data race, which loom reports. Also: a mover holding
/// the stale generation never gets a lease on the new registration.
#[test]
fn move_never_touches_a_dmb_after_unregister() {
    check(|| {
        let lease = Arc::new(Lease::new());
        let memory = Arc::new(UnsafeCell::new(0u8));
        let gen = lease.publish(10);
        let mover = {
            let (lease, memory) = (lease.clone(), memory.clone());
            thread::spawn(move || {
                if let Some(_g) = lease.acquire(Some(gen)) {
                    // SAFETY: the lease is held; loom checks the claim that nobody else
                    // uses the memory meanwhile.
                    memory.with_mut(|p| unsafe { *p = 0xAA });
                    true
                } else {
                    false
                }
            })
        };
        // UNREG_DMB: revoke, after which the memory is the OS's again (freed, reused).
        lease.revoke();
        // SAFETY: after `revoke` no lease is held; loom checks it.
        memory.with_mut(|p| unsafe { *p = 0 });
        // REG_DMB of the same slot: a new generation.
        let gen2 = lease.publish(10);
        assert_ne!(gen, gen2);
        let moved = mover.join().unwrap();
        // SAFETY: the mover has finished.
        let v = memory.with(|p| unsafe { *p });
        assert_eq!(
            v, 0,
            "the old move landed after the unregister (moved {moved})"
        );
        assert!(
            lease.acquire(Some(gen)).is_none(),
            "stale generation accepted"
        );
        assert!(lease.acquire(Some(gen2)).is_some());
    });
}

/// Two moves and an unregister: `revoke` waits for both leases.
#[test]
fn revoke_waits_for_every_mover() {
    check(|| {
        let lease = Arc::new(Lease::new());
        let freed = Arc::new(AtomicBool::new(false));
        let gen = lease.publish(10);
        let movers: Vec<_> = (0..2)
            .map(|_| {
                let (lease, freed) = (lease.clone(), freed.clone());
                thread::spawn(move || {
                    if let Some(_g) = lease.acquire(Some(gen)) {
                        assert!(!freed.load(Ordering::Acquire), "write after free");
                    }
                })
            })
            .collect();
        assert!(lease.revoke());
        freed.store(true, Ordering::Release);
        for m in movers {
            m.join().unwrap();
        }
    });
}

/// The mistake the lease prevents: checking "registered" and then writing, without holding
/// anything across the two steps.
#[test]
#[should_panic(expected = "Causality violation")]
fn unguarded_move_model_races() {
    check(|| {
        let live = Arc::new(AtomicBool::new(true));
        let memory = Arc::new(UnsafeCell::new(0u8));
        let mover = {
            let (live, memory) = (live.clone(), memory.clone());
            thread::spawn(move || {
                if live.load(Ordering::Acquire) {
                    // SAFETY: (deliberately wrong) nothing keeps the DMB registered here.
                    memory.with_mut(|p| unsafe { *p = 0xAA });
                }
            })
        };
        live.store(false, Ordering::Release);
        // SAFETY: (deliberately wrong) the mover may still be writing.
        memory.with_mut(|p| unsafe { *p = 0 });
        mover.join().unwrap();
    });
}

// ------------------------------------------------------------------ cursor update

/// Ring size of the model (small, so the writer wraps and must wait for the reader).
const RING: u64 = 2;
/// Bytes the writer sends.
const BYTES: u64 = 3;

/// `cursor()` of host-driver/src/smcd/conn.rs, packed as the model's cursor word.
fn cursor_word(total: u64) -> u64 {
    ((total / RING) << 32) | (total % RING)
}

/// `Cursor::diff` (host-driver/src/smcd/cdc.rs) on two cursor words, clamped to the ring.
fn diff(old: u64, new: u64) -> u64 {
    let (ow, oc, nw, nc) = (old >> 32, old & 0xFFFF_FFFF, new >> 32, new & 0xFFFF_FFFF);
    let d = if ow != nw {
        (RING as i64 - oc as i64) + nc as i64
    } else {
        nc as i64 - oc as i64
    };
    d.clamp(0, RING as i64) as u64
}

/// The two partitions' shared state: the receiver's ring (a DMB) and the two CDC cursor
/// words as they sit in each side's RMB.
struct Link {
    ring: [UnsafeCell<u8>; RING as usize],
    /// The writer's producer cursor in the reader's RMB (written by the writer's CDC move).
    prod: AtomicU64,
    /// The reader's consumer cursor in the writer's RMB (written by its consumer update).
    cons: AtomicU64,
}

/// Model of `Conn::write` (conn.rs): free space from the peer's consumer cursor
/// (`peer_space`: `ring - diff(peer.cons, cursor(prod))`, the cursor loaded with Acquire as
/// the sim memory does), copy the data into the peer's ring (`put_into_peer_ring`), then
/// publish the producer cursor with Release (`send_cdc`'s move of the CDC). `publish_first`
/// models the mistake of sending the CDC before the data.
fn writer(link: &Link, publish_first: bool) {
    let mut prod = 0u64;
    while prod < BYTES {
        let cons = link.cons.load(Ordering::Acquire);
        let space = RING - diff(cons, cursor_word(prod));
        if space == 0 {
            thread::yield_now();
            continue;
        }
        let slot = &link.ring[(prod % RING) as usize];
        if publish_first {
            link.prod.store(cursor_word(prod + 1), Ordering::Release);
        }
        // SAFETY: `space > 0`: the reader consumed this slot; loom checks it.
        slot.with_mut(|p| unsafe { *p = prod as u8 + 1 });
        prod += 1;
        if !publish_first {
            link.prod.store(cursor_word(prod), Ordering::Release);
        }
    }
}

/// Model of `Conn::read` (conn.rs): bytes available from the producer cursor in our RMB
/// (`diff(cursor(cons), peer.prod)`, loaded with Acquire), read them (`take_from_ring`),
/// advance our consumer cursor and publish it with Release (`consumer_update`'s CDC; the
/// model sends it after every read, the most frequent the real code does).
fn reader(link: &Link) {
    let mut cons = 0u64;
    while cons < BYTES {
        let prod = link.prod.load(Ordering::Acquire);
        let avail = diff(cursor_word(cons), prod);
        if avail == 0 {
            thread::yield_now();
            continue;
        }
        let slot = &link.ring[(cons % RING) as usize];
        // SAFETY: `avail > 0`: the writer published this slot; loom checks it.
        let v = slot.with(|p| unsafe { *p });
        assert_eq!(
            u64::from(v),
            cons + 1,
            "read byte {cons} before it was written"
        );
        cons += 1;
        link.cons.store(cursor_word(cons), Ordering::Release);
    }
}

/// The reader never sees a cursor ahead of the data (it reads exactly the bytes written, in
/// order, and every read is ordered after the write: no race), and the writer never
/// overwrites a slot the reader has not consumed (no race between the two on a slot).
fn cursor_model(publish_first: bool) {
    check(move || {
        let link = Arc::new(Link {
            ring: [UnsafeCell::new(0), UnsafeCell::new(0)],
            prod: AtomicU64::new(0),
            cons: AtomicU64::new(0),
        });
        let w = {
            let link = link.clone();
            thread::spawn(move || writer(&link, publish_first))
        };
        reader(&link);
        w.join().unwrap();
        assert_eq!(link.prod.load(Ordering::Acquire), cursor_word(BYTES));
    });
}

#[test]
fn cursors_never_run_ahead_of_data() {
    cursor_model(false);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn cursor_model_catches_cursor_before_data() {
    cursor_model(true);
}

// ------------------------------------------------------------------ the quiet page

/// One spinning reader in the quiet word's count (`ONE_SPINNER`, preload/src/quiet.rs).
const ONE_SPINNER: u64 = 1 << 56;

/// What two `ism-run` libraries share for one direction of a connection: the data's CDC
/// (the producer total the sender's move puts into the reader's RMB), the reader's quiet
/// page (`QUIET`: spinner count and quiet total; `RECORDS`) and its doorbell (records the
/// kernel holds in A; a `send` into B and a `recv` from A synchronise as a release and an
/// acquire would).
struct Quiet {
    cdc: AtomicU64,
    quiet: AtomicU64,
    records: AtomicU64,
    doorbell: AtomicU64,
}

/// Model of `ring_peer` (preload/src/smc.rs) after `Conn::announce` put the CDC in place:
/// `Page::try_quiet` (a load, then a compare-and-swap that needs a spinner), else
/// `Page::count_record` before the record's `send` (`count_after_send`: the mistake of
/// counting once the kernel took it). `plain_store` models the mistake of reading the
/// count, then storing the total with no compare-and-swap.
fn quiet_sender(q: &Quiet, count_after_send: bool, plain_store: bool) {
    q.cdc.store(1, Ordering::Release);
    loom::sync::atomic::fence(Ordering::SeqCst);
    let mut w = q.quiet.load(Ordering::Acquire);
    loop {
        if w < ONE_SPINNER {
            break;
        }
        if plain_store {
            q.quiet
                .store((w & !(ONE_SPINNER - 1)) | 1, Ordering::Release);
            return;
        }
        match q.quiet.compare_exchange(
            w,
            (w & !(ONE_SPINNER - 1)) | 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(now) => w = now,
        }
    }
    if !count_after_send {
        q.records.fetch_add(1, Ordering::AcqRel);
    }
    q.doorbell.fetch_add(1, Ordering::Release);
    if count_after_send {
        q.records.fetch_add(1, Ordering::AcqRel);
    }
}

/// Model of a blocking read's wait (`SmcFd::recv` and `SmcFd::wait_readable`): counts
/// itself (`Page::spinning`), looks at the CDC once, takes its count out, looks again
/// (data counts if the quiet total or a record announced it, as `Bell::fold_quiet` and
/// `Bell::collect` make it); returns whether it found the data, or must sleep in the
/// kernel on the doorbell.
fn quiet_reader(q: &Quiet) -> bool {
    q.quiet.fetch_add(ONE_SPINNER, Ordering::SeqCst);
    let seen = q.cdc.load(Ordering::Acquire) == 1;
    q.quiet.fetch_sub(ONE_SPINNER, Ordering::SeqCst);
    if seen {
        return true;
    }
    let quiet = q.quiet.load(Ordering::Acquire) & (ONE_SPINNER - 1);
    quiet == 1 && q.cdc.load(Ordering::Acquire) == 1
}

/// No wake-up is lost: a reader that did not find the data sleeps only where a record is
/// (or will be) in its doorbell; a delivery without one was seen by the reader's last
/// look. And a record in the doorbell is always counted (a read after `epoll` said
/// readable never skips its `recv` because the count says "none").
fn quiet_model(count_after_send: bool, plain_store: bool) {
    check(move || {
        let q = Arc::new(Quiet {
            cdc: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
            records: AtomicU64::new(0),
            doorbell: AtomicU64::new(0),
        });
        let s = {
            let q = q.clone();
            thread::spawn(move || quiet_sender(&q, count_after_send, plain_store))
        };
        // An `epoll` user's look at the doorbell, then its read's `collect`.
        let readable = q.doorbell.load(Ordering::Acquire) > 0;
        let counted = q.records.load(Ordering::Acquire);
        assert!(
            !readable || counted > 0,
            "a record in the doorbell that the count does not show"
        );
        let found = quiet_reader(&q);
        s.join().unwrap();
        let record = q.doorbell.load(Ordering::Acquire) > 0;
        let quiet = q.quiet.load(Ordering::Acquire) & (ONE_SPINNER - 1) == 1;
        assert!(found || record, "the reader sleeps and no record comes");
        assert!(
            record != quiet,
            "a delivery both quiet and recorded, or neither"
        );
    });
}

#[test]
fn a_quiet_delivery_never_loses_a_wake_up() {
    quiet_model(false, false);
}

#[test]
#[should_panic(expected = "the reader sleeps and no record comes")]
fn quiet_model_catches_a_total_stored_without_compare_and_swap() {
    quiet_model(false, true);
}

#[test]
#[should_panic(expected = "a record in the doorbell that the count does not show")]
fn quiet_model_catches_a_record_counted_after_its_send() {
    quiet_model(true, false);
}
