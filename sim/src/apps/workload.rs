//! Workloads: one SMC-D stream between two endpoints, every byte verified.
//!
//! The sender writes a deterministic pseudo-random byte sequence; the receiver regenerates
//! it and compares as data arrives, so corruption, loss, duplication and reordering are all
//! caught, at the offset where they happen.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use std::sync::Arc;

use ism_host_driver::smcd::{ConnInfo, Listener, Stream, StreamStats};

use crate::board::BoardKind;
use crate::rng::Rng;
use crate::smc::SmcBoard;

/// A reproducible byte sequence (the [`Rng`]'s output, little-endian), generated in blocks.
#[derive(Clone, Debug)]
pub struct Pattern {
    rng: Rng,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    /// The sequence for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.rng.next_u64().to_le_bytes()
    }

    /// Fills `buf` with the next bytes of the sequence.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() && self.used < 8 {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = buf[i..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_word());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }

    /// Checks that `buf` is the next part of the sequence; returns the index of the first
    /// differing byte.
    pub fn check(&mut self, buf: &[u8], scratch: &mut Vec<u8>) -> Result<(), usize> {
        scratch.resize(buf.len(), 0);
        self.fill(scratch);
        match buf.iter().zip(scratch.iter()).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(i),
        }
    }
}

/// What [`run_stream`] measured.
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// Board kind.
    pub kind: BoardKind,
    /// Bytes sent and verified.
    pub bytes: u64,
    /// Time from the first write to the last byte verified.
    pub elapsed: Duration,
    /// Whether every byte matched.
    pub verified: bool,
    /// Sender statistics.
    pub client: StreamStats,
    /// Receiver statistics.
    pub server: StreamStats,
    /// The SMC-D connections of the board's stacks once the receiver has read everything
    /// (both ends still open), as `smcss` lists them; empty after a TCP fallback.
    pub connections: Vec<ConnInfo>,
}

impl StreamReport {
    /// Throughput in bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Options of [`run_stream`].
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Bytes to send.
    pub bytes: u64,
    /// Size of each write.
    pub chunk: usize,
    /// Busy-poll instead of blocking.
    pub busy_poll: bool,
    /// Pattern seed.
    pub seed: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            bytes: 64 << 20,
            chunk: 64_000,
            busy_poll: false,
            seed: 1,
        }
    }
}

/// Streams `opts.bytes` from a client to a server of `board` and verifies them.
///
/// # Errors
/// A message for any I/O error or verification failure.
pub fn run_stream(board: &SmcBoard, opts: StreamOptions) -> Result<StreamReport, String> {
    let (cs, ss) = board.pair();
    let listener = Listener::bind(&ss, "127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // A client whose handshake failed never reaches `accept`.
    let limit = 2 * ss.config().clc_timeout;
    let stacks = if Arc::ptr_eq(&cs, &ss) {
        vec![cs.clone()]
    } else {
        vec![cs.clone(), ss.clone()]
    };
    let receiver = std::thread::spawn(
        move || -> Result<(u64, bool, StreamStats, Instant, Vec<ConnInfo>), String> {
            let (mut s, _) = listener
                .accept_timeout(limit)
                .map_err(|e| format!("accept: {e}"))?;
            s.set_busy_poll(opts.busy_poll);
            let mut pat = Pattern::new(opts.seed);
            let mut buf = vec![0u8; 1 << 20];
            let mut scratch = Vec::new();
            let (mut got, mut ok) = (0u64, true);
            loop {
                let n = s
                    .read(&mut buf)
                    .map_err(|e| format!("read after {got} bytes: {e}"))?;
                if n == 0 {
                    break;
                }
                if let Err(i) = pat.check(&buf[..n], &mut scratch) {
                    if ok {
                        log::error!("stream corrupted at byte {}", got + i as u64);
                    }
                    ok = false;
                }
                got += n as u64;
            }
            let end = Instant::now();
            let conns = stacks.iter().flat_map(|st| st.connection_stats()).collect();
            Ok((got, ok, s.stats(), end, conns))
        },
    );
    let mut c = Stream::connect(&cs, addr).map_err(|e| format!("connect: {e}"))?;
    c.set_busy_poll(opts.busy_poll);
    let mut pat = Pattern::new(opts.seed);
    let mut buf = vec![0u8; opts.chunk.max(1)];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < opts.bytes {
        let n = (opts.bytes - sent).min(buf.len() as u64) as usize;
        pat.fill(&mut buf[..n]);
        c.write_all(&buf[..n])
            .map_err(|e| format!("write after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    c.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let (got, ok, server, end, connections) = receiver
        .join()
        .map_err(|_| "receiver panicked".to_string())??;
    Ok(StreamReport {
        kind: board.board().kind(),
        bytes: got,
        elapsed: end - start,
        verified: ok && got == opts.bytes,
        client: c.stats(),
        server,
        connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_chunking_independent() {
        let mut a = Pattern::new(5);
        let mut whole = vec![0u8; 1000];
        a.fill(&mut whole);
        let mut b = Pattern::new(5);
        let mut scratch = Vec::new();
        for part in whole.chunks(7) {
            assert!(b.check(part, &mut scratch).is_ok());
        }
        let mut c = Pattern::new(5);
        let mut bad = whole.clone();
        bad[500] ^= 1;
        assert_eq!(c.check(&bad, &mut scratch), Err(500));
    }
}
