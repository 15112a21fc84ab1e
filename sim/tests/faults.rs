//! Fault injection: lost and late interrupts, failed commands and store-blocks, a partition
//! crashing mid-stream, exhausted DMBs. The rule checked everywhere: a stream either delivers
//! every byte in order or reports an error, never wrong data, and nothing panics or hangs.

use std::io::{Read, Write};
use std::time::Duration;

use ism_host_driver::smcd::clc::DeclineReason;
use ism_host_driver::smcd::{Listener, StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::fault::FaultConfig;
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;
use ism_sim::workload::{run_stream, StreamOptions};

fn board(kind: BoardKind, faults: FaultConfig, stack: StackConfig) -> SmcBoard {
    let cfg = BoardConfig {
        faults,
        partition_memory: 64 << 20,
        ..BoardConfig::default()
    };
    SmcBoard::start(kind, 2, cfg, IrqMode::Thread, stack).expect("board")
}

fn small_stack() -> StackConfig {
    StackConfig {
        buffer_size: 64 << 10,
        clc_timeout: Duration::from_secs(5),
        ..StackConfig::default()
    }
}

const BYTES: u64 = 4 << 20;

#[test]
fn lost_interrupts_delay_but_never_lose_data() {
    for kind in [BoardKind::Lpar, BoardKind::Loopback] {
        let faults = FaultConfig {
            drop_irq_ppm: 300_000,
            seed: 7,
            ..FaultConfig::default()
        };
        let b = board(kind, faults, small_stack());
        let r = run_stream(
            &b,
            StreamOptions {
                bytes: BYTES,
                chunk: 10_000,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.verified, "{kind:?}: data verified");
        assert!(
            b.board().fault_counts().dropped_irqs > 0,
            "faults were injected"
        );
    }
}

#[test]
fn late_interrupts_are_only_late() {
    let faults = FaultConfig {
        delay_irq: Some(Duration::from_millis(2)),
        ..FaultConfig::default()
    };
    let b = board(BoardKind::Lpar, faults, small_stack());
    let r = run_stream(
        &b,
        StreamOptions {
            bytes: 1 << 20,
            chunk: 30_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.verified);
}

#[test]
fn refused_store_blocks_give_errors_never_wrong_data() {
    let mut errors = 0;
    for seed in 0..6 {
        let faults = FaultConfig {
            fail_store_ppm: 2_000,
            seed,
            ..FaultConfig::default()
        };
        let b = board(BoardKind::Lpar, faults, small_stack());
        match run_stream(
            &b,
            StreamOptions {
                bytes: BYTES,
                chunk: 8_192,
                seed,
                ..Default::default()
            },
        ) {
            Ok(r) => assert!(r.verified, "a completed stream must verify"),
            Err(e) => {
                errors += 1;
                assert!(!e.contains("corrupt"), "{e}");
            }
        }
    }
    assert!(
        errors > 0,
        "at 0.2% of ~1000 store-blocks per run, some runs must fail"
    );
}

#[test]
fn failed_registration_falls_back_to_tcp() {
    // Every REG_DMB "gets no response": the handshake declines and the stream runs on TCP.
    let faults = FaultConfig {
        fail_command_ppm: 1_000_000,
        fail_opcodes: vec![0x0A],
        ..FaultConfig::default()
    };
    let b = board(BoardKind::Lpar, faults, small_stack());
    let r = run_stream(
        &b,
        StreamOptions {
            bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.verified);
    assert_eq!(r.client.fallback, Some(DeclineReason::MEM));
}

#[test]
fn failed_probe_is_a_typed_error() {
    let faults = FaultConfig {
        fail_command_ppm: 1_000_000,
        fail_opcodes: vec![0x01],
        ..FaultConfig::default()
    };
    let cfg = BoardConfig {
        faults,
        partition_memory: 8 << 20,
        ..BoardConfig::default()
    };
    let err = SmcBoard::start(
        BoardKind::Lpar,
        2,
        cfg,
        IrqMode::Thread,
        StackConfig::default(),
    )
    .err()
    .expect("REG_SBA never answers");
    assert_eq!(err.return_code(), Some(0xFFFF));
}

#[test]
fn partition_crash_mid_stream_is_an_error_not_a_hang() {
    let b = board(BoardKind::Lpar, FaultConfig::default(), small_stack());
    let (cs, ss) = b.pair();
    let l = Listener::bind(&ss, "127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (s, _) = l.accept_timeout(Duration::from_secs(60)).unwrap();
        // Nothing tells the crashed partition's own (dead) reader; it just times out.
        s.set_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = 0usize;
        loop {
            match (&s).read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&x| x == 0x5A), "wrong data");
                    got += n;
                }
                Err(e) => return Err(e),
            }
        }
    });
    let c = Stream::connect(&cs, addr).unwrap();
    assert!(c.is_smc());
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![0x5Au8; 16 << 10];
    let mut sent = 0;
    let err = loop {
        if sent == 1 << 20 {
            b.board().crash(1);
        }
        match (&c).write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(
            sent < 64 << 20,
            "writes kept succeeding after the peer crashed"
        );
    };
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    // The crashed side's reader is gone with its partition; whatever it saw was right.
    let _ = srv.join().unwrap();
}

#[test]
fn exhausted_dmbs_decline_with_max_dmb() {
    let b = board(BoardKind::Lpar, FaultConfig::default(), small_stack());
    let server = b.host(1).driver();
    let client_gid = b.board().partition(0).gid();
    let c = server
        .add_client(std::sync::Arc::new(
            ism_sim::demo::RecordingClient::default(),
        ))
        .unwrap();
    let mut held = Vec::new();
    while let Ok(d) = server.register_dmb(16 << 10, client_gid, None, c) {
        held.push(d);
    }
    assert!(held.len() >= 1000, "SBA indices run out after 1888 DMBs");
    let (cs, ss) = b.pair();
    let l = Listener::bind(&ss, "127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept_timeout(Duration::from_secs(60)).unwrap();
        s.set_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        (v, s.fallback_reason())
    });
    let mut s = Stream::connect(&cs, addr).unwrap();
    assert_eq!(s.fallback_reason(), Some(DeclineReason::MAX_DMB));
    s.write_all(b"over tcp").unwrap();
    drop(s);
    let (v, reason) = srv.join().unwrap();
    assert_eq!(v, b"over tcp");
    assert_eq!(reason, Some(DeclineReason::MAX_DMB));
    for d in held {
        server.unregister_dmb(&d).unwrap();
    }
}
