//! SMC-D CLC handshake over the simulator: SMC-Dv2 (and v1) established on the LPAR and
//! loopback boards with link-group reuse; every decline path with the reason code Linux's
//! `net/smc/af_smc.c` picks and a transparent TCP fallback that still carries data both ways; DMB
//! exhaustion (`MAX_DMB`) and memory exhaustion (a smaller RMB, then `MEM`) on either side
//! without leaking DMBs; CLC versions above 2 read as 2, version 0 aborted; the CLC
//! timeout on both sides.

mod smcd_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ism_hal::Gid;
use ism_host_driver::ism::ErrorKind;
use ism_host_driver::smcd::clc::{ClcMessage, DeclineReason};
use ism_host_driver::smcd::device::SmcdOps;
use ism_host_driver::smcd::handshake::read_clc;
use ism_host_driver::smcd::stack::Role;
use ism_host_driver::smcd::{SmcStack, StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;

use smcd_common::*;

/// Connects twice from `cs` to `ss`: SMC-D `version` both times, first contact then reuse,
/// data both ways.
fn two_connections(cs: &Arc<SmcStack>, ss: &Arc<SmcStack>, version: u8) {
    for i in 0..2 {
        let (c, s) = pair(cs, ss);
        assert!(
            c.is_smc() && s.is_smc(),
            "fallback: {:?}",
            c.fallback_reason()
        );
        assert_eq!(c.smc_version(), Some(version));
        assert_eq!(s.smc_version(), Some(version));
        assert_eq!((c.fallback_reason(), s.fallback_reason()), (None, None));
        assert_eq!(c.first_contact(), Some(i == 0), "connection {i} (client)");
        assert_eq!(s.first_contact(), Some(i == 0), "connection {i} (server)");
        ping_pong(&c, s);
    }
}

/// One connection that must fall back with `reason` on both sides and still carry data.
fn expect_fallback(cs: &Arc<SmcStack>, ss: &Arc<SmcStack>, reason: DeclineReason) {
    let (c, s) = pair(cs, ss);
    assert!(!c.is_smc() && !s.is_smc());
    assert_eq!(c.fallback_reason(), Some(reason), "client");
    assert_eq!(s.fallback_reason(), Some(reason), "server");
    assert_eq!(c.stats().fallback, Some(reason));
    assert_eq!((c.smc_version(), c.first_contact()), (None, None));
    ping_pong(&c, s);
}

fn lpar_with(client: StackConfig, server: StackConfig) -> Custom {
    Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(client, None), (server, None)],
    )
}

fn other_ueid() -> [u8; 32] {
    let mut e = [b' '; 32];
    e[..10].copy_from_slice(b"OTHER-UEID");
    e
}

#[test]
fn v2_on_lpar_reuses_the_link_group() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = b.pair();
    two_connections(&cs, &ss, 2);
    let (cl, sl) = (cs.link_groups(), ss.link_groups());
    assert_eq!((cl.len(), sl.len()), (1, 1));
    assert_eq!((cl[0].role, sl[0].role), (Role::Client, Role::Server));
    assert_eq!(cl[0].peer_gid.gid, b.board().partition(1).gid().0);
    assert_eq!(sl[0].peer_gid.gid, b.board().partition(0).gid().0);
    for st in [&cs, &ss] {
        assert_eq!(st.counters().lgrs_created.load(Ordering::Relaxed), 1);
        assert_eq!(st.counters().lgrs_reused.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn v2_on_loopback_copy_and_nocopy() {
    for nocopy in [false, true] {
        let b = SmcBoard::loopback(nocopy).unwrap();
        let (cs, ss) = b.pair();
        assert!(Arc::ptr_eq(&cs, &ss), "loopback: one OS, one stack");
        // One stack plays both roles in one link group (Linux's `smcd_lgr_match` has no
        // role for SMC-D): the server side opens it, the client side joins it.
        for i in 0..2 {
            let (c, s) = pair(&cs, &ss);
            assert!(c.is_smc() && s.is_smc(), "{:?}", c.fallback_reason());
            assert_eq!((c.smc_version(), s.smc_version()), (Some(2), Some(2)));
            assert_eq!(s.first_contact(), Some(i == 0), "connection {i} (server)");
            assert_eq!(c.first_contact(), Some(false), "connection {i} (client)");
            assert_eq!(c.stats().nocopy, nocopy);
            ping_pong(&c, s);
        }
        let lgrs = cs.link_groups();
        assert_eq!(lgrs.len(), 1);
        assert_eq!(lgrs[0].role, Role::Server);
    }
}

#[test]
fn without_an_eid_lpar_falls_to_v1_and_loopback_declines() {
    let none = StackConfig {
        ueid: None,
        ..StackConfig::default()
    };
    // No UEID and no SEID: the client still offers v2 (as Linux), the server drops v2
    // (`NOUEID`) and the native device does v1.
    let b = lpar_with(none.clone(), none.clone());
    two_connections(&b.stacks[0], &b.stacks[1], 1);
    // Loopback is emulated ISM, v2 only: the server declines the EID-less v2 offer.
    let lo = Custom::build(
        BoardKind::Loopback,
        BoardConfig::default(),
        vec![(none, None)],
    );
    expect_fallback(&lo.stacks[0], &lo.stacks[0], DeclineReason::NOUEID);
}

#[test]
fn client_without_devices_is_nosmcdev() {
    // `smc_find_proposal_devices`: neither SMC-D nor SMC-R, `NOSMCDEV`.
    let b = SmcBoard::lpar().unwrap();
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    expect_fallback(&bare, b.stack(1), DeclineReason::NOSMCDEV);
}

#[test]
fn server_without_devices_is_nosmcddev() {
    // `smc_listen_v2_check` drops v2 (no ISMv2 device: `NOISM2SUPP`, not reported while
    // v1 is left), then `smc_find_ism_v1_device_serv` finds no device: `NOSMCDDEV`.
    let b = SmcBoard::lpar().unwrap();
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    expect_fallback(b.stack(0), &bare, DeclineReason::NOSMCDDEV);
    assert!(
        b.stack(0).link_groups().is_empty(),
        "no link group on a decline"
    );
}

#[test]
fn different_chid_is_nosmcd2dev() {
    // The server's OS knows its device by another CHID; the client offers v2 only.
    let client = StackConfig {
        offer_v1: false,
        ..StackConfig::default()
    };
    let b = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(client, None), (StackConfig::default(), Some(0x0D11))],
    );
    expect_fallback(&b.stacks[0], &b.stacks[1], DeclineReason::NOSMCD2DEV);
}

#[test]
fn unreachable_client_gid_is_nosmcd2dev() {
    // Two machines: the client's GID exists on neither of the server's devices' boards.
    let a = Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(StackConfig::default(), None); 3],
    );
    let b = lpar_with(StackConfig::default(), StackConfig::default());
    let client_gid = a.board.partition(2).gid();
    assert!(b.board.partitions().iter().all(|p| p.gid() != client_gid));
    expect_fallback(&a.stacks[2], &b.stacks[1], DeclineReason::NOSMCD2DEV);
}

#[test]
fn no_common_ueid_is_nosmcddev() {
    // `smc_find_ism_v2_device_serv` leaves an EID mismatch unreported, so a v2-only
    // client ends in `smc_listen_find_device`'s default, `NOSMCDDEV`.
    let client = StackConfig {
        ueid: Some(other_ueid()),
        offer_v1: false,
        ..StackConfig::default()
    };
    let b = lpar_with(client.clone(), StackConfig::default());
    expect_fallback(&b.stacks[0], &b.stacks[1], DeclineReason::NOSMCDDEV);
    // Loopback: a second stack (another "client" of the same device) with another UEID.
    let lo = Custom::build(
        BoardKind::Loopback,
        BoardConfig::default(),
        vec![(StackConfig::default(), None)],
    );
    let ops: Arc<dyn SmcdOps> = lo.driver(0).clone();
    let other = SmcStack::new(client, vec![ops]).unwrap();
    expect_fallback(&other, &lo.stacks[0], DeclineReason::NOSMCDDEV);
    // With v1 offered, an LPAR client without a common EID still gets SMC-Dv1.
    let v1 = StackConfig {
        ueid: Some(other_ueid()),
        ..StackConfig::default()
    };
    let b = lpar_with(v1, StackConfig::default());
    two_connections(&b.stacks[0], &b.stacks[1], 1);
}

/// Registers 4 KiB DMBs on `p`'s driver until the device or the SBA has no index left.
fn fill_dmbs(b: &SmcBoard, p: usize) -> Vec<ism_host_driver::ism::Dmb> {
    let drv = b.host(p).driver();
    let peer = Gid(b.board().partition(1 - p).gid().0);
    let mut held = Vec::new();
    let err = loop {
        match drv.register_dmb(4096, peer, None, 0) {
            Ok(d) => held.push(d),
            Err(e) => break e,
        }
        assert!(held.len() <= 4096, "DMB registration never runs out");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err:?}");
    // SBA indices 32..1920 (`drivers/s390/net/ism_drv.c` `ism_alloc_dmb`): the driver runs out before the device table.
    assert_eq!(held.len(), 1920 - 32);
    held
}

#[test]
fn dmb_exhaustion_is_max_dmb_on_either_side() {
    for full in [1, 0] {
        let b = SmcBoard::lpar().unwrap();
        let (cs, ss) = b.pair();
        let owned = |p: usize| b.host(p).driver().query_info().unwrap().dmbs_owned;
        let held = fill_dmbs(&b, full);
        let before = (owned(0), owned(1));
        expect_fallback(&cs, &ss, DeclineReason::MAX_DMB);
        // The side that did get an RMB (the server, when the client is full) gave it back.
        assert_eq!((owned(0), owned(1)), before, "DMBs leaked on the decline");
        // Nor do link groups linger: the next connection is a first contact on both sides.
        assert!(cs.link_groups().is_empty() && ss.link_groups().is_empty());
        for d in &held {
            b.host(full).driver().unregister_dmb(d).unwrap();
        }
        let (c, s) = pair(&cs, &ss);
        assert!(
            c.is_smc(),
            "SMC-D again once DMBs are free: {:?}",
            c.fallback_reason()
        );
        ping_pong(&c, s);
    }
}

fn small_memory_board(bytes: usize) -> SmcBoard {
    SmcBoard::start(
        BoardKind::Lpar,
        2,
        BoardConfig {
            partition_memory: bytes,
            ..BoardConfig::default()
        },
        IrqMode::Thread,
        StackConfig::default(),
    )
    .unwrap()
}

#[test]
fn memory_shortage_walks_down_to_a_smaller_rmb() {
    // 64 KiB partitions: the SBA and IEQ fit, the configured 256 KiB RMB does not. Linux's
    // `__smc_buf_create` tries the next smaller size when the device has no memory.
    let b = small_memory_board(64 << 10);
    let (cs, ss) = b.pair();
    let (c, s) = pair(&cs, &ss);
    assert!(c.is_smc() && s.is_smc(), "{:?}", c.fallback_reason());
    for st in [&c, &s] {
        let len = st.conn().unwrap().rmb().len;
        assert!(
            (len as usize) < StackConfig::default().buffer_size,
            "RMB of {len} bytes"
        );
    }
    ping_pong(&c, s);
}

#[test]
fn memory_exhaustion_is_mem() {
    // 24 KiB partitions: the SBA and IEQ fit, not even a 16 KiB RMB does.
    let b = small_memory_board(24 << 10);
    let (cs, ss) = b.pair();
    expect_fallback(&cs, &ss, DeclineReason::MEM);
}

/// A version-2-layout proposal of partition 0 of `b` under header version `version`.
fn raw_proposal(b: &SmcBoard, version: u8) -> Vec<u8> {
    use ism_host_driver::smcd::clc::{IpPrefix, Proposal, ProposalV2, SmcType, SmcdV2Ext};
    ClcMessage::Proposal(Proposal {
        version,
        typev1: SmcType::D,
        typev2: SmcType::D,
        smcr: Default::default(),
        ism_gid: b.board().partition(0).gid().0,
        ism_chid: b.board().chid(),
        prefix: Some(IpPrefix {
            outgoing_subnet: 0x7F00_0000,
            prefix_len: 8,
            ipv6: Vec::new(),
        }),
        v2: Some(ProposalV2 {
            eids: vec![ism_host_driver::smcd::stack::default_ueid()],
            smcd: Some(SmcdV2Ext::default()),
            ..ProposalV2::default()
        }),
    })
    .emit()
}

#[test]
fn clc_version_above_2_is_v2_and_version_0_aborts() {
    let b = SmcBoard::lpar().unwrap();
    // Version 3: read as version 2 (`smc_listen_v2_check`), answered with a v2 ACCEPT.
    let (l, addr) = listen(b.stack(1));
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    raw.write_all(&raw_proposal(&b, 3)).unwrap();
    match read_clc(&mut raw).unwrap() {
        ClcMessage::Accept(a) => assert!(a.v2.is_some(), "{a:?}"),
        m => panic!("expected an accept, got {m:?}"),
    }
    drop(raw);
    // No CONFIRM came: the server's handshake fails, gives its RMB and link group back, and
    // nothing reaches accept() (a client's failure is not the listener's error).
    assert!(eventually(JOIN_TIMEOUT, || b
        .stack(1)
        .link_groups()
        .is_empty()));
    assert_eq!(
        l.accept_timeout(Duration::from_millis(100))
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::TimedOut
    );
    // Version 0: `smc_clc_wait_msg` answers `-EPROTO`: no DECLINE, the connection closes.
    let mut bytes = raw_proposal(&b, 2);
    bytes[7] &= 0x0F;
    let (l, addr) = listen(b.stack(1));
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    raw.write_all(&bytes).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no DECLINE: {rest:?}");
    assert_eq!(
        l.accept_timeout(Duration::from_millis(100))
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::TimedOut
    );
}

#[test]
fn clc_timeout_on_both_sides() {
    let short = StackConfig {
        clc_timeout: Duration::from_millis(200),
        ..StackConfig::default()
    };
    // The server is impatient; the client of the second half is not (it may have to wait
    // while the server gives up on a silent client).
    let b = lpar_with(StackConfig::default(), short.clone());
    let ops: Arc<dyn SmcdOps> = b.driver(0).clone();
    let impatient = SmcStack::new(short, vec![ops]).unwrap();
    // A server that accepts TCP and never answers the proposal.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let (mut t, _) = mute.accept().unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let _ = t.read_to_end(&mut sink); // until the client gives up
    });
    let client = std::thread::spawn(move || Stream::connect(&impatient, addr).map(|_| ()));
    let err = join_within(client, JOIN_TIMEOUT, "client").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    join_within(holder, JOIN_TIMEOUT, "mute server");
    // A client that connects and never proposes: the server gives up on it (never an
    // error of `accept`), and serves the next meanwhile.
    let (l, addr) = listen(&b.stacks[1]);
    let silent = TcpStream::connect(addr).unwrap();
    assert!(eventually(JOIN_TIMEOUT, || l.stats().in_progress == 1));
    let c = connect(&b.stacks[0], addr);
    let (s, _) = l.accept_timeout(JOIN_TIMEOUT).unwrap();
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(c.is_smc());
    ping_pong(&c, s);
    assert!(eventually(JOIN_TIMEOUT, || l.stats().failed == 1));
    drop(silent);
}
