//! SMC-D behaviour as Linux's `net/smc` has it, checked by replaying what a Linux peer sends
//! (raw CLC messages over TCP, with a real device function of the board behind them) and by
//! pairs of this stack that must behave like two Linux hosts. Each test names the Linux
//! function whose behaviour it checks; `docs/linux-interop.md` has the full table.

mod smcd_common;

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ism_hal::{DmaMemory, DmbToken};
use ism_host_driver::ism::{Dmb, ErrorKind, IsmClient, IsmError};
use ism_host_driver::smcd::clc::{ClcMessage, Decline, DeclineReason, IpPrefix, Proposal, SmcType};
use ism_host_driver::smcd::device::{SmcdGid, SmcdOps};
use ism_host_driver::smcd::handshake::read_clc;
use ism_host_driver::smcd::stack::{default_ueid, event_info, EVENT_CODE_SHUTDOWN, EVENT_REQUEST};
use ism_host_driver::smcd::{SmcStack, StackConfig, Stream};
use ism_sim::smc::SmcBoard;

use smcd_common::*;

/// A device as another OS sees it: another CHID, DMB registration refused, or no ISMv2.
struct Seen {
    inner: Arc<dyn SmcdOps>,
    chid: Option<u16>,
    refuse_dmbs: bool,
    v2: Option<bool>,
}

impl Seen {
    fn wrap(inner: Arc<dyn SmcdOps>) -> Self {
        Self {
            inner,
            chid: None,
            refuse_dmbs: false,
            v2: None,
        }
    }
}

impl SmcdOps for Seen {
    fn query_remote_gid(&self, rgid: SmcdGid, vid_valid: bool, vid: u16) -> Result<(), IsmError> {
        self.inner.query_remote_gid(rgid, vid_valid, vid)
    }
    fn register_dmb(
        &self,
        len: usize,
        rgid: SmcdGid,
        vlan_id: u16,
        client: u8,
    ) -> Result<Dmb, IsmError> {
        if self.refuse_dmbs {
            return Err(IsmError::Local(ErrorKind::NoSpace));
        }
        self.inner.register_dmb(len, rgid, vlan_id, client)
    }
    fn unregister_dmb(&self, dmb: &Dmb) -> Result<(), IsmError> {
        self.inner.unregister_dmb(dmb)
    }
    fn move_data(
        &self,
        token: DmbToken,
        idx: u8,
        sf: bool,
        offset: u32,
        data: &[u8],
    ) -> Result<(), IsmError> {
        self.inner.move_data(token, idx, sf, offset, data)
    }
    fn signal_event(
        &self,
        rgid: SmcdGid,
        trigger_irq: bool,
        code: u32,
        info: u64,
    ) -> Result<(), IsmError> {
        self.inner.signal_event(rgid, trigger_irq, code, info)
    }
    fn get_chid(&self) -> u16 {
        self.chid.unwrap_or_else(|| self.inner.get_chid())
    }
    fn get_local_gid(&self) -> SmcdGid {
        self.inner.get_local_gid()
    }
    fn supports_v2(&self) -> bool {
        self.v2.unwrap_or_else(|| self.inner.supports_v2())
    }
    fn add_client(&self, client: Arc<dyn IsmClient>) -> Result<u8, IsmError> {
        self.inner.add_client(client)
    }
    fn memory(&self) -> &dyn DmaMemory {
        self.inner.memory()
    }
    fn poll_irq(&self) -> bool {
        self.inner.poll_irq()
    }
}

fn ops(b: &SmcBoard, p: usize) -> Arc<dyn SmcdOps> {
    b.host(p).driver().clone()
}

/// The PROPOSAL `stack` sends, captured by a raw server that then declines.
fn captured_proposal(stack: &Arc<SmcStack>) -> Proposal {
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw.local_addr().unwrap();
    let cap = std::thread::spawn(move || {
        let (mut t, _) = raw.accept().unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let m = read_clc(&mut t).unwrap();
        let d = Decline::linux(DeclineReason::PEERDECL, 2);
        t.write_all(&ClcMessage::Decline(d).emit()).unwrap();
        m
    });
    let c = Stream::connect(stack, addr).unwrap();
    assert_eq!(c.fallback_reason(), Some(DeclineReason::PEERDECL));
    match join_within(cap, JOIN_TIMEOUT, "capture") {
        ClcMessage::Proposal(p) => p,
        m => panic!("not a proposal: {m:?}"),
    }
}

/// A raw "Linux client": sends `first`, returns the server's answer and the socket.
fn raw_client(addr: std::net::SocketAddr, first: &ClcMessage) -> (Option<ClcMessage>, TcpStream) {
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    t.write_all(&first.emit()).unwrap();
    (read_clc(&mut t).ok(), t)
}

/// How long a test waits for connections whose handshakes are meant to fail.
const SHORT: Duration = Duration::from_millis(500);

/// Serves `n` connections of `stack` on a thread (what `accept` returned, in order).
fn serve_n(
    stack: &Arc<SmcStack>,
    n: usize,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<Vec<std::io::Result<Stream>>>,
) {
    serve_n_within(stack, n, JOIN_TIMEOUT / 2)
}

/// [`serve_n`], all accepts within `limit`: a handshake that fails never reaches `accept`
/// (it is not the listener's error), so the accepts after the deadline are `TimedOut`.
fn serve_n_within(
    stack: &Arc<SmcStack>,
    n: usize,
    limit: Duration,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<Vec<std::io::Result<Stream>>>,
) {
    let (l, addr) = listen(stack);
    let deadline = std::time::Instant::now() + limit;
    let h = std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                l.accept_timeout(left).map(|(s, _)| s)
            })
            .collect()
    });
    (addr, h)
}

/// The server delivered none of its connections: each handshake failed.
fn none_accepted(srv: std::thread::JoinHandle<Vec<std::io::Result<Stream>>>) {
    for r in join_within(srv, JOIN_TIMEOUT, "server") {
        assert_eq!(
            r.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
    }
}

/// `net/smc/smc_core.c` `smcd_lgr_match`: "there is only one lgr role for SMC-D". A
/// connection in the reverse direction joins the link group of the first one, on both
/// sides, so a Linux server's "no first contact" never meets a client without a link group.
#[test]
fn one_link_group_serves_both_directions() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let (c1, s1) = pair(&a, &z);
    assert_eq!(
        (c1.first_contact(), s1.first_contact()),
        (Some(true), Some(true))
    );
    let (c2, s2) = pair(&z, &a);
    assert!(c2.is_smc(), "{:?}", c2.fallback_reason());
    assert_eq!(
        (c2.first_contact(), s2.first_contact()),
        (Some(false), Some(false)),
        "the reverse direction reuses the link group"
    );
    assert_eq!((a.link_groups().len(), z.link_groups().len()), (1, 1));
    ping_pong(&c2, s2);
    ping_pong(&c1, s1);
}

/// `net/smc/smc_clc.c` `smc_clc_wait_msg`: a DECLINE with the synchronization flag makes
/// the receiver terminate the link group (`smc_lgr_terminate_sched`), ending every
/// connection on it. A Linux client sends one when the server reuses a link group the
/// client does not have (`smc_conn_create`).
#[test]
fn a_sync_decline_terminates_the_servers_link_group() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let proposal = captured_proposal(&a);
    let (addr, srv) = serve_n(&z, 2);
    let c = connect(&a, addr);
    assert!(c.is_smc());
    // The "Linux client" has the same GID as `a`: the server reuses its link group.
    let (answer, mut t) = raw_client(addr, &ClcMessage::Proposal(proposal));
    match &answer {
        Some(ClcMessage::Accept(acc)) => assert!(!acc.first_contact, "{acc:?}"),
        m => panic!("expected an accept: {m:?}"),
    }
    t.write_all(&ClcMessage::Decline(Decline::linux(DeclineReason::SYNCERR, 2)).emit())
        .unwrap();
    let _ = t.shutdown(Shutdown::Write);
    // The server's handshakes run side by side: `c`'s may reach the accept queue after the
    // declined one (its CONFIRM can still be on the way), so tell them apart by transport.
    let outcomes: Vec<Stream> = join_within(srv, JOIN_TIMEOUT, "server")
        .into_iter()
        .map(|r| r.expect("both connections are accepted"))
        .collect();
    let (declined, smc): (Vec<Stream>, Vec<Stream>) = outcomes
        .into_iter()
        .partition(|s| s.fallback_reason().is_some());
    assert_eq!(
        declined
            .iter()
            .map(|d| d.fallback_reason())
            .collect::<Vec<_>>(),
        vec![Some(DeclineReason::SYNCERR)],
        "the declined one falls back"
    );
    let s = smc
        .into_iter()
        .next()
        .expect("the first connection was SMC-D");
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(z.link_groups().is_empty(), "the link group is gone");
    // The established connection was on it: the server side fails.
    assert!((&s).write_all(b"after the sync error").is_err());
    drop(c);
}

/// `net/smc/af_smc.c` `smc_find_ism_v2_device_serv`: every proposed device that matches a
/// local one is a candidate, and when the RMB cannot be created on one the next is tried.
#[test]
fn the_server_tries_every_matching_v2_device() {
    for refuse_native in [true, false] {
        let b = SmcBoard::lpar().unwrap();
        let chid = b.board().chid();
        let other = chid ^ 0x0020;
        // The client offers its device twice, under two CHIDs.
        let cs = SmcStack::new(
            StackConfig::default(),
            vec![
                ops(&b, 0),
                Arc::new(Seen {
                    chid: Some(other),
                    ..Seen::wrap(ops(&b, 0))
                }),
            ],
        )
        .unwrap();
        // The server knows its device under both CHIDs; one of them refuses RMBs.
        let ss = SmcStack::new(
            StackConfig::default(),
            vec![
                Arc::new(Seen {
                    refuse_dmbs: refuse_native,
                    ..Seen::wrap(ops(&b, 1))
                }),
                Arc::new(Seen {
                    chid: Some(other),
                    refuse_dmbs: !refuse_native,
                    v2: Some(false), // no per-device ISMv2 requirement
                    ..Seen::wrap(ops(&b, 1))
                }),
            ],
        )
        .unwrap();
        let (c, s) = pair(&cs, &ss);
        assert!(
            c.is_smc() && s.is_smc(),
            "refuse_native {refuse_native}: {:?}",
            c.fallback_reason()
        );
        assert_eq!(c.smc_version(), Some(2));
        ping_pong(&c, s);
    }
}

/// `net/smc/smc_clc.c` `smc_clc_match_eid`: the system EID is compared first; and
/// `smc_ism_create_system_eid`: on s390 it is never all zeros.
#[test]
fn the_system_eid_is_built_as_on_s390_and_matched_first() {
    let b = SmcBoard::lpar().unwrap();
    let seid_cfg = StackConfig {
        seid: true,
        ..StackConfig::default()
    };
    let cs = SmcStack::new(seid_cfg.clone(), vec![ops(&b, 0)]).unwrap();
    let ss = SmcStack::new(seid_cfg, vec![ops(&b, 1)]).unwrap();
    let p = captured_proposal(&cs);
    let v2 = p.v2.clone().expect("v2 offered");
    assert!(v2.seid);
    let seid = v2.smcd.as_ref().unwrap().system_eid;
    assert_eq!(&seid[..24], b"IBM-SYSZ-ISMSEID00000000");
    assert!(seid[24..].iter().all(u8::is_ascii_hexdigit), "{seid:?}");
    assert_eq!(v2.eids, vec![default_ueid()], "the UEID is offered too");
    // The server has both in common: it negotiates the SEID.
    let (addr, srv) = serve_n_within(&ss, 1, SHORT);
    let (answer, t) = raw_client(addr, &ClcMessage::Proposal(p));
    match answer {
        Some(ClcMessage::Accept(a)) => assert_eq!(a.v2.unwrap().eid, seid),
        m => panic!("expected an accept: {m:?}"),
    }
    drop(t);
    none_accepted(srv);
}

/// `net/smc/af_smc.c` `smc_find_proposal_devices` / `smc_find_ism_v2_device_clnt`: SMC-Dv2
/// is offered whenever the system has an ISMv2 device, EIDs or not (the server decides,
/// `NOUEID`); a device whose CHID is already offered (the V1 device's included) is left out.
#[test]
fn the_client_offers_v2_without_eids_and_each_chid_once() {
    let b = SmcBoard::lpar().unwrap();
    let none = StackConfig {
        ueid: None,
        ..StackConfig::default()
    };
    // The same device under a second name with the same CHID.
    let cs = SmcStack::new(none, vec![ops(&b, 0), Arc::new(Seen::wrap(ops(&b, 0)))]).unwrap();
    let p = captured_proposal(&cs);
    assert_eq!(p.typev2, SmcType::D, "v2 offered without an EID");
    let v2 = p.v2.as_ref().unwrap();
    assert!(v2.eids.is_empty() && !v2.seid);
    assert_eq!(p.ism_chid, b.board().chid());
    assert!(
        p.v2_devices().is_empty(),
        "the V1 device's CHID is not offered again: {:?}",
        p.v2_devices()
    );
}

/// `net/smc/smc_clc.c` `smc_clc_srv_v2x_features_validate` and
/// `smc_clc_clnt_v2x_features_validate`: the feature mask of the first-contact extension
/// is what both sides have.
#[test]
fn the_feature_mask_is_what_both_sides_have() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    // Server side: a Linux client without features.
    let mut p = captured_proposal(&a);
    p.v2.as_mut().unwrap().feature_mask = 0;
    let (addr, srv) = serve_n_within(&z, 1, SHORT);
    let (answer, t) = raw_client(addr, &ClcMessage::Proposal(p));
    match answer {
        Some(ClcMessage::Accept(acc)) => {
            let fce = acc.v2.unwrap().fce.expect("first contact");
            assert_eq!(fce.v2x.unwrap().feature_mask, 0);
        }
        m => panic!("expected an accept: {m:?}"),
    }
    drop(t);
    none_accepted(srv);
    // Client side: a Linux server without features, with a real RMB on partition 1.
    let peer = b.host(1).driver().clone();
    let client_gid = SmcdGid {
        gid: b.board().partition(0).gid().0,
        gid_ext: 0,
    };
    let dmb = SmcdOps::register_dmb(&*peer, 16 << 10, client_gid, 0, 0).unwrap();
    let accept = linux_accept(
        b.board().partition(1).gid().0,
        0,
        dmb.token.0,
        b.board().chid(),
        0x0100,
        0,
    );
    let (addr, linux) = linux_server(accept);
    let fresh = SmcStack::new(StackConfig::default(), vec![ops(&b, 0)]).unwrap();
    let c = Stream::connect(&fresh, addr).unwrap();
    assert!(c.is_smc());
    match join_within(linux, JOIN_TIMEOUT, "linux server") {
        ClcMessage::Confirm(cf) => {
            let fce = cf.v2.unwrap().fce.expect("first contact");
            assert_eq!(fce.release, 1);
            assert_eq!(fce.v2x.unwrap().feature_mask, 0);
        }
        m => panic!("expected a confirm: {m:?}"),
    }
    drop(c);
    SmcdOps::unregister_dmb(&*peer, &dmb).unwrap();
}

/// `net/smc/smc_clc.c` `smc_clc_prfx_set` (the client sends the interface's real mask) and
/// `net/smc/af_smc.c` `smc_listen_prfx_check` (the server declines another subnet with
/// `DIFFPREFIX` when only SMC-Dv1 is left).
#[test]
fn smc_dv1_ip_prefixes_are_real_and_checked() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let p = captured_proposal(&a);
    let pr = p.prefix.clone().expect("prefix area");
    assert_eq!(
        (pr.outgoing_subnet, pr.prefix_len),
        (0x7F00_0000, 8),
        "lo is 127/8"
    );
    // A V1-only Linux client from another subnet.
    let v1only = Proposal {
        typev2: SmcType::N,
        v2: None,
        prefix: Some(IpPrefix {
            outgoing_subnet: 0x0A00_0000,
            prefix_len: 8,
            ipv6: Vec::new(),
        }),
        ..p
    };
    let (addr, srv) = serve_n(&z, 1);
    let (answer, t) = raw_client(addr, &ClcMessage::Proposal(v1only));
    match answer {
        Some(ClcMessage::Decline(d)) => assert_eq!(d.peer_diagnosis, DeclineReason::DIFFPREFIX),
        m => panic!("expected a decline: {m:?}"),
    }
    drop(t);
    let _ = join_within(srv, JOIN_TIMEOUT, "server");
}

/// `net/smc/smc_core.c` `smc_smcd_terminate`: a peer's SHUTDOWN event ends its link groups
/// on the VLAN the event names only.
#[test]
fn a_shutdown_event_ends_only_its_vlans_link_groups() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let (c, s) = pair(&a, &z);
    let id = a.link_groups()[0].id;
    let z_gid = z.devices()[0].ops().get_local_gid();
    let a_ops = a.devices()[0].ops().clone();
    a_ops
        .signal_event(
            z_gid,
            true,
            EVENT_CODE_SHUTDOWN,
            event_info(id, 7, EVENT_REQUEST),
        )
        .unwrap();
    // Events are handled in order: once a TESTLINK after it is answered, it was seen.
    assert!(a.test_link(0, z_gid, Duration::from_secs(10)).unwrap());
    assert_eq!(
        z.link_groups().len(),
        1,
        "VLAN 7 is not the link group's VLAN"
    );
    ping_pong(&c, s);
    a_ops
        .signal_event(
            z_gid,
            true,
            EVENT_CODE_SHUTDOWN,
            event_info(id, 0, EVENT_REQUEST),
        )
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || z
        .link_groups()
        .is_empty()));
    assert_eq!(z.counters().lgrs_terminated.load(Ordering::Relaxed), 1);
}

/// Link-group ids start at a different point in every stack (Linux's ids are global and
/// step by `SMC_LGR_NUM_INCR`; two stacks that started at the same id would confuse a peer
/// that keys link groups by id).
#[test]
fn link_group_ids_differ_between_stacks() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let (c, s) = pair(&a, &z);
    let (ia, iz) = (a.link_groups()[0].id, z.link_groups()[0].id);
    assert_ne!(ia, iz);
    assert_eq!((ia % 256, iz % 256), (0, 0), "step of 256");
    drop((c, s));
}

/// `net/smc/smc_clc.c` `smc_clc_wait_msg` / `smc_clc_msg_prop_valid`: a v2 proposal longer
/// than its parts is read (beyond the receive buffer the excess is discarded) and
/// answered; a v1 proposal whose length disagrees with its parts is `-EPROTO`.
#[test]
fn over_long_v2_messages_are_read_and_bad_v1_lengths_abort() {
    let b = SmcBoard::lpar().unwrap();
    let (a, z) = b.pair();
    let p = captured_proposal(&a);
    let bytes = ClcMessage::Proposal(p.clone()).emit();
    let padded = |extra: usize| {
        let mut m = bytes.clone();
        let n = m.len();
        m.splice(n - 4..n - 4, std::iter::repeat_n(0x5A, extra));
        m[5..7].copy_from_slice(&((n + extra) as u16).to_be_bytes());
        m
    };
    let (addr, srv) = serve_n_within(&z, 3, SHORT);
    for extra in [100, 2000] {
        let mut t = TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        t.write_all(&padded(extra)).unwrap();
        match read_clc(&mut t) {
            Ok(ClcMessage::Accept(acc)) => assert!(acc.v2.is_some()),
            m => panic!("{extra} extra bytes: expected an accept, got {m:?}"),
        }
    }
    // A v1 proposal one byte longer than its parts: no DECLINE, the connection ends.
    let v1 = Proposal {
        version: 1,
        typev2: SmcType::N,
        v2: None,
        ..p
    };
    let mut m = ClcMessage::Proposal(v1).emit();
    let n = m.len();
    m.insert(n - 4, 0);
    m[5..7].copy_from_slice(&((n + 1) as u16).to_be_bytes());
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    t.write_all(&m).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut t, &mut rest);
    assert!(rest.is_empty(), "no DECLINE: {rest:?}");
    none_accepted(srv);
}

/// `net/smc/af_smc.c` `smc_connect_ism`: when the client cannot attach the server's RMB
/// (no-copy), it declines `MEM` and falls back, rather than sending by copy to a buffer it
/// could not map.
#[test]
fn a_client_that_cannot_attach_the_servers_rmb_declines_mem() {
    let b = SmcBoard::loopback(true).unwrap();
    let st = b.stack(0).clone();
    let own = st.devices()[0].ops().get_local_gid();
    // Token 0x7777_0000_0000: no such DMB.
    let accept = linux_accept(
        own.gid,
        own.gid_ext,
        0x7777_0000_0000,
        st.devices()[0].ops().get_chid(),
        0x0200,
        1,
    );
    let (addr, linux) = linux_server(accept);
    let owned = || b.host(0).driver().query_info().unwrap().dmbs_owned;
    let before = owned();
    let c = Stream::connect(&st, addr).unwrap();
    assert_eq!(c.fallback_reason(), Some(DeclineReason::MEM));
    match join_within(linux, JOIN_TIMEOUT, "linux server") {
        ClcMessage::Decline(d) => assert_eq!(d.peer_diagnosis, DeclineReason::MEM),
        m => panic!("expected a decline: {m:?}"),
    }
    assert_eq!(owned(), before, "the client's RMB was given back");
    assert!(st.link_groups().is_empty());
}
