//! Which of the application's file descriptors this library tracks (SMC-D connections and
//! registered listeners), and with what.
//!
//! Every interposed call first asks [`Table::maybe_tracked`]: a lock-free bitmap read (one atomic
//! load for descriptors below [`BITMAP_FDS`]). Only a tracked descriptor takes the table's
//! lock. So the calls a signal handler makes on its own descriptors (a self-pipe `write`, a
//! `close`) cost what the real call costs plus one atomic load: no lock, no allocation.
//! Several descriptors (after `dup`) may map to one entry; the entry (an `Arc`) ends when
//! the last descriptor is closed and no call on it is still running.

use ism_sim::kit::hash::IntMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use libc::c_int;

/// The table's map: descriptor numbers hash with one multiplication
/// (`ism_sim::kit::hash`), not SipHash, on every data call.
pub type FdMap<V> = IntMap<c_int, V>;

/// Descriptors below this are tracked by the bitmap; above, by a flag and the map.
pub const BITMAP_FDS: usize = 1 << 16;

/// One bit per descriptor below [`BITMAP_FDS`].
pub struct Bitmap {
    words: [AtomicU64; BITMAP_FDS / 64],
    /// Some descriptor at or above [`BITMAP_FDS`] is tracked.
    high: AtomicBool,
}

impl Bitmap {
    /// All clear.
    pub const fn new() -> Self {
        Self {
            words: [const { AtomicU64::new(0) }; BITMAP_FDS / 64],
            high: AtomicBool::new(false),
        }
    }

    /// Whether `fd` may be tracked (exact below [`BITMAP_FDS`]; above, true once any such
    /// descriptor was tracked).
    pub fn maybe(&self, fd: c_int) -> bool {
        match usize::try_from(fd) {
            Ok(i) if i < BITMAP_FDS => {
                self.words[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
            }
            Ok(_) => self.high.load(Ordering::Acquire),
            Err(_) => false,
        }
    }

    /// Marks `fd` (`on`) or clears it (below [`BITMAP_FDS`]; above, only marking counts).
    pub fn set(&self, fd: c_int, on: bool) {
        match usize::try_from(fd) {
            Ok(i) if i < BITMAP_FDS => {
                let bit = 1u64 << (i % 64);
                if on {
                    self.words[i / 64].fetch_or(bit, Ordering::AcqRel);
                } else {
                    self.words[i / 64].fetch_and(!bit, Ordering::AcqRel);
                }
            }
            Ok(_) if on => self.high.store(true, Ordering::Release),
            _ => {}
        }
    }
}

impl Default for Bitmap {
    fn default() -> Self {
        Self::new()
    }
}

/// A descriptor → entry table with its bitmap.
pub struct Table<E> {
    bits: Bitmap,
    map: Mutex<Option<FdMap<Arc<E>>>>,
}

impl<E> Table<E> {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            bits: Bitmap::new(),
            map: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<FdMap<Arc<E>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The map under its lock, for `fork` (`crate::fork` holds it across the `fork` and
    /// replaces the child's map with inherited entries). The bitmap is not changed: keep
    /// the same descriptors tracked.
    pub fn lock_map(&self) -> MutexGuard<'_, Option<FdMap<Arc<E>>>> {
        self.lock()
    }

    /// The lock-free first check (see the module docs).
    pub fn maybe_tracked(&self, fd: c_int) -> bool {
        self.bits.maybe(fd)
    }

    /// Every entry tracked now (an entry of several descriptors once for each). Drop them
    /// outside any lock of yours, as [`Table::remove`]'s.
    pub fn entries(&self) -> Vec<Arc<E>> {
        self.lock()
            .as_ref()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The entry of `fd`, if tracked.
    pub fn get(&self, fd: c_int) -> Option<Arc<E>> {
        if !self.bits.maybe(fd) {
            return None;
        }
        self.lock().as_ref()?.get(&fd).cloned()
    }

    /// Whether `fd` is tracked with an entry for which `pred` holds, looked at under the
    /// table's lock without taking a reference to the entry (no `Arc` count changed: a
    /// check that runs on every read).
    pub fn holds(&self, fd: c_int, pred: impl FnOnce(&E) -> bool) -> bool {
        if !self.bits.maybe(fd) {
            return false;
        }
        self.lock()
            .as_ref()
            .and_then(|m| m.get(&fd))
            .is_some_and(|e| pred(e))
    }

    /// Tracks `fd` with `e`; returns the entry it replaces (drop it outside any lock of
    /// yours: dropping may end a connection).
    pub fn insert(&self, fd: c_int, e: Arc<E>) -> Option<Arc<E>> {
        let mut g = self.lock();
        let old = g.get_or_insert_with(FdMap::default).insert(fd, e);
        self.bits.set(fd, true);
        old
    }

    /// Stops tracking `fd`; returns its entry (drop it outside any lock of yours).
    pub fn remove(&self, fd: c_int) -> Option<Arc<E>> {
        if !self.bits.maybe(fd) {
            return None;
        }
        let mut g = self.lock();
        self.bits.set(fd, false);
        g.as_mut()?.remove(&fd)
    }

    /// Makes `new` another descriptor of `old`'s entry (after `dup`); returns what `new` had.
    pub fn alias(&self, old: c_int, new: c_int) -> Option<Arc<E>> {
        let mut g = self.lock();
        let map = g.get_or_insert_with(FdMap::default);
        match map.get(&old).cloned() {
            Some(e) => {
                let prev = map.insert(new, e);
                self.bits.set(new, true);
                prev
            }
            None => {
                self.bits.set(new, false);
                map.remove(&new)
            }
        }
    }

    /// The descriptors whose entry is `e` (one connection's `dup`s), in ascending order.
    pub fn descriptors_of(&self, e: &Arc<E>) -> Vec<c_int> {
        let g = self.lock();
        let mut v: Vec<c_int> = g
            .as_ref()
            .map(|m| {
                m.iter()
                    .filter(|(_, x)| Arc::ptr_eq(x, e))
                    .map(|(&fd, _)| fd)
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Takes every entry out (at exit).
    pub fn drain(&self) -> Vec<(c_int, Arc<E>)> {
        let all = self.drain_keeping_bits();
        for (fd, _) in &all {
            self.bits.set(*fd, false);
        }
        all
    }

    /// As [`Table::drain`], but the descriptors stay "maybe tracked": calls on them keep
    /// taking the slow path (which finds no entry) instead of going straight to the real
    /// function.
    pub fn drain_keeping_bits(&self) -> Vec<(c_int, Arc<E>)> {
        let mut g = self.lock();
        g.as_mut().map(|m| m.drain().collect()).unwrap_or_default()
    }
}

impl<E> Default for Table<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untracked_descriptors_are_clear_and_tracking_is_exact() {
        let t: Table<u32> = Table::new();
        for fd in [-1, 0, 5, 63, 64, 65535, 70000] {
            assert!(!t.maybe_tracked(fd), "{fd}");
            assert!(t.get(fd).is_none());
        }
        assert!(t.insert(64, Arc::new(1)).is_none());
        assert!(t.maybe_tracked(64) && !t.maybe_tracked(63) && !t.maybe_tracked(65));
        assert_eq!(*t.get(64).unwrap(), 1);
        assert!(t.holds(64, |&e| e == 1) && !t.holds(64, |&e| e == 2));
        assert!(!t.holds(63, |_| true) && !t.holds(70000, |_| true));
        let e = t.get(64).unwrap();
        assert!(t.holds(64, |_| true));
        assert_eq!(Arc::strong_count(&e), 2, "holds takes no reference");
        drop(e);
        assert_eq!(*t.remove(64).unwrap(), 1);
        assert!(!t.maybe_tracked(64) && t.get(64).is_none());
        assert!(!t.holds(64, |_| true));
        assert!(t.remove(64).is_none());
    }

    #[test]
    fn dup_aliases_share_one_entry_which_ends_with_the_last() {
        let t: Table<String> = Table::new();
        let e = Arc::new(String::from("conn"));
        let weak = Arc::downgrade(&e);
        t.insert(3, e);
        assert!(t.alias(3, 7).is_none());
        assert!(Arc::ptr_eq(&t.get(3).unwrap(), &t.get(7).unwrap()));
        drop(t.remove(3));
        assert!(weak.upgrade().is_some(), "7 still refers to it");
        drop(t.remove(7));
        assert!(weak.upgrade().is_none(), "the last close ends it");
    }

    #[test]
    fn aliasing_over_a_tracked_descriptor_returns_what_it_had() {
        let t: Table<u32> = Table::new();
        t.insert(3, Arc::new(3));
        t.insert(4, Arc::new(4));
        assert_eq!(*t.alias(3, 4).unwrap(), 4, "dup2(3, 4) closes 4's entry");
        assert_eq!(*t.get(4).unwrap(), 3);
        // dup2 of an untracked descriptor onto a tracked one untracks it.
        assert_eq!(*t.alias(9, 4).unwrap(), 3);
        assert!(!t.maybe_tracked(4));
    }

    #[test]
    fn high_descriptors_go_through_the_map() {
        let t: Table<u32> = Table::new();
        t.insert(100_000, Arc::new(1));
        assert!(t.maybe_tracked(100_001), "a conservative yes");
        assert!(t.get(100_001).is_none());
        assert_eq!(*t.get(100_000).unwrap(), 1);
        assert_eq!(t.drain().len(), 1);
        assert!(t.get(100_000).is_none());
    }
}
