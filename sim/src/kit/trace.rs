//! Trace export: what happened on the board, per partition, as a Chrome / Perfetto trace
//! (the JSON "Trace Event Format", loadable in `ui.perfetto.dev` or `chrome://tracing`).
//!
//! Recording is a push onto a locked vector, so tracing is for demos and debugging runs,
//! not for benchmarks.

use std::sync::Mutex;
use std::time::Instant;

/// One recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// Partition (trace "process").
    pub pid: u32,
    /// Thread id inside the partition's trace lane.
    pub tid: u64,
    /// Event name ("REG_DMB", "move", "irq", ...).
    pub name: String,
    /// Category ("command", "move", "interrupt", "event").
    pub cat: &'static str,
    /// Start, µs since the tracer was created.
    pub ts_us: f64,
    /// Duration in µs; `None` for an instant event.
    pub dur_us: Option<f64>,
    /// Arguments shown with the event.
    pub args: Vec<(&'static str, String)>,
}

/// Collects trace events.
pub struct Tracer {
    start: Instant,
    events: Mutex<Vec<TraceEvent>>,
    names: Mutex<Vec<(u32, String)>>,
}

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

fn thread_tid() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() % 100_000
}

impl Tracer {
    /// An empty trace starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            names: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e6
    }

    /// Names partition `pid` in the trace viewer.
    pub fn name_partition(&self, pid: u32, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, name.to_string()));
    }

    fn push(&self, e: TraceEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    /// Records an instant event.
    pub fn instant(
        &self,
        pid: u32,
        name: &str,
        cat: &'static str,
        args: &[(&'static str, String)],
    ) {
        self.push(TraceEvent {
            pid,
            tid: thread_tid(),
            name: name.to_string(),
            cat,
            ts_us: self.now_us(),
            dur_us: None,
            args: args.to_vec(),
        });
    }

    /// Records a complete event that started at `start_us`.
    pub fn complete(
        &self,
        pid: u32,
        name: &str,
        cat: &'static str,
        start_us: f64,
        args: &[(&'static str, String)],
    ) {
        let now = self.now_us();
        self.push(TraceEvent {
            pid,
            tid: thread_tid(),
            name: name.to_string(),
            cat,
            ts_us: start_us,
            dur_us: Some((now - start_us).max(0.0)),
            args: args.to_vec(),
        });
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<TraceEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of events of category `cat`.
    pub fn count(&self, cat: &str) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.cat == cat)
            .count()
    }

    /// The trace as Chrome Trace Event Format JSON (written with `serde_json`): a
    /// `process_name` metadata event per named partition, then the events; complete
    /// events have `"ph":"X"` and a `dur`, instant events `"ph":"i"` with thread scope.
    pub fn to_json(&self) -> String {
        Self::merged_json(&[(self, 0, "")])
    }

    /// Several tracers in one Chrome trace: tracer `i`'s partition ids are offset by its
    /// `pid_offset` and its partition names prefixed by its `prefix` (so two boards of
    /// one run, e.g. `ism-sim info`'s, show side by side).
    pub fn merged_json(tracers: &[(&Tracer, u32, &str)]) -> String {
        let mut events = Vec::new();
        for (t, off, prefix) in tracers {
            for (pid, name) in t.names.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                events.push(ChromeEvent {
                    name: "process_name".into(),
                    cat: None,
                    ph: "M",
                    pid: pid + off,
                    tid: None,
                    ts: None,
                    dur: None,
                    s: None,
                    args: [("name".to_string(), format!("{prefix}{name}"))].into(),
                });
            }
        }
        for (t, off, _) in tracers {
            for e in t.events.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                // Whole nanoseconds: the format's unit is µs, three decimals.
                let us = |v: f64| (v * 1e3).round() / 1e3;
                events.push(ChromeEvent {
                    name: e.name.clone(),
                    cat: Some(e.cat),
                    ph: if e.dur_us.is_some() { "X" } else { "i" },
                    pid: e.pid + off,
                    tid: Some(e.tid),
                    ts: Some(us(e.ts_us)),
                    dur: e.dur_us.map(us),
                    s: e.dur_us.is_none().then_some("t"),
                    args: e
                        .args
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                });
            }
        }
        let trace = ChromeTrace {
            display_time_unit: "ns",
            trace_events: events,
        };
        let mut s = serde_json::to_string(&trace).expect("a trace serializes");
        s.push('\n');
        s
    }
}

/// The Chrome "Trace Event Format" file.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ChromeTrace {
    display_time_unit: &'static str,
    trace_events: Vec<ChromeEvent>,
}

/// One event of the Chrome "Trace Event Format".
#[derive(serde::Serialize)]
struct ChromeEvent {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    args: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_events_and_names() {
        let t = Tracer::new();
        t.name_partition(1, "LPAR \"A\"\n\u{1}");
        t.instant(1, "irq", "interrupt", &[]);
        let s = t.now_us();
        t.complete(1, "REG_DMB", "command", s, &[("ret", "0".into())]);
        let j: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(j["displayTimeUnit"], "ns");
        let ev = j["traceEvents"].as_array().unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["ph"], "M");
        assert_eq!(ev[0]["args"]["name"], "LPAR \"A\"\n\u{1}");
        assert_eq!(
            (&ev[1]["name"], &ev[1]["cat"]),
            (&"irq".into(), &"interrupt".into())
        );
        assert_eq!((&ev[1]["ph"], &ev[1]["s"]), (&"i".into(), &"t".into()));
        assert!(ev[1].get("dur").is_none());
        assert_eq!(ev[2]["ph"], "X");
        assert!(ev[2]["dur"].as_f64().unwrap() >= 0.0);
        assert_eq!(ev[2]["args"]["ret"], "0");
        assert_eq!(t.count("command"), 1);
    }

    #[test]
    fn merged_traces_keep_boards_apart() {
        let (a, b) = (Tracer::new(), Tracer::new());
        a.name_partition(0, "P0");
        b.name_partition(0, "P0");
        a.instant(0, "x", "event", &[]);
        b.instant(0, "y", "event", &[]);
        let j: serde_json::Value =
            serde_json::from_str(&Tracer::merged_json(&[(&a, 0, "a: "), (&b, 100, "b: ")]))
                .unwrap();
        let ev = j["traceEvents"].as_array().unwrap();
        assert_eq!(ev[1]["args"]["name"], "b: P0");
        assert_eq!(ev[1]["pid"], 100);
        assert_eq!((&ev[3]["name"], &ev[3]["pid"]), (&"y".into(), &100.into()));
    }
}
