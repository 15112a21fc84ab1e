//! SMC-D streams, every byte verified: many concurrent connections per partition pair
//! sharing one link group, with seeded random sizes, write chunkings and read sizes, on the
//! LPAR board (copy) and the loopback board (copy and no-copy), with 16 KiB RMBs so that
//! every ring wraps many times; full-duplex traffic on one connection (reader and writer
//! threads through `try_clone`); busy-poll mode, also with no interrupt thread at all.

mod smcd_common;

use std::io::Read;
use std::sync::Arc;

use ism_host_driver::smcd::{SmcStack, StackConfig};
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::host::IrqMode;
use ism_sim::smc::SmcBoard;

use smcd_common::*;

/// Ring length of a 16 KiB RMB.
const SMALL_RING: u64 = (SMALL_BUF - 32) as u64;

fn board(kind: BoardKind, irq: IrqMode, cfg: StackConfig) -> SmcBoard {
    SmcBoard::start(kind, 2, BoardConfig::default(), irq, cfg).unwrap()
}

/// `n` connections from `cs` to `ss`, opened one after the other (the first opens the link
/// group, the others reuse it), then `n` verified transfers at once with random sizes.
fn many_streams(cs: &Arc<SmcStack>, ss: &Arc<SmcStack>, n: usize, seed: u64, max_total: usize) {
    let mut rng = Rng::new(seed);
    let mut conns = Vec::new();
    for i in 0..n {
        let (c, s) = pair(cs, ss);
        assert!(
            c.is_smc(),
            "connection {i}: fallback {:?}",
            c.fallback_reason()
        );
        // On loopback one stack is both ends and SMC-D link groups have no role: the
        // server side opens the link group, the client side joins it.
        let same = Arc::ptr_eq(cs, ss);
        assert_eq!(c.first_contact(), Some(i == 0 && !same));
        assert_eq!(c.conn().unwrap().ring_len() as u64, SMALL_RING);
        // Sizes: an empty and a one-byte stream, the rest at least three rings.
        let total = match i {
            0 => 0,
            1 => 1,
            _ => rng.usize_in(3 * SMALL_RING as usize, max_total),
        };
        conns.push((
            c,
            s,
            total,
            rng.usize_in(1, 40_000),
            rng.usize_in(1, 40_000),
        ));
    }
    // All of them in one link group on each side (one in all on loopback).
    for st in [cs, ss] {
        let l = st.link_groups();
        assert_eq!(l.len(), 1);
        let ends = if Arc::ptr_eq(cs, ss) { 2 * n } else { n };
        assert_eq!(l[0].connections().len(), ends);
    }
    let mut threads = Vec::new();
    for (i, (c, s, total, wchunk, rsize)) in conns.into_iter().enumerate() {
        let stream_seed = seed * 1000 + i as u64;
        threads.push(std::thread::spawn(move || {
            let mut r = Rng::new(stream_seed);
            send_and_finish(&c, stream_seed, total, wchunk, &mut r).unwrap();
            // The server closes after verifying: end of stream here, no stray bytes.
            let mut rest = Vec::new();
            (&c).read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            let st = c.stats();
            assert_eq!(st.conn.bytes_sent, total as u64);
            assert!(st.conn.cdc_sent >= (total as u64).div_ceil(SMALL_RING));
        }));
        threads.push(std::thread::spawn(move || {
            let mut r = Rng::new(stream_seed ^ 0xABCD);
            let got = recv_pattern(&s, stream_seed, rsize, &mut r).unwrap();
            assert_eq!(got, total, "stream {i}");
            assert_eq!(s.stats().conn.bytes_received, total as u64);
        }));
    }
    for t in threads {
        join_within(t, JOIN_TIMEOUT, "stream");
    }
}

#[test]
fn sixteen_streams_on_lpar() {
    let b = board(BoardKind::Lpar, IrqMode::Thread, small_cfg(false));
    let (cs, ss) = b.pair();
    many_streams(&cs, &ss, 16, 11, 160_000);
    assert!(!cs.link_groups().is_empty());
}

#[test]
fn sixteen_streams_on_loopback_copy() {
    let b = board(BoardKind::Loopback, IrqMode::Thread, small_cfg(false));
    let (cs, ss) = b.pair();
    many_streams(&cs, &ss, 16, 12, 160_000);
}

#[test]
fn sixteen_streams_on_loopback_nocopy() {
    let b = board(BoardKind::Loopback, IrqMode::Thread, small_cfg(true));
    let (cs, ss) = b.pair();
    many_streams(&cs, &ss, 16, 13, 160_000);
}

#[test]
fn random_cases_one_stream_at_a_time() {
    // Seeded random cases (the property: any size, any chunking, any read size arrives
    // intact), on each board and mode, ring sizes 16 and 32 KiB.
    for (k, (kind, nocopy)) in [
        (BoardKind::Lpar, false),
        (BoardKind::Loopback, false),
        (BoardKind::Loopback, true),
    ]
    .into_iter()
    .enumerate()
    {
        for buf in [SMALL_BUF, 32 << 10] {
            let cfg = StackConfig {
                buffer_size: buf,
                ..small_cfg(nocopy)
            };
            let b = board(kind, IrqMode::Thread, cfg);
            let (cs, ss) = b.pair();
            let mut rng = Rng::new(100 + k as u64);
            for case in 0..6 {
                let seed = rng.next_u64();
                let total = rng.usize_in(0, 120_000);
                let (wchunk, rsize) = (rng.usize_in(1, 70_000), rng.usize_in(1, 70_000));
                let (c, s) = pair(&cs, &ss);
                let srv = std::thread::spawn(move || {
                    let mut r = Rng::new(seed ^ 1);
                    recv_pattern(&s, seed, rsize, &mut r)
                });
                let mut r = Rng::new(seed ^ 2);
                send_and_finish(&c, seed, total, wchunk, &mut r).unwrap();
                let got = join_within(srv, JOIN_TIMEOUT, "receiver").unwrap();
                assert_eq!(
                    got, total,
                    "{kind:?} nocopy {nocopy} buf {buf} case {case} seed {seed:#x}: \
                     chunk {wchunk} read {rsize}"
                );
            }
        }
    }
}

/// Both ends write and read at the same time on one connection (small rings: each side's
/// writer depends on the other side's reader).
fn full_duplex(b: &SmcBoard, bytes: usize) {
    let (cs, ss) = b.pair();
    let (c, s) = pair(&cs, &ss);
    assert!(c.is_smc());
    let mut threads = Vec::new();
    for (end, st, out_seed, in_seed) in [(0u64, c, 21u64, 22u64), (1, s, 22, 21)] {
        let w = st.try_clone().unwrap();
        threads.push(std::thread::spawn(move || {
            let mut r = Rng::new(out_seed);
            send_and_finish(&w, out_seed, bytes, 9_000, &mut r).unwrap();
            assert_eq!(w.stats().conn.bytes_sent, bytes as u64);
        }));
        threads.push(std::thread::spawn(move || {
            let mut r = Rng::new(in_seed + 100);
            let got = recv_pattern(&st, in_seed, 12_000, &mut r).unwrap();
            assert_eq!(got, bytes, "end {end}");
            assert_eq!(st.stats().conn.bytes_received, bytes as u64);
        }));
    }
    for t in threads {
        join_within(t, JOIN_TIMEOUT, "full duplex");
    }
}

#[test]
fn full_duplex_with_cloned_handles() {
    full_duplex(
        &board(BoardKind::Lpar, IrqMode::Thread, small_cfg(false)),
        600_000,
    );
    full_duplex(
        &board(BoardKind::Loopback, IrqMode::Thread, small_cfg(true)),
        600_000,
    );
}

#[test]
fn busy_poll_with_and_without_an_interrupt_thread() {
    for (kind, irq, nocopy) in [
        (BoardKind::Lpar, IrqMode::Thread, false),
        (BoardKind::Lpar, IrqMode::Poll, false),
        (BoardKind::Loopback, IrqMode::Poll, true),
    ] {
        let cfg = StackConfig {
            busy_poll: true,
            ..small_cfg(nocopy)
        };
        let b = board(kind, irq, cfg);
        let (cs, ss) = b.pair();
        let (c, s) = pair(&cs, &ss);
        // Polling mode only works if the waiters run the handler themselves.
        let srv = std::thread::spawn(move || {
            let mut r = Rng::new(3);
            let got = recv_pattern(&s, 31, 5_000, &mut r).unwrap();
            (got, s.stats().conn)
        });
        let mut r = Rng::new(4);
        send_and_finish(&c, 31, 300_000, 20_000, &mut r).unwrap();
        let (got, st) = join_within(srv, JOIN_TIMEOUT, "busy-poll receiver");
        assert_eq!(got, 300_000, "{kind:?} {irq:?}");
        assert_eq!(st.bytes_received, 300_000);
        let mut rest = [0u8; 1];
        assert_eq!(
            (&c).read(&mut rest).unwrap(),
            0,
            "end of stream after the receiver"
        );
    }
}
