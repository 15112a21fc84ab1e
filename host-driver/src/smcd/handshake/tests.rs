//! The handshake cores without sockets: two stacks over functions of the fake device,
//! messages handed from one core to the other.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::ism::fake::{fake_device, FakeFunction};
use crate::ism::IsmDriver;
use crate::smcd::clc::{ClcMessage, ClcType, DeclineReason};
use crate::smcd::device::SmcdOps;
use crate::smcd::stack::StackConfig;

type FakeDriver = IsmDriver<FakeFunction, FakeFunction>;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn lan() -> LocalNet {
    LocalNet {
        ipv4: vec![(Ipv4Addr::new(10, 0, 0, 9), 24)],
        ipv6: Vec::new(),
    }
}

/// Two stacks on two functions of one fake device, and their drivers.
fn two_stacks() -> (Arc<SmcStack>, Arc<SmcStack>, Vec<Arc<FakeDriver>>) {
    let dev = fake_device(2, false);
    let drivers: Vec<Arc<FakeDriver>> = (0..2)
        .map(|i| {
            let f = FakeFunction::new(dev.clone(), i);
            Arc::new(IsmDriver::probe(f.clone(), f, 0x0123).unwrap())
        })
        .collect();
    let cfg = StackConfig {
        nocopy: false,
        buffer_size: 16 << 10,
        ..StackConfig::default()
    };
    let stack = |d: &Arc<FakeDriver>| {
        SmcStack::new(cfg.clone(), vec![d.clone() as Arc<dyn SmcdOps>]).unwrap()
    };
    (stack(&drivers[0]), stack(&drivers[1]), drivers)
}

fn dmbs(d: &FakeDriver) -> u32 {
    d.query_info().unwrap().dmbs_owned
}

fn send(step: Step) -> ClcMessage {
    match step {
        Step::Send(m) => m,
        s => panic!("expected a message to send, got {s:?}"),
    }
}

#[test]
fn client_and_server_cores_complete_a_handshake_without_sockets() {
    let (a, b, drv) = two_stacks();
    let (mut client, step) = ClientCore::start(&a, LOCAL, &lan());
    let proposal = send(step);
    let mut server = ServerCore::new(&b, lan());
    let accept = send(server.on_message(Ok(proposal)));
    let (confirm, pending) = match client.on_message(Ok(accept)) {
        Step::Confirm(m, p) => (m, p),
        s => panic!("expected a confirm, got {s:?}"),
    };
    let est_server = match server.on_message(Ok(confirm)) {
        Step::Done(e) => e,
        s => panic!("expected the connection, got {s:?}"),
    };
    let est_client = pending.commit();
    assert_eq!((est_client.version, est_server.version), (2, 2));
    assert!(est_client.first_contact && est_server.first_contact);
    assert_eq!((dmbs(&drv[0]), dmbs(&drv[1])), (1, 1));
    // A message after the end is a protocol error, not a second connection.
    assert!(matches!(
        server.on_message(Err(ClcError::Truncated)),
        Step::Abort(_)
    ));
}

#[test]
fn a_dropped_half_open_server_gives_its_rmb_and_link_group_back() {
    let (a, b, drv) = two_stacks();
    let (_client, step) = ClientCore::start(&a, LOCAL, &lan());
    let mut server = ServerCore::new(&b, lan());
    let accept = send(server.on_message(Ok(send(step))));
    assert!(matches!(accept, ClcMessage::Accept(_)));
    assert_eq!((dmbs(&drv[1]), b.link_groups().len()), (1, 1));
    // The CONFIRM never comes (timeout, reset): dropping the core undoes the ACCEPT.
    drop(server);
    assert_eq!((dmbs(&drv[1]), b.link_groups().len()), (0, 0));
}

#[test]
fn a_refused_proposal_is_declined_with_the_reason_and_takes_nothing() {
    let (a, b, drv) = two_stacks();
    let (mut client, step) = ClientCore::start(&a, LOCAL, &lan());
    let mut server = ServerCore::new(&b, lan());
    server.refuse(DeclineReason::OPTUNSUPP);
    let decline = match server.on_message(Ok(send(step))) {
        Step::Fallback {
            decline: Some(d),
            reason,
        } => {
            assert_eq!(reason, DeclineReason::OPTUNSUPP);
            d
        }
        s => panic!("expected a decline, got {s:?}"),
    };
    assert_eq!(decline.peer_diagnosis, DeclineReason::OPTUNSUPP);
    // Nothing taken on the server; the client gives its proposal's buffer back.
    assert_eq!((dmbs(&drv[1]), b.link_groups().len()), (0, 0));
    match client.on_message(Ok(ClcMessage::Decline(decline))) {
        Step::Fallback {
            decline: None,
            reason,
        } => assert_eq!(reason, DeclineReason::OPTUNSUPP),
        s => panic!("expected the client to fall back, got {s:?}"),
    }
    drop(client);
    assert_eq!((dmbs(&drv[0]), a.link_groups().len()), (0, 0));
}

#[test]
fn a_dropped_pending_client_gives_its_connection_back() {
    let (a, b, drv) = two_stacks();
    let (mut client, step) = ClientCore::start(&a, LOCAL, &lan());
    let mut server = ServerCore::new(&b, lan());
    let accept = send(server.on_message(Ok(send(step))));
    let pending = match client.on_message(Ok(accept)) {
        Step::Confirm(_, p) => p,
        s => panic!("expected a confirm, got {s:?}"),
    };
    assert_eq!((dmbs(&drv[0]), a.link_groups().len()), (1, 1));
    // The CONFIRM could not be written.
    drop(pending);
    assert_eq!((dmbs(&drv[0]), a.link_groups().len()), (0, 0));
}

#[test]
fn garbage_aborts_and_declines_fall_back() {
    let (a, b, _drv) = two_stacks();
    // Server: a malformed or unexpected first message aborts, a DECLINE falls back quietly.
    let mut s = ServerCore::new(&b, lan());
    assert!(matches!(
        s.on_message(Err(ClcError::BadEyecatcher)),
        Step::Abort(Abort::Malformed(ClcError::BadEyecatcher))
    ));
    let (_c, step) = ClientCore::start(&a, LOCAL, &lan());
    let p = send(step);
    let mut s = ServerCore::new(&b, lan());
    let accept = send(s.on_message(Ok(p.clone())));
    let mut s2 = ServerCore::new(&b, lan());
    assert!(matches!(
        s2.on_message(Ok(accept.clone())),
        Step::Abort(Abort::Unexpected(ClcType::Accept))
    ));
    let decline = ClcMessage::Decline(crate::smcd::clc::Decline::linux(DeclineReason::MEM, 2));
    assert!(matches!(
        ServerCore::new(&b, lan()).on_message(Ok(decline)),
        Step::Fallback {
            decline: None,
            reason: DeclineReason::MEM
        }
    ));
    // Client: a PROPOSAL where the ACCEPT belongs aborts.
    let (mut c, _) = ClientCore::start(&a, LOCAL, &lan());
    assert!(matches!(
        c.on_message(Ok(p)),
        Step::Abort(Abort::Unexpected(ClcType::Proposal))
    ));
}

#[test]
fn a_reused_link_group_the_client_lacks_is_a_syncerr_decline() {
    let (a, b, _drv) = two_stacks();
    // A first handshake b -> a leaves both with the link group...
    let (mut c, step) = ClientCore::start(&b, LOCAL, &lan());
    let mut s = ServerCore::new(&a, lan());
    let accept = send(s.on_message(Ok(send(step))));
    let (confirm, pending) = match c.on_message(Ok(accept)) {
        Step::Confirm(m, p) => (m, p),
        st => panic!("{st:?}"),
    };
    let _server_conn = s.on_message(Ok(confirm));
    let _client_conn = pending.commit();
    // ... then `a`, as client, reuses it: no first contact on either side.
    let (mut c2, step) = ClientCore::start(&a, LOCAL, &lan());
    let mut s2 = ServerCore::new(&b, lan());
    let accept = send(s2.on_message(Ok(send(step))));
    match &accept {
        ClcMessage::Accept(acc) => assert!(!acc.first_contact),
        m => panic!("{m:?}"),
    }
    assert!(matches!(
        c2.on_message(Ok(accept.clone())),
        Step::Confirm(..)
    ));
    // A third stack on `a`'s function has no link group: the same ACCEPT is out of sync.
    let fresh = SmcStack::new(a.config().clone(), vec![a.devices()[0].ops().clone()]).unwrap();
    let (mut c3, _) = ClientCore::start(&fresh, LOCAL, &lan());
    match c3.on_message(Ok(accept)) {
        Step::Fallback {
            decline: Some(d),
            reason: DeclineReason::SYNCERR,
        } => assert!(d.sync_error),
        st => panic!("{st:?}"),
    }
    assert!(fresh.link_groups().is_empty());
}

#[test]
fn devices_are_walked_in_linux_registration_order() {
    let dev = fake_device(3, false);
    let ops: Vec<Arc<dyn SmcdOps>> = [0x0100u16, 0xFFFF, 0x0200]
        .iter()
        .enumerate()
        .map(|(i, &chid)| {
            let f = FakeFunction::new(dev.clone(), i as u16);
            Arc::new(IsmDriver::probe(f.clone(), f, chid).unwrap()) as Arc<dyn SmcdOps>
        })
        .collect();
    let s = SmcStack::new(StackConfig::default(), ops).unwrap();
    // Loopback-ism stays in front; each later device goes right behind it.
    assert_eq!(s.linux_order(), vec![1, 2, 0]);
}

/// Waits for `cond` at most 10 s, polling.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn a_client_waits_for_its_own_handshake_that_opens_the_link_group() {
    use std::sync::atomic::Ordering;
    let (a, b, _drv) = two_stacks();
    // Two connections a -> b at once; the server handles the second proposal first, so the
    // second gets "first contact" and the first "reuse".
    let (mut c1, p1) = ClientCore::start(&a, LOCAL, &lan());
    let (mut c2, p2) = ClientCore::start(&a, LOCAL, &lan());
    let mut s2 = ServerCore::new(&b, lan());
    let acc2 = send(s2.on_message(Ok(send(p2))));
    let mut s1 = ServerCore::new(&b, lan());
    let acc1 = send(s1.on_message(Ok(send(p1))));
    assert!(matches!(&acc1, ClcMessage::Accept(x) if !x.first_contact));
    // The "reuse" answer arrives first: the client waits for its other handshake ...
    let t = std::thread::spawn(move || match c1.on_message(Ok(acc1)) {
        Step::Confirm(m, p) => Ok((m, p.commit().first_contact)),
        s => Err(alloc::format!("{s:?}")),
    });
    assert!(eventually(|| a
        .counters()
        .lgr_waits
        .load(Ordering::Relaxed)
        == 1));
    // ... which opens the link group ...
    let Step::Confirm(cf2, pend2) = c2.on_message(Ok(acc2)) else {
        panic!("second handshake")
    };
    assert!(pend2.commit().first_contact);
    // ... and then joins it instead of declining SYNCERR.
    assert!(eventually(|| t.is_finished()));
    let (cf1, first) = t.join().unwrap().unwrap();
    assert!(!first);
    assert!(matches!(s2.on_message(Ok(cf2)), Step::Done(_)));
    assert!(matches!(s1.on_message(Ok(cf1)), Step::Done(_)));
    assert_eq!((a.link_groups().len(), b.link_groups().len()), (1, 1));
}

#[test]
fn without_a_prefix_the_native_device_is_still_the_first_v2_candidate() {
    use crate::smcd::clc::SmcType;
    let (a, b, _drv) = two_stacks();
    // `smc_clc_send_proposal`: no prefix for the local address, no SMC-Dv1 offer; the
    // native device's GID and CHID are sent all the same.
    let (_c, step) = ClientCore::start(&a, LOCAL, &LocalNet::default());
    let ClcMessage::Proposal(p) = send(step) else {
        panic!("a proposal")
    };
    assert_eq!((p.typev1, p.typev2), (SmcType::N, SmcType::D));
    assert!(p.prefix.is_none());
    assert_eq!(p.ism_chid, 0x0123);
    assert!(p.v2_devices().is_empty());
    let mut s = ServerCore::new(&b, LocalNet::default());
    match send(s.on_message(Ok(ClcMessage::Proposal(p)))) {
        ClcMessage::Accept(acc) => assert_eq!(acc.v2.map(|v| v.chid), Some(0x0123)),
        m => panic!("{m:?}"),
    }
}
