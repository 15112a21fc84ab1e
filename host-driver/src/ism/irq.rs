//! The interrupt handler: what runs when a function's interrupt fires (or when a busy
//! poller sees a bit in the SBA).
//!
//! Order, as Linux's `ism_handle_irq`:
//! 1. clear the summary bit `s`;
//! 2. walk `dmb_bits` from SBA index 32, MSB-first; for each set bit: clear it, read and
//!    zero its `dmbe_mask`, deliver `(index, mask)` to the client that owns the DMB;
//! 3. if the event bit `e` is set: clear it and drain the IEQ by the index rule
//!    (`while last + 1 != header.idx { last = (last + 1) % entries; handle(entry[last]) }`),
//!    delivering every event to every client.
//!
//! The handler reads only the function's own SBA and IEQ.

use core::ops::RangeInclusive;

use ism_abi::wire::ieq::{Event, EventType};
use ism_abi::wire::sba::{self, SbaFlags, FIRST_DMB_INDEX, NR_DMBS};
use zerocopy::FromZeros;

use ism_hal::{DevAddr, DmaMemory, DmaMemoryExt};

/// An event taken from the IEQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsmEvent {
    /// Event type (raw; see [`IsmEvent::event_type`]).
    pub ty: u32,
    /// Event code.
    pub code: u32,
    /// DMB token (buffer events) or GID (device and software events).
    pub tok: u64,
    /// Device time stamp.
    pub time: u64,
    /// Extra information (software events: the sender's `info`).
    pub info: u64,
}

impl IsmEvent {
    /// The event type, if known.
    pub fn event_type(&self) -> Option<EventType> {
        EventType::from_raw(self.ty)
    }

    /// Whether the event is of type `t`.
    pub fn is(&self, t: EventType) -> bool {
        self.ty == t.raw()
    }

    fn from_entry(e: &Event) -> Self {
        Self {
            ty: e.ty.get(),
            code: e.code.get(),
            tok: e.tok.get(),
            time: e.time.get(),
            info: e.info.get(),
        }
    }
}

/// A user of the ISM function (SMC-D is one): receives the signals of the DMBs it registered
/// and every event. Called from the interrupt handler, so it must not block for long.
pub trait IsmClient: Send + Sync {
    /// DMB `sba_idx` (registered by this client) was signalled with DMBE mask `dmbe_mask`.
    fn handle_irq(&self, sba_idx: u32, dmbe_mask: u16);
    /// An event arrived.
    fn handle_event(&self, event: &IsmEvent);
    /// The function is gone: the platform took it away (its partition's function went
    /// down or was deconfigured) or the driver is being removed. Nothing registered with
    /// it works any more, and no signal will come; called at most once. As Linux's
    /// `ism_remove` → `smcd_unregister_dev` (`net/smc/smc_ism.c`), which ends every SMC-D
    /// connection over the device. The default does nothing.
    fn handle_function_gone(&self) {}
}

/// What one run of the handler found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqReport {
    /// DMB signals delivered.
    pub signals: u32,
    /// Events delivered.
    pub events: u32,
}

/// Producer position the driver has consumed up to; `-1` before the first event.
#[derive(Debug)]
pub(crate) struct IeqCursor {
    pub(crate) last: i64,
    pub(crate) entries: i64,
}

/// The SBA doublewords (bit `w`: bytes `8w .. 8w + 8`) that hold the bits of the SBA
/// indices set in `indices` (one bit per index, as the driver allocates them): what
/// [`take_dmb_signals`] needs to look at.
pub(crate) fn sba_words_of(indices: &[u64; NR_DMBS / 64]) -> u32 {
    // Index word j (indices 64j .. 64j + 63) sits at SBA bytes 4 + 8j .. 4 + 8j + 7: its
    // low half (in index order) in doubleword j, its high half in doubleword j + 1.
    let mut words = 0u32;
    for (j, &w) in indices.iter().enumerate() {
        if w & 0xFFFF_FFFF != 0 {
            words |= 1 << j;
        }
        if w >> 32 != 0 {
            words |= 1 << (j + 1);
        }
    }
    words
}

/// The SBA doublewords in `words` (see [`sba_words_of`]) that hold DMB bits, each with
/// the SBA bytes of those bits in it: doubleword `w` is SBA bytes `8w .. 8w + 8`.
fn bit_doublewords(words: u32) -> impl Iterator<Item = (usize, RangeInclusive<usize>)> {
    let first_byte = sba::dmb_bit(FIRST_DMB_INDEX).0;
    let last_byte = sba::dmb_bit(NR_DMBS - 1).0;
    let mut left = words;
    core::iter::from_fn(move || {
        while left != 0 {
            let w = left.trailing_zeros() as usize;
            left &= left - 1;
            let bytes = (8 * w).max(first_byte)..=(8 * w + 7).min(last_byte);
            if !bytes.is_empty() {
                return Some((w, bytes));
            }
        }
        None
    })
}

/// Step 2: clears and collects the signalled DMB bits and masks, looking only at the SBA
/// doublewords in `words` (see [`sba_words_of`]: those of registered DMBs; a signal for
/// an index that is not registered means nothing, as in Linux's `ism_handle_irq`, which
/// finds no client for it).
pub(crate) fn take_dmb_signals<M: DmaMemory + ?Sized>(
    mem: &M,
    sba_base: DevAddr,
    words: u32,
    mut deliver: impl FnMut(u32, u16),
) -> u32 {
    let mut n = 0;
    for (w, bytes) in bit_doublewords(words) {
        // One load to skip a doubleword without signals; a bit the device sets after it
        // comes with the summary bit again, so the next run finds it.
        let word = mem
            .load_u64(DevAddr(sba_base.0 + 8 * w as u64))
            .unwrap_or([0; 8]);
        for byte in bytes {
            if word[byte - 8 * w] == 0 {
                continue;
            }
            let at = DevAddr(sba_base.0 + byte as u64);
            let bits = mem.swap_u8(at, 0).unwrap_or(0);
            for bit in 0..8 {
                if bits & (0x80 >> bit) != 0 {
                    let idx = (byte - sba::DMB_BITS_OFFSET) * 8 + bit;
                    let m = sba_base.0 + sba::dmbe_mask_offset(idx) as u64;
                    deliver(idx as u32, take_mask(mem, m));
                    n += 1;
                }
            }
        }
    }
    n
}

/// Whether the SBA shows work besides a signal of SBA index `own`: the event bit, or a DMB
/// bit of another index in the doublewords `words` (see [`sba_words_of`]). Loads only,
/// nothing is taken: a waiter that has its own signal's news from the CDC asks this to
/// know whether it may leave that signal pending (`Conn::wait`).
pub(crate) fn pending_besides<M: DmaMemory + ?Sized>(
    mem: &M,
    sba_base: DevAddr,
    words: u32,
    own: usize,
) -> bool {
    let flags = mem.load_u64(sba_base).map_or(0, |w| w[0]);
    if SbaFlags::from_bits_truncate(flags).contains(SbaFlags::EVENT) {
        return true;
    }
    let (own_byte, own_mask) = sba::dmb_bit(own);
    for (w, bytes) in bit_doublewords(words) {
        // A doubleword the memory refuses reads as work: the handler then runs, as before.
        let Ok(word) = mem.load_u64(DevAddr(sba_base.0 + 8 * w as u64)) else {
            return true;
        };
        for byte in bytes {
            let mut bits = word[byte - 8 * w];
            if byte == own_byte {
                bits &= !own_mask;
            }
            if bits != 0 {
                return true;
            }
        }
    }
    false
}

/// Takes (reads and clears) the big-endian DMBE mask at `m`: its two bytes in one
/// doubleword AND where they share one (one locked instruction instead of two
/// compare-and-swaps), byte by byte otherwise.
fn take_mask<M: DmaMemory + ?Sized>(mem: &M, m: u64) -> u16 {
    if let Some((word_at, k)) = sba::dmbe_mask_word(m) {
        let mut keep = [0xFF; 8];
        keep[k..k + 2].fill(0);
        if let Ok(old) = mem.fetch_and_u64(DevAddr(word_at), keep) {
            return u16::from_be_bytes([old[k], old[k + 1]]);
        }
    }
    let hi = mem.swap_u8(DevAddr(m), 0).unwrap_or(0);
    let lo = mem.swap_u8(DevAddr(m + 1), 0).unwrap_or(0);
    u16::from_be_bytes([hi, lo])
}

/// Step 3: drains new IEQ entries by the index rule.
pub(crate) fn drain_ieq<M: DmaMemory + ?Sized>(
    mem: &M,
    ieq_base: DevAddr,
    cursor: &mut IeqCursor,
    mut deliver: impl FnMut(&IsmEvent),
) -> u32 {
    let head = mem.load_be_u64(ieq_base).unwrap_or(0) as i64;
    // A device that writes an index outside 0..=entries is broken; stop rather than loop.
    if !(0..=cursor.entries).contains(&head) {
        return 0;
    }
    let mut n = 0;
    while cursor.last + 1 != head && n < cursor.entries as u32 {
        cursor.last += 1;
        if cursor.last == cursor.entries {
            cursor.last = 0;
        }
        let at = ieq_base.0 + ism_abi::wire::ieq::entry_offset(cursor.last as usize) as u64;
        // An entry the memory refuses reads as zeros, as the driver cannot do better.
        let e = mem
            .load_words::<Event>(DevAddr(at))
            .unwrap_or_else(|_| Event::new_zeroed());
        deliver(&IsmEvent::from_entry(&e));
        n += 1;
    }
    n
}

/// Steps 1 and the flag part of 3: clears `s` and `e`, returning which were set.
pub(crate) fn take_flags<M: DmaMemory + ?Sized>(mem: &M, sba_base: DevAddr) -> SbaFlags {
    let old = mem
        .fetch_and_u8(sba_base, !(SbaFlags::SUMMARY | SbaFlags::EVENT).bits())
        .unwrap_or(0);
    SbaFlags::from_bits_truncate(old)
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn the_sba_words_of_an_index_hold_its_bit() {
        for idx in FIRST_DMB_INDEX..NR_DMBS {
            let mut indices = [0u64; NR_DMBS / 64];
            indices[idx / 64] |= 1 << (idx % 64);
            let words = sba_words_of(&indices);
            assert_eq!(words.count_ones(), 1, "index {idx}");
            let w = words.trailing_zeros() as usize;
            let byte = sba::dmb_bit(idx).0;
            assert!(
                (8 * w..8 * w + 8).contains(&byte),
                "index {idx}: byte {byte}, word {w}"
            );
        }
    }

    #[test]
    fn work_besides_an_index_is_another_registered_bit_or_an_event() {
        use ism_hal::fakes::FakeMemory;
        let sba = DevAddr(0x1000);
        let mem = FakeMemory::new(sba.0, 4096);
        let (own, other, far) = (40usize, 41usize, 700usize);
        let mut indices = [0u64; NR_DMBS / 64];
        for i in [own, other, far] {
            indices[i / 64] |= 1 << (i % 64);
        }
        let words = sba_words_of(&indices);
        let set = |idx: usize| {
            let (byte, mask) = sba::dmb_bit(idx);
            mem.fetch_or_u8(DevAddr(sba.0 + byte as u64), mask).unwrap();
        };
        let clear = || mem.zero(sba, 256).unwrap();
        assert!(!pending_besides(&mem, sba, words, own), "nothing set");
        set(own);
        mem.fetch_or_u8(sba, SbaFlags::SUMMARY.bits()).unwrap();
        assert!(
            !pending_besides(&mem, sba, words, own),
            "only our own signal"
        );
        assert!(
            pending_besides(&mem, sba, words, other),
            "ours, seen from the other"
        );
        set(other);
        assert!(
            pending_besides(&mem, sba, words, own),
            "a neighbour in our byte"
        );
        clear();
        set(far);
        assert!(
            pending_besides(&mem, sba, words, own),
            "a bit in another doubleword"
        );
        // One in a doubleword no registered DMB has is not looked at (nor handled).
        let unregistered = words & !(1 << (sba::dmb_bit(far).0 / 8));
        assert!(!pending_besides(&mem, sba, unregistered, own));
        clear();
        mem.fetch_or_u8(sba, SbaFlags::EVENT.bits()).unwrap();
        assert!(pending_besides(&mem, sba, words, own), "an event");
        // None of it was taken.
        assert_eq!(mem.load_u64(sba).unwrap()[0], SbaFlags::EVENT.bits());
    }
}
