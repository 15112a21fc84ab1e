//! The machine's physical limits, measured next to every round: single-core `memcpy`
//! bandwidth and the cross-core cache-line round trip; and what the machine is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::pin;
use super::{BenchOptions, Pinning};

/// The physical limits measured in one round (each the best of five short trials).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Single-core `memcpy` of 64 KiB, hot, bytes copied per second.
    pub memcpy_64k: f64,
    /// Single-core `memcpy` of 1 MiB, bytes copied per second.
    pub memcpy_1m: f64,
    /// Round trip of one cache line between the two cores (two threads ping-ponging an
    /// `AtomicU64`), nanoseconds.
    pub cacheline_rtt_ns: f64,
}

/// The machine the run was made on.
#[derive(Clone, Debug, Default)]
pub struct MachineInfo {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute load averages when the run started (other
    /// work on the machine skews every figure).
    pub loadavg: String,
}

impl MachineInfo {
    /// Reads what Linux tells about this machine (empty strings elsewhere).
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            loadavg,
        }
    }
}

/// Single-core `memcpy` bandwidth of `size`-byte copies (bytes copied per second).
pub fn memcpy_bandwidth(size: usize, time: Duration) -> f64 {
    let src = vec![0xA5u8; size];
    let mut dst = vec![0u8; size];
    for _ in 0..4 {
        dst.copy_from_slice(std::hint::black_box(&src));
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < time {
        for _ in 0..8 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        n += 8;
    }
    (n * size as u64) as f64 / t0.elapsed().as_secs_f64()
}

#[repr(align(128))]
struct Line(AtomicU64);

/// Round trip of one cache line between cores `a` and `b` (two threads ping-ponging an
/// `AtomicU64`), nanoseconds.
pub fn cacheline_rtt(a: Option<usize>, b: Option<usize>, time: Duration) -> f64 {
    let line = Arc::new(Line(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let (l2, d2) = (line.clone(), done.clone());
    let echo = std::thread::spawn(move || {
        pin(b);
        let mut expect = 1u64;
        loop {
            let v = l2.0.load(Ordering::Acquire);
            if v == expect {
                l2.0.store(v + 1, Ordering::Release);
                expect += 2;
            } else if d2.load(Ordering::Relaxed) {
                return;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(a);
    let rt = |i: u64| {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    };
    let mut i = 0u64;
    for _ in 0..1000 {
        rt(i);
        i += 1;
    }
    let t0 = Instant::now();
    let start = i;
    while t0.elapsed() < time {
        for _ in 0..256 {
            rt(i);
            i += 1;
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / (i - start) as f64;
    done.store(true, Ordering::Relaxed);
    let _ = echo.join();
    ns
}

/// The limits of one round: the best of five short trials each (a limit is what the
/// machine can do, so a trial slowed down by other work on the machine does not count).
pub(super) fn measure_limits(opts: &BenchOptions) -> Limits {
    const TRIALS: u32 = 5;
    let t = (opts.cell / 4).max(Duration::from_millis(20)) / TRIALS;
    // memcpy on one pinned helper thread, so the caller's affinity is untouched.
    let (core, _) = Pinning::Cross.cores();
    let best = |f: &dyn Fn() -> f64, better: fn(f64, f64) -> f64| {
        (1..TRIALS).fold(f(), |b, _| better(b, f()))
    };
    let (m64, m1m) = std::thread::spawn(move || {
        pin(core);
        (
            best(&|| memcpy_bandwidth(64 << 10, t), f64::max),
            best(&|| memcpy_bandwidth(1 << 20, t), f64::max),
        )
    })
    .join()
    .unwrap_or((0.0, 0.0));
    let rtt = std::thread::spawn(move || best(&|| cacheline_rtt(Some(0), Some(1), t), f64::min))
        .join()
        .unwrap_or(0.0);
    Limits {
        memcpy_64k: m64,
        memcpy_1m: m1m,
        cacheline_rtt_ns: rtt,
    }
}
