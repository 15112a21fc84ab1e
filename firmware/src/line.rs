//! [`CacheLine`]: a value on a cache line of its own.
//!
//! Two partitions talking to each other run on two cores, and each move writes a few words
//! of device state (a lease count, a counter). Where one partition's words share a cache
//! line with the other's, every move pulls that line from the other core: a ping-pong of
//! small messages paid several such transfers per message for words neither side shares
//! (`ism-sim bench`, busy-poll latency; see `docs/benchmarks.md`). Words that the moves of
//! different functions write go into separate `CacheLine`s.
//!
//! This module owns only the layout; it never changes what the wrapped value does.

use core::ops::Deref;

/// `T` aligned (and so padded) to a cache line: 64 bytes, 256 on s390x (IBM Z, the ISM's
/// own platform). Not 128 on x86 as crossbeam's `CachePadded` (whose adjacent-line
/// prefetch pairs lines): the DMB table has a slot per line, 4096 of them in the
/// simulator's devices, and 64 took the false sharing away in the measurements of
/// `docs/benchmarks.md` (optimisation 11). On a core without a data cache (Cortex-M) it
/// only costs the padding. Dereferences to `T`.
#[derive(Debug, Default)]
#[cfg_attr(not(target_arch = "s390x"), repr(align(64)))]
#[cfg_attr(target_arch = "s390x", repr(align(256)))]
pub struct CacheLine<T>(T);

impl<T> CacheLine<T> {
    /// `value` on a line of its own.
    pub const fn new(value: T) -> Self {
        Self(value)
    }
}

impl<T> Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn neighbours_never_share_a_line() {
        let pair = [
            CacheLine::new(AtomicU64::new(0)),
            CacheLine::new(AtomicU64::new(0)),
        ];
        let a = &*pair[0] as *const AtomicU64 as usize;
        let b = &*pair[1] as *const AtomicU64 as usize;
        assert_eq!(a % 64, 0);
        assert!(b - a >= 64);
    }
}
