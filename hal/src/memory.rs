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

use zerocopy::{FromBytes, Immutable, IntoBytes};

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

    /// Atomically ORs `mask` (bytes in memory order) into the doubleword at `addr`; returns
    /// its previous bytes. One operation where the memory can do it, so that a field of
    /// several bytes (an SBA's big-endian DMBE mask) changes at once and costs one locked
    /// instruction, not one per byte.
    ///
    /// The default goes byte by byte ([`DmaMemory::fetch_or_u8`] on each byte `mask`
    /// changes, in ascending address order; the others' previous values from one
    /// [`DmaMemory::load_u64`] before): each byte atomic, not the doubleword.
    ///
    /// # Errors
    /// [`MemError::Misaligned`] unless `addr` is 8-byte aligned; [`MemError::OutOfBounds`]
    /// (nothing changed).
    fn fetch_or_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        bytewise(self, addr, mask, 0, |m, a, b| m.fetch_or_u8(a, b))
    }

    /// Atomically ANDs `mask` (bytes in memory order) into the doubleword at `addr`;
    /// returns its previous bytes. As [`DmaMemory::fetch_or_u64`], also for its default.
    ///
    /// # Errors
    /// As [`DmaMemory::fetch_or_u64`].
    fn fetch_and_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        bytewise(self, addr, mask, 0xFF, |m, a, b| m.fetch_and_u8(a, b))
    }
}

/// The byte-by-byte defaults of [`DmaMemory::fetch_or_u64`] and
/// [`DmaMemory::fetch_and_u64`]: `op` on each byte of the doubleword at `addr` whose mask
/// byte is not `idle` (what changes nothing: 0 for OR, 0xFF for AND).
fn bytewise<M: DmaMemory + ?Sized>(
    mem: &M,
    addr: DevAddr,
    mask: [u8; 8],
    idle: u8,
    op: impl Fn(&M, DevAddr, u8) -> Result<u8, MemError>,
) -> Result<[u8; 8], MemError> {
    if !addr.0.is_multiple_of(8) {
        return Err(MemError::Misaligned);
    }
    if !mem.contains(addr, 8) {
        return Err(MemError::OutOfBounds);
    }
    let mut old = mem.load_u64(addr)?;
    for (i, (o, m)) in old.iter_mut().zip(mask).enumerate() {
        if m != idle {
            *o = op(mem, DevAddr(addr.0 + i as u64), m)?;
        }
    }
    Ok(old)
}

/// Typed accesses on any [`DmaMemory`]: a whole wire layout (a zerocopy struct whose size is
/// a multiple of 8, such as an IEQ entry or header) or one big-endian doubleword, through the
/// atomic 8-byte accessors, so that a concurrent reader never sees a torn doubleword.
pub trait DmaMemoryExt: DmaMemory {
    /// Stores `value` at `addr`, one atomic doubleword at a time in ascending address order.
    ///
    /// # Errors
    /// [`MemError::Misaligned`] unless `addr` is 8-byte aligned and the size of `T` a
    /// multiple of 8; [`MemError::OutOfBounds`] if the range is not inside the domain. Nothing
    /// is written on an error.
    fn store_words<T: IntoBytes + Immutable>(
        &self,
        addr: DevAddr,
        value: &T,
    ) -> Result<(), MemError> {
        let bytes = value.as_bytes();
        if !addr.0.is_multiple_of(8) || !bytes.len().is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        if !self.contains(addr, bytes.len() as u64) {
            return Err(MemError::OutOfBounds);
        }
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let mut w = [0; 8];
            w.copy_from_slice(word);
            self.store_u64(DevAddr(addr.0 + 8 * i as u64), w)?;
        }
        Ok(())
    }

    /// Loads a `T` from `addr`, one atomic doubleword at a time in ascending address order.
    ///
    /// # Errors
    /// As [`DmaMemoryExt::store_words`].
    fn load_words<T: FromBytes + IntoBytes>(&self, addr: DevAddr) -> Result<T, MemError> {
        let mut value = T::new_zeroed();
        let bytes = value.as_mut_bytes();
        if !addr.0.is_multiple_of(8) || bytes.len() % 8 != 0 {
            return Err(MemError::Misaligned);
        }
        if !self.contains(addr, bytes.len() as u64) {
            return Err(MemError::OutOfBounds);
        }
        for (i, word) in bytes.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&self.load_u64(DevAddr(addr.0 + 8 * i as u64))?);
        }
        Ok(value)
    }

    /// Atomically loads the big-endian `u64` at `addr` (acquire).
    ///
    /// # Errors
    /// As [`DmaMemory::load_u64`].
    fn load_be_u64(&self, addr: DevAddr) -> Result<u64, MemError> {
        self.load_u64(addr).map(u64::from_be_bytes)
    }

    /// Atomically stores `value` big-endian at `addr` (release).
    ///
    /// # Errors
    /// As [`DmaMemory::store_u64`].
    fn store_be_u64(&self, addr: DevAddr, value: u64) -> Result<(), MemError> {
        self.store_u64(addr, value.to_be_bytes())
    }
}

impl<M: DmaMemory + ?Sized> DmaMemoryExt for M {}

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
    fn fetch_or_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        (**self).fetch_or_u64(addr, mask)
    }
    fn fetch_and_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        (**self).fetch_and_u64(addr, mask)
    }
}
