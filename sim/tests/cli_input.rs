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

/// `args` is refused: exit status 1 (our check) or 2 (usage), a message on stderr that
/// contains `says`, no panic.
fn refused(args: Vec<OsString>, says: &str) {
    let o = run(&args, REFUSE_WITHIN);
    assert!(
        matches!(o.code, Some(1 | 2)),
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
        (&["stream", "--busy-poll=1"], "unexpected value"),
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
        // global and unknown
        (&["--trace"], "a value is required"),
        (
            &[
                "demo",
                "--trace",
                "/nonexistent-dir/t.json",
                "--bytes",
                "1000",
            ],
            "cannot write",
        ),
        (&["warp"], "unrecognized subcommand"),
        (&["demo", "--frobnicate"], "unexpected argument"),
    ];
    for (args, says) in table {
        refused(os(args), says);
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
            OsString::from("--trace"),
            name.clone(),
            OsString::from("info"),
            OsString::from("--partitions"),
            OsString::from("1"),
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
    }
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
    let mut a = os(&small);
    a.push("--json".into());
    let o = run(&a, RUN_WITHIN);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("bench --json prints JSON");
    assert!(v.is_object());
    let _ = std::fs::remove_dir_all(&dir);
}
