//! `ism-sim`: run the ISM device and SMC-D on a simulated board.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ism_sim::board::{Board, BoardConfig, BoardKind};
use ism_sim::demo::run_device_demo;

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

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot an LPAR board, probe both partitions and move and signal data both ways,
    /// verifying every step (the default).
    Demo,
    /// Print QUERY_INFO of every function of an LPAR board and of the loopback board.
    Info {
        /// Number of LPAR partitions.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
        partitions: u8,
    },
}

fn write_trace(path: &Option<PathBuf>, board: &Board) -> Result<(), String> {
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

fn demo(trace: &Option<PathBuf>) -> Result<(), String> {
    println!("== ism-sim demo: the ISM device between two LPARs ==");
    let r = run_device_demo(trace.is_some());
    print!("{}", r.log);
    let s = r.board.stats();
    println!(
        "device: {} commands, {} store-blocks ({} bytes), {} refused, {} DMB signals, {} events, {} interrupts",
        s.commands, s.moves, s.bytes_moved, s.moves_refused, s.signals, s.events, s.interrupts
    );
    write_trace(trace, &r.board)?;
    if r.failures > 0 {
        return Err(format!("{} check(s) failed", r.failures));
    }
    println!("all checks passed");
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
        let board = Board::build(kind, n, cfg.clone());
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => demo(&cli.trace),
        Command::Info { partitions } => info(partitions, &cli.trace),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ism-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
