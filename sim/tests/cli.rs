//! The `ism-sim` command line: each subcommand runs and exits 0, a trace file is written as
//! JSON, and bad flags are refused with a non-zero exit and a message.

use std::process::Command;

fn ism_sim(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ism-sim"))
        .args(args)
        .output()
        .expect("run ism-sim");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_passes_and_writes_a_trace() {
    let dir = std::env::temp_dir().join(format!("ism-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("demo.json");
    let (ok, out, err) = ism_sim(&[
        "demo",
        "--bytes",
        "1000000",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("all checks passed"));
    assert!(out.contains("loopback, no-copy"));
    let json = std::fs::read_to_string(&trace).unwrap();
    assert!(json.starts_with("{\"displayTimeUnit\""));
    for cat in ["command", "move", "interrupt", "event"] {
        assert!(
            json.contains(&format!("\"cat\":\"{cat}\"")),
            "trace has {cat} events"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn info_prints_query_info_of_every_function() {
    let (ok, out, _) = ism_sim(&["info", "--partitions", "3"]);
    assert!(ok);
    assert_eq!(
        out.matches("QUERY_INFO").count(),
        4,
        "3 LPAR functions and the loopback one"
    );
    assert!(
        out.contains("ATTACH_DMB"),
        "the loopback function advertises attach"
    );
}

#[test]
fn stream_runs_on_both_boards() {
    for args in [
        &["stream", "--board", "lpar", "--bytes", "2000000"][..],
        &[
            "stream",
            "--board",
            "loopback",
            "--nocopy",
            "--bytes",
            "2000000",
            "--busy-poll",
        ][..],
    ] {
        let (ok, out, err) = ism_sim(args);
        assert!(ok, "{args:?}: {out}\n{err}");
        assert!(out.contains("verified yes"), "{out}");
    }
}

#[test]
fn bad_flags_are_refused() {
    let (ok, _, err) = ism_sim(&["stream", "--board", "lpar", "--nocopy", "--bytes", "1000"]);
    assert!(!ok);
    assert!(err.contains("--nocopy needs the loopback board"), "{err}");
    let (ok, _, err) = ism_sim(&["stream", "--board", "mainframe"]);
    assert!(!ok);
    assert!(err.contains("invalid value"), "{err}");
    let (ok, _, _) = ism_sim(&["info", "--partitions", "9"]);
    assert!(!ok);
    let (ok, _, err) = ism_sim(&["demo", "--trace", "/nonexistent-dir/t.json"]);
    assert!(!ok);
    assert!(err.contains("cannot write"), "{err}");
}
