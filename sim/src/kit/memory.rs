//! A partition's memory: one contiguous, page-aligned mapping that the device reaches by
//! device address, plus the partition OS's allocator for DMA buffers in it.
//!
//! This module holds the simulator's raw memory accesses (its `unsafe` code). The memory of a
//! domain is written by other threads, and, on the process boards, by other processes
//! (`crate::process`), at any time and without asking: a host may be hostile. So it is never
//! reached through a Rust reference to plain bytes, only through atomic operations, and
//! through **one access width per location**: every access is an 8-byte, naturally aligned
//! atomic on the word that holds the bytes (vm-memory's rule for guest memory, made strict):
//! * the byte operations of [`DmaMemory`] that the SBA needs (`fetch_or_u8`, `fetch_and_u8`,
//!   `swap_u8`) are 8-byte read-modify-writes that change one byte of the word, so the SBA
//!   is set and read (by the host's 8-byte loads that skip empty stretches) at one width;
//! * copies move whole words with atomic loads and stores; a copy that starts or ends inside
//!   a word merges its bytes into that word with a compare-and-swap, so a neighbour's bytes
//!   written at the same time are never lost;
//! * small (at most 64 bytes), 8-byte-aligned copies, such as a 32-byte SMC-D CDC message,
//!   use release stores and acquire loads, as the real store-block updates doublewords
//!   block-concurrently: that is what makes "data, then CDC with signal" a release/acquire
//!   pair for the reader. Larger copies use relaxed word accesses after a release fence
//!   (writes) or before an acquire fence (reads), so they order like the small ones.
//!
//! Concurrent, unordered copies over the same bytes (a hostile or broken host) thus give
//! some mix of old and new words, never undefined behaviour. A mapping is either private
//! heap memory ([`MemoryDomain::new`], the in-process boards) or a shared file mapping
//! ([`SharedMapping`], a memfd that the process boards share with their hosts).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use ism_hal::regs::FunctionRegisters;
use ism_hal::{DevAddr, DmaMemory, MemError};

/// Alignment of a mapping (a page).
pub const PAGE: usize = 4096;

/// Copies of at most this many bytes, 8-aligned, are made with release stores and acquire
/// loads.
pub const ATOMIC_COPY_MAX: usize = 64;

/// How a mapping was made (and so how it is given back).
enum Backing {
    /// `alloc_zeroed` with this layout.
    Heap(Layout),
    /// `mmap` of a shared file (`MAP_SHARED`), `len` bytes.
    Shared,
}

/// A region of memory that other threads or processes may write at any time: reached only
/// through aligned 8-byte atomics ([`SharedMapping::word`]), 4-byte atomics at offsets the
/// caller reserves for them ([`SharedMapping::u32_at`]), and the volatile register block
/// ([`SharedMapping::registers_at`]).
pub struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: the region is only ever accessed through atomics and volatile registers (see the
// type's documentation), which may be used from any thread; the pointer is owned.
unsafe impl Send for SharedMapping {}
// SAFETY: as for `Send`: every `&self` access is atomic or volatile.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Zeroed private memory of `len` bytes (rounded up to a page), page-aligned.
    ///
    /// # Panics
    /// If `len` is 0; aborts if the allocation fails.
    pub fn heap(len: usize) -> Self {
        assert!(len > 0, "empty mapping");
        let len = len.div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(len, PAGE).expect("mapping layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self {
            ptr,
            len,
            backing: Backing::Heap(layout),
        }
    }

    /// Maps `len` bytes (a non-zero multiple of a page) of the file `fd` from offset 0,
    /// shared and read-write: the memory object another process also maps.
    ///
    /// The file must be at least `len` bytes long and must not shrink while mapped (the
    /// process boards seal their memfds against shrinking), or accesses fault.
    ///
    /// # Errors
    /// `mmap`'s error; `InvalidInput` for a bad `len`.
    pub fn map_shared(fd: impl AsFd, len: usize) -> std::io::Result<Self> {
        if len == 0 || !len.is_multiple_of(PAGE) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "mapping length must be a non-zero multiple of 4096",
            ));
        }
        let size = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(size).map_or(true, |s| s < len as u64) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "memory object is smaller than the mapping",
            ));
        }
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh mapping at an address the kernel chooses aliases no Rust object;
        // the region is only reached through atomics and volatile accesses, so writes by
        // other processes are not data races on Rust objects.
        let raw = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self {
            ptr,
            len,
            backing: Backing::Shared,
        })
    }

    /// Replaces what a shared mapping shows by the first [`SharedMapping::len`] bytes of the
    /// file `fd`, at the same address (`MAP_FIXED`): the board gives a reattached function
    /// a new memory object without moving the device's view of it. Anyone still mapping the
    /// old object keeps only that.
    ///
    /// # Errors
    /// `Unsupported` for heap memory; `InvalidInput` if the file is too small; `mmap`'s
    /// error (the old mapping then stays).
    pub fn replace_backing(&self, fd: impl AsFd) -> std::io::Result<()> {
        if !matches!(self.backing, Backing::Shared) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "heap memory has no backing file",
            ));
        }
        let size = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(size).map_or(true, |s| s < self.len as u64) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "memory object is smaller than the mapping",
            ));
        }
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: replaces exactly our own mapping (same address and length) with a mapping
        // of the same size and protection; the region is only ever reached through atomics
        // and volatile accesses made through `&self`, so no Rust reference to its bytes
        // exists, and an access racing with the replacement sees old or new pages.
        unsafe {
            rustix::mm::mmap(
                self.ptr.as_ptr().cast(),
                self.len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                fd,
                0,
            )?
        };
        Ok(())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 8-byte word at byte offset `8 * index`, if inside the mapping.
    pub fn word(&self, index: usize) -> Option<&AtomicU64> {
        if index >= self.len / 8 {
            return None;
        }
        // SAFETY: `8 * index + 8 <= len`, so the word is inside the live mapping, which
        // outlives `&self`; the mapping is page-aligned, so the pointer is 8-aligned; every
        // access to this location is an 8-byte atomic (this type's rule), so an `AtomicU64`
        // view of it is sound.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(8 * index).cast()) })
    }

    /// The `count` 8-byte words from word `first` on, if inside the mapping.
    pub fn words(&self, first: usize, count: usize) -> Option<&[AtomicU64]> {
        if first.checked_add(count)? > self.len / 8 {
            return None;
        }
        // SAFETY: words `first .. first + count` lie inside the live mapping, which outlives
        // `&self`; the base is page-aligned, so every word is 8-aligned; every access to
        // these locations is an 8-byte atomic (this type's rule), so a slice of `AtomicU64`
        // over them is sound.
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(8 * first).cast::<AtomicU64>(), count)
        })
    }

    /// The 4-byte atomic at byte offset `off` (4-aligned), for control words whose
    /// locations the caller's layout reserves for 4-byte access only.
    pub fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|e| e > self.len) {
            return None;
        }
        // SAFETY: inside the live mapping, 4-aligned (page-aligned base); the caller's
        // layout accesses this location only as a 4-byte atomic.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    /// The volatile register block at byte offset `off` (8-aligned), for a command area
    /// shared with another process.
    pub fn registers_at(&self, off: usize) -> Option<&FunctionRegisters> {
        let size = core::mem::size_of::<FunctionRegisters>();
        if !off.is_multiple_of(8) || off.checked_add(size).is_none_or(|e| e > self.len) {
            return None;
        }
        // SAFETY: inside the live mapping and 8-aligned; `FunctionRegisters` is a
        // `repr(C)` array of `RW<u64>` (volatile cells over `UnsafeCell<u64>`), valid for
        // any bytes, and mutated only through volatile accesses, so a shared reference to
        // memory another process writes is what such registers are for.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<FunctionRegisters>() })
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        match self.backing {
            // SAFETY: allocated in `heap` with this very layout, and freed only here.
            Backing::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
            Backing::Shared => {
                // SAFETY: mapped in `map_shared` with this length, unmapped only here; no
                // reference into it outlives `self`.
                let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
            }
        }
    }
}

/// One contiguous mapping at device addresses `base .. base + size`.
pub struct MemoryDomain {
    map: SharedMapping,
    base: u64,
}

/// Memory order of the 8 bytes of a word.
fn bytes(w: u64) -> [u8; 8] {
    w.to_ne_bytes()
}

/// A word with `b` at byte `k` (memory order) and `fill` elsewhere.
fn with_byte(k: usize, b: u8, fill: u8) -> u64 {
    let mut a = [fill; 8];
    a[k] = b;
    u64::from_ne_bytes(a)
}

impl MemoryDomain {
    /// A zeroed private mapping of `size` bytes (rounded up to a page) at device address
    /// `base` (which must be page-aligned).
    ///
    /// # Panics
    /// If `size` is 0, `base` is not page-aligned, or the allocation fails.
    pub fn new(base: u64, size: usize) -> Self {
        assert!(
            size > 0 && base.is_multiple_of(PAGE as u64),
            "bad memory domain geometry"
        );
        Self {
            map: SharedMapping::heap(size),
            base,
        }
    }

    /// A domain over a shared mapping, at device address `base` (page-aligned).
    ///
    /// # Errors
    /// `InvalidInput` if `base` is not page-aligned or the domain would end past `u64::MAX`.
    pub fn from_mapping(base: u64, map: SharedMapping) -> std::io::Result<Self> {
        if !base.is_multiple_of(PAGE as u64) || base.checked_add(map.len() as u64).is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad memory domain base",
            ));
        }
        Ok(Self { map, base })
    }

    /// The mapping under the domain.
    pub fn mapping(&self) -> &SharedMapping {
        &self.map
    }

    /// Offset of `[addr, addr + len)` in the mapping, if inside it.
    fn offset(&self, addr: DevAddr, len: usize) -> Result<usize, MemError> {
        if self.contains(addr, len as u64) {
            Ok((addr.0 - self.base) as usize)
        } else {
            Err(MemError::OutOfBounds)
        }
    }

    fn word_of(&self, addr: DevAddr) -> Result<(&AtomicU64, usize), MemError> {
        let off = self.offset(addr, 1)?;
        let w = self.map.word(off / 8).ok_or(MemError::OutOfBounds)?;
        Ok((w, off % 8))
    }

    fn atomic_u64(&self, addr: DevAddr) -> Result<&AtomicU64, MemError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let off = self.offset(addr, 8)?;
        self.map.word(off / 8).ok_or(MemError::OutOfBounds)
    }

    fn small_aligned(addr: DevAddr, len: usize) -> bool {
        len <= ATOMIC_COPY_MAX && len.is_multiple_of(8) && addr.0.is_multiple_of(8)
    }

    /// Merges `data` into the word `w` at byte `k`, leaving its other bytes as they are.
    fn merge(w: &AtomicU64, k: usize, data: &[u8], order: Ordering) {
        let _ = w.fetch_update(order, Ordering::Relaxed, |old| {
            let mut b = bytes(old);
            b[k..k + data.len()].copy_from_slice(data);
            Some(u64::from_ne_bytes(b))
        });
    }

    /// Splits `[off, off + len)` into a partial head word, whole middle words and a
    /// partial tail word: `(head, first_whole_word, whole_words, tail)`, where `head` and
    /// `tail` are `(word, first byte, byte count)` if present.
    #[allow(clippy::type_complexity)]
    fn split(
        off: usize,
        len: usize,
    ) -> (
        Option<(usize, usize, usize)>,
        usize,
        usize,
        Option<(usize, usize, usize)>,
    ) {
        let k = off % 8;
        let head_n = if k == 0 { 0 } else { (8 - k).min(len) };
        let head = (head_n > 0).then_some((off / 8, k, head_n));
        let mid_start = off + head_n;
        let whole = (len - head_n) / 8;
        let tail_n = len - head_n - 8 * whole;
        let tail_start = mid_start + 8 * whole;
        let tail = (tail_n > 0).then_some((tail_start / 8, 0, tail_n));
        (head, mid_start / 8, whole, tail)
    }
}

impl DmaMemory for MemoryDomain {
    fn base(&self) -> DevAddr {
        DevAddr(self.base)
    }

    fn size(&self) -> u64 {
        self.map.len() as u64
    }

    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(addr, buf.len())?;
        let small = Self::small_aligned(addr, buf.len());
        let order = if small {
            Ordering::Acquire
        } else {
            Ordering::Relaxed
        };
        let (head, first, whole, tail) = Self::split(off, buf.len());
        let mut pos = 0;
        if let Some((i, k, n)) = head {
            let w = self.map.word(i).ok_or(MemError::OutOfBounds)?;
            buf[..n].copy_from_slice(&bytes(w.load(order))[k..k + n]);
            pos = n;
        }
        let words = self.map.words(first, whole).ok_or(MemError::OutOfBounds)?;
        for (w, chunk) in words
            .iter()
            .zip(buf[pos..pos + 8 * whole].chunks_exact_mut(8))
        {
            chunk.copy_from_slice(&w.load(order).to_ne_bytes());
        }
        pos += 8 * whole;
        if let Some((i, _, n)) = tail {
            let w = self.map.word(i).ok_or(MemError::OutOfBounds)?;
            buf[pos..pos + n].copy_from_slice(&bytes(w.load(order))[..n]);
        }
        if !small {
            // Pairs with the writer's release (the signal, the CDC message) for bytes read
            // after the caller's own acquire: keeps later accesses after these loads.
            std::sync::atomic::fence(Ordering::Acquire);
        }
        Ok(())
    }

    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(addr, data.len())?;
        let order = if Self::small_aligned(addr, data.len()) {
            Ordering::Release
        } else {
            // Bulk data: earlier accesses stay before these stores.
            std::sync::atomic::fence(Ordering::Release);
            Ordering::Relaxed
        };
        let (head, first, whole, tail) = Self::split(off, data.len());
        let mut pos = 0;
        if let Some((i, k, n)) = head {
            let w = self.map.word(i).ok_or(MemError::OutOfBounds)?;
            Self::merge(w, k, &data[..n], order);
            pos = n;
        }
        let words = self.map.words(first, whole).ok_or(MemError::OutOfBounds)?;
        for (w, chunk) in words.iter().zip(data[pos..pos + 8 * whole].chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(b), order);
        }
        pos += 8 * whole;
        if let Some((i, _, n)) = tail {
            let w = self.map.word(i).ok_or(MemError::OutOfBounds)?;
            Self::merge(w, 0, &data[pos..pos + n], order);
        }
        Ok(())
    }

    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        let len = usize::try_from(len).map_err(|_| MemError::OutOfBounds)?;
        let off = self.offset(addr, len)?;
        const ZEROS: [u8; 8] = [0; 8];
        let (head, first, whole, tail) = Self::split(off, len);
        for (i, k, n) in head.into_iter().chain(tail) {
            let w = self.map.word(i).ok_or(MemError::OutOfBounds)?;
            Self::merge(w, k, &ZEROS[..n], Ordering::Relaxed);
        }
        for w in self.map.words(first, whole).ok_or(MemError::OutOfBounds)? {
            w.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        Ok(bytes(self.atomic_u64(addr)?.load(Ordering::Acquire)))
    }

    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        self.atomic_u64(addr)?
            .store(u64::from_ne_bytes(bytes), Ordering::Release);
        Ok(())
    }

    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        let (w, k) = self.word_of(addr)?;
        Ok(bytes(w.fetch_or(with_byte(k, mask, 0), Ordering::AcqRel))[k])
    }

    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        let (w, k) = self.word_of(addr)?;
        Ok(bytes(w.fetch_and(with_byte(k, mask, 0xFF), Ordering::AcqRel))[k])
    }

    fn fetch_or_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        let w = self.atomic_u64(addr)?;
        Ok(bytes(
            w.fetch_or(u64::from_ne_bytes(mask), Ordering::AcqRel),
        ))
    }

    fn fetch_and_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        let w = self.atomic_u64(addr)?;
        Ok(bytes(
            w.fetch_and(u64::from_ne_bytes(mask), Ordering::AcqRel),
        ))
    }

    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        let (w, k) = self.word_of(addr)?;
        let old = w
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let mut b = bytes(old);
                b[k] = value;
                Some(u64::from_ne_bytes(b))
            })
            .unwrap_or_else(|v| v);
        Ok(bytes(old)[k])
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

    /// [`DmaPool::alloc`] of `size` bytes of `memory`, zeroed (a host's `dma_alloc`); `None`
    /// when the pool has no room or the range is not in `memory`.
    pub fn alloc_zeroed(
        &self,
        memory: &MemoryDomain,
        size: usize,
        align: usize,
    ) -> Option<DevAddr> {
        let a = self.alloc(size as u64, align as u64).ok()?;
        memory.zero(a, size as u64).ok()?;
        Some(a)
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
    fn doubleword_atomics_change_only_their_bytes_at_once() {
        let m = Arc::new(MemoryDomain::new(0, 4096));
        m.write(DevAddr(0), &[0x11; 16]).unwrap();
        let mask = [0, 0x20, 0x02, 0, 0, 0, 0, 0];
        assert_eq!(m.fetch_or_u64(DevAddr(8), mask), Ok([0x11; 8]));
        let keep = [0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            m.fetch_and_u64(DevAddr(8), keep),
            Ok([0x11, 0x31, 0x13, 0x11, 0x11, 0x11, 0x11, 0x11])
        );
        let mut back = [0u8; 16];
        m.read(DevAddr(0), &mut back).unwrap();
        assert_eq!(back[8..], [0x11, 0, 0, 0x11, 0x11, 0x11, 0x11, 0x11]);
        assert_eq!(m.fetch_or_u64(DevAddr(3), mask), Err(MemError::Misaligned));
        // Threads ORing bits into different bytes of one doubleword lose none of them.
        let setters: Vec<_> = (0..8usize)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for bit in 0..8 {
                        let mut w = [0u8; 8];
                        w[t] = 1 << bit;
                        m.fetch_or_u64(DevAddr(64), w).unwrap();
                    }
                })
            })
            .collect();
        for t in setters {
            t.join().unwrap();
        }
        assert_eq!(m.load_u64(DevAddr(64)), Ok([0xFF; 8]));
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

    /// Every start offset and length around word boundaries: the bytes land, their
    /// neighbours stay, reads return them, zeroing clears exactly them.
    #[test]
    fn every_alignment_and_length_copies_exactly_its_bytes() {
        let m = MemoryDomain::new(0, 4096);
        for off in 0..17u64 {
            for len in 0..42usize {
                m.write(DevAddr(0), &[0xEE; 80]).unwrap();
                let data: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
                m.write(DevAddr(8 + off), &data).unwrap();
                let mut all = [0u8; 80];
                m.read(DevAddr(0), &mut all).unwrap();
                let (o, e) = (8 + off as usize, 8 + off as usize + len);
                assert!(all[..o].iter().all(|&b| b == 0xEE), "{off} {len}");
                assert_eq!(&all[o..e], &data[..], "{off} {len}");
                assert!(all[e..].iter().all(|&b| b == 0xEE), "{off} {len}");
                let mut back = vec![0u8; len];
                m.read(DevAddr(8 + off), &mut back).unwrap();
                assert_eq!(back, data);
                m.zero(DevAddr(8 + off), len as u64).unwrap();
                m.read(DevAddr(0), &mut all).unwrap();
                assert!(all[o..e].iter().all(|&b| b == 0), "{off} {len}");
                assert!(all[..o].iter().chain(&all[e..]).all(|&b| b == 0xEE));
            }
        }
    }

    /// Miri: a reader copying bytes that a writer copies at the same time (no protocol
    /// between them, as with a hostile host) is a data race on plain memory; here every
    /// access is an atomic word, so it is defined (the reader sees whole old or new words).
    #[test]
    fn racing_copies_are_not_data_races() {
        let m = Arc::new(MemoryDomain::new(0, 4096));
        let w = {
            let m = m.clone();
            std::thread::spawn(move || {
                for round in 0..20u8 {
                    m.write(DevAddr(3), &[round; 200]).unwrap();
                }
            })
        };
        let mut buf = [0u8; 200];
        for _ in 0..20 {
            m.read(DevAddr(3), &mut buf).unwrap();
            // Each aligned word holds one round's bytes (both edge words are merged whole).
            for word in buf[5..197].chunks(8) {
                assert!(word.iter().all(|&b| b == word[0]), "{word:?}");
            }
        }
        w.join().unwrap();
    }

    /// Miri: SBA bits set with byte operations while the host reads the same words with
    /// 8-byte loads (as the interrupt handler skips empty stretches) use one access width
    /// per location; mixed-size racing atomics would be reported.
    #[test]
    fn sba_bits_set_and_read_at_one_width() {
        let m = Arc::new(MemoryDomain::new(0, 4096));
        let setter = {
            let m = m.clone();
            std::thread::spawn(move || {
                for bit in 0..8 {
                    m.fetch_or_u8(DevAddr(9), 0x80 >> bit).unwrap();
                }
            })
        };
        let mut seen = 0u8;
        for _ in 0..50 {
            let w = m.load_u64(DevAddr(8)).unwrap();
            assert_eq!(w[0] | w[2..].iter().fold(0, |a, b| a | b), 0);
            seen |= m.swap_u8(DevAddr(9), 0).unwrap();
        }
        setter.join().unwrap();
        seen |= m.swap_u8(DevAddr(9), 0).unwrap();
        assert_eq!(seen, 0xFF, "no bit lost between set and take");
    }

    /// Writers of neighbouring byte ranges inside the same words lose nothing of each other.
    #[test]
    fn neighbouring_partial_word_writes_keep_each_other() {
        let m = Arc::new(MemoryDomain::new(0, 4096));
        let threads: Vec<_> = (0..3u8)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        for word in 0..4u64 {
                            m.write(DevAddr(word * 8 + 1 + 2 * t as u64), &[t + 1; 2])
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut back = [0u8; 32];
        m.read(DevAddr(0), &mut back).unwrap();
        for word in back.chunks(8) {
            assert_eq!(word, &[0, 1, 1, 2, 2, 3, 3, 0]);
        }
    }

    /// Bulk data, then a release flag: a reader that acquires the flag sees all the data
    /// (the order the move-then-signal and data-then-CDC protocols rely on).
    #[test]
    fn bulk_data_is_ordered_by_a_later_flag() {
        let m = Arc::new(MemoryDomain::new(0, 8192));
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let w = {
            let (m, data) = (m.clone(), data.clone());
            std::thread::spawn(move || {
                m.write(DevAddr(101), &data).unwrap();
                m.store_u64(DevAddr(4096), 1u64.to_ne_bytes()).unwrap();
            })
        };
        let mut spins = 0u32;
        while m.load_u64(DevAddr(4096)).unwrap() != 1u64.to_ne_bytes() {
            spins += 1;
            assert!(spins < 1_000_000, "flag never came");
            std::thread::yield_now();
        }
        let mut back = vec![0u8; 300];
        m.read(DevAddr(101), &mut back).unwrap();
        assert_eq!(back, data);
        w.join().unwrap();
    }

    #[test]
    fn shared_mapping_accessors_check_bounds_and_alignment() {
        let map = SharedMapping::heap(100);
        assert_eq!(map.len(), 4096);
        assert!(map.word(511).is_some() && map.word(512).is_none());
        assert!(map.u32_at(4092).is_some() && map.u32_at(4093).is_none());
        assert!(map.u32_at(4096).is_none());
        assert!(map.registers_at(4096 - 256).is_some());
        assert!(map.registers_at(4096 - 255).is_none());
        let regs = map.registers_at(256).unwrap();
        regs.post_request(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            map.word(32).unwrap().load(Ordering::Relaxed).to_ne_bytes(),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
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
