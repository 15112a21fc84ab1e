//! `ism-sim`: run the ISM device and SMC-D on a simulated board.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ism_host_driver::smcd::StackConfig;
use ism_sim::board::{BoardConfig, BoardKind, SimBoard};
use ism_sim::demo::run_device_demo;
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;
use ism_sim::workload::{run_stream, StreamOptions, StreamReport};

/// Largest `--bytes` of a stream or the demo.
const MAX_BYTES: u64 = 16 << 30;
/// Largest `stream --chunk` (one write buffer is allocated of this size).
const MAX_CHUNK: i64 = 16 << 20;
/// Smallest and largest `stream --buffer` (what an RMB can be).
const MIN_BUFFER: i64 = 16 << 10;
/// Largest `stream --buffer`.
const MAX_BUFFER: i64 = 1 << 20;
/// Longest soak.
const MAX_SOAK_SECONDS: u64 = 7 * 24 * 3600;
/// Most soak workers per board (each runs a client and a server thread).
const MAX_WORKERS: i64 = 64;
/// Largest soak connection.
const MAX_SOAK_BYTES: u64 = 1 << 30;
/// Most bench rounds.
const MAX_ROUNDS: i64 = 1000;

fn bytes_arg() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_BYTES)
}

/// Run the ISM device (and SMC-D on top of it) on a simulated IBM Z board.
#[derive(Parser, Debug)]
#[command(name = "ism-sim", version, about)]
struct Cli {
    /// Write a Chrome/Perfetto trace (JSON) of commands, moves, interrupts and events.
    #[arg(long, global = true, value_name = "FILE")]
    trace: Option<PathBuf>,

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

#[derive(Subcommand, Debug)]
enum Command {
    /// The tour (default): the ISM device between two LPARs step by step, then SMC-D
    /// streams on the LPAR board and on the loopback board (copy and no-copy), every byte
    /// verified, with their throughput.
    Demo {
        /// Bytes per demo stream (1 to 16 GiB).
        #[arg(long, default_value_t = 64 << 20, value_parser = bytes_arg())]
        bytes: u64,
    },
    /// Run one SMC-D stream (client to server, every byte verified) and print throughput.
    Stream {
        /// Board to run on.
        #[arg(long, value_enum, default_value_t = BoardArg::Lpar)]
        board: BoardArg,
        /// Send without copying (attach the peer's DMB; loopback board only).
        #[arg(long)]
        nocopy: bool,
        /// Bytes to send (1 to 16 GiB).
        #[arg(long, default_value_t = 256 << 20, value_parser = bytes_arg())]
        bytes: u64,
        /// Bytes per write (1 to 16 MiB).
        #[arg(long, default_value_t = 64_000, value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNK))]
        chunk: u32,
        /// RMB (DMB) size in bytes (16 KiB to 1 MiB; rounded to 16 KiB × 2^n).
        #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(MIN_BUFFER..=MAX_BUFFER))]
        buffer: u32,
        /// Busy-poll instead of blocking on interrupts.
        #[arg(long)]
        busy_poll: bool,
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
        /// Largest connection in bytes (1 to 1 GiB).
        #[arg(long, default_value_t = 2 << 20, value_parser = clap::value_parser!(u64).range(1..=MAX_SOAK_BYTES))]
        max_bytes: u64,
        /// Do not crash partitions.
        #[arg(long)]
        no_crashes: bool,
    },
    /// Print QUERY_INFO of every function of an LPAR board and of the loopback board.
    Info {
        /// Number of LPAR partitions.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
        partitions: u8,
    },
    /// Measure TCP loopback, UNIX sockets and SMC-D (LPAR copy, loopback copy, loopback
    /// no-copy) side by side: message rate, bandwidth and ping-pong latency (blocking and
    /// busy-poll), plus this machine's memcpy and cache-line limits.
    Bench {
        /// Rounds (medians are over rounds; default 5, with --quick 2).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_ROUNDS))]
        rounds: Option<u32>,
        /// A short run (a few seconds).
        #[arg(long)]
        quick: bool,
        /// Machine-readable results: `--json` prints JSON instead of the table,
        /// `--json FILE` writes it to FILE and still prints the table.
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
        json: Option<PathBuf>,
        /// Also write a bar chart (SVG) to FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Where client and server threads run.
        #[arg(long, value_enum, default_value_t = ism_sim::bench::Pinning::Cross)]
        pin: ism_sim::bench::Pinning,
        /// No progress bar on stderr.
        #[arg(long)]
        no_progress: bool,
        /// Only these metrics and/or transports (for profiling one cell), e.g.
        /// `--only bandwidth,smcd_lo_nocopy`. Metrics: msg_rate, bandwidth,
        /// latency_blocking, latency_busy_poll; transports: tcp, unix, smcd_lpar, smcd_lo,
        /// smcd_lo_nocopy.
        #[arg(long, value_delimiter = ',', value_name = "KEYS")]
        only: Vec<String>,
    },
    /// Run a board as a device process that other processes attach to
    /// (`ism_sim::process::attach`), or show a running board's state (`board status NAME`).
    Board(ism_sim::process::cli::BoardCli),
}

fn write_trace(path: &Option<PathBuf>, board: &SimBoard) -> Result<(), String> {
    if let (Some(path), Some(t)) = (path, board.tracer()) {
        std::fs::write(path, t.to_json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!(
            "trace: {} events written to {}",
            t.events().len(),
            path.display()
        );
    }
    Ok(())
}

fn smc_board(
    kind: BoardKind,
    nocopy: bool,
    buffer: u32,
    trace: bool,
    busy_poll: bool,
) -> Result<SmcBoard, String> {
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
    SmcBoard::start(kind, 2, board_cfg, irq, stack_cfg).map_err(|e| format!("board: {e}"))
}

fn print_stream(label: &str, r: &StreamReport) {
    let c = &r.client.conn;
    println!(
        "  {label:<22} {:>8.1} MiB in {:>7.3} s = {:>8.1} MiB/s  verified {}  ({} store-blocks of data, {} CDCs, {} signals at the receiver)",
        r.bytes as f64 / (1 << 20) as f64,
        r.elapsed.as_secs_f64(),
        r.bytes_per_sec() / (1 << 20) as f64,
        if r.verified { "yes" } else { "NO" },
        c.data_moves,
        c.cdc_sent,
        r.server.conn.signals,
    );
}

fn soak(
    seconds: u64,
    seed: u64,
    workers: u16,
    max_bytes: u64,
    crashes: bool,
) -> Result<(), String> {
    let opts = ism_sim::soak::SoakOptions {
        duration: std::time::Duration::from_secs(seconds),
        seed,
        workers: usize::from(workers.max(1)),
        max_bytes: max_bytes.max(1),
        crashes,
        ..Default::default()
    };
    println!(
        "soak: {seconds} s, seed {seed}, {} workers per board, up to {} bytes per connection, crashes {}",
        opts.workers,
        opts.max_bytes,
        if crashes { "on" } else { "off" }
    );
    let r = ism_sim::soak::run_soak(&opts)?;
    println!("{}", r.summary());
    if r.corruptions > 0 {
        return Err(format!("{} corrupted connection(s)", r.corruptions));
    }
    if r.verified == 0 {
        return Err("no connection was verified".into());
    }
    Ok(())
}

fn demo(trace: &Option<PathBuf>, bytes: u64) -> Result<(), String> {
    println!("== 1. the ISM device between two LPARs ==");
    let r = run_device_demo(trace.is_some());
    print!("{}", r.log);
    let s = r.board.stats();
    println!(
        "device: {} commands, {} store-blocks ({} bytes), {} refused, {} DMB signals, {} events, {} interrupts",
        s.commands, s.moves, s.bytes_moved, s.moves_refused, s.signals, s.events, s.interrupts
    );
    write_trace(trace, &r.board)?;
    let mut failures = r.failures;
    println!();
    println!(
        "== 2. SMC-D streams (CLC handshake over TCP, data through DMBs), {bytes} bytes each =="
    );
    let runs = [
        ("LPAR, copy", BoardKind::Lpar, false),
        ("loopback, copy", BoardKind::Loopback, false),
        ("loopback, no-copy", BoardKind::Loopback, true),
    ];
    for (label, kind, nocopy) in runs {
        let b = smc_board(kind, nocopy, 1 << 20, false, false)?;
        let opts = StreamOptions {
            bytes,
            ..StreamOptions::default()
        };
        let r = run_stream(&b, opts)?;
        print_stream(label, &r);
        if !r.verified || r.client.fallback.is_some() || r.client.nocopy != nocopy {
            failures += 1;
        }
    }
    println!("  (these rates include generating and checking every byte; `ism-sim bench` measures the transports alone)");
    println!();
    println!("== 3. two processes on a process board (`ism-sim board`) ==");
    failures += ism_sim::process::demo::run(bytes.min(64 << 20))? as usize;
    if failures > 0 {
        return Err(format!("{failures} check(s) failed"));
    }
    println!("all checks passed");
    Ok(())
}

fn stream(
    trace: &Option<PathBuf>,
    board: BoardArg,
    nocopy: bool,
    opts: StreamOptions,
    buffer: u32,
) -> Result<(), String> {
    let kind = match board {
        BoardArg::Lpar => BoardKind::Lpar,
        BoardArg::Loopback => BoardKind::Loopback,
    };
    if nocopy && kind == BoardKind::Lpar {
        return Err(
            "--nocopy needs the loopback board (LPAR functions do not share memory)".into(),
        );
    }
    let b = smc_board(kind, nocopy, buffer, trace.is_some(), opts.busy_poll)?;
    let r = run_stream(&b, opts)?;
    let label = format!("{board:?}{}", if nocopy { ", no-copy" } else { ", copy" }).to_lowercase();
    print_stream(&label, &r);
    if let Some(reason) = r.client.fallback {
        println!("  fell back to TCP: {reason}");
    }
    write_trace(trace, b.board())?;
    if !r.verified {
        return Err("stream data did not verify".into());
    }
    Ok(())
}

fn info(partitions: u8, trace: &Option<PathBuf>) -> Result<(), String> {
    let cfg = BoardConfig {
        trace: trace.is_some(),
        partition_memory: 1 << 20,
        ..BoardConfig::default()
    };
    for (kind, n) in [
        (BoardKind::Lpar, partitions as usize),
        (BoardKind::Loopback, 1),
    ] {
        let board = SimBoard::build(kind, n, cfg.clone());
        println!("{kind:?} board, CHID {:#06x}", board.chid());
        for p in board.partitions() {
            let d = p.probe(board.chid()).map_err(|e| format!("probe: {e}"))?;
            let i = d.query_info().map_err(|e| format!("QUERY_INFO: {e}"))?;
            println!("  function {}: QUERY_INFO", p.index());
            println!(
                "    version {}  max_len {}  GID {:#018x}",
                i.version, i.max_len, i.gid.0
            );
            println!(
                "    SBA {:#x}  IEQ {:#x} ({} bytes)",
                i.sba.0, i.ieq.0, i.ieq_len
            );
            println!(
                "    extensions {:?}  DMBs owned {}  used {}",
                i.features, i.dmbs_owned, i.dmbs_used
            );
            println!(
                "    VLAN required {}  VLAN ids {:x?}",
                i.vlan_required, i.vlans
            );
            d.remove();
        }
        write_trace(trace, &board)?;
    }
    Ok(())
}

fn bench(
    rounds: Option<u32>,
    quick: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    pin: ism_sim::bench::Pinning,
    no_progress: bool,
    only: Vec<String>,
) -> Result<(), String> {
    use ism_sim::bench::{run, BenchOptions, Metric, Transport};
    let known = || {
        Metric::ALL
            .iter()
            .map(|m| m.key())
            .chain(Transport::ALL.iter().map(|t| t.key()))
    };
    if let Some(bad) = only.iter().find(|k| !known().any(|x| x == k.as_str())) {
        return Err(format!(
            "--only: unknown key {bad:?} (known: {})",
            known().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut opts = if quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    if let Some(n) = rounds {
        opts.rounds = n as usize;
    }
    opts.pinning = pin;
    opts.progress = !no_progress;
    opts.only = only;
    // `args_os`: an argument that is not UTF-8 (a file name) must not panic here.
    opts.command = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let r = run(&opts)?;
    let json_to_stdout = json.as_deref() == Some(std::path::Path::new("-"));
    if json_to_stdout {
        print!("{}", r.to_json());
    } else {
        print!("{}", r.table());
    }
    let files = [(json.filter(|_| !json_to_stdout), r.to_json(), "JSON")];
    for (path, text, what) in files.into_iter().chain([(svg, r.to_svg(), "chart")]) {
        if let Some(path) = path {
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            if !json_to_stdout {
                println!("{what} written to {}", path.display());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command.unwrap_or(Command::Demo { bytes: 64 << 20 }) {
        Command::Demo { bytes } => demo(&cli.trace, bytes),
        Command::Stream {
            board,
            nocopy,
            bytes,
            chunk,
            buffer,
            busy_poll,
        } => {
            let opts = StreamOptions {
                bytes,
                chunk: chunk as usize,
                busy_poll,
                seed: 1,
            };
            stream(&cli.trace, board, nocopy, opts, buffer)
        }
        Command::Soak {
            seconds,
            seed,
            workers,
            max_bytes,
            no_crashes,
        } => soak(seconds, seed, workers, max_bytes, !no_crashes),
        Command::Info { partitions } => info(partitions, &cli.trace),
        Command::Bench {
            rounds,
            quick,
            json,
            svg,
            pin,
            no_progress,
            only,
        } => bench(rounds, quick, json, svg, pin, no_progress, only),
        Command::Board(b) => ism_sim::process::cli::run(b),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ism-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
