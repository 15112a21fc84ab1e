//! A hasher for maps keyed by small integers the process itself made (descriptor
//! numbers, DMB tokens), which are looked up on every data call and every move.
//!
//! The standard maps' SipHash resists keys chosen by an attacker; these keys are not, and
//! hashing one with SipHash cost as much as the rest of the lookup. One multiplication by
//! the golden ratio spreads consecutive keys over the whole word, high bits included (the
//! map's control bytes take the top seven). It must never key a map on data a peer sends.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// 2^64 / φ, odd: multiplication by it is a bijection that mixes low bits upwards.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u64(u64::from(n as u32));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(GOLDEN);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by a small integer of this process (see the module docs).
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_keys_differ_in_their_top_bits_and_maps_work() {
        let b = BuildHasherDefault::<IntHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (0i32..64).map(|fd| b.hash_one(fd) >> 57).collect();
        assert!(tops.len() > 32, "{} distinct top-7-bit values", tops.len());
        let mut m: IntMap<u64, u64> = IntMap::default();
        for k in 0..10_000u64 {
            m.insert(k << 20, k);
        }
        assert!((0..10_000u64).all(|k| m.get(&(k << 20)) == Some(&k)));
        assert_eq!(m.get(&1), None);
    }
}
