//! SMC-D streams on both boards: handshake, data both ways, verified.

use std::io::{Read, Write};
use std::thread;

use ism_host_driver::smcd::{Listener, Stream};
use ism_sim::board::BoardKind;
use ism_sim::smc::SmcBoard;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn echo_roundtrip(
    b: &SmcBoard,
    n: usize,
) -> (
    ism_host_driver::smcd::StreamStats,
    ism_host_driver::smcd::StreamStats,
) {
    let (cs, ss) = b.pair();
    let l = Listener::bind(&ss, "127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = thread::spawn(move || {
        // Every wait bounded: a hang fails the test instead.
        let limit = std::time::Duration::from_secs(60);
        let (mut s, _) = l.accept_timeout(limit).unwrap();
        s.set_timeout(Some(limit)).unwrap();
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        s.stats()
    });
    let mut c = Stream::connect(&cs, addr).unwrap();
    c.set_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    assert!(c.is_smc(), "fallback: {:?}", c.fallback_reason());
    assert_eq!(c.smc_version(), Some(2), "SMC-Dv2 is preferred");
    let data = pattern(n, 7);
    c.write_all(&data).unwrap();
    let mut back = vec![0u8; n];
    c.read_exact(&mut back).unwrap();
    assert!(back == data, "echoed data differs");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let st = srv.join().unwrap();
    (c.stats(), st)
}

#[test]
fn lpar_stream_echo() {
    let b = SmcBoard::lpar().unwrap();
    let (c, s) = echo_roundtrip(&b, 3 << 20);
    assert!(c.smc && !c.nocopy && s.smc);
    assert_eq!(c.conn.bytes_sent, 3 << 20);
    assert_eq!(s.conn.bytes_received, 3 << 20);
    assert!(c.conn.data_moves >= (3 << 20) / 4096);
}

#[test]
fn loopback_stream_echo_copy_and_nocopy() {
    for nocopy in [false, true] {
        let b = SmcBoard::loopback(nocopy).unwrap();
        let (c, _) = echo_roundtrip(&b, 2 << 20);
        assert_eq!(c.nocopy, nocopy);
        if nocopy {
            assert_eq!(c.conn.data_moves, 0, "no-copy moves only CDCs");
        }
    }
}

#[test]
fn board_kinds_are_what_they_say() {
    let b = SmcBoard::loopback(true).unwrap();
    assert_eq!(b.board().kind(), BoardKind::Loopback);
}
