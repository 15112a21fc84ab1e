//! The harness: connected pairs of every transport, the ping-pong and streaming workloads,
//! one cell (metric × transport) on a fresh connection, and [`run`], which interleaves all
//! cells over rounds.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ism_host_driver::smcd::{Listener, StackConfig, Stream};
use socket2::{Domain, SockRef, Socket, Type};

use super::limits::measure_limits;
use super::report::utc_now;
use super::{
    BenchOptions, BenchReport, MachineInfo, Metric, Pinning, Series, Transport, BANDWIDTH_SIZE,
    BUFFER, LATENCY_SIZE, MSG_RATE_SIZE,
};
use crate::board::{BoardConfig, BoardKind};
use crate::host::IrqMode;
use crate::smc::SmcBoard;

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
        fill_or_eof(|b| self.read(b), buf)
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
            let limit = 2 * ss.config().clc_timeout;
            let server = std::thread::spawn(move || l.accept_timeout(limit).map(|(s, _)| s));
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
pub(super) fn pin(i: Option<usize>) -> bool {
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

/// Fills `buf` by calls of `read`; `Ok(false)` on end of stream before the first byte,
/// `UnexpectedEof` after it.
pub(crate) fn fill_or_eof(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    buf: &mut [u8],
) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

/// The receiver's measurement of every bandwidth cell, in-process and cross-process:
/// bytes received in a window that opens `warmup` after the first byte and closes at the
/// first read `cell` after it opened.
pub(crate) struct ReceiveWindow {
    warmup: Duration,
    cell: Duration,
    first: Option<Instant>,
    open: Option<(Instant, u64)>,
}

impl ReceiveWindow {
    /// A window not yet started.
    pub(crate) fn new(warmup: Duration, cell: Duration) -> Self {
        Self {
            warmup,
            cell,
            first: None,
            open: None,
        }
    }

    /// Counts a read of `n` bytes; returns (bytes, window length) when the window closes.
    pub(crate) fn received(&mut self, n: usize) -> Option<(u64, Duration)> {
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        match &mut self.open {
            None if now - first >= self.warmup => {
                self.open = Some((now, 0));
                None
            }
            None => None,
            Some((t0, bytes)) => {
                *bytes += n as u64;
                (now - *t0 >= self.cell).then(|| (*bytes, now - *t0))
            }
        }
    }
}

/// The client's measuring loop of every ping-pong cell, in-process and cross-process: runs
/// `rt` (one round trip) for `warmup`, then for `window`; returns (round trips, the
/// measured time, every round trip's time in ns).
///
/// # Errors
/// `rt`'s error, or a histogram that cannot be made.
pub(crate) fn timed_round_trips(
    mut rt: impl FnMut() -> Result<(), String>,
    warmup: Duration,
    window: Duration,
) -> Result<(u64, Duration, Histogram<u64>), String> {
    let start = Instant::now();
    while start.elapsed() < warmup {
        rt()?;
    }
    // Every round trip's time, from the clock reads the loop makes anyway.
    // 1 ns to 1 h, three significant digits (longer round trips count as 1 h).
    let mut rtts = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut prev = Duration::ZERO;
    loop {
        rt()?;
        n += 1;
        let e = t0.elapsed();
        rtts.saturating_record(u64::try_from((e - prev).as_nanos()).unwrap_or(u64::MAX));
        prev = e;
        if e >= window {
            return Ok((n, e, rtts));
        }
    }
}

/// Ping-pong of `size`-byte messages; returns (round trips, measured time, the round-trip
/// times in ns).
fn ping_pong(
    mut client: Endpoint,
    mut server: Endpoint,
    size: usize,
    opts: &BenchOptions,
) -> Result<(u64, Duration, Histogram<u64>), String> {
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
    let cli = std::thread::spawn(move || -> Result<(u64, Duration, Histogram<u64>), String> {
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
        let r = timed_round_trips(|| rt(&mut client), warmup, cell)?;
        client.shutdown_write();
        drop(client);
        Ok(r)
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
        let mut window = ReceiveWindow::new(warmup, cell);
        let mut result = None;
        loop {
            let n = server
                .read(&mut buf)
                .map_err(|e| format!("server read: {e}"))?;
            if n == 0 {
                break;
            }
            if result.is_none() {
                result = window.received(n);
                if result.is_some() {
                    stop2.store(true, Ordering::Release);
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

/// Measures one cell; returns the value in the metric's unit and, for the latency
/// metrics, every round trip's time in ns.
pub(super) fn run_cell(
    metric: Metric,
    t: Transport,
    opts: &BenchOptions,
) -> Result<(f64, Option<Histogram<u64>>), String> {
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
            let (n, d, _) = ping_pong(client, server, MSG_RATE_SIZE, opts)?;
            (n as f64 / d.as_secs_f64(), None)
        }
        Metric::Latency | Metric::LatencyBusy => {
            let (n, d, rtts) = ping_pong(client, server, LATENCY_SIZE, opts)?;
            (d.as_secs_f64() * 1e6 / n.max(1) as f64 / 2.0, Some(rtts))
        }
        Metric::Bandwidth => {
            let (b, d) = stream(client, server, BANDWIDTH_SIZE, opts)?;
            (b as f64 / d.as_secs_f64() / 1e6, None)
        }
    };
    drop(board);
    Ok(v)
}

/// A cross-process cell: the server in a child process ([`crate::process::bench`]); the
/// client times its round trips here as in-process cells do.
fn run_process_cell(
    metric: Metric,
    kind: BoardKind,
    nocopy: bool,
    opts: &BenchOptions,
) -> Result<(f64, Option<Histogram<u64>>), String> {
    use crate::process::bench::{run_cell, CellKind};
    let cell = match metric {
        Metric::MsgRate => CellKind::PingPong(MSG_RATE_SIZE),
        Metric::Latency | Metric::LatencyBusy => CellKind::PingPong(LATENCY_SIZE),
        Metric::Bandwidth => CellKind::Stream(BANDWIDTH_SIZE),
    };
    let busy = metric == Metric::LatencyBusy;
    let (n, d, rtts) = run_cell(
        kind,
        nocopy,
        busy,
        cell,
        opts.warmup,
        opts.cell,
        opts.pinning.cores(),
    )?;
    Ok(match metric {
        Metric::MsgRate => (n as f64 / d.as_secs_f64(), None),
        Metric::Latency | Metric::LatencyBusy => {
            (d.as_secs_f64() * 1e6 / n.max(1) as f64 / 2.0, rtts)
        }
        Metric::Bandwidth => (n as f64 / d.as_secs_f64() / 1e6, None),
    })
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
                rtts: None,
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
                let (v, rtts) = run_cell(metric, t, opts).map_err(|e| {
                    progress.finish();
                    format!("{} on {}: {e}", metric.key(), t.label())
                })?;
                let s = &mut series[mi * Transport::ALL.len() + ti];
                s.samples.push(v);
                if let Some(h) = rtts {
                    match &mut s.rtts {
                        Some(all) => all.add(&h).map_err(|e| format!("latency histogram: {e}"))?,
                        None => s.rtts = Some(h),
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Pinning;

    #[test]
    fn the_receive_window_counts_only_after_it_opens() {
        // No warm-up, no length: the first read opens the window (its bytes are not
        // counted), the second is counted and closes it.
        let mut w = ReceiveWindow::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(w.received(100), None);
        assert_eq!(w.received(7).map(|(b, _)| b), Some(7));
        // A warm-up that has not passed keeps it shut.
        let mut w = ReceiveWindow::new(Duration::from_secs(3600), Duration::ZERO);
        assert_eq!(w.received(1), None);
        assert_eq!(w.received(1), None);
    }

    #[test]
    fn fill_or_eof_tells_a_clean_end_from_a_short_one() {
        let mut src: &[u8] = b"abcdef";
        let mut buf = [0u8; 4];
        assert!(fill_or_eof(|b| std::io::Read::read(&mut src, b), &mut buf).unwrap());
        assert_eq!(&buf, b"abcd");
        let e = fill_or_eof(|b| std::io::Read::read(&mut src, b), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!fill_or_eof(|b| std::io::Read::read(&mut src, b), &mut buf).unwrap());
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
                let (v, rtts) = run_cell(m, t, &opts).unwrap_or_else(|e| panic!("{e}"));
                assert!(v > 0.0, "{m:?} on {t:?}");
                // Latency cells, in-process and cross-process, time every round trip.
                let latency = matches!(m, Metric::Latency | Metric::LatencyBusy);
                assert_eq!(rtts.is_some(), latency, "{m:?} on {t:?}");
                if let Some(h) = rtts {
                    // Every measured round trip is in the histogram, and its mean agrees
                    // with the cell's figure (RTT/2 in µs) to the histogram's precision.
                    assert!(!h.is_empty());
                    let mean_half_us = h.mean() / 2.0 / 1e3;
                    assert!(
                        (mean_half_us - v).abs() <= v * 0.05 + 0.01,
                        "{mean_half_us} vs {v}"
                    );
                }
            }
        }
    }
}
