//! Criterion benches of the simulator's partition memory against a bare `memcpy`: the
//! copies every SMC-D byte takes on the in-process boards (`MemoryDomain::write`, what the
//! device does for a store-block, and `MemoryDomain::read`, what the receiver does), and a
//! whole store-block through the host driver and the firmware into a peer partition's DMB
//! (`IsmDriver::move_data` on an LPAR `SimBoard`), each beside `memcpy` of the same size.
//!
//! The partition memory is accessed only with 8-byte atomics (one access width per
//! location, `sim/src/kit/memory.rs`), which the compiler cannot turn into vector copies;
//! these benches say what that costs.
//!
//! Run: `cargo bench -p ism-sim --bench memory`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use ism_hal::{DevAddr, DmaMemory};
use ism_host_driver::ism::IsmClient;
use ism_host_driver::ism::IsmEvent;
use ism_sim::board::SimBoard;
use ism_sim::memory::MemoryDomain;

const SIZES: [(usize, &str); 4] = [(14, "14B"), (64, "64B"), (4096, "4KiB"), (65536, "64KiB")];

/// A client that ignores interrupts (the bench never waits for one).
struct Quiet;
impl IsmClient for Quiet {
    fn handle_irq(&self, _: u32, _: u16) {}
    fn handle_event(&self, _: &IsmEvent) {}
}

fn copies(c: &mut Criterion) {
    let mem = MemoryDomain::new(1 << 40, 1 << 20);
    let base = mem.base().0;
    let mut g = c.benchmark_group("copy");
    for (n, name) in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        let src = vec![0x5Au8; n];
        let mut dst = vec![0u8; n];
        g.bench_function(format!("memcpy/{name}"), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
        // At an odd offset, as ring data lands: partial first and last words.
        g.bench_function(format!("domain_write/{name}"), |b| {
            b.iter(|| mem.write(DevAddr(base + 4099), black_box(&src)).unwrap())
        });
        g.bench_function(format!("domain_read/{name}"), |b| {
            b.iter(|| mem.read(DevAddr(base + 4099), black_box(&mut dst)).unwrap())
        });
    }
    g.finish();
}

fn store_block(c: &mut Criterion) {
    let board = SimBoard::lpar(2);
    let (a, z) = (
        board.partition(0).probe(board.chid()).unwrap(),
        board.partition(1).probe(board.chid()).unwrap(),
    );
    let client = a.add_client(std::sync::Arc::new(Quiet)).unwrap();
    let dmb = a.register_dmb(1 << 20, z.gid(), None, client).unwrap();
    let mut g = c.benchmark_group("move_data");
    for (n, name) in SIZES {
        // Compare with `copy/memcpy` of the same size.
        g.throughput(Throughput::Bytes(n as u64));
        let src = vec![0x5Au8; n];
        // The driver splits a move into store-blocks of at most 4 KiB, as Linux's
        // `ism_move` does.
        g.bench_function(format!("lpar/{name}"), |b| {
            b.iter(|| {
                z.move_data(dmb.token, 0, false, 3, black_box(&src))
                    .unwrap()
            })
        });
    }
    g.finish();
    a.unregister_dmb(&dmb).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = copies, store_block
}
criterion_main!(benches);
