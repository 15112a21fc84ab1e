//! Closing SMC-D connections and link groups: half-close (`shutdown(Write)`: the peer reads
//! everything, then end of stream, and can still answer), drop (end of stream, the peer's
//! writes fail with `ConnectionReset` as Linux's, also a writer already blocked on a full ring), abort
//! (`ConnectionReset`, also for a reader already blocked); link-group teardown with a
//! SIGNAL_IEQ shutdown that the peer's stack acts on; a shutdown event or a crashed peer
//! partition (device event) ends connections with an error, never a hang; TESTLINK.

mod smcd_common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ism_hal::Gid;
use ism_host_driver::smcd::device::SmcdGid;
use ism_host_driver::smcd::stack::{event_info, EVENT_CODE_SHUTDOWN, EVENT_REQUEST};
use ism_host_driver::smcd::Stream;
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;

use smcd_common::*;

/// Boards to run each scenario on: LPAR (copy), loopback copy and no-copy, 16 KiB rings.
fn boards() -> Vec<SmcBoard> {
    let mk = |kind, nocopy| {
        SmcBoard::start(
            kind,
            2,
            BoardConfig::default(),
            IrqMode::Thread,
            small_cfg(nocopy),
        )
        .unwrap()
    };
    vec![
        mk(BoardKind::Lpar, false),
        mk(BoardKind::Loopback, false),
        mk(BoardKind::Loopback, true),
    ]
}

fn expect_err(r: std::io::Result<usize>, kind: ErrorKind, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
        Ok(n) => panic!("{what}: expected {kind:?}, got Ok({n})"),
    }
}

#[test]
fn shutdown_write_is_eof_after_all_data_and_the_peer_can_answer() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        let srv = std::thread::spawn(move || {
            let got = recv_pattern(&s, 1, 7_000, &mut Rng::new(1)).unwrap();
            // Half-closed: the other direction still works.
            send_pattern(&s, 2, 70_000, 5_000, &mut Rng::new(2)).unwrap();
            got
        });
        send_and_finish(&c, 1, 100_000, 9_000, &mut Rng::new(3)).unwrap();
        expect_err(
            (&c).write(b"late"),
            ErrorKind::BrokenPipe,
            "write after shutdown",
        );
        // The server drops its stream after answering: all of it, then end of stream.
        let got = recv_pattern(&c, 2, 6_000, &mut Rng::new(4)).unwrap();
        assert_eq!(got, 70_000);
        assert_eq!(join_within(srv, JOIN_TIMEOUT, "server"), 100_000);
        // End of stream stays end of stream.
        assert_eq!((&c).read(&mut [0u8; 8]).unwrap(), 0);
    }
}

#[test]
fn drop_is_eof_and_the_peers_writes_fail() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        send_pattern(&c, 5, 12_000, 4_000, &mut Rng::new(5)).unwrap();
        drop(c);
        assert_eq!(
            recv_pattern(&s, 5, 3_000, &mut Rng::new(6)).unwrap(),
            12_000
        );
        expect_err(
            (&s).write(b"anyone?"),
            ErrorKind::ConnectionReset,
            "write to a closed peer",
        );
    }
}

#[test]
fn peer_close_wakes_a_blocked_writer() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        let watch = c.try_clone().unwrap();
        // Far more than the ring: the writer blocks until the peer goes away.
        let w = std::thread::spawn(move || {
            let r = (&c).write_all(&vec![7u8; 400_000]);
            (r, c.stats().conn.bytes_sent)
        });
        assert!(eventually(Duration::from_secs(10), || s
            .conn()
            .unwrap()
            .available()
            > 0));
        until_blocked(&watch, 0);
        drop((s, watch));
        let (r, sent) = join_within(w, JOIN_TIMEOUT, "blocked writer");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert!(sent < 400_000 && sent <= 2 * (SMALL_BUF as u64));
    }
}

#[test]
fn abort_resets_the_peer_also_a_blocked_reader() {
    for b in boards() {
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        let watch = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            let r = (&s).read(&mut buf);
            (r.map_err(|e| e.kind()), s)
        });
        until_blocked(&watch, 0);
        drop(watch);
        c.abort();
        let (r, s) = join_within(reader, JOIN_TIMEOUT, "blocked reader");
        assert_eq!(r, Err(ErrorKind::ConnectionReset));
        expect_err(
            (&s).write(b"x"),
            ErrorKind::ConnectionReset,
            "peer write after abort",
        );
        expect_err(
            (&s).read(&mut [0u8; 4]),
            ErrorKind::ConnectionReset,
            "peer read again",
        );
        expect_err(
            (&c).write(b"x"),
            ErrorKind::ConnectionReset,
            "own write after abort",
        );
        expect_err(
            (&c).read(&mut [0u8; 4]),
            ErrorKind::ConnectionReset,
            "own read after abort",
        );
    }
}

fn gid_of(st: &std::sync::Arc<ism_host_driver::smcd::SmcStack>) -> SmcdGid {
    st.devices()[0].ops().get_local_gid()
}

#[test]
fn idle_link_groups_are_torn_down_and_the_peer_is_told() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = b.pair();
    let (c, s) = pair(&cs, &ss);
    assert_eq!(cs.close_idle_link_groups(), 0, "a link group in use stays");
    drop((c, s));
    assert_eq!((cs.link_groups().len(), ss.link_groups().len()), (1, 1));
    assert_eq!(cs.close_idle_link_groups(), 1);
    assert!(cs.link_groups().is_empty());
    assert_eq!(cs.counters().shutdowns_sent.load(Ordering::Relaxed), 1);
    // The peer's stack gets SIGNAL_IEQ shutdown (0x80) and drops its side.
    assert!(eventually(Duration::from_secs(10), || ss
        .link_groups()
        .is_empty()
        && ss.counters().lgrs_terminated.load(Ordering::Relaxed) == 1));
    assert_eq!(ss.counters().shutdowns_sent.load(Ordering::Relaxed), 0);
    // Next connection: first contact again, on both sides.
    let (c, s) = pair(&cs, &ss);
    assert_eq!(
        (c.first_contact(), s.first_contact()),
        (Some(true), Some(true))
    );
    ping_pong(&c, s);

    // Loopback has no signal_event in Linux: the stack's link group with itself (one: SMC-D
    // link groups serve both directions) goes silently.
    let lo = SmcBoard::loopback(true).unwrap();
    let (ls, _) = lo.pair();
    drop(pair(&ls, &ls));
    assert_eq!(ls.close_idle_link_groups(), 1);
    assert_eq!(ls.counters().shutdowns_sent.load(Ordering::Relaxed), 0);
}

/// A reader blocked on `s` (returned once it is: it has waited), to check that it ends
/// with an error (not end of stream, not a hang).
fn blocked_reader(s: Stream) -> std::thread::JoinHandle<(std::io::Result<usize>, Stream)> {
    let watch = s.try_clone().unwrap();
    let before = watch.conn().unwrap().stats().waits;
    let t = std::thread::spawn(move || {
        let r = (&s).read(&mut [0u8; 64]);
        (r, s)
    });
    until_blocked(&watch, before);
    t
}

#[test]
fn shutdown_event_terminates_the_peers_connections() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = b.pair();
    let (c, s) = pair(&cs, &ss);
    let (c2, s2) = pair(&cs, &ss);
    let lgr_id = cs.link_groups()[0].id;
    let reader = blocked_reader(s);
    // Partition 0 tells partition 1 that its link group is gone.
    let info = event_info(lgr_id, 0, EVENT_REQUEST);
    b.host(0)
        .driver()
        .signal_event(Gid(gid_of(&ss).gid), true, EVENT_CODE_SHUTDOWN, info)
        .unwrap();
    let (r, s) = join_within(reader, JOIN_TIMEOUT, "reader after shutdown event");
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    expect_err(
        (&s).write(b"x"),
        ErrorKind::ConnectionReset,
        "write after shutdown event",
    );
    expect_err(
        (&s2).read(&mut [0u8; 4]),
        ErrorKind::ConnectionReset,
        "second connection",
    );
    assert!(ss.link_groups().is_empty());
    assert_eq!(ss.counters().lgrs_terminated.load(Ordering::Relaxed), 1);
    drop((c, c2));

    // A whole-stack shutdown: own connections fail, the peer's too.
    let (c, s) = pair(&cs, &ss);
    let reader = blocked_reader(s);
    cs.shutdown();
    expect_err(
        (&c).read(&mut [0u8; 4]),
        ErrorKind::ConnectionReset,
        "own read after shutdown",
    );
    let (r, _s) = join_within(reader, JOIN_TIMEOUT, "peer reader after stack shutdown");
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert!(cs.link_groups().is_empty());
}

#[test]
fn crashed_peer_partition_ends_connections() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = b.pair();
    let (c, s) = pair(&cs, &ss);
    send_pattern(&c, 9, 1_000, 1_000, &mut Rng::new(9)).unwrap();
    let watch = s.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        // The data sent before the crash is readable, then the error.
        let mut buf = vec![0u8; 1_000];
        (&s).read_exact(&mut buf).unwrap();
        tx.send(()).unwrap();
        let r = (&s).read(&mut [0u8; 64]);
        (r, s)
    });
    rx.recv_timeout(JOIN_TIMEOUT)
        .expect("the data before the crash");
    // Blocked in the second read: it waits again (it re-waits at least every 20 ms).
    until_blocked(&watch, watch.conn().unwrap().stats().waits);
    drop(watch);
    b.board().crash(0);
    let (r, s) = join_within(reader, JOIN_TIMEOUT, "reader after peer crash");
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert!(
        (&s).write(b"x").is_err(),
        "write to a crashed peer must fail"
    );
    assert!(eventually(Duration::from_secs(10), || ss
        .link_groups()
        .is_empty()));
    // The crashed side's own writes fail too (its function is down).
    assert!((&c).write(&[1u8; 100]).is_err());
    // The peer does not answer TESTLINK any more.
    let r = ss.test_link(0, gid_of(&cs), Duration::from_millis(200));
    assert!(!matches!(r, Ok(true)), "{r:?}");
    b.board().restart(0);
}

#[test]
fn testlink_is_answered() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = b.pair();
    for _ in 0..3 {
        assert!(cs
            .test_link(0, gid_of(&ss), Duration::from_secs(10))
            .unwrap());
    }
    // The answer can reach the requester before the answering stack counts it.
    assert!(eventually(Duration::from_secs(10), || ss
        .counters()
        .testlinks_answered
        .load(Ordering::Relaxed)
        == 3));
    assert!(ss
        .test_link(0, gid_of(&cs), Duration::from_secs(10))
        .unwrap());
    // A GID nobody has: no answer (or the device refuses to signal it).
    let nobody = SmcdGid {
        gid: 0xDEAD_BEEF,
        gid_ext: 0,
    };
    let r = cs.test_link(0, nobody, Duration::from_millis(100));
    assert!(!matches!(r, Ok(true)), "{r:?}");
    // The connection path is untouched by all this.
    let (c, s) = pair(&cs, &ss);
    (&c).write_all(b"still fine").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"still fine");
}

/// RMBs kept per link group (Linux's `smc_buf_unuse`/`smc_buf_get_slot`): the RMBs of
/// connections that both sides closed serve the next connections, zeroed (their data is
/// right from the first byte), with no REG_DMB; an aborted connection's RMB is not kept;
/// the kept ones go when the link group ends. On every board, no-copy included (the
/// sender detaches the peer's RMB before its close, so the next connection's attach of
/// the same RMB succeeds).
#[test]
fn the_rmbs_of_closed_connections_serve_the_next_ones_of_their_link_group() {
    let reused = |st: &std::sync::Arc<ism_host_driver::smcd::SmcStack>| {
        st.counters().rmbs_reused.load(Ordering::Relaxed)
    };
    for b in boards() {
        let dmbs = || b.board().device().dmbs_in_use();
        let (cs, ss) = b.pair();
        let nocopy = cs.config().nocopy;
        // The loopback board has one stack: it is the client and the server.
        let per_round = if std::sync::Arc::ptr_eq(&cs, &ss) {
            2
        } else {
            1
        };
        for round in 0..4u64 {
            let (c, s) = pair(&cs, &ss);
            assert_eq!(
                c.stats().nocopy,
                nocopy && b.board().kind() == BoardKind::Loopback
            );
            // Both directions, more than a ring (16 KiB) each, so that stale cursors or
            // flags of an earlier connection would show.
            let srv = std::thread::spawn(move || {
                let got = recv_pattern(&s, round, 4_000, &mut Rng::new(round)).unwrap();
                send_and_finish(&s, round + 100, 40_000, 3_000, &mut Rng::new(round + 100))
                    .unwrap();
                got
            });
            send_and_finish(&c, round, 40_000, 3_000, &mut Rng::new(round)).unwrap();
            assert_eq!(
                recv_pattern(&c, round + 100, 4_000, &mut Rng::new(round + 100)).unwrap(),
                40_000
            );
            assert_eq!(join_within(srv, Duration::from_secs(20), "server"), 40_000);
            // The server closed first (its thread ended): its RMB waits for the client's
            // close, which comes now; the client's is free at once.
            drop(c);
            // One RMB per side stays registered, whatever the round.
            assert_eq!(dmbs(), 2, "round {round}");
            assert_eq!(
                (reused(&cs), reused(&ss)),
                (per_round * round, per_round * round),
                "round {round}"
            );
        }
        // An aborted connection's RMB is not kept.
        let (c, s) = pair(&cs, &ss);
        assert_eq!((reused(&cs), reused(&ss)), (4 * per_round, 4 * per_round));
        c.abort();
        drop((c, s));
        assert_eq!(
            cs.link_groups()
                .iter()
                .map(|l| l.kept_rmbs())
                .sum::<usize>(),
            0,
            "the aborting side keeps nothing"
        );
        // The link group's end unregisters what it kept.
        assert!(cs.close_idle_link_groups() == 1);
        assert!(eventually(Duration::from_secs(10), || dmbs() == 0));
    }
}
