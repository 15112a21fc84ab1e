//! Helpers shared by the SMC-D protocol tests (`smcd_*.rs`): boards with per-partition stack
//! options, a seeded PRNG, bounded thread joins, verified pattern transfers.
//!
//! Every wait here is bounded: joins go through [`join_within`], streams get a timeout.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ism_host_driver::smcd::clc::accept_confirm::OS_TYPE_LINUX;
use ism_host_driver::smcd::clc::{
    AcceptConfirm, AcceptConfirmV2, ClcMessage, FceV2x, FirstContactExt,
};
use ism_host_driver::smcd::device::SmcdOps;
use ism_host_driver::smcd::handshake::read_clc;
use ism_host_driver::smcd::stack::default_ueid;
use ism_host_driver::smcd::{Listener, SmcStack, StackConfig, Stream};
use ism_sim::board::{BoardConfig, BoardKind, SimBoard, SimDriver};
use ism_sim::host::{Host, IrqMode};
use ism_sim::workload::Pattern;

/// Per-stream limit of one blocking read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Limit for a helper thread to finish.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(40);

/// A ring size that wraps often: 16 KiB RMBs (16 352-byte rings).
pub const SMALL_BUF: usize = 16 << 10;

pub use ism_tests::util::Rng;

/// Joins `h`, panicking (instead of hanging) if it does not finish within `limit`, and
/// re-raising its panic.
pub fn join_within<T>(h: JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "{what}: thread did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (bounded by [`JOIN_TIMEOUT`]) until a reader or writer of `s` has waited once more
/// than `before` times: an observable sign that it is blocked, instead of a sleep.
pub fn until_blocked(s: &Stream, before: u64) {
    let c = s.conn().expect("an SMC-D stream").clone();
    assert!(
        eventually(JOIN_TIMEOUT, || c.stats().waits > before),
        "never blocked"
    );
}

/// Stack options with a small ring.
pub fn small_cfg(nocopy: bool) -> StackConfig {
    StackConfig {
        nocopy,
        buffer_size: SMALL_BUF,
        ..StackConfig::default()
    }
}

/// A board whose partitions run stacks with their own options (and, optionally, a CHID
/// that the partition's OS believes in, different from the board's).
pub struct Custom {
    /// The board.
    pub board: SimBoard,
    /// One host per partition.
    pub hosts: Vec<Host>,
    /// One stack per partition that got one (`None` options: no stack).
    pub stacks: Vec<Arc<SmcStack>>,
}

impl Custom {
    /// Builds `kind` with one partition per entry of `parts`: (stack options, CHID override).
    pub fn build(
        kind: BoardKind,
        board_cfg: BoardConfig,
        parts: Vec<(StackConfig, Option<u16>)>,
    ) -> Self {
        let board = SimBoard::build(kind, parts.len(), board_cfg);
        let mut hosts = Vec::new();
        let mut stacks = Vec::new();
        for (p, (cfg, chid)) in board.partitions().iter().zip(parts) {
            let host =
                Host::start(p, chid.unwrap_or(board.chid()), IrqMode::Thread, None).expect("probe");
            let ops: Arc<dyn SmcdOps> = host.driver().clone();
            stacks.push(SmcStack::new(cfg, vec![ops]).expect("stack"));
            hosts.push(host);
        }
        Self {
            board,
            hosts,
            stacks,
        }
    }

    /// Partition `i`'s driver.
    pub fn driver(&self, i: usize) -> &Arc<SimDriver> {
        self.hosts[i].driver()
    }
}

/// Accepts one connection on a thread and runs `f` on it.
pub fn serve_one<T: Send + 'static>(
    l: Listener,
    f: impl FnOnce(Stream) -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        let (s, _) = l.accept_timeout(JOIN_TIMEOUT).expect("accept");
        s.set_timeout(Some(IO_TIMEOUT)).unwrap();
        f(s)
    })
}

/// Connects `stack` to `addr` with a timeout set.
pub fn connect(stack: &Arc<SmcStack>, addr: SocketAddr) -> Stream {
    let s = Stream::connect(stack, addr).expect("connect");
    s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A listener of `stack` on a free local port, and its address.
pub fn listen(stack: &Arc<SmcStack>) -> (Listener, SocketAddr) {
    let l = Listener::bind(stack, "127.0.0.1:0").expect("bind");
    let a = l.local_addr().unwrap();
    (l, a)
}

/// One connection from `cs` to `ss`: (client, server), both with timeouts.
pub fn pair(cs: &Arc<SmcStack>, ss: &Arc<SmcStack>) -> (Stream, Stream) {
    let (l, a) = listen(ss);
    let srv = serve_one(l, |s| s);
    let c = connect(cs, a);
    (c, join_within(srv, JOIN_TIMEOUT, "accept"))
}

/// Writes `total` bytes of pattern `seed` in random chunks of 1..=`max_chunk` bytes.
pub fn send_pattern(
    mut s: &Stream,
    seed: u64,
    total: usize,
    max_chunk: usize,
    rng: &mut Rng,
) -> io::Result<()> {
    let mut pat = Pattern::new(seed);
    let mut buf = vec![0u8; max_chunk];
    let mut sent = 0;
    while sent < total {
        let n = rng.usize_in(1, max_chunk).min(total - sent);
        pat.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        sent += n;
    }
    Ok(())
}

/// Reads pattern `seed` in random read sizes until end of stream; returns the byte count,
/// failing at the first byte that differs.
pub fn recv_pattern(
    mut s: &Stream,
    seed: u64,
    max_read: usize,
    rng: &mut Rng,
) -> io::Result<usize> {
    let mut pat = Pattern::new(seed);
    let mut buf = vec![0u8; max_read];
    let mut scratch = Vec::new();
    let mut got = 0;
    loop {
        let want = rng.usize_in(1, max_read);
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(got);
        }
        if let Err(i) = pat.check(&buf[..n], &mut scratch) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stream {seed}: byte {} differs", got + i),
            ));
        }
        got += n;
    }
}

/// Sends `total` bytes of pattern `seed`, then shuts down writing.
pub fn send_and_finish(
    s: &Stream,
    seed: u64,
    total: usize,
    max_chunk: usize,
    rng: &mut Rng,
) -> io::Result<()> {
    send_pattern(s, seed, total, max_chunk, rng)?;
    s.shutdown(Shutdown::Write)
}

/// Plain data both ways over `c` and `s` (SMC-D or TCP fallback), as a check that the
/// connection is usable.
pub fn ping_pong(c: &Stream, s: Stream) {
    let srv = std::thread::spawn(move || {
        let mut buf = [0u8; 5];
        (&s).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        (&s).write_all(b"world!").unwrap();
        s
    });
    (&*c).write_all(b"hello").unwrap();
    let mut back = [0u8; 6];
    (&*c).read_exact(&mut back).unwrap();
    assert_eq!(&back, b"world!");
    drop(join_within(srv, JOIN_TIMEOUT, "ping-pong server"));
}

/// A first-contact SMC-Dv2 ACCEPT as a Linux server sends it (`net/smc/smc_clc.c`
/// `smc_clc_send_confirm_accept`): our RMB `token` on GID `gid`/`gid_ext`, device `chid`,
/// the default UEID, a Linux first-contact extension with `feature_mask`.
pub fn linux_accept(
    gid: u64,
    gid_ext: u64,
    token: u64,
    chid: u16,
    link_id: u32,
    feature_mask: u16,
) -> ClcMessage {
    ClcMessage::Accept(AcceptConfirm {
        first_contact: true,
        gid,
        token,
        dmbe_idx: 0,
        dmbe_size: 0,
        link_id,
        v2: Some(AcceptConfirmV2 {
            chid,
            eid: default_ueid(),
            gid_ext,
            fce: Some(FirstContactExt {
                v2_direct: false,
                os_type: OS_TYPE_LINUX,
                release: 1,
                hostname: [b' '; 32],
                v2x: Some(FceV2x {
                    max_conns: 0,
                    max_links: 0,
                    feature_mask,
                    vendor_exp_options: 0,
                }),
            }),
        }),
    })
}

/// A raw "Linux server" on a fresh port: accepts one TCP connection, reads the client's
/// proposal, answers `answer`, and returns (from the thread) the client's next CLC message.
pub fn linux_server(answer: ClcMessage) -> (SocketAddr, JoinHandle<ClcMessage>) {
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = raw.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut t, _) = raw.accept().unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _proposal = read_clc(&mut t).unwrap();
        t.write_all(&answer.emit()).unwrap();
        read_clc(&mut t).unwrap()
    });
    (addr, h)
}
