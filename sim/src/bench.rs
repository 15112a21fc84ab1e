//! `ism-sim bench`: the seed's comparison (the loopback-ism cover letter's ipc-bench,
//! sockperf throughput and sockperf latency), measured side by side in one process.
//!
//! Transports: TCP loopback (`TCP_NODELAY`), UNIX domain stream sockets, SMC-D over an LPAR
//! board (the device copies between partitions), SMC-D loopback (copy) and SMC-D loopback
//! no-copy. Metrics:
//! * message rate: 100-byte ping-pong, round trips per second (ipc-bench counts one round
//!   trip as one "message");
//! * bandwidth: one-way stream of 64 000-byte writes, MB/s (10^6 bytes) counted at the
//!   receiver (sockperf throughput);
//! * latency: 14-byte ping-pong, RTT/2 in µs (sockperf ping-pong), once blocking and once
//!   busy-polling (TCP/UNIX: non-blocking sockets spun on; SMC-D: `IrqMode::Poll` and
//!   `set_busy_poll(true)`).
//!
//! Every cell (metric × transport) runs on a fresh connection with its own client and
//! server threads (pinned as [`Pinning`] says); rounds interleave all cells, rotating the
//! transport order, so machine noise hits all transports alike. Each round also measures
//! the machine's physical limits: single-core `memcpy` bandwidth (64 KiB and 1 MiB) and
//! the cross-core cache-line round trip, each the best of five short trials. Reported
//! are medians over rounds with min–max.
//!
//! Buffers: SMC-D RMBs are 1 MiB; TCP and UNIX sockets get `SO_SNDBUF`/`SO_RCVBUF` of
//! 1 MB, set before connecting (the kernel doubles the value; [`BenchReport::sockbuf`]
//! holds what it reports back).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ism_host_driver::smcd::{Listener, StackConfig, Stream};
use socket2::{Domain, SockRef, Socket, Type};

use crate::board::{BoardConfig, BoardKind};
use crate::host::IrqMode;
use crate::smc::SmcBoard;
use crate::trace::json_string;

/// Socket and RMB buffer size asked for everywhere (bytes).
pub const BUFFER: usize = 1 << 20;
/// Message size of the message-rate test (ipc-bench `-s 100`).
pub const MSG_RATE_SIZE: usize = 100;
/// Message size of the bandwidth test (sockperf `--msg-size=64000`).
pub const BANDWIDTH_SIZE: usize = 64_000;
/// Message size of the latency tests (sockperf `--msg-size=14`).
pub const LATENCY_SIZE: usize = 14;

/// A transport under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP over 127.0.0.1 with `TCP_NODELAY`.
    Tcp,
    /// A UNIX domain stream socket pair.
    Unix,
    /// SMC-D between two partitions of an LPAR board (copy by the device).
    SmcLpar,
    /// SMC-D on the loopback board, copy mode.
    SmcLo,
    /// SMC-D on the loopback board, no-copy (the peer's DMB attached).
    SmcLoNocopy,
    /// SMC-D between two processes on an LPAR process board (`crate::process::bench`).
    ProcLpar,
    /// SMC-D between two processes on a loopback process board, copy mode.
    ProcLo,
    /// SMC-D between two processes on a loopback process board, no-copy.
    ProcLoNocopy,
}

impl Transport {
    /// All transports, in table order.
    pub const ALL: [Transport; 8] = [
        Transport::Tcp,
        Transport::Unix,
        Transport::SmcLpar,
        Transport::SmcLo,
        Transport::SmcLoNocopy,
        Transport::ProcLpar,
        Transport::ProcLo,
        Transport::ProcLoNocopy,
    ];

    /// Human-readable name.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP loopback",
            Transport::Unix => "UNIX socket",
            Transport::SmcLpar => "SMC-D LPAR (copy)",
            Transport::SmcLo => "SMC-D loopback (copy)",
            Transport::SmcLoNocopy => "SMC-D loopback no-copy",
            Transport::ProcLpar => "2 procs: LPAR (copy)",
            Transport::ProcLo => "2 procs: loopback (copy)",
            Transport::ProcLoNocopy => "2 procs: lo no-copy",
        }
    }

    /// Machine-readable name.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
            Transport::SmcLpar => "smcd_lpar",
            Transport::SmcLo => "smcd_lo",
            Transport::SmcLoNocopy => "smcd_lo_nocopy",
            Transport::ProcLpar => "proc_lpar",
            Transport::ProcLo => "proc_lo",
            Transport::ProcLoNocopy => "proc_lo_nocopy",
        }
    }

    /// Whether this is an SMC-D transport.
    pub fn is_smc(self) -> bool {
        !matches!(self, Transport::Tcp | Transport::Unix)
    }
}

/// A measured quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// 100-byte ping-pong round trips per second.
    MsgRate,
    /// 64 000-byte one-way streaming, MB/s.
    Bandwidth,
    /// 14-byte ping-pong RTT/2 in µs, blocking waits.
    Latency,
    /// 14-byte ping-pong RTT/2 in µs, busy-polling.
    LatencyBusy,
}

impl Metric {
    /// All metrics, in table order.
    pub const ALL: [Metric; 4] = [
        Metric::MsgRate,
        Metric::Bandwidth,
        Metric::Latency,
        Metric::LatencyBusy,
    ];

    /// Human-readable name.
    pub fn label(self) -> &'static str {
        match self {
            Metric::MsgRate => "message rate, 100 B ping-pong (ipc-bench)",
            Metric::Bandwidth => "bandwidth, 64000 B one-way (sockperf tp)",
            Metric::Latency => "latency, 14 B ping-pong RTT/2, blocking (sockperf pp)",
            Metric::LatencyBusy => "latency, 14 B ping-pong RTT/2, busy-poll",
        }
    }

    /// Machine-readable name.
    pub fn key(self) -> &'static str {
        match self {
            Metric::MsgRate => "msg_rate",
            Metric::Bandwidth => "bandwidth",
            Metric::Latency => "latency_blocking",
            Metric::LatencyBusy => "latency_busy_poll",
        }
    }

    /// Unit of the values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::MsgRate => "round trips/s",
            Metric::Bandwidth => "MB/s",
            Metric::Latency | Metric::LatencyBusy => "us",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::MsgRate | Metric::Bandwidth)
    }
}

/// Where the client and server threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pinning {
    /// The scheduler decides.
    None,
    /// Server on core 0, client on core 1.
    Cross,
    /// Both on core 0.
    Same,
}

impl Pinning {
    fn key(self) -> &'static str {
        match self {
            Pinning::None => "unpinned",
            Pinning::Cross => "cross (server core 0, client core 1)",
            Pinning::Same => "same (both on core 0)",
        }
    }

    /// (server core, client core) indices, if pinned.
    fn cores(self) -> (Option<usize>, Option<usize>) {
        match self {
            Pinning::None => (None, None),
            Pinning::Cross => (Some(0), Some(1)),
            Pinning::Same => (Some(0), Some(0)),
        }
    }
}

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Rounds (each measures every cell once).
    pub rounds: usize,
    /// Measured time of one cell.
    pub cell: Duration,
    /// Warm-up before the measured time of one cell.
    pub warmup: Duration,
    /// Thread placement.
    pub pinning: Pinning,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The command line, for the report.
    pub command: String,
    /// Run only the cells whose metric or transport key is listed (empty: all); a list
    /// naming both kinds selects their intersection. For profiling one cell.
    pub only: Vec<String>,
}

impl BenchOptions {
    fn selected(&self, m: Metric, t: Transport) -> bool {
        let has = |k: &str| self.only.iter().any(|o| o == k);
        let any_m = Metric::ALL.iter().any(|x| has(x.key()));
        let any_t = Transport::ALL.iter().any(|x| has(x.key()));
        (!any_m || has(m.key())) && (!any_t || has(t.key()))
    }
}

impl BenchOptions {
    /// The full run: 5 rounds of 0.6 s per cell.
    pub fn full() -> Self {
        Self {
            rounds: 5,
            cell: Duration::from_millis(600),
            warmup: Duration::from_millis(150),
            pinning: Pinning::Cross,
            progress: true,
            command: String::from("ism-sim bench"),
            only: Vec::new(),
        }
    }

    /// A short run: 2 rounds of 80 ms per cell (a few seconds in all).
    pub fn quick() -> Self {
        Self {
            rounds: 2,
            cell: Duration::from_millis(80),
            warmup: Duration::from_millis(20),
            ..Self::full()
        }
    }
}

/// One series: every round's value of one metric on one transport.
#[derive(Clone, Debug)]
pub struct Series {
    /// The metric.
    pub metric: Metric,
    /// The transport.
    pub transport: Transport,
    /// One value per round.
    pub samples: Vec<f64>,
}

/// Median, minimum and maximum of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `v` (all zero if empty).
    pub fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Self {
            median,
            min: s[0],
            max: s[n - 1],
        }
    }
}

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

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The options used.
    pub options: BenchOptions,
    /// The machine.
    pub machine: MachineInfo,
    /// Start of the run, UTC (`YYYY-MM-DD HH:MM:SS UTC`).
    pub date: String,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// `SO_SNDBUF` / `SO_RCVBUF` the kernel reported for TCP and UNIX sockets after
    /// asking for [`BUFFER`] bytes (Linux doubles the request).
    pub sockbuf: (usize, usize),
    /// Whether threads were actually pinned (pinning can fail, e.g. with one CPU).
    pub pinned: bool,
    /// Physical limits, one per round.
    pub limits: Vec<Limits>,
    /// One series per (metric, transport), in table order.
    pub series: Vec<Series>,
}

// ------------------------------------------------------------------------- endpoints

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    Smc(Stream),
}

impl Sock {
    /// Makes a kernel socket non-blocking (for busy-polling); SMC-D busy-polls by itself.
    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Sock::Tcp(t) => t.set_nonblocking(true),
            Sock::Unix(u) => u.set_nonblocking(true),
            Sock::Smc(_) => Ok(()),
        }
    }
}

/// One end of a connection; `spin` turns `WouldBlock` into a spin (non-blocking sockets).
struct Endpoint {
    sock: Sock,
    spin: bool,
}

impl Endpoint {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match &mut self.sock {
                Sock::Tcp(s) => s.read(buf),
                Sock::Unix(s) => s.read(buf),
                Sock::Smc(s) => s.read(buf),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.spin => {
                    std::hint::spin_loop()
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let r = match &mut self.sock {
                Sock::Tcp(s) => s.write(buf),
                Sock::Unix(s) => s.write(buf),
                Sock::Smc(s) => s.write(buf),
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.spin => {
                    std::hint::spin_loop()
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Fills `buf`; `Ok(false)` on end of stream before the first byte.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..])? {
                0 if got == 0 => return Ok(false),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(true)
    }

    fn shutdown_write(&self) {
        let _ = match &self.sock {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
            Sock::Smc(s) => s.shutdown(Shutdown::Write),
        };
    }
}

fn sized_socket(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::STREAM, None)?;
    s.set_send_buffer_size(BUFFER)?;
    s.set_recv_buffer_size(BUFFER)?;
    Ok(s)
}

fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = sized_socket(Domain::IPV4)?;
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    l.listen(1)?;
    let l: TcpListener = l.into();
    let c = sized_socket(Domain::IPV4)?;
    c.connect(&l.local_addr()?.into())?;
    let c: TcpStream = c.into();
    let (s, _) = l.accept()?;
    c.set_nodelay(true)?;
    s.set_nodelay(true)?;
    Ok((c, s))
}

fn unix_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (c, s) = UnixStream::pair()?;
    for x in [&c, &s] {
        let r = SockRef::from(x);
        r.set_send_buffer_size(BUFFER)?;
        r.set_recv_buffer_size(BUFFER)?;
    }
    Ok((c, s))
}

/// What the kernel reports for a socket sized like the benchmark's.
fn effective_sockbuf() -> (usize, usize) {
    tcp_pair()
        .ok()
        .and_then(|(c, _)| {
            let r = SockRef::from(&c);
            Some((r.send_buffer_size().ok()?, r.recv_buffer_size().ok()?))
        })
        .unwrap_or((0, 0))
}

/// A connected pair of `t`; the board (SMC-D) must outlive the endpoints.
fn connect(t: Transport, busy: bool) -> Result<(Option<SmcBoard>, Endpoint, Endpoint), String> {
    let pair = |a, b| {
        (
            Endpoint {
                sock: a,
                spin: busy,
            },
            Endpoint {
                sock: b,
                spin: busy,
            },
        )
    };
    match t {
        Transport::Tcp | Transport::Unix => {
            let (c, s) = if t == Transport::Tcp {
                let (c, s) = tcp_pair().map_err(|e| format!("TCP: {e}"))?;
                (Sock::Tcp(c), Sock::Tcp(s))
            } else {
                let (c, s) = unix_pair().map_err(|e| format!("UNIX: {e}"))?;
                (Sock::Unix(c), Sock::Unix(s))
            };
            if busy {
                c.set_nonblocking().map_err(|e| e.to_string())?;
                s.set_nonblocking().map_err(|e| e.to_string())?;
            }
            let (c, s) = pair(c, s);
            Ok((None, c, s))
        }
        Transport::SmcLpar | Transport::SmcLo | Transport::SmcLoNocopy => {
            let kind = if t == Transport::SmcLpar {
                BoardKind::Lpar
            } else {
                BoardKind::Loopback
            };
            let nocopy = t == Transport::SmcLoNocopy;
            let board_cfg = BoardConfig {
                // Two 1 MiB RMBs, a 1 MiB send buffer, SBA and IEQ fit; small because a
                // board is built per cell.
                partition_memory: 8 << 20,
                ..BoardConfig::default()
            };
            let stack_cfg = StackConfig {
                nocopy,
                buffer_size: BUFFER,
                busy_poll: busy,
                ..StackConfig::default()
            };
            let irq = if busy { IrqMode::Poll } else { IrqMode::Thread };
            let board = SmcBoard::start(kind, 2, board_cfg, irq, stack_cfg)
                .map_err(|e| format!("{}: board: {e}", t.label()))?;
            let (cs, ss) = board.pair();
            let l = Listener::bind(&ss, "127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            let server = std::thread::spawn(move || l.accept().map(|(s, _)| s));
            let c = Stream::connect(&cs, addr).map_err(|e| format!("connect: {e}"))?;
            let s = server
                .join()
                .map_err(|_| "accept panicked".to_string())?
                .map_err(|e| format!("accept: {e}"))?;
            if let Some(r) = c.fallback_reason() {
                return Err(format!("{}: fell back to TCP: {r}", t.label()));
            }
            if c.stats().nocopy != nocopy {
                return Err(format!("{}: no-copy not negotiated as asked", t.label()));
            }
            c.set_busy_poll(busy);
            s.set_busy_poll(busy);
            let (c, s) = pair(Sock::Smc(c), Sock::Smc(s));
            Ok((Some(board), c, s))
        }
        Transport::ProcLpar | Transport::ProcLo | Transport::ProcLoNocopy => Err(format!(
            "{}: a cross-process cell has no local server end",
            t.label()
        )),
    }
}

// ------------------------------------------------------------------------- workloads

/// Pins the current thread to core `i` (of the cores the process may use); returns
/// whether it worked.
fn pin(i: Option<usize>) -> bool {
    let Some(i) = i else { return false };
    let ids = cores();
    !ids.is_empty() && core_affinity::set_for_current(ids[i % ids.len()])
}

/// The cores the process may use, read once: `get_core_ids` reports the *calling
/// thread's* affinity, which is a single core once that thread (or its parent) is pinned.
fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

fn join<T>(h: std::thread::JoinHandle<Result<T, String>>, who: &str) -> Result<T, String> {
    h.join().map_err(|_| format!("{who} thread panicked"))?
}

/// Ping-pong of `size`-byte messages; returns (round trips, measured time).
fn ping_pong(
    mut client: Endpoint,
    mut server: Endpoint,
    size: usize,
    opts: &BenchOptions,
) -> Result<(u64, Duration), String> {
    let (score, ccore) = opts.pinning.cores();
    let srv = std::thread::spawn(move || -> Result<(), String> {
        pin(score);
        let mut buf = vec![0u8; size];
        loop {
            match server.read_exact(&mut buf) {
                Ok(true) => server
                    .write_all(&buf)
                    .map_err(|e| format!("server write: {e}"))?,
                Ok(false) => return Ok(()),
                Err(e) => return Err(format!("server read: {e}")),
            }
        }
    });
    let (warmup, cell) = (opts.warmup, opts.cell);
    let cli = std::thread::spawn(move || -> Result<(u64, Duration), String> {
        pin(ccore);
        let msg = vec![0x5Au8; size];
        let mut buf = vec![0u8; size];
        let mut rt = |ep: &mut Endpoint| -> Result<(), String> {
            ep.write_all(&msg)
                .map_err(|e| format!("client write: {e}"))?;
            match ep.read_exact(&mut buf) {
                Ok(true) => Ok(()),
                Ok(false) => Err("server closed".into()),
                Err(e) => Err(format!("client read: {e}")),
            }
        };
        let start = Instant::now();
        while start.elapsed() < warmup {
            rt(&mut client)?;
        }
        let t0 = Instant::now();
        let mut n = 0u64;
        let elapsed = loop {
            rt(&mut client)?;
            n += 1;
            let e = t0.elapsed();
            if e >= cell {
                break e;
            }
        };
        client.shutdown_write();
        drop(client);
        Ok((n, elapsed))
    });
    let r = join(cli, "client");
    let s = join(srv, "server");
    let r = r?;
    s?;
    Ok(r)
}

/// One-way streaming of `size`-byte writes; returns (bytes received in the measured
/// window, its length).
fn stream(
    mut client: Endpoint,
    mut server: Endpoint,
    size: usize,
    opts: &BenchOptions,
) -> Result<(u64, Duration), String> {
    let (score, ccore) = opts.pinning.cores();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (warmup, cell) = (opts.warmup, opts.cell);
    let srv = std::thread::spawn(move || -> Result<(u64, Duration), String> {
        pin(score);
        let mut buf = vec![0u8; size];
        let mut first: Option<Instant> = None;
        let mut window: Option<(Instant, u64)> = None;
        let mut result = None;
        loop {
            let n = server
                .read(&mut buf)
                .map_err(|e| format!("server read: {e}"))?;
            if n == 0 {
                break;
            }
            if result.is_some() {
                continue;
            }
            let now = Instant::now();
            let f = *first.get_or_insert(now);
            match &mut window {
                None if now - f >= warmup => window = Some((now, 0)),
                None => {}
                Some((t0, bytes)) => {
                    *bytes += n as u64;
                    if now - *t0 >= cell {
                        result = Some((*bytes, now - *t0));
                        stop2.store(true, Ordering::Release);
                    }
                }
            }
        }
        result.ok_or_else(|| "stream ended before the measurement did".to_string())
    });
    let cli = std::thread::spawn(move || -> Result<Endpoint, String> {
        pin(ccore);
        let msg = vec![0x5Au8; size];
        while !stop.load(Ordering::Acquire) {
            client
                .write_all(&msg)
                .map_err(|e| format!("client write: {e}"))?;
        }
        client.shutdown_write();
        // Returned, not dropped: the connection stays open until the server has drained
        // it (the server still sends consumer updates while it reads the rest).
        Ok(client)
    });
    let c = join(cli, "client");
    let r = join(srv, "server");
    drop(c?);
    r
}

/// Measures one cell; returns the value in the metric's unit.
fn run_cell(metric: Metric, t: Transport, opts: &BenchOptions) -> Result<f64, String> {
    if let Some((kind, nocopy)) = match t {
        Transport::ProcLpar => Some((BoardKind::Lpar, false)),
        Transport::ProcLo => Some((BoardKind::Loopback, false)),
        Transport::ProcLoNocopy => Some((BoardKind::Loopback, true)),
        _ => None,
    } {
        return run_process_cell(metric, kind, nocopy, opts);
    }
    let (board, client, server) = connect(t, metric == Metric::LatencyBusy)?;
    let v = match metric {
        Metric::MsgRate => {
            let (n, d) = ping_pong(client, server, MSG_RATE_SIZE, opts)?;
            n as f64 / d.as_secs_f64()
        }
        Metric::Latency | Metric::LatencyBusy => {
            let (n, d) = ping_pong(client, server, LATENCY_SIZE, opts)?;
            d.as_secs_f64() * 1e6 / n.max(1) as f64 / 2.0
        }
        Metric::Bandwidth => {
            let (b, d) = stream(client, server, BANDWIDTH_SIZE, opts)?;
            b as f64 / d.as_secs_f64() / 1e6
        }
    };
    drop(board);
    Ok(v)
}

/// A cross-process cell: the server in a child process ([`crate::process::bench`]).
fn run_process_cell(
    metric: Metric,
    kind: BoardKind,
    nocopy: bool,
    opts: &BenchOptions,
) -> Result<f64, String> {
    use crate::process::bench::{run_cell, CellKind};
    let cell = match metric {
        Metric::MsgRate => CellKind::PingPong(MSG_RATE_SIZE),
        Metric::Latency | Metric::LatencyBusy => CellKind::PingPong(LATENCY_SIZE),
        Metric::Bandwidth => CellKind::Stream(BANDWIDTH_SIZE),
    };
    let busy = metric == Metric::LatencyBusy;
    let (n, d) = run_cell(
        kind,
        nocopy,
        busy,
        cell,
        opts.warmup,
        opts.cell,
        opts.pinning.cores(),
    )?;
    Ok(match metric {
        Metric::MsgRate => n as f64 / d.as_secs_f64(),
        Metric::Latency | Metric::LatencyBusy => d.as_secs_f64() * 1e6 / n.max(1) as f64 / 2.0,
        Metric::Bandwidth => n as f64 / d.as_secs_f64() / 1e6,
    })
}

// ------------------------------------------------------------------------- limits

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
fn measure_limits(opts: &BenchOptions) -> Limits {
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

// ------------------------------------------------------------------------- run

struct Progress {
    on: bool,
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        if !self.on {
            return;
        }
        const W: usize = 30;
        let fill = self.done * W / self.total.max(1);
        let eta = if self.done > 0 {
            let per = self.start.elapsed().as_secs_f64() / self.done as f64;
            format!("{:>4.0} s left", per * (self.total - self.done) as f64)
        } else {
            String::from("           ")
        };
        eprint!(
            "\r\x1b[2K[{}{}] {:>3}/{} {eta}  {what}",
            "#".repeat(fill),
            "-".repeat(W - fill),
            self.done,
            self.total
        );
        let _ = io::stderr().flush();
        self.done += 1;
    }

    fn finish(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
            let _ = io::stderr().flush();
        }
    }
}

/// Runs the benchmark.
///
/// # Errors
/// The first cell that failed (a transport that could not connect, an I/O error).
pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    let started = Instant::now();
    let date = utc_now();
    let machine = MachineInfo::detect();
    // Read the usable cores before any thread is pinned.
    let _ = cores();
    let rounds = opts.rounds.max(1);
    let cells = Metric::ALL
        .iter()
        .flat_map(|&m| Transport::ALL.iter().map(move |&t| (m, t)))
        .filter(|&(m, t)| opts.selected(m, t))
        .count();
    let mut progress = Progress {
        on: opts.progress,
        total: rounds * (cells + 1),
        done: 0,
        start: started,
    };
    let mut series: Vec<Series> = Metric::ALL
        .iter()
        .flat_map(|&metric| {
            Transport::ALL.iter().map(move |&transport| Series {
                metric,
                transport,
                samples: Vec::new(),
            })
        })
        .collect();
    let pinned = opts.pinning != Pinning::None
        && std::thread::spawn(|| pin(Some(0))).join().unwrap_or(false);
    let mut limits = Vec::new();
    for round in 0..rounds {
        progress.step(&format!("round {}/{rounds}: physical limits", round + 1));
        limits.push(measure_limits(opts));
        for (mi, &metric) in Metric::ALL.iter().enumerate() {
            for k in 0..Transport::ALL.len() {
                // Rotate the order every round so no transport always runs first.
                let ti = (k + round) % Transport::ALL.len();
                let t = Transport::ALL[ti];
                if !opts.selected(metric, t) {
                    continue;
                }
                progress.step(&format!(
                    "round {}/{rounds}: {} / {}",
                    round + 1,
                    metric.key(),
                    t.label()
                ));
                let v = run_cell(metric, t, opts).map_err(|e| {
                    progress.finish();
                    format!("{} on {}: {e}", metric.key(), t.label())
                })?;
                series[mi * Transport::ALL.len() + ti].samples.push(v);
            }
        }
    }
    progress.finish();
    Ok(BenchReport {
        options: opts.clone(),
        machine,
        date,
        elapsed: started.elapsed(),
        sockbuf: effective_sockbuf(),
        pinned,
        limits,
        series,
    })
}

// ------------------------------------------------------------------------- report

/// `v` with three significant digits (no exponent).
pub fn fmt_sig(v: f64) -> String {
    if !v.is_finite() {
        return String::from("-");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A ratio: two decimals, three below 0.1.
fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        String::from("-")
    } else if r.abs() < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

/// A value in a metric's unit, compact (`16.8k`, `4173`, `29.7`).
fn fmt_value(m: Metric, v: f64) -> String {
    match m {
        Metric::MsgRate if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Metric::MsgRate if v >= 1e3 => format!("{}k", fmt_sig(v / 1e3)),
        _ => fmt_sig(v),
    }
}

impl BenchReport {
    /// The series of `metric` on `t`.
    pub fn series(&self, metric: Metric, t: Transport) -> &Series {
        self.series
            .iter()
            .find(|s| s.metric == metric && s.transport == t)
            .expect("every cell has a series")
    }

    /// Median, min and max of `metric` on `t`.
    pub fn summary(&self, metric: Metric, t: Transport) -> Summary {
        Summary::of(&self.series(metric, t).samples)
    }

    /// Median of `metric` on `t` divided by TCP's.
    /// Not a number if either was not measured.
    pub fn ratio_to_tcp(&self, metric: Metric, t: Transport) -> f64 {
        let tcp = self.summary(metric, Transport::Tcp).median;
        let v = self.summary(metric, t).median;
        if tcp > 0.0 && v > 0.0 {
            v / tcp
        } else {
            f64::NAN
        }
    }

    /// Summaries of the limits: (memcpy 64 KiB, memcpy 1 MiB) in bytes/s and the
    /// cache-line RTT in ns.
    pub fn limit_summaries(&self) -> (Summary, Summary, Summary) {
        let v = |f: fn(&Limits) -> f64| Summary::of(&self.limits.iter().map(f).collect::<Vec<_>>());
        (
            v(|l| l.memcpy_64k),
            v(|l| l.memcpy_1m),
            v(|l| l.cacheline_rtt_ns),
        )
    }

    /// An SMC-D figure as a fraction of its physical limit (medians), with the limit's
    /// name: bandwidth ÷ 1 MiB `memcpy` bandwidth; message rate ÷ (1 / cache-line RTT);
    /// latency: (cache-line RTT / 2) ÷ RTT/2. `None` for TCP and UNIX.
    pub fn fraction_of_limit(&self, metric: Metric, t: Transport) -> Option<(f64, &'static str)> {
        if !t.is_smc() {
            return None;
        }
        let (_, m1m, rtt) = self.limit_summaries();
        let v = self.summary(metric, t).median;
        Some(match metric {
            Metric::Bandwidth => (v * 1e6 / m1m.median, "memcpy 1 MiB"),
            Metric::MsgRate => (v * rtt.median / 1e9, "1/cache-line RTT"),
            Metric::Latency | Metric::LatencyBusy => {
                (rtt.median / 2.0 / (v * 1e3), "cache-line RTT/2")
            }
        })
    }

    fn placement(&self) -> String {
        let mut s = self.options.pinning.key().to_string();
        if self.options.pinning != Pinning::None && !self.pinned {
            s.push_str(" requested, but pinning failed: unpinned");
        }
        s
    }

    /// The human-readable report: machine, limits, and one table per metric.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "ism-sim bench: {} rounds × {} cells of {} ms (+{} ms warm-up), {}",
            self.options.rounds,
            self.series.len(),
            self.options.cell.as_millis(),
            self.options.warmup.as_millis(),
            self.date
        );
        let _ = writeln!(
            o,
            "machine: {}, {} CPUs, kernel {}, load average at start {}",
            m.cpu, m.cpus, m.kernel, m.loadavg
        );
        let _ = writeln!(
            o,
            "threads: client + server per cell, {}; SMC-D interrupt threads unpinned",
            self.placement()
        );
        let _ = writeln!(
            o,
            "buffers: SMC-D RMB 1 MiB; TCP/UNIX SO_SNDBUF/SO_RCVBUF 1 MB asked, kernel reports {} / {}",
            self.sockbuf.0, self.sockbuf.1
        );
        let (m64, m1m, rtt) = self.limit_summaries();
        let _ = writeln!(o, "\nphysical limits (median, min–max over rounds)");
        let gb = |s: Summary| {
            format!(
                "{:>7} GB/s  ({}–{})",
                fmt_sig(s.median / 1e9),
                fmt_sig(s.min / 1e9),
                fmt_sig(s.max / 1e9)
            )
        };
        let _ = writeln!(o, "  memcpy 64 KiB, one core     {}", gb(m64));
        let _ = writeln!(o, "  memcpy 1 MiB, one core      {}", gb(m1m));
        let _ = writeln!(
            o,
            "  cache-line RTT, core 0↔1    {:>7} ns    ({}–{})",
            fmt_sig(rtt.median),
            fmt_sig(rtt.min),
            fmt_sig(rtt.max)
        );
        for metric in Metric::ALL {
            if Transport::ALL
                .iter()
                .all(|&t| self.series(metric, t).samples.is_empty())
            {
                continue;
            }
            let _ = writeln!(
                o,
                "\n{} [{}; {} is better]",
                metric.label(),
                metric.unit(),
                if metric.higher_is_better() {
                    "higher"
                } else {
                    "lower"
                }
            );
            let _ = writeln!(
                o,
                "  {:<24} {:>9}  {:>19}  {:>6}  of limit",
                "transport", "median", "min–max", "×TCP"
            );
            for t in Transport::ALL {
                if self.series(metric, t).samples.is_empty() {
                    continue;
                }
                let s = self.summary(metric, t);
                let lim = self
                    .fraction_of_limit(metric, t)
                    .map_or(String::new(), |(f, n)| {
                        format!("{:>5.1}% of {n}", f * 100.0)
                    });
                let _ = writeln!(
                    o,
                    "  {:<24} {:>9}  {:>19}  {:>6}  {}",
                    t.label(),
                    fmt_value(metric, s.median),
                    format!("{}–{}", fmt_value(metric, s.min), fmt_value(metric, s.max)),
                    fmt_ratio(self.ratio_to_tcp(metric, t)),
                    lim
                );
            }
        }
        let _ = writeln!(o, "\nrun took {:.1} s", self.elapsed.as_secs_f64());
        o
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                String::from("null")
            }
        };
        let sum = |s: Summary| {
            format!(
                "{{\"median\":{},\"min\":{},\"max\":{}}}",
                num(s.median),
                num(s.min),
                num(s.max)
            )
        };
        let m = &self.machine;
        let mut o = String::from("{\n");
        let _ = writeln!(o, "  \"command\": {},", json_string(&self.options.command));
        let _ = writeln!(o, "  \"date\": {},", json_string(&self.date));
        let _ = writeln!(
            o,
            "  \"machine\": {{\"cpu\":{},\"cpus\":{},\"kernel\":{},\"loadavg_at_start\":{}}},",
            json_string(&m.cpu),
            m.cpus,
            json_string(&m.kernel),
            json_string(&m.loadavg)
        );
        let _ = writeln!(
            o,
            "  \"config\": {{\"rounds\":{},\"cell_ms\":{},\"warmup_ms\":{},\"placement\":{},\"pinned\":{},\"smc_rmb_bytes\":{},\"so_sndbuf\":{},\"so_rcvbuf\":{}}},",
            self.options.rounds,
            self.options.cell.as_millis(),
            self.options.warmup.as_millis(),
            json_string(&self.placement()),
            self.pinned,
            BUFFER,
            self.sockbuf.0,
            self.sockbuf.1
        );
        let (m64, m1m, rtt) = self.limit_summaries();
        let _ = writeln!(
            o,
            "  \"limits\": {{\"memcpy_64k_bytes_per_s\":{},\"memcpy_1m_bytes_per_s\":{},\"cacheline_rtt_ns\":{}}},",
            sum(m64),
            sum(m1m),
            sum(rtt)
        );
        o.push_str("  \"results\": [\n");
        let measured: Vec<&Series> = self
            .series
            .iter()
            .filter(|s| !s.samples.is_empty())
            .collect();
        for (i, s) in measured.iter().enumerate() {
            let sm = Summary::of(&s.samples);
            let frac = self
                .fraction_of_limit(s.metric, s.transport)
                .map_or("null".to_string(), |(f, n)| {
                    format!("{{\"fraction\":{},\"limit\":{}}}", num(f), json_string(n))
                });
            let samples: Vec<String> = s.samples.iter().map(|&v| num(v)).collect();
            let _ = write!(
                o,
                "    {{\"metric\":{},\"transport\":{},\"unit\":{},\"higher_is_better\":{},\"median\":{},\"min\":{},\"max\":{},\"ratio_to_tcp\":{},\"of_limit\":{},\"samples\":[{}]}}",
                json_string(s.metric.key()),
                json_string(s.transport.key()),
                json_string(s.metric.unit()),
                s.metric.higher_is_better(),
                num(sm.median),
                num(sm.min),
                num(sm.max),
                num(self.ratio_to_tcp(s.metric, s.transport)),
                frac,
                samples.join(",")
            );
            o.push_str(if i + 1 < self.series.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        let _ = writeln!(
            o,
            "  ],\n  \"elapsed_s\": {}\n}}",
            num(self.elapsed.as_secs_f64())
        );
        o
    }

    /// A bar chart: one panel per metric, one bar per transport (median, with a min–max
    /// whisker), each labelled with its value and its ratio to TCP.
    pub fn to_svg(&self) -> String {
        const W: f64 = 900.0;
        const LABEL_W: f64 = 190.0;
        const BAR_H: f64 = 22.0;
        const GAP: f64 = 6.0;
        const PANEL_HEAD: f64 = 34.0;
        const PANEL_GAP: f64 = 22.0;
        // Cross-process rows in lighter shades of their in-process rows' colours.
        const COLORS: [&str; 8] = [
            "#7f7f7f", "#bcbd22", "#1f77b4", "#2ca02c", "#d62728", "#aec7e8", "#98df8a", "#ff9896",
        ];
        let n = Transport::ALL.len() as f64;
        let panel_h = PANEL_HEAD + n * (BAR_H + GAP);
        let top = 76.0;
        let h = top + Metric::ALL.len() as f64 * (panel_h + PANEL_GAP) + 10.0;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"13\">"
        );
        let _ = writeln!(o, "<rect width=\"{W}\" height=\"{h}\" fill=\"white\"/>");
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"24\" font-size=\"17\" font-weight=\"bold\">{}</text>",
            xml("ism-sim bench: TCP, UNIX and SMC-D (simulated ISM) side by side")
        );
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"44\" fill=\"#444\">{}</text>",
            xml(&format!(
                "{} · {} CPUs · load at start {} · {} · {}",
                self.machine.cpu,
                self.machine.cpus,
                self.machine.loadavg,
                self.placement(),
                self.date
            ))
        );
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"60\" fill=\"#444\">{}</text>",
            xml(&format!(
                "bars: medians of {} rounds; whiskers: min–max (arrow: beyond the plot); ratios to TCP",
                self.options.rounds
            ))
        );
        for (pi, metric) in Metric::ALL.iter().enumerate() {
            let y0 = top + pi as f64 * (panel_h + PANEL_GAP);
            let _ = writeln!(
                o,
                "<text x=\"12\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
                y0 + 18.0,
                xml(&format!(
                    "{} — {} ({} is better)",
                    metric.label(),
                    metric.unit().replace("us", "µs"),
                    if metric.higher_is_better() {
                        "higher"
                    } else {
                        "lower"
                    }
                ))
            );
            // Scale to the medians: one wild round must not squash every bar; whiskers
            // beyond the plot end in an arrow.
            let max = Transport::ALL
                .iter()
                .map(|&t| self.summary(*metric, t).median)
                .fold(0.0f64, f64::max)
                .max(1e-12)
                * 1.4;
            let plot_w = W - LABEL_W - 250.0;
            let scale = plot_w / max;
            let x0 = LABEL_W;
            let _ = writeln!(
                o,
                "<line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{x0}\" y2=\"{:.1}\" stroke=\"#333\"/>",
                y0 + PANEL_HEAD - 4.0,
                y0 + panel_h
            );
            for (ti, &t) in Transport::ALL.iter().enumerate() {
                if self.series(*metric, t).samples.is_empty() {
                    continue;
                }
                let s = self.summary(*metric, t);
                let y = y0 + PANEL_HEAD + ti as f64 * (BAR_H + GAP);
                let wbar = (s.median * scale).max(1.0);
                let _ = writeln!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                    x0 - 8.0,
                    y + BAR_H * 0.72,
                    xml(t.label())
                );
                let _ = writeln!(
                    o,
                    "<rect x=\"{x0}\" y=\"{y:.1}\" width=\"{wbar:.1}\" height=\"{BAR_H}\" fill=\"{}\"/>",
                    COLORS[ti]
                );
                let clip = |v: f64| x0 + (v * scale).min(plot_w);
                let (xa, xb) = (clip(s.min), clip(s.max));
                let ym = y + BAR_H / 2.0;
                let _ = writeln!(
                    o,
                    "<path d=\"M{xa:.1} {ym:.1}H{xb:.1}M{xa:.1} {:.1}V{:.1}M{xb:.1} {:.1}V{:.1}\" stroke=\"black\" stroke-width=\"1.2\" fill=\"none\"/>",
                    ym - 5.0,
                    ym + 5.0,
                    ym - 5.0,
                    ym + 5.0
                );
                if s.max * scale > plot_w {
                    let _ = writeln!(
                        o,
                        "<path d=\"M{:.1} {:.1}L{:.1} {ym:.1}L{:.1} {:.1}\" fill=\"black\"/>",
                        xb - 6.0,
                        ym - 4.0,
                        xb + 2.0,
                        xb - 6.0,
                        ym + 4.0
                    );
                }
                let unit = match metric {
                    Metric::MsgRate => "rt/s",
                    Metric::Bandwidth => "MB/s",
                    Metric::Latency | Metric::LatencyBusy => "µs",
                };
                let mut label = format!("{} {unit}", fmt_value(*metric, s.median));
                if t != Transport::Tcp {
                    let _ = write!(
                        label,
                        "  ({}× TCP)",
                        fmt_ratio(self.ratio_to_tcp(*metric, t))
                    );
                }
                let _ = writeln!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    xb.max(x0 + wbar) + 8.0,
                    y + BAR_H * 0.72,
                    xml(&label)
                );
            }
        }
        o.push_str("</svg>\n");
        o
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Now as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn every_transport_connects_and_moves_data() {
        // Not a measurement: a functional check that each cell's plumbing works.
        let opts = BenchOptions {
            cell: Duration::from_millis(5),
            warmup: Duration::from_millis(1),
            pinning: Pinning::None,
            progress: false,
            ..BenchOptions::quick()
        };
        for t in Transport::ALL {
            for m in Metric::ALL {
                let v = run_cell(m, t, &opts).unwrap_or_else(|e| panic!("{e}"));
                assert!(v > 0.0, "{m:?} on {t:?}");
            }
        }
    }

    #[test]
    fn report_renders() {
        let series = Metric::ALL
            .iter()
            .flat_map(|&metric| {
                Transport::ALL.iter().map(move |&transport| Series {
                    metric,
                    transport,
                    samples: vec![1.0, 2.0, 3.0],
                })
            })
            .collect();
        let r = BenchReport {
            options: BenchOptions::quick(),
            machine: MachineInfo::default(),
            date: utc_now(),
            elapsed: Duration::from_secs(1),
            sockbuf: (1, 2),
            pinned: true,
            limits: vec![Limits {
                memcpy_64k: 1e10,
                memcpy_1m: 1e10,
                cacheline_rtt_ns: 60.0,
            }],
            series,
        };
        assert!(r.table().contains("SMC-D loopback no-copy"));
        assert!(r.table().contains("2 procs: lo no-copy"));
        assert!(r.to_json().contains("\"ratio_to_tcp\":1"));
        assert!(r.to_svg().ends_with("</svg>\n"));
        assert_eq!(r.date.len(), "2026-01-01 00:00:00 UTC".len());
    }
}
