//! The self-test's board: two memory domains in static RAM, one interrupt pin per function
//! and a counting clock.
//!
//! Everything here is safe code. The Cortex-M4 has one core and the self-test takes no
//! interrupts, but the board still does what a real one must: every access to a domain
//! happens inside a critical section (`cortex_m::interrupt::free`), so byte ORs and 64-bit
//! stores are atomic with respect to anything else on the core.

use core::cell::{Cell, RefCell};
use core::convert::Infallible;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::interrupt::{self, Mutex};
use embedded_hal::digital::{ErrorType, OutputPin};
use ism_hal::irq::PinLine;
use ism_hal::{Board, Clock, DevAddr, DmaMemory, DomainId, FunctionId, MemError};

/// Size of each memory domain in bytes.
pub const DOMAIN_SIZE: usize = 32 * 1024;

/// The backing store of one domain: a static array behind a critical-section mutex.
pub type DomainCell = Mutex<RefCell<[u8; DOMAIN_SIZE]>>;

/// A backing store, all zero (lands in `.bss`).
pub const fn domain_cell() -> DomainCell {
    Mutex::new(RefCell::new([0; DOMAIN_SIZE]))
}

/// A memory domain: `DOMAIN_SIZE` bytes of static RAM seen by the device at `base`.
///
/// A `Domain` is a handle (it is `Copy`): the board owns one for the device, and the
/// self-test keeps another to play the host, reading what the device wrote.
#[derive(Clone, Copy)]
pub struct Domain {
    base: DevAddr,
    cell: &'static DomainCell,
}

impl Domain {
    /// A domain over `cell`, based at device address `base`.
    pub const fn new(base: u64, cell: &'static DomainCell) -> Self {
        Self {
            base: DevAddr(base),
            cell,
        }
    }

    /// Index range of `[addr, addr + len)` in the backing array, or `OutOfBounds`.
    fn range(&self, addr: DevAddr, len: usize) -> Result<Range<usize>, MemError> {
        if !self.contains(addr, len as u64) {
            return Err(MemError::OutOfBounds);
        }
        // `contains` checked `base <= addr` and `addr + len <= base + DOMAIN_SIZE`.
        let start = (addr.0 - self.base.0) as usize;
        Ok(start..start + len)
    }

    /// Index of the 8-byte word at `addr`: `Misaligned` unless `addr` is 8-byte aligned.
    fn word(&self, addr: DevAddr) -> Result<Range<usize>, MemError> {
        if addr.0 % 8 != 0 {
            return Err(MemError::Misaligned);
        }
        self.range(addr, 8)
    }

    /// Runs `f` on the backing array inside a critical section.
    fn with<R>(&self, f: impl FnOnce(&mut [u8; DOMAIN_SIZE]) -> R) -> R {
        interrupt::free(|cs| f(&mut self.cell.borrow(cs).borrow_mut()))
    }

    /// Read-modify-write of one byte; returns the previous value.
    fn update_u8(&self, addr: DevAddr, op: impl FnOnce(u8) -> u8) -> Result<u8, MemError> {
        let r = self.range(addr, 1)?;
        Ok(self.with(|m| {
            let old = m[r.start];
            m[r.start] = op(old);
            old
        }))
    }
}

impl DmaMemory for Domain {
    fn base(&self) -> DevAddr {
        self.base
    }

    fn size(&self) -> u64 {
        DOMAIN_SIZE as u64
    }

    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(addr, buf.len())?;
        self.with(|m| buf.copy_from_slice(&m[r]));
        Ok(())
    }

    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(addr, data.len())?;
        self.with(|m| m[r].copy_from_slice(data));
        Ok(())
    }

    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        let len = usize::try_from(len).map_err(|_| MemError::OutOfBounds)?;
        let r = self.range(addr, len)?;
        self.with(|m| m[r].fill(0));
        Ok(())
    }

    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        let r = self.word(addr)?;
        let mut out = [0; 8];
        self.with(|m| out.copy_from_slice(&m[r]));
        Ok(out)
    }

    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        let r = self.word(addr)?;
        self.with(|m| m[r].copy_from_slice(&bytes));
        Ok(())
    }

    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        self.update_u8(addr, |b| b | mask)
    }

    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        self.update_u8(addr, |b| b & mask)
    }

    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        self.update_u8(addr, |_| value)
    }
}

/// An output pin that only records its level (high = interrupt pending) in a flag the
/// self-test can watch: the stand-in for a GPIO wired to a host's interrupt input.
pub struct LevelPin {
    level: &'static AtomicBool,
}

impl LevelPin {
    /// A pin driving `level`.
    pub const fn new(level: &'static AtomicBool) -> Self {
        Self { level }
    }
}

impl ErrorType for LevelPin {
    type Error = Infallible;
}

impl OutputPin for LevelPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.level.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.level.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A monotonic clock: a counter that advances by one microsecond (1000 units) per reading.
/// The device only needs monotonic time stamps, and a counter keeps the test deterministic.
pub struct TickClock {
    now: Mutex<Cell<u64>>,
}

impl TickClock {
    /// A clock at zero.
    pub const fn new() -> Self {
        Self {
            now: Mutex::new(Cell::new(0)),
        }
    }
}

impl Default for TickClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TickClock {
    fn now(&self) -> u64 {
        interrupt::free(|cs| {
            let c = self.now.borrow(cs);
            let t = c.get() + 1000;
            c.set(t);
            t
        })
    }
}

/// Two partitions, each with its own memory domain and one ISM function whose interrupt
/// line is an [`ism_hal::irq::PinLine`] over a [`LevelPin`] (the embedded-hal path).
/// Moves copy between domains; no-copy attach is not offered.
pub struct SelfTestBoard {
    domains: [Domain; 2],
    irqs: [PinLine<LevelPin>; 2],
    clock: TickClock,
}

impl SelfTestBoard {
    /// A board over `domains` (domain `i` is `DomainId(i)`), with function `i`'s interrupt
    /// pin driving `levels[i]`.
    pub fn new(domains: [Domain; 2], levels: [&'static AtomicBool; 2]) -> Self {
        Self {
            domains,
            irqs: levels.map(|l| PinLine::new(LevelPin::new(l))),
            clock: TickClock::new(),
        }
    }

    /// The host acknowledges `f`'s interrupt (drives its pin low).
    pub fn lower_irq(&self, f: FunctionId) {
        if let Some(line) = self.irqs.get(f.index()) {
            line.lower();
        }
    }
}

impl Board for SelfTestBoard {
    type Memory = Domain;
    type Irq = PinLine<LevelPin>;
    type Clock = TickClock;

    fn memory(&self, domain: DomainId) -> Option<&Domain> {
        self.domains.get(usize::from(domain.0))
    }

    fn irq(&self, function: FunctionId) -> Option<&PinLine<LevelPin>> {
        self.irqs.get(function.index())
    }

    fn clock(&self) -> &TickClock {
        &self.clock
    }

    fn may_map(&self, _a: DomainId, _b: DomainId) -> bool {
        false
    }
}
