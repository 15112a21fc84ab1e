//! The lease under several threads, written for Miri's data-race detector: movers write a
//! plain (non-atomic) payload while they hold a lease, the control thread writes it after
//! `revoke` returns ("frees" it). If the lease did not order every mover's write before
//! `revoke`'s return (a weaker ordering on the guard's release, a revoke that does not wait),
//! Miri reports a data race; a lease taken after revoke fails the `freed` check. Also run
//! natively by `cargo test`. Miri: `cargo +nightly miri test -p ism-firmware --test
//! lease_threads`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ism_firmware::lease::Lease;

/// Memory a lease guards, accessed without atomics.
struct Payload(UnsafeCell<u64>);

// SAFETY: every access below is ordered by the lease under test (movers only while holding
// a lease, the control thread only after `revoke` returned, or before `publish`); that
// ordering is exactly the claim these tests check, and Miri reports any access that is not.
unsafe impl Sync for Payload {}

impl Payload {
    /// # Safety
    /// No other thread accesses the payload concurrently.
    unsafe fn add(&self, v: u64) {
        // SAFETY: exclusive by the caller's contract.
        unsafe { *self.0.get() = (*self.0.get()).wrapping_add(v) }
    }
}

/// Rounds per mover: small, Miri is slow.
const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };

/// Movers running while the control thread revokes, republishes under a new generation and
/// revokes again: no lease outlives a revoke, and a stale generation never gets one.
#[test]
fn movers_never_overlap_a_revoke() {
    let lease = Arc::new(Lease::new());
    let payload = Arc::new(Payload(UnsafeCell::new(0)));
    let freed = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let gen = lease.publish(100);
    let movers: Vec<_> = (0..3)
        .map(|_| {
            let (lease, payload, freed, taken) =
                (lease.clone(), payload.clone(), freed.clone(), taken.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    if let Some(_g) = lease.acquire(Some(gen)) {
                        assert!(!freed.load(Ordering::Relaxed), "lease after revoke");
                        taken.fetch_add(1, Ordering::Relaxed);
                        // Several movers hold leases at once, so they only read; a read
                        // still races with the control thread's write after revoke unless
                        // the lease orders the two.
                        // SAFETY: read-only while leases are held; the control thread
                        // writes only after revoke.
                        let _ = unsafe { *payload.0.get() };
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    std::thread::yield_now();
    assert!(lease.revoke());
    freed.store(true, Ordering::Relaxed);
    // SAFETY: revoke returned: no lease is held and none can be taken.
    unsafe { payload.add(1) };
    // A new generation: the movers ask for the old one and get nothing.
    let next = lease.publish(100);
    assert_ne!(next, gen);
    for m in movers {
        m.join().unwrap();
    }
    assert!(lease.revoke());
    // SAFETY: all threads joined.
    assert_eq!(unsafe { *payload.0.get() }, 1);
    assert!(taken.load(Ordering::Relaxed) <= 3 * ROUNDS as u64);
}

/// One writer at a time under the lease (the device serialises writers of one DMB by
/// other means; here a flag does), then a revoke from another thread: every write before
/// the revoke is visible after it, with no race.
#[test]
fn writes_under_a_lease_happen_before_revoke_returns() {
    let lease = Arc::new(Lease::new());
    let payload = Arc::new(Payload(UnsafeCell::new(0)));
    let gen = lease.publish(u32::MAX);
    let writer = {
        let (lease, payload) = (lease.clone(), payload.clone());
        std::thread::spawn(move || {
            let mut wrote = 0u64;
            for _ in 0..ROUNDS {
                match lease.acquire(Some(gen)) {
                    Some(_g) => {
                        // SAFETY: the only mover; the control thread waits in revoke.
                        unsafe { payload.add(1) };
                        wrote += 1;
                    }
                    None => break,
                }
            }
            wrote
        })
    };
    let revoker = {
        let lease = lease.clone();
        std::thread::spawn(move || lease.revoke())
    };
    assert!(revoker.join().unwrap());
    // SAFETY: revoke returned, so every write under a lease happened before this read.
    let seen = unsafe { *payload.0.get() };
    let wrote = writer.join().unwrap();
    assert_eq!(seen, wrote, "a write after revoke returned");
}
