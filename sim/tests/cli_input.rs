//! `ism-sim` under hostile input: a bad value of every flag (out of range, too large for
//! its type, not a number, not UTF-8) is a usage error with a message, never a panic, an
//! allocation abort or a run that does not end; and every JSON file the CLI writes parses.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one refused command line may take (it should exit at once).
const REFUSE_WITHIN: Duration = Duration::from_secs(20);
/// Longest one of the small runs below may take.
const RUN_WITHIN: Duration = Duration::from_secs(120);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `ism-sim` with `args`, killing it (and failing) if it runs longer than `limit`.
fn run(args: &[OsString], limit: Duration) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-sim"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ism-sim");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ism-sim {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Not UTF-8.
fn bad_utf8() -> OsString {
    OsStr::from_bytes(b"l\xffpar").to_owned()
}

/// `args` is refused as a usage error: exit status 2, a message on stderr that contains
/// `says`, no panic.
fn refused(args: Vec<OsString>, says: &str) {
    refused_with(args, says, 2);
}

/// `args` is refused with exit status `code`, a message on stderr that contains `says`,
/// no panic.
fn refused_with(args: Vec<OsString>, says: &str, code: i32) {
    let o = run(&args, REFUSE_WITHIN);
    assert!(
        o.code == Some(code),
        "{args:?}: exit {:?}\n{}{}",
        o.code,
        o.stdout,
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"), "{args:?}: {}", o.stderr);
    assert!(o.stderr.contains(says), "{args:?}: {}", o.stderr);
}

const U64_MAX: &str = "18446744073709551615";
const U64_OVER: &str = "18446744073709551616";

#[test]
fn bad_values_of_every_flag_are_usage_errors() {
    let invalid = "invalid value";
    let table: &[(&[&str], &str)] = &[
        // demo
        (&["demo", "--bytes", "0"], invalid),
        (&["demo", "--bytes", U64_MAX], invalid),
        (&["demo", "--bytes", "17179869185"], invalid),
        (&["demo", "--bytes", "-1"], "unexpected argument"),
        (&["demo", "--bytes", "1e6"], invalid),
        (&["demo", "--bytes", "17G"], "allowed: 1 B to 16.0 GiB"),
        (&["demo", "--bytes", "1.3"], "whole number of bytes"),
        (&["demo", "--bytes", "5Q"], "unknown unit"),
        // stream
        (&["stream", "--board", "mainframe"], invalid),
        (&["stream", "--board", ""], "--board"),
        (&["stream", "--nocopy=yes"], "unexpected value"),
        (&["stream", "--board", "lpar", "--nocopy"], "--nocopy needs"),
        (&["stream", "--bytes", "0"], invalid),
        (&["stream", "--bytes", U64_OVER], invalid),
        (&["stream", "--chunk", U64_MAX], invalid),
        (&["stream", "--chunk", "1000000000000"], invalid),
        (&["stream", "--chunk", "16777217"], invalid),
        (&["stream", "--chunk", "0"], invalid),
        (&["stream", "--chunk", "-5"], "unexpected argument"),
        (&["stream", "--buffer", "0"], invalid),
        (&["stream", "--buffer", "16383"], invalid),
        (&["stream", "--buffer", "1048577"], invalid),
        (&["stream", "--buffer", U64_MAX], invalid),
        (&["stream", "--buffer", "1000"], invalid),
        (&["stream", "--buffer", "20000"], "16 KiB × 2^n"),
        (&["stream", "--buffer", "48K"], "16 KiB × 2^n"),
        (&["stream", "--chunk", "17M"], invalid),
        (&["stream", "--busy-poll=1"], "unexpected value"),
        // run (refused before the program is started)
        (&["run", "--busy-poll", "0", "--", "true"], invalid),
        (&["run", "--busy-poll", "10001", "--", "true"], invalid),
        (&["run", "--busy-poll", "fast", "--", "true"], invalid),
        (
            &["run", "--busy-poll", "-1", "--", "true"],
            "unexpected argument '-1'",
        ),
        // an option `run` does not know is not taken for the program
        (
            &["run", "--bogus", "--", "true"],
            "unexpected argument '--bogus'",
        ),
        (&["run", "--board", "../evil", "--", "true"], invalid),
        (&["run", "--board", "", "--", "true"], invalid),
        // soak
        (&["soak", "--seconds", "0"], invalid),
        (&["soak", "--seconds", U64_MAX], invalid),
        (&["soak", "--seconds", "604801"], invalid),
        (&["soak", "--seed", "x"], invalid),
        (&["soak", "--seed", U64_OVER], invalid),
        (&["soak", "--workers", "0"], invalid),
        (&["soak", "--workers", "65"], invalid),
        (&["soak", "--workers", "100000"], invalid),
        (&["soak", "--max-bytes", "0"], invalid),
        (&["soak", "--max-bytes", U64_MAX], invalid),
        (&["soak", "--max-bytes", "1073741825"], invalid),
        (&["soak", "--max-bytes", "2G"], invalid),
        (&["soak", "--trace", "t.json"], "unexpected argument"),
        (&["soak", "--no-crashes=no"], "unexpected value"),
        // info
        (&["info", "--partitions", "0"], invalid),
        (&["info", "--partitions", "9"], invalid),
        (&["info", "--partitions", "300"], invalid),
        // bench (all refused before any measurement)
        (&["bench", "--rounds", "0"], invalid),
        (&["bench", "--rounds", "1001"], invalid),
        (&["bench", "--rounds", U64_MAX], invalid),
        (&["bench", "--quick=1"], "unexpected value"),
        (&["bench", "--pin", "everywhere"], invalid),
        (&["bench", "--no-progress=0"], "unexpected value"),
        (&["bench", "--only", "bandwidth,warp_drive"], "unknown key"),
        (&["bench", "--only", ""], "unknown key"),
        (&["bench", "--only", "tcp,"], "unknown key"),
        (&["bench", "--trace", "t.json"], "unexpected argument"),
        // board (refused before a board starts or a host attaches)
        (&["board", "--max-functions", "0"], invalid),
        (&["board", "--max-functions", "33"], invalid),
        (&["board", "--memory-mib", "0"], invalid),
        (&["board", "--memory-mib", "65537"], invalid),
        (&["board", "--socket-mode", "999"], "not a permission mode"),
        (
            &["board", "send", "b", "127.0.0.1:1", "--bytes", "1X"],
            "unknown unit",
        ),
        (
            &["board", "send", "b", "127.0.0.1:1", "--bytes", U64_OVER],
            invalid,
        ),
        // --trace belongs to the subcommands that trace
        (&["demo", "--trace"], "a value is required"),
        (&["--trace", "t.json", "info"], "unexpected argument"),
        (&["warp"], "unrecognized subcommand"),
        (&["demo", "--frobnicate"], "unexpected argument"),
    ];
    for (args, says) in table {
        refused(os(args), says);
    }
    // A file that cannot be written: the run could not be done (exit 3), not a usage error.
    for args in [
        &[
            "demo",
            "--trace",
            "/nonexistent-dir/t.json",
            "--bytes",
            "1000",
        ][..],
        &[
            "info",
            "--partitions",
            "1",
            "--json",
            "/nonexistent-dir/i.json",
        ][..],
    ] {
        refused_with(os(args), "cannot write", 3);
    }
}

#[test]
fn sizes_take_suffixes_as_iperf3_users_type_them() {
    let o = run(
        &os(&[
            "stream", "--bytes", "1.5M", "--chunk", "128K", "--buffer", "64K", "--json",
        ]),
        RUN_WITHIN,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("stream --json");
    assert_eq!(v["bytes"], 3 << 19);
    assert_eq!(v["options"]["chunk"], 128 << 10);
    assert_eq!(v["options"]["buffer"], 64 << 10);
    assert_eq!(v["client"]["bytes_sent"], 3 << 19);
    assert_eq!(v["server"]["bytes_received"], 3 << 19);
}

#[test]
fn stream_stats_show_stacks_and_connections() {
    let o = run(
        &os(&["stream", "--bytes", "256K", "--buffer", "16K", "--stats"]),
        RUN_WITHIN,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let t = &o.stdout;
    assert!(t.contains("SMC-D statistics (per stack):"), "{t}");
    assert!(
        t.contains("client stack:") && t.contains("server stack:"),
        "{t}"
    );
    assert!(
        t.contains("client  SMC-D 1 (v1 0, v2 1)  fallback 0  handshake errors 0"),
        "{t}"
    );
    assert!(
        t.contains("server  SMC-D 1 (v1 0, v2 1)  fallback 0  handshake errors 0"),
        "{t}"
    );
    assert!(t.contains("sent 256 KiB"), "{t}");
    // 256 KiB through a 16 KiB RMB: the writer is blocked on the peer's full buffer.
    let count_after = |from: &str, what: &str| -> u64 {
        let rest = &t[t.find(from).unwrap()..];
        let rest = &rest[rest.find(what).unwrap() + what.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(count_after("client stack:", "peer buffer full ") > 0, "{t}");
    assert!(count_after("server stack:", "own buffer full ") > 0, "{t}");
    assert_eq!(t.matches("(opened as ").count(), 2, "{t}");
    // Without --stats: none of it.
    let o = run(&os(&["stream", "--bytes", "1K"]), RUN_WITHIN);
    assert!(!o.stdout.contains("SMC-D statistics"), "{}", o.stdout);
}

#[test]
fn small_runs_print_units_that_fit() {
    let o = run(&os(&["stream", "--bytes", "1000"]), RUN_WITHIN);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("1000 B in"), "{}", o.stdout);
    assert!(!o.stdout.contains(" 0.0 MiB"), "{}", o.stdout);
    assert!(!o.stdout.contains(" 0.000 s"), "{}", o.stdout);
}

#[test]
fn rust_log_shows_the_log() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ism-sim"));
    child
        .args(["stream", "--bytes", "1000"])
        .env("RUST_LOG", "debug");
    let out = child.output().expect("run ism-sim");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEBUG"), "{err}");
    assert!(err.contains("ism_host_driver"), "{err}");
    // Without RUST_LOG only warnings and errors: none on a good run.
    let out = Command::new(env!("CARGO_BIN_EXE_ism-sim"))
        .args(["stream", "--bytes", "1000"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run ism-sim");
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let o = run(&os(&["--help"]), REFUSE_WITHIN);
    assert_eq!(o.code, Some(0));
    for line in ["0  ok", "1  a check failed", "2  usage", "3  could not run"] {
        assert!(o.stdout.contains(line), "{}", o.stdout);
    }
}

#[test]
fn arguments_that_are_not_utf8_are_refused_or_used_as_paths() {
    let flags: &[&[&str]] = &[
        &["demo", "--bytes"],
        &["stream", "--board"],
        &["stream", "--chunk"],
        &["stream", "--buffer"],
        &["soak", "--seconds"],
        &["soak", "--workers"],
        &["soak", "--max-bytes"],
        &["soak", "--seed"],
        &["info", "--partitions"],
        &["bench", "--rounds"],
        &["bench", "--pin"],
        &["bench", "--only"],
    ];
    for f in flags {
        let mut args = os(f);
        args.push(bad_utf8());
        refused(args, "invalid");
    }
    refused(vec![bad_utf8()], "unrecognized subcommand");
    // A file name that is not UTF-8 is a file name.
    let dir = temp_dir("utf8");
    let mut name = dir.clone().into_os_string();
    name.push("/");
    name.push(OsStr::from_bytes(b"trace-\xff.json"));
    let o = run(
        &[
            OsString::from("info"),
            OsString::from("--partitions"),
            OsString::from("1"),
            OsString::from("--trace"),
            name.clone(),
        ],
        RUN_WITHIN,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    parse_json(Path::new(&name));
    let _ = std::fs::remove_dir_all(&dir);
}

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ism-sim-cli-input-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn parse_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// A Chrome trace: an object with a non-empty `traceEvents` array of named events.
fn check_trace(v: &serde_json::Value, what: &str) {
    let events = v["traceEvents"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no traceEvents"));
    assert!(!events.is_empty(), "{what}: no events");
    assert!(
        events
            .iter()
            .all(|e| e["name"].is_string() && e["ph"].is_string()),
        "{what}"
    );
}

/// A subcommand's `--json` results: an object naming its command, and `ok` where the
/// command has checks.
fn check_results(v: &serde_json::Value, what: &str) {
    let cmd = v["command"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(what.starts_with(cmd), "{what}: {cmd}");
    if cmd != "info" {
        assert_eq!(v["ok"], true, "{what}: {v}");
    } else {
        assert!(v["boards"].as_array().is_some_and(|b| b.len() == 2), "{v}");
    }
    if cmd == "stream" {
        assert_eq!(v["verified"], true, "{v}");
        assert!(v["client"]["bytes_sent"].as_u64().unwrap() > 0, "{v}");
        check_stream_stats(v);
    }
    if cmd == "demo" {
        let streams = v["streams"].as_array().expect("demo streams");
        assert_eq!(streams.len(), 3, "{v}");
        streams.iter().for_each(check_stream_stats);
    }
}

/// A stream's SMC-D statistics: one SMC-D handshake per side, no fallback or error, the
/// bytes in the stack totals and in the per-connection list.
fn check_stream_stats(v: &serde_json::Value) {
    let bytes = v["bytes"].as_u64().unwrap();
    let stacks = v["stacks"].as_array().expect("stacks");
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| stacks.iter().map(f).sum::<u64>();
    assert_eq!(sum(&|s| s["client"]["smcd"].as_u64().unwrap()), 1, "{v}");
    assert_eq!(sum(&|s| s["server"]["smcd"].as_u64().unwrap()), 1, "{v}");
    assert_eq!(
        sum(&|s| s["client"]["fallbacks"].as_u64().unwrap()),
        0,
        "{v}"
    );
    assert_eq!(
        sum(&|s| s["client"]["handshake_errors"].as_u64().unwrap()),
        0,
        "{v}"
    );
    assert_eq!(
        sum(&|s| s["traffic"]["bytes_sent"].as_u64().unwrap()),
        bytes,
        "{v}"
    );
    assert_eq!(
        sum(&|s| s["traffic"]["bytes_received"].as_u64().unwrap()),
        bytes,
        "{v}"
    );
    let conns = v["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 2, "client and server: {v}");
    let sent: u64 = conns
        .iter()
        .map(|c| c["stats"]["bytes_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, bytes, "{v}");
}

#[test]
fn every_json_the_cli_writes_parses() {
    let dir = temp_dir("json");
    let trace_runs: &[(&str, &[&str])] = &[
        ("demo", &["demo", "--bytes", "100000"]),
        (
            "stream-lpar",
            &[
                "stream", "--bytes", "200000", "--chunk", "7000", "--buffer", "16384",
            ],
        ),
        (
            "stream-lo",
            &[
                "stream",
                "--board",
                "loopback",
                "--nocopy",
                "--bytes",
                "200000",
                "--busy-poll",
            ],
        ),
        ("info", &["info", "--partitions", "3"]),
    ];
    for (name, args) in trace_runs {
        let path = dir.join(format!("{name}.json"));
        let mut a = os(args);
        a.push("--trace".into());
        a.push(path.clone().into_os_string());
        let o = run(&a, RUN_WITHIN);
        assert_eq!(o.code, Some(0), "{name}: {}{}", o.stdout, o.stderr);
        check_trace(&parse_json(&path), name);
        // The same run's results as JSON, to a file (the text still printed) and to stdout
        // (instead of the text).
        let results = dir.join(format!("{name}-results.json"));
        let mut a = os(args);
        a.push("--json".into());
        a.push(results.clone().into_os_string());
        let o = run(&a, RUN_WITHIN);
        assert_eq!(o.code, Some(0), "{name}: {}{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("JSON written to"), "{name}: {}", o.stdout);
        check_results(&parse_json(&results), name);
        let mut a = os(args);
        a.push("--json".into());
        let o = run(&a, RUN_WITHIN);
        assert_eq!(o.code, Some(0), "{name}: {}{}", o.stdout, o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{name} --json prints only JSON: {e}\n{}", o.stdout));
        check_results(&v, name);
    }
    // info traces both of its boards into one file, each partition named by its board.
    let v = parse_json(&dir.join("info.json"));
    let names: Vec<&str> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("LPAR board: ")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("loopback board: ")),
        "{names:?}"
    );
    // soak --json (short, no crashes).
    let o = run(
        &os(&[
            "soak",
            "--seconds",
            "1",
            "--workers",
            "1",
            "--max-bytes",
            "64K",
            "--no-crashes",
            "--json",
        ]),
        RUN_WITHIN,
    );
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("soak --json");
    check_results(&v, "soak");
    assert_eq!(v["corruptions"], 0);
    assert!(v["verified"].as_u64().unwrap() > 0);
    // Every stack of the three boards (3 LPAR partitions, 2 loopback boards), with SMC-D
    // handshakes counted on both sides.
    let stacks = v["stacks"].as_array().expect("soak stacks");
    assert_eq!(stacks.len(), 5, "{v}");
    let smcd: u64 = stacks
        .iter()
        .map(|s| s["client"]["smcd"].as_u64().unwrap())
        .sum();
    assert!(smcd >= v["verified_smc"].as_u64().unwrap(), "{v}");
    assert!(stacks.iter().all(|s| s["name"].is_string()), "{v}");
    // The bench's JSON, to a file and to stdout: one small cell, one round (not a
    // measurement), with a file name that is not UTF-8 in the command line it records.
    let json = dir.join("bench.json");
    let mut svg = dir.clone().into_os_string();
    svg.push("/");
    svg.push(OsStr::from_bytes(b"chart-\xfe.svg"));
    let small = [
        "bench",
        "--quick",
        "--rounds",
        "1",
        "--pin",
        "none",
        "--no-progress",
        "--only",
        "latency_blocking,tcp",
    ];
    let mut a = os(&small);
    a.extend([
        OsString::from("--json"),
        json.clone().into_os_string(),
        OsString::from("--svg"),
        svg,
    ]);
    let o = run(&a, RUN_WITHIN);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    let v = parse_json(&json);
    assert!(v.is_object(), "{v}");
    // The one cell, with its per-message percentiles.
    let cells = v["results"].as_array().expect("results");
    assert_eq!(cells.len(), 1, "{v}");
    let lat = &cells[0]["latency_us"];
    assert!(lat["messages"].as_u64().unwrap() > 0, "{v}");
    let p: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| lat[k].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]) && p[0] > 0.0, "{p:?}");
    let mut a = os(&small);
    a.push("--json".into());
    let o = run(&a, RUN_WITHIN);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("bench --json prints JSON");
    assert!(v.is_object());
    // Without --no-progress but with stderr a pipe: no progress bar.
    let o = run(
        &os(&small[..small.len() - 3])
            .into_iter()
            .chain(os(&["--only", "latency_blocking,tcp"]))
            .collect::<Vec<_>>(),
        RUN_WITHIN,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        !o.stderr.contains('\x1b') && !o.stderr.contains('\r'),
        "{:?}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
