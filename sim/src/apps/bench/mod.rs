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
//!
//! Files: this one holds the options and the measured data (transports, metrics, series,
//! the report); `harness.rs` the connections, workloads and [`run`]; `limits.rs` the
//! machine limits; `report.rs` the text table and derived figures; `json.rs` and `svg.rs`
//! the other renderings. A new metric is a [`Metric`] variant plus its workload in
//! `harness.rs`'s `run_cell`.

use std::time::Duration;

use hdrhistogram::Histogram;

mod harness;
mod json;
mod limits;
mod report;
mod svg;

pub use harness::run;
pub(crate) use harness::{fill_or_eof, timed_round_trips, ReceiveWindow};
pub use limits::{cacheline_rtt, memcpy_bandwidth, Limits, MachineInfo};
pub use report::fmt_sig;

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
    /// Latency metrics: every measured round trip's time in ns, over all rounds.
    pub rtts: Option<Histogram<u64>>,
}

/// Latency percentiles of one series, per message (RTT/2), in µs (as sockperf prints them).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Round trips measured.
    pub messages: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(rename = "p99_9")]
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of round-trip times `rtts` (ns), halved (RTT/2) and in µs; `None`
    /// if nothing was recorded.
    pub fn of(rtts: &Histogram<u64>) -> Option<Self> {
        if rtts.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 2.0 / 1e3;
        Some(Self {
            messages: rtts.len(),
            p50: us(rtts.value_at_quantile(0.5)),
            p90: us(rtts.value_at_quantile(0.9)),
            p99: us(rtts.value_at_quantile(0.99)),
            p99_9: us(rtts.value_at_quantile(0.999)),
            max: us(rtts.max()),
        })
    }
}

impl Series {
    /// Per-message latency percentiles (latency metrics only).
    pub fn percentiles(&self) -> Option<Percentiles> {
        self.rtts.as_ref().and_then(Percentiles::of)
    }
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
    fn percentiles_are_halved_round_trips_in_us() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap(); // 1..=1000 µs round trips
        }
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.messages, 1000);
        let near = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(near(p.p50, 250.0), "{p:?}");
        assert!(near(p.p90, 450.0), "{p:?}");
        assert!(near(p.p99, 495.0), "{p:?}");
        assert!(near(p.p99_9, 499.5), "{p:?}");
        assert!(near(p.max, 500.0), "{p:?}");
        assert_eq!(Percentiles::of(&Histogram::<u64>::new(3).unwrap()), None);
    }
}
