//! The host driver (`ism_host_driver::ism::IsmDriver`) against the simulator boards:
//! probe/remove, DMB moves both ways with the data verified, chunking at 4 KiB with one
//! signal, interrupts and their coalescing, the IEQ wrap and overwrite, software events,
//! QUERY_RGID with VLANs, no-copy attach on loopback, and a partition crash mid-transfer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ism_firmware::wire::move_request::{MoveRequest, MAX_MOVE_LEN};
use ism_firmware::{MoveError, ReturnCode};
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, DmbToken, Gid};
use ism_host_driver::ism::{
    event_code, Bus, BusError, ErrorKind, EventType, HostMemory, IsmDriver, IsmError,
    RecordingClient,
};
use ism_host_driver::smcd::device::{SmcdGid, SmcdOps};
use ism_sim::board::SimPort;
use ism_sim::{BoardConfig, BoardKind, Host, IrqMode, SimBoard};
use ism_tests::util::{wait_until, Rng};

const WAIT: Duration = Duration::from_secs(10);

fn board(kind: BoardKind, n: usize, mib: usize) -> SimBoard {
    let cfg = BoardConfig {
        partition_memory: mib << 20,
        ..BoardConfig::default()
    };
    SimBoard::build(kind, n, cfg)
}

/// Starts a host on every partition, each with one recording client (id 0).
fn hosts(b: &SimBoard, mode: IrqMode) -> (Vec<Host>, Vec<Arc<RecordingClient>>) {
    let hs: Vec<Host> = b
        .partitions()
        .iter()
        .map(|p| Host::start(p, b.chid(), mode, None).expect("probe"))
        .collect();
    let cs: Vec<Arc<RecordingClient>> = hs
        .iter()
        .map(|h| {
            let c = Arc::new(RecordingClient::default());
            assert_eq!(h.driver().add_client(c.clone()).expect("client"), 0);
            c
        })
        .collect();
    (hs, cs)
}

fn read(mem: &impl DmaMemory, addr: DevAddr, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read(addr, &mut v).expect("read own memory");
    v
}

/// QUERY_INFO through the raw port: (sba, ieq).
fn registered_sba_ieq(port: &SimPort) -> (u64, u64) {
    let mut req = [0u8; 8];
    let n = ism_firmware::command::Request::QueryInfo
        .emit(&mut req)
        .unwrap();
    let mut resp = [0u8; COMMAND_AREA_SIZE];
    port.command(&req[..n], &mut resp).unwrap();
    assert_eq!(&resp[4..6], &[0, 0], "QUERY_INFO failed");
    let at = |o: usize| u64::from_be_bytes(resp[o..o + 8].try_into().unwrap());
    (at(32), at(40))
}

#[test]
fn probe_remove_and_reprobe() {
    let b = board(BoardKind::Lpar, 2, 16);
    let p = b.partition(0);
    let free0 = p.host_memory().free_bytes();
    assert_eq!(registered_sba_ieq(p.port()), (0, 0));
    let d = p.probe(b.chid()).expect("probe");
    assert_eq!(d.gid(), p.gid());
    assert_eq!(d.chid(), b.chid());
    assert!(d.supports_v2(), "the sim accepts the 0x1FFF probe");
    assert!(!d.supports_attach(), "no attach across LPARs");
    let info = d.query_info().unwrap();
    assert_eq!(info.gid, p.gid());
    assert_eq!(info.sba, d.sba_addr());
    assert_eq!(info.ieq_len, 512);
    assert_eq!(info.vlans, vec![0x1FFF]);
    assert_eq!(registered_sba_ieq(p.port()), (info.sba.0, info.ieq.0));
    assert!(p.host_memory().free_bytes() < free0);
    d.remove();
    d.remove(); // harmless
    assert_eq!(registered_sba_ieq(p.port()), (0, 0));
    assert_eq!(
        p.host_memory().free_bytes(),
        free0,
        "remove frees the SBA and IEQ pages"
    );
    // Re-probe after remove: everything works again.
    let d2 = p.probe(b.chid()).expect("re-probe");
    assert_eq!(d2.gid(), p.gid());
    let peer = b.partition(1).probe(b.chid()).unwrap();
    let c = Arc::new(RecordingClient::default());
    d2.add_client(c.clone()).unwrap();
    let dmb = d2.register_dmb(4096, peer.gid(), None, 0).unwrap();
    peer.move_data(dmb.token, 0, true, 0, b"again").unwrap();
    assert!(b.partition(0).irq().wait(WAIT));
    d2.handle_irq();
    assert_eq!(c.wait_signals(1, WAIT), vec![(dmb.sba_idx, 0x1000)]);
    assert_eq!(read(d2.memory(), dmb.addr, 5), b"again");
    d2.unregister_dmb(&dmb).unwrap();
    d2.remove();
    peer.remove();
    assert_eq!(p.host_memory().free_bytes(), free0);
}

/// A bus that records every store-block (request word, length) on its way to the device.
#[derive(Clone)]
struct RecordingBus {
    inner: SimPort,
    stores: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl Bus for RecordingBus {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        self.inner.command(request, response)
    }
    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        self.stores.lock().unwrap().push((request, data.len()));
        self.inner.store_block(request, data)
    }
}

#[test]
fn moves_are_chunked_at_4k_with_exactly_one_signal() {
    let b = board(BoardKind::Lpar, 2, 16);
    let owner = b.partition(0).probe(b.chid()).unwrap();
    let stores = Arc::new(Mutex::new(Vec::new()));
    let bus = RecordingBus {
        inner: b.partition(1).port().clone(),
        stores: stores.clone(),
    };
    let writer = IsmDriver::probe(b.partition(1).host_memory().clone(), bus, b.chid()).unwrap();
    owner
        .add_client(Arc::new(RecordingClient::default()))
        .unwrap();
    let dmb = owner.register_dmb(1 << 20, writer.gid(), None, 0).unwrap();
    let mut rng = Rng::new(0x15A4_0001);
    let cases: Vec<(u32, usize)> = [
        (0u32, 4096usize),
        (1, 4095),
        (4095, 2),
        (4096, 8192),
        (100, 0),
        (0, 1 << 20),
    ]
    .into_iter()
    .chain((0..20).map(|_| {
        let off = rng.range(0, (1 << 20) - 1) as u32;
        let len = rng.range(1, (1 << 20) - u64::from(off)) as usize;
        (off, len)
    }))
    .collect();
    for (off, len) in cases {
        let data = rng.bytes(len);
        stores.lock().unwrap().clear();
        let s0 = b.stats();
        writer.move_data(dmb.token, 0, true, off, &data).unwrap();
        let log = stores.lock().unwrap().clone();
        // Expected chunks: each ends at a 4 KiB boundary of the offset, except the last.
        let mut want = Vec::new();
        let (mut o, mut rest) = (off as usize, len);
        while rest > 0 {
            let n = (MAX_MOVE_LEN - o % MAX_MOVE_LEN).min(rest);
            want.push((o as u32, n, rest == n));
            o += n;
            rest -= n;
        }
        let got: Vec<(u32, usize, bool)> = log
            .iter()
            .map(|&(w, n)| {
                let m = MoveRequest::parse(w);
                assert_eq!(m.token, dmb.token);
                assert_eq!(m.dmbe_idx, 0);
                (m.offset, n, m.signal)
            })
            .collect();
        assert_eq!(got, want, "chunks of a {len}-byte move at offset {off}");
        let s1 = b.stats();
        assert_eq!(s1.moves - s0.moves, want.len() as u64);
        assert_eq!(
            s1.signals - s0.signals,
            u64::from(len > 0),
            "exactly one signal"
        );
        assert_eq!(
            read(owner.memory(), DevAddr(dmb.addr.0 + u64::from(off)), len),
            data
        );
    }
    // A move past 2^23 is refused locally, before anything reaches the device.
    stores.lock().unwrap().clear();
    let e = writer
        .move_data(dmb.token, 0, true, 1 << 23, b"x")
        .unwrap_err();
    assert_eq!(e, IsmError::Local(ErrorKind::InvalidArgument));
    assert!(stores.lock().unwrap().is_empty());
    owner.unregister_dmb(&dmb).unwrap();
}

#[test]
fn dmbs_both_ways_with_random_sizes_offsets_and_data() {
    let b = board(BoardKind::Lpar, 2, 64);
    let (hs, cs) = hosts(&b, IrqMode::Thread);
    let mut rng = Rng::new(0xD_0B5);
    let mut seen = [0usize; 2];
    for round in 0..16 {
        let (to, from) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let (owner, writer) = (hs[to].driver(), hs[from].driver());
        let len = rng.range(1, 1 << 20) as usize;
        let dmb = owner.register_dmb(len, writer.gid(), None, 0).unwrap();
        assert_eq!(dmb.len as usize, len);
        let off = rng.range(0, len as u64 - 1) as usize;
        let n = rng.range(1, (len - off) as u64) as usize;
        let data = rng.bytes(n);
        let sig0 = b.stats().signals;
        writer
            .move_data(dmb.token, 0, true, off as u32, &data)
            .unwrap();
        seen[to] += 1;
        let sig = cs[to].wait_signals(seen[to], WAIT);
        assert_eq!(
            sig.len(),
            seen[to],
            "signal delivered by the interrupt thread"
        );
        assert_eq!(sig.last(), Some(&(dmb.sba_idx, 0x1000)));
        assert_eq!(b.stats().signals - sig0, 1, "one signal per move_data");
        assert_eq!(
            read(owner.memory(), DevAddr(dmb.addr.0 + off as u64), n),
            data
        );
        // Nothing before the offset was touched (the DMB starts zeroed).
        assert!(read(owner.memory(), dmb.addr, off).iter().all(|&x| x == 0));
        // The writer cannot overrun the DMB; the owner cannot write its own DMB.
        let e = writer
            .move_data(dmb.token, 0, false, len as u32, b"!")
            .unwrap_err();
        assert_eq!(e, IsmError::Move(MoveError::OutOfRange));
        let e = owner.move_data(dmb.token, 0, false, 0, b"!").unwrap_err();
        assert_eq!(e, IsmError::Move(MoveError::AccessDenied));
        owner.unregister_dmb(&dmb).unwrap();
    }
    for h in hs {
        // A handler run is counted when it ends, after it delivered its signals (which the
        // loop above waited for): the last one may still be finishing.
        let deadline = std::time::Instant::now() + WAIT;
        while h.stats().handler_runs.load(Ordering::Relaxed) < 8 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} handler runs",
                h.stats().handler_runs.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        h.shutdown();
    }
}

#[test]
fn signals_arrive_as_interrupts_with_sba_index_and_mask() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, cs) = hosts(&b, IrqMode::Thread);
    let (owner, writer) = (hs[0].driver(), hs[1].driver());
    let dmbs: Vec<_> = (0..5)
        .map(|_| owner.register_dmb(16 << 10, writer.gid(), None, 0).unwrap())
        .collect();
    let idx: Vec<u32> = dmbs.iter().map(|d| d.sba_idx).collect();
    assert_eq!(
        idx,
        vec![32, 33, 34, 35, 36],
        "SBA indices from 32, as Linux's bitmap"
    );
    let raised0 = b.partition(0).irq().raised();
    for (i, d) in dmbs.iter().enumerate() {
        writer
            .move_data(d.token, 0, true, 0, &[i as u8; 64])
            .unwrap();
        let sig = cs[0].wait_signals(i + 1, WAIT);
        assert_eq!(sig.len(), i + 1);
        assert_eq!(sig[i], (d.sba_idx, 0x1000));
    }
    assert!(
        b.partition(0).irq().raised() - raised0 >= 5,
        "one interrupt per signalled move"
    );
    assert!(
        cs[1].wait_signals(0, Duration::ZERO).is_empty(),
        "the writer got no signal"
    );
    // The handler cleared the SBA: summary bit and DMB bits are zero again.
    assert!(wait_until(WAIT, || !owner.irq_pending()));
    let sba = read(owner.memory(), owner.sba_addr(), 4096);
    assert_eq!(sba[0] & 0x80, 0);
    assert!(sba[4..256].iter().all(|&x| x == 0));
    assert!(sba[256..].iter().all(|&x| x == 0));
    for d in &dmbs {
        owner.unregister_dmb(d).unwrap();
    }
}

#[test]
fn coalesced_signals_deliver_once_per_dmb_with_all_data() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, cs) = hosts(&b, IrqMode::Poll);
    let (owner, writer) = (hs[0].driver(), hs[1].driver());
    let a = owner.register_dmb(64 << 10, writer.gid(), None, 0).unwrap();
    let c = owner.register_dmb(64 << 10, writer.gid(), None, 0).unwrap();
    for i in 0..40u32 {
        writer
            .move_data(a.token, 0, true, i * 1000, &[i as u8 + 1; 1000])
            .unwrap();
        if i < 25 {
            writer
                .move_data(c.token, 0, true, i * 2000, &[!(i as u8); 2000])
                .unwrap();
        }
    }
    assert!(b.partition(0).irq().is_pending());
    assert!(hs[0].poll(), "the handler runs");
    let sig = cs[0].wait_signals(0, Duration::ZERO);
    assert_eq!(
        sig,
        vec![(a.sba_idx, 0x1000), (c.sba_idx, 0x1000)],
        "one delivery per DMB"
    );
    assert!(!hs[0].poll(), "nothing left after one run");
    assert_eq!(hs[0].stats().signals.load(Ordering::Relaxed), 2);
    let da = read(owner.memory(), a.addr, 40_000);
    let dc = read(owner.memory(), c.addr, 50_000);
    for i in 0..40usize {
        assert!(da[i * 1000..(i + 1) * 1000]
            .iter()
            .all(|&x| x == i as u8 + 1));
    }
    for i in 0..25usize {
        assert!(dc[i * 2000..(i + 1) * 2000]
            .iter()
            .all(|&x| x == !(i as u8)));
    }
    owner.unregister_dmb(&a).unwrap();
    owner.unregister_dmb(&c).unwrap();
}

/// Software events with an `info` tag, filtered from what a client saw.
fn sw_infos(c: &RecordingClient) -> Vec<u64> {
    c.wait_events(0, Duration::ZERO)
        .iter()
        .filter(|e| e.is(EventType::Software))
        .map(|e| e.info)
        .collect()
}

#[test]
fn ieq_wraps_past_15_events_when_drained_between_bursts() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, cs) = hosts(&b, IrqMode::Thread);
    let (a, s) = (hs[0].driver(), hs[1].driver());
    for burst in 0..4u64 {
        for i in 0..12u64 {
            s.signal_event(a.gid(), true, 0x83, burst * 12 + i).unwrap();
        }
        let n = 12 * (burst as usize + 1);
        assert_eq!(cs[0].wait_events(n, WAIT).len(), n, "burst {burst} drained");
    }
    let evs = cs[0].wait_events(48, WAIT);
    assert_eq!(
        sw_infos(&cs[0]),
        (0..48).collect::<Vec<_>>(),
        "all 48 in order across 3 wraps"
    );
    assert!(evs
        .iter()
        .all(|e| e.is(EventType::Software) && e.code == 0x83 && e.tok == s.gid().0));
    assert!(
        evs.windows(2).all(|w| w[0].time <= w[1].time),
        "time stamps do not go back"
    );
}

#[test]
fn ieq_overwrites_the_oldest_events_when_more_than_15_are_left_undrained() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, cs) = hosts(&b, IrqMode::Poll);
    let (a, s) = (hs[0].driver(), hs[1].driver());
    for i in 0..20u64 {
        s.signal_event(a.gid(), true, 0x80, i).unwrap();
    }
    assert!(hs[0].poll());
    // Entries 0..=4 were overwritten by events 15..=19 and idx is 5, so the driver (at -1)
    // sees entries 0..=4 only: the documented loss of undrained events.
    assert_eq!(sw_infos(&cs[0]), vec![15, 16, 17, 18, 19]);
    // The queue keeps working afterwards.
    for i in 20..23u64 {
        s.signal_event(a.gid(), true, 0x80, i).unwrap();
    }
    assert!(hs[0].poll());
    assert_eq!(sw_infos(&cs[0]), vec![15, 16, 17, 18, 19, 20, 21, 22]);
}

#[test]
fn software_event_without_trigger_irq_waits_for_the_next_handler_run() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, cs) = hosts(&b, IrqMode::Thread);
    let (a, s) = (hs[0].driver(), hs[1].driver());
    let line = b.partition(0).irq();
    let raised = line.raised();
    s.signal_event(a.gid(), false, 0x80, 0x0102_0304_0005_0001)
        .unwrap();
    // The device runs synchronously: had it raised the interrupt, the count would show it.
    assert_eq!(
        line.raised(),
        raised,
        "trigger_irq false raises no interrupt"
    );
    assert!(a.irq_pending(), "but the SBA event bit is set");
    assert!(
        cs[0].wait_events(0, Duration::ZERO).is_empty(),
        "and nobody ran the handler"
    );
    // The next interrupt (a signalled move) delivers it, before the triggering event.
    let dmb = a.register_dmb(4096, s.gid(), None, 0).unwrap();
    s.move_data(dmb.token, 0, true, 0, b"kick").unwrap();
    let evs = cs[0].wait_events(1, WAIT);
    assert_eq!(evs.len(), 1);
    let e = evs[0];
    assert_eq!(
        (e.ty, e.code, e.tok, e.info),
        (2, 0x80, s.gid().0, 0x0102_0304_0005_0001)
    );
    assert_eq!(cs[0].wait_signals(1, WAIT), vec![(dmb.sba_idx, 0x1000)]);
    // With trigger_irq the interrupt comes by itself.
    s.signal_event(a.gid(), true, 0x83, 7).unwrap();
    assert_eq!(cs[0].wait_events(2, WAIT).len(), 2);
    assert!(line.raised() > raised);
    // Through the SMC-D ops, and to a GID nobody has.
    SmcdOps::signal_event(
        &**s,
        SmcdGid {
            gid: a.gid().0,
            gid_ext: 0,
        },
        true,
        0x83,
        8,
    )
    .unwrap();
    assert_eq!(cs[0].wait_events(3, WAIT)[2].info, 8);
    let e = s.signal_event(Gid(0xDEAD), true, 0x80, 0).unwrap_err();
    assert_eq!(e, IsmError::Device(ReturnCode::RemoteGidUnreachable));
    assert_eq!(e.kind(), ErrorKind::Unreachable);
    a.unregister_dmb(&dmb).unwrap();
}

#[test]
fn query_remote_gid_across_partitions_and_vlan_rules() {
    let b = board(BoardKind::Lpar, 3, 16);
    let (hs, _cs) = hosts(&b, IrqMode::Poll);
    let d: Vec<_> = hs.iter().map(|h| h.driver().clone()).collect();
    let g: Vec<Gid> = d.iter().map(|x| x.gid()).collect();
    for (i, x) in d.iter().enumerate() {
        for (j, &gj) in g.iter().enumerate() {
            assert!(x.query_remote_gid(gj, None).is_ok(), "{i} reaches {j}");
        }
        let e = x.query_remote_gid(Gid(0x1234), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable);
    }
    // All probed as ISMv2: the 0x1FFF query SMC-Dv2 makes succeeds.
    assert!(d[0].query_remote_gid(g[1], Some(0x1FFF)).is_ok());
    let ops: &dyn SmcdOps = &*d[0];
    assert!(ops
        .query_remote_gid(
            SmcdGid {
                gid: g[1].0,
                gid_ext: 0
            },
            true,
            0x1FFF
        )
        .is_ok());
    // VLAN 7: both must hold it.
    assert!(d[0].query_remote_gid(g[1], Some(7)).is_err());
    d[0].add_vlan_id(7).unwrap();
    assert!(
        d[0].query_remote_gid(g[1], Some(7)).is_err(),
        "only the querier holds 7"
    );
    d[1].add_vlan_id(7).unwrap();
    assert!(d[0].query_remote_gid(g[1], Some(7)).is_ok());
    assert!(d[1].query_remote_gid(g[0], Some(7)).is_ok());
    assert!(
        d[0].query_remote_gid(g[2], Some(7)).is_err(),
        "2 does not hold 7"
    );
    assert!(
        d[2].query_remote_gid(g[1], Some(7)).is_err(),
        "the querier does not hold 7"
    );
    assert!(ops
        .query_remote_gid(
            SmcdGid {
                gid: g[1].0,
                gid_ext: 0
            },
            true,
            7
        )
        .is_ok());
    assert!(ops
        .query_remote_gid(
            SmcdGid {
                gid: g[2].0,
                gid_ext: 0
            },
            true,
            7
        )
        .is_err());
    d[1].del_vlan_id(7).unwrap();
    assert!(d[0].query_remote_gid(g[1], Some(7)).is_err());
    assert!(
        d[0].query_remote_gid(g[1], Some(4096)).is_err(),
        "not a VLAN id"
    );
    assert_eq!(
        d[1].del_vlan_id(7).unwrap_err(),
        IsmError::Device(ReturnCode::VlanNotFound)
    );
    // Removing 1 withdraws its 0x1FFF membership, its GID stays reachable without VLAN.
    hs[1].driver().remove();
    assert!(d[0].query_remote_gid(g[1], Some(0x1FFF)).is_err());
    assert!(d[0].query_remote_gid(g[1], None).is_ok());
    // A deactivated partition is unreachable.
    b.disable(2);
    assert!(d[0].query_remote_gid(g[2], None).is_err());
}

#[test]
fn attach_detach_on_loopback_with_deferred_release() {
    let b = board(BoardKind::Loopback, 1, 16);
    let (hs, cs) = hosts(&b, IrqMode::Poll);
    let d = hs[0].driver();
    assert!(d.supports_attach());
    assert_eq!(d.chid(), 0xFFFF);
    let ops: &dyn SmcdOps = &**d;
    assert!(ops.support_dmb_nocopy());
    let dmb = d.register_dmb(64 << 10, d.gid(), None, 0).unwrap();
    let free_registered = b.partition(0).host_memory().free_bytes();
    let att = d.attach_dmb(dmb.token).unwrap();
    assert!(att.attached);
    assert_eq!(
        (att.addr, att.len, att.sba_idx, att.token),
        (dmb.addr, dmb.len, dmb.sba_idx, dmb.token)
    );
    // Writes through the attached address are what the owner sees.
    d.memory()
        .write(DevAddr(att.addr.0 + 32), b"no-copy payload")
        .unwrap();
    assert_eq!(
        read(d.memory(), DevAddr(dmb.addr.0 + 32), 15),
        b"no-copy payload"
    );
    // A signalled CDC-style move at offset 0 still signals the owner.
    d.move_data(dmb.token, 0, true, 0, &[0xCD; 32]).unwrap();
    assert!(hs[0].poll());
    assert_eq!(cs[0].wait_signals(1, WAIT), vec![(dmb.sba_idx, 0x1000)]);
    assert_eq!(read(d.memory(), att.addr, 32), vec![0xCD; 32]);
    // Attaching twice, detaching what is not attached: refused.
    assert_eq!(
        d.attach_dmb(dmb.token).unwrap_err(),
        IsmError::Device(ReturnCode::AttachNotPermitted)
    );
    assert_eq!(
        d.detach_dmb(DmbToken(dmb.token.0 ^ (1 << 63))).unwrap_err(),
        IsmError::Device(ReturnCode::NotAttached)
    );
    // Unregister while attached: the token dies, the memory stays until the last detach.
    d.unregister_dmb(&dmb).unwrap();
    assert_eq!(d.deferred_releases(), 1);
    assert!(
        d.move_data(dmb.token, 0, true, 0, b"late").is_err(),
        "token revoked"
    );
    assert_eq!(
        b.partition(0).host_memory().free_bytes(),
        free_registered,
        "memory not freed yet"
    );
    assert_eq!(
        read(d.memory(), DevAddr(att.addr.0 + 32), 15),
        b"no-copy payload"
    );
    d.detach_dmb(dmb.token).unwrap();
    assert!(hs[0].poll(), "the release event runs the handler");
    assert_eq!(d.deferred_releases(), 0);
    let evs = cs[0].wait_events(0, Duration::ZERO);
    assert!(
        evs.iter().any(|e| e.is(EventType::Buffer)
            && e.code == event_code::BUF_DMB_UNREGISTERED
            && e.tok == dmb.token.0),
        "{evs:?}"
    );
    assert_eq!(
        b.partition(0).host_memory().free_bytes(),
        free_registered + (64 << 10),
        "freed at detach"
    );
    assert!(d.detach_dmb(dmb.token).is_err(), "second detach refused");
}

#[test]
fn attach_is_not_supported_on_lpar() {
    let b = board(BoardKind::Lpar, 2, 16);
    let (hs, _cs) = hosts(&b, IrqMode::Poll);
    let (owner, writer) = (hs[0].driver(), hs[1].driver());
    let dmb = owner.register_dmb(16 << 10, writer.gid(), None, 0).unwrap();
    assert_eq!(
        writer.attach_dmb(dmb.token).unwrap_err(),
        IsmError::Local(ErrorKind::NotSupported)
    );
    assert_eq!(
        writer.detach_dmb(dmb.token).unwrap_err(),
        IsmError::Local(ErrorKind::NotSupported)
    );
    let ops: &dyn SmcdOps = &**writer;
    assert!(!ops.support_dmb_nocopy());
    assert_eq!(
        ops.attach_dmb(dmb.token).unwrap_err().kind(),
        ErrorKind::NotSupported
    );
    // The raw extension command is refused by the device as well.
    let mut resp = [0u8; COMMAND_AREA_SIZE];
    let req = ism_firmware::command::Request::AttachDmb { token: dmb.token };
    assert_eq!(
        writer.command(req, &mut resp).unwrap_err(),
        IsmError::Device(ReturnCode::UnknownCommand)
    );
    owner.unregister_dmb(&dmb).unwrap();
}

#[test]
fn partition_crash_mid_transfer_then_restart() {
    let b = board(BoardKind::Lpar, 2, 32);
    let (mut hs, cs) = hosts(&b, IrqMode::Thread);
    let owner_gid = hs[0].driver().gid();
    let owner_mem = b.partition(0).host_memory().clone();
    let dmb = hs[0]
        .driver()
        .register_dmb(1 << 20, hs[1].driver().gid(), None, 0)
        .unwrap();
    let writer = hs[1].driver().clone();
    let moved = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (moved, stop, token) = (moved.clone(), stop.clone(), dmb.token);
        std::thread::spawn(move || {
            let chunk = vec![0x5Au8; 64 << 10];
            let mut errors = Vec::new();
            let mut i = 0u32;
            // Stream until the move fails, then keep trying a little: every try must fail.
            while errors.len() < 50 && !stop.load(Ordering::Relaxed) {
                let off = (i % 16) * (64 << 10);
                match writer.move_data(token, 0, i.is_multiple_of(4), off, &chunk) {
                    Ok(()) if errors.is_empty() => {
                        moved.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => panic!("a move succeeded after a refused one"),
                    Err(e) => errors.push(e),
                }
                i += 1;
            }
            errors
        })
    };
    assert!(
        wait_until(WAIT, || moved.load(Ordering::Relaxed) >= 20),
        "writer streams"
    );
    b.crash(0);
    // After `crash` returns no move reaches partition 0's memory: zero the DMB and watch it.
    owner_mem.memory().zero(dmb.addr, 1 << 20).unwrap();
    let errs = {
        let ok = wait_until(WAIT, || w.is_finished());
        stop.store(true, Ordering::Relaxed);
        assert!(ok, "the writer saw errors and stopped");
        w.join().expect("the writer thread never panics")
    };
    assert!(!errs.is_empty());
    for e in &errs {
        assert_eq!(
            *e,
            IsmError::Move(MoveError::InvalidToken),
            "typed error, got {e}"
        );
        assert_eq!(e.kind(), ErrorKind::MoveRefused);
    }
    assert!(
        read(owner_mem.memory(), dmb.addr, 1 << 20)
            .iter()
            .all(|&x| x == 0),
        "no move after the crash"
    );
    // The peer got a device event naming the crashed GID.
    let evs = cs[1].wait_events(1, WAIT);
    assert!(
        evs.iter().any(|e| e.is(EventType::Device)
            && e.code == event_code::DEV_GID_ERR_STATE
            && e.tok == owner_gid.0),
        "device event on the peer: {evs:?}"
    );
    assert!(writer_query_fails(&hs[1], owner_gid));
    // Commands of the crashed partition fail as offline.
    let e = hs[0]
        .driver()
        .register_dmb(4096, hs[1].driver().gid(), None, 0)
        .unwrap_err();
    // The device answers "function offline", or the driver already knows its function is
    // gone (the board told it) and does not ask.
    assert!(
        matches!(
            e,
            IsmError::Device(ReturnCode::FunctionOffline) | IsmError::Local(ErrorKind::NoDevice)
        ),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::NoDevice);
    // Restart and re-probe (the old OS is gone: drop its host without remove).
    b.restart(0);
    drop(hs.remove(0));
    let h0 = Host::start(b.partition(0), b.chid(), IrqMode::Thread, None).expect("re-probe");
    let c0 = Arc::new(RecordingClient::default());
    h0.driver().add_client(c0.clone()).unwrap();
    let writer = hs[0].driver(); // partition 1's host, now first in `hs`
    assert!(writer.query_remote_gid(owner_gid, None).is_ok());
    assert!(
        writer.move_data(dmb.token, 0, true, 0, b"old").is_err(),
        "old token stays dead"
    );
    let fresh = h0
        .driver()
        .register_dmb(64 << 10, writer.gid(), None, 0)
        .unwrap();
    assert_ne!(fresh.token, dmb.token);
    writer
        .move_data(fresh.token, 0, true, 10, b"after restart")
        .unwrap();
    assert_eq!(c0.wait_signals(1, WAIT), vec![(fresh.sba_idx, 0x1000)]);
    assert_eq!(
        read(h0.driver().memory(), DevAddr(fresh.addr.0 + 10), 13),
        b"after restart"
    );
    h0.driver().unregister_dmb(&fresh).unwrap();
    h0.shutdown();
}

fn writer_query_fails(h: &Host, gid: Gid) -> bool {
    h.driver().query_remote_gid(gid, None).is_err()
}

#[test]
fn remove_unregisters_dmbs_still_registered() {
    let b = board(BoardKind::Lpar, 2, 16);
    let p = b.partition(0);
    let free0 = p.host_memory().free_bytes();
    let d = p.probe(b.chid()).unwrap();
    let peer = b.partition(1).probe(b.chid()).unwrap();
    d.add_client(Arc::new(RecordingClient::default())).unwrap();
    let kept = d.register_dmb(16 << 10, peer.gid(), None, 0).unwrap();
    let gone = d.register_dmb(8 << 10, peer.gid(), None, 0).unwrap();
    d.unregister_dmb(&gone).unwrap();
    assert_eq!(b.device().dmbs_in_use(), 1);
    d.remove();
    assert_eq!(
        b.device().dmbs_in_use(),
        0,
        "remove unregisters what is left"
    );
    let e = peer
        .move_data(kept.token, 0, true, 0, b"after remove")
        .unwrap_err();
    assert_eq!(e, IsmError::Move(MoveError::InvalidToken));
    assert_eq!(p.host_memory().free_bytes(), free0, "and frees its memory");
}
