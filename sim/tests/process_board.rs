//! Process boards end to end: boards and hosts as separate processes (`ism-sim board`,
//! `ism-sim board serve|send|attach`), plus this test process attaching as a host itself.
//! Every wait is bounded; every child is reaped; every board's socket and lock file must be
//! gone after it stops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ism_host_driver::ism::{Bus, BusError, HostMemory};
use ism_sim::process::{self, AttachError};

const BIN: &str = env!("CARGO_BIN_EXE_ism-sim");
const WAIT: Duration = Duration::from_secs(20);

/// A fresh directory for board sockets, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ism-sim-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    what: String,
}

fn lines_of(out: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// `ism-sim ARGS` with `dir` as its board directory and every standard stream piped.
fn ism_sim(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("ISM_SIM_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

impl Proc {
    fn spawn(dir: &Path, args: &[&str], what: &str) -> Self {
        let mut child = ism_sim(dir, args).spawn().expect("spawn ism-sim");
        let lines = lines_of(child.stdout.take().unwrap());
        Self {
            child,
            lines,
            what: what.to_owned(),
        }
    }

    /// The next stdout line that contains `needle` (bounded).
    fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("{}: no line with {needle:?} ({e:?})", self.what),
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        let _ = rustix::process::kill_process(pid, sig);
    }

    /// Waits (bounded) for the exit; returns (success, stderr).
    fn wait(mut self) -> (bool, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (st.success(), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A board process.
struct BoardProc {
    p: Option<Proc>,
    dir: PathBuf,
    name: String,
}

impl BoardProc {
    fn start(dir: &Dir, kind: &str, name: &str, max: usize) -> Self {
        Self::start_with(dir, kind, name, max, &[])
    }

    /// As [`BoardProc::start`], with more `ism-sim board` options.
    fn start_with(dir: &Dir, kind: &str, name: &str, max: usize, more: &[&str]) -> Self {
        let max = max.to_string();
        let mut args = vec![
            "board",
            "--kind",
            kind,
            "--name",
            name,
            "--max-functions",
            &max,
            "--memory-mib",
            "32",
        ];
        args.extend_from_slice(more);
        let p = Proc::spawn(&dir.0, &args, &format!("board {name}"));
        let sock = process::socket_path(&dir.0, name);
        let deadline = Instant::now() + WAIT;
        while process::board_status_in(&dir.0, name).is_err() {
            assert!(Instant::now() < deadline, "board {name} never came up");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(sock.exists());
        Self {
            p: Some(p),
            dir: dir.0.clone(),
            name: name.to_owned(),
        }
    }

    fn pid(&self) -> i32 {
        self.p.as_ref().unwrap().pid()
    }

    fn status(&self) -> serde_json::Value {
        process::board_status_in(&self.dir, &self.name).expect("status")
    }

    /// SIGTERM; returns the board's log. Checks a clean exit and that nothing is left.
    fn stop(mut self) -> String {
        let p = self.p.take().unwrap();
        p.signal(rustix::process::Signal::TERM);
        let (ok, log) = p.wait();
        assert!(ok, "board exited with an error: {log}");
        assert!(
            !process::socket_path(&self.dir, &self.name).exists(),
            "socket left"
        );
        assert!(
            !process::lock_path(&self.dir, &self.name).exists(),
            "lock file left"
        );
        log
    }

    /// SIGKILL; returns the log so far.
    fn kill(mut self) -> String {
        let p = self.p.take().unwrap();
        p.signal(rustix::process::Signal::KILL);
        p.wait().1
    }
}

impl Drop for BoardProc {
    fn drop(&mut self) {
        if let Some(p) = self.p.take() {
            p.signal(rustix::process::Signal::KILL);
            let _ = p.wait();
        }
    }
}

fn serve(dir: &Dir, board: &str, nocopy: bool) -> (Proc, String) {
    let mut args = vec!["board", "serve", board];
    if nocopy {
        args.push("--nocopy");
    }
    let p = Proc::spawn(&dir.0, &args, "server");
    let l = p.expect_line("listening on ");
    let addr = l.split_whitespace().nth(2).unwrap().to_owned();
    (p, addr)
}

fn send(dir: &Dir, board: &str, addr: &str, bytes: u64, nocopy: bool) -> Proc {
    let bytes = bytes.to_string();
    let mut args = vec!["board", "send", board, addr, "--bytes", &bytes];
    if nocopy {
        args.push("--nocopy");
    }
    Proc::spawn(&dir.0, &args, "client")
}

fn stream_between_processes(kind: &str, nocopy: bool) {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, kind, "b", 4);
    let (server, addr) = serve(&dir, "b", nocopy);
    let client = send(&dir, "b", &addr, 24 << 20, nocopy);
    client.expect_line("smc true");
    client.expect_line("sent 25165824 bytes");
    let (ok, err) = client.wait();
    assert!(ok, "{err}");
    let l = server.expect_line("connection 1");
    assert!(
        l.contains("smc true: 25165824 bytes verified, closed by the peer"),
        "{l}"
    );
    let s = board.status();
    let moved = s["counters"]["bytes_moved"].as_u64().unwrap();
    if nocopy {
        // Data went through the attached DMB; only CDC messages were moved, by the hosts
        // themselves (direct moves, spec 5.5), each signalled.
        assert!(moved < 1 << 20, "{s}");
        let direct = s["counters"]["direct_moves"].as_u64().unwrap();
        assert!(direct > 0, "{s}");
        assert!(s["counters"]["direct_signals"].as_u64().unwrap() > 0, "{s}");
    } else {
        assert!(moved >= 24 << 20, "{s}");
    }
    assert_eq!(s["functions"].as_array().unwrap().len(), 1, "{s}");
    drop(server);
    let log = board.stop();
    assert!(log.contains("attach: function 1"), "{log}");
}

#[test]
fn lpar_board_streams_verified_bytes_between_two_processes() {
    stream_between_processes("lpar", false);
}

#[test]
fn loopback_board_streams_between_two_processes() {
    stream_between_processes("loopback", false);
}

#[test]
fn loopback_board_no_copy_works_between_two_processes() {
    stream_between_processes("loopback", true);
}

/// SIGKILL of a sending host mid-stream: the board logs a crash at once, the receiving
/// process's connection ends with an error (never a hang, never a wrong byte), the board
/// keeps serving, and the same program started again attaches and streams again.
fn sigkill_mid_stream(kind: &str) {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, kind, "k", 4);
    let (server, addr) = serve(&dir, "k", false);
    let client = send(&dir, "k", &addr, 0, false);
    client.expect_line("smc true");
    // Wait until data flows.
    let deadline = Instant::now() + WAIT;
    while board.status()["counters"]["signals"].as_u64().unwrap() < 20 {
        assert!(Instant::now() < deadline, "no data moved");
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    client.signal(rustix::process::Signal::KILL);
    let _ = client.wait();
    let l = server.expect_line("connection 1");
    assert!(l.contains("then error"), "{l}");
    assert!(!l.contains("WRONG"), "{l}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "noticed late: {:?}",
        t.elapsed()
    );
    let s = board.status();
    assert_eq!(s["counters"]["crashes"], 1, "{s}");
    // A restarted host attaches again (a new partition boot) and streams.
    let again = send(&dir, "k", &addr, 1 << 20, false);
    again.expect_line("sent 1048576 bytes");
    assert!(again.wait().0);
    let l = server.expect_line("connection 2");
    assert!(
        l.contains("1048576 bytes verified, closed by the peer"),
        "{l}"
    );
    drop(server);
    let log = board.stop();
    assert!(log.contains("crash: function 1"), "{log}");
    assert!(log.contains("hung up without BYE"), "{log}");
}

#[test]
fn sigkill_mid_stream_on_lpar_is_a_partition_crash() {
    sigkill_mid_stream("lpar");
}

#[test]
fn sigkill_mid_stream_on_loopback_is_a_partition_crash() {
    sigkill_mid_stream("loopback");
}

#[test]
fn sixteen_processes_attach_and_one_more_is_refused_clearly() {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "many", 16);
    let hosts: Vec<Proc> = (0..16)
        .map(|i| Proc::spawn(&dir.0, &["board", "attach", "many"], &format!("host {i}")))
        .collect();
    let mut gids: Vec<String> = hosts
        .iter()
        .map(|h| {
            let l = h.expect_line("attached to board many");
            l.rsplit(' ').next().unwrap().to_owned()
        })
        .collect();
    gids.sort();
    gids.dedup();
    assert_eq!(gids.len(), 16, "distinct GIDs");
    assert_eq!(board.status()["functions"].as_array().unwrap().len(), 16);
    // The 17th, from another process.
    let extra = Proc::spawn(&dir.0, &["board", "attach", "many"], "host 17");
    let (ok, err) = extra.wait();
    assert!(!ok);
    assert!(err.contains("board many is full"), "{err}");
    assert!(err.contains("--max-functions 16"), "{err}");
    // And from this one, as a typed error.
    match process::attach_raw_in(&dir.0, "many") {
        Err(AttachError::Refused { status, message }) => {
            assert_eq!(status, process::layout::STATUS_FULL);
            assert!(message.contains("all 16 functions"), "{message}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 17th function attached"),
    }
    // Orderly detaches (stdin closes): no crash.
    for h in hosts {
        let mut h = h;
        drop(h.child.stdin.take());
        assert!(h.wait().0);
    }
    let s = board.status();
    assert_eq!(s["counters"]["detaches"], 16, "{s}");
    assert_eq!(s["counters"]["crashes"], 0, "{s}");
    assert_eq!(s["counters"]["refusals"], 2, "{s}");
    board.stop();
}

#[test]
fn bad_names_unknown_boards_duplicates_and_stale_sockets_get_clear_errors() {
    let dir = Dir::new();
    match process::attach_raw_in(&dir.0, "nobody") {
        Err(e @ AttachError::NoBoard { .. }) => {
            assert!(e.to_string().contains("no board named nobody"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("attached to nothing"),
    }
    let board = BoardProc::start(&dir, "loopback", "dup", 2);
    let second = Proc::spawn(&dir.0, &["board", "--name", "dup"], "second board");
    let (ok, err) = second.wait();
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "a board named dup is already running (pid {})",
            board.pid()
        )),
        "{err}"
    );
    // A killed board leaves its socket; hosts are told, a new board reclaims it.
    let holder = Proc::spawn(&dir.0, &["board", "attach", "dup"], "holder");
    holder.expect_line("attached to board dup");
    board.kill();
    let (ok, err) = holder.wait();
    assert!(!ok && err.contains("board dup went away"), "{err}");
    assert!(process::socket_path(&dir.0, "dup").exists());
    match process::attach_raw_in(&dir.0, "dup") {
        Err(e @ AttachError::BoardGone { .. }) => {
            assert!(e.to_string().contains("is not running"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("attached to a dead board"),
    }
    let board = BoardProc::start(&dir, "loopback", "dup", 2);
    let a = process::attach_raw_in(&dir.0, "dup").expect("attach to the restarted board");
    assert!(a.is_alive());
    drop(a);
    let log = board.stop();
    assert!(log.contains("removing the stale socket"), "{log}");
    let bad = Proc::spawn(&dir.0, &["board", "--name", "../x"], "bad name");
    let (ok, err) = bad.wait();
    assert!(!ok && err.contains("bad board name"), "{err}");
}

/// `ism-sim board attach NAME` run as user and group `id` (root only): whether it
/// attached, and its standard error.
fn attach_as(dir: &Dir, name: &str, id: u32) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let mut child = ism_sim(&dir.0, &["board", "attach", name])
        .uid(id)
        .gid(id)
        .spawn()
        .expect("spawn ism-sim");
    let lines = lines_of(child.stdout.take().unwrap());
    let attached = lines
        .recv_timeout(WAIT)
        .is_ok_and(|l| l.contains(&format!("attached to board {name}")));
    drop(child.stdin.take()); // the holder lets go when its standard input closes
    let out = child.wait_with_output().unwrap();
    (attached, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_socket_mode_lets_other_users_attach_and_a_bad_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let mode_of = |name: &str| {
        std::fs::metadata(process::socket_path(&dir.0, name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let root = rustix::process::getuid().is_root();
    if root {
        // The test directory must let the other user reach the socket.
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let closed = BoardProc::start(&dir, "loopback", "closed", 2);
    assert_eq!(
        mode_of("closed") & 0o022,
        0,
        "only the board's user may connect"
    );
    let open = BoardProc::start_with(&dir, "loopback", "open", 2, &["--socket-mode", "666"]);
    assert_eq!(mode_of("open"), 0o666);
    if root {
        let (attached, err) = attach_as(&dir, "closed", 65534);
        assert!(!attached && err.contains("ermission denied"), "{err}");
        let (attached, err) = attach_as(&dir, "open", 65534);
        assert!(attached, "{err}");
    }
    let log = open.stop();
    assert!(
        log.contains("socket mode 666: every local user may attach"),
        "{log}"
    );
    closed.stop();
    // What the log says of modes that let fewer attach (connecting needs write permission
    // on the socket; root needs none).
    for (mode, says) in [
        ("600", "only the board's user may attach"),
        ("660", "the socket's group may attach"),
        ("0", "only root may attach"),
    ] {
        if mode == "0" && !root {
            continue; // this test could not ask the board for its status
        }
        let b = BoardProc::start_with(&dir, "lpar", "m", 1, &["--socket-mode", mode]);
        let log = b.stop();
        assert!(log.contains(says), "{mode}: {log}");
    }
    for bad in ["888", "1777", "rw", ""] {
        let p = Proc::spawn(
            &dir.0,
            &["board", "--name", "bad", "--socket-mode", bad],
            "bad mode",
        );
        let (ok, err) = p.wait();
        assert!(
            !ok && err.contains("is not a permission mode"),
            "{bad}: {err}"
        );
        assert!(!process::socket_path(&dir.0, "bad").exists());
    }
}

#[test]
fn a_host_of_another_spec_version_is_refused() {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "v", 2);
    // Version 2 (before the DMB table), 1 (before the peer table) and a future one.
    for v in [1, 2, 99] {
        match process::host::attach_raw_version(&dir.0, "v", v) {
            Err(AttachError::Refused { status, message }) => {
                assert_eq!(status, process::layout::STATUS_VERSION);
                let want = format!("board speaks version 3, the host version {v}");
                assert!(message.contains(&want), "{message}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("attached with version {v}"),
        }
    }
    assert_eq!(board.status()["functions"].as_array().unwrap().len(), 0);
    board.stop();
}

/// `docs/host-interface.md` 3.1 and 3.2: a first message that is not exactly a HELLO (a
/// byte short, a byte long, the magic alone, garbage) gets a WELCOME of status 3 in which
/// only the magic, the board's version, the status and the message mean anything; nonzero
/// `flags` and `reserved` are ignored.
#[test]
fn a_malformed_hello_is_refused_with_status_3_and_nothing_else() {
    use process::layout::{Hello, Welcome};
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};
    use zerocopy::{FromBytes, IntoBytes};
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "hello", 2);
    let addr = SocketAddrUnix::new(process::socket_path(&dir.0, "hello")).unwrap();
    let ask = |msg: &[u8]| -> (Welcome, usize) {
        let s = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&s, &addr).unwrap();
        rustix::net::send(&s, msg, SendFlags::NOSIGNAL).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = rustix::net::recv(&s, &mut buf, RecvFlags::empty()).unwrap();
        assert_eq!(n, size_of::<Welcome>());
        (Welcome::read_from_bytes(&buf[..n]).unwrap(), n)
    };
    let mut hello = Hello::read_from_bytes(&[0u8; 24]).unwrap();
    hello.magic = process::layout::HELLO_MAGIC;
    hello.version = process::layout::SPEC_VERSION.into();
    let good = hello.as_bytes().to_vec();
    let mut long = good.clone();
    long.push(0);
    for bad in [&good[..23], &long[..], &good[..8], &[0xA5u8; 24][..]] {
        let (w, _) = ask(bad);
        assert_eq!(w.magic, process::layout::WELCOME_MAGIC);
        assert_eq!(w.version.get(), process::layout::SPEC_VERSION);
        assert_eq!(w.status.get(), process::layout::STATUS_BAD_HELLO, "{bad:?}");
        let mut rest = w;
        rest.magic = [0; 8];
        rest.version = 0.into();
        rest.status = 0.into();
        rest.message = [0; 168];
        assert!(rest.as_bytes().iter().all(|&b| b == 0), "{bad:?}: {rest:?}");
    }
    // Flags and the reserved word: ignored.
    hello.flags = 1.into();
    hello.reserved = 0xFFFF_FFFF.into();
    let (w, _) = ask(hello.as_bytes());
    assert_eq!(w.status.get(), 0, "{w:?}");
    assert_eq!(
        board.status()["counters"]["refusals"].as_u64(),
        Some(4),
        "every refused first message counts"
    );
    board.stop();
}

/// Two hosts of this process on board `name` (`a`, the client side, and `b`), an SMC-D
/// stack on each, and a listener on `b`'s: what the tests below connect through.
struct TwoHosts {
    a: process::Attachment,
    b: process::Attachment,
    sa: std::sync::Arc<ism_host_driver::smcd::SmcStack>,
    sb: std::sync::Arc<ism_host_driver::smcd::SmcStack>,
    l: ism_host_driver::smcd::Listener,
    addr: std::net::SocketAddr,
}

impl TwoHosts {
    fn attach(dir: &Dir, name: &str) -> Self {
        let a = process::attach_in(&dir.0, name).unwrap();
        let b = process::attach_in(&dir.0, name).unwrap();
        let sa = a.smc_stack(Default::default()).unwrap();
        let sb = b.smc_stack(Default::default()).unwrap();
        let l = ism_host_driver::smcd::Listener::bind(&sb, "127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        Self {
            a,
            b,
            sa,
            sb,
            l,
            addr,
        }
    }
}

/// The board dies under its hosts: commands fail with "no device", interrupt waits end,
/// SMC-D connections end with an error, nothing hangs.
#[test]
fn a_killed_board_gives_its_hosts_errors_not_hangs() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "dies", 4);
    let TwoHosts {
        a,
        b: _b,
        sa,
        sb: _sb,
        l,
        addr,
    } = TwoHosts::attach(&dir, "dies");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) => return Err((total, e.kind())),
            }
        }
    });
    let mut c = ism_host_driver::smcd::Stream::connect(&sa, addr).unwrap();
    assert!(c.is_smc());
    c.write_all(&[7u8; 10000]).unwrap();
    let t = Instant::now();
    board.kill();
    let r = reader.join().unwrap();
    assert!(matches!(r, Err((10000, _))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!a.is_alive());
    let mut resp = [0u8; 256];
    let req = [0u8, 0, 0, 3, 0, 0, 0, 8]; // READ_GID header
    assert_eq!(
        a.raw().bus().command(&req, &mut resp),
        Err(BusError::NoDevice)
    );
    assert!(!a.raw().wait_irq(Duration::from_secs(2)));
    assert!(c.write_all(&[1u8; 100_000]).is_err());
}

/// `board status`: its DMB table's values stand under their headings, and output into a
/// pipe whose reader is gone (`| head`) ends quietly with status 0, text or JSON, instead
/// of a panic.
#[test]
fn board_status_lines_up_and_ends_quietly_when_its_reader_goes() {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "loopback", "st", 4);
    let TwoHosts {
        a,
        b,
        sa,
        sb,
        l,
        addr,
    } = TwoHosts::attach(&dir, "st");
    let server = std::thread::spawn(move || l.accept().unwrap());
    let c = ism_host_driver::smcd::Stream::connect(&sa, addr).unwrap();
    let s = server.join().unwrap();
    assert!(c.is_smc());
    let status = |extra: &[&str], out: Stdio| {
        Command::new(BIN)
            .args(["board", "status", "st"])
            .args(extra)
            .env("ISM_SIM_DIR", &dir.0)
            .stdout(out)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let o = status(&[], Stdio::piped());
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.trim_start().starts_with("token"))
        .unwrap_or_else(|| panic!("no DMB table: {text}"));
    let dmbs = board.status()["dmbs"].as_array().unwrap().clone();
    assert_eq!(dmbs.len(), 2, "{text}");
    // Right-aligned numbers end where their heading ends; the writer starts where its
    // heading starts.
    let end_of = |h: &str| lines[head].find(h).unwrap() + h.len();
    for (row, d) in lines[head + 1..head + 3].iter().zip(&dmbs) {
        for (h, v) in [
            ("owner", &d["owner"]),
            ("len", &d["len"]),
            ("idx", &d["sba_idx"]),
        ] {
            let v = v.to_string();
            assert_eq!(
                &row[end_of(h) - v.len()..end_of(h)],
                v,
                "{h} in {row:?}\n{text}"
            );
        }
        let w = d["writer"].as_str().unwrap();
        assert_eq!(row.find(w), lines[head].find("writer"), "{row:?}\n{text}");
    }
    for extra in [&[][..], &["--json"][..]] {
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let o = status(extra, Stdio::from(w));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !err.contains("panicked"),
            "{extra:?}: {err}"
        );
    }
    drop((c, s, sa, sb, a, b));
    board.stop();
}

/// An interrupt thread set not to spin (`set_irq_spin(0)`, as `ism-run` does where peer
/// bells tell readers of data) sleeps on the futex at once and still takes every signal:
/// a verified stream between two functions whose interrupt threads never spin ends, on
/// both board kinds.
#[test]
fn an_interrupt_thread_that_does_not_spin_takes_every_signal() {
    use std::io::{Read, Write};
    for kind in ["loopback", "lpar"] {
        let dir = Dir::new();
        let board = BoardProc::start(&dir, kind, "nospin", 4);
        let TwoHosts {
            a,
            b,
            sa,
            sb,
            l,
            addr,
        } = TwoHosts::attach(&dir, "nospin");
        assert_eq!(a.raw().irq_spin(), Duration::from_micros(50));
        a.raw().set_irq_spin(Duration::from_secs(1));
        assert_eq!(a.raw().irq_spin(), Duration::from_millis(10), "clamped");
        for h in [&a, &b] {
            h.raw().set_irq_spin(Duration::ZERO);
            assert_eq!(h.raw().irq_spin(), Duration::ZERO);
        }
        const LEN: usize = 8 << 20;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 100_000];
            let (mut total, mut sum) = (0usize, 0u64);
            while total < LEN {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        sum = buf[..n].iter().fold(sum, |a, &x| a.wrapping_add(x.into()));
                        total += n;
                    }
                }
            }
            s.write_all(b"k").unwrap();
            tx.send((total, sum)).unwrap();
        });
        let mut c = ism_host_driver::smcd::Stream::connect(&sa, addr).unwrap();
        assert!(c.is_smc());
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        c.write_all(&data).unwrap();
        let (total, sum) = rx.recv_timeout(WAIT).expect("the stream stalled");
        assert_eq!(total, LEN, "{kind}");
        assert_eq!(
            sum,
            data.iter().map(|&x| u64::from(x)).sum::<u64>(),
            "{kind}"
        );
        let mut k = [0u8; 1];
        c.read_exact(&mut k).unwrap();
        drop((c, sa, sb, a, b));
        board.stop();
    }
}

/// A hostile process on the LPAR board: it maps only its own memory object, and through
/// the device it cannot touch another partition: forged tokens, foreign device addresses,
/// ATTACH_DMB and garbage in its ring are refused, and the board keeps serving a
/// verified stream between two other processes meanwhile.
#[test]
fn a_hostile_process_cannot_reach_another_partition() {
    use ism_hal::DmaMemory;
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "iso", 4);
    let (server, addr) = serve(&dir, "iso", false);
    let client = send(&dir, "iso", &addr, 16 << 20, false);
    client.expect_line("smc true");

    let h = process::attach_raw_in(&dir.0, "iso").unwrap();
    let me = h.function();
    // Its mappings: its own memory object and register object, no other partition's.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ism: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("memfd:ism-iso"))
        .collect();
    assert!(!ism.is_empty());
    for l in &ism {
        assert!(
            l.contains(&format!("ism-iso-mem{me} ")) || l.contains(&format!("ism-iso-regs{me} ")),
            "maps a foreign object: {l}"
        );
    }
    // Its memory is only its own device address range.
    let mem = h.hal().memory();
    for f in 0..4u64 {
        let other = (f + 1) << 40;
        if f as u32 != me {
            assert!(!mem.contains(ism_hal::DevAddr(other), 1));
        }
    }
    let bus = h.bus();
    let cmd = |req: &[u8]| {
        let mut resp = [0u8; 256];
        bus.command(req, &mut resp).unwrap();
        u16::from_be_bytes([resp[4], resp[5]])
    };
    // REG_SBA / REG_DMB at another partition's device address: refused.
    for f in 0..4u64 {
        if f as u32 == me {
            continue;
        }
        let addr = ((f + 1) << 40).to_be_bytes();
        let mut reg_sba = vec![0, 0, 0, 1, 0, 0, 0, 16];
        reg_sba.extend_from_slice(&addr);
        assert_ne!(cmd(&reg_sba), 0, "REG_SBA in partition {f}");
        let mut reg_dmb = vec![0, 0, 0, 0x0A, 0, 0, 0, 40];
        reg_dmb.extend_from_slice(&addr);
        reg_dmb.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 40]); // 4 KiB, sba_idx 40
        reg_dmb.extend_from_slice(&[0; 16]);
        assert_ne!(cmd(&reg_dmb), 0, "REG_DMB in partition {f}");
        // ATTACH_DMB is not offered on an LPAR board.
        let mut attach = vec![0, 0, 0, 0x20, 0, 0, 0, 16];
        attach.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0]);
        assert_ne!(cmd(&attach), 0, "ATTACH_DMB");
    }
    // Forged tokens: every store-block refused.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let token = x & 0xFFFF_FFFF_0000_0000;
        assert!(bus.store_block(token | 1 << 23, &[0xEE; 64]).is_err());
    }
    // Garbage in its own ring: an entry longer than a slot, then a head far past the tail.
    let page = h.register_object();
    use process::layout::regs;
    let head = page.word(regs::SQ_HEAD).load(Ordering::Acquire);
    page.desc_request(head).store(1 << 23, Ordering::Relaxed);
    page.desc_len(head).store(99_999, Ordering::Relaxed);
    page.word(regs::SQ_HEAD)
        .store(head.wrapping_add(1), Ordering::SeqCst);
    page.word(regs::DOORBELL).fetch_add(1, Ordering::SeqCst);
    rustix::thread::futex::wake(
        page.word(regs::DOORBELL),
        rustix::thread::futex::Flags::empty(),
        1,
    )
    .ok();
    let deadline = Instant::now() + WAIT;
    while page.word(regs::SQ_TAIL).load(Ordering::Acquire) != head.wrapping_add(1) {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert_eq!(
        page.desc_status(head).load(Ordering::Acquire),
        process::layout::SQ_ERR_MALFORMED
    );
    // More entries claimed than there are slots: all dropped, each descriptor and
    // SQ_ERROR saying so.
    page.word(regs::SQ_ERROR).swap(0, Ordering::SeqCst);
    for slot in 0..process::layout::RING_SLOTS {
        page.desc_request(slot).store(1 << 23, Ordering::Relaxed);
        page.desc_len(slot).store(8, Ordering::Relaxed);
        page.desc_status(slot).store(0xEEEE, Ordering::Relaxed);
    }
    let past = head.wrapping_add(1 + process::layout::RING_SLOTS + 1);
    page.word(regs::SQ_HEAD).store(past, Ordering::SeqCst);
    page.word(regs::DOORBELL).fetch_add(1, Ordering::SeqCst);
    rustix::thread::futex::wake(
        page.word(regs::DOORBELL),
        rustix::thread::futex::Flags::empty(),
        1,
    )
    .ok();
    while page.word(regs::SQ_TAIL).load(Ordering::Acquire) != past {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    for slot in 0..process::layout::RING_SLOTS {
        assert_eq!(
            page.desc_status(slot).load(Ordering::Acquire),
            process::layout::SQ_ERR_MALFORMED,
            "slot {slot}"
        );
    }
    assert_eq!(
        page.word(regs::SQ_ERROR).load(Ordering::Acquire),
        process::layout::SQ_ERR_MALFORMED
    );
    // The stream between the other two processes was never disturbed.
    client.expect_line("sent 16777216 bytes");
    let l = server.expect_line("connection 1");
    assert!(
        l.contains("16777216 bytes verified, closed by the peer"),
        "{l}"
    );
    assert!(
        board.status()["counters"]["moves_refused"]
            .as_u64()
            .unwrap()
            >= 2000
    );
    drop(h);
    drop(server);
    board.stop();
}

/// Store-blocks without signal are posted: a refused one is reported by the next
/// signalling store-block to the same DMB, which the board refuses too (the batch never
/// signals data that did not land) and by `flush`; store-blocks to other DMBs go on.
#[test]
fn a_refused_posted_store_block_fails_its_batch_only() {
    use ism_hal::DmaMemory;
    use ism_host_driver::ism::{IsmClient, IsmEvent};
    use std::sync::Mutex;
    struct Signals(Mutex<Vec<u32>>);
    impl IsmClient for Signals {
        fn handle_irq(&self, sba_idx: u32, _mask: u16) {
            self.0.lock().unwrap().push(sba_idx);
        }
        fn handle_event(&self, _e: &IsmEvent) {}
    }
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "posted", 2);
    let owner = process::attach_in(&dir.0, "posted").unwrap();
    let writer = process::attach_in(&dir.0, "posted").unwrap();
    let signals = std::sync::Arc::new(Signals(Mutex::new(Vec::new())));
    let client = owner.driver().add_client(signals.clone()).unwrap();
    let d1 = owner
        .driver()
        .register_dmb(8192, writer.gid(), None, client)
        .unwrap();
    let d2 = owner
        .driver()
        .register_dmb(8192, writer.gid(), None, client)
        .unwrap();
    let w = writer.driver();
    // `board status` lists both DMBs: owner, writer, length.
    let s = board.status();
    let dmbs = s["dmbs"].as_array().unwrap();
    assert_eq!(dmbs.len(), 2, "{s}");
    for d in dmbs {
        assert_eq!(d["owner"], owner.raw().function(), "{d}");
        assert_eq!(d["len"], 8192, "{d}");
        assert_eq!(d["writer"], format!("{:#018x}", writer.gid().0), "{d}");
    }
    // Past the end of d1: refused, but posted.
    assert!(w.move_data(d1.token, 0, false, 8000, &[1; 1000]).is_ok());
    // Another DMB is not affected.
    w.move_data(d2.token, 0, true, 0, &[2; 100]).unwrap();
    // d1's batch ends: refused with the posted store-block's reason, nothing lands.
    let e = w.move_data(d1.token, 0, true, 0, &[3; 100]).unwrap_err();
    assert!(
        format!("{e:?}").contains("Store") || format!("{e}").contains("refused"),
        "{e:?}"
    );
    let mut back = [0u8; 100];
    owner.driver().memory().read(d1.addr, &mut back).unwrap();
    assert_eq!(back, [0; 100], "data of a failed batch landed");
    owner.driver().memory().read(d2.addr, &mut back).unwrap();
    assert_eq!(back, [2; 100]);
    // The next batch to d1 works again.
    w.move_data(d1.token, 0, true, 0, &[4; 100]).unwrap();
    owner.driver().memory().read(d1.addr, &mut back).unwrap();
    assert_eq!(back, [4; 100]);
    // `flush` reports the posted refusal once.
    assert!(matches!(
        writer.raw().bus().flush(),
        Err(BusError::StoreRefused(4))
    ));
    assert_eq!(writer.raw().bus().flush(), Ok(()));
    let deadline = Instant::now() + WAIT;
    loop {
        let mut got = signals.0.lock().unwrap().clone();
        got.sort();
        if got == {
            let mut v = vec![d1.sba_idx, d2.sba_idx];
            v.sort();
            v
        } {
            break;
        }
        assert!(Instant::now() < deadline, "signals {got:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop((owner, writer));
    // Both detached: their DMBs are gone.
    let deadline = Instant::now() + WAIT;
    while !board.status()["dmbs"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "DMBs left after detach");
        std::thread::sleep(Duration::from_millis(5));
    }
    board.stop();
}

/// A client that connects and says nothing delays nobody: attaches and status queries are
/// served meanwhile, and the silent connection is dropped after its grace period.
#[test]
fn a_silent_connection_delays_no_one() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "lpar", "quiet", 2);
    let silent = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    let addr = SocketAddrUnix::new(process::socket_path(&dir.0, "quiet")).unwrap();
    rustix::net::connect(&silent, &addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let a = process::attach_raw_in(&dir.0, "quiet").expect("attach");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "attach took {:?}",
        t.elapsed()
    );
    drop(a);
    // The board hangs up on the silent client after its grace period.
    let mut fds = [rustix::event::PollFd::new(
        &silent,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&ts)).unwrap(), 1);
    let mut buf = [0u8; 8];
    assert_eq!(
        rustix::net::recv(&silent, &mut buf, rustix::net::RecvFlags::DONTWAIT)
            .unwrap()
            .0,
        0
    );
    board.stop();
}

/// `docs/host-interface.md` 5.4: while a host thread polls its SBA (`HOST_POLLERS` > 0) the
/// board raises the interrupt without waking the host's sleeping interrupt thread; once
/// polling stops, a raise wakes it even though `IRQ` is still 1 from the raise held back.
#[test]
fn a_polling_host_is_not_woken_and_a_held_back_interrupt_is_not_lost() {
    use ism_sim::board::BoardKind;
    use ism_sim::process::layout::regs;
    let board =
        process::LocalBoard::start(BoardKind::Lpar, 2, 4 << 20, Box::new(std::io::sink())).unwrap();
    let a = process::attach_in(board.dir(), board.name()).unwrap();
    let b = process::attach_in(board.dir(), board.name()).unwrap();
    let client = a
        .driver()
        .add_client(std::sync::Arc::new(NoClient))
        .unwrap();
    let dmb = a
        .driver()
        .register_dmb(16384, b.gid(), None, client)
        .unwrap();
    let irq = a.raw().register_object().word(regs::IRQ);
    // Let a's interrupt thread fall asleep (it spins 50 µs at most).
    std::thread::sleep(Duration::from_millis(50));
    a.raw().bus().set_polling(true);
    b.driver()
        .move_data(dmb.token, 0, true, 0, b"held")
        .unwrap();
    // Nobody woke a's interrupt thread: the interrupt stays pending (the thread re-checks
    // only after its 1 s sleep).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        irq.load(Ordering::SeqCst),
        1,
        "the raise woke the interrupt thread"
    );
    a.raw().bus().set_polling(false);
    b.driver()
        .move_data(dmb.token, 0, true, 0, b"wake")
        .unwrap();
    let start = Instant::now();
    while irq.load(Ordering::SeqCst) != 0 {
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "the interrupt thread was not woken"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    a.driver().unregister_dmb(&dmb).unwrap();
}

/// A host thread may take the interrupt itself without running the handler (spec 5.4, as
/// a poller that found its news in the CDC does: `Bus::ack_interrupt`): the interrupt
/// thread is then not woken for it, and the SBA bits stay for the next run of the
/// handler. On both kinds of board (the loopback board keeps the `IRQ` word in its peer
/// table).
#[test]
fn a_host_that_takes_the_interrupt_itself_leaves_the_sba_bits_for_later() {
    use ism_sim::board::BoardKind;
    use std::sync::Arc;
    struct Count(AtomicU32);
    impl ism_host_driver::ism::IsmClient for Count {
        fn handle_irq(&self, _sba_idx: u32, _mask: u16) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn handle_event(&self, _e: &ism_host_driver::ism::IsmEvent) {}
    }
    for kind in [BoardKind::Lpar, BoardKind::Loopback] {
        let board =
            process::LocalBoard::start(kind, 2, 4 << 20, Box::new(std::io::sink())).unwrap();
        let a = process::attach_in(board.dir(), board.name()).unwrap();
        let b = process::attach_in(board.dir(), board.name()).unwrap();
        let count = Arc::new(Count(AtomicU32::new(0)));
        let client = a.driver().add_client(count.clone()).unwrap();
        let dmb = a
            .driver()
            .register_dmb(16384, b.gid(), None, client)
            .unwrap();
        let (da, db) = (a.driver(), b.driver());
        assert_eq!(da.interrupt_raised(), Some(false), "{kind:?}");
        // While a polls, the raise wakes nobody; a then takes it itself.
        da.set_polling(true);
        db.move_data(dmb.token, 0, true, 0, b"news").unwrap();
        assert_eq!(da.interrupt_raised(), Some(true), "{kind:?}: not raised");
        da.ack_interrupt();
        assert_eq!(da.interrupt_raised(), Some(false), "{kind:?}: not taken");
        da.set_polling(false);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "{kind:?}: the handler ran for an interrupt the host took itself"
        );
        // The signal's SBA bit is still there for the next run of the handler.
        da.handle_irq();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "{kind:?}: the SBA bit was lost"
        );
        // And a raise with nobody polling still reaches the interrupt thread.
        db.move_data(dmb.token, 0, true, 0, b"more").unwrap();
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) < 2 {
            assert!(
                start.elapsed() < WAIT,
                "{kind:?}: the interrupt thread was not woken"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        da.unregister_dmb(&dmb).unwrap();
    }
}

/// Direct moves on a loopback board (spec 5.5): a host moves into a DMB the board
/// published (copy mode) or that it attached (no-copy) itself, by the device's rules;
/// everything the device must judge still reaches it (another writer, out of range, a VLAN
/// DMB, an unregistered token), and nothing lands after UNREG_DMB.
#[test]
fn direct_moves_follow_the_devices_rules_and_end_with_the_dmb() {
    use ism_firmware::MoveError;
    use ism_hal::DmaMemory;
    use ism_host_driver::ism::{IsmClient, IsmError, IsmEvent};
    use std::sync::Mutex;
    struct Signals(Mutex<Vec<(u32, u16)>>);
    impl IsmClient for Signals {
        fn handle_irq(&self, sba_idx: u32, mask: u16) {
            self.0.lock().unwrap().push((sba_idx, mask));
        }
        fn handle_event(&self, _e: &IsmEvent) {}
    }
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "loopback", "direct", 3);
    let owner = process::attach_in(&dir.0, "direct").unwrap();
    let writer = process::attach_in(&dir.0, "direct").unwrap();
    let other = process::attach_in(&dir.0, "direct").unwrap();
    let signals = std::sync::Arc::new(Signals(Mutex::new(Vec::new())));
    let client = owner.driver().add_client(signals.clone()).unwrap();
    let dmb = owner
        .driver()
        .register_dmb(8192, writer.gid(), None, client)
        .unwrap();
    let w = writer.driver();
    let direct = |key: &str| board.status()["counters"][key].as_u64().unwrap();
    let device_moves = || direct("moves") - direct("direct_moves");
    let signalled =
        |dmbe: u8| {
            let deadline = Instant::now() + WAIT;
            while !signals.0.lock().unwrap().iter().any(|&(i, m)| {
                i == dmb.sba_idx && m == ism_firmware::wire::sba::dmbe_mask_bit(dmbe)
            }) {
                assert!(Instant::now() < deadline, "no signal for DMBE {dmbe}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };

    // Published (copy mode): the writer moves it itself, the owner is signalled (DMBE 1).
    assert_eq!(board.status()["dmbs"][0]["direct"], true);
    w.move_data(dmb.token, 1, true, 0, &[1; 100]).unwrap();
    assert_eq!((direct("direct_moves"), device_moves()), (1, 0));
    assert_eq!(direct("direct_signals"), 1);
    signalled(1);

    // Another function may not write it: the device refuses it.
    let e = other
        .driver()
        .move_data(dmb.token, 0, true, 0, &[9; 8])
        .unwrap_err();
    assert!(
        matches!(e, IsmError::Move(MoveError::AccessDenied)),
        "{e:?}"
    );
    assert_eq!((direct("direct_moves"), direct("moves_refused")), (1, 1));

    // Attached (no-copy): moved directly too (DMBE 3).
    w.attach_dmb(dmb.token).unwrap();
    w.move_data(dmb.token, 3, true, 100, &[2; 300]).unwrap();
    let mut back = [0u8; 400];
    owner.driver().memory().read(dmb.addr, &mut back).unwrap();
    assert_eq!(&back[..100], &[1; 100][..]);
    assert_eq!(&back[100..], &[2; 300][..]);
    assert_eq!(direct("direct_moves"), 2);
    assert_eq!(direct("direct_bytes"), 400);
    assert_eq!(direct("direct_signals"), 2);
    assert_eq!(device_moves(), 0);
    signalled(3);

    // Past the end: the device refuses it (out of range).
    let e = w
        .move_data(dmb.token, 0, true, 8192, &[9; 100])
        .unwrap_err();
    assert!(matches!(e, IsmError::Move(MoveError::OutOfRange)), "{e:?}");
    assert_eq!(direct("moves_refused"), 2);

    // Detached: still published, still direct.
    w.detach_dmb(dmb.token).unwrap();
    w.move_data(dmb.token, 0, false, 0, &[5; 8]).unwrap();
    assert_eq!(direct("direct_moves"), 3);

    // A DMB of a VLAN is moved into by the device only (it checks the writer's VLANs).
    for d in [owner.driver(), w] {
        d.add_vlan_id(7).unwrap();
    }
    let tagged = owner
        .driver()
        .register_dmb(8192, writer.gid(), Some(7), client)
        .unwrap();
    let listed = board.status()["dmbs"].as_array().unwrap().clone();
    let row = |t: u64| {
        listed
            .iter()
            .find(|d| d["token"] == format!("{t:#018x}"))
            .unwrap()
            .clone()
    };
    assert_eq!(row(tagged.token.0)["direct"], false);
    assert_eq!(row(dmb.token.0)["direct"], true);
    w.move_data(tagged.token, 0, true, 0, &[3; 8]).unwrap();
    assert_eq!((direct("direct_moves"), device_moves()), (3, 1));

    // A move "now" (unsignalled, landed when it returns) is a direct one, or declined.
    let sigs = direct("direct_signals");
    assert_eq!(w.move_data_now(dmb.token, 0, 16, &[4; 8]), Ok(true));
    assert_eq!(w.move_data_now(tagged.token, 0, 0, &[4; 8]), Ok(false));
    assert_eq!((direct("direct_moves"), device_moves()), (4, 1));
    assert_eq!(direct("direct_signals"), sigs, "no signal");
    owner.driver().unregister_dmb(&tagged).unwrap();

    // Attached again, then unregistered by its owner (release deferred while attached):
    // the writer's next move is the device's, which refuses an unregistered token.
    w.attach_dmb(dmb.token).unwrap();
    w.move_data(dmb.token, 0, true, 0, &[6; 8]).unwrap();
    assert_eq!(direct("direct_moves"), 5);
    owner.driver().unregister_dmb(&dmb).unwrap();
    let e = w.move_data(dmb.token, 0, true, 0, &[7; 8]).unwrap_err();
    assert!(
        matches!(e, IsmError::Move(MoveError::InvalidToken)),
        "{e:?}"
    );
    assert_eq!(direct("direct_moves"), 5);
    owner
        .driver()
        .memory()
        .read(dmb.addr, &mut back[..8])
        .unwrap();
    assert_eq!(&back[..8], &[6; 8][..], "a move after UNREG_DMB landed");
    w.detach_dmb(dmb.token).unwrap();

    // Unregistered without an attachment: the entry is withdrawn at once.
    let second = owner
        .driver()
        .register_dmb(4096, writer.gid(), None, client)
        .unwrap();
    w.move_data(second.token, 0, true, 0, &[4; 8]).unwrap();
    assert_eq!(direct("direct_moves"), 6);
    owner.driver().unregister_dmb(&second).unwrap();
    let e = w.move_data(second.token, 0, true, 0, &[8; 8]).unwrap_err();
    assert!(
        matches!(e, IsmError::Move(MoveError::InvalidToken)),
        "{e:?}"
    );
    assert_eq!(direct("direct_moves"), 6);

    // A host may write anything into its peer-table entry: the board's status still
    // answers (its sums saturate).
    let table = writer
        .raw()
        .peer_table()
        .expect("a loopback board's peer table");
    let me = writer.raw().function() as usize;
    for off in [
        process::layout::peers::DIRECT_MOVES,
        process::layout::peers::DIRECT_BYTES,
        process::layout::peers::DIRECT_SIGNALS,
    ] {
        table
            .word64(me, off)
            .unwrap()
            .store(u64::MAX, Ordering::Relaxed);
    }
    let s = board.status();
    assert_eq!(s["counters"]["direct_moves"], u64::MAX, "{s}");
    assert_eq!(s["counters"]["moves"], u64::MAX, "{s}");
    drop((owner, writer, other));
    board.stop();
}

/// Spec 5.5: the board answers UNREG_DMB only after no host is in a direct move into the
/// DMB (its moving words), so the DMB's memory is never written after it was freed; a host
/// that never finishes (here: a word set by hand) holds the board back for a bounded time.
#[test]
fn unregistering_waits_for_direct_moves_in_flight_but_not_forever() {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "loopback", "moving", 2);
    let owner = process::attach_in(&dir.0, "moving").unwrap();
    let writer = process::attach_in(&dir.0, "moving").unwrap();
    let client = owner
        .driver()
        .add_client(std::sync::Arc::new(NoClient))
        .unwrap();
    let table = writer.raw().peer_table().expect("peer table");
    let me = writer.raw().function() as usize;
    let word = |k: usize| {
        table
            .word64(me, process::layout::peers::MOVING + 8 * k)
            .unwrap()
    };
    for (hold, lower) in [(Some(Duration::from_millis(60)), 50), (None, 90)] {
        let dmb = owner
            .driver()
            .register_dmb(4096, writer.gid(), None, client)
            .unwrap();
        // A move "in flight" into it.
        word(5).store(dmb.token.0, Ordering::SeqCst);
        let took = std::thread::scope(|s| {
            if let Some(d) = hold {
                s.spawn(move || {
                    std::thread::sleep(d);
                    word(5).store(0, Ordering::SeqCst);
                });
            }
            let t = Instant::now();
            owner.driver().unregister_dmb(&dmb).unwrap();
            t.elapsed()
        });
        assert!(took >= Duration::from_millis(lower), "{hold:?}: {took:?}");
        assert!(took < Duration::from_secs(10), "{hold:?}: {took:?}");
        word(5).store(0, Ordering::SeqCst);
    }
    drop((owner, writer));
    board.stop();
}

/// Spec 5.5: hosts that hold moving words for a departing owner's DMBs (on purpose: a
/// loopback host can write the peer table) delay its detach by one bounded wait, not one
/// per DMB: 24 held tokens (3 hosts × 8 words) would cost 2.4 s at 100 ms each.
#[test]
fn moving_words_held_on_purpose_delay_a_detach_by_a_bounded_time() {
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "loopback", "held", 4);
    let owner = process::attach_in(&dir.0, "held").unwrap();
    let holders: Vec<_> = (0..3)
        .map(|_| process::attach_in(&dir.0, "held").unwrap())
        .collect();
    let client = owner
        .driver()
        .add_client(std::sync::Arc::new(NoClient))
        .unwrap();
    for h in &holders {
        let table = h.raw().peer_table().expect("peer table");
        let me = h.raw().function() as usize;
        for k in 0..process::layout::peers::MOVING_SLOTS {
            let dmb = owner
                .driver()
                .register_dmb(4096, h.gid(), None, client)
                .unwrap();
            table
                .word64(me, process::layout::peers::MOVING + 8 * k)
                .unwrap()
                .store(dmb.token.0, Ordering::SeqCst);
        }
    }
    let t = Instant::now();
    drop(owner);
    while board.status()["functions"].as_array().unwrap().len() != 3 {
        assert!(t.elapsed() < WAIT, "the owner was not detached");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1200), "{took:?}");
    drop(holders);
    board.stop();
}

/// The owner of an attached DMB dies: the board withdraws the attachment, so the writer's
/// next move is the device's (refused: the token died with its owner), never a write into
/// memory the next host of that function will get.
#[test]
fn a_dead_owner_ends_direct_moves_into_its_dmbs() {
    use ism_firmware::MoveError;
    use ism_host_driver::ism::IsmError;
    let dir = Dir::new();
    let board = BoardProc::start(&dir, "loopback", "gone", 3);
    let owner = process::attach_in(&dir.0, "gone").unwrap();
    let writer = process::attach_in(&dir.0, "gone").unwrap();
    let client = owner
        .driver()
        .add_client(std::sync::Arc::new(NoClient))
        .unwrap();
    let dmb = owner
        .driver()
        .register_dmb(4096, writer.gid(), None, client)
        .unwrap();
    let w = writer.driver();
    w.attach_dmb(dmb.token).unwrap();
    w.move_data(dmb.token, 0, true, 0, &[1; 64]).unwrap();
    assert_eq!(board.status()["counters"]["direct_moves"], 1);
    drop(owner);
    let deadline = Instant::now() + WAIT;
    while board.status()["functions"].as_array().unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "the owner never left");
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = w.move_data(dmb.token, 0, true, 0, &[2; 64]).unwrap_err();
    assert!(
        matches!(e, IsmError::Move(MoveError::InvalidToken)),
        "{e:?}"
    );
    assert_eq!(board.status()["counters"]["direct_moves"], 1);
    drop(writer);
    board.stop();
}

/// An ISM client that ignores its interrupts and events (tests that only need a DMB).
struct NoClient;
impl ism_host_driver::ism::IsmClient for NoClient {
    fn handle_irq(&self, _sba_idx: u32, _mask: u16) {}
    fn handle_event(&self, _e: &ism_host_driver::ism::IsmEvent) {}
}
