//! The process-board part of `ism-sim demo`: a board and two host processes that talk
//! over it (verified bytes), then a host killed mid-stream whose peer is told.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bench::ism_sim_exe;
use super::local::LocalBoard;
use crate::board::BoardKind;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Host {
    child: Child,
    lines: mpsc::Receiver<String>,
    who: &'static str,
    /// Echo the process's lines on stdout (off when stdout carries JSON).
    text: bool,
}

impl Host {
    fn spawn(
        board: &LocalBoard,
        args: &[&str],
        who: &'static str,
        text: bool,
    ) -> Result<Self, String> {
        let exe = ism_sim_exe().ok_or("the ism-sim executable was not found")?;
        let mut child = Command::new(exe)
            .arg("board")
            .args(args)
            .env(super::DIR_ENV, board.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {who}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            who,
            text,
        })
    }

    /// The next line containing `needle`, echoed with the process's name.
    fn line(&self, needle: &str) -> Result<String, String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if self.text {
                        println!("  [{} pid {}] {l}", self.who, self.child.id());
                    }
                    if l.contains(needle) {
                        return Ok(l);
                    }
                }
                Err(_) => return Err(format!("{}: no line with {needle:?}", self.who)),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit by itself; returns whether it succeeded.
    fn exit_ok(mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return false,
            }
        }
        false
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Runs the demo: returns the number of failed checks. `text`: print each step and the
/// processes' lines on stdout (off when stdout carries the demo's JSON).
///
/// # Errors
/// A setup failure (no executable, no board).
pub fn run(bytes: u64, text: bool) -> Result<u32, String> {
    let mut failures = 0;
    let mut check = |ok: bool, what: &str| {
        if text {
            println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        }
        if !ok {
            failures += 1;
        }
    };
    let log: Box<dyn std::io::Write + Send> = if text {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::sink())
    };
    let board = LocalBoard::start(BoardKind::Lpar, 4, 64 << 20, log)?;
    let name = board.name().to_owned();
    let server = Host::spawn(
        &board,
        &["serve", &name, "--connections", "2"],
        "server",
        text,
    )?;
    let addr = server.line("listening on ")?;
    let addr = addr
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    let b = bytes.to_string();
    let client = Host::spawn(
        &board,
        &["send", &name, &addr, "--bytes", &b],
        "client",
        text,
    )?;
    let c = client.line("connected")?;
    check(
        c.contains("smc true"),
        "the client process connected over SMC-D",
    );
    client.line("sent")?;
    let s = server.line("connection 1")?;
    check(
        s.contains(&format!("{bytes} bytes verified, closed by the peer")),
        "every byte arrived in the server process, verified",
    );
    check(client.exit_ok(), "the client process detached and exited");
    let mut victim = Host::spawn(
        &board,
        &["send", &name, &addr, "--bytes", "0"],
        "client 2",
        text,
    )?;
    victim.line("connected")?;
    std::thread::sleep(Duration::from_millis(200));
    if text {
        println!("  SIGKILL client 2 (pid {}) mid-stream", victim.child.id());
    }
    let t = Instant::now();
    victim.kill();
    let s = server.line("connection 2")?;
    check(
        s.contains("then error") && !s.contains("WRONG"),
        "the server's connection ended with an error, no wrong byte",
    );
    check(
        t.elapsed() < Duration::from_secs(5),
        &format!("the peer was told within {:.0?}", t.elapsed()),
    );
    let st = super::board_status_in(board.dir(), &name).map_err(|e| e.to_string())?;
    check(
        st["counters"]["crashes"] == 1,
        "the board counted one partition crash and keeps serving",
    );
    check(server.exit_ok(), "the server process detached and exited");
    drop(board);
    Ok(failures)
}
