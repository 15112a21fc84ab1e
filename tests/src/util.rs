//! Helpers shared by the integration tests: the simulator's deterministic PRNG (so every run
//! sees the same "random" sizes and tokens), whole-domain hashing, bounded waits.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use ism_hal::DmaMemory;

pub use ism_sim::rng::Rng;

/// A hash of every byte of a memory domain (read in 1 MiB pieces).
///
/// # Panics
/// If the domain refuses to read its own range.
pub fn hash_domain<M: DmaMemory + ?Sized>(mem: &M) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let (base, size) = (mem.base().0, mem.size());
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        mem.read(ism_hal::DevAddr(base + off), &mut buf[..n])
            .expect("a domain reads its own range");
        buf[..n].hash(&mut h);
        off += n as u64;
    }
    h.finish()
}

/// Polls `cond` until it holds or `timeout` passes (sleeping 200 µs between tries);
/// returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
