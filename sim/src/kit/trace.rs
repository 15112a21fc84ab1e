//! Trace export: what happened on the board, per partition, as a Chrome / Perfetto trace
//! (the JSON "Trace Event Format", loadable in `ui.perfetto.dev` or `chrome://tracing`).
//!
//! Recording is a push onto a locked vector, so tracing is for demos and debugging runs,
//! not for benchmarks.

use std::fmt::Write as _;
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

    /// The trace as Chrome Trace Event Format JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push_str(",\n");
            }
            first = false;
        };
        for (pid, name) in self.names.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{pid},\"args\":{{\"name\":{}}}}}",
                json_string(name)
            );
        }
        for e in self.events.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":{},\"cat\":\"{}\",\"pid\":{},\"tid\":{},\"ts\":{:.3}",
                json_string(&e.name),
                e.cat,
                e.pid,
                e.tid,
                e.ts_us
            );
            match e.dur_us {
                Some(d) => {
                    let _ = write!(out, ",\"ph\":\"X\",\"dur\":{d:.3}");
                }
                None => out.push_str(",\"ph\":\"i\",\"s\":\"t\""),
            }
            out.push_str(",\"args\":{");
            for (i, (k, v)) in e.args.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{k}\":{}", json_string(v));
            }
            out.push_str("}}");
        }
        out.push_str("\n]}\n");
        out
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_events_and_names() {
        let t = Tracer::new();
        t.name_partition(1, "LPAR \"A\"");
        t.instant(1, "irq", "interrupt", &[]);
        let s = t.now_us();
        t.complete(1, "REG_DMB", "command", s, &[("ret", "0".into())]);
        let j = t.to_json();
        assert!(j.starts_with("{\"displayTimeUnit\""));
        assert!(j.contains("\"name\":\"irq\",\"cat\":\"interrupt\""));
        assert!(j.contains("\"ph\":\"X\""));
        assert!(j.contains("\"args\":{\"ret\":\"0\"}"));
        assert!(j.contains("LPAR \\\"A\\\""));
        assert_eq!(t.count("command"), 1);
        assert_eq!(json_string("a\u{1}b"), "\"a\\u0001b\"");
    }
}
