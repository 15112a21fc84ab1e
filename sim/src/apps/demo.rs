//! The device demo: two partitions of an LPAR board talk through DMBs with nothing but the
//! ISM driver: register, move, signal, software events, and a crash, each step verified.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ism_hal::{DevAddr, DmaMemory};
use ism_host_driver::ism::{event_code, EventType, IsmEvent};

/// The recording client the demo waits on (defined in the driver crate).
pub use ism_host_driver::ism::RecordingClient;

use crate::board::{BoardConfig, BoardKind, SimBoard};
use crate::host::{Host, IrqMode};

/// Signals `(sba_idx, dmbe_mask)` and events seen so far.
/// The outcome of [`run_device_demo`]: a readable log and whether every check passed.
pub struct DemoReport {
    /// One line per step.
    pub log: String,
    /// Number of failed checks.
    pub failures: usize,
    /// The board (for its trace and counters).
    pub board: SimBoard,
}

const WAIT: Duration = Duration::from_secs(5);

/// Runs the device demo on a fresh 2-partition LPAR board.
pub fn run_device_demo(trace: bool) -> DemoReport {
    let cfg = BoardConfig {
        trace,
        partition_memory: 16 << 20,
        ..BoardConfig::default()
    };
    let board = SimBoard::build(BoardKind::Lpar, 2, cfg);
    let mut log = String::new();
    let mut failures = 0;
    let mut check = |log: &mut String, ok: bool, what: &str| {
        let _ = writeln!(log, "    {} {what}", if ok { "ok  " } else { "FAIL" });
        failures += usize::from(!ok);
    };
    let _ = writeln!(log, "LPAR board: 2 partitions, CHID {:#06x}", board.chid());
    let tracer = board.tracer().cloned();
    let hosts: Vec<Host> = board
        .partitions()
        .iter()
        .map(|p| Host::start(p, board.chid(), IrqMode::Thread, tracer.clone()).expect("probe"))
        .collect();
    let clients: Vec<Arc<RecordingClient>> = hosts.iter().map(|_| Arc::default()).collect();
    let mut client_ids = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let d = h.driver();
        client_ids.push(d.add_client(clients[i].clone()).expect("client"));
        let _ = writeln!(
            log,
            "  LPAR {i}: probed, GID {:#018x}, ISMv2 {}, no-copy attach {}",
            d.gid().0,
            d.supports_v2(),
            d.supports_attach()
        );
    }
    for (from, to) in [(1usize, 0usize), (0, 1)] {
        let (owner, writer) = (hosts[to].driver(), hosts[from].driver());
        let dmb = owner
            .register_dmb(64 << 10, writer.gid(), None, client_ids[to])
            .expect("register DMB");
        let _ = writeln!(
            log,
            "  LPAR {to}: REG_DMB 64 KiB for LPAR {from}'s GID: token {:#018x}, SBA index {}",
            dmb.token.0, dmb.sba_idx
        );
        let data: Vec<u8> = (0..(64u32 << 10) - 32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ from as u8)
            .collect();
        writer
            .move_data(dmb.token, 0, true, 32, &data)
            .expect("move");
        let blocks = (32 + data.len()).div_ceil(4096);
        let _ = writeln!(
            log,
            "  LPAR {from} -> LPAR {to}: {} bytes at offset 32 in {blocks} store-blocks, signal on the last",
            data.len()
        );
        let sig = clients[to].wait_signals(1, WAIT);
        check(
            &mut log,
            sig.first() == Some(&(dmb.sba_idx, 0x1000)),
            &format!(
                "LPAR {to}'s interrupt handler saw SBA index {} with DMBE mask 0x1000",
                dmb.sba_idx
            ),
        );
        let mut back = vec![0u8; data.len()];
        owner
            .memory()
            .read(DevAddr(dmb.addr.0 + 32), &mut back)
            .expect("read DMB");
        check(&mut log, back == data, "every byte arrived in the DMB");
        let forged = ism_hal::DmbToken(dmb.token.0 ^ 0x0001_0000_0000);
        check(
            &mut log,
            writer.move_data(forged, 0, true, 0, b"forged").is_err(),
            "a move with a forged token is refused",
        );
        check(
            &mut log,
            owner.move_data(dmb.token, 0, false, 0, b"self").is_err(),
            "a move by a GID other than the DMB's writer is refused",
        );
        owner.unregister_dmb(&dmb).expect("unregister");
        check(
            &mut log,
            writer.move_data(dmb.token, 0, true, 0, b"late").is_err(),
            "after UNREG_DMB the token is dead",
        );
    }
    let a = hosts[0].driver();
    let b = hosts[1].driver();
    let software = |evs: &[IsmEvent]| evs.iter().filter(|e| e.is(EventType::Software)).count();
    for batch in 0..2u64 {
        for i in 0..10u64 {
            b.signal_event(a.gid(), true, 0x83, batch * 10 + i)
                .expect("SIGNAL_IEQ");
        }
        // Let LPAR 0 drain before the next burst: the IEQ holds 15 entries.
        let want = 10 * (batch as usize + 1);
        clients[0].wait_events_until(WAIT, |e| software(e) >= want);
    }
    let _ = writeln!(
        log,
        "  LPAR 1 -> LPAR 0: 20 SIGNAL_IEQ software events in two bursts (the 15-entry IEQ wraps)"
    );
    let evs = clients[0].wait_events_until(WAIT, |e| software(e) >= 20);
    let sw: Vec<u64> = evs
        .iter()
        .filter(|e| e.is(EventType::Software))
        .map(|e| e.info)
        .collect();
    check(
        &mut log,
        sw == (0..20).collect::<Vec<_>>()
            && evs
                .iter()
                .filter(|e| e.is(EventType::Software))
                .all(|e| e.tok == b.gid().0),
        "LPAR 0 drained all 20 in order, each tagged with LPAR 1's GID",
    );
    board.crash(1);
    let _ = writeln!(log, "  LPAR 1 crashes");
    let evs = clients[0].wait_events_until(WAIT, |e| e.iter().any(|e| e.is(EventType::Device)));
    check(
        &mut log,
        evs.iter().any(|e| {
            e.is(EventType::Device) && e.tok == b.gid().0 && e.code == event_code::DEV_GID_ERR_STATE
        }),
        "LPAR 0 received a device event (GID error state) naming LPAR 1",
    );
    check(
        &mut log,
        a.query_remote_gid(b.gid(), None).is_err(),
        "LPAR 1's GID is no longer reachable",
    );
    board.restart(1);
    drop(hosts);
    DemoReport {
        log,
        failures,
        board,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_demo_passes_every_check() {
        let r = run_device_demo(true);
        assert_eq!(r.failures, 0, "{}", r.log);
        let t = r.board.tracer().unwrap();
        assert!(t.count("command") >= 10);
        assert!(t.count("move") >= 32);
        assert!(t.count("interrupt") >= 2);
        assert!(
            t.count("event") >= 20,
            "software and device events are traced"
        );
    }
}
