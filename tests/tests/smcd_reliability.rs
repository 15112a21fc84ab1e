//! The stream contract under timeouts, crashes and misuse: a write that times out (or
//! fails) after a partial send returns the count; streams over a partition whose own
//! function goes down (crash, disable, reboot) fail at once instead of hanging; the
//! listener runs handshakes whether or not the program accepts, and one client's failure
//! never becomes the listener's error; `set_timeout(Some(0))` and `abort` behave alike on
//! SMC-D and TCP.

mod smcd_common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ism_host_driver::smcd::{Listener, SmcStack, StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;

use smcd_common::*;

/// Ring length of a 16 KiB RMB.
const SMALL_RING: usize = SMALL_BUF - 32;
/// How long a stream may take to notice that its own function is gone.
const NOTICE: Duration = Duration::from_secs(2);

fn small_board(kind: BoardKind, nocopy: bool) -> SmcBoard {
    SmcBoard::start(
        kind,
        2,
        BoardConfig::default(),
        IrqMode::Thread,
        small_cfg(nocopy),
    )
    .unwrap()
}

fn boards() -> Vec<SmcBoard> {
    vec![
        small_board(BoardKind::Lpar, false),
        small_board(BoardKind::Loopback, false),
        small_board(BoardKind::Loopback, true),
    ]
}

/// Waits (bounded) until the connection's reader or writer has started waiting.
fn until_waiting(s: &Stream) {
    let c = s.conn().expect("SMC-D").clone();
    assert!(
        eventually(JOIN_TIMEOUT, || c.stats().waits > 0),
        "never blocked"
    );
}

#[test]
fn a_write_that_times_out_after_a_partial_send_returns_the_count() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        c.set_timeout(Some(Duration::from_millis(100))).unwrap();
        // Nobody reads: one ring's worth goes out, then the wait times out.
        let n = (&c).write(&data).expect("a short count, not an error");
        assert_eq!(n, SMALL_RING, "what fits into the peer's ring");
        // The caller retries the rest, as for TCP; the receiver gets every byte once.
        c.set_timeout(Some(IO_TIMEOUT)).unwrap();
        let rest = data[n..].to_vec();
        let w = std::thread::spawn(move || {
            (&c).write_all(&rest).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        join_within(w, JOIN_TIMEOUT, "writer");
        assert_eq!(got.len(), data.len(), "no byte twice, none lost");
        assert!(got == data);
        // Nothing sent at all: then it is an error.
        let (c, _s) = pair(&cs, &ss);
        c.set_timeout(Some(Duration::from_millis(50))).unwrap();
        (&c).write_all(&data[..SMALL_RING]).unwrap();
        let e = (&c).write(b"more").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
    }
}

#[test]
fn a_write_broken_after_a_partial_send_returns_the_count() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        let w = std::thread::spawn(move || (&c2).write(&vec![5u8; 100_000]));
        until_waiting(&c);
        s2.abort();
        drop((s, s2));
        let n = join_within(w, JOIN_TIMEOUT, "writer").expect("a short count");
        assert_eq!(n, SMALL_RING);
        assert_eq!(
            (&c).write(b"x").unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
    }
}

/// How a partition's function goes away.
#[derive(Clone, Copy, Debug)]
enum Down {
    Crash,
    Disable,
    Reboot,
}

/// A reader and a writer blocked on partition 0's side, with no timeout set, end with an
/// error soon after partition 0's function goes down.
fn own_function_down(kind: BoardKind, how: Down) {
    let mut b = small_board(kind, false);
    let (cs, ss) = b.pair();
    let (c, _s) = pair(&cs, &ss);
    let (c2, _s2) = pair(&cs, &ss);
    for x in [&c, &c2] {
        x.set_timeout(None).unwrap();
    }
    let (rc, wc) = (c.try_clone().unwrap(), c2.try_clone().unwrap());
    let reader = std::thread::spawn(move || (&rc).read(&mut [0u8; 64]).map_err(|e| e.kind()));
    let writer = std::thread::spawn(move || {
        (&wc)
            .write_all(&vec![1u8; 10 * SMALL_RING])
            .map_err(|e| e.kind())
    });
    until_waiting(&c);
    until_waiting(&c2);
    let t0 = Instant::now();
    match how {
        Down::Crash => b.board().crash(0),
        Down::Disable => b.board().disable(0),
        Down::Reboot => b.restart_partition(0).unwrap(),
    }
    let r = join_within(reader, NOTICE + JOIN_TIMEOUT, "reader");
    let w = join_within(writer, NOTICE + JOIN_TIMEOUT, "writer");
    let took = t0.elapsed();
    assert_eq!(r, Err(ErrorKind::ConnectionReset), "{kind:?} {how:?}");
    assert!(
        matches!(w, Err(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)),
        "{kind:?} {how:?}: {w:?}"
    );
    assert!(took < NOTICE, "{kind:?} {how:?}: noticed after {took:?}");
    // Later calls fail at once too.
    assert!((&c).read(&mut [0u8; 4]).is_err());
    assert!((&c2).write(b"x").is_err());
    if matches!(how, Down::Reboot) {
        // The rebooted partition's new stack works.
        let (c, s) = pair(b.stack(0), b.stack(1));
        assert!(c.is_smc());
        ping_pong(&c, s);
    }
}

#[test]
fn streams_fail_when_their_own_partition_crashes() {
    own_function_down(BoardKind::Lpar, Down::Crash);
    own_function_down(BoardKind::Loopback, Down::Crash);
}

#[test]
fn streams_fail_when_their_own_function_is_disabled() {
    own_function_down(BoardKind::Lpar, Down::Disable);
    own_function_down(BoardKind::Loopback, Down::Disable);
}

#[test]
fn streams_fail_when_their_own_partition_reboots() {
    own_function_down(BoardKind::Lpar, Down::Reboot);
}

fn stack_with_clc_timeout(b: &SmcBoard, i: usize, t: Duration) -> Arc<SmcStack> {
    let cfg = StackConfig {
        clc_timeout: t,
        ..StackConfig::default()
    };
    SmcStack::new(cfg, vec![b.host(i).driver().clone()]).unwrap()
}

#[test]
fn handshakes_complete_before_accept() {
    let b = SmcBoard::lpar().unwrap();
    // Impatient clients: without a background handshake they would time out.
    let client = stack_with_clc_timeout(&b, 0, Duration::from_millis(500));
    let (l, addr) = listen(b.stack(1));
    let clients: Vec<Stream> = (0..3)
        .map(|_| Stream::connect(&client, addr).expect("connect without accept"))
        .collect();
    assert!(clients.iter().all(Stream::is_smc));
    assert!(eventually(JOIN_TIMEOUT, || l.stats().queued == 3));
    for _ in 0..clients.len() {
        // Handshakes finish in any order: find the client by its address.
        let (s, from) = l.accept_timeout(JOIN_TIMEOUT).unwrap();
        let c = clients
            .iter()
            .find(|c| c.local_addr().unwrap() == from)
            .expect("one of ours");
        c.set_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_timeout(Some(IO_TIMEOUT)).unwrap();
        assert!(s.is_smc());
        ping_pong(c, s);
    }
    let st = l.stats();
    assert_eq!((st.completed, st.failed, st.queued), (3, 0, 0));
}

#[test]
fn a_failing_client_is_never_the_listeners_error() {
    let b = SmcBoard::lpar().unwrap();
    let server = stack_with_clc_timeout(&b, 1, Duration::from_millis(300));
    let (l, addr) = listen(&server);
    // One says nothing, one hangs up in the middle of a CLC header, one at once.
    let silent = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(&[0xE2, 0xD4, 0xC3]).unwrap();
    drop(partial);
    drop(TcpStream::connect(addr).unwrap());
    let l = Arc::new(l);
    let l2 = l.clone();
    let srv = std::thread::spawn(move || {
        let (s, _) = l2
            .accept_timeout(JOIN_TIMEOUT)
            .expect("the good client, not an error");
        s
    });
    assert!(eventually(JOIN_TIMEOUT, || l.stats().failed == 3));
    let c = connect(b.stack(0), addr);
    let s = join_within(srv, JOIN_TIMEOUT, "accept");
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(c.is_smc() && s.is_smc());
    ping_pong(&c, s);
    assert_eq!(l.stats().completed, 1);
    drop(silent);
}

#[test]
fn the_backlog_is_bounded() {
    let b = SmcBoard::lpar().unwrap();
    let client = stack_with_clc_timeout(&b, 0, Duration::from_millis(300));
    let l = Listener::bind_with_backlog(b.stack(1), "127.0.0.1:0", 1).unwrap();
    let addr = l.local_addr().unwrap();
    let first = Stream::connect(&client, addr).unwrap();
    // The backlog is full: the next client is not served until `accept` makes room.
    let e = Stream::connect(&client, addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(l.stats().queued, 1);
    let (s, _) = l.accept_timeout(JOIN_TIMEOUT).unwrap();
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    first.set_timeout(Some(IO_TIMEOUT)).unwrap();
    ping_pong(&first, s);
    let c = Stream::connect(&client, addr).unwrap();
    assert!(c.is_smc());
}

#[test]
fn dropping_the_listener_closes_everything_it_holds() {
    let b = SmcBoard::lpar().unwrap();
    let (l, addr) = listen(b.stack(1));
    // A connection nobody accepts, and a client stuck in its handshake.
    let c = connect(b.stack(0), addr);
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(eventually(JOIN_TIMEOUT, || {
        let st = l.stats();
        st.queued == 1 && st.in_progress == 1
    }));
    let t0 = Instant::now();
    drop(l);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The unaccepted connection is closed (end of stream), the handshake cut short.
    assert_eq!((&c).read(&mut [0u8; 8]).unwrap(), 0);
    assert_eq!(silent.read(&mut [0u8; 8]).unwrap_or(0), 0);
    // The port is closed.
    assert!(TcpStream::connect(addr).is_err());
    // Its RMB and link group are gone from the server's stack.
    assert!(eventually(JOIN_TIMEOUT, || b.stack(1).link_groups()[0]
        .connections()
        .is_empty()));
}

/// An SMC-D pair and a TCP fallback pair (the client's stack has no device).
fn smc_and_fallback(b: &SmcBoard) -> Vec<(Stream, Stream)> {
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    let (cs, ss) = b.pair();
    let smc = pair(&cs, &ss);
    let tcp = pair(&bare, &ss);
    assert!(smc.0.is_smc() && !tcp.0.is_smc());
    vec![smc, tcp]
}

#[test]
fn a_zero_timeout_is_invalid_input_on_smc_and_tcp() {
    let b = SmcBoard::lpar().unwrap();
    for (c, _s) in smc_and_fallback(&b) {
        let e = c.set_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "smc {}", c.is_smc());
        // The previous limit stays; a small one still works.
        c.set_timeout(Some(Duration::from_nanos(1))).unwrap();
        c.set_timeout(None).unwrap();
    }
}

#[test]
fn abort_is_a_reset_pending_data_first_on_smc_and_tcp() {
    let b = SmcBoard::lpar().unwrap();
    for (c, s) in smc_and_fallback(&b) {
        let smc = c.is_smc();
        (&c).write_all(b"before the reset").unwrap();
        // The data has reached the peer before the abort.
        let mut got = [0u8; 6];
        (&s).read_exact(&mut got).unwrap();
        c.abort();
        let mut rest = Vec::new();
        let e = (&s).read_to_end(&mut rest).unwrap_err();
        assert_eq!(rest, b" the reset", "smc {smc}");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "smc {smc}");
        let e = (&s).write(b"x").and_then(|_| (&s).write(b"x")).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
            "smc {smc}: {e}"
        );
    }
}
