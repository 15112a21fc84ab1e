//! Memory domains as the device sees them.
//!
//! A domain is addressed by *device addresses* (`DevAddr`), the values a host writes into
//! REG_SBA, REG_IEQ and REG_DMB. An implementation checks every access against the domain's
//! bounds and returns [`MemError`] instead of touching anything outside it: the firmware relies
//! on this as its last line of defence, on top of its own checks.
//!
//! Bulk data ([`DmaMemory::write`], [`DmaMemory::read`]) is copied without atomicity; the
//! protocols above it (DMB signalling, SMC cursors) order those copies. The status block (SBA)
//! and the event queue (IEQ) are read and written by host and device at the same time, so
//! they go through the atomic accessors.

use crate::ids::DevAddr;

/// Why a memory access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemError {
    /// Some byte of `[addr, addr + len)` lies outside the domain (or the range overflows).
    OutOfBounds,
    /// An atomic access was not naturally aligned.
    Misaligned,
}

impl MemError {
    /// A short, stable description.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemError::OutOfBounds => "address range outside the memory domain",
            MemError::Misaligned => "atomic access not naturally aligned",
        }
    }
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for MemError {}

/// The memory of one domain, addressed by device address.
///
/// All methods take `&self`: several functions (and their hosts) use a domain at once.
/// Implementations must be safe to call from several threads whenever they are `Sync`.
pub trait DmaMemory {
    /// Lowest valid device address of the domain.
    fn base(&self) -> DevAddr;

    /// Size of the domain in bytes; valid addresses are `base .. base + size`.
    fn size(&self) -> u64;

    /// Whether `[addr, addr + len)` lies inside the domain.
    fn contains(&self, addr: DevAddr, len: u64) -> bool {
        let base = self.base().0;
        match (addr.0.checked_sub(base), addr.0.checked_add(len)) {
            (Some(off), Some(_)) => off <= self.size() && len <= self.size() - off,
            _ => false,
        }
    }

    /// Copies `buf.len()` bytes from `addr` into `buf`.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`] if the range is not inside the domain; nothing is read.
    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError>;

    /// Copies `data` to `addr`.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`] if the range is not inside the domain; nothing is written.
    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError>;

    /// Fills `[addr, addr + len)` with zero bytes.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`] if the range is not inside the domain; nothing is written.
    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError>;

    /// Atomically loads the 8 bytes at `addr` (acquire ordering), in memory order.
    ///
    /// # Errors
    /// [`MemError::Misaligned`] unless `addr` is 8-byte aligned; [`MemError::OutOfBounds`].
    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError>;

    /// Atomically stores 8 bytes at `addr` (release ordering), in memory order.
    ///
    /// # Errors
    /// [`MemError::Misaligned`] unless `addr` is 8-byte aligned; [`MemError::OutOfBounds`].
    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError>;

    /// Atomically ORs `mask` into the byte at `addr`; returns the previous value.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`].
    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError>;

    /// Atomically ANDs `mask` into the byte at `addr`; returns the previous value.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`].
    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError>;

    /// Atomically replaces the byte at `addr` with `value`; returns the previous value.
    ///
    /// # Errors
    /// [`MemError::OutOfBounds`].
    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError>;
}

impl<M: DmaMemory + ?Sized> DmaMemory for &M {
    fn base(&self) -> DevAddr {
        (**self).base()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(addr, buf)
    }
    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        (**self).write(addr, data)
    }
    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        (**self).zero(addr, len)
    }
    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        (**self).load_u64(addr)
    }
    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        (**self).store_u64(addr, bytes)
    }
    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        (**self).fetch_or_u8(addr, mask)
    }
    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        (**self).fetch_and_u8(addr, mask)
    }
    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        (**self).swap_u8(addr, value)
    }
}
