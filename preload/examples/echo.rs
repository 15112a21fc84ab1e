//! A small TCP echo server and client for `ism-run`'s tests, written as any TCP program is
//! (std's `TcpListener`/`TcpStream`, `poll`, `epoll`): nothing here knows about SMC-D.
//!
//! ```text
//! echo server ADDR [--count N] [--mode blocking|poll|epoll] [--greeting]
//! echo client ADDR --bytes N [--mode blocking|poll] [--greeting] [--chunk N]
//! echo self ADDR
//! ```
//! The server prints `listening on ADDR` once it listens, echoes every connection until
//! its end of stream, prints `served N` after N connections and exits. `--greeting`: the
//! server speaks first (a line the client must read before sending). The client sends N
//! pattern bytes, reads them back, verifies them, prints `ok N bytes` (exit 0) or what went
//! wrong (exit 1). `self` listens, connects to itself, then accepts (in one thread), and
//! sends a line both ways.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const GREETING: &[u8] = b"220 ism-run echo ready\r\n";
const LIMIT: Duration = Duration::from_secs(30);

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i / 251)) as u8
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
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
        "server" => server(addr, arg(&args, "--count").unwrap_or(1), &mode, greeting),
        "client" => client(
            addr,
            arg(&args, "--bytes").unwrap_or(1 << 20),
            arg(&args, "--chunk").unwrap_or(64 << 10),
            &mode,
            greeting,
        ),
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

// ------------------------------------------------------------------ server

fn server(addr: &str, count: usize, mode: &str, greeting: bool) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!(
        "listening on {}",
        l.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    match mode {
        "blocking" => {
            let mut threads = Vec::new();
            for _ in 0..count {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                threads.push(std::thread::spawn(move || echo_blocking(s, greeting)));
            }
            for t in threads {
                t.join().map_err(|_| "echo thread panicked")??;
            }
        }
        "poll" | "epoll" => event_loop(&l, count, mode == "epoll", greeting)?,
        m => return Err(format!("unknown mode {m}")),
    }
    println!("served {count}");
    Ok(())
}

fn echo_blocking(mut s: TcpStream, greeting: bool) -> Result<(), String> {
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    if greeting {
        s.write_all(GREETING)
            .map_err(|e| format!("greeting: {e}"))?;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return s.shutdown(Shutdown::Write).map_err(|e| e.to_string());
        }
        s.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
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

// ------------------------------------------------------------------ client

fn read_greeting(s: &mut TcpStream) -> Result<(), String> {
    let mut g = vec![0u8; GREETING.len()];
    s.read_exact(&mut g).map_err(|e| format!("greeting: {e}"))?;
    if g != GREETING {
        return Err(format!("greeting: got {:?}", String::from_utf8_lossy(&g)));
    }
    Ok(())
}

fn check(got: &[u8], from: usize) -> Result<(), String> {
    for (k, &b) in got.iter().enumerate() {
        if b != pattern(from + k) {
            return Err(format!("byte {} differs", from + k));
        }
    }
    Ok(())
}

fn client(
    addr: &str,
    bytes: usize,
    chunk: usize,
    mode: &str,
    greeting: bool,
) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    if greeting {
        read_greeting(&mut s)?;
    }
    match mode {
        "blocking" => {
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            let chunk = chunk.max(1);
            let writer = std::thread::spawn(move || -> Result<(), String> {
                let data: Vec<u8> = (0..bytes).map(pattern).collect();
                for c in data.chunks(chunk) {
                    w.write_all(c).map_err(|e| format!("write: {e}"))?;
                }
                w.shutdown(Shutdown::Write).map_err(|e| e.to_string())
            });
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                check(&buf[..n], got)?;
                got += n;
            }
            writer.join().map_err(|_| "writer panicked")??;
            if got != bytes {
                return Err(format!("got {got} of {bytes} bytes back"));
            }
        }
        "poll" => poll_client(&s, bytes, chunk)?,
        m => return Err(format!("unknown mode {m}")),
    }
    println!("ok {bytes} bytes");
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
