//! Criterion bench of the SMC-D stack's own work per message: a 14-byte ping-pong between
//! two connected streams of one in-process board, both ends driven by the **one** bench
//! thread (write on the client, read on the server, write back, read on the client). No
//! cache line moves between cores and nobody waits, so what is measured is the software of
//! a message (the stream, the connection's cursors and CDC, the driver, the device's
//! store-block and signal, the interrupt handler) and nothing of the machine's cross-core
//! latency, which `ism-sim bench`'s busy-poll row adds on top.
//!
//! One iteration is one round trip: two messages, each a data store-block and a signalled
//! CDC store-block.
//!
//! Run: `cargo bench -p ism-sim --bench stack`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use ism_host_driver::smcd::{Listener, StackConfig, Stream};
use ism_sim::smc::SmcBoard;
use ism_sim::{BoardConfig, BoardKind, IrqMode};

/// A connected pair on a new board of `kind` (busy-polling streams on a board whose
/// interrupts only pollers take, as `ism-sim bench`'s busy-poll row).
fn pair(kind: BoardKind, nocopy: bool) -> (SmcBoard, Stream, Stream) {
    let board = SmcBoard::start(
        kind,
        2,
        BoardConfig {
            partition_memory: 8 << 20,
            ..BoardConfig::default()
        },
        IrqMode::Poll,
        StackConfig {
            nocopy,
            busy_poll: true,
            ..StackConfig::default()
        },
    )
    .expect("a board");
    let (client, server) = board.pair();
    let listener = Listener::bind(&server, "127.0.0.1:0").expect("a listener");
    let addr = listener.local_addr().expect("its address");
    let accept = std::thread::spawn(move || listener.accept().expect("a connection").0);
    let c = Stream::connect(&client, addr).expect("connected");
    let s = accept.join().expect("the acceptor");
    assert!(c.is_smc() && s.is_smc(), "the pair fell back to TCP");
    c.set_busy_poll(true);
    s.set_busy_poll(true);
    (board, c, s)
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip_one_thread");
    for (name, kind, nocopy) in [
        ("lpar", BoardKind::Lpar, false),
        ("lo", BoardKind::Loopback, false),
        ("lo_nocopy", BoardKind::Loopback, true),
    ] {
        let (_board, mut client, mut server) = pair(kind, nocopy);
        let msg = [0x5Au8; 14];
        let mut buf = [0u8; 14];
        g.bench_function(name, |b| {
            b.iter(|| {
                client.write_all(black_box(&msg)).unwrap();
                server.read_exact(&mut buf).unwrap();
                server.write_all(&buf).unwrap();
                client.read_exact(&mut buf).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = round_trip
}
criterion_main!(benches);
