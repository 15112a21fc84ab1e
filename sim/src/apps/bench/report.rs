//! The human-readable report: number formatting, the per-metric tables, and the derived
//! figures (summaries, ratios to TCP, fractions of the physical limits).

use std::fmt::Write as _;

use super::{BenchReport, Limits, Metric, Pinning, Series, Summary, Transport};

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
pub(super) fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        String::from("-")
    } else if r.abs() < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

/// A value in a metric's unit, compact (`16.8k`, `4173`, `29.7`).
pub(super) fn fmt_value(m: Metric, v: f64) -> String {
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

    /// How steady a series was over the rounds: (worst round ÷ median, and the same for
    /// each round's figure taken as a fraction of that round's own physical limit, SMC-D
    /// rows only). "Worst" is the lowest rate or the highest latency; both ratios are in
    /// `0..=1`, 1 for a series that did not move. The second ratio tells a collapse of
    /// the transport from a collapse of the machine (a cache-line round trip that slowed
    /// down with it). `None` without samples.
    pub fn stability(&self, metric: Metric, t: Transport) -> Option<(f64, Option<f64>)> {
        let samples = &self.series(metric, t).samples;
        if samples.is_empty() {
            return None;
        }
        let worst_to_median = |v: &[f64], higher_is_better: bool| {
            let s = Summary::of(v);
            if higher_is_better {
                s.min / s.median
            } else {
                s.median / s.max
            }
        };
        let raw = worst_to_median(samples, metric.higher_is_better());
        let of_limit = (t.is_smc() && self.limits.len() == samples.len()).then(|| {
            let fractions: Vec<f64> = samples
                .iter()
                .zip(&self.limits)
                .map(|(&v, l)| match metric {
                    Metric::Bandwidth => v * 1e6 / l.memcpy_1m,
                    Metric::MsgRate => v * l.cacheline_rtt_ns / 1e9,
                    Metric::Latency | Metric::LatencyBusy => l.cacheline_rtt_ns / 2.0 / (v * 1e3),
                })
                .collect();
            worst_to_median(&fractions, true)
        });
        Some((raw, of_limit))
    }

    pub(super) fn placement(&self) -> String {
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
                "  {:<24} {:>9}  {:>19}  {:>6}  {:>11}  of limit",
                "transport", "median", "min–max", "×TCP", "worst÷med"
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
                let steady = match self.stability(metric, t) {
                    Some((r, Some(l))) => format!("{r:.2} ({l:.2})"),
                    Some((r, None)) => format!("{r:.2}"),
                    None => String::new(),
                };
                let _ = writeln!(
                    o,
                    "  {:<24} {:>9}  {:>19}  {:>6}  {:>11}  {}",
                    t.label(),
                    fmt_value(metric, s.median),
                    format!("{}–{}", fmt_value(metric, s.min), fmt_value(metric, s.max)),
                    fmt_ratio(self.ratio_to_tcp(metric, t)),
                    steady,
                    lim
                );
            }
            let pct: Vec<_> = Transport::ALL
                .iter()
                .filter_map(|&t| self.series(metric, t).percentiles().map(|p| (t, p)))
                .collect();
            if !pct.is_empty() {
                let _ = writeln!(
                    o,
                    "  per message, all rounds [us]     p50       p90       p99     p99.9       max   messages"
                );
                for (t, p) in pct {
                    let _ = writeln!(
                        o,
                        "  {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
                        t.label(),
                        fmt_sig(p.p50),
                        fmt_sig(p.p90),
                        fmt_sig(p.p99),
                        fmt_sig(p.p99_9),
                        fmt_sig(p.max),
                        p.messages
                    );
                }
            }
        }
        let _ = writeln!(o, "\nrun took {:.1} s", self.elapsed.as_secs_f64());
        o
    }
}

/// Now as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc_now() -> String {
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
    use std::time::Duration;

    use super::*;
    use crate::bench::{BenchOptions, MachineInfo};

    /// A report of a quick run with these limits and series.
    fn report_of(limits: Vec<Limits>, series: Vec<Series>) -> BenchReport {
        BenchReport {
            options: BenchOptions::quick(),
            machine: MachineInfo::default(),
            date: utc_now(),
            elapsed: Duration::from_secs(1),
            sockbuf: (1, 2),
            pinned: true,
            limits,
            series,
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
                    rtts: matches!(metric, Metric::Latency | Metric::LatencyBusy).then(|| {
                        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                        h.record(4000).unwrap();
                        h
                    }),
                })
            })
            .collect();
        let r = report_of(
            vec![Limits {
                memcpy_64k: 1e10,
                memcpy_1m: 1e10,
                cacheline_rtt_ns: 60.0,
            }],
            series,
        );
        assert!(r.table().contains("SMC-D loopback no-copy"));
        assert!(r.table().contains("2 procs: lo no-copy"));
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let results = j["results"].as_array().unwrap();
        assert_eq!(results.len(), Metric::ALL.len() * Transport::ALL.len());
        assert_eq!(results[0]["ratio_to_tcp"], 1.0);
        let lat = results
            .iter()
            .find(|c| c["metric"] == "latency_blocking")
            .unwrap();
        // 4 µs round trips: 2 µs per message (to the histogram's three digits).
        let p999 = lat["latency_us"]["p99_9"].as_f64().unwrap();
        assert!((p999 - 2.0).abs() < 0.002, "{p999}");
        assert!(results[0]["latency_us"].is_null());
        assert!(r.table().contains("p99.9"));
        // Only some cells measured (`bench --only`): still valid JSON, only those cells.
        let mut part = r.clone();
        for s in &mut part.series {
            if s.transport != Transport::SmcLo {
                s.samples.clear();
            }
        }
        let j: serde_json::Value = serde_json::from_str(&part.to_json()).unwrap();
        assert_eq!(j["results"].as_array().unwrap().len(), Metric::ALL.len());
        assert!(r.to_svg().ends_with("</svg>\n"));
        assert_eq!(r.date.len(), "2026-01-01 00:00:00 UTC".len());
    }

    #[test]
    fn stability_is_worst_round_over_median_raw_and_per_round_limit() {
        let limits = |rtts: [f64; 3]| {
            rtts.iter()
                .map(|&r| Limits {
                    memcpy_64k: 1e10,
                    memcpy_1m: 1e10,
                    cacheline_rtt_ns: r,
                })
                .collect::<Vec<_>>()
        };
        let report = |samples: Vec<f64>, rtts| {
            report_of(
                limits(rtts),
                // Every cell has a series; only TCP and LPAR message rate and latency measured.
                Metric::ALL
                    .iter()
                    .flat_map(|&metric| {
                        let samples = samples.clone();
                        Transport::ALL.iter().map(move |&transport| Series {
                            metric,
                            transport,
                            samples: if matches!(metric, Metric::MsgRate | Metric::Latency)
                                && matches!(transport, Transport::Tcp | Transport::SmcLpar)
                            {
                                samples.clone()
                            } else {
                                Vec::new()
                            },
                            rtts: None,
                        })
                    })
                    .collect(),
            )
        };
        // A rate whose third round halved while the machine's cache line got twice as
        // slow: 0.5 raw, but steady against the round's own limit.
        let r = report(vec![100.0, 100.0, 50.0], [60.0, 60.0, 120.0]);
        let (raw, lim) = r.stability(Metric::MsgRate, Transport::SmcLpar).unwrap();
        assert_eq!((raw, lim), (0.5, Some(1.0)));
        // TCP has no limit; latencies: the worst is the highest (median 100 / max 100).
        assert_eq!(
            r.stability(Metric::MsgRate, Transport::Tcp),
            Some((0.5, None))
        );
        let (raw, _) = r.stability(Metric::Latency, Transport::SmcLpar).unwrap();
        assert_eq!(raw, 1.0);
        // The same halving on a steady machine is a collapse either way.
        let r = report(vec![100.0, 100.0, 50.0], [60.0, 60.0, 60.0]);
        assert_eq!(
            r.stability(Metric::MsgRate, Transport::SmcLpar),
            Some((0.5, Some(0.5)))
        );
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["limits"]["cacheline_rtt_ns"]["samples"][2], 60.0);
        let cell = &j["results"][1];
        assert_eq!(cell["transport"], "smcd_lpar");
        assert_eq!(cell["stability"]["worst_to_median_of_limit"], 0.5);
        assert!(r.table().contains("0.50 (0.50)"));
    }
}
