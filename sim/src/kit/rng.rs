//! The one pseudo-random generator of the simulator and its tests: xorshift64* (Vigna),
//! small, fast and reproducible for a given seed. Workloads ([`crate::workload::Pattern`]),
//! the soak's choices, fault injection and the integration tests all draw from it.

/// The multiplier that spreads a seed over all 64 bits (2^64 / φ).
const SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The state a seed starts from (never zero: zero is xorshift's fixed point).
pub const fn seed_state(seed: u64) -> u64 {
    seed.wrapping_mul(SEED_MIX) | 1
}

/// One step: `(next state, output)`. For generators whose state lives elsewhere (an
/// `AtomicU64` shared by threads, as the fault injector's).
pub const fn step(state: u64) -> (u64, u64) {
    let mut x = state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x, x.wrapping_mul(0x2545_F491_4F6C_DD1D))
}

/// A seeded generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed` (every seed, 0 included, gives a usable sequence).
    pub const fn new(seed: u64) -> Self {
        Self(seed_state(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let (state, out) = step(self.0);
        self.0 = state;
        out
    }

    /// A value in `lo..=hi`.
    ///
    /// # Panics
    /// If `lo > hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range");
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// A `usize` in `lo..=hi`.
    ///
    /// # Panics
    /// If `lo > hi`.
    pub fn usize_in(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(a.bytes(13).len(), 13);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert_ne!(Rng::new(0).next_u64(), 0);
        let _ = Rng::new(5).range(0, u64::MAX);
    }

    #[test]
    fn range_is_inclusive_and_bounded() {
        let mut r = Rng::new(3);
        let v: Vec<u64> = (0..1000).map(|_| r.range(2, 4)).collect();
        assert!(v.iter().all(|x| (2..=4).contains(x)));
        assert!(v.contains(&2) && v.contains(&4));
    }
}
