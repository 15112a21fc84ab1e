//! A hostile peer: forged CDC cursors written straight into a victim's RMB through the
//! device, and malformed CLC from raw TCP clients and servers.
//!
//! * A forged consumer cursor (count past the ring, huge wraps) never lets the victim's
//!   writer go more than a ring ahead of what it may overwrite, nor write outside the
//!   peer's ring: the peer partition's memory outside its RMB is unchanged, and the ring
//!   holds only the victim's bytes.
//! * A forged producer cursor never lets the victim's reader take more than one ring of
//!   bytes, all from inside its own ring.
//! * Malformed, truncated, oversized, wrong-type and mutated CLC messages get a DECLINE or a
//!   closed connection; the server never panics, keeps accepting, and leaks no DMB; a
//!   client whose server answers garbage gets an error (or a fallback), never a panic.

mod smcd_common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ism_hal::{DevAddr, DmaMemory};
use ism_host_driver::smcd::cdc::{CdcMessage, ConnStateFlags, Cursor, ProdFlags};
use ism_host_driver::smcd::clc::{ClcMessage, Decline, DeclineReason};
use ism_host_driver::smcd::handshake::read_clc;
use ism_host_driver::smcd::{StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind, SimDriver};
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;

use smcd_common::*;

fn small_board(kind: BoardKind, nocopy: bool) -> SmcBoard {
    let cfg = StackConfig {
        clc_timeout: Duration::from_millis(500),
        ..small_cfg(nocopy)
    };
    let bc = BoardConfig {
        partition_memory: 16 << 20,
        ..BoardConfig::default()
    };
    SmcBoard::start(kind, 2, bc, IrqMode::Thread, cfg).unwrap()
}

/// Hash of a partition's memory with the given `(addr, len)` ranges read as zeros.
fn hash_except(mem: &dyn DmaMemory, skip: &[(u64, u64)]) -> u64 {
    let mut h = DefaultHasher::new();
    let (base, size) = (mem.base().0, mem.size());
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        mem.read(DevAddr(base + off), &mut buf[..n]).unwrap();
        for &(a, l) in skip {
            let (lo, hi) = (a.max(base + off), (a + l).min(base + off + n as u64));
            if lo < hi {
                buf[(lo - base - off) as usize..(hi - base - off) as usize].fill(0);
            }
        }
        buf[..n].hash(&mut h);
        off += n as u64;
    }
    h.finish()
}

/// The partition holding the server end (LPAR: 1; loopback: the only one).
fn peer_part(b: &SmcBoard) -> usize {
    b.board().partitions().len() - 1
}

/// Writes a forged CDC into `victim`'s RMB, as its peer may (the peer is the writer the
/// device authorises), with the signal.
fn forge(peer: &SimDriver, victim: &Stream, prod: Cursor, cons: Cursor) {
    let msg = CdcMessage {
        prod,
        cons,
        prod_flags: ProdFlags::empty(),
        conn_state: ConnStateFlags::empty(),
    };
    let rmb = victim.conn().unwrap().rmb();
    peer.move_data(rmb.token, 0, true, 0, &msg.emit()).unwrap();
}

#[test]
fn forged_consumer_cursor_cannot_push_the_writer_past_the_ring() {
    for (kind, nocopy) in [(BoardKind::Lpar, false), (BoardKind::Loopback, true)] {
        let b = small_board(kind, nocopy);
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        c.set_timeout(Some(Duration::from_millis(150))).unwrap();
        let pp = peer_part(&b);
        let peer = b.host(pp).driver();
        let ring = c.conn().unwrap().peer().ring_len;
        let srmb = *s.conn().unwrap().rmb();
        let vrmb = *c.conn().unwrap().rmb();
        let skip = [
            (srmb.addr.0, srmb.len as u64),
            (vrmb.addr.0, vrmb.len as u64),
            (peer.sba_addr().0, 4096),
        ];
        let mem: &dyn DmaMemory = peer.memory();
        let before = hash_except(mem, &skip);
        let forged = [
            Cursor::new(0, ring + 1000),
            Cursor::new(0xFFFF, u32::MAX),
            Cursor::new(7, 0),
            Cursor::new(1, ring - 1),
            Cursor::new(0, 5),
            Cursor::new(3, ring),
        ];
        let chunk = [0x55u8; 4096];
        for cons in forged {
            forge(peer, &c, Cursor::default(), cons);
            let start = c.stats().conn.bytes_sent;
            let err = loop {
                match (&c).write(&chunk) {
                    Ok(_) => {}
                    Err(e) => break e,
                }
                let sent = c.stats().conn.bytes_sent - start;
                assert!(
                    sent <= 4 * ring as u64,
                    "{kind:?} cons {cons:?}: {sent} bytes sent"
                );
            };
            assert_eq!(
                err.kind(),
                ErrorKind::TimedOut,
                "{kind:?} cons {cons:?}: {err}"
            );
            let sent = c.stats().conn.bytes_sent - start;
            // At most one ring of room beyond what the forged cursor claims was consumed
            // (and that claim is itself at most a ring).
            assert!(
                sent <= 2 * ring as u64,
                "{kind:?} cons {cons:?}: {sent} bytes sent"
            );
        }
        // Nothing outside the peer's RMB changed; its ring holds only our bytes (or zeros).
        assert_eq!(
            hash_except(mem, &skip),
            before,
            "{kind:?}: memory outside the RMB changed"
        );
        let mut rmb = vec![0u8; srmb.len as usize];
        mem.read(srmb.addr, &mut rmb).unwrap();
        assert!(
            rmb[32..].iter().all(|&x| x == 0x55 || x == 0),
            "{kind:?}: foreign bytes in ring"
        );
        assert!(
            CdcMessage::parse(&rmb[..32]).is_ok(),
            "{kind:?}: CDC area overwritten"
        );
        drop((c, s));
    }
}

#[test]
fn forged_producer_cursor_reads_at_most_a_ring_from_inside_it() {
    for (kind, nocopy) in [(BoardKind::Lpar, false), (BoardKind::Loopback, true)] {
        let b = small_board(kind, nocopy);
        let (cs, ss) = b.pair();
        let (c, _s) = pair(&cs, &ss);
        c.set_timeout(Some(Duration::from_millis(150))).unwrap();
        let peer = b.host(peer_part(&b)).driver();
        let conn = c.conn().unwrap();
        let ring = conn.ring_len();
        let token = conn.rmb().token;
        // The ring is full of 0xAA: any other byte read came from outside it.
        peer.move_data(token, 0, false, 32, &vec![0xAAu8; ring as usize])
            .unwrap();
        let forged = [
            Cursor::new(1, 0), // exactly one full ring: legal
            Cursor::new(0xFFFF, u32::MAX),
            Cursor::new(5, 100),
            Cursor::new(1, ring + 7),
            Cursor::new(2, 10),
            Cursor::new(0x8000, 3),
        ];
        let mut buf = vec![0u8; 3 * ring as usize];
        for prod in forged {
            forge(peer, &c, prod, Cursor::default());
            let mut got = 0u64;
            let err = loop {
                match (&c).read(&mut buf) {
                    Ok(0) => panic!("{kind:?} prod {prod:?}: end of stream"),
                    Ok(n) => {
                        assert!(n <= ring as usize);
                        assert!(
                            buf[..n].iter().all(|&x| x == 0xAA),
                            "{kind:?}: read outside ring"
                        );
                        got += n as u64;
                        assert!(
                            got <= 4 * ring as u64,
                            "{kind:?} prod {prod:?}: {got} bytes"
                        );
                    }
                    Err(e) => break e,
                }
            };
            assert_eq!(
                err.kind(),
                ErrorKind::TimedOut,
                "{kind:?} prod {prod:?}: {err}"
            );
            assert!(
                got <= ring as u64,
                "{kind:?} prod {prod:?}: {got} bytes from one CDC"
            );
        }
    }
}

/// A real client's proposal, captured by a raw TCP server.
fn captured_proposal(b: &SmcBoard) -> Vec<u8> {
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw.local_addr().unwrap();
    let cap = std::thread::spawn(move || {
        let (mut t, _) = raw.accept().unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let m = read_clc(&mut t).unwrap();
        let d = Decline::linux(DeclineReason::PEERDECL, 2);
        t.write_all(&ClcMessage::Decline(d).emit()).unwrap();
        m.emit()
    });
    let c = Stream::connect(b.stack(0), addr).unwrap();
    assert_eq!(c.fallback_reason(), Some(DeclineReason::PEERDECL));
    join_within(cap, JOIN_TIMEOUT, "capture")
}

/// Sends `bytes` (then `after`, if the server answered) and returns what came back: a CLC
/// message, or `None` for a closed/failed connection.
fn hostile_client(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    after: Option<&[u8]>,
) -> Option<ClcMessage> {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = t.write_all(bytes);
    if after.is_none() && bytes.len() < 8 + 4 {
        let _ = t.shutdown(Shutdown::Write);
    }
    let answer = read_clc(&mut t).ok();
    if let (Some(ClcMessage::Accept(_)), Some(more)) = (&answer, after) {
        let _ = t.write_all(more);
        let mut sink = Vec::new();
        let _ = t.read_to_end(&mut sink);
    }
    answer
}

#[test]
fn hostile_clc_clients_get_a_decline_or_a_closed_connection() {
    let b = small_board(BoardKind::Lpar, false);
    let proposal = captured_proposal(&b);
    let owned = || b.host(1).driver().query_info().unwrap().dmbs_owned;
    let baseline = owned();
    let mut cases: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), None),
        // Oversized: a proposal header claiming 2048 bytes.
        (
            [
                &[0xE2, 0xD4, 0xC3, 0xD9, 1, 0x08, 0x00, 0x20][..],
                &[0u8; 2040][..],
            ]
            .concat(),
            None,
        ),
        // A 52-byte "proposal" of zeros with the right frame.
        (
            [
                &[0xE2, 0xD4, 0xC3, 0xD9, 1, 0, 52, 0x21][..],
                &[0u8; 40][..],
                &[0xE2, 0xD4, 0xC3, 0xD9][..],
            ]
            .concat(),
            None,
        ),
        // Truncated: the header promises more than ever comes.
        (proposal[..proposal.len() / 2].to_vec(), None),
        (proposal[..5].to_vec(), None),
        // A DECLINE, an ACCEPT (wrong direction) as the first message.
        (
            ClcMessage::Decline(Decline::linux(DeclineReason::MEM, 2)).emit(),
            None,
        ),
        (forged_accept(0x0D10, 0x1234_0000_0000).emit(), None),
        // A real proposal, then garbage / a truncated frame / nothing instead of a CONFIRM.
        (
            proposal.clone(),
            Some(b"not a confirm, not even close......................".to_vec()),
        ),
        (proposal.clone(), Some(proposal[..20].to_vec())),
        (proposal.clone(), Some(Vec::new())),
        (proposal.clone(), Some(proposal.clone())),
    ];
    // Seeded mutations of the real proposal.
    let mut rng = Rng::new(77);
    for _ in 0..24 {
        let mut m = proposal.clone();
        for _ in 0..rng.usize_in(1, 4) {
            let i = rng.usize_in(0, m.len() - 1);
            m[i] = rng.next_u64() as u8;
        }
        if rng.usize_in(0, 3) == 0 {
            m.truncate(rng.usize_in(8, m.len()));
        }
        cases.push((m, None));
    }
    let n = cases.len() as u64;
    let (l, addr) = listen(b.stack(1));
    for (i, (bytes, after)) in cases.iter().enumerate() {
        let answer = hostile_client(addr, bytes, after.as_deref());
        if let Some(m) = &answer {
            assert!(
                matches!(m, ClcMessage::Decline(_) | ClcMessage::Accept(_)),
                "case {i}: {m:?}"
            );
        }
        // Garbage where a PROPOSAL belongs is `-EPROTO` in Linux's `smc_clc_wait_msg`: the
        // connection ends without a DECLINE (a SYNCERR DECLINE would make a Linux client
        // touch a link group it does not have yet).
        if i < 3 {
            assert!(answer.is_none(), "case {i}: {answer:?}");
        }
    }
    // Every attack ended, as a failed handshake or a fallback connection; none is an
    // error of the listener.
    assert!(eventually(JOIN_TIMEOUT, || {
        let st = l.stats();
        st.completed + st.failed == n
    }));
    let fallbacks = l.stats().completed;
    for _ in 0..fallbacks {
        let (s, _) = l.accept_timeout(JOIN_TIMEOUT).unwrap();
        assert!(!s.is_smc());
    }
    // Still serving: a real client gets SMC-D.
    let c = connect(b.stack(0), addr);
    let (last, _) = l
        .accept_timeout(JOIN_TIMEOUT)
        .expect("accept after the attacks");
    last.set_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(c.is_smc(), "{:?}", c.fallback_reason());
    ping_pong(&c, last);
    drop(c);
    // No RMB of a failed handshake stays registered: what the server owns beyond the
    // baseline is the real connection's RMB, kept by its link group for the next one
    // (`KEPT_RMBS`), which goes with the link group.
    let kept = || {
        b.stack(1)
            .link_groups()
            .iter()
            .map(|l| l.kept_rmbs() as u32)
            .sum::<u32>()
    };
    assert!(
        eventually(Duration::from_secs(5), || owned() == baseline + kept()),
        "{} DMBs leaked",
        owned() - baseline - kept()
    );
    assert!(kept() <= 1);
    b.stack(1).close_idle_link_groups();
    assert!(
        eventually(Duration::from_secs(5), || owned() == baseline),
        "{} DMBs left after the link group ended",
        owned() - baseline
    );
}

fn forged_accept(chid: u16, token: u64) -> ClcMessage {
    linux_accept(0x4953_4D00_0001_0001, 0, token, chid, 1, 1)
}

#[test]
fn a_hostile_server_never_makes_the_client_panic() {
    let b = small_board(BoardKind::Lpar, false);
    let answers: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        vec![0xE2, 0xD4, 0xC3, 0xD9, 2, 0x08, 0x00, 0x20],
        vec![0xE2, 0xD4, 0xC3, 0xC4, 2, 0, 78, 0x31],
        vec![0xE2, 0xD4, 0xC3, 0xC4, 2, 0, 110],
        forged_accept(0x0D10, 1).emit()[..60].to_vec(),
        Vec::new(),
        ClcMessage::Decline(Decline::linux(DeclineReason::MAX_DMB, 2)).emit(),
        forged_accept(0x0BAD, 1).emit(),
        // Plausible accept with a token nobody registered: the data path fails later.
        forged_accept(0x0D10, 0x7777_0000_0000).emit(),
    ];
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw.local_addr().unwrap();
    let n = answers.len();
    let srv = std::thread::spawn(move || {
        for a in answers {
            let (mut t, _) = raw.accept().unwrap();
            t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = read_clc(&mut t);
            let _ = t.write_all(&a);
            let _ = t.shutdown(Shutdown::Write);
            let mut sink = Vec::new();
            let _ = t.read_to_end(&mut sink);
        }
    });
    let cs = b.stack(0).clone();
    for i in 0..n {
        let cs = cs.clone();
        let client = std::thread::spawn(move || {
            let r = Stream::connect(&cs, addr);
            match &r {
                Ok(s) if s.is_smc() => {
                    s.set_timeout(Some(Duration::from_millis(200))).unwrap();
                    // The peer's RMB does not exist: sending fails, it does not panic.
                    assert!((&*s).write(b"data").is_err(), "case {i}");
                }
                _ => {}
            }
            r.map(|s| s.fallback_reason()).map_err(|e| e.kind())
        });
        let r = join_within(client, JOIN_TIMEOUT, "client");
        match i {
            0..=5 => assert!(r.is_err(), "case {i}: {r:?}"),
            6 => assert_eq!(r, Ok(Some(DeclineReason::MAX_DMB))),
            // An accepted CHID that was never offered: `-EPROTO`, no DECLINE
            // (`smc_v2_determine_accepted_chid`).
            7 => assert_eq!(r, Err(std::io::ErrorKind::InvalidData)),
            _ => assert!(matches!(r, Ok(None) | Err(_)), "case {i}: {r:?}"),
        }
    }
    join_within(srv, JOIN_TIMEOUT, "raw server");
    let _ = Arc::strong_count(&cs);
}
