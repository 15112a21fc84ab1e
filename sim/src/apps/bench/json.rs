//! The report as JSON (`ism-sim bench --json`).

use std::fmt::Write as _;

use super::{BenchReport, Series, Summary, BUFFER};
use crate::trace::json_string;

impl BenchReport {
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
            o.push_str(if i + 1 < measured.len() { ",\n" } else { "\n" });
        }
        let _ = writeln!(
            o,
            "  ],\n  \"elapsed_s\": {}\n}}",
            num(self.elapsed.as_secs_f64())
        );
        o
    }
}
