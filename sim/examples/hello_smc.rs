//! The README's example: two LPARs, a stack on each, one SMC-D stream.
//!
//! Run with `cargo run --release -p ism-sim --example hello_smc`.

use std::io::{Read, Write};

use ism_host_driver::smcd::{Listener, Stream};
use ism_sim::smc::SmcBoard;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let board = SmcBoard::lpar()?; // two LPARs, a stack on each
    let (client, server) = board.pair();
    let listener = Listener::bind(&server, "127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        buf
    });
    let mut c = Stream::connect(&client, addr)?; // CLC over TCP, then data through DMBs
    assert!(c.is_smc());
    c.write_all(b"hello")?;
    let got = t.join().expect("server thread");
    assert_eq!(&got, b"hello");
    println!(
        "received {:?} over SMC-D v{}",
        String::from_utf8_lossy(&got),
        c.smc_version().unwrap_or(0)
    );
    Ok(())
}
