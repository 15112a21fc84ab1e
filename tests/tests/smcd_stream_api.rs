//! The conventions of `std::net` on `Stream` and `Listener`, on SMC-D and on TCP fallback
//! streams alike: separate read and write timeouts, non-blocking mode, `incoming()`,
//! `Debug`; and an accept loop that silent, slow or failing clients do not hold up.

mod smcd_common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ism_host_driver::smcd::{SmcStack, StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind};

use smcd_common::*;

/// The two kinds of connection: (name, client, server), SMC-D with small rings on an LPAR
/// board, and a TCP fallback (the client has no device). The board must outlive them.
fn both_kinds() -> (Custom, Vec<(&'static str, Stream, Stream)>) {
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    );
    let (c, s) = pair(&b.stacks[0], &b.stacks[1]);
    assert!(c.is_smc());
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    let (fc, fs) = pair(&bare, &b.stacks[1]);
    assert!(!fc.is_smc());
    (b, vec![("smc-d", c, s), ("fallback", fc, fs)])
}

fn timed_out(e: &std::io::Error) -> bool {
    // std reports an expired socket timeout as `WouldBlock` on Unix.
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[test]
fn read_and_write_timeouts_are_separate_and_work_on_both_kinds() {
    let (_b, conns) = both_kinds();
    for (kind, c, s) in conns {
        // Both off, then each on its own.
        c.set_timeout(None).unwrap();
        assert_eq!(c.read_timeout().unwrap(), None, "{kind}");
        assert_eq!(c.write_timeout().unwrap(), None, "{kind}");
        let limit = Duration::from_millis(100);
        c.set_read_timeout(Some(limit)).unwrap();
        assert_eq!(c.read_timeout().unwrap(), Some(limit), "{kind}");
        assert_eq!(c.write_timeout().unwrap(), None, "{kind}: read only");
        let e = c.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{kind}");
        let e = c.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{kind}");

        // A read with nothing to read ends after the limit.
        let t = Instant::now();
        let e = (&c).read(&mut [0u8; 16]).unwrap_err();
        assert!(timed_out(&e), "{kind}: {e:?}");
        assert!(t.elapsed() >= limit, "{kind}: {:?}", t.elapsed());

        // A write to a peer that does not read ends after the write limit (a short count
        // first, possibly): fill the peer's ring (SMC-D) or the socket buffers (TCP).
        c.set_read_timeout(None).unwrap();
        c.set_write_timeout(Some(limit)).unwrap();
        assert_eq!(c.read_timeout().unwrap(), None, "{kind}: write only");
        assert_eq!(c.write_timeout().unwrap(), Some(limit), "{kind}");
        let chunk = vec![7u8; 1 << 20];
        let mut sent = 0usize;
        let e = loop {
            match (&c).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < 512 << 20, "{kind}: writes never blocked");
        };
        assert!(timed_out(&e), "{kind}: {e:?}");
        // Nothing the writer counted as sent is lost: the peer reads exactly `sent` bytes.
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), sent, "{kind}");
        assert!(got.iter().all(|&b| b == 7), "{kind}");
    }
}

#[test]
fn a_read_timeout_does_not_limit_writes() {
    // With one timeout for both directions (as before), the writer below, which waits
    // well over the read limit for room, failed with `TimedOut`.
    let (_b, conns) = both_kinds();
    // SMC-D only: the TCP fallback's socket buffers take these bytes without a wait.
    for (kind, c, s) in conns.into_iter().filter(|(_, c, _)| c.is_smc()) {
        c.set_timeout(None).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let ring = c.conn().unwrap().peer().ring_len as usize;
        let total = 4 * ring;
        let reader = std::thread::spawn(move || {
            // Let the writer wait for room for a while (longer than its read limit).
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(200) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut got = Vec::new();
            (&s).read_to_end(&mut got).unwrap();
            got.len()
        });
        (&c).write_all(&vec![1u8; total]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(join_within(reader, JOIN_TIMEOUT, "reader"), total, "{kind}");
    }
}

/// Retries `f` while it fails with `WouldBlock`, bounded by [`JOIN_TIMEOUT`].
fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

#[test]
fn non_blocking_streams_on_both_kinds() {
    let (_b, conns) = both_kinds();
    for (kind, c, s) in conns {
        c.set_nonblocking(true).unwrap();
        // Nothing to read: at once, whatever the timeout.
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let t = Instant::now();
        let e = (&c).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{kind}");
        assert!(t.elapsed() < Duration::from_secs(10), "{kind}");
        (&s).write_all(b"hi").unwrap();
        let mut buf = [0u8; 8];
        let n = retry(|| (&c).read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"hi", "{kind}");
        // No room: a short count, then `WouldBlock`; the peer gets exactly what was
        // counted.
        let chunk = vec![3u8; 1 << 20];
        let mut sent = 0usize;
        let e = loop {
            match (&c).write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < 512 << 20, "{kind}: writes never blocked");
        };
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{kind}");
        c.set_nonblocking(false).unwrap();
        c.set_timeout(Some(IO_TIMEOUT)).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), sent, "{kind}");
        // Blocking again: a read waits for data.
        let srv = std::thread::spawn(move || {
            (&s).write_all(b"again").unwrap();
            s
        });
        let mut buf = [0u8; 5];
        (&c).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"again", "{kind}");
        drop(join_within(srv, JOIN_TIMEOUT, "writer"));
    }
}

#[test]
fn listener_incoming_and_non_blocking_accept() {
    let b = ism_sim::smc::SmcBoard::lpar().unwrap();
    let (l, addr) = listen(b.stack(1));
    l.set_nonblocking(true).unwrap();
    let e = l.accept().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let c1 = connect(b.stack(0), addr);
    let (s1, peer) = retry(|| l.accept()).unwrap();
    assert_eq!(peer, c1.local_addr().unwrap());
    assert!(s1.is_smc());
    // `accept_timeout` still waits in non-blocking mode.
    let e = l.accept_timeout(Duration::from_millis(20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    l.set_nonblocking(false).unwrap();
    let client = b.stack(0).clone();
    let connector = std::thread::spawn(move || {
        (0..2)
            .map(|_| connect(&client, addr).local_addr().unwrap())
            .collect::<Vec<_>>()
    });
    let mut peers: Vec<_> = l
        .incoming()
        .take(2)
        .map(|s| s.unwrap().peer_addr().unwrap())
        .collect();
    let mut want = join_within(connector, JOIN_TIMEOUT, "connector");
    peers.sort();
    want.sort();
    assert_eq!(peers, want);
    let dbg = format!("{l:?}");
    assert!(
        dbg.contains("Listener") && dbg.contains(&addr.to_string()),
        "{dbg}"
    );
    assert!(dbg.contains("completed: 3"), "{dbg}");
    let dbg = format!("{s1:?}");
    assert!(dbg.contains("Stream") && dbg.contains("smc: true"), "{dbg}");
}

#[test]
fn silent_slow_and_failing_clients_do_not_delay_a_good_one() {
    // A patient server (a minute per CLC message): the silent and the slow client stay
    // in their handshakes for the whole test.
    let patient = StackConfig {
        clc_timeout: Duration::from_secs(60),
        ..StackConfig::default()
    };
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(StackConfig::default(), None), (patient, None)],
    );
    let (l, addr) = listen(&b.stacks[1]);
    let silent = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    // The start of a CLC header (eye-catcher), and then nothing.
    slow.write_all(&[0xE2, 0xD4, 0xC3]).unwrap();
    let mut failing = TcpStream::connect(addr).unwrap();
    failing.write_all(&[0u8; 64]).unwrap();
    assert!(eventually(JOIN_TIMEOUT, || {
        let st = l.stats();
        st.in_progress == 2 && st.failed == 1
    }));
    let t = Instant::now();
    let c = connect(&b.stacks[0], addr);
    let (s, _) = l.accept_timeout(JOIN_TIMEOUT).unwrap();
    assert!(c.is_smc() && s.is_smc());
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    ping_pong(&c, s);
    // Served while the two others were still waiting for their CLC messages.
    let st = l.stats();
    assert_eq!(
        (st.in_progress, st.completed, st.failed),
        (2, 1, 1),
        "{st:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    // Dropping the listener cuts them short (bounded: no thread left waiting a minute).
    let dropper = std::thread::spawn(move || drop(l));
    join_within(dropper, JOIN_TIMEOUT, "listener drop");
    drop((silent, slow, failing));
}
