//! `ism-run-echo`: a small TCP echo server and client for `ism-run`'s tests, written as any TCP program is
//! (std's `TcpListener`/`TcpStream`, `poll`, `epoll`): nothing here knows about SMC-D.
//!
//! ```text
//! echo server ADDR [--count N] [--mode blocking|poll|epoll] [--greeting] [--tolerate-failed K] [--v6only] [--leave N]
//! echo client ADDR --bytes N [--mode blocking|poll|lockstep] [--greeting] [--chunk N] [--conns C] [--pause-ms T] [--device DEV]
//! echo self ADDR
//! echo probe ADDR
//! echo epoll-connect ADDR --bytes N [--after] [--et] [--so-error]
//! echo et-send ADDR [--bytes N] [--exit abrupt|term]
//! echo drain ADDR [--bytes N] [--delay-ms T]
//! echo timeout-server ADDR
//! echo pollin-connect ADDR
//! echo bye-server ADDR | unread-close-server ADDR | exit-server ADDR
//! echo read-all ADDR [--send N]
//! echo push-server ADDR --how sendfile|splice [--bytes N] | pull ADDR
//! echo write-after-close ADDR
//! echo connect-again ADDR
//! echo duplex-server ADDR | duplex-client ADDR [--bytes N]
//! echo poll-server ADDR
//! echo raw-close ADDR [--bytes N]
//! echo closing-server ADDR
//! echo late-write ADDR
//! echo prefork ADDR [--workers N] [--count M] [--master-closes] [--drop-privileges]
//! echo fork-close ADDR [--bytes N] [--busy-forks K]
//! echo exec-keep ADDR [--cloexec] [--spawn] [--stdio]
//! echo exec-probe FD [--closed] [--allow FD,FD...]
//! echo exec-listener ADDR [--clear-env] | serve-fd FD
//! echo relisten -
//! echo exec-probe-stdio -
//! echo hold ADDR --conns C [--bytes N] [--linger S] [--leave N [--leave-after K]]
//! echo connect-signal ADDR [--restart] [--bytes N]
//! echo signal-send ADDR [--ms M]
//! echo daemon-fds ADDR [--bytes N]
//! echo unprivileged ADDR
//! ```
//! The server prints `listening on ADDR` once it listens, echoes every connection until
//! its end of stream, prints `served N` after N connections and exits (blocking mode: first
//! `echoed B bytes in all`; `--tolerate-failed K`: up to K connections may end in an
//! error, each said on stderr as `a connection failed: ...`). `--greeting`: the
//! server speaks first (a line the client must read before sending). The client sends N
//! pattern bytes, reads them back, verifies them, prints `ok N bytes` (exit 0) or what went
//! wrong (exit 1); `--mode lockstep`: one `--chunk` at a time, each echoed back before the
//! next; `--conns C`: C connections one after the other, each so (`--pause-ms T`
//! between two). `self`
//! listens, connects to itself, then accepts (in one thread), and sends a line both ways. `probe` talks to a blocking echo server through the socket
//! calls directly (poll, FIONREAD, MSG_PEEK, MSG_WAITALL, dup, F_DUPFD_CLOEXEC, SO_RCVTIMEO,
//! SO_DOMAIN, getpeername, shutdown, POLLRDHUP, EPIPE with and without SIGPIPE) and checks
//! that each behaves as on a TCP socket: the same run must pass over TCP and over SMC-D.
//! `epoll-connect` adds a non-blocking socket to an epoll set *before* connecting (as
//! nginx does for upstreams; `--after`: after `connect`), then sends N bytes and verifies
//! the echo, driven by epoll (`--et`: edge-triggered). It prints whether `connect` was
//! `in progress` (then what a second `connect` gave: `EALREADY`, or `EISCONN` if it
//! completed meanwhile) or `done at once`; `--so-error`: `SO_ERROR` must read 0 at the
//! first `EPOLLOUT`.
//!
//! `et-send` listens, accepts one connection and sends N pattern bytes from a non-blocking
//! socket driven by edge-triggered epoll (as nginx sends a response): after each `EAGAIN`
//! it waits for `EPOLLOUT` (10 s at most: a stall is an error), and prints
//! `sent N eagain K`; `--exit abrupt` then ends the process with `_exit`, `--exit term`
//! by a `SIGTERM` it does not handle, neither shutting down nor closing the connection
//! first (the kernel closes it). `drain` connects, waits T ms (so that the sender fills the ring),
//! then reads and verifies N bytes and the end of stream.
//!
//! The fork and exec modes: `prefork` listens, forks N worker processes that accept from
//! the inherited listener and echo (M connections in all, counted in shared memory), waits
//! for them and prints `served M` (each worker prints `worker PID served K`);
//! `--master-closes`: the parent closes its listener after the forks;
//! `--drop-privileges`: each worker drops to `nobody` (`setgroups`, `setgid`, `setuid`)
//! before its first `accept`, as nginx's do (run as root). `fork-close`
//! connects to an echo server, exchanges half of N bytes, forks a child that must get
//! `ENOTCONN` from reading and writing the inherited descriptor and then closes it, and
//! exchanges the rest after the child exited: the parent's connection must not notice.
//! `--busy-forks K` (the server must serve 2 connections): then K more children are forked
//! while a thread exchanges on a second connection (the library's locks are busy at the
//! forks), each child checking the same.
//! `hold` is a program that keeps its connections: it opens C connections to an echo
//! server and exchanges N bytes on each, keeping every one open, then exchanges N more on
//! each while all are open; then, per connection, `--linger S` sets `SO_LINGER` (on, S
//! seconds; checked with `getsockopt`), and it shuts down its writing side, reads the
//! echo's end of stream and closes. Prints `held C connections`. `--leave N`: after its
//! first connection (which attaches the process to the board; `--leave-after K`: after
//! K connections) it opens `/dev/null` until it runs out of descriptors and closes the N
//! highest again (a program at its limit).
//! `connect-signal` makes a blocking `connect` with a `SIGALRM` due after 200 ms (its
//! handler with `SA_RESTART` if `--restart`) and prints `connect: 0 after T ms` or
//! `connect: EINTR after T ms`; after `EINTR` it waits for the socket to poll writable (the
//! connect goes on) and checks `SO_ERROR`; then it exchanges N bytes. For it the server
//! takes `--accept-delay-ms D`: it waits D ms before its first `accept`. The server's
//! `--leave N`: once it listens, it opens `/dev/null` until it runs out of descriptors and
//! closes the N highest again (as `hold --leave`).
//! `exec-keep` connects, exchanges, then forks a child that `exec`s `exec-probe` with the
//! descriptor (close-on-exec with `--cloexec`, else inherited; `--spawn`: std's `Command`,
//! i.e. glibc's `posix_spawn`, instead of `fork` and `exec`), and exchanges again after
//! it. `exec-probe FD` checks that FD is closed (`--closed`) or that its reads and writes
//! fail with `ENOTCONN`, and that no other descriptor than 0, 1, 2, FD and those
//! `exec-keep` had before it connected (`--allow`) is open. With `--stdio` the child gets
//! the connection as its standard input and output instead (as inetd hands a connection
//! to the program it starts), always inherited, and runs `exec-probe-stdio`, which checks
//! reads of 0 and writes to 1 fail with `ENOTCONN` and says so on standard error.

mod common;

use common::{
    arg, check, connect_v4, errno, interval_timer, pattern, poll1, read_pattern_to_end, LIMIT,
};
use std::io::{Read, Write};
use std::mem::size_of;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const GREETING: &[u8] = b"220 ism-run echo ready\r\n";

/// The server's wait before its first `accept` (`--accept-delay-ms`).
static ACCEPT_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// `--leave N` of the server: descriptors it leaves free once it listens (`usize::MAX`:
/// no limit of its own).
static LEAVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

/// `SIGALRM`s handled (`connect-signal`).
static ALARMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// `signal-send`: the connection the handler writes to, and what its writes gave.
static HANDLER_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static HANDLER_SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HANDLER_AGAIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HANDLER_OTHER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// `signal-send`'s `SIGALRM` handler: one byte on `HANDLER_FD` (`send`, async-signal-safe
/// in POSIX), counted by its result; `errno` kept.
extern "C" fn send_from_handler(_: libc::c_int) {
    use std::sync::atomic::Ordering::Relaxed;
    // SAFETY: this thread's errno location, read and put back.
    let saved = unsafe { *libc::__errno_location() };
    let fd = HANDLER_FD.load(Relaxed);
    // SAFETY: one byte from a static buffer; no SIGPIPE, no wait.
    let r = unsafe {
        libc::send(
            fd,
            b"x".as_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    match (r, errno()) {
        (1, _) => drop(HANDLER_SENT.fetch_add(1, Relaxed)),
        (_, libc::EAGAIN) => drop(HANDLER_AGAIN.fetch_add(1, Relaxed)),
        (_, e) => HANDLER_OTHER.store(e, Relaxed),
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// `signal-send ADDR --ms M`: two connections; for M ms the main thread exchanges rounds
/// on the first while a 50 µs interval timer's `SIGALRM` handler writes one byte on the
/// second (the handler interrupts the library anywhere, its locks held or not); then
/// the main thread waits 300 ms in a read; then every byte the handler sent must come
/// back. Prints `ok signal-send: R rounds, S sent from the handler, E refused (EAGAIN);
/// while waiting W of N refused`.
fn signal_send(addr: &str, ms: u64) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut a = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut b = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    a.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    b.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    HANDLER_FD.store(b.as_raw_fd(), Relaxed);
    // SAFETY: an all-zero sigaction is valid; then the fields set here.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = send_from_handler as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    let timer = interval_timer;
    timer(50);
    let start = Instant::now();
    let (mut rounds, mut off) = (0usize, 0usize);
    let r = (|| {
        while start.elapsed() < Duration::from_millis(ms) {
            round(&mut a, off, 1000)?;
            off += 1000;
            rounds += 1;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = r {
        timer(0);
        return Err(e);
    }
    // Then the main thread waits in a read for data that another thread (which blocks
    // the signal) writes 300 ms later: the handler interrupts the wait, which holds no
    // lock of the library, so its writes go (but where it lands in the read's own short
    // locked parts).
    let (sent_before, again_before) = (HANDLER_SENT.load(Relaxed), HANDLER_AGAIN.load(Relaxed));
    let mut a2 = a.try_clone().map_err(|e| format!("dup: {e}"))?;
    let from = off;
    let writer = std::thread::spawn(move || {
        // SAFETY: a local signal set, applied to this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        std::thread::sleep(Duration::from_millis(300));
        let data: Vec<u8> = (from..from + 1000).map(pattern).collect();
        a2.write_all(&data).map_err(|e| format!("write: {e}"))
    });
    let mut echo = vec![0u8; 1000];
    // No time limit on this read: with `SO_RCVTIMEO` set every signal ends a socket's
    // wait with `EINTR` (and `read_exact` calls again), as on TCP.
    a.set_read_timeout(None).map_err(|e| e.to_string())?;
    let waited = a.read_exact(&mut echo).map_err(|e| format!("read: {e}"));
    timer(0);
    writer.join().map_err(|_| "writer panicked")??;
    waited?;
    check(&echo, from)?;
    let (sent, again) = (HANDLER_SENT.load(Relaxed), HANDLER_AGAIN.load(Relaxed));
    let again_waiting = again - again_before;
    let all_waiting = again_waiting + sent - sent_before;
    if let e @ 1.. = HANDLER_OTHER.load(Relaxed) {
        return Err(format!("a send from the handler failed: errno {e}"));
    }
    b.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut back = Vec::new();
    b.read_to_end(&mut back)
        .map_err(|e| format!("read the handler's bytes: {e}"))?;
    if back.len() != sent || back.iter().any(|&c| c != b'x') {
        return Err(format!(
            "{} bytes came back of the handler's {sent}",
            back.len()
        ));
    }
    a.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).map_err(|e| format!("read: {e}"))?;
    println!(
        "ok signal-send: {rounds} rounds, {sent} sent from the handler, {again} refused (EAGAIN); while waiting {again_waiting} of {all_waiting} refused"
    );
    Ok(())
}

fn connect_signal(addr: &str, restart: bool, bytes: usize) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    let to: std::net::SocketAddrV4 = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    // SAFETY: an all-zero sigaction is valid; then the fields set here; the handler only
    // touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    let timer = |ms: i64| {
        let it = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: ms * 1000,
            },
        };
        // SAFETY: a valid itimerval.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    };
    // SAFETY: a plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: errno {}", errno()));
    }
    // SAFETY: `fd` is ours; the stream owns it from here.
    let mut s = unsafe { TcpStream::from_raw_fd(fd) };
    let start = Instant::now();
    timer(200);
    let e = connect_v4(fd, to);
    timer(0);
    let ms = start.elapsed().as_millis();
    match e {
        0 => println!("connect: 0 after {ms} ms"),
        libc::EINTR => {
            println!("connect: EINTR after {ms} ms");
            if poll1(fd, libc::POLLOUT, 10_000) & libc::POLLOUT == 0 {
                return Err("not writable within 10 s after EINTR".into());
            }
            match s.take_error() {
                Ok(None) => println!("so_error 0"),
                other => return Err(format!("SO_ERROR after the connect: {other:?}")),
            }
        }
        _ => return Err(format!("connect: errno {e}")),
    }
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let got = read_pattern_to_end(&mut s, "read")?;
    if got != bytes {
        return Err(format!("got {got} of {bytes} bytes back"));
    }
    println!("ok {bytes} bytes");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(role), Some(addr)) = (args.first(), args.get(1)) else {
        eprintln!("usage: echo server|client ADDR [options]");
        return ExitCode::from(2);
    };
    let mode = arg::<String>(&args, "--mode").unwrap_or_else(|| "blocking".into());
    let greeting = args.iter().any(|a| a == "--greeting");
    let r = match role.as_str() {
        "self" => self_connect(addr),
        "daemon-fds" => daemon_fds(addr, arg(&args, "--bytes").unwrap_or(1000)),
        "unprivileged" => unprivileged(addr),
        "probe" => probe(addr),
        "exec-listener" => exec_listener(addr, args.iter().any(|a| a == "--clear-env")),
        "serve-fd" => serve_fd(addr),
        "relisten" => relisten(),
        "epoll-connect" => epoll_connect(
            addr,
            arg(&args, "--bytes").unwrap_or(1 << 20),
            &EpollConnect {
                after: args.iter().any(|a| a == "--after"),
                et: args.iter().any(|a| a == "--et"),
                so_error: args.iter().any(|a| a == "--so-error"),
                dup: args.iter().any(|a| a == "--dup"),
            },
        ),
        "late-accept" => late_accept(
            addr,
            arg(&args, "--wait-ms").unwrap_or(2500),
            arg(&args, "--for-ms").unwrap_or(2000),
        ),
        "fork-per-connection" => fork_per_connection(
            addr,
            arg(&args, "--count").unwrap_or(4),
            args.iter().any(|a| a == "--greeting"),
            args.iter().any(|a| a == "--sigchld"),
        ),
        "prefork" => prefork(
            addr,
            arg(&args, "--workers").unwrap_or(2),
            arg(&args, "--count").unwrap_or(4),
            args.iter().any(|a| a == "--master-closes"),
            args.iter().any(|a| a == "--drop-privileges"),
        ),
        "et-send" => et_send(
            addr,
            arg(&args, "--bytes").unwrap_or(4 << 20),
            arg::<String>(&args, "--exit").as_deref(),
        ),
        "timeout-server" => timeout_server(addr),
        "raw-close" => raw_close(addr, arg(&args, "--bytes").unwrap_or(100_000)),
        "closing-server" => closing_server(addr),
        "late-write" => late_write(addr),
        "poll-server" => poll_server(addr),
        "pollin-connect" => pollin_connect(addr),
        "bye-server" => bye_server(addr),
        "unread-close-server" => unread_close_server(addr),
        "exit-server" => exit_server(addr),
        "read-all" => read_all(addr, arg(&args, "--send").unwrap_or(0)),
        "push-server" => push_server(
            addr,
            arg::<String>(&args, "--how")
                .as_deref()
                .unwrap_or("sendfile"),
            arg(&args, "--bytes").unwrap_or(2_000_000),
        ),
        "pull" => pull(addr),
        "write-after-close" => write_after_close(addr),
        "connect-again" => connect_again(addr),
        "duplex-server" => duplex_server(addr),
        "duplex-client" => duplex_client(addr, arg(&args, "--bytes").unwrap_or(1 << 20)),
        "drain" => drain(
            addr,
            arg(&args, "--bytes").unwrap_or(4 << 20),
            arg(&args, "--delay-ms").unwrap_or(200),
        ),
        "fork-close" => fork_close(
            addr,
            arg(&args, "--bytes").unwrap_or(1 << 20),
            arg(&args, "--busy-forks").unwrap_or(0),
        ),
        "exec-keep" => exec_keep(
            addr,
            args.iter().any(|a| a == "--cloexec"),
            args.iter().any(|a| a == "--spawn"),
            args.iter().any(|a| a == "--stdio"),
        ),
        "exec-probe" => exec_probe(
            addr,
            args.iter().any(|a| a == "--closed"),
            &arg::<String>(&args, "--allow").unwrap_or_default(),
        ),
        "exec-probe-stdio" => exec_probe_stdio(),
        "hold" => hold(
            addr,
            arg(&args, "--conns").unwrap_or(1),
            arg(&args, "--bytes").unwrap_or(1000),
            arg(&args, "--linger"),
            arg(&args, "--leave").map(|n| (n, arg(&args, "--leave-after").unwrap_or(1))),
        ),
        "handoff" => handoff(addr, arg(&args, "--count").unwrap_or(1)),
        "signal-send" => signal_send(addr, arg(&args, "--ms").unwrap_or(1000)),
        "connect-signal" => connect_signal(
            addr,
            args.iter().any(|a| a == "--restart"),
            arg(&args, "--bytes").unwrap_or(1000),
        ),
        "server" => {
            if let Some(ms) = arg::<u64>(&args, "--accept-delay-ms") {
                ACCEPT_DELAY_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
            }
            let failing = arg(&args, "--tolerate-failed").unwrap_or(0);
            if args.iter().any(|a| a == "--v6only") {
                V6ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(n) = arg::<usize>(&args, "--leave") {
                LEAVE.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            server(
                addr,
                arg(&args, "--count").unwrap_or(1),
                failing,
                &mode,
                greeting,
            )
        }
        "client" => (0..arg(&args, "--conns").unwrap_or(1usize)).try_for_each(|i| {
            if i > 0 {
                let pause = arg(&args, "--pause-ms").unwrap_or(0u64);
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
            client(
                addr,
                arg(&args, "--bytes").unwrap_or(1 << 20),
                arg(&args, "--chunk").unwrap_or(64 << 10),
                &mode,
                greeting,
                arg::<String>(&args, "--device").as_deref(),
            )
        }),
        _ => Err("role must be server or client".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo {role}: {e}");
            ExitCode::from(1)
        }
    }
}

// ------------------------------------------------------------------ handoff

/// `handoff ADDR --count N`: as Node's `cluster` primary with its round-robin policy:
/// listens, forks a worker, accepts `N` connections and hands each to the worker over a
/// UNIX socket (`SCM_RIGHTS`), closing its own descriptor; the worker echoes each in turn.
/// Prints `handed over N` when the worker served them all.
fn handoff(addr: &str, count: usize) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    let (primary, worker) = UnixStream::pair().map_err(|e| e.to_string())?;
    // SAFETY: fork in a process whose other threads (the library's) hold no lock the
    // child takes before it execs nothing: the child uses only its own descriptors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        drop(primary);
        drop(l);
        let echoed = std::sync::atomic::AtomicU64::new(0);
        let code = (0..count).try_for_each(|_| {
            let fd = recv_fd(&worker)?;
            // SAFETY: a descriptor the primary passed, now ours alone.
            echo_counting(unsafe { TcpStream::from_raw_fd(fd) }, false, &echoed)
        });
        if let Err(e) = &code {
            eprintln!("echo handoff worker: {e}");
        }
        // SAFETY: ends the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(i32::from(code.is_err())) };
    }
    drop(worker);
    for _ in 0..count {
        let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        send_fd(&primary, s.as_raw_fd())?;
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid
        || !libc::WIFEXITED(status)
        || libc::WEXITSTATUS(status) != 0
    {
        return Err(format!("the worker failed (status {status:#x})"));
    }
    println!("handed over {count}");
    Ok(())
}

/// Sends descriptor `fd` over `u` in one `SCM_RIGHTS` message (one byte of data).
fn send_fd(u: &std::os::unix::net::UnixStream, fd: libc::c_int) -> Result<(), String> {
    let mut byte = [b'f'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 words: aligned for `cmsghdr`.
    let mut buf = [0u64; 8];
    // SAFETY: `CMSG_SPACE` computes a length.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    // SAFETY: an all-zero `msghdr` is valid; the fields are set below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = buf.as_mut_ptr().cast();
    m.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header with one descriptor (`space` bytes).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
    }
    // SAFETY: a valid header, buffers alive for the call.
    if unsafe { libc::sendmsg(u.as_raw_fd(), &m, 0) } != 1 {
        return Err(format!("sendmsg SCM_RIGHTS: errno {}", errno()));
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
fn recv_fd(u: &std::os::unix::net::UnixStream) -> Result<libc::c_int, String> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = [0u64; 8];
    // SAFETY: an all-zero `msghdr` is valid; the fields are set below.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = buf.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&buf) as _;
    // SAFETY: a valid header, buffers alive for the call.
    if unsafe { libc::recvmsg(u.as_raw_fd(), &mut m, libc::MSG_CMSG_CLOEXEC) } != 1 {
        return Err(format!("recvmsg: errno {}", errno()));
    }
    // SAFETY: the kernel filled the control buffer; one header with one descriptor.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&m);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err("no descriptor came".into());
        }
        Ok(std::ptr::read_unaligned(
            libc::CMSG_DATA(c).cast::<libc::c_int>(),
        ))
    }
}

// ------------------------------------------------------------------ server

/// `server --v6only`: the listener is an IPv6 socket with `IPV6_V6ONLY` set.
static V6ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A listening IPv6-only socket on `addr` (an IPv6 address): an IPv4 listener may then
/// hold the same port.
fn bind_v6only(addr: &str) -> Result<TcpListener, String> {
    use std::os::fd::FromRawFd;
    let a: std::net::SocketAddrV6 = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    // SAFETY: plain socket calls on a new descriptor that the listener below owns; the
    // address is a local sockaddr_in6 of its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let l = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&raw const one).cast(),
            len,
        );
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = a.port().to_be();
        sa.sin6_addr.s6_addr = a.ip().octets();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::bind(fd, (&raw const sa).cast(), len) != 0 || libc::listen(fd, 128) != 0 {
            return Err(format!("bind {addr}: {}", std::io::Error::last_os_error()));
        }
        Ok(l)
    }
}

fn server(
    addr: &str,
    count: usize,
    failing: usize,
    mode: &str,
    greeting: bool,
) -> Result<(), String> {
    let l = if V6ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        bind_v6only(addr)?
    } else {
        TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?
    };
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(
        ACCEPT_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed),
    ));
    // Kept open until the end: the process is out of descriptors but `--leave`.
    let _filled = match LEAVE.load(std::sync::atomic::Ordering::Relaxed) {
        usize::MAX => Vec::new(),
        n => fill_descriptors_but(n),
    };
    match mode {
        "blocking" => {
            let echoed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut threads = Vec::new();
            for _ in 0..count {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                let echoed = echoed.clone();
                threads.push(std::thread::spawn(move || {
                    echo_counting(s, greeting, &echoed)
                }));
            }
            let mut failed = 0;
            for t in threads {
                if let Err(e) = t.join().map_err(|_| "echo thread panicked")? {
                    if failed == failing {
                        return Err(e);
                    }
                    eprintln!("echo server: a connection failed: {e}");
                    failed += 1;
                }
            }
            println!(
                "echoed {} bytes in all",
                echoed.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        "poll" | "epoll" => event_loop(&l, count, mode == "epoll", greeting)?,
        m => return Err(format!("unknown mode {m}")),
    }
    println!("served {count}");
    Ok(())
}

fn echo_blocking(s: TcpStream, greeting: bool) -> Result<(), String> {
    let echoed = std::sync::atomic::AtomicU64::new(0);
    echo_counting(s, greeting, &echoed)
}

/// Echoes `s` until its end of stream, counting the bytes echoed in `echoed`.
fn echo_counting(
    mut s: TcpStream,
    greeting: bool,
    echoed: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    s.set_read_timeout(Some(LIMIT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    if greeting {
        s.write_all(GREETING)
            .map_err(|e| format!("greeting: {e}"))?;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return s
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"));
        }
        s.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
        echoed.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One connection of the event loop: bytes read and not yet echoed.
struct Conn {
    s: TcpStream,
    pending: Vec<u8>,
    eof: bool,
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

/// Reads what is there and writes what it can; `true` when the connection is done.
fn pump(c: &mut Conn) -> Result<bool, String> {
    let mut buf = [0u8; 16 << 10];
    while !c.eof && c.pending.len() < 1 << 20 {
        match c.s.read(&mut buf) {
            Ok(0) => c.eof = true,
            Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    while !c.pending.is_empty() {
        match c.s.write(&c.pending) {
            Ok(n) => {
                c.pending.drain(..n);
            }
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    if c.eof && c.pending.is_empty() {
        c.s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        return Ok(true);
    }
    Ok(false)
}

fn accept_one(l: &TcpListener, greeting: bool) -> Result<Conn, String> {
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    if greeting {
        (&s).write_all(GREETING)
            .map_err(|e| format!("greeting: {e}"))?;
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Conn {
        s,
        pending: Vec::new(),
        eof: false,
    })
}

fn event_loop(l: &TcpListener, count: usize, epoll: bool, greeting: bool) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT * 4;
    let mut conns: Vec<Conn> = Vec::new();
    let (mut accepted, mut done) = (0usize, 0usize);
    let ep = if epoll {
        // SAFETY: plain epoll_create1.
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }
    } else {
        -1
    };
    let watch = |fd: i32, add: bool| {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32,
            u64: fd as u64,
        };
        let op = if add {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        // SAFETY: `ev` is a valid event for the call.
        unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    };
    if epoll {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: l.as_raw_fd() as u64,
        };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, l.as_raw_fd(), &mut ev) };
    }
    while done < count {
        if Instant::now() > deadline {
            return Err("event loop: timed out".into());
        }
        // Readiness of the listener and of each connection (index, readable).
        let mut ready_listener = false;
        let mut ready: Vec<i32> = Vec::new();
        if epoll {
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
            // SAFETY: `evs` has room for 64 events.
            let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 64, 1000) };
            for ev in evs.iter().take(n.max(0) as usize) {
                let fd = ev.u64 as i32;
                if fd == l.as_raw_fd() {
                    ready_listener = true;
                } else if ev.events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32
                    != 0
                    || conns
                        .iter()
                        .any(|c| c.s.as_raw_fd() == fd && !c.pending.is_empty())
                {
                    ready.push(fd);
                }
            }
        } else {
            let mut fds = vec![libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            for c in &conns {
                let mut events = libc::POLLIN | libc::POLLRDHUP;
                if !c.pending.is_empty() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: c.s.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            // SAFETY: `fds` is a valid array of its length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
            ready_listener = fds[0].revents != 0;
            ready.extend(fds[1..].iter().filter(|f| f.revents != 0).map(|f| f.fd));
        }
        if ready_listener && accepted < count {
            let c = accept_one(l, greeting)?;
            accepted += 1;
            if epoll {
                watch(c.s.as_raw_fd(), true);
            }
            conns.push(c);
        }
        let mut k = 0;
        while k < conns.len() {
            let fd = conns[k].s.as_raw_fd();
            if ready.contains(&fd) && pump(&mut conns[k])? {
                if epoll {
                    watch(fd, false);
                }
                conns.swap_remove(k);
                done += 1;
                continue;
            }
            k += 1;
        }
    }
    if epoll {
        // SAFETY: our own epoll descriptor.
        unsafe { libc::close(ep) };
    }
    Ok(())
}

// ------------------------------------------------------------------ self

fn self_connect(addr: &str) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let to = l.local_addr().map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    c.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).map_err(|e| e.to_string())?;
    s.write_all(&b).map_err(|e| e.to_string())?;
    c.read_exact(&mut b).map_err(|e| e.to_string())?;
    if &b != b"ping" {
        return Err("self: wrong bytes".into());
    }
    println!("ok self");
    Ok(())
}

// ------------------------------------------------------------------ probe

static SIGPIPES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn send_all(fd: i32, b: &[u8], flags: i32) -> Result<(), String> {
    // SAFETY: a valid buffer of its length.
    let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), flags) };
    if n != b.len() as isize {
        return Err(format!("send: {n} (errno {})", errno()));
    }
    Ok(())
}

fn recv_n(fd: i32, n: usize, flags: i32) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    // SAFETY: a valid buffer of its length.
    let k = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), n, flags) };
    if k < 0 {
        return Err(format!("recv: errno {}", errno()));
    }
    b.truncate(k as usize);
    Ok(b)
}

/// `daemon-fds`: as a daemon starts (varnishd's `VSUB_run`, and every program that closes
/// what it inherited): listens, closes descriptors 3..64 but its listener's (it did not
/// open them), then makes a pipe
/// (which takes the lowest numbers), forks a child that writes through it, and reads
/// what the child wrote; then connects to the echo server at `addr` and checks the echo of
/// `bytes` bytes. Prints `daemon ok`.
fn daemon_fds(addr: &str, bytes: usize) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // A listener first, as a daemon has (the library attaches to the board for it).
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    for fd in (3..64).filter(|&fd| fd != l.as_raw_fd()) {
        // SAFETY: closes descriptors this program did not open (the point of the test).
        unsafe { libc::close(fd) };
    }
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: a pipe into a local array of two descriptors.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: errno {}", errno()));
    }
    // SAFETY: the child only writes to the pipe and ends with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let msg = b"child ok";
        // SAFETY: writes a static buffer to the pipe, then ends the child.
        unsafe {
            let n = libc::write(p[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(if n == msg.len() as isize { 0 } else { 1 });
        }
    }
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "the child could not write to its pipe (status {status:#x})"
        ));
    }
    let mut buf = [0u8; 16];
    // SAFETY: reads into a local buffer from our pipe.
    let n = unsafe { libc::read(p[0], buf.as_mut_ptr().cast(), buf.len()) };
    if n != 8 || &buf[..8] != b"child ok" {
        return Err(format!(
            "read {n} bytes from the pipe: {:?}",
            &buf[..n.max(0) as usize]
        ));
    }
    client(addr, bytes, 1000, "blocking", false, None)?;
    println!("daemon ok");
    Ok(())
}

/// `unprivileged`: drops to uid/gid 65534 (`nobody`, as a server's workers do after
/// `listen`), then echoes 100 bytes through the server at `addr`. Prints `skipped` if it
/// may not change its user (not root).
fn unprivileged(addr: &str) -> Result<(), String> {
    // SAFETY: plain calls that change this process's credentials.
    let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
    if !dropped {
        println!("skipped");
        return Ok(());
    }
    client(addr, 100, 100, "blocking", false, None)
}

fn probe(addr: &str) -> Result<(), String> {
    use std::os::fd::IntoRawFd;
    // SAFETY: installs a handler that only touches an atomic.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    let fd = TcpStream::connect(addr)
        .map_err(|e| format!("connect {addr}: {e}"))?
        .into_raw_fd();
    let ms = 10_000;
    send_all(fd, b"hello", 0)?;
    if poll1(fd, libc::POLLIN, ms) & libc::POLLIN == 0 {
        return Err("echo never became readable".into());
    }
    let mut n: libc::c_int = 0;
    let deadline = Instant::now() + LIMIT;
    while n < 5 && Instant::now() < deadline {
        // SAFETY: FIONREAD into an int.
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
            return Err(format!("FIONREAD: errno {}", errno()));
        }
    }
    if n != 5 {
        return Err(format!("FIONREAD says {n}, not 5"));
    }
    if recv_n(fd, 16, libc::MSG_PEEK)? != b"hello" {
        return Err("MSG_PEEK".into());
    }
    if poll1(fd, libc::POLLIN, 0) & libc::POLLIN == 0 {
        return Err("not readable after a peek".into());
    }
    if recv_n(fd, 16, 0)? != b"hello" {
        return Err("read after peek".into());
    }
    // A peek shows what came after an earlier peek (a loop that peeks until a header is
    // whole must see it grow), and MSG_PEEK|MSG_WAITALL waits for the whole length.
    send_all(fd, b"abc", 0)?;
    let deadline = Instant::now() + LIMIT;
    while recv_n(fd, 16, libc::MSG_PEEK)? != b"abc" {
        if Instant::now() > deadline {
            return Err("the first part never showed in a peek".into());
        }
    }
    send_all(fd, b"def", 0)?;
    let both = recv_n(fd, 6, libc::MSG_PEEK | libc::MSG_WAITALL)?;
    if both != b"abcdef" {
        return Err(format!("MSG_PEEK|MSG_WAITALL gave {both:?}"));
    }
    if recv_n(fd, 16, libc::MSG_PEEK)? != b"abcdef" {
        return Err("a peek after more came".into());
    }
    if recv_n(fd, 16, 0)? != b"abcdef" {
        return Err("read after the peeks".into());
    }
    if poll1(fd, libc::POLLIN, 100) != 0 {
        return Err("readable with nothing to read".into());
    }
    mmsg(fd)?;
    // SAFETY: plain descriptor calls on our own descriptors.
    let fd2 = unsafe { libc::dup(fd) };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    send_all(fd2, b"world", 0)?;
    if recv_n(fd2, 5, libc::MSG_WAITALL)? != b"world" {
        return Err("MSG_WAITALL through a dup".into());
    }
    // SAFETY: as above.
    let fd3 = unsafe { libc::fcntl(fd2, libc::F_DUPFD_CLOEXEC, 10) };
    // SAFETY: as above.
    unsafe { libc::close(fd2) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: SO_RCVTIMEO with a timeval of its size.
    let r = unsafe {
        libc::setsockopt(
            fd3,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    if r != 0 {
        return Err("SO_RCVTIMEO".into());
    }
    let t = Instant::now();
    // SAFETY: a valid buffer.
    let k = unsafe { libc::recv(fd3, [0u8; 4].as_mut_ptr().cast(), 4, 0) };
    if k != -1 || errno() != libc::EAGAIN || t.elapsed() < Duration::from_millis(150) {
        return Err(format!(
            "a timed-out read: {k}, errno {}, {:?}",
            errno(),
            t.elapsed()
        ));
    }
    let mut dom: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_DOMAIN into an int.
    unsafe {
        libc::getsockopt(
            fd3,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut dom).cast(),
            &mut len,
        )
    };
    if dom != libc::AF_INET {
        return Err(format!("SO_DOMAIN {dom}"));
    }
    // SAFETY: zeroed sockaddr_storage is valid; getpeername writes at most `len`.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    unsafe { libc::getpeername(fd3, (&raw mut st).cast(), &mut len) };
    // SAFETY: an AF_INET address (checked by SO_DOMAIN).
    let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const st).cast()) };
    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    if Some(u16::from_be(sin.sin_port)) != port {
        return Err("getpeername".into());
    }
    // SAFETY: shutdown of our descriptor.
    unsafe { libc::shutdown(fd3, libc::SHUT_WR) };
    let ev = poll1(fd3, libc::POLLIN | libc::POLLRDHUP, ms);
    if ev & libc::POLLRDHUP == 0 {
        return Err(format!("no POLLRDHUP after the peer closed: {ev:#x}"));
    }
    if !recv_n(fd3, 4, 0)?.is_empty() {
        return Err("end of stream expected".into());
    }
    // SAFETY: a valid buffer.
    let k = unsafe { libc::send(fd3, b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    if k != -1 || errno() != libc::EPIPE || SIGPIPES.load(std::sync::atomic::Ordering::SeqCst) != 0
    {
        return Err(format!("send after shutdown: {k}, errno {}", errno()));
    }
    // SAFETY: a valid buffer.
    let k = unsafe { libc::write(fd3, b"x".as_ptr().cast(), 1) };
    if k != -1 || errno() != libc::EPIPE || SIGPIPES.load(std::sync::atomic::Ordering::SeqCst) != 1
    {
        return Err(format!(
            "write after shutdown: {k}, errno {}, {} SIGPIPE",
            errno(),
            SIGPIPES.load(std::sync::atomic::Ordering::SeqCst)
        ));
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd3) };
    println!("ok probe");
    Ok(())
}

/// `sendmmsg` of two messages, then `recvmmsg` (`MSG_WAITFORONE`) until their echo is
/// back, and a `recvmmsg` with `MSG_DONTWAIT` and nothing to read: as over TCP.
fn mmsg(fd: libc::c_int) -> Result<(), String> {
    /// One message header per iovec, each with that one iovec.
    fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
        iov.iter_mut()
            .map(|v| {
                // SAFETY: all-zero bytes are a valid `mmsghdr`.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect()
    }
    let parts: [&[u8]; 2] = [b"mm1", b"mm2x"];
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut hdrs = headers(&mut iov);
    // SAFETY: two valid headers.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), 2, 0) };
    if n != 2 || hdrs[0].msg_len != 3 || hdrs[1].msg_len != 4 {
        return Err(format!(
            "sendmmsg: {n} (errno {}), lengths {} {}",
            errno(),
            hdrs[0].msg_len,
            hdrs[1].msg_len
        ));
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while got.len() < 7 {
        if Instant::now() > deadline {
            return Err(format!("recvmmsg: only {got:?}"));
        }
        let mut bufs = [[0u8; 16]; 3];
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs = headers(&mut iov);
        let mut limit = libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        // A success leaves errno alone, even when a later entry found nothing.
        // SAFETY: the calling thread's errno.
        unsafe { *libc::__errno_location() = libc::ENOTTY };
        // SAFETY: three valid headers and a time limit.
        let n =
            unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), 3, libc::MSG_WAITFORONE, &mut limit) };
        if n < 1 {
            return Err(format!("recvmmsg: {n}, errno {}", errno()));
        }
        if errno() != libc::ENOTTY {
            return Err(format!(
                "recvmmsg gave {n} and changed errno to {}",
                errno()
            ));
        }
        for (h, b) in hdrs.iter().zip(bufs.iter()).take(n as usize) {
            got.extend_from_slice(&b[..h.msg_len as usize]);
        }
    }
    if got != b"mm1mm2x" {
        return Err(format!("recvmmsg gave {got:?}"));
    }
    let mut b = [0u8; 4];
    let mut v = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    };
    // SAFETY: as above.
    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
    h.msg_hdr.msg_iov = &mut v;
    h.msg_hdr.msg_iovlen = 1;
    // SAFETY: one valid header, no time limit.
    let n = unsafe { libc::recvmmsg(fd, &mut h, 1, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
    if n != -1 || errno() != libc::EAGAIN {
        return Err(format!(
            "recvmmsg with nothing to read: {n}, errno {}",
            errno()
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ epoll-connect

/// How `epoll-connect` runs.
struct EpollConnect {
    /// Register with epoll after `connect` instead of before it.
    after: bool,
    /// Edge-triggered registration.
    et: bool,
    /// Ask `SO_ERROR` (must be 0) at the first `EPOLLOUT`.
    so_error: bool,
    /// `dup` the descriptor while the connect is under way, close the original and go on
    /// with the copy (with `after`).
    dup: bool,
}

fn epoll_connect(addr: &str, bytes: usize, how: &EpollConnect) -> Result<(), String> {
    let to: std::net::SocketAddrV4 = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    // SAFETY: plain socket and epoll calls on descriptors made here.
    let first = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    let fd_cell = std::cell::Cell::new(first);
    // SAFETY: as above.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if first < 0 || ep < 0 {
        return Err("socket/epoll".into());
    }
    let et = if how.et { libc::EPOLLET as u32 } else { 0 };
    let register = |op: i32, events: i32| {
        let mut ev = libc::epoll_event {
            events: events as u32 | et,
            u64: 7,
        };
        // SAFETY: a valid event.
        if unsafe { libc::epoll_ctl(ep, op, fd_cell.get(), &mut ev) } != 0 {
            return Err(format!("epoll_ctl: errno {}", errno()));
        }
        Ok(())
    };
    let all = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP;
    if !how.after {
        register(libc::EPOLL_CTL_ADD, all)?;
    }
    let connect = || connect_v4(first, to);
    match connect() {
        0 => println!("connect: done at once"),
        libc::EINPROGRESS => {
            println!("connect: in progress");
            // A second connect meanwhile: EALREADY, or EISCONN if it completed already.
            match connect() {
                0 => println!("connect again: done"),
                libc::EALREADY => println!("connect again: EALREADY"),
                libc::EISCONN => println!("connect again: EISCONN"),
                e => return Err(format!("connect again: errno {e}")),
            }
        }
        e => return Err(format!("connect: errno {e}")),
    }
    if how.dup {
        // A copy made while the connect may still be under way: the connection goes on
        // on it after the original is closed.
        // SAFETY: dup and close of our own descriptor.
        let copy = unsafe { libc::dup(first) };
        if copy < 0 {
            return Err(format!("dup: errno {}", errno()));
        }
        // SAFETY: as above.
        unsafe { libc::close(first) };
        fd_cell.set(copy);
        println!("dup: {first} -> {copy}, {first} closed");
    }
    if how.after {
        register(libc::EPOLL_CTL_ADD, all)?;
    }
    let fd = fd_cell.get();
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let (mut sent, mut got, mut shut, mut asked) = (0usize, 0usize, false, false);
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + LIMIT;
    loop {
        if Instant::now() > deadline {
            return Err(format!("timed out: sent {sent}, got {got}"));
        }
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: room for 4 events.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 1000) };
        for e in evs.iter().take(n.max(0) as usize) {
            let flags = e.events;
            if flags & libc::EPOLLOUT as u32 != 0 && how.so_error && !asked {
                asked = true;
                let mut err: i32 = -1;
                let mut len = size_of::<i32>() as libc::socklen_t;
                // SAFETY: an `int` of its size.
                let r = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&raw mut err).cast(),
                        &mut len,
                    )
                };
                if r != 0 || err != 0 {
                    return Err(format!("SO_ERROR at EPOLLOUT: r {r}, error {err}"));
                }
                println!("so_error 0");
            }
            // Send until the socket is full (edge-triggered: the next EPOLLOUT comes only
            // after an EAGAIN).
            while flags & libc::EPOLLOUT as u32 != 0 && sent < bytes {
                let end = (sent + (64 << 10)).min(bytes);
                // SAFETY: a valid buffer of its length.
                let k = unsafe { libc::send(fd, data[sent..end].as_ptr().cast(), end - sent, 0) };
                if k > 0 {
                    sent += k as usize;
                } else if errno() == libc::EAGAIN {
                    break;
                } else {
                    return Err(format!("send: errno {}", errno()));
                }
            }
            if sent == bytes && !shut {
                // SAFETY: our socket.
                unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                shut = true;
                register(libc::EPOLL_CTL_MOD, libc::EPOLLIN | libc::EPOLLRDHUP)?;
            }
            if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                loop {
                    // SAFETY: a valid buffer of its length.
                    let k = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if k > 0 {
                        check(&buf[..k as usize], got)?;
                        got += k as usize;
                    } else if k == 0 {
                        if got != bytes {
                            return Err(format!("got {got} of {bytes} bytes back"));
                        }
                        // SAFETY: our descriptors.
                        unsafe { libc::close(fd) };
                        // SAFETY: as above.
                        unsafe { libc::close(ep) };
                        println!("ok {bytes} bytes");
                        return Ok(());
                    } else if errno() == libc::EAGAIN {
                        break;
                    } else {
                        return Err(format!("recv: errno {}", errno()));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ client

fn read_greeting(s: &mut TcpStream) -> Result<(), String> {
    let mut g = vec![0u8; GREETING.len()];
    s.read_exact(&mut g).map_err(|e| format!("greeting: {e}"))?;
    if g != GREETING {
        return Err(format!("greeting: got {:?}", String::from_utf8_lossy(&g)));
    }
    Ok(())
}

/// A connection to `addr`, from a socket bound to the network device `device` first
/// (`SO_BINDTODEVICE`, as `curl --interface` and `iperf3 --bind-dev` do) if one is named.
fn connect_from(addr: &str, device: Option<&str>) -> Result<TcpStream, String> {
    use std::os::fd::FromRawFd;
    let Some(dev) = device else {
        return TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"));
    };
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let std::net::SocketAddr::V4(v4) = to else {
        return Err("--device takes an IPv4 address".into());
    };
    // SAFETY: a plain socket call; the descriptor is owned by the stream below or closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: errno {}", errno()));
    }
    // SAFETY: the device name's bytes and length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = errno();
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return Err(format!("SO_BINDTODEVICE {dev}: errno {e}"));
    }
    // SAFETY: all-zero bytes are a valid `sockaddr_in`.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = v4.port().to_be();
    sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    // SAFETY: a valid `sockaddr_in` of its size.
    let r = unsafe {
        libc::connect(
            fd,
            (&raw const sin).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = errno();
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return Err(format!("connect {addr} from {dev}: errno {e}"));
    }
    // SAFETY: a connected stream socket that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

fn client(
    addr: &str,
    bytes: usize,
    chunk: usize,
    mode: &str,
    greeting: bool,
    device: Option<&str>,
) -> Result<(), String> {
    let mut s = connect_from(addr, device)?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    if greeting {
        read_greeting(&mut s)?;
    }
    match mode {
        "blocking" => {
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            let chunk = chunk.max(1);
            let writer = std::thread::spawn(move || -> Result<(), String> {
                // Chunk by chunk: `--bytes` may be far more than memory (a transfer that
                // a test ends by killing a process).
                let mut data = vec![0u8; chunk];
                let mut off = 0;
                while off < bytes {
                    let n = chunk.min(bytes - off);
                    for (k, b) in data[..n].iter_mut().enumerate() {
                        *b = pattern(off + k);
                    }
                    w.write_all(&data[..n]).map_err(|e| format!("write: {e}"))?;
                    off += n;
                }
                w.shutdown(Shutdown::Write).map_err(|e| e.to_string())
            });
            let got = read_pattern_to_end(&mut s, "read")?;
            writer.join().map_err(|_| "writer panicked")??;
            if got != bytes {
                return Err(format!("got {got} of {bytes} bytes back"));
            }
        }
        "poll" => poll_client(&s, bytes, chunk)?,
        // One chunk at a time, each echoed back before the next (round trips).
        "lockstep" => {
            let chunk = chunk.max(1);
            let mut off = 0;
            while off < bytes {
                let n = chunk.min(bytes - off);
                exchange(&mut s, off, n)?;
                off += n;
            }
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            let rest = read_pattern_to_end(&mut s, "read")?;
            if rest != 0 {
                return Err(format!("{rest} bytes more than sent came back"));
            }
        }
        m => return Err(format!("unknown mode {m}")),
    }
    println!("ok {bytes} bytes");
    Ok(())
}

/// Sends stream bytes `from .. from + n` and reads their echo back (verified).
fn exchange(s: &mut TcpStream, from: usize, n: usize) -> Result<(), String> {
    let data: Vec<u8> = (from..from + n).map(pattern).collect();
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; n];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    check(&back, from)
}

/// Opens `/dev/null` until the process runs out of descriptors, then closes the `n`
/// highest again: the process can have `n` more (a program at its limit). Returns the
/// ones it keeps.
fn fill_descriptors_but(n: usize) -> Vec<std::fs::File> {
    let mut open = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        open.push(f);
    }
    open.sort_by_key(|f| f.as_raw_fd());
    open.truncate(open.len().saturating_sub(n));
    open
}

fn hold(
    addr: &str,
    conns: usize,
    bytes: usize,
    linger: Option<i32>,
    leave: Option<(usize, usize)>,
) -> Result<(), String> {
    let mut held = Vec::with_capacity(conns);
    // Kept open until the end: the process is out of descriptors but `n`.
    let mut filled = Vec::new();
    for i in 0..conns {
        if let Some((n, _)) = leave.filter(|l| l.1 == i) {
            filled = fill_descriptors_but(n);
        }
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {i}: {e}"))?;
        s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
        exchange(&mut s, 0, bytes).map_err(|e| format!("connection {i}: {e}"))?;
        held.push(s);
    }
    for (i, s) in held.iter_mut().enumerate() {
        exchange(s, bytes, bytes).map_err(|e| format!("connection {i}, again: {e}"))?;
    }
    for (i, mut s) in held.into_iter().enumerate() {
        if let Some(secs) = linger {
            let set = libc::linger {
                l_onoff: 1,
                l_linger: secs,
            };
            let size = size_of::<libc::linger>() as libc::socklen_t;
            let fd = s.as_raw_fd();
            // SAFETY: a valid `linger` of the size given.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&set as *const libc::linger).cast(),
                    size,
                )
            };
            if r != 0 {
                return Err(format!("SO_LINGER on connection {i}: errno {}", errno()));
            }
            let mut got = libc::linger {
                l_onoff: 0,
                l_linger: 0,
            };
            let mut len = size;
            // SAFETY: room for a `linger`, its size in `len`.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&mut got as *mut libc::linger).cast(),
                    &mut len,
                )
            };
            if r != 0 || got.l_onoff == 0 || got.l_linger != secs {
                return Err(format!(
                    "SO_LINGER of connection {i} reads back as ({}, {}), r {r}",
                    got.l_onoff, got.l_linger
                ));
            }
        }
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown {i}: {e}"))?;
        let mut rest = [0u8; 16];
        match s.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => return Err(format!("connection {i}: {n} bytes after the echo")),
            Err(e) => return Err(format!("connection {i}: end of stream: {e}")),
        }
    }
    drop(filled);
    println!("held {conns} connections");
    Ok(())
}

fn poll_client(s: &TcpStream, bytes: usize, chunk: usize) -> Result<(), String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + LIMIT * 4;
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let (mut sent, mut got, mut shut) = (0usize, 0usize, false);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if Instant::now() > deadline {
            return Err(format!("timed out: sent {sent}, got {got}"));
        }
        let mut events = libc::POLLIN;
        if sent < bytes {
            events |= libc::POLLOUT;
        }
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 1000) };
        if sent < bytes {
            let end = (sent + chunk.max(1)).min(bytes);
            match (&*s).write(&data[sent..end]) {
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if sent == bytes && !shut {
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            shut = true;
        }
        loop {
            match (&*s).read(&mut buf) {
                Ok(0) => {
                    if got != bytes {
                        return Err(format!("got {got} of {bytes} bytes back"));
                    }
                    return Ok(());
                }
                Ok(n) => {
                    check(&buf[..n], got)?;
                    got += n;
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

// ------------------------------------------------------------------ fork and exec

/// Forks; the child runs `f` and exits with its status (0: `Ok`), dying with its parent.
fn fork_child(f: impl FnOnce() -> Result<(), String>) -> Result<libc::pid_t, String> {
    // SAFETY: plain fork; the child only runs `f` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: asks for SIGKILL when the parent dies (no orphan outlives a killed test).
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("echo child {}: {e}", std::process::id());
                1
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(pid)
}

/// Waits for `pid` (bounded by LIMIT); `Ok` if it exited with 0.
fn reap(pid: libc::pid_t) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut st = 0;
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                Ok(())
            } else {
                Err(format!("child {pid} ended with status {st:#x}"))
            };
        }
        if r < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() > deadline {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("child {pid} did not exit"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn prefork(
    addr: &str,
    workers: usize,
    count: usize,
    master_closes: bool,
    drop_privileges: bool,
) -> Result<(), String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    // SAFETY: a new shared anonymous mapping of one word, zeroed, never unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_of::<AtomicUsize>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err("mmap".into());
    }
    // SAFETY: the mapping is aligned, zeroed and lives until exit; shared by the workers.
    let taken: &'static AtomicUsize = unsafe { &*p.cast::<AtomicUsize>() };
    let mut kids = Vec::new();
    for _ in 0..workers {
        let l = &l;
        kids.push(fork_child(move || {
            if drop_privileges {
                // As nginx's workers: supplementary groups, group, user (to `nobody`).
                // SAFETY: plain calls that change this process's credentials.
                let dropped = unsafe {
                    libc::setgroups(0, std::ptr::null()) == 0
                        && libc::setgid(65534) == 0
                        && libc::setuid(65534) == 0
                };
                if !dropped {
                    return Err(format!("dropping privileges: errno {}", errno()));
                }
            }
            // A worker ends with its master (a failed test kills the master; workers left
            // in `accept` would live on). Set after the credential change, which clears it.
            // SAFETY: plain process-attribute calls on this process.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
            }
            let mut n = 0;
            while taken.fetch_add(1, Ordering::SeqCst) < count {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                echo_blocking(s, false)?;
                n += 1;
            }
            println!("worker {} served {n}", std::process::id());
            Ok(())
        })?);
    }
    if master_closes {
        drop(l);
        println!("master closed its listener");
        let _ = std::io::stdout().flush();
    }
    reap_all(kids, count)
}

/// `late-accept`: listens with a backlog of 1, sleeps `wait_ms` (clients pile up in the
/// kernel's queues), then accepts for `for_ms` and reads the start of each connection;
/// counts those that begin with a CLC eyecatcher (a client's proposal read as data: must
/// never happen).
fn late_accept(addr: &str, wait_ms: u64, for_ms: u64) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    // SAFETY: listen again on our own listening socket: only its backlog changes.
    if unsafe { libc::listen(l.as_raw_fd(), 1) } != 0 {
        return Err(format!("listen: {}", std::io::Error::last_os_error()));
    }
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(wait_ms));
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_millis(for_ms);
    let (mut accepted, mut stray) = (0, 0);
    while Instant::now() < end {
        match l.accept() {
            Ok((mut s, _)) => {
                accepted += 1;
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.to_string())?;
                let mut b = [0u8; 64];
                let what = match s.read(&mut b) {
                    Ok(n) if n >= 4 && b[..4] == [0xe2, 0xd4, 0xc3, 0xd9] => {
                        stray += 1;
                        "a CLC proposal as data".to_owned()
                    }
                    Ok(n) => format!("{n} bytes"),
                    Err(e) => e.to_string(),
                };
                println!("connection {accepted}: {what}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    println!("accepted {accepted}, stray {stray}");
    if stray > 0 {
        return Err(format!("{stray} connections began with a CLC proposal"));
    }
    Ok(())
}

/// A fork-per-connection server (inetd, `git daemon`, `socat ...,fork`, postgres): accepts
/// `count` connections one by one; for each, forks a child that echoes it (after a greeting
/// if `greeting`), while the parent closes its copy at once and accepts the next.
fn fork_per_connection(
    addr: &str,
    count: usize,
    greeting: bool,
    sigchld: bool,
) -> Result<(), String> {
    if sigchld {
        // As socat: a SIGCHLD handler without SA_RESTART, so that each child's end
        // interrupts what the parent is blocked in (the library's own calls included).
        // SAFETY: installs a handler that does nothing, with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        }
    }
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    let mut kids = Vec::new();
    for _ in 0..count {
        let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        // As such servers do before they fork: options and the peer's name for the log.
        s.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        s.peer_addr().map_err(|e| format!("getpeername: {e}"))?;
        // The parent's copy closes when `fork_child` returns (the closure is dropped).
        kids.push(fork_child(move || echo_blocking(s, greeting))?);
    }
    reap_all(kids, count)
}

/// Reaps every child in `kids`; `served COUNT` if all exited with 0, else their errors.
fn reap_all(kids: Vec<libc::pid_t>, count: usize) -> Result<(), String> {
    let errs: Vec<String> = kids
        .into_iter()
        .filter_map(|k| reap_long(k).err())
        .collect();
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    println!("served {count}");
    Ok(())
}

/// A SIGCHLD handler that does nothing (its point is to interrupt).
extern "C" fn on_sigchld(_: libc::c_int) {}

/// As [`reap`], with the server's longer limit (the workers wait for the clients).
fn reap_long(pid: libc::pid_t) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT * 4;
    while Instant::now() < deadline {
        match reap(pid) {
            Err(e) if e.ends_with("did not exit") => {}
            r => return r,
        }
    }
    Err(format!("worker {pid} did not exit"))
}

/// Sends pattern bytes `from..from + n` and reads them back, verified.
fn round(s: &mut TcpStream, from: usize, n: usize) -> Result<(), String> {
    let data: Vec<u8> = (from..from + n).map(pattern).collect();
    let mut back = vec![0u8; n];
    for (c, b) in data.chunks(16 << 10).zip(back.chunks_mut(16 << 10)) {
        s.write_all(c).map_err(|e| format!("write: {e}"))?;
        s.read_exact(b).map_err(|e| format!("read: {e}"))?;
    }
    check(&back, from)
}

/// `f` must fail with `ENOTCONN`.
fn expect_enotconn(what: &str, r: isize) -> Result<(), String> {
    let e = std::io::Error::last_os_error();
    if r == -1 && e.raw_os_error() == Some(libc::ENOTCONN) {
        Ok(())
    } else {
        Err(format!(
            "{what} on the inherited descriptor: {r} ({e}), not ENOTCONN"
        ))
    }
}

fn fork_close(addr: &str, bytes: usize, busy_forks: usize) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let half = bytes / 2;
    round(&mut s, 0, half)?;
    let fd = s.as_raw_fd();
    let local = s.local_addr().map_err(|e| format!("getsockname: {e}"))?;
    let check_child = move || {
        // The connection's own address, as the child's TCP socket would give it (not the
        // stand-in socket's 0.0.0.0:0, a new-user trial's finding).
        let got = sock_name(fd).map_err(|e| format!("getsockname in the child: {e}"))?;
        if got != local {
            return Err(format!("getsockname in the child: {got}, not {local}"));
        }
        let mut b = [0u8; 16];
        // SAFETY: reads into a local buffer.
        let r = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
        expect_enotconn("read", r)?;
        // SAFETY: writes from a local buffer; MSG_NOSIGNAL in case it is a dead socket.
        let r = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        expect_enotconn("send", r)?;
        // SAFETY: closes the child's copy of the descriptor.
        if unsafe { libc::close(fd) } != 0 {
            return Err(format!("close: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    reap(fork_child(check_child)?)?;
    if busy_forks > 0 {
        let mut s2 = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        s2.set_read_timeout(Some(LIMIT))
            .map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<usize, String> {
                let mut off = 0;
                while !stop.load(Ordering::Acquire) {
                    round(&mut s2, off, 4096)?;
                    off += 4096;
                }
                s2.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
                Ok(off)
            })
        };
        let forks = (0..busy_forks).try_for_each(|_| reap(fork_child(check_child)?));
        stop.store(true, Ordering::Release);
        let moved = busy.join().map_err(|_| "busy thread panicked")??;
        forks?;
        println!("{busy_forks} forks during {moved} bytes on another connection");
    }
    round(&mut s, half, bytes - half)?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map_err(|e| format!("read: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} stray bytes", rest.len()));
    }
    println!("ok fork-close {bytes} bytes");
    Ok(())
}

/// `getsockname` of `fd` (an IPv4 address: the tests' connections are to 127.0.0.1).
fn sock_name(fd: i32) -> Result<std::net::SocketAddr, String> {
    // SAFETY: all-zero bytes are a valid `sockaddr_in`.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: room for a `sockaddr_in`, its size in `len`.
    let r = unsafe { libc::getsockname(fd, (&raw mut a).cast(), &mut len) };
    if r != 0 {
        return Err(format!("errno {}", errno()));
    }
    if i32::from(a.sin_family) != libc::AF_INET {
        return Err(format!("family {}", a.sin_family));
    }
    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
    Ok((ip, u16::from_be(a.sin_port)).into())
}

/// The descriptors open now.
fn open_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `exec-listener`: listens on `addr` (the library registers the listener), prints
/// `listening on ADDR`, and hands the listening socket across `exec` to a new image of this
/// program (`serve-fd FD`), which accepts one connection and echoes it, while this process
/// keeps the listener open, as nginx's binary upgrade does. Exits as the child did.
/// `--clear-env`: `fork` and `execve` with an empty environment (nginx gives the new
/// binary only the variables its `env` directives name).
fn exec_listener(addr: &str, clear_env: bool) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let fd = l.as_raw_fd();
    // SAFETY: clears close-on-exec on our own descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err("F_SETFD".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    if clear_env {
        use std::os::unix::ffi::OsStrExt;
        let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|e| e.to_string());
        let (path, role, num) = (
            c(exe.as_os_str().as_bytes())?,
            c(b"serve-fd")?,
            c(fd.to_string().as_bytes())?,
        );
        let argv = [path.as_ptr(), role.as_ptr(), num.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        println!(
            "listening on {}",
            l.local_addr().map_err(|e| e.to_string())?
        );
        let _ = std::io::stdout().flush();
        // SAFETY: the child only calls `execve` (with arrays made before the fork) and
        // `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        if pid < 0 || unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(format!("fork/waitpid: errno {}", errno()));
        }
        drop(l);
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("serve-fd: status {status:#x}"));
        }
        println!("served 1");
        return Ok(());
    }
    let mut child = std::process::Command::new(exe)
        .args(["serve-fd", &fd.to_string()])
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    let st = child.wait().map_err(|e| e.to_string())?;
    drop(l);
    if !st.success() {
        return Err(format!("serve-fd: {st}"));
    }
    println!("served 1");
    Ok(())
}

/// `relisten`: `listen` on a socket never bound (the kernel picks a port), `shutdown`
/// (which unbinds it), `listen` again (another port), then prints `listening on
/// 127.0.0.1:PORT` with the new port, accepts one connection and echoes it.
fn relisten() -> Result<(), String> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor made here and owned by the listener below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: as above.
    if fd < 0 || unsafe { libc::listen(fd, 8) } != 0 {
        return Err(format!("socket/listen: errno {}", errno()));
    }
    // SAFETY: as above.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let first = l.local_addr().map_err(|e| e.to_string())?.port();
    // SAFETY: as above.
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } != 0 || unsafe { libc::listen(fd, 8) } != 0 {
        return Err(format!("shutdown/listen: errno {}", errno()));
    }
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    if port == first {
        return Err(format!("the second listen kept port {port}"));
    }
    println!("listening on 127.0.0.1:{port}");
    let _ = std::io::stdout().flush();
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    echo_blocking(s, false)?;
    println!("served 1");
    Ok(())
}

/// `serve-fd`: accepts one connection on the inherited listening descriptor `fd` and
/// echoes it.
fn serve_fd(fd: &str) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    let fd: i32 = fd.parse().map_err(|e| format!("{fd}: {e}"))?;
    // SAFETY: the listening socket our parent passed across exec; nothing else owns it here.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    echo_blocking(s, false)
}

fn exec_keep(addr: &str, cloexec: bool, spawn: bool, stdio: bool) -> Result<(), String> {
    // What this process had before it used a socket (inherited from whoever started it).
    let before: Vec<String> = open_fds().iter().map(i32::to_string).collect();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    round(&mut s, 0, 100_000)?;
    let fd = s.as_raw_fd();
    // With `--stdio` only 0 and 1 carry the connection into the new image.
    let flag = if cloexec || stdio {
        libc::FD_CLOEXEC
    } else {
        0
    };
    // SAFETY: sets the descriptor flags of our own descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flag) } != 0 {
        return Err("F_SETFD".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = std::process::Command::new(exe);
    if stdio {
        // The child's descriptors 0 and 1 become the connection (`dup2` in the child,
        // after `fork` or inside `posix_spawn`); this process's copies close after.
        let copy = || {
            s.try_clone()
                .map(|t| std::process::Stdio::from(std::os::fd::OwnedFd::from(t)))
        };
        c.args(["exec-probe-stdio", "-"])
            .stdin(copy().map_err(|e| e.to_string())?)
            .stdout(copy().map_err(|e| e.to_string())?);
    } else {
        c.arg("exec-probe")
            .arg(fd.to_string())
            .arg("--allow")
            .arg(before.join(","));
        if cloexec {
            c.arg("--closed");
        }
    }
    if spawn {
        // std's Command: glibc's posix_spawn (a CLONE_VFORK child, no fork handlers), so
        // the new image inherits the doorbell socket itself.
        let mut child = c.spawn().map_err(|e| format!("spawn: {e}"))?;
        let id = child.id() as libc::pid_t;
        let r = reap(id);
        drop(child.try_wait());
        r?;
    } else {
        let child = fork_child(move || {
            use std::os::unix::process::CommandExt;
            Err(format!("exec: {}", c.exec()))
        })?;
        reap(child)?;
    }
    round(&mut s, 100_000, 100_000)?;
    println!("ok exec-keep");
    Ok(())
}

fn exec_probe_stdio() -> Result<(), String> {
    let mut b = [0u8; 16];
    // SAFETY: reads into a local buffer.
    let r = unsafe { libc::recv(0, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    expect_enotconn("read of standard input", r)?;
    // SAFETY: writes from a local buffer.
    let r = unsafe { libc::write(1, b.as_ptr().cast(), b.len()) };
    expect_enotconn("write to standard output", r)?;
    eprintln!("ok exec-probe");
    Ok(())
}

fn exec_probe(fd: &str, closed: bool, allow: &str) -> Result<(), String> {
    let allow: Vec<i32> = allow.split(',').filter_map(|a| a.parse().ok()).collect();
    let fd: i32 = fd.parse().map_err(|_| format!("bad descriptor {fd}"))?;
    let mut b = [0u8; 16];
    if closed {
        // SAFETY: F_GETFD takes no argument.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            return Err(format!("descriptor {fd} survived exec despite FD_CLOEXEC"));
        }
    } else {
        // A re-executed server's first call (sshd's): no peer here, as the data calls.
        // SAFETY: all-zero bytes are a valid sockaddr_storage, with room for `len` bytes.
        let r = unsafe {
            let mut st: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            libc::getpeername(fd, (&raw mut st).cast(), &mut len)
        };
        expect_enotconn("getpeername", r as isize)?;
        // SAFETY: reads into a local buffer.
        let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
        expect_enotconn("read", r)?;
        // SAFETY: writes from a local buffer.
        let r = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        expect_enotconn("send", r)?;
    }
    // Nothing of the old image's library is left open (the directory's own descriptor,
    // closed by now, has no link below).
    let extra: Vec<String> = open_fds()
        .iter()
        .filter(|&&d| d > 2 && d != fd && !allow.contains(&d))
        .filter_map(|&d| {
            std::fs::read_link(format!("/proc/self/fd/{d}"))
                .ok()
                .map(|l| format!("{d} -> {}", l.display()))
        })
        .collect();
    if !extra.is_empty() {
        return Err(format!("descriptors left open across exec: {extra:?}"));
    }
    println!("ok exec-probe");
    Ok(())
}

// ------------------------------------------------------------------ edge-triggered writer

fn et_send(addr: &str, bytes: usize, exit: Option<&str>) -> Result<(), String> {
    if !matches!(exit, None | Some("abrupt" | "term")) {
        return Err(format!("--exit {exit:?}: abrupt or term"));
    }
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    let (mut s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    // SAFETY: plain epoll_create1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err("epoll_create1".into());
    }
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLOUT | libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: 0,
    };
    // SAFETY: `ev` is a valid event for the call.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } != 0 {
        return Err("epoll_ctl".into());
    }
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let (mut sent, mut eagain) = (0usize, 0usize);
    let r = (|| {
        while sent < bytes {
            match s.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => {
                    eagain += 1;
                    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
                    loop {
                        // SAFETY: `evs` has room for 4 events.
                        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 10_000) };
                        if n == 0 {
                            return Err(format!(
                                "no EPOLLOUT for 10 s after EAGAIN at {sent} of {bytes} bytes: stalled"
                            ));
                        }
                        if n > 0
                            && evs[..n as usize]
                                .iter()
                                .any(|e| e.events & libc::EPOLLOUT as u32 != 0)
                        {
                            break;
                        }
                    }
                }
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if exit.is_some() {
            return Ok(());
        }
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())
    })();
    // SAFETY: closes our own epoll descriptor.
    unsafe { libc::close(ep) };
    r?;
    println!("sent {sent} eagain {eagain}");
    let _ = std::io::stdout().flush();
    match exit {
        // Without exit handlers: the kernel closes the descriptors (over TCP, the peer
        // reads the end of stream).
        // SAFETY: ends the process at once.
        Some("abrupt") => unsafe { libc::_exit(0) },
        Some(_) => {
            // Killed by a signal it does not handle.
            // SAFETY: sets SIGTERM's default action and raises it: the process ends.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::raise(libc::SIGTERM);
            }
            Err("still alive after SIGTERM".into())
        }
        None => Ok(()),
    }
}

/// Listens on `addr`, says `listening on ADDR`, and accepts one connection.
fn accept_first(addr: &str) -> Result<TcpStream, String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    l.accept()
        .map(|(s, _)| s)
        .map_err(|e| format!("accept: {e}"))
}

/// `timeout-server`: accepts one connection, reads `SO_RCVTIMEO` and `TCP_NODELAY` (unset:
/// the program's values, not a handshake's), sets `SO_RCVTIMEO` to 300 ms at once (while
/// an `ism-run` library may still be setting the connection up) and reads: the read must
/// end with `EAGAIN` after 250 ms to 5 s (never data, never a wait for the client).
/// Prints `read timed out after T ms`, then closes.
fn timeout_server(addr: &str) -> Result<(), String> {
    let mut s = accept_first(addr)?;
    // What the program set (nothing yet), not what a library's handshake may have set
    // on the socket meanwhile.
    let unset = s.read_timeout().map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let nodelay = s.nodelay().map_err(|e| format!("TCP_NODELAY: {e}"))?;
    if unset.is_some() || nodelay {
        return Err(format!(
            "right after accept: SO_RCVTIMEO {unset:?}, TCP_NODELAY {nodelay}"
        ));
    }
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let set = s.read_timeout().map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    if set != Some(Duration::from_millis(300)) {
        return Err(format!(
            "SO_RCVTIMEO reads {set:?} after it was set to 300 ms"
        ));
    }
    let t = Instant::now();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(n) => return Err(format!("read {n} bytes, expected a timeout")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let ms = t.elapsed().as_millis();
    if !(250..5000).contains(&ms) {
        return Err(format!("read timed out after {ms} ms, not 300"));
    }
    println!("read timed out after {ms} ms");
    Ok(())
}

/// `closing-server`: accepts one connection and closes it at once.
fn closing_server(addr: &str) -> Result<(), String> {
    drop(accept_first(addr)?);
    println!("closed");
    Ok(())
}

/// A connection to a `closing-server`, its end of stream read.
fn connected_to_a_closing_server(addr: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    if n != 0 {
        return Err(format!("read {n} bytes, expected the end of stream"));
    }
    Ok(s)
}

/// `late-write`: connects, reads the end of stream (the peer closed), then writes once
/// with `write` (no `MSG_NOSIGNAL`, `SIGPIPE` at its default: a `SIGPIPE` kills this
/// process) and prints `late write: N` or `late write: errno E`.
fn late_write(addr: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let s = connected_to_a_closing_server(addr)?;
    // SAFETY: restores the default action of SIGPIPE (Rust's runtime ignores it).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // SAFETY: a valid buffer, our descriptor.
    let k = unsafe { libc::write(s.as_raw_fd(), b"late".as_ptr().cast(), 4) };
    if k < 0 {
        println!("late write: errno {}", errno());
    } else {
        println!("late write: {k}");
    }
    Ok(())
}

/// `raw-close`: as libuv (Node.js) closes its sockets: two connections one after the
/// other, each exchanging N bytes, the first closed with `syscall(SYS_close)` instead of
/// `close` (the second then usually gets the same number).
fn raw_close(addr: &str, bytes: usize) -> Result<(), String> {
    use std::os::fd::IntoRawFd;
    for round in 0..2 {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {round}: {e}"))?;
        s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..bytes).map(pattern).collect();
        s.write_all(&data)
            .map_err(|e| format!("write {round}: {e}"))?;
        let mut got = vec![0u8; bytes];
        s.read_exact(&mut got)
            .map_err(|e| format!("read {round}: {e}"))?;
        if got != data {
            return Err(format!("connection {round}: the echo differs"));
        }
        let fd = s.into_raw_fd();
        println!("connection {round} on fd {fd}");
        // SAFETY: closes our own descriptor, once, as `close` would.
        if unsafe { libc::syscall(libc::SYS_close, fd) } != 0 {
            return Err(format!("syscall(SYS_close): errno {}", errno()));
        }
    }
    println!("ok {bytes} bytes twice");
    Ok(())
}

/// `poll-server`: accepts one connection and at once waits in `poll` for it to be
/// readable (10 s at most: longer is an error), then echoes it to its end.
fn poll_server(addr: &str) -> Result<(), String> {
    let s = accept_first(addr)?;
    let t = Instant::now();
    if poll1(s.as_raw_fd(), libc::POLLIN, 10_000) <= 0 {
        return Err(format!("poll: not readable after {:?}", t.elapsed()));
    }
    println!("readable after {} ms", t.elapsed().as_millis());
    echo_blocking(s, false)?;
    println!("served 1");
    Ok(())
}

/// A non-blocking socket connecting to `addr` (`connect` gave 0 or `EINPROGRESS`), and
/// the address.
fn connect_nonblocking(addr: &str) -> Result<(TcpStream, std::net::SocketAddrV4), String> {
    let to: std::net::SocketAddrV4 = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    // SAFETY: a plain socket call; the stream below owns the descriptor.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(format!("socket: errno {}", errno()));
    }
    // SAFETY: `fd` is ours.
    let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match connect_v4(fd, to) {
        0 | libc::EINPROGRESS => Ok((s, to)),
        e => Err(format!("connect: errno {e}")),
    }
}

/// A non-blocking `connect`, then a `poll` for `POLLIN` alone, begun at once (while the
/// connection is still set up): the server speaks first (`server --greeting`), and the
/// poll must wake for its greeting, which is then read.
fn pollin_connect(addr: &str) -> Result<(), String> {
    let (mut s, _) = connect_nonblocking(addr)?;
    let fd = s.as_raw_fd();
    let t = Instant::now();
    let r = poll1(fd, libc::POLLIN, 10_000);
    if r & libc::POLLIN == 0 {
        return Err(format!("poll: {r:#x} after {:?}", t.elapsed()));
    }
    println!("readable after {} ms", t.elapsed().as_millis());
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut g = vec![0u8; GREETING.len()];
    s.read_exact(&mut g).map_err(|e| format!("greeting: {e}"))?;
    if g != GREETING {
        return Err("wrong greeting".into());
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map_err(|e| format!("read: {e}"))?;
    println!("ok greeting");
    Ok(())
}

/// `bye-server`: accepts one connection, says whether it polls writable at once, makes it
/// non-blocking, sends `BYE` and closes (a server turning a client away): over TCP the
/// send succeeds at once and the client reads the line.
fn bye_server(addr: &str) -> Result<(), String> {
    let s = accept_first(addr)?;
    let at_once = poll1(s.as_raw_fd(), libc::POLLOUT, 0) & libc::POLLOUT != 0;
    println!("writable at once: {at_once}");
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let n = (&s).write(b"BYE\n").map_err(|e| format!("send: {e}"))?;
    println!("sent {n}");
    Ok(())
}

/// `unread-close-server`: accepts one connection, reads 10 bytes of what the client sends
/// and closes with the rest unread: over TCP the client gets a reset (`ECONNRESET`).
fn unread_close_server(addr: &str) -> Result<(), String> {
    let mut s = accept_first(addr)?;
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    std::thread::sleep(Duration::from_millis(200));
    println!("closed with data unread");
    Ok(())
}

/// `exit-server`: accepts one connection and ends the process at once with `_exit` (no
/// exit handlers, as a crash): over TCP the client's `connect` had succeeded and its read
/// gives the end of stream.
fn exit_server(addr: &str) -> Result<(), String> {
    let s = accept_first(addr)?;
    // SAFETY: ends the process; `s` is never used again.
    unsafe { libc::_exit(if s.as_raw_fd() >= 0 { 0 } else { 1 }) }
}

/// `read-all`: connects, sends `--send` bytes (if any), waits 300 ms, reads to the end of
/// stream and prints `got N bytes: TEXT` or `read: errno E`.
fn read_all(addr: &str, send: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    if send > 0 {
        s.write_all(&vec![b'a'; send])
            .map_err(|e| format!("write: {e}"))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => println!(
            "got {} bytes: {}",
            got.len(),
            String::from_utf8_lossy(&got).trim_end()
        ),
        Err(e) => println!("read: errno {}", e.raw_os_error().unwrap_or(0)),
    }
    Ok(())
}

/// `push-server`: accepts one connection and at once (while an `ism-run` library may still
/// be setting it up) sends N bytes of the pattern with `sendfile` from a file (no offset)
/// or with `splice` from a pipe that a thread fills, then closes; prints `pushed N`.
fn push_server(addr: &str, how: &str, bytes: usize) -> Result<(), String> {
    let s = accept_first(addr)?;
    let fd = s.as_raw_fd();
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let mut sent = 0usize;
    match how {
        "sendfile" => {
            let path = std::env::temp_dir().join(format!("push-{}", std::process::id()));
            std::fs::write(&path, &data).map_err(|e| e.to_string())?;
            let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&path);
            while sent < bytes {
                // SAFETY: our socket and file, no offset (the file's own position moves).
                let n = unsafe {
                    libc::sendfile(fd, f.as_raw_fd(), std::ptr::null_mut(), bytes - sent)
                };
                if n <= 0 {
                    return Err(format!("sendfile after {sent}: {n}, errno {}", errno()));
                }
                sent += n as usize;
            }
        }
        "splice" => {
            let mut p = [0 as libc::c_int; 2];
            // SAFETY: a pipe into a local array of two descriptors.
            if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(format!("pipe: errno {}", errno()));
            }
            // SAFETY: the write end is ours alone from here (the thread's file).
            let mut w = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(p[1]) };
            let filler = std::thread::spawn(move || w.write_all(&data).map_err(|e| e.to_string()));
            while sent < bytes {
                // SAFETY: the pipe's read end and our socket, no offsets.
                let n = unsafe {
                    libc::splice(
                        p[0],
                        std::ptr::null_mut(),
                        fd,
                        std::ptr::null_mut(),
                        bytes - sent,
                        0,
                    )
                };
                if n <= 0 {
                    return Err(format!("splice after {sent}: {n}, errno {}", errno()));
                }
                sent += n as usize;
            }
            filler
                .join()
                .map_err(|_| "the pipe's writer panicked".to_string())??;
            // SAFETY: the pipe's read end, ours, closed once.
            unsafe { libc::close(p[0]) };
        }
        other => return Err(format!("--how {other}: sendfile or splice")),
    }
    println!("pushed {sent}");
    Ok(())
}

/// `pull`: connects and reads to the end, every byte checked against the pattern (at most
/// LIMIT per read); prints `pulled N`.
fn pull(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let n = read_pattern_to_end(&mut s, "read")?;
    println!("pulled {n}");
    Ok(())
}

/// `write-after-close`: connects, reads the end of stream (the server closed), then writes
/// twice with `send(MSG_NOSIGNAL)` and prints `first: R, second: R` (each a count or
/// `errno E`): over TCP the first succeeds and the second fails with `EPIPE`.
fn write_after_close(addr: &str) -> Result<(), String> {
    let s = connected_to_a_closing_server(addr)?;
    let send = || {
        // SAFETY: a valid buffer, our descriptor.
        let k = unsafe {
            libc::send(
                s.as_raw_fd(),
                b"late".as_ptr().cast(),
                4,
                libc::MSG_NOSIGNAL,
            )
        };
        if k < 0 {
            format!("errno {}", errno())
        } else {
            k.to_string()
        }
    };
    let first = send();
    // Over TCP the peer's reset comes back within microseconds on loopback.
    std::thread::sleep(Duration::from_millis(100));
    let second = send();
    println!("first: {first}, second: {second}");
    Ok(())
}

/// `connect-again`: a non-blocking `connect`, a `poll` for `POLLOUT`, then `connect` once
/// more (how APR and Ruby's `connect_nonblock` learn the result: 0 over TCP), printed as
/// `connect again: R`; then 1000 bytes echoed and checked (`ok 1000 bytes`).
fn connect_again(addr: &str) -> Result<(), String> {
    let (mut s, to) = connect_nonblocking(addr)?;
    let fd = s.as_raw_fd();
    if poll1(fd, libc::POLLOUT, 10_000) & libc::POLLOUT == 0 {
        return Err("never writable".into());
    }
    println!("connect again: {}", connect_v4(fd, to));
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..1000).map(pattern).collect();
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != data {
        return Err(format!("echo differs ({} bytes back)", got.len()));
    }
    println!("ok 1000 bytes");
    Ok(())
}

/// One socat-like loop on the blocking socket `s`: waits with `poll` for readable (and
/// writable while `out` holds bytes), reads at most 8 KiB when readable (`got`), and,
/// when writable, writes at most 8 KiB of `out` in one blocking write. Ends at the peer's
/// end of stream; `shut` once `out` is sent (if `close_out`). A write that blocks
/// because the socket said writable with too little room deadlocks two such loops.
fn duplex_loop(
    s: &mut TcpStream,
    mut out: &[u8],
    close_out: bool,
    echo: bool,
) -> Result<usize, String> {
    let fd = s.as_raw_fd();
    let mut pending: Vec<u8> = Vec::new();
    let (mut got, mut shut) = (0usize, false);
    let deadline = Instant::now() + LIMIT;
    let mut buf = vec![0u8; 8192];
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "stuck: got {got}, {} left to send",
                out.len() + pending.len()
            ));
        }
        let sending = !out.is_empty() || !pending.is_empty();
        if !sending && close_out && !shut {
            s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            shut = true;
        }
        let events = libc::POLLIN | if sending { libc::POLLOUT } else { 0 };
        let r = poll1(fd, events, 1000);
        if r & libc::POLLOUT != 0 && sending {
            let chunk: &[u8] = if !pending.is_empty() {
                &pending[..pending.len().min(8192)]
            } else {
                &out[..out.len().min(8192)]
            };
            let n = s.write(chunk).map_err(|e| format!("write: {e}"))?;
            if !pending.is_empty() {
                pending.drain(..n);
            } else {
                out = &out[n..];
            }
        }
        if r & (libc::POLLIN | libc::POLLHUP) != 0 {
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                if echo && !shut {
                    // Echo what is left, then end.
                    while !pending.is_empty() {
                        let k = s.write(&pending).map_err(|e| format!("write: {e}"))?;
                        pending.drain(..k);
                    }
                    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
                }
                return Ok(got);
            }
            got += n;
            if echo {
                pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// `duplex-server`: echoes one connection as socat's `PIPE` does (see [`duplex_loop`]).
fn duplex_server(addr: &str) -> Result<(), String> {
    let mut s = accept_first(addr)?;
    let got = duplex_loop(&mut s, &[], false, true)?;
    println!("echoed {got}");
    Ok(())
}

/// `duplex-client`: sends N bytes and reads the echo in one socat-like loop; prints
/// `ok N bytes` when all came back.
fn duplex_client(addr: &str, bytes: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let data: Vec<u8> = (0..bytes).map(pattern).collect();
    let got = duplex_loop(&mut s, &data, true, false)?;
    if got != bytes {
        return Err(format!("got {got} of {bytes} bytes back"));
    }
    println!("ok {bytes} bytes");
    Ok(())
}

fn drain(addr: &str, bytes: usize, delay_ms: u64) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    // Pacing, not synchronisation: the sender fills the ring meanwhile (it reports how
    // often it found it full; the test checks that it did).
    std::thread::sleep(Duration::from_millis(delay_ms));
    let got = read_pattern_to_end(&mut s, "read")?;
    if got != bytes {
        return Err(format!("got {got} of {bytes} bytes"));
    }
    println!("ok {bytes} bytes");
    Ok(())
}
