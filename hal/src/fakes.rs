//! Fakes of every HAL trait, for unit tests here and in the crates above.
//!
//! They favour obviousness over speed: memory is a `Vec<u8>` behind a lock, so every access
//! is atomic and Miri-clean.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::vec;
use std::vec::Vec;

use crate::board::Board;
use crate::clock::Clock;
use crate::ids::{DevAddr, DomainId, FunctionId};
use crate::irq::InterruptLine;
use crate::memory::{DmaMemory, MemError};

/// A memory domain backed by a locked byte vector.
pub struct FakeMemory {
    base: u64,
    bytes: spin::Mutex<Vec<u8>>,
}

impl FakeMemory {
    /// `size` zero bytes at device addresses `base..base + size`.
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            bytes: spin::Mutex::new(vec![0; size]),
        }
    }

    fn range(&self, addr: DevAddr, len: u64) -> Result<core::ops::Range<usize>, MemError> {
        if !self.contains(addr, len) {
            return Err(MemError::OutOfBounds);
        }
        let start = (addr.0 - self.base) as usize;
        Ok(start..start + len as usize)
    }

    /// A copy of `len` bytes at `addr` (test convenience; panics out of bounds).
    pub fn snapshot(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(DevAddr(addr), &mut v)
            .expect("snapshot in bounds");
        v
    }
}

impl DmaMemory for FakeMemory {
    fn base(&self) -> DevAddr {
        DevAddr(self.base)
    }
    fn size(&self) -> u64 {
        self.bytes.lock().len() as u64
    }
    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(addr, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes.lock()[r]);
        Ok(())
    }
    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(addr, data.len() as u64)?;
        self.bytes.lock()[r].copy_from_slice(data);
        Ok(())
    }
    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        let r = self.range(addr, len)?;
        self.bytes.lock()[r].fill(0);
        Ok(())
    }
    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(b)
    }
    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        self.write(addr, &bytes)
    }
    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        let r = self.range(addr, 1)?;
        let mut m = self.bytes.lock();
        let old = m[r.start];
        m[r.start] = old | mask;
        Ok(old)
    }
    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        let r = self.range(addr, 1)?;
        let mut m = self.bytes.lock();
        let old = m[r.start];
        m[r.start] = old & mask;
        Ok(old)
    }
    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        let r = self.range(addr, 1)?;
        let mut m = self.bytes.lock();
        let old = m[r.start];
        m[r.start] = value;
        Ok(old)
    }
}

/// An interrupt line that counts how often it was raised.
#[derive(Default)]
pub struct FakeIrq {
    raised: AtomicU32,
}

impl FakeIrq {
    /// Times raised so far.
    pub fn count(&self) -> u32 {
        self.raised.load(Ordering::SeqCst)
    }
    /// Returns the count and resets it (the host "handled" the interrupt).
    pub fn take(&self) -> u32 {
        self.raised.swap(0, Ordering::SeqCst)
    }
}

impl InterruptLine for FakeIrq {
    fn raise(&self) {
        self.raised.fetch_add(1, Ordering::SeqCst);
    }
}

/// A clock that advances by one on every reading.
#[derive(Default)]
pub struct FakeClock {
    t: AtomicU64,
}

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.t.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// A board with `domains` memories and `functions` interrupt lines.
pub struct FakeBoard {
    /// The memory domains, indexed by `DomainId`.
    pub memories: Vec<FakeMemory>,
    /// The interrupt lines, indexed by `FunctionId`.
    pub irqs: Vec<FakeIrq>,
    /// The clock.
    pub clock: FakeClock,
    /// Answer of `may_map` for equal domains (no-copy offered); unequal ones never are.
    pub shared_memory: bool,
}

impl FakeBoard {
    /// `domains` domains of `size` bytes each, domain `d` based at `(d + 1) << 32` (so an
    /// address of one domain is never valid in another), and `functions` interrupt lines.
    pub fn new(domains: usize, size: usize, functions: usize) -> Self {
        Self {
            memories: (0..domains)
                .map(|d| FakeMemory::new(((d as u64) + 1) << 32, size))
                .collect(),
            irqs: (0..functions).map(|_| FakeIrq::default()).collect(),
            clock: FakeClock::default(),
            shared_memory: false,
        }
    }
}

impl Board for FakeBoard {
    type Memory = FakeMemory;
    type Irq = FakeIrq;
    type Clock = FakeClock;

    fn memory(&self, domain: DomainId) -> Option<&FakeMemory> {
        self.memories.get(domain.0 as usize)
    }
    fn irq(&self, function: FunctionId) -> Option<&FakeIrq> {
        self.irqs.get(function.index())
    }
    fn clock(&self) -> &FakeClock {
        &self.clock
    }
    fn may_map(&self, a: DomainId, b: DomainId) -> bool {
        self.shared_memory && a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        let m = FakeMemory::new(0x1000, 64);
        assert!(m.write(DevAddr(0x1000), &[1; 64]).is_ok());
        assert_eq!(
            m.write(DevAddr(0x1001), &[1; 64]),
            Err(MemError::OutOfBounds)
        );
        assert_eq!(m.write(DevAddr(0xFFF), &[1]), Err(MemError::OutOfBounds));
        assert_eq!(
            m.read(DevAddr(u64::MAX), &mut [0; 2]),
            Err(MemError::OutOfBounds)
        );
        assert_eq!(m.load_u64(DevAddr(0x1004)), Err(MemError::Misaligned));
        assert_eq!(
            m.fetch_or_u8(DevAddr(0x1040), 1),
            Err(MemError::OutOfBounds)
        );
        assert!(m.contains(DevAddr(0x1040), 0));
        assert!(!m.contains(DevAddr(0x1040), 1));
    }

    #[test]
    fn typed_words_round_trip_and_refuse_whole() {
        use crate::memory::DmaMemoryExt;
        let m = FakeMemory::new(0x1000, 64);
        let v: [u64; 3] = [1, u64::MAX, 0x0102_0304_0506_0708];
        m.store_words(DevAddr(0x1008), &v).unwrap();
        assert_eq!(m.load_words::<[u64; 3]>(DevAddr(0x1008)), Ok(v));
        m.store_be_u64(DevAddr(0x1000), 0x1122).unwrap();
        assert_eq!(m.snapshot(0x1000, 8), [0, 0, 0, 0, 0, 0, 0x11, 0x22]);
        assert_eq!(m.load_be_u64(DevAddr(0x1000)), Ok(0x1122));
        // Misaligned address or odd size, and a range past the end: nothing written.
        assert_eq!(
            m.store_words(DevAddr(0x1004), &v),
            Err(MemError::Misaligned)
        );
        assert_eq!(
            m.store_words(DevAddr(0x1000), &[1u8; 12]),
            Err(MemError::Misaligned)
        );
        assert_eq!(
            m.store_words(DevAddr(0x1030), &[7u64; 3]),
            Err(MemError::OutOfBounds)
        );
        assert_eq!(m.snapshot(0x1030, 16), [0; 16]);
        assert_eq!(
            m.load_words::<[u64; 3]>(DevAddr(0x1030)),
            Err(MemError::OutOfBounds)
        );
    }

    #[test]
    fn atomics_return_the_old_value() {
        let m = FakeMemory::new(0, 8);
        assert_eq!(m.fetch_or_u8(DevAddr(3), 0x81), Ok(0));
        assert_eq!(m.fetch_and_u8(DevAddr(3), 0x01), Ok(0x81));
        assert_eq!(m.swap_u8(DevAddr(3), 7), Ok(0x01));
        assert_eq!(m.load_u64(DevAddr(0)), Ok([0, 0, 0, 7, 0, 0, 0, 0]));
    }

    #[test]
    fn doubleword_atomics_by_default_go_byte_by_byte() {
        let m = FakeMemory::new(0, 16);
        let mask = [0, 0x10, 0x01, 0, 0, 0, 0, 0x80];
        assert_eq!(m.fetch_or_u64(DevAddr(8), mask), Ok([0; 8]));
        assert_eq!(m.load_u64(DevAddr(8)), Ok(mask));
        let keep = [0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(m.fetch_and_u64(DevAddr(8), keep), Ok(mask));
        assert_eq!(m.load_u64(DevAddr(8)), Ok([0, 0, 0, 0, 0, 0, 0, 0x80]));
        assert_eq!(m.fetch_or_u64(DevAddr(4), mask), Err(MemError::Misaligned));
        assert_eq!(
            m.fetch_and_u64(DevAddr(16), keep),
            Err(MemError::OutOfBounds)
        );
    }

    #[test]
    fn pin_line_drives_an_output_pin() {
        use crate::irq::PinLine;
        use core::convert::Infallible;
        struct Pin(bool);
        impl embedded_hal::digital::ErrorType for Pin {
            type Error = Infallible;
        }
        impl embedded_hal::digital::OutputPin for Pin {
            fn set_low(&mut self) -> Result<(), Infallible> {
                self.0 = false;
                Ok(())
            }
            fn set_high(&mut self) -> Result<(), Infallible> {
                self.0 = true;
                Ok(())
            }
        }
        let line = PinLine::new(Pin(true));
        line.raise();
        line.lower();
        line.raise();
        assert!(line.into_inner().0);
    }
}
