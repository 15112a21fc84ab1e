//! SMC-D statistics (`SmcStack::stats`, `SmcStack::connection_stats`), as Linux's
//! `smcd stats` and `smcss` show them: handshakes per side over SMC-D, fallbacks with their
//! decline reason, handshake errors, the data path's totals (kept after a connection
//! closes) and the full-buffer counts.

mod smcd_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use ism_host_driver::smcd::clc::DeclineReason;
use ism_host_driver::smcd::stack::Role;
use ism_host_driver::smcd::{SmcStack, StackConfig, Stream};
use ism_sim::smc::SmcBoard;

use smcd_common::*;

#[test]
fn smcd_connections_and_their_bytes_are_counted_per_side_and_per_connection() {
    let b = SmcBoard::lpar().unwrap();
    let (cs, ss) = (b.stack(0), b.stack(1));
    let before = (cs.stats(), ss.stats());
    assert_eq!(before.0.client.smcd() + before.1.server.smcd(), 0);
    let (mut c, mut s) = pair(cs, ss);
    assert!(c.is_smc());
    c.write_all(&[7u8; 5000]).unwrap();
    let mut got = [0u8; 5000];
    s.read_exact(&mut got).unwrap();
    let (cst, sst) = (cs.stats(), ss.stats());
    assert_eq!(cst.client.smcd(), 1, "{cst:?}");
    assert_eq!(
        cst.server.smcd() + cst.client.fallbacks + cst.client.errors,
        0
    );
    assert_eq!(sst.server.smcd(), 1, "{sst:?}");
    assert_eq!(cst.client.smcd_v2, u64::from(c.smc_version() == Some(2)));
    assert_eq!((cst.connections, cst.link_groups), (1, 1));
    assert_eq!(cst.traffic.bytes_sent, 5000);
    assert_eq!(sst.traffic.bytes_received, 5000);
    // Per connection (smcss): the one connection, its peer and tokens, its counters.
    let conns = cs.connection_stats();
    assert_eq!(conns.len(), 1);
    let ci = &conns[0];
    assert_eq!(ci.stats.bytes_sent, 5000);
    assert_eq!(ci.role, Role::Client);
    assert_eq!(ci.peer_token, ss.connection_stats()[0].local_token);
    assert_eq!(ci.peer_gid.gid, ss.devices()[0].ops().get_local_gid().gid);
    assert!(!ci.nocopy && !ci.broken);
    // Closed connections leave the list but not the totals.
    drop((c, s));
    assert!(eventually(JOIN_TIMEOUT, || cs.stats().connections == 0));
    assert!(cs.connection_stats().is_empty());
    assert_eq!(cs.stats().traffic.bytes_sent, 5000);
}

#[test]
fn fallbacks_are_counted_with_their_reason_on_both_sides() {
    let b = SmcBoard::lpar().unwrap();
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    for _ in 0..2 {
        let (c, _s) = pair(&bare, b.stack(1));
        assert_eq!(c.fallback_reason(), Some(DeclineReason::NOSMCDEV));
    }
    let cst = bare.stats();
    assert_eq!(cst.client.fallbacks, 2, "{cst:?}");
    assert_eq!(
        cst.client.fallback_reasons,
        vec![(DeclineReason::NOSMCDEV, 2)]
    );
    assert_eq!(cst.client.smcd(), 0);
    let sst = b.stack(1).stats();
    assert_eq!(
        sst.server.fallback_reasons,
        vec![(DeclineReason::NOSMCDEV, 2)]
    );
    assert_eq!((sst.server.fallbacks, sst.server.smcd()), (2, 0));
    // TCP bytes are not SMC-D traffic.
    assert_eq!(sst.traffic.bytes_received, 0);
}

#[test]
fn a_handshake_that_fails_is_an_error_not_a_fallback() {
    let b = SmcBoard::lpar().unwrap();
    let cfg = StackConfig {
        clc_timeout: Duration::from_millis(200),
        ..StackConfig::default()
    };
    let stack = SmcStack::new(cfg, vec![b.stack(0).devices()[0].ops().clone()]).unwrap();
    // A TCP server that accepts and never answers the proposal: the CLC wait times out.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let silent = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let r = Stream::connect(&stack, addr);
    assert!(r.is_err(), "the handshake failed");
    let _keep = join_within(silent, JOIN_TIMEOUT, "accept");
    let st = stack.stats();
    assert_eq!(st.client.errors, 1, "{st:?}");
    assert_eq!(st.client.fallbacks + st.client.smcd(), 0);
}

#[test]
fn full_buffers_are_counted_on_both_sides() {
    let b = SmcBoard::start(
        ism_sim::board::BoardKind::Lpar,
        2,
        ism_sim::board::BoardConfig::default(),
        ism_sim::host::IrqMode::Thread,
        small_cfg(false),
    )
    .unwrap();
    let (cs, ss) = (b.stack(0), b.stack(1));
    let (c, mut s) = pair(cs, ss);
    assert!(c.is_smc());
    // Four times the 16 KiB RMB: the writer must find the peer's RMB full.
    const TOTAL: usize = 4 * SMALL_BUF;
    let w = std::thread::spawn(move || {
        let mut c = c;
        c.write_all(&[1u8; TOTAL]).map(|()| c)
    });
    // Read only once the writer is blocked: the reader then finds its RMB full.
    assert!(
        eventually(JOIN_TIMEOUT, || cs.stats().traffic.peer_buffer_full >= 1),
        "{:?}",
        cs.stats()
    );
    let mut got = vec![0u8; TOTAL];
    s.read_exact(&mut got).unwrap();
    let c = join_within(w, JOIN_TIMEOUT, "writer").unwrap();
    assert!(got.iter().all(|&x| x == 1));
    let (cst, sst) = (cs.stats(), ss.stats());
    assert!(cst.traffic.peer_buffer_full >= 1, "{cst:?}");
    assert!(cst.traffic.waits >= 1, "{cst:?}");
    assert!(sst.traffic.rmb_full >= 1, "{sst:?}");
    let ci = &cs.connection_stats()[0];
    assert_eq!(ci.stats.peer_buffer_full, cst.traffic.peer_buffer_full);
    assert_eq!(ci.stats.bytes_sent, TOTAL as u64);
    drop(c);
}
