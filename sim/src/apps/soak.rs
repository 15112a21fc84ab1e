//! The soak: many verified SMC-D connections at once, for a bounded time, on the LPAR board
//! (three partitions, crashed and restarted at random) and on the loopback board (copy and
//! no-copy).
//!
//! Every connection sends a random number of bytes of a [`Pattern`] in random chunks; the
//! receiver checks each byte. Each connection ends in one of:
//! * **verified**: every byte arrived, in order;
//! * **error**: either side reported an I/O error (expected when a partition crashes);
//! * **corruption**: a byte differed from the pattern, or the receiver saw a clean end of
//!   stream before the last byte while the sender reported success (data lost silently).
//!
//! A receiver whose own partition crashed during the connection is a process of a dead OS:
//! what it reads afterwards proves nothing (its ring may be the new OS's memory by then), so
//! its mismatches count as errors, not corruptions. Every other endpoint must be exact.
//!
//! Corruptions must be zero. After a partition restarts, new connections from and to it
//! must work again: the report counts SMC-D connections verified on a restarted partition.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ism_host_driver::smcd::{Listener, SmcStack, StackConfig, StackStats, Stream};

use crate::board::{BoardConfig, BoardKind};
use crate::host::IrqMode;
use crate::rng::Rng;
use crate::smc::SmcBoard;
use crate::workload::Pattern;

/// Options of [`run_soak`].
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long new connections are started (running ones then finish).
    pub duration: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Concurrent connection loops per board configuration.
    pub workers: usize,
    /// Largest connection, in bytes (sizes are uniform in `1..=max_bytes`).
    pub max_bytes: u64,
    /// Crash and restart LPAR partitions.
    pub crashes: bool,
    /// Time limit of one read or write (a stream to a crashed partition fails after it).
    pub io_timeout: Duration,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            seed: 1,
            workers: 2,
            max_bytes: 2 << 20,
            crashes: true,
            io_timeout: Duration::from_secs(3),
        }
    }
}

/// Counts of one soak.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Wall time, including the drain of running connections.
    pub elapsed: Duration,
    /// SMC-D statistics of every stack at the end, by name (`lpar/0`, `loopback`,
    /// `loopback-nocopy`); a restarted partition's stack counts from its restart.
    pub stacks: Vec<(String, StackStats)>,
    /// Connections started.
    pub connections: u64,
    /// Connections whose every byte was verified.
    pub verified: u64,
    /// Of those, over SMC-D (the rest fell back to TCP).
    pub verified_smc: u64,
    /// Of those, with no-copy.
    pub verified_nocopy: u64,
    /// Connections where a side reported an error.
    pub errors: u64,
    /// Wrong bytes or silent loss: must be zero.
    pub corruptions: u64,
    /// Bytes that arrived and matched the pattern.
    pub bytes_delivered: u64,
    /// LPAR partitions crashed.
    pub crashes: u64,
    /// LPAR partitions restarted (driver and stack re-created).
    pub restarts: u64,
    /// Restarts that failed (probe or stack error).
    pub restart_failures: u64,
    /// SMC-D connections verified with an endpoint on a restarted partition, started after
    /// its last restart.
    pub verified_after_restart: u64,
}

impl SoakReport {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{:.1} s: {} connections, {} verified ({} SMC-D, {} no-copy), {} errors, {} corruptions; \
             {} delivered; {} crashes, {} restarts ({} failed), {} SMC-D connections verified after a restart",
            self.elapsed.as_secs_f64(),
            self.connections,
            self.verified,
            self.verified_smc,
            self.verified_nocopy,
            self.errors,
            self.corruptions,
            crate::cli::fmt_bytes(self.bytes_delivered),
            self.crashes,
            self.restarts,
            self.restart_failures,
            self.verified_after_restart,
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    verified: AtomicU64,
    verified_smc: AtomicU64,
    verified_nocopy: AtomicU64,
    errors: AtomicU64,
    corruptions: AtomicU64,
    bytes: AtomicU64,
    crashes: AtomicU64,
    restarts: AtomicU64,
    restart_failures: AtomicU64,
    after_restart: AtomicU64,
}

/// What the receiving side saw.
enum Received {
    /// Clean end of stream after `n` verified bytes.
    Eof(u64),
    /// An error after `n` verified bytes.
    Error(u64),
    /// A byte differed at offset `n`.
    Corrupt(u64),
}

fn receive(mut s: Stream, seed: u64, timeout: Duration) -> Received {
    if s.set_timeout(Some(timeout)).is_err() {
        return Received::Error(0);
    }
    let mut pat = Pattern::new(seed);
    let (mut buf, mut scratch) = (vec![0u8; 64 << 10], Vec::new());
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Received::Eof(got),
            Ok(n) => {
                if let Err(i) = pat.check(&buf[..n], &mut scratch) {
                    return Received::Corrupt(got + i as u64);
                }
                got += n as u64;
            }
            Err(_) => return Received::Error(got),
        }
    }
}

/// Sends `len` bytes of the pattern in chunks of `chunk`, then shuts down writing.
fn send(s: &mut Stream, len: u64, chunk: usize, seed: u64) -> std::io::Result<()> {
    let mut pat = Pattern::new(seed);
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(chunk as u64) as usize;
        pat.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write)
}

/// Outcome of one connection, for the counters.
struct Outcome {
    verified: bool,
    smc: bool,
}

/// One connection from `client` to `server`, both ends checked; updates the counters.
/// `receiver_killed` tells, afterwards, whether the server's partition crashed meanwhile:
/// then the receiving "process" died with it and what it saw proves nothing (its ring may
/// already be the new OS's memory), so a mismatch there counts as an error.
fn one_connection(
    client: &Arc<SmcStack>,
    server: &Arc<SmcStack>,
    rng: &mut Rng,
    opts: &SoakOptions,
    c: &Counters,
    receiver_killed: impl Fn() -> bool,
) -> Outcome {
    c.connections.fetch_add(1, Ordering::Relaxed);
    let failed = Outcome {
        verified: false,
        smc: false,
    };
    let len = rng.range(1, opts.max_bytes.max(1));
    let chunk = rng.range(1, 256 << 10) as usize;
    let seed = rng.next_u64();
    let listener = match Listener::bind(server, "127.0.0.1:0") {
        Ok(l) => l,
        Err(_) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return failed;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        c.errors.fetch_add(1, Ordering::Relaxed);
        return failed;
    };
    let timeout = opts.io_timeout;
    // A client whose handshake fails never reaches `accept`: stop waiting when the client
    // gives up, and in any case after the longest a handshake can take.
    let limit = server.config().clc_timeout + timeout;
    let gave_up = Arc::new(AtomicBool::new(false));
    let client_gone = gave_up.clone();
    let rx = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        loop {
            match listener.accept_timeout(Duration::from_millis(20)) {
                Ok((s, _)) => return receive(s, seed, timeout),
                Err(e)
                    if e.kind() == std::io::ErrorKind::TimedOut
                        && !client_gone.load(Ordering::Acquire)
                        && Instant::now() < deadline => {}
                Err(_) => return Received::Error(0),
            }
        }
    });
    let sent = match Stream::connect(client, addr) {
        Ok(mut s) => {
            let smc = s.is_smc();
            let nocopy = s.stats().nocopy;
            let r = s
                .set_timeout(Some(timeout))
                .and_then(|_| send(&mut s, len, chunk, seed));
            drop(s);
            r.map(|_| (smc, nocopy))
        }
        Err(e) => {
            gave_up.store(true, Ordering::Release);
            Err(e)
        }
    };
    let received = match rx.join().unwrap_or(Received::Error(0)) {
        Received::Corrupt(n) if receiver_killed() => Received::Error(n),
        Received::Eof(n) if n < len && receiver_killed() => Received::Error(n),
        r => r,
    };
    let (delivered, verdict) = match (&sent, received) {
        (_, Received::Corrupt(at)) => {
            log::error!("soak: corruption at byte {at} of {len}");
            (at, None)
        }
        (Ok(_), Received::Eof(n)) if n == len => (n, Some(true)),
        (Ok(_), Received::Eof(n)) => {
            log::error!("soak: silent loss: clean end after {n} of {len} bytes");
            (n, None)
        }
        (_, Received::Eof(n) | Received::Error(n)) => (n, Some(false)),
    };
    c.bytes.fetch_add(delivered, Ordering::Relaxed);
    match verdict {
        None => {
            c.corruptions.fetch_add(1, Ordering::Relaxed);
            failed
        }
        Some(false) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            failed
        }
        Some(true) => {
            let (smc, nocopy) = sent.unwrap_or((false, false));
            c.verified.fetch_add(1, Ordering::Relaxed);
            c.verified_smc.fetch_add(u64::from(smc), Ordering::Relaxed);
            c.verified_nocopy
                .fetch_add(u64::from(nocopy), Ordering::Relaxed);
            Outcome {
                verified: true,
                smc,
            }
        }
    }
}

/// One board under load: the board, and per partition the number of crashes and of
/// restarts so far.
struct Shared {
    board: RwLock<SmcBoard>,
    crashes: Vec<AtomicU64>,
    restarts: Vec<AtomicU64>,
}

fn worker(shared: &Shared, id: u64, opts: &SoakOptions, stop: &AtomicBool, c: &Counters) {
    let mut rng = Rng::new(opts.seed ^ (id << 32));
    let n = shared.restarts.len();
    while !stop.load(Ordering::Acquire) {
        let (ci, si) = if n == 1 {
            (0, 0)
        } else {
            let a = rng.range(0, n as u64 - 1) as usize;
            let b = (a + rng.range(1, n as u64 - 1) as usize) % n;
            (a, b)
        };
        let load = |v: &[AtomicU64]| (v[ci].load(Ordering::Acquire), v[si].load(Ordering::Acquire));
        let (crashes, restarts) = (load(&shared.crashes), load(&shared.restarts));
        let (cs, ss) = {
            let b = shared.board.read().unwrap_or_else(|e| e.into_inner());
            (b.stack(ci).clone(), b.stack(si).clone())
        };
        let killed = || shared.crashes[si].load(Ordering::Acquire) != crashes.1;
        let out = one_connection(&cs, &ss, &mut rng, opts, c, killed);
        let untouched = load(&shared.crashes) == crashes;
        if out.verified && out.smc && untouched && restarts != (0, 0) {
            c.after_restart.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn crasher(shared: &Shared, opts: &SoakOptions, stop: &AtomicBool, c: &Counters) {
    let mut rng = Rng::new(opts.seed ^ 0xC4A5);
    let n = shared.restarts.len();
    let nap = |ms: u64| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    loop {
        nap(rng.range(300, 1500));
        if stop.load(Ordering::Acquire) {
            return;
        }
        let p = rng.range(0, n as u64 - 1) as usize;
        shared.crashes[p].fetch_add(1, Ordering::AcqRel);
        shared
            .board
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .board()
            .crash(p);
        c.crashes.fetch_add(1, Ordering::Relaxed);
        // Down for a while (even past the end: the reboot always completes).
        std::thread::sleep(Duration::from_millis(rng.range(50, 400)));
        let r = shared
            .board
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .restart_partition(p);
        match r {
            Ok(()) => {
                shared.restarts[p].fetch_add(1, Ordering::AcqRel);
                c.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::error!("soak: restart of partition {p} failed: {e}");
                c.restart_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn start_board(kind: BoardKind, partitions: usize, nocopy: bool) -> Result<SmcBoard, String> {
    let board_cfg = BoardConfig {
        partition_memory: 96 << 20,
        ..BoardConfig::default()
    };
    let stack_cfg = StackConfig {
        nocopy,
        buffer_size: if kind == BoardKind::Lpar {
            64 << 10
        } else {
            256 << 10
        },
        clc_timeout: Duration::from_secs(3),
        ..StackConfig::default()
    };
    SmcBoard::start(kind, partitions, board_cfg, IrqMode::Thread, stack_cfg)
        .map_err(|e| format!("{kind:?} board: {e}"))
}

/// Runs the soak: `opts.workers` connection loops on each of the LPAR board (three
/// partitions; with `opts.crashes`, one partition at a time crashed and restarted at random
/// intervals), the loopback board with copy, and the loopback board with no-copy.
///
/// # Errors
/// If a board cannot be started.
pub fn run_soak(opts: &SoakOptions) -> Result<SoakReport, String> {
    let start = Instant::now();
    let boards = [
        (start_board(BoardKind::Lpar, 3, false)?, true),
        (start_board(BoardKind::Loopback, 1, false)?, false),
        (start_board(BoardKind::Loopback, 1, true)?, false),
    ];
    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let shared: Vec<(Shared, bool)> = boards
        .into_iter()
        .map(|(b, crash)| {
            let n = b.board().partitions().len();
            let s = Shared {
                board: RwLock::new(b),
                crashes: (0..n).map(|_| AtomicU64::new(0)).collect(),
                restarts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            };
            (s, crash)
        })
        .collect();
    std::thread::scope(|scope| {
        let mut id = 0;
        for (s, crash) in &shared {
            for _ in 0..opts.workers {
                id += 1;
                let (stop, counters) = (&stop, &counters);
                scope.spawn(move || worker(s, id, opts, stop, counters));
            }
            if *crash && opts.crashes {
                let (stop, counters) = (&stop, &counters);
                scope.spawn(move || crasher(s, opts, stop, counters));
            }
        }
        std::thread::sleep(opts.duration);
        stop.store(true, Ordering::Release);
    });
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &counters;
    let mut stacks = Vec::new();
    for ((s, _), name) in shared.iter().zip(["lpar", "loopback", "loopback-nocopy"]) {
        let b = s.board.read().unwrap_or_else(|e| e.into_inner());
        let n = b.board().partitions().len();
        for i in 0..n {
            let label = if n > 1 {
                format!("{name}/{i}")
            } else {
                name.to_string()
            };
            stacks.push((label, b.stack(i).stats()));
        }
    }
    Ok(SoakReport {
        elapsed: start.elapsed(),
        stacks,
        connections: l(&c.connections),
        verified: l(&c.verified),
        verified_smc: l(&c.verified_smc),
        verified_nocopy: l(&c.verified_nocopy),
        errors: l(&c.errors),
        corruptions: l(&c.corruptions),
        bytes_delivered: l(&c.bytes),
        crashes: l(&c.crashes),
        restarts: l(&c.restarts),
        restart_failures: l(&c.restart_failures),
        verified_after_restart: l(&c.after_restart),
    })
}
