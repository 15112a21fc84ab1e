//! A function's register object as both sides map it: control words, the command area, and
//! the store-block ring (layout in [`super::layout`]), plus the futex waits and wakes on it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ism_hal::regs::FunctionRegisters;
use ism_hal::{DevAddr, DmaMemory, MemError};

use super::layout::{self, dmb_table, peers, regs, REGS_SIZE, RING_SLOTS, SLOT_DATA};
use crate::memory::{MemoryDomain, SharedMapping};

/// The register object of one function.
pub struct RegPage {
    dom: MemoryDomain,
}

impl RegPage {
    /// Wraps a mapping of a register object (at least [`REGS_SIZE`] bytes).
    ///
    /// # Errors
    /// `InvalidInput` if the mapping is too small.
    pub fn new(map: SharedMapping) -> std::io::Result<Self> {
        if map.len() < REGS_SIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "register object too small",
            ));
        }
        Ok(Self {
            dom: MemoryDomain::from_mapping(0, map)?,
        })
    }

    /// The mapping (for [`SharedMapping::replace_backing`]).
    pub fn mapping(&self) -> &SharedMapping {
        self.dom.mapping()
    }

    /// The `u32` control word at `off` (one of [`layout::regs`]).
    pub fn word(&self, off: usize) -> &AtomicU32 {
        self.dom
            .mapping()
            .u32_at(off)
            .expect("control word offsets are inside the page")
    }

    /// The `u64` control word at `off` (8-aligned).
    pub fn word64(&self, off: usize) -> &AtomicU64 {
        self.dom
            .mapping()
            .word(off / 8)
            .expect("control word offsets are inside the page")
    }

    /// The command area.
    pub fn command(&self) -> &FunctionRegisters {
        self.dom
            .mapping()
            .registers_at(regs::COMMAND)
            .expect("command area inside the page")
    }

    /// The request word of ring slot `slot`.
    pub fn desc_request(&self, slot: u32) -> &AtomicU64 {
        self.word64(regs::DESCRIPTORS + (slot % RING_SLOTS) as usize * regs::DESCRIPTOR_LEN)
    }

    /// The length word of ring slot `slot`.
    pub fn desc_len(&self, slot: u32) -> &AtomicU32 {
        self.word(regs::DESCRIPTORS + (slot % RING_SLOTS) as usize * regs::DESCRIPTOR_LEN + 8)
    }

    /// The status word of ring slot `slot`.
    pub fn desc_status(&self, slot: u32) -> &AtomicU32 {
        self.word(regs::DESCRIPTORS + (slot % RING_SLOTS) as usize * regs::DESCRIPTOR_LEN + 12)
    }

    fn slot_addr(slot: u32) -> DevAddr {
        DevAddr((regs::SLOT_DATA_BASE + (slot % RING_SLOTS) as usize * SLOT_DATA) as u64)
    }

    /// Copies `data` (at most 4096 bytes) into slot `slot`'s data.
    ///
    /// # Errors
    /// `OutOfBounds` if `data` is longer than a slot.
    pub fn write_slot(&self, slot: u32, data: &[u8]) -> Result<(), MemError> {
        if data.len() > SLOT_DATA {
            return Err(MemError::OutOfBounds);
        }
        self.dom.write(Self::slot_addr(slot), data)
    }

    /// Copies slot `slot`'s first `buf.len()` bytes (at most 4096) into `buf`.
    ///
    /// # Errors
    /// `OutOfBounds` if `buf` is longer than a slot.
    pub fn read_slot(&self, slot: u32, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.len() > SLOT_DATA {
            return Err(MemError::OutOfBounds);
        }
        self.dom.read(Self::slot_addr(slot), buf)
    }

    /// Zeroes the whole object and writes the identification words (board side, before
    /// the object is handed to a host).
    pub fn initialise(&self, function: u32, gid: u64) {
        let _ = self.dom.zero(DevAddr(0), REGS_SIZE as u64);
        self.word(regs::VERSION)
            .store(layout::SPEC_VERSION, Ordering::Relaxed);
        self.word(regs::FUNCTION).store(function, Ordering::Relaxed);
        self.word64(regs::GID).store(gid, Ordering::Relaxed);
        self.word(regs::BOARD_STATE)
            .store(layout::BOARD_RUNNING, Ordering::Relaxed);
        self.word64(regs::MAGIC)
            .store(u64::from_ne_bytes(layout::REGS_MAGIC), Ordering::Release);
    }

    /// Whether the object carries the magic and `version`.
    pub fn is_valid(&self) -> bool {
        self.word64(regs::MAGIC).load(Ordering::Acquire) == u64::from_ne_bytes(layout::REGS_MAGIC)
            && self.word(regs::VERSION).load(Ordering::Relaxed) == layout::SPEC_VERSION
    }
}

/// The peer table of a loopback board (layout in [`layout::peers`]): each function's
/// interrupt words, its SBA's address and its direct-move counters, mapped by the board
/// and every host of the board.
pub struct PeerTable {
    dom: MemoryDomain,
    entries: usize,
}

impl PeerTable {
    /// Wraps a mapping of a peer table of `entries` functions.
    ///
    /// # Errors
    /// `InvalidInput` if the mapping is smaller than `entries` entries.
    pub fn new(map: SharedMapping, entries: usize) -> std::io::Result<Self> {
        if map.len() < Self::size(entries) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "peer table too small",
            ));
        }
        Ok(Self {
            dom: MemoryDomain::from_mapping(0, map)?,
            entries,
        })
    }

    /// Bytes of a table of `entries` functions, with its DMB table.
    pub const fn size(entries: usize) -> usize {
        Self::dmb_table_offset(entries)
            + dmb_table::HEADER_LEN
            + dmb_table::ENTRIES * dmb_table::ENTRY_LEN
    }

    /// Where the DMB table starts (after the functions' entries).
    const fn dmb_table_offset(entries: usize) -> usize {
        entries * peers::ENTRY_LEN
    }

    /// The DMB table's `PUBLISHED` counter.
    pub fn published(&self) -> &AtomicU64 {
        self.dom
            .mapping()
            .word((Self::dmb_table_offset(self.entries) + dmb_table::PUBLISHED) / 8)
            .expect("the table's size is checked when made")
    }

    /// Byte offset of field `off` of DMB-table entry `i`, if there is such an entry.
    fn dmb_field(&self, i: usize, off: usize) -> Option<usize> {
        (i < dmb_table::ENTRIES).then(|| {
            Self::dmb_table_offset(self.entries)
                + dmb_table::HEADER_LEN
                + i * dmb_table::ENTRY_LEN
                + off
        })
    }

    /// The `u64` field at `off` (8-aligned) of DMB-table entry `i`.
    pub fn dmb_word64(&self, i: usize, off: usize) -> Option<&AtomicU64> {
        self.dmb_field(i, off)
            .and_then(|o| self.dom.mapping().word(o / 8))
    }

    /// The `u32` field at `off` of DMB-table entry `i`.
    pub fn dmb_word(&self, i: usize, off: usize) -> Option<&AtomicU32> {
        self.dmb_field(i, off)
            .and_then(|o| self.dom.mapping().u32_at(o))
    }

    /// Function `f`'s moving words ([`peers::MOVING`]).
    pub fn moving(&self, f: usize) -> impl Iterator<Item = &AtomicU64> {
        (0..peers::MOVING_SLOTS).filter_map(move |k| self.word64(f, peers::MOVING + 8 * k))
    }

    /// Number of entries (the board's `max_functions`).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The `u32` word at `off` of function `f`'s entry (`None` past the table).
    pub fn word(&self, f: usize, off: usize) -> Option<&AtomicU32> {
        (f < self.entries)
            .then(|| self.dom.mapping().u32_at(f * peers::ENTRY_LEN + off))
            .flatten()
    }

    /// The `u64` word at `off` (8-aligned) of function `f`'s entry (`None` past the table).
    pub fn word64(&self, f: usize, off: usize) -> Option<&AtomicU64> {
        (f < self.entries)
            .then(|| self.dom.mapping().word((f * peers::ENTRY_LEN + off) / 8))
            .flatten()
    }

    /// Zeroes function `f`'s entry (board side, when a host attaches to `f` or leaves it).
    pub fn reset(&self, f: usize) {
        if f < self.entries {
            let _ = self.dom.zero(
                DevAddr((f * peers::ENTRY_LEN) as u64),
                peers::ENTRY_LEN as u64,
            );
        }
    }
}

/// Where a function's interrupt words (`IRQ`, `IRQ_WAITERS`, `HOST_POLLERS`) live: in its
/// register object on an LPAR board, in its peer-table entry on a loopback board.
#[derive(Clone)]
pub enum IrqWords {
    /// The register object's words.
    Page(Arc<RegPage>),
    /// Entry `f` of the peer table (`f` < its entries, checked when made).
    Peer(Arc<PeerTable>, usize),
}

impl IrqWords {
    fn at(&self, reg: usize, peer: usize) -> &AtomicU32 {
        match self {
            IrqWords::Page(p) => p.word(reg),
            IrqWords::Peer(t, f) => t.word(*f, peer).expect("entry checked when made"),
        }
    }

    /// Entry `f` of `table`, or `None` if the table has no such entry.
    pub fn peer(table: &Arc<PeerTable>, f: usize) -> Option<Self> {
        (f < table.entries()).then(|| IrqWords::Peer(table.clone(), f))
    }

    /// `IRQ`: 1 = interrupt pending (futex word).
    pub fn irq(&self) -> &AtomicU32 {
        self.at(regs::IRQ, peers::IRQ)
    }

    /// `IRQ_WAITERS`: host threads sleeping on `IRQ`.
    pub fn waiters(&self) -> &AtomicU32 {
        self.at(regs::IRQ_WAITERS, peers::IRQ_WAITERS)
    }

    /// `HOST_POLLERS`: host threads polling the SBA themselves.
    pub fn pollers(&self) -> &AtomicU32 {
        self.at(regs::HOST_POLLERS, peers::HOST_POLLERS)
    }

    /// Raises the interrupt (host-interface.md 5.4): `IRQ = 1`, then a sleeper is woken
    /// unless a host thread polls the SBA itself (it finds the work without a wake-up,
    /// which would only take a core from it). The fence pairs with the host's after it
    /// stops polling. `IRQ` may already be 1 from a raise held back so, with the interrupt
    /// thread asleep: a sleeper is woken whatever `IRQ` was.
    pub fn raise(&self) {
        raise_on(self.irq(), self.waiters(), self.pollers());
    }
}

impl PeerTable {
    /// Raises function `f`'s interrupt as [`IrqWords::raise`] does (a direct move's
    /// signal); nothing for an `f` past the table.
    pub fn raise(&self, f: usize) {
        if let (Some(irq), Some(waiters), Some(pollers)) = (
            self.word(f, peers::IRQ),
            self.word(f, peers::IRQ_WAITERS),
            self.word(f, peers::HOST_POLLERS),
        ) {
            raise_on(irq, waiters, pollers);
        }
    }
}

/// How long a raise that finds a sleeping interrupt thread and no poller waits for a
/// host thread to start polling (or to take the interrupt) before it wakes the sleeper.
/// A reader between two waits (back from one read, not yet in the next) is that gap: a
/// ping-pong's next message often comes within it, and a wake-up then costs the raiser a
/// system call and both programs a core on a 2-core machine (docs/benchmarks.md,
/// optimisation 14).
pub const RAISE_GRACE: Duration = Duration::from_micros(1);

fn raise_on(irq: &AtomicU32, waiters: &AtomicU32, pollers: &AtomicU32) {
    irq.swap(1, Ordering::SeqCst);
    std::sync::atomic::fence(Ordering::SeqCst);
    if needs_wake(irq, waiters, pollers, RAISE_GRACE) {
        futex_wake(irq);
    }
}

/// Whether a raise (`IRQ` just set, then a fence) must wake the interrupt thread: one
/// sleeps, and in `grace` no host thread started polling and nobody took `IRQ`. A poller
/// that starts after the raise makes its last look at the SBA after it stops (5.4), and
/// whoever takes `IRQ` runs the handler for what it did not read itself: either way no
/// wake-up is needed. A function whose last two graces ended in a wake-up all the same
/// (its readers sleep in the kernel, as `ism-run`'s do) is woken at once, and tried again
/// every 32nd raise ([`GraceMisses`]).
fn needs_wake(irq: &AtomicU32, waiters: &AtomicU32, pollers: &AtomicU32, grace: Duration) -> bool {
    if waiters.load(Ordering::SeqCst) == 0 || pollers.load(Ordering::SeqCst) != 0 {
        return false;
    }
    let misses = GraceMisses::of(irq);
    if !misses.try_grace() {
        return true;
    }
    let start = std::time::Instant::now();
    let mut n = 0u32;
    loop {
        if pollers.load(Ordering::SeqCst) != 0 || irq.load(Ordering::SeqCst) == 0 {
            misses.hit();
            return false;
        }
        n = n.wrapping_add(1);
        // The clock only every 16th look: a look is a few nanoseconds, a clock read tens.
        if n.is_multiple_of(16) && start.elapsed() >= grace {
            misses.missed();
            return waiters.load(Ordering::SeqCst) > 0;
        }
        std::hint::spin_loop();
    }
}

/// How many raises in a row this process made to an interrupt word whose grace ended in a
/// wake-up all the same (a saturating count), kept per word in this process (a few
/// slots by the word's address; two words sharing one share the guess, which only costs
/// a grace or a wake-up).
struct GraceMisses(&'static std::sync::atomic::AtomicU8);

/// The slots of [`GraceMisses`].
static GRACE_MISSES: [std::sync::atomic::AtomicU8; 64] =
    [const { std::sync::atomic::AtomicU8::new(0) }; 64];

impl GraceMisses {
    fn of(irq: &AtomicU32) -> Self {
        let slot = (irq as *const AtomicU32 as usize >> 2) % GRACE_MISSES.len();
        Self(&GRACE_MISSES[slot])
    }

    /// Whether this raise waits for a poller: unless the last two did not find one, and
    /// then every 32nd raise (counted on) to see whether that changed.
    fn try_grace(&self) -> bool {
        let m = self.0.load(Ordering::Relaxed);
        if m < 2 || m.is_multiple_of(32) {
            return true;
        }
        self.missed();
        false
    }

    fn hit(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// One more miss (or skipped grace): 255 wraps back to 2.
    fn missed(&self) {
        let m = self.0.load(Ordering::Relaxed);
        self.0
            .store(if m == u8::MAX { 2 } else { m + 1 }, Ordering::Relaxed);
    }
}

/// Sleeps on `word` while it holds `expected`, for at most `timeout` (shared futex: the
/// word lives in memory another process maps). Returns early on a wake, a changed value,
/// or a signal.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    use rustix::thread::futex;
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every thread (of any process) sleeping on `word`.
pub fn futex_wake(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::empty(), u32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raise_wakes_a_sleeper_only_if_no_poller_starts_and_nobody_takes_it() {
        let (irq, waiters, pollers) = (AtomicU32::new(1), AtomicU32::new(0), AtomicU32::new(0));
        let no_grace = Duration::ZERO;
        assert!(
            !needs_wake(&irq, &waiters, &pollers, no_grace),
            "nobody sleeps"
        );
        waiters.store(1, Ordering::SeqCst);
        assert!(needs_wake(&irq, &waiters, &pollers, no_grace));
        pollers.store(1, Ordering::SeqCst);
        assert!(
            !needs_wake(&irq, &waiters, &pollers, no_grace),
            "a poller finds it"
        );
        pollers.store(0, Ordering::SeqCst);
        // Within the grace: a poller starts, or a host thread takes the interrupt.
        let long = Duration::from_secs(30);
        for (word, value) in [(&pollers, 1), (&irq, 0)] {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    word.store(value, Ordering::SeqCst);
                });
                assert!(!needs_wake(&irq, &waiters, &pollers, long));
            });
            assert!(start.elapsed() < long / 2, "it waited out the grace");
            pollers.store(0, Ordering::SeqCst);
            irq.store(1, Ordering::SeqCst);
        }
        // A grace that ends with a sleeper, no poller and the interrupt still raised.
        assert!(needs_wake(
            &irq,
            &waiters,
            &pollers,
            Duration::from_millis(5)
        ));
        // Twice: from then on the sleeper is woken at once (a long grace would show),
        // except every 32nd raise, which waits again.
        assert!(needs_wake(
            &irq,
            &waiters,
            &pollers,
            Duration::from_millis(5)
        ));
        let start = std::time::Instant::now();
        let mut waited = 0;
        for _ in 0..64 {
            let t = std::time::Instant::now();
            assert!(needs_wake(
                &irq,
                &waiters,
                &pollers,
                Duration::from_millis(20)
            ));
            if t.elapsed() >= Duration::from_millis(20) {
                waited += 1;
            }
        }
        assert!((1..=3).contains(&waited), "{waited} of 64 waited");
        assert!(start.elapsed() < Duration::from_millis(20 * 10));
        // A poller there: no wake-up, whatever the count.
        pollers.store(1, Ordering::SeqCst);
        assert!(!needs_wake(&irq, &waiters, &pollers, long));
    }

    #[test]
    fn slots_round_trip_and_wrap() {
        let p = RegPage::new(SharedMapping::heap(REGS_SIZE)).unwrap();
        p.initialise(3, 0x1234);
        assert!(p.is_valid());
        p.write_slot(RING_SLOTS + 1, &[7; 100]).unwrap();
        let mut b = [0u8; 100];
        p.read_slot(1, &mut b).unwrap();
        assert_eq!(b, [7; 100]);
        assert!(p.write_slot(0, &[0; SLOT_DATA + 1]).is_err());
        p.desc_len(5).store(9, Ordering::Relaxed);
        assert_eq!(p.desc_len(5 + RING_SLOTS).load(Ordering::Relaxed), 9);
    }
}
