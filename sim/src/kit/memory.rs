//! A partition's memory: one contiguous, page-aligned mapping that the device reaches by
//! device address, plus the partition OS's allocator for DMA buffers in it.
//!
//! This module holds the simulator's only `unsafe` code: raw accesses into the mapping.
//! Every access is bounds-checked first, and accesses that host and device make at the same
//! time are atomic:
//! * the SBA and IEQ through the byte and 8-byte atomics of [`DmaMemory`];
//! * small (at most 64 bytes), 8-byte-aligned copies, such as a 32-byte SMC-D CDC message,
//!   are done as 8-byte atomic loads and stores (release stores, acquire loads), as the
//!   real store-block updates doublewords block-concurrently. That is what makes "data, then
//!   CDC with signal" a release/acquire pair for the reader.
//!
//! Larger copies are plain `memcpy`s: the protocols on top never let two parties touch the
//! same bulk bytes at once.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use ism_hal::{DevAddr, DmaMemory, MemError};

/// Alignment of a mapping (a page).
pub const PAGE: usize = 4096;

/// Copies of at most this many bytes, 8-aligned, are made of atomic doublewords.
pub const ATOMIC_COPY_MAX: usize = 64;

/// One contiguous mapping at device addresses `base .. base + size`.
pub struct MemoryDomain {
    ptr: NonNull<u8>,
    size: usize,
    base: u64,
}

// SAFETY: the mapping is plain memory owned by this value; all shared access goes through
// `&self` methods that either use atomics or copy bytes the callers' protocols keep disjoint,
// so sharing it between threads is sound in the same way as sharing a `[AtomicU8]`.
unsafe impl Send for MemoryDomain {}
// SAFETY: see `Send`.
unsafe impl Sync for MemoryDomain {}

impl MemoryDomain {
    /// A zeroed mapping of `size` bytes (rounded up to a page) at device address `base`
    /// (which must be page-aligned).
    ///
    /// # Panics
    /// If `size` is 0, `base` is not page-aligned, or the allocation fails.
    pub fn new(base: u64, size: usize) -> Self {
        assert!(
            size > 0 && base.is_multiple_of(PAGE as u64),
            "bad memory domain geometry"
        );
        let size = size.div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(size, PAGE).expect("domain layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, size, base }
    }

    /// Offset of `[addr, addr + len)` in the mapping, if inside it.
    fn offset(&self, addr: DevAddr, len: usize) -> Result<usize, MemError> {
        if self.contains(addr, len as u64) {
            Ok((addr.0 - self.base) as usize)
        } else {
            Err(MemError::OutOfBounds)
        }
    }

    fn atomic_u8(&self, addr: DevAddr) -> Result<&AtomicU8, MemError> {
        let off = self.offset(addr, 1)?;
        // SAFETY: `off < size`, so the pointer is inside the live mapping, which outlives
        // `&self`; `AtomicU8` has alignment 1; every concurrent access to SBA/IEQ bytes goes
        // through atomics.
        Ok(unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) })
    }

    fn atomic_u64(&self, addr: DevAddr) -> Result<&AtomicU64, MemError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let off = self.offset(addr, 8)?;
        // SAFETY: `off + 8 <= size` inside the live mapping; the mapping is page-aligned and
        // `base` is page-aligned, so `addr % 8 == 0` makes the pointer 8-aligned.
        Ok(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    fn small_aligned(addr: DevAddr, len: usize) -> bool {
        len <= ATOMIC_COPY_MAX && len.is_multiple_of(8) && addr.0.is_multiple_of(8)
    }
}

impl Drop for MemoryDomain {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.size, PAGE).expect("domain layout");
        // SAFETY: allocated in `new` with this very layout, and freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl DmaMemory for MemoryDomain {
    fn base(&self) -> DevAddr {
        DevAddr(self.base)
    }

    fn size(&self) -> u64 {
        self.size as u64
    }

    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(addr, buf.len())?;
        if Self::small_aligned(addr, buf.len()) {
            for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
                let w = self.atomic_u64(DevAddr(addr.0 + 8 * i as u64))?;
                chunk.copy_from_slice(&w.load(Ordering::Acquire).to_ne_bytes());
            }
            return Ok(());
        }
        // SAFETY: `[off, off + len)` is inside the mapping (checked by `offset`), `buf` is a
        // distinct Rust allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(addr, data.len())?;
        if Self::small_aligned(addr, data.len()) {
            for (i, chunk) in data.chunks_exact(8).enumerate() {
                let w = self.atomic_u64(DevAddr(addr.0 + 8 * i as u64))?;
                let mut b = [0; 8];
                b.copy_from_slice(chunk);
                w.store(u64::from_ne_bytes(b), Ordering::Release);
            }
            return Ok(());
        }
        // SAFETY: `[off, off + len)` is inside the mapping; `data` may itself point into this
        // mapping (a no-copy sender), hence `copy` (memmove) rather than the non-overlapping
        // variant.
        unsafe { std::ptr::copy(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) };
        Ok(())
    }

    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        let len = usize::try_from(len).map_err(|_| MemError::OutOfBounds)?;
        let off = self.offset(addr, len)?;
        // SAFETY: `[off, off + len)` is inside the mapping.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) };
        Ok(())
    }

    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        Ok(self.atomic_u64(addr)?.load(Ordering::Acquire).to_ne_bytes())
    }

    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        self.atomic_u64(addr)?
            .store(u64::from_ne_bytes(bytes), Ordering::Release);
        Ok(())
    }

    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        Ok(self.atomic_u8(addr)?.fetch_or(mask, Ordering::AcqRel))
    }

    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        Ok(self.atomic_u8(addr)?.fetch_and(mask, Ordering::AcqRel))
    }

    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        Ok(self.atomic_u8(addr)?.swap(value, Ordering::AcqRel))
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// The partition OS's allocator of DMA memory inside its domain: first fit over a free
/// list, alignment up to the domain's own.
///
/// A partition that reboots gets the whole domain back ([`DmaPool::reset`]); frees by the
/// dead OS's objects, which carry an older epoch, are then ignored instead of freeing
/// memory the new OS has since allocated.
pub struct DmaPool {
    base: u64,
    size: u64,
    free: Mutex<BTreeMap<u64, u64>>,
    epoch: std::sync::atomic::AtomicU64,
}

impl DmaPool {
    /// A pool managing `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Self {
        let mut free = BTreeMap::new();
        free.insert(base, size);
        Self {
            base,
            size,
            free: Mutex::new(free),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current epoch (bumped by every [`DmaPool::reset`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Gives the whole domain back (the partition rebooted) and starts a new epoch.
    pub fn reset(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.clear();
        free.insert(self.base, self.size);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// [`DmaPool::free`] on behalf of an owner of `epoch`: ignored unless that is the
    /// current epoch.
    pub fn free_in(&self, epoch: u64, addr: DevAddr, size: u64) {
        if epoch == self.epoch() {
            self.free(addr, size);
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two).
    ///
    /// # Errors
    /// [`OutOfMemory`] if no free block fits.
    pub fn alloc(&self, size: u64, align: u64) -> Result<DevAddr, OutOfMemory> {
        if size == 0 || !align.is_power_of_two() {
            return Err(OutOfMemory);
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let found = free.iter().find_map(|(&start, &len)| {
            let aligned = start.checked_next_multiple_of(align)?;
            let end = aligned.checked_add(size)?;
            (end <= start + len).then_some((start, len, aligned))
        });
        let (start, len, aligned) = found.ok_or(OutOfMemory)?;
        free.remove(&start);
        if aligned > start {
            free.insert(start, aligned - start);
        }
        let tail = start + len - (aligned + size);
        if tail > 0 {
            free.insert(aligned + size, tail);
        }
        Ok(DevAddr(aligned))
    }

    /// Returns a block to the pool, merging neighbours. Freeing a block that was not
    /// allocated (or twice) is ignored rather than corrupting the free list.
    pub fn free(&self, addr: DevAddr, size: u64) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (mut start, mut len) = (addr.0, size);
        if start < self.base || size == 0 {
            return;
        }
        let overlaps = free
            .range(..start + len)
            .next_back()
            .is_some_and(|(&s, &l)| s + l > start);
        if overlaps {
            return;
        }
        if let Some((&ps, &pl)) = free.range(..start).next_back() {
            if ps + pl == start {
                free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(&nl) = free.get(&(start + len)) {
            free.remove(&(start + len));
            len += nl;
        }
        free.insert(start, len);
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_and_alignment_are_enforced() {
        let m = MemoryDomain::new(0x1_0000_0000, 8192);
        let b = 0x1_0000_0000u64;
        assert_eq!(m.size(), 8192);
        assert!(m.write(DevAddr(b + 8190), &[1, 2]).is_ok());
        assert_eq!(
            m.write(DevAddr(b + 8191), &[1, 2]),
            Err(MemError::OutOfBounds)
        );
        assert_eq!(m.write(DevAddr(b - 1), &[1]), Err(MemError::OutOfBounds));
        assert_eq!(
            m.read(DevAddr(u64::MAX - 1), &mut [0; 4]),
            Err(MemError::OutOfBounds)
        );
        assert_eq!(m.load_u64(DevAddr(b + 4)), Err(MemError::Misaligned));
        assert_eq!(m.zero(DevAddr(b), u64::MAX), Err(MemError::OutOfBounds));
    }

    #[test]
    fn copies_small_and_large_round_trip() {
        let m = MemoryDomain::new(0, 16384);
        let small: Vec<u8> = (0..32).collect();
        m.write(DevAddr(64), &small).unwrap();
        let mut back = [0u8; 32];
        m.read(DevAddr(64), &mut back).unwrap();
        assert_eq!(&back[..], &small[..]);
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        m.write(DevAddr(1001), &big).unwrap();
        let mut back = vec![0u8; 5000];
        m.read(DevAddr(1001), &mut back).unwrap();
        assert_eq!(back, big);
        m.zero(DevAddr(1001), 5000).unwrap();
        m.read(DevAddr(1001), &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        assert_eq!(m.fetch_or_u8(DevAddr(7), 0x80), Ok(0));
        assert_eq!(m.swap_u8(DevAddr(7), 0), Ok(0x80));
        m.store_u64(DevAddr(8), 7u64.to_be_bytes()).unwrap();
        assert_eq!(m.load_u64(DevAddr(8)), Ok(7u64.to_be_bytes()));
    }

    #[test]
    fn concurrent_bit_setting_loses_nothing() {
        let m = Arc::new(MemoryDomain::new(0, 4096));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for byte in 0..16u64 {
                        m.fetch_or_u8(DevAddr(byte), 1 << t).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut back = [0u8; 16];
        m.read(DevAddr(0), &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0x0F));
    }

    #[test]
    fn pool_allocates_aligned_and_merges() {
        let p = DmaPool::new(0x10000, 0x10000);
        let a = p.alloc(100, 4096).unwrap();
        assert_eq!(a.0 % 4096, 0);
        let b = p.alloc(0x4000, 0x4000).unwrap();
        assert_eq!(b.0 % 0x4000, 0);
        assert!(p.alloc(0x20000, 8).is_err());
        assert!(p.alloc(0, 8).is_err());
        p.free(a, 100);
        p.free(a, 100);
        p.free(b, 0x4000);
        assert_eq!(p.free_bytes(), 0x10000);
        assert_eq!(p.alloc(0x10000, 4096).unwrap(), DevAddr(0x10000));
    }

    #[test]
    fn reset_returns_everything_and_ignores_stale_frees() {
        let p = DmaPool::new(0, 0x10000);
        let old_epoch = p.epoch();
        let a = p.alloc(0x8000, 4096).unwrap();
        p.reset();
        assert_eq!(p.free_bytes(), 0x10000);
        let b = p.alloc(0x8000, 4096).unwrap();
        assert_eq!(a, b, "the new OS may get the same block");
        p.free_in(old_epoch, a, 0x8000);
        assert_eq!(p.free_bytes(), 0x8000, "the dead OS's free is ignored");
        p.free_in(p.epoch(), b, 0x8000);
        assert_eq!(p.free_bytes(), 0x10000);
    }
}
