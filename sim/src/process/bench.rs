//! Cross-process cells of `ism-sim bench`: SMC-D between two processes on one process
//! board. The bench process runs the board (a thread, the same socket and shared objects as
//! `ism-sim board`) and the client; the server is a child process
//! (`ism-sim board bench-peer`, hidden) that attaches to the board as its own function.
//! Metrics and windows are the in-process cells': the message rate and latencies are timed
//! at the client; bandwidth is counted at the receiver (the child), which reports
//! `result BYTES NANOS` when its window is over.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ism_host_driver::smcd::{StackConfig, Stream};

use super::local::LocalBoard;
use crate::board::BoardKind;

/// How long a cell may wait for its child before it fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// The `ism-sim` executable: this one if it is `ism-sim`, else `ism-sim` in the target
/// directory above a test executable (`target/debug/deps/..`).
pub fn ism_sim_exe() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    if me.file_name().is_some_and(|n| n == "ism-sim") {
        return Some(me);
    }
    let up = me.parent()?.parent()?.join("ism-sim");
    up.is_file().then_some(up)
}

/// The child server of a cell; killed and reaped on drop.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn line(&self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(format!("bench peer: no {prefix:?} line")),
            }
        }
    }

    fn wait(mut self) -> Result<(), String> {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                if st.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("bench peer failed: {}", err.trim()));
            }
            if Instant::now() > deadline {
                return Err("bench peer did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the child does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerRole {
    /// Echo every byte back until end of stream.
    Echo,
    /// Count bytes in a window after a warm-up, report `result BYTES NANOS`, drain to EOF.
    Sink,
}

/// Options of the child, as `ism-sim board bench-peer` takes them.
#[derive(Clone, Debug, clap::Args)]
pub struct PeerArgs {
    /// The board's name.
    pub name: String,
    /// Echo or sink.
    #[arg(long, value_enum)]
    pub role: PeerRole,
    /// Read size.
    #[arg(long)]
    pub size: usize,
    /// Warm-up before the window (sink), µs.
    #[arg(long, default_value_t = 0)]
    pub warmup_us: u64,
    /// The window (sink), µs.
    #[arg(long, default_value_t = 0)]
    pub cell_us: u64,
    /// Offer no-copy.
    #[arg(long)]
    pub nocopy: bool,
    /// Busy-poll.
    #[arg(long)]
    pub busy: bool,
    /// Pin to this core.
    #[arg(long)]
    pub core: Option<usize>,
}

fn stack_cfg(nocopy: bool, busy: bool) -> StackConfig {
    StackConfig {
        nocopy,
        buffer_size: crate::bench::BUFFER,
        busy_poll: busy,
        ..StackConfig::default()
    }
}

fn pin(core: Option<usize>) {
    if let Some(i) = core {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        if !ids.is_empty() {
            core_affinity::set_for_current(ids[i % ids.len()]);
        }
    }
}

fn read_exact(s: &mut Stream, buf: &mut [u8]) -> std::io::Result<bool> {
    crate::bench::fill_or_eof(|b| s.read(b), buf)
}

/// The child's side (`ism-sim board bench-peer`).
///
/// # Errors
/// A readable message.
pub fn run_peer(a: &PeerArgs) -> Result<(), String> {
    pin(a.core);
    let at = super::attach(&a.name).map_err(|e| e.to_string())?;
    let stack = at
        .smc_stack(stack_cfg(a.nocopy, a.busy))
        .map_err(|e| e.to_string())?;
    let l =
        ism_host_driver::smcd::Listener::bind(&stack, "127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
    let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
    s.set_busy_poll(a.busy);
    let mut buf = vec![0u8; a.size];
    match a.role {
        PeerRole::Echo => loop {
            match read_exact(&mut s, &mut buf) {
                Ok(true) => s.write_all(&buf).map_err(|e| format!("echo write: {e}"))?,
                Ok(false) => break,
                Err(e) => return Err(format!("echo read: {e}")),
            }
        },
        PeerRole::Sink => {
            let mut window = crate::bench::ReceiveWindow::new(
                Duration::from_micros(a.warmup_us),
                Duration::from_micros(a.cell_us),
            );
            let mut done = false;
            loop {
                let n = s.read(&mut buf).map_err(|e| format!("sink read: {e}"))?;
                if n == 0 {
                    break;
                }
                if done {
                    continue;
                }
                if let Some((bytes, d)) = window.received(n) {
                    let _ = writeln!(out, "result {} {}", bytes, d.as_nanos());
                    let _ = out.flush();
                    done = true;
                }
            }
        }
    }
    drop(s);
    at.detach();
    Ok(())
}

fn spawn_peer(exe: &Path, dir: &Path, args: &[String]) -> Result<Peer, String> {
    let mut child = Command::new(exe)
        .args(args)
        .env(super::DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok(Peer { child, lines: rx })
}

/// The measurement of one cross-process cell: `(count, window)` as the in-process cells
/// return them (round trips, or bytes received).
pub enum CellKind {
    /// Ping-pong of this many bytes.
    PingPong(usize),
    /// One-way stream of writes of this many bytes.
    Stream(usize),
}

/// Runs one cell between this process (client) and a child (server) on a fresh board of
/// `kind`; returns (round trips or bytes, measured window, and for ping-pong every round
/// trip's time in ns, timed by the client here).
///
/// # Errors
/// A readable message (no `ism-sim` executable, a failed attach, a fallback to TCP, ...).
pub fn run_cell(
    kind: BoardKind,
    nocopy: bool,
    busy: bool,
    cell: CellKind,
    warmup: Duration,
    window: Duration,
    cores: (Option<usize>, Option<usize>),
) -> Result<(u64, Duration, Option<hdrhistogram::Histogram<u64>>), String> {
    let exe = ism_sim_exe().ok_or("the ism-sim executable was not found")?;
    // Two 1 MiB RMBs, a send buffer, SBA and IEQ fit in 8 MiB.
    let board = LocalBoard::start(kind, 2, 8 << 20, Box::new(std::io::sink()))?;
    let (role, size) = match cell {
        CellKind::PingPong(n) => ("echo", n),
        CellKind::Stream(n) => ("sink", n),
    };
    let mut args: Vec<String> = [
        "board",
        "bench-peer",
        board.name(),
        "--role",
        role,
        "--size",
        &size.to_string(),
        "--warmup-us",
        &warmup.as_micros().to_string(),
        "--cell-us",
        &window.as_micros().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if nocopy {
        args.push("--nocopy".into());
    }
    if busy {
        args.push("--busy".into());
    }
    if let Some(c) = cores.0 {
        args.push("--core".into());
        args.push(c.to_string());
    }
    let peer = spawn_peer(&exe, board.dir(), &args)?;
    let addr = peer.line("listening ")?;
    let addr = addr.trim_start_matches("listening ").to_owned();
    let at = super::attach_in(board.dir(), board.name()).map_err(|e| e.to_string())?;
    let stack = at
        .smc_stack(stack_cfg(nocopy, busy))
        .map_err(|e| e.to_string())?;
    let mut s = Stream::connect(&stack, addr.as_str()).map_err(|e| format!("connect: {e}"))?;
    if let Some(r) = s.fallback_reason() {
        return Err(format!("fell back to TCP: {r}"));
    }
    if s.stats().nocopy != nocopy {
        return Err("no-copy not negotiated as asked".into());
    }
    s.set_busy_poll(busy);
    let client_core = cores.1;
    let r = match cell {
        CellKind::PingPong(size) => std::thread::scope(|sc| {
            sc.spawn(|| {
                pin(client_core);
                let msg = vec![0x5Au8; size];
                let mut buf = vec![0u8; size];
                let mut rt = |s: &mut Stream| -> Result<(), String> {
                    s.write_all(&msg)
                        .map_err(|e| format!("client write: {e}"))?;
                    match read_exact(s, &mut buf) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("server closed".into()),
                        Err(e) => Err(format!("client read: {e}")),
                    }
                };
                crate::bench::timed_round_trips(|| rt(&mut s), warmup, window)
                    .map(|(n, d, h)| (n, d, Some(h)))
            })
            .join()
            .map_err(|_| "client panicked".to_string())?
        }),
        CellKind::Stream(size) => {
            let stop = Arc::new(AtomicBool::new(false));
            let r = std::thread::scope(|sc| {
                let w = sc.spawn(|| -> Result<(), String> {
                    pin(client_core);
                    let msg = vec![0x5Au8; size];
                    while !stop.load(Ordering::Acquire) {
                        s.write_all(&msg)
                            .map_err(|e| format!("client write: {e}"))?;
                    }
                    Ok(())
                });
                let res = peer.line("result ");
                stop.store(true, Ordering::Release);
                let wr = w.join().map_err(|_| "client panicked".to_string())?;
                wr?;
                res
            })?;
            let mut it = r.split_whitespace().skip(1).map(|x| x.parse::<u64>());
            match (it.next(), it.next()) {
                (Some(Ok(b)), Some(Ok(ns))) => Ok((b, Duration::from_nanos(ns), None)),
                _ => Err(format!("bench peer: bad result line {r:?}")),
            }
        }
    };
    let _ = s.shutdown(std::net::Shutdown::Write);
    let done = peer.wait();
    drop(s);
    drop(stack);
    at.detach();
    drop(board);
    let r = r?;
    done?;
    Ok(r)
}
