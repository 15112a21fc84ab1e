//! `ism-sim board ...`: run a process board in the foreground, or query one.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use clap::{Args, Subcommand, ValueEnum};

use super::board::{BoardOptions, ProcessBoard, MAX_PROCESS_FUNCTIONS};
use crate::board::BoardKind;

/// Which kind of process board.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    /// Each attached process is its own partition with its own memory.
    Lpar,
    /// All attached processes share one partition memory (no-copy attach works).
    Loopback,
}

/// `ism-sim board`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BoardCli {
    /// A query instead of running a board.
    #[command(subcommand)]
    pub query: Option<BoardQuery>,
    /// Kind of board.
    #[arg(long, value_enum, default_value_t = KindArg::Lpar)]
    pub kind: KindArg,
    /// Name hosts attach by (default: the kind's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Most processes attached at once (1..=32).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=MAX_PROCESS_FUNCTIONS as i64))]
    pub max_functions: u16,
    /// Partition memory per function in MiB (1..=65536).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub memory_mib: u32,
    /// Permission bits of the board's socket, in octal (e.g. 660: the socket's group may
    /// attach, 666: every local user). Default: as the umask leaves them, so that only the
    /// board's user may attach.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
}

/// An octal permission mode, `0..=777` (a leading `0` or `0o` is allowed).
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{s:?} is not a permission mode: give 0 to 777 in octal, e.g. 660 or 666"
        )),
    }
}

/// Queries of a running board.
#[derive(Subcommand, Debug)]
pub enum BoardQuery {
    /// Show a running board: functions, GIDs, counters.
    Status {
        /// The board's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach this process to a board and serve SMC-D connections: every byte received is
    /// checked against the pattern `send` writes; one line per connection.
    Serve {
        /// The board's name.
        name: String,
        /// TCP address to listen on (CLC handshake).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Stop after this many connections (0: never).
        #[arg(long, default_value_t = 0)]
        connections: u64,
        /// Offer no-copy (loopback board).
        #[arg(long)]
        nocopy: bool,
    },
    /// Attach this process to a board, connect to a `serve` and send the pattern.
    Send {
        /// The board's name.
        name: String,
        /// The server's address (as `serve` printed it).
        addr: String,
        /// Bytes to send, with K, M, G or T (powers of 1024); 0: until the connection fails.
        #[arg(long, default_value = "64M", value_parser = crate::apps::cli::size_in(0, u64::MAX))]
        bytes: u64,
        /// Send without copying (loopback board).
        #[arg(long)]
        nocopy: bool,
    },
    /// Attach this process to a board and hold the function until standard input closes.
    Attach {
        /// The board's name.
        name: String,
    },
    /// The server process of a cross-process `ism-sim bench` cell.
    #[command(hide = true)]
    BenchPeer(super::bench::PeerArgs),
}

/// Byte `pos` of the stream `send` writes and `serve` checks.
pub fn pattern(pos: u64) -> u8 {
    (pos as u8).wrapping_mul(31) ^ (pos >> 11) as u8
}

fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn stack_cfg(nocopy: bool) -> ism_host_driver::smcd::StackConfig {
    ism_host_driver::smcd::StackConfig {
        nocopy,
        ..Default::default()
    }
}

fn serve(name: &str, listen: &str, connections: u64, nocopy: bool) -> Result<(), String> {
    use std::io::Read as _;
    let a = super::attach(name).map_err(|e| e.to_string())?;
    let stack = a.smc_stack(stack_cfg(nocopy)).map_err(|e| e.to_string())?;
    let l = ism_host_driver::smcd::Listener::bind(&stack, listen).map_err(|e| e.to_string())?;
    say(&format!(
        "listening on {} (board {name}, function {}, gid {:#018x})",
        l.local_addr().map_err(|e| e.to_string())?,
        a.raw().function(),
        a.gid().0
    ));
    let mut n = 0u64;
    while connections == 0 || n < connections {
        let (mut s, peer) = match l.accept() {
            Ok(x) => x,
            Err(e) => return Err(format!("accept: {e}")),
        };
        n += 1;
        let smc = s.is_smc();
        let mut pos = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(k) => {
                    if let Some(i) = (0..k).find(|&i| buf[i] != pattern(pos + i as u64)) {
                        break Err(format!("WRONG BYTE at {}", pos + i as u64));
                    }
                    pos += k as u64;
                }
                Err(e) => break Err(format!("{e} ({:?})", e.kind())),
            }
        };
        match end {
            Ok(()) => say(&format!(
                "connection {n} from {peer}: smc {smc}: {pos} bytes verified, closed by the peer"
            )),
            Err(e) => say(&format!(
                "connection {n} from {peer}: smc {smc}: {pos} bytes verified, then error: {e}"
            )),
        }
    }
    a.detach();
    Ok(())
}

fn send(name: &str, addr: &str, bytes: u64, nocopy: bool) -> Result<(), String> {
    use std::io::Write as _;
    let a = super::attach(name).map_err(|e| e.to_string())?;
    let stack = a.smc_stack(stack_cfg(nocopy)).map_err(|e| e.to_string())?;
    let mut s = ism_host_driver::smcd::Stream::connect(&stack, addr).map_err(|e| e.to_string())?;
    say(&format!(
        "connected to {addr}: smc {} (board {name}, function {}, gid {:#018x})",
        s.is_smc(),
        a.raw().function(),
        a.gid().0
    ));
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64_000];
    let r = loop {
        if bytes != 0 && pos >= bytes {
            break Ok(());
        }
        let k = if bytes == 0 {
            buf.len() as u64
        } else {
            (bytes - pos).min(buf.len() as u64)
        };
        for (i, b) in buf[..k as usize].iter_mut().enumerate() {
            *b = pattern(pos + i as u64);
        }
        if let Err(e) = s.write_all(&buf[..k as usize]) {
            break Err(format!("{e} ({:?})", e.kind()));
        }
        pos += k;
    };
    drop(s);
    match r {
        Ok(()) => {
            say(&format!("sent {pos} bytes"));
            a.detach();
            Ok(())
        }
        Err(e) => Err(format!("after {pos} bytes: {e}")),
    }
}

fn hold(name: &str) -> Result<(), String> {
    use std::io::Read as _;
    let a = super::attach(name).map_err(|e| e.to_string())?;
    say(&format!(
        "attached to board {name}: function {}, gid {:#018x}",
        a.raw().function(),
        a.gid().0
    ));
    // Until standard input closes, or the board goes away.
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    let lost = tx.clone();
    a.raw().on_board_lost(Box::new(move || {
        let _ = lost.send(false);
    }));
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(true);
    });
    if rx.recv() == Ok(true) {
        a.detach();
        Ok(())
    } else {
        Err(format!("board {name} went away"))
    }
}

/// Writes `text` to standard output. A reader that went away (`| head`) ends the output
/// quietly, as it ends other tools', instead of a panic.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

/// Runs `ism-sim board ...`.
///
/// # Errors
/// A readable message.
pub fn run(cli: BoardCli) -> Result<(), String> {
    match cli.query {
        Some(BoardQuery::Status { name, json }) => {
            let v = super::board_status(&name).map_err(|e| e.to_string())?;
            let text = if json {
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n"
            } else {
                status_text(&v)
            };
            return emit(&text);
        }
        Some(BoardQuery::Serve {
            name,
            listen,
            connections,
            nocopy,
        }) => return serve(&name, &listen, connections, nocopy),
        Some(BoardQuery::Send {
            name,
            addr,
            bytes,
            nocopy,
        }) => return send(&name, &addr, bytes, nocopy),
        Some(BoardQuery::Attach { name }) => return hold(&name),
        Some(BoardQuery::BenchPeer(a)) => return super::bench::run_peer(&a),
        None => {}
    }
    let kind = match cli.kind {
        KindArg::Lpar => BoardKind::Lpar,
        KindArg::Loopback => BoardKind::Loopback,
    };
    let name = cli.name.unwrap_or_else(|| {
        match kind {
            BoardKind::Lpar => "lpar",
            BoardKind::Loopback => "loopback",
        }
        .to_owned()
    });
    let mut opts = BoardOptions::new(&name, kind);
    opts.max_functions = usize::from(cli.max_functions);
    opts.memory = (cli.memory_mib as usize).saturating_mul(1 << 20);
    opts.socket_mode = cli.socket_mode;
    // SIGINT/SIGTERM write to this socket pair; the board's poll loop sees it.
    let (rx, tx) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let tx = tx.try_clone().map_err(|e| format!("socketpair: {e}"))?;
        signal_hook::low_level::pipe::register(sig, tx).map_err(|e| format!("signal: {e}"))?;
    }
    // Keep other processes of the same user out of the board's /proc entries (and so out
    // of its memory objects).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let board = ProcessBoard::start(opts).map_err(|e| e.to_string())?;
    board.run(rx.as_fd()).map_err(|e| e.to_string())
}

/// `board status` as text: the board, its functions, DMBs and counters.
fn status_text(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = |k: &str| v[k].to_string().trim_matches('"').to_owned();
    let _ = writeln!(
        out,
        "board {} ({}, pid {}, CHID {}, spec version {}, up {} s)",
        s("name"),
        s("kind"),
        s("pid"),
        s("chid"),
        s("spec_version"),
        s("uptime_secs")
    );
    let fns = v["functions"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "functions: {} of {} attached",
        fns.len(),
        s("max_functions")
    );
    let _ = writeln!(
        out,
        "  {:>3}  {:<20} {:>8}  {:>8}",
        "fn", "gid", "pid", "online"
    );
    for f in &fns {
        let _ = writeln!(
            out,
            "  {:>3}  {:<20} {:>8}  {:>8}",
            f["function"].to_string(),
            f["gid"].as_str().unwrap_or("?"),
            f["pid"].to_string(),
            f["online"].to_string()
        );
    }
    let _ = writeln!(out, "DMBs in use: {}", v["dmbs_in_use"]);
    let dmbs = v["dmbs"].as_array().cloned().unwrap_or_default();
    if !dmbs.is_empty() {
        let _ = writeln!(
            out,
            "  {:<20} {:>5} {:>8} {:>5}  {:<20} {:<6} {:<12}",
            "token", "owner", "len", "idx", "writer", "direct", "attached by"
        );
    }
    for d in &dmbs {
        let attached: Vec<String> = d["attached_by"]
            .as_array()
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} {:>5} {:>8} {:>5}  {:<20} {:<6} {:<12}{}",
            d["token"].as_str().unwrap_or("?"),
            d["owner"].to_string(),
            d["len"].to_string(),
            d["sba_idx"].to_string(),
            d["writer"].as_str().unwrap_or("?"),
            if d["direct"] == true { "yes" } else { "no" },
            if attached.is_empty() {
                "-".to_owned()
            } else {
                attached.join(",")
            },
            if d["unregistered"] == true {
                " (unregistered)"
            } else {
                ""
            }
        );
    }
    if let Some(c) = v["counters"].as_object() {
        let line: Vec<String> = c.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "counters: {}", line.join(", "));
    }
    if let Some(c) = v["names"].as_object() {
        let line: Vec<String> = c.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "name service: {}", line.join(", "));
    }
    out
}
