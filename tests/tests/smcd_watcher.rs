//! What `ism-run` needs from the stack: a handshake on sockets the caller connected and
//! accepted itself (`Stream::client_on`, `Stream::server_on`), a watcher the interrupt path
//! calls when a connection may have become readable (`Conn::set_watcher`, with
//! `Conn::read_ready` and `Conn::peer_done`), and non-blocking reads and writes per call
//! (`Conn::read_with`, `Conn::write_with`).

mod smcd_common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ism_host_driver::smcd::Stream;
use ism_sim::board::{BoardConfig, BoardKind};

use smcd_common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A connected SMC-D pair whose handshake ran on sockets connected and accepted here.
fn pair_on_own_sockets(b: &Custom) -> (Stream, Stream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server_stack = b.stacks[1].clone();
    let server = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        Stream::server_on(&server_stack, sock)
    });
    let c = Stream::client_on(&b.stacks[0], TcpStream::connect(addr).unwrap()).unwrap();
    let s = join_within(server, LIMIT, "server handshake").unwrap();
    (c, s)
}

#[test]
fn handshakes_run_on_sockets_the_caller_connected_and_accepted() {
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    );
    let (c, s) = pair_on_own_sockets(&b);
    assert!(c.is_smc() && s.is_smc(), "{c:?} {s:?}");
    ping_pong(&c, s);
}

#[test]
fn the_watcher_runs_when_data_or_the_end_arrives_and_read_ready_says_so() {
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    );
    let (c, s) = pair_on_own_sockets(&b);
    let conn = s.conn().unwrap().clone();
    let calls = Arc::new(AtomicU64::new(0));
    let k = calls.clone();
    assert!(conn.set_watcher(Box::new(move || {
        k.fetch_add(1, Ordering::SeqCst);
    })));
    assert!(
        !conn.set_watcher(Box::new(|| {})),
        "only the first watcher counts"
    );
    assert!(!conn.read_ready() && !conn.peer_done());

    // Nothing there: a non-blocking read fails at once, even on a blocking connection.
    let mut buf = [0u8; 64];
    let e = conn.read_with(&mut buf, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);

    (&c).write_all(b"hello").unwrap();
    assert!(eventually(LIMIT, || calls.load(Ordering::SeqCst) > 0));
    assert!(eventually(LIMIT, || conn.read_ready()));
    assert_eq!(conn.read_with(&mut buf, true).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert!(!conn.read_ready(), "all read");

    let before = calls.load(Ordering::SeqCst);
    c.shutdown(Shutdown::Write).unwrap();
    assert!(eventually(LIMIT, || calls.load(Ordering::SeqCst) > before));
    assert!(eventually(LIMIT, || conn.read_ready() && conn.peer_done()));
    assert_eq!(conn.read_with(&mut buf, true).unwrap(), 0, "end of stream");
}

#[test]
fn a_non_blocking_write_to_a_full_ring_fails_at_once_on_a_blocking_connection() {
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    );
    let (c, _s) = pair_on_own_sockets(&b);
    let conn = c.conn().unwrap().clone();
    assert!(!conn.is_nonblocking());
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0usize;
    let err = loop {
        match conn.write_with(&chunk, true) {
            Ok(n) => {
                assert!(n > 0);
                sent += n;
                assert!(sent < 64 << 20, "the peer never reads: the ring must fill");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(sent >= conn.peer().ring_len as usize, "{sent}");
}

#[test]
fn shutting_down_writing_after_the_peer_closed_is_not_an_error() {
    // As TCP: `shutdown(SHUT_WR)` after the peer's close succeeds. (ism-run's echo client
    // saw EPIPE here when its reader's cursor update had carried the end of stream first
    // and the server had closed before the writer's own CDC went out.)
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    );
    let (c, s) = pair_on_own_sockets(&b);
    drop(s);
    let conn = c.conn().unwrap().clone();
    assert!(eventually(LIMIT, || conn.peer_done()));
    c.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(conn.read_with(&mut buf, true).unwrap(), 0, "end of stream");
}
