//! Helpers of the `ism-sim` command line: exit codes, byte sizes as people type them
//! (`--bytes 1G`, `--chunk 128K`), and numbers in units that scale.

use std::fmt;
use std::time::Duration;

use ism_host_driver::smcd::conn::ConnStats;
use ism_host_driver::smcd::{ConnInfo, HandshakeStats, StackStats};

/// Exit code: everything ran and every check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run finished but a check failed (data did not verify, a corruption,
/// a stream that should have used SMC-D fell back to TCP).
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code: bad command line (what `clap` uses for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: could not run (a board or connection could not be set up, a file could
/// not be written).
pub const EXIT_COULD_NOT_RUN: u8 = 3;

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "Exit status:
  0  ok: everything ran and every check passed
  1  a check failed (data did not verify, a corruption, an unexpected TCP fallback)
  2  usage: a bad command line
  3  could not run (a board, connection or file could not be set up or written)";

/// Why a subcommand did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It ran, but a check failed ([`EXIT_CHECK_FAILED`]).
    Check(String),
    /// It could not run ([`EXIT_COULD_NOT_RUN`]).
    Run(String),
    /// The command line names something unusable that `clap` cannot check, such as a
    /// program that does not exist ([`EXIT_USAGE`]).
    Usage(String),
}

impl Failure {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Check(_) => EXIT_CHECK_FAILED,
            Failure::Run(_) => EXIT_COULD_NOT_RUN,
            Failure::Usage(_) => EXIT_USAGE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Check(m) => write!(f, "check failed: {m}"),
            Failure::Run(m) => write!(f, "could not run: {m}"),
            Failure::Usage(m) => write!(f, "usage: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Any error of setting up or running: the run could not be done.
impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure::Run(m)
    }
}

/// Parses a byte size as iperf3 users type it: a number with an optional binary suffix,
/// `K`, `M`, `G` or `T` (powers of 1024), optionally followed by `iB` or `B`, case
/// insensitive: `4096`, `128K`, `1.5M`, `1G`, `64KiB`. A fraction must come to whole
/// bytes.
///
/// # Errors
/// A message saying what is wrong (empty, not a number, unknown suffix, too large, not
/// whole bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(format!(
            "{s:?} is not a size (examples: 65536, 64K, 1.5M, 1G)"
        ));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {suffix:?} (use K, M, G or T: powers of 1024)"
            ))
        }
    };
    let too_large = || format!("{s:?} is too large");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u64 = int.parse().map_err(|_| too_large())?;
    let mut v = int
        .checked_shl(shift)
        .filter(|v| v >> shift == int)
        .ok_or_else(too_large)?;
    if !frac.is_empty() {
        // frac / 10^len × 2^shift must be a whole number of bytes.
        let den = 10u128
            .checked_pow(frac.len() as u32)
            .ok_or_else(too_large)?;
        let f: u128 = frac.parse().map_err(|_| too_large())?;
        let scaled = f << shift;
        if !scaled.is_multiple_of(den) {
            return Err(format!("{s:?} is not a whole number of bytes"));
        }
        let add = u64::try_from(scaled / den).map_err(|_| too_large())?;
        v = v.checked_add(add).ok_or_else(too_large)?;
    }
    Ok(v)
}

/// A `clap` value parser for a byte size in `min..=max` (see [`parse_size`]).
pub fn size_in(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let v = parse_size(s)?;
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{s:?} is {v} bytes; allowed: {} to {}",
                fmt_bytes(min),
                fmt_bytes(max)
            ))
        }
    }
}

/// `n` bytes in a unit that fits: `512 B`, `62.5 KiB`, `64.0 MiB`, `1.00 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{} {}", sig3(v), UNITS[u])
}

/// A rate in bytes per second in a unit that fits: `900 B/s`, `12.3 MiB/s`.
pub fn fmt_rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec < 0.0 {
        return String::from("-");
    }
    if bytes_per_sec < 1024.0 {
        return format!("{} B/s", sig3(bytes_per_sec));
    }
    // Whole bytes are enough to pick the unit and print three significant digits.
    let b = fmt_bytes(bytes_per_sec.min(u64::MAX as f64) as u64);
    format!("{b}/s")
}

/// A duration in a unit that fits: `850 ns`, `12.5 µs`, `3.20 ms`, `1.25 s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{} µs", sig3(ns / 1e3))
    } else if ns < 1e9 {
        format!("{} ms", sig3(ns / 1e6))
    } else {
        format!("{} s", sig3(ns / 1e9))
    }
}

/// Three significant digits for values from 1 up (`1.00`, `12.5`, `512`, `1234`).
fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One connection's counters as JSON (the names of [`ConnStats`]'s fields).
pub fn conn_stats_json(c: &ConnStats) -> serde_json::Value {
    serde_json::json!({
        "bytes_sent": c.bytes_sent,
        "bytes_received": c.bytes_received,
        "data_moves": c.data_moves,
        "cdc_sent": c.cdc_sent,
        "signals": c.signals,
        "waits": c.waits,
        "rechecks": c.rechecks,
        "peer_buffer_full": c.peer_buffer_full,
        "rmb_full": c.rmb_full,
    })
}

/// One side's handshake outcomes as JSON.
fn handshake_json(h: &HandshakeStats) -> serde_json::Value {
    serde_json::json!({
        "smcd": h.smcd(),
        "smcd_v1": h.smcd_v1,
        "smcd_v2": h.smcd_v2,
        "fallbacks": h.fallbacks,
        "fallback_reasons": h.fallback_reasons.iter().map(|(r, n)| serde_json::json!({
            "code": format!("{:#010x}", r.0),
            "reason": r.to_string(),
            "count": n,
        })).collect::<Vec<_>>(),
        "handshake_errors": h.errors,
    })
}

/// A stack's statistics as JSON (`client`, `server`, `traffic`, `connections`,
/// `link_groups`).
pub fn stack_stats_json(s: &StackStats) -> serde_json::Value {
    serde_json::json!({
        "client": handshake_json(&s.client),
        "server": handshake_json(&s.server),
        "traffic": conn_stats_json(&s.traffic),
        "connections": s.connections,
        "link_groups": s.link_groups,
    })
}

/// One connection (a line of `smcss`) as JSON.
pub fn conn_info_json(c: &ConnInfo) -> serde_json::Value {
    serde_json::json!({
        "link_group": format!("{:#010x}", c.link_group),
        "device": c.device,
        "role": format!("{:?}", c.role).to_lowercase(),
        "peer_gid": format!("{:#018x}", c.peer_gid.gid),
        "local_token": format!("{:#018x}", c.local_token.0),
        "peer_token": format!("{:#018x}", c.peer_token.0),
        "rmb_bytes": c.rmb_len,
        "nocopy": c.nocopy,
        "broken": c.broken,
        "stats": conn_stats_json(&c.stats),
    })
}

/// A stack's statistics as text, like `smcd stats` (each line indented by two spaces).
pub fn stack_stats_text(name: &str, s: &StackStats) -> String {
    let side = |what: &str, h: &HandshakeStats| {
        let mut line = format!(
            "    {what:<7} SMC-D {} (v1 {}, v2 {})  fallback {}  handshake errors {}",
            h.smcd(),
            h.smcd_v1,
            h.smcd_v2,
            h.fallbacks,
            h.errors
        );
        for (r, n) in &h.fallback_reasons {
            line.push_str(&format!("\n      fallback {n} × {r} ({:#010x})", r.0));
        }
        line
    };
    let t = &s.traffic;
    format!(
        "  {name}: {} open connection(s) in {} link group(s)\n{}\n{}\n    \
         data    sent {}  received {}  {} store-blocks  {} CDCs  {} signals\n    \
         waits   {} ({} rechecks)  peer buffer full {}  own buffer full {}",
        s.connections,
        s.link_groups,
        side("client", &s.client),
        side("server", &s.server),
        fmt_bytes(t.bytes_sent),
        fmt_bytes(t.bytes_received),
        t.data_moves,
        t.cdc_sent,
        t.signals,
        t.waits,
        t.rechecks,
        t.peer_buffer_full,
        t.rmb_full,
    )
}

/// One connection as a line of text, like `smcss`.
pub fn conn_info_text(c: &ConnInfo) -> String {
    let s = &c.stats;
    format!(
        "  lgr {:#010x} (opened as {}) dev {}  peer {:#018x}  RMB {} token {:#x} → peer token {:#x}{}{}  \
         sent {} received {}  waits {}  peer full {}  own full {}",
        c.link_group,
        format!("{:?}", c.role).to_lowercase(),
        c.device,
        c.peer_gid.gid,
        fmt_bytes(u64::from(c.rmb_len)),
        c.local_token.0,
        c.peer_token.0,
        if c.nocopy { " no-copy" } else { "" },
        if c.broken { " BROKEN" } else { "" },
        fmt_bytes(s.bytes_sent),
        fmt_bytes(s.bytes_received),
        s.waits,
        s.peer_buffer_full,
        s.rmb_full,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_iperf3_users_type_them() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("128k"), Ok(128 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("16GB"), Ok(16 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for bad in ["", "K", "1e6", "-1", "1.", ".5K", "1.2.3", "1X", "1 Kilo"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("0.3").unwrap_err().contains("whole"));
        assert!(parse_size("1.1K").unwrap_err().contains("whole"));
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert!(parse_size("1Q").unwrap_err().contains("unknown unit"));
        let p = size_in(1, 1 << 20);
        assert_eq!(p("1M"), Ok(1 << 20));
        assert!(p("0").unwrap_err().contains("allowed: 1 B to 1.00 MiB"));
        assert!(p("1025K").is_err());
    }

    #[test]
    fn units_scale() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1000), "1000 B");
        assert_eq!(fmt_bytes(64_000), "62.5 KiB");
        assert_eq!(fmt_bytes(64 << 20), "64.0 MiB");
        assert_eq!(fmt_bytes(1 << 30), "1.00 GiB");
        assert_eq!(fmt_rate(500.0), "500 B/s");
        assert_eq!(fmt_rate(3.0 * (1 << 20) as f64), "3.00 MiB/s");
        assert_eq!(fmt_duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(fmt_duration(Duration::from_micros(12)), "12.0 µs");
        assert_eq!(fmt_duration(Duration::from_micros(3200)), "3.20 ms");
        assert_eq!(fmt_duration(Duration::from_millis(1250)), "1.25 s");
    }

    #[test]
    fn failures_map_to_distinct_exit_codes() {
        assert_eq!(Failure::Check("x".into()).exit_code(), EXIT_CHECK_FAILED);
        assert_eq!(
            Failure::from("y".to_string()).exit_code(),
            EXIT_COULD_NOT_RUN
        );
        let codes = [EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_COULD_NOT_RUN];
        for (i, a) in codes.iter().enumerate() {
            assert!(codes[i + 1..].iter().all(|b| a != b));
            assert!(EXIT_CODES_HELP.contains(&format!("  {a}  ")));
        }
    }
}
