//! The report as JSON (`ism-sim bench --json`), written with `serde_json`.
//!
//! Schema: `command`, `date`, `machine {cpu, cpus, kernel, loadavg_at_start}`, `config
//! {rounds, cell_ms, warmup_ms, placement, pinned, smc_rmb_bytes, so_sndbuf, so_rcvbuf}`,
//! `limits {memcpy_64k_bytes_per_s, memcpy_1m_bytes_per_s, cacheline_rtt_ns}` (each
//! `{median, min, max, samples}`, one sample per round), `results` (one object per
//! measured cell: `metric`, `transport`, `unit`, `higher_is_better`, `median`, `min`,
//! `max`, `ratio_to_tcp`, `of_limit {fraction, limit}` or null, `samples` (one per round),
//! `stability {worst_to_median, worst_to_median_of_limit}` (see
//! `BenchReport::stability`; the second null for TCP and UNIX), and `latency_us`: the
//! per-message percentiles
//! `{messages, p50, p90, p99, p99_9, max}` of the latency metrics, null for the others)
//! and `elapsed_s`. A figure that could not be computed is `null`.

use serde::Serialize;

use super::{BenchReport, Percentiles, Summary, BUFFER};

/// `v`, or `None` (JSON `null`) if it is not finite.
fn fin(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[derive(Serialize)]
struct Sum {
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl From<Summary> for Sum {
    fn from(s: Summary) -> Self {
        Self {
            median: fin(s.median),
            min: fin(s.min),
            max: fin(s.max),
        }
    }
}

#[derive(Serialize)]
struct Machine<'a> {
    cpu: &'a str,
    cpus: usize,
    kernel: &'a str,
    loadavg_at_start: &'a str,
}

#[derive(Serialize)]
struct Config {
    rounds: usize,
    cell_ms: u128,
    warmup_ms: u128,
    placement: String,
    pinned: bool,
    smc_rmb_bytes: usize,
    so_sndbuf: usize,
    so_rcvbuf: usize,
}

#[derive(Serialize)]
struct Limit {
    #[serde(flatten)]
    sum: Sum,
    /// One figure per round, in round order (a cell's `samples` are too).
    samples: Vec<Option<f64>>,
}

#[derive(Serialize)]
struct LimitsJson {
    memcpy_64k_bytes_per_s: Limit,
    memcpy_1m_bytes_per_s: Limit,
    cacheline_rtt_ns: Limit,
}

#[derive(Serialize)]
struct Stability {
    worst_to_median: Option<f64>,
    worst_to_median_of_limit: Option<f64>,
}

#[derive(Serialize)]
struct OfLimit {
    fraction: Option<f64>,
    limit: &'static str,
}

#[derive(Serialize)]
struct Cell {
    metric: &'static str,
    transport: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    median: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    ratio_to_tcp: Option<f64>,
    of_limit: Option<OfLimit>,
    samples: Vec<Option<f64>>,
    stability: Option<Stability>,
    latency_us: Option<Percentiles>,
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    date: &'a str,
    machine: Machine<'a>,
    config: Config,
    limits: LimitsJson,
    results: Vec<Cell>,
    elapsed_s: f64,
}

impl BenchReport {
    fn limit(&self, sum: Summary, f: fn(&super::Limits) -> f64) -> Limit {
        Limit {
            sum: sum.into(),
            samples: self.limits.iter().map(|l| fin(f(l))).collect(),
        }
    }

    /// The report as JSON (pretty-printed, one trailing newline).
    pub fn to_json(&self) -> String {
        let m = &self.machine;
        let (m64, m1m, rtt) = self.limit_summaries();
        let results = self
            .series
            .iter()
            .filter(|s| !s.samples.is_empty())
            .map(|s| {
                let sm = Summary::of(&s.samples);
                Cell {
                    metric: s.metric.key(),
                    transport: s.transport.key(),
                    unit: s.metric.unit(),
                    higher_is_better: s.metric.higher_is_better(),
                    median: fin(sm.median),
                    min: fin(sm.min),
                    max: fin(sm.max),
                    ratio_to_tcp: fin(self.ratio_to_tcp(s.metric, s.transport)),
                    of_limit: self
                        .fraction_of_limit(s.metric, s.transport)
                        .map(|(f, limit)| OfLimit {
                            fraction: fin(f),
                            limit,
                        }),
                    samples: s.samples.iter().map(|&v| fin(v)).collect(),
                    stability: self
                        .stability(s.metric, s.transport)
                        .map(|(r, l)| Stability {
                            worst_to_median: fin(r),
                            worst_to_median_of_limit: l.and_then(fin),
                        }),
                    latency_us: s.percentiles(),
                }
            })
            .collect();
        let report = Report {
            command: &self.options.command,
            date: &self.date,
            machine: Machine {
                cpu: &m.cpu,
                cpus: m.cpus,
                kernel: &m.kernel,
                loadavg_at_start: &m.loadavg,
            },
            config: Config {
                rounds: self.options.rounds,
                cell_ms: self.options.cell.as_millis(),
                warmup_ms: self.options.warmup.as_millis(),
                placement: self.placement(),
                pinned: self.pinned,
                smc_rmb_bytes: BUFFER,
                so_sndbuf: self.sockbuf.0,
                so_rcvbuf: self.sockbuf.1,
            },
            limits: LimitsJson {
                memcpy_64k_bytes_per_s: self.limit(m64, |l| l.memcpy_64k),
                memcpy_1m_bytes_per_s: self.limit(m1m, |l| l.memcpy_1m),
                cacheline_rtt_ns: self.limit(rtt, |l| l.cacheline_rtt_ns),
            },
            results,
            elapsed_s: self.elapsed.as_secs_f64(),
        };
        let mut s = serde_json::to_string_pretty(&report).expect("the report serializes");
        s.push('\n');
        s
    }
}
