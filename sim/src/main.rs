//! `ism-sim`: run the ISM device and SMC-D on a simulated board.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use serde_json::{json, Value};

use ism_host_driver::smcd::StackConfig;
use ism_sim::board::{BoardConfig, BoardKind, SimBoard};
use ism_sim::cli::{fmt_bytes, fmt_duration, fmt_rate, size_in, Failure, EXIT_CODES_HELP};
use ism_sim::demo::run_device_demo;
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;
use ism_sim::trace::Tracer;
use ism_sim::workload::{run_stream, StreamOptions, StreamReport};

/// Largest `--bytes` of a stream or the demo.
const MAX_BYTES: u64 = 16 << 30;
/// Largest `stream --chunk` (one write buffer is allocated of this size).
const MAX_CHUNK: u64 = 16 << 20;
/// Smallest `stream --buffer` (what an RMB can be: 16 KiB × 2^n).
const MIN_BUFFER: u64 = 16 << 10;
/// Largest `stream --buffer`.
const MAX_BUFFER: u64 = 1 << 20;
/// Longest soak.
const MAX_SOAK_SECONDS: u64 = 7 * 24 * 3600;
/// Most soak workers per board (each runs a client and a server thread).
const MAX_WORKERS: i64 = 64;
/// Largest soak connection.
const MAX_SOAK_BYTES: u64 = 1 << 30;
/// Most bench rounds.
const MAX_ROUNDS: i64 = 1000;
/// Bytes per demo stream when no subcommand is given.
const DEMO_BYTES: u64 = 64 << 20;

/// `--buffer`: an RMB size, 16 KiB × 2^n up to 1 MiB.
fn buffer_size(s: &str) -> Result<u64, String> {
    let v = size_in(MIN_BUFFER, MAX_BUFFER)(s)?;
    if !v.is_power_of_two() {
        return Err(format!(
            "{s:?} is {v} bytes; an RMB is 16 KiB × 2^n: 16K, 32K, 64K, 128K, 256K, 512K or 1M"
        ));
    }
    Ok(v)
}

/// Run the ISM device (and SMC-D on top of it) on a simulated IBM Z board.
///
/// Sizes take K, M, G, T suffixes (powers of 1024): `--bytes 1G`, `--chunk 128K`.
/// `RUST_LOG=debug` (or `info`, `trace`, `ism_host_driver=debug`, ...) shows the log on stderr.
#[derive(Parser, Debug)]
#[command(name = "ism-sim", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Which board a stream runs on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BoardArg {
    /// Two partitions; the device copies between their memories.
    Lpar,
    /// One partition; both endpoints share its memory (no-copy possible).
    Loopback,
}

/// `--json [FILE]`, the same on every subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
struct JsonArg {
    /// Machine-readable results: `--json` prints JSON instead of the text,
    /// `--json FILE` writes it to FILE and still prints the text.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<PathBuf>,
}

impl JsonArg {
    /// Whether the JSON replaces the text on stdout.
    fn to_stdout(&self) -> bool {
        self.json.as_deref() == Some(Path::new("-"))
    }

    /// Prints or writes `v` as `--json` asked.
    fn emit(&self, v: &Value) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n";
        match &self.json {
            None => Ok(()),
            Some(_) if self.to_stdout() => {
                print!("{text}");
                Ok(())
            }
            Some(path) => {
                std::fs::write(path, text)
                    .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
                println!("JSON written to {}", path.display());
                Ok(())
            }
        }
    }
}

/// `--trace FILE`, on the subcommands that trace (demo, stream, info).
#[derive(clap::Args, Debug, Clone, Default)]
struct TraceArg {
    /// Write a Chrome/Perfetto trace (JSON) of commands, moves, interrupts and events.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// Prints the text output unless the JSON replaces it.
struct Out {
    text: bool,
}

macro_rules! say {
    ($out:expr) => { if $out.text { println!(); } };
    ($out:expr, $($a:tt)*) => { if $out.text { println!($($a)*); } };
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The tour (default): the ISM device between two LPARs step by step, then SMC-D
    /// streams on the LPAR board and on the loopback board (copy and no-copy), every byte
    /// verified, with their throughput; then a process board with two host processes that
    /// talk over it, one killed mid-stream.
    Demo {
        /// Bytes per demo stream (1 to 16G).
        #[arg(long, default_value = "64M", value_parser = size_in(1, MAX_BYTES))]
        bytes: u64,
        #[command(flatten)]
        trace: TraceArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Run one SMC-D stream (client to server, every byte verified) and print throughput;
    /// fails (exit 1) if a byte differs or the stream fell back to TCP.
    Stream {
        /// Board to run on.
        #[arg(long, value_enum, default_value_t = BoardArg::Lpar)]
        board: BoardArg,
        /// Send without copying (attach the peer's DMB; loopback board only).
        #[arg(long)]
        nocopy: bool,
        /// Bytes to send (1 to 16G).
        #[arg(long, default_value = "256M", value_parser = size_in(1, MAX_BYTES))]
        bytes: u64,
        /// Bytes per write (1 to 16M).
        #[arg(long, default_value = "64000", value_parser = size_in(1, MAX_CHUNK))]
        chunk: u64,
        /// RMB (DMB) size: 16K, 32K, 64K, 128K, 256K, 512K or 1M.
        #[arg(long, default_value = "1M", value_parser = buffer_size)]
        buffer: u64,
        /// Busy-poll instead of blocking on interrupts.
        #[arg(long)]
        busy_poll: bool,
        /// Also print the SMC-D statistics (like `smcd stats` and `smcss`): per stack the
        /// connections over SMC-D and TCP fallbacks (with the decline reasons), handshake
        /// errors, bytes, waits and full buffers; per connection its link group, peer,
        /// tokens and counters. (`--json` always has them.)
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        trace: TraceArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Soak: many verified SMC-D connections at once on the LPAR board (three partitions,
    /// crashed and restarted at random) and the loopback board (copy and no-copy); prints
    /// connections, bytes delivered, errors and corruptions (fails if any corruption).
    Soak {
        /// How long to start new connections (1 s to 7 days); the run ends when the
        /// connections running then are done (each at most --max-bytes).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=MAX_SOAK_SECONDS))]
        seconds: u64,
        /// Seed of sizes, chunks and crash times.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Connection loops per board (1 to 64).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS))]
        workers: u16,
        /// Largest connection (1 to 1G).
        #[arg(long, default_value = "2M", value_parser = size_in(1, MAX_SOAK_BYTES))]
        max_bytes: u64,
        /// Do not crash partitions.
        #[arg(long)]
        no_crashes: bool,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print QUERY_INFO of every function of an LPAR board and of the loopback board.
    Info {
        /// Number of LPAR partitions.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
        partitions: u8,
        #[command(flatten)]
        trace: TraceArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Measure TCP loopback, UNIX sockets and SMC-D (LPAR copy, loopback copy, loopback
    /// no-copy; in this process, and between two processes on a process board) side by
    /// side: message rate, bandwidth and ping-pong latency (blocking and busy-poll, with
    /// per-message percentiles), plus this machine's memcpy and cache-line limits.
    Bench {
        /// Rounds (medians are over rounds; default 5, with --quick 2).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_ROUNDS))]
        rounds: Option<u32>,
        /// A short run (a few seconds).
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        json: JsonArg,
        /// Also write a bar chart (SVG) to FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Where client and server threads run.
        #[arg(long, value_enum, default_value_t = ism_sim::bench::Pinning::Cross)]
        pin: ism_sim::bench::Pinning,
        /// No progress bar on stderr (there is none when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
        /// Only these metrics and/or transports (for profiling one cell), e.g.
        /// `--only bandwidth,smcd_lo_nocopy`. Metrics: msg_rate, bandwidth,
        /// latency_blocking, latency_busy_poll; transports: tcp, unix, smcd_lpar, smcd_lo,
        /// smcd_lo_nocopy, proc_lpar, proc_lo, proc_lo_nocopy (the last three: two processes).
        #[arg(long, value_delimiter = ',', value_name = "KEYS", value_parser = bench_key)]
        only: Vec<String>,
    },
    /// Run a board as a device process that other processes attach to
    /// (`ism_sim::process::attach`), or show a running board's state (`board status NAME`).
    Board(ism_sim::process::cli::BoardCli),
    /// Run an unmodified TCP program with the ism-run preload library (libism_run.so):
    /// its TCP connections to other programs under `ism-sim run` on the same board use
    /// SMC-D, all others plain TCP (as Linux's smc_run). Exit status: the program's; 2 if
    /// it cannot be started, 3 if the library is missing (or the board, with
    /// --require-smc). See docs/ism-run.md.
    Run {
        /// The process board to use (`ism-sim board --name NAME`).
        #[arg(long, default_value = "lpar", value_parser = run_board_name)]
        board: String,
        /// Send without copying (ATTACH_DMB), where the board allows it (loopback).
        #[arg(long)]
        nocopy: bool,
        /// RMB size per connection: 16K, 32K, ..., 1M.
        #[arg(long, value_parser = buffer_size)]
        buffer: Option<u64>,
        /// Fail instead of using plain TCP when the board is not running.
        #[arg(long)]
        require_smc: bool,
        /// On a loopback board, exchange doorbells with peers run so too, and ring theirs
        /// after each send instead of the device's interrupt: the default (see
        /// docs/ism-run.md, "The sender rings the receiver's doorbell").
        #[arg(long, overrides_with = "no_peer_bell")]
        peer_bell: bool,
        /// Let the device's interrupt tell of data (the interrupt thread writes the
        /// records): no doorbells exchanged, also on a loopback board.
        #[arg(long, conflicts_with = "busy_poll")]
        no_peer_bell: bool,
        /// Make `epoll_wait`, `poll` and `select` spin for up to USEC microseconds
        /// (1-10000) before they sleep, in processes with connections whose peer rings
        /// their doorbell; implies --peer-bell (see docs/ism-run.md, "Busy polling").
        #[arg(long, value_name = "USEC", value_parser = clap::value_parser!(u32).range(1..=10000))]
        busy_poll: Option<u32>,
        /// The program and its arguments (after `--`; an option of `run` it does not know
        /// before them is an error, not a program name).
        #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
        program: Vec<std::ffi::OsString>,
    },
}

/// `run --board`: a name a board can have (`ism-sim board --name`).
fn run_board_name(s: &str) -> Result<String, String> {
    if ism_sim::process::valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'".into())
    }
}

/// `bench --only`: a metric or transport key.
fn bench_key(s: &str) -> Result<String, String> {
    use ism_sim::bench::{Metric, Transport};
    let known: Vec<&str> = Metric::ALL
        .iter()
        .map(|m| m.key())
        .chain(Transport::ALL.iter().map(|t| t.key()))
        .collect();
    if known.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown key {s:?} (known: {})", known.join(", ")))
    }
}

/// Writes the trace of `boards` (one file; boards after the first get their partition ids
/// offset by 100 per board) and says so. Returns the JSON description of what was written.
fn write_trace(
    out: &Out,
    path: &Option<PathBuf>,
    boards: &[(&SimBoard, &str)],
) -> Result<Value, Failure> {
    let Some(path) = path else {
        return Ok(Value::Null);
    };
    let tracers: Vec<(&Tracer, u32, &str)> = boards
        .iter()
        .enumerate()
        .filter_map(|(i, (b, prefix))| b.tracer().map(|t| (&**t, 100 * i as u32, *prefix)))
        .collect();
    std::fs::write(path, Tracer::merged_json(&tracers))
        .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
    let events: usize = tracers.iter().map(|(t, _, _)| t.events().len()).sum();
    say!(out, "trace: {events} events written to {}", path.display());
    Ok(json!({ "file": path.to_string_lossy(), "events": events }))
}

fn smc_board(
    kind: BoardKind,
    nocopy: bool,
    buffer: u64,
    trace: bool,
    busy_poll: bool,
) -> Result<SmcBoard, Failure> {
    let board_cfg = BoardConfig {
        trace,
        ..BoardConfig::default()
    };
    let stack_cfg = StackConfig {
        nocopy,
        buffer_size: buffer as usize,
        busy_poll,
        ..StackConfig::default()
    };
    let irq = if busy_poll {
        IrqMode::Poll
    } else {
        IrqMode::Thread
    };
    SmcBoard::start(kind, 2, board_cfg, irq, stack_cfg)
        .map_err(|e| Failure::Run(format!("board: {e}")))
}

fn print_stream(out: &Out, label: &str, r: &StreamReport) {
    let c = &r.client.conn;
    say!(
        out,
        "  {label:<22} {:>10} in {:>9} = {:>12}  verified {}  ({} store-blocks of data, {} CDCs, {} signals at the receiver)",
        fmt_bytes(r.bytes),
        fmt_duration(r.elapsed),
        fmt_rate(r.bytes_per_sec()),
        if r.verified { "yes" } else { "NO" },
        c.data_moves,
        c.cdc_sent,
        r.server.conn.signals,
    );
}

/// The stacks of `b` (one for the loopback board, client and server for the LPAR one)
/// with their names.
fn board_stacks(b: &SmcBoard) -> Vec<(&'static str, ism_host_driver::smcd::StackStats)> {
    let (cs, ss) = b.pair();
    if std::sync::Arc::ptr_eq(&cs, &ss) {
        vec![("stack (client and server)", cs.stats())]
    } else {
        vec![("client stack", cs.stats()), ("server stack", ss.stats())]
    }
}

/// The SMC-D statistics of a stream's board and connections, as text.
fn print_smc_stats(out: &Out, b: &SmcBoard, r: &StreamReport) {
    say!(out, "SMC-D statistics (per stack):");
    for (name, st) in board_stacks(b) {
        say!(out, "{}", ism_sim::cli::stack_stats_text(name, &st));
    }
    say!(out, "SMC-D connections (at the end of the data):");
    if r.connections.is_empty() {
        say!(out, "  none");
    }
    for c in &r.connections {
        say!(out, "{}", ism_sim::cli::conn_info_text(c));
    }
}

/// The SMC-D statistics of a stream's board as JSON.
fn stacks_json(b: &SmcBoard) -> Value {
    board_stacks(b)
        .iter()
        .map(|(name, st)| {
            let mut v = ism_sim::cli::stack_stats_json(st);
            v["name"] = json!(name);
            v
        })
        .collect()
}

/// One stream's report as JSON.
fn stream_json(label: &str, r: &StreamReport) -> Value {
    json!({
        "label": label,
        "board": format!("{:?}", r.kind).to_lowercase(),
        "bytes": r.bytes,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "bytes_per_s": r.bytes_per_sec(),
        "verified": r.verified,
        "smc": r.client.smc,
        "nocopy": r.client.nocopy,
        "fallback": r.client.fallback.map(|d| json!({ "code": d.0, "reason": d.to_string() })),
        "client": ism_sim::cli::conn_stats_json(&r.client.conn),
        "server": ism_sim::cli::conn_stats_json(&r.server.conn),
        "connections": r.connections.iter().map(ism_sim::cli::conn_info_json).collect::<Vec<_>>(),
    })
}

fn soak(
    seconds: u64,
    seed: u64,
    workers: u16,
    max_bytes: u64,
    crashes: bool,
    json_arg: &JsonArg,
) -> Result<(), Failure> {
    let out = Out {
        text: !json_arg.to_stdout(),
    };
    let opts = ism_sim::soak::SoakOptions {
        duration: std::time::Duration::from_secs(seconds),
        seed,
        workers: usize::from(workers.max(1)),
        max_bytes: max_bytes.max(1),
        crashes,
        ..Default::default()
    };
    say!(
        out,
        "soak: {seconds} s, seed {seed}, {} workers per board, up to {} per connection, crashes {}",
        opts.workers,
        fmt_bytes(opts.max_bytes),
        if crashes { "on" } else { "off" }
    );
    let r = ism_sim::soak::run_soak(&opts)?;
    say!(out, "{}", r.summary());
    let failure = if r.corruptions > 0 {
        Some(Failure::Check(format!(
            "{} corrupted connection(s)",
            r.corruptions
        )))
    } else if r.verified == 0 {
        Some(Failure::Check("no connection was verified".into()))
    } else {
        None
    };
    json_arg.emit(&json!({
        "command": "soak",
        "options": {
            "seconds": seconds, "seed": seed, "workers": opts.workers,
            "max_bytes": opts.max_bytes, "crashes": crashes,
        },
        "elapsed_s": r.elapsed.as_secs_f64(),
        "connections": r.connections,
        "verified": r.verified,
        "verified_smc": r.verified_smc,
        "verified_nocopy": r.verified_nocopy,
        "errors": r.errors,
        "corruptions": r.corruptions,
        "bytes_delivered": r.bytes_delivered,
        "crashes": r.crashes,
        "restarts": r.restarts,
        "restart_failures": r.restart_failures,
        "verified_after_restart": r.verified_after_restart,
        "stacks": r.stacks.iter().map(|(name, st)| {
            let mut v = ism_sim::cli::stack_stats_json(st);
            v["name"] = json!(name);
            v
        }).collect::<Vec<_>>(),
        "ok": failure.is_none(),
    }))?;
    failure.map_or(Ok(()), Err)
}

fn demo(trace: &TraceArg, json_arg: &JsonArg, bytes: u64) -> Result<(), Failure> {
    let out = Out {
        text: !json_arg.to_stdout(),
    };
    say!(out, "== 1. the ISM device between two LPARs ==");
    let r = run_device_demo(trace.trace.is_some());
    if out.text {
        print!("{}", r.log);
    }
    let s = r.board.stats();
    say!(
        out,
        "device: {} commands, {} store-blocks ({}), {} refused, {} DMB signals, {} events, {} interrupts",
        s.commands, s.moves, fmt_bytes(s.bytes_moved), s.moves_refused, s.signals, s.events, s.interrupts
    );
    let trace_json = write_trace(&out, &trace.trace, &[(&r.board, "")])?;
    let device_failures = r.failures;
    let mut failures = r.failures;
    say!(out);
    say!(
        out,
        "== 2. SMC-D streams (CLC handshake over TCP, data through DMBs), {} each ==",
        fmt_bytes(bytes)
    );
    let runs = [
        ("LPAR, copy", BoardKind::Lpar, false),
        ("loopback, copy", BoardKind::Loopback, false),
        ("loopback, no-copy", BoardKind::Loopback, true),
    ];
    let mut streams = Vec::new();
    for (label, kind, nocopy) in runs {
        let b = smc_board(kind, nocopy, 1 << 20, false, false)?;
        let opts = StreamOptions {
            bytes,
            ..StreamOptions::default()
        };
        let r = run_stream(&b, opts)?;
        print_stream(&out, label, &r);
        if !r.verified || r.client.fallback.is_some() || r.client.nocopy != nocopy {
            failures += 1;
        }
        let mut v = stream_json(label, &r);
        v["stacks"] = stacks_json(&b);
        streams.push(v);
    }
    say!(out, "  (these rates include generating and checking every byte; `ism-sim bench` measures the transports alone)");
    say!(out);
    say!(
        out,
        "== 3. two processes on a process board (`ism-sim board`) =="
    );
    let process_failures = ism_sim::process::demo::run(bytes.min(64 << 20), out.text)
        .map_err(|e| Failure::Run(format!("process board: {e}")))?;
    failures += process_failures as usize;
    json_arg.emit(&json!({
        "command": "demo",
        "device": {
            "commands": s.commands, "moves": s.moves, "bytes_moved": s.bytes_moved,
            "moves_refused": s.moves_refused, "signals": s.signals, "events": s.events,
            "interrupts": s.interrupts, "checks_failed": device_failures,
        },
        "streams": streams,
        "process_board": { "checks_failed": process_failures },
        "trace": trace_json,
        "checks_failed": failures,
        "ok": failures == 0,
    }))?;
    if failures > 0 {
        return Err(Failure::Check(format!("{failures} check(s) failed")));
    }
    say!(out, "all checks passed");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn stream(
    trace: &TraceArg,
    json_arg: &JsonArg,
    board: BoardArg,
    nocopy: bool,
    opts: StreamOptions,
    buffer: u64,
    stats: bool,
) -> Result<(), Failure> {
    let out = Out {
        text: !json_arg.to_stdout(),
    };
    let kind = match board {
        BoardArg::Lpar => BoardKind::Lpar,
        BoardArg::Loopback => BoardKind::Loopback,
    };
    let b = smc_board(kind, nocopy, buffer, trace.trace.is_some(), opts.busy_poll)?;
    let r = run_stream(&b, opts)?;
    let label = format!("{board:?}{}", if nocopy { ", no-copy" } else { ", copy" }).to_lowercase();
    print_stream(&out, &label, &r);
    if let Some(reason) = r.client.fallback {
        say!(out, "  fell back to TCP: {reason}");
    }
    if stats {
        print_smc_stats(&out, &b, &r);
    }
    let trace_json = write_trace(&out, &trace.trace, &[(b.board(), "")])?;
    let failure = if !r.verified {
        Some(Failure::Check("stream data did not verify".into()))
    } else {
        r.client
            .fallback
            .map(|reason| Failure::Check(format!("the stream fell back to TCP: {reason}")))
    };
    let mut v = stream_json(&label, &r);
    v["command"] = json!("stream");
    v["options"] = json!({
        "chunk": opts.chunk, "buffer": buffer, "busy_poll": opts.busy_poll, "nocopy": nocopy,
    });
    v["trace"] = trace_json;
    v["stacks"] = stacks_json(&b);
    v["ok"] = json!(failure.is_none());
    json_arg.emit(&v)?;
    failure.map_or(Ok(()), Err)
}

fn info(partitions: u8, trace: &TraceArg, json_arg: &JsonArg) -> Result<(), Failure> {
    let out = Out {
        text: !json_arg.to_stdout(),
    };
    let cfg = BoardConfig {
        trace: trace.trace.is_some(),
        partition_memory: 1 << 20,
        ..BoardConfig::default()
    };
    let mut boards = Vec::new();
    let mut board_json = Vec::new();
    for (kind, n) in [
        (BoardKind::Lpar, partitions as usize),
        (BoardKind::Loopback, 1),
    ] {
        let board = SimBoard::build(kind, n, cfg.clone());
        say!(out, "{kind:?} board, CHID {:#06x}", board.chid());
        let mut functions = Vec::new();
        for p in board.partitions() {
            let d = p
                .probe(board.chid())
                .map_err(|e| Failure::Run(format!("probe: {e}")))?;
            let i = d
                .query_info()
                .map_err(|e| Failure::Run(format!("QUERY_INFO: {e}")))?;
            say!(out, "  function {}: QUERY_INFO", p.index());
            say!(
                out,
                "    version {}  max_len {}  GID {:#018x}",
                i.version,
                i.max_len,
                i.gid.0
            );
            say!(
                out,
                "    SBA {:#x}  IEQ {:#x} ({} bytes)",
                i.sba.0,
                i.ieq.0,
                i.ieq_len
            );
            say!(
                out,
                "    extensions {:?}  DMBs owned {}  used {}",
                i.features,
                i.dmbs_owned,
                i.dmbs_used
            );
            say!(
                out,
                "    VLAN required {}  VLAN ids {:x?}",
                i.vlan_required,
                i.vlans
            );
            functions.push(json!({
                "function": p.index(),
                "version": i.version,
                "max_len": i.max_len,
                "gid": format!("{:#018x}", i.gid.0),
                "sba": i.sba.0,
                "ieq": i.ieq.0,
                "ieq_len": i.ieq_len,
                "extensions": format!("{:?}", i.features),
                "dmbs_owned": i.dmbs_owned,
                "dmbs_used": i.dmbs_used,
                "vlan_required": i.vlan_required,
                "vlans": format!("{:x?}", i.vlans),
            }));
            d.remove();
        }
        board_json.push(json!({
            "board": format!("{kind:?}").to_lowercase(),
            "chid": board.chid(),
            "functions": functions,
        }));
        boards.push((board, kind));
    }
    let named: Vec<(&SimBoard, &str)> = boards
        .iter()
        .map(|(b, k)| {
            (
                b,
                if *k == BoardKind::Lpar {
                    "LPAR board: "
                } else {
                    "loopback board: "
                },
            )
        })
        .collect();
    let trace_json = write_trace(&out, &trace.trace, &named)?;
    json_arg.emit(&json!({ "command": "info", "boards": board_json, "trace": trace_json }))
}

fn bench(
    rounds: Option<u32>,
    quick: bool,
    json_arg: &JsonArg,
    svg: Option<PathBuf>,
    pin: ism_sim::bench::Pinning,
    no_progress: bool,
    only: Vec<String>,
) -> Result<(), Failure> {
    use ism_sim::bench::{run, BenchOptions};
    let mut opts = if quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    if let Some(n) = rounds {
        opts.rounds = n as usize;
    }
    opts.pinning = pin;
    opts.progress = !no_progress && std::io::stderr().is_terminal();
    opts.only = only;
    // `args_os`: an argument that is not UTF-8 (a file name) must not panic here.
    opts.command = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let r = run(&opts)?;
    let json_to_stdout = json_arg.to_stdout();
    if json_to_stdout {
        print!("{}", r.to_json());
    } else {
        print!("{}", r.table());
    }
    let files = [(
        json_arg.json.clone().filter(|_| !json_to_stdout),
        r.to_json(),
        "JSON",
    )];
    for (path, text, what) in files.into_iter().chain([(svg, r.to_svg(), "chart")]) {
        if let Some(path) = path {
            std::fs::write(&path, text)
                .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
            if !json_to_stdout {
                println!("{what} written to {}", path.display());
            }
        }
    }
    Ok(())
}

/// Checks that only the whole command line can tell (clap checks each value); a usage
/// error (exit 2) if it fails.
fn check_usage(c: &Command) -> Result<(), clap::Error> {
    if let Command::Stream {
        board: BoardArg::Lpar,
        nocopy: true,
        ..
    } = c
    {
        return Err(Cli::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            "--nocopy needs the loopback board (LPAR functions do not share memory): add --board loopback",
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo {
        bytes: DEMO_BYTES,
        trace: TraceArg::default(),
        json: JsonArg::default(),
    });
    if let Err(e) = check_usage(&command) {
        e.exit();
    }
    let r = match command {
        Command::Demo { bytes, trace, json } => demo(&trace, &json, bytes),
        Command::Stream {
            board,
            nocopy,
            bytes,
            chunk,
            buffer,
            busy_poll,
            stats,
            trace,
            json,
        } => {
            let opts = StreamOptions {
                bytes,
                chunk: chunk as usize,
                busy_poll,
                seed: 1,
            };
            stream(&trace, &json, board, nocopy, opts, buffer, stats)
        }
        Command::Soak {
            seconds,
            seed,
            workers,
            max_bytes,
            no_crashes,
            json,
        } => soak(seconds, seed, workers, max_bytes, !no_crashes, &json),
        Command::Info {
            partitions,
            trace,
            json,
        } => info(partitions, &trace, &json),
        Command::Bench {
            rounds,
            quick,
            json,
            svg,
            pin,
            no_progress,
            only,
        } => bench(rounds, quick, &json, svg, pin, no_progress, only),
        Command::Board(b) => ism_sim::process::cli::run(b).map_err(Failure::Run),
        Command::Run {
            board,
            nocopy,
            buffer,
            require_smc,
            peer_bell: _,
            no_peer_bell,
            busy_poll,
            program,
        } => Err(ism_sim::process::run::run(
            &ism_sim::process::run::RunOptions {
                board,
                nocopy,
                buffer,
                require_smc,
                peer_bell: !no_peer_bell,
                busy_poll,
                program,
            },
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ism-sim: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
