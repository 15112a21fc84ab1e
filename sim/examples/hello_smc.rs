//! The README's example ("Using the stack"): two LPARs, a stack on each, one SMC-D stream.
//! The body of `main` up to the `println!` is the README's code block, line for line
//! (`sim/tests/readme_example.rs` checks that, and runs this `main`).
//!
//! Run with `cargo run --release -p ism-sim --example hello_smc`.

use std::io::{Read, Write};

use ism_host_driver::smcd::{Listener, Stream};
use ism_sim::smc::SmcBoard;

/// The example; `pub` for the test that runs it.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let board = SmcBoard::lpar()?; // two LPARs, a stack on each
    let (client, server) = board.pair();
    let listener = Listener::bind(&server, "127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let mut c = Stream::connect(&client, addr)?; // CLC over TCP, then data through DMBs
    assert!(c.is_smc());
    c.write_all(b"hello")?;
    assert_eq!(&t.join().unwrap(), b"hello");
    println!(
        "sent {:?} over SMC-D v{}",
        "hello",
        c.smc_version().unwrap_or(0)
    );
    Ok(())
}
