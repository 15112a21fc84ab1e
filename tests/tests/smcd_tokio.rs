//! The tokio stream API (`ism_host_driver::smcd::tokio`, feature `tokio`): verified
//! full-duplex echo over SMC-D (rings wrapping many times) and over a TCP fallback;
//! cancel-safe reads; an executor thread that is never blocked by a waiting read or
//! accept; a dropped stream that closes its connection even with a read in progress.
//!
//! Every test is bounded: the futures run under `tokio::time::timeout`, and the
//! underlying streams have read and write timeouts.

mod smcd_common;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ism_host_driver::smcd::tokio::{AsyncListener, AsyncStream};
use ism_host_driver::smcd::{SmcStack, StackConfig};
use ism_sim::board::{BoardConfig, BoardKind};
use ism_sim::workload::Pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use smcd_common::*;

fn small_lpar() -> Custom {
    Custom::build(
        BoardKind::Lpar,
        BoardConfig::default(),
        vec![(small_cfg(false), None), (small_cfg(false), None)],
    )
}

/// A connected pair of async streams from `cs` to `ss`, both with I/O timeouts.
async fn async_pair(cs: &Arc<SmcStack>, ss: &Arc<SmcStack>) -> (AsyncStream, AsyncStream) {
    let l = AsyncListener::bind(ss, "127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(AsyncStream::connect(cs, addr), l.accept());
    let (c, (s, peer)) = (c.unwrap(), s.unwrap());
    assert_eq!(peer, c.local_addr().unwrap());
    for x in [&c, &s] {
        x.get_ref().set_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    (c, s)
}

/// The client sends `total` bytes of a pattern in odd-sized writes while reading the echo
/// back in odd-sized reads; the server echoes with `tokio::io::copy` on split halves.
async fn echo(c: AsyncStream, s: AsyncStream, total: usize) {
    let server = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(s);
        let n = tokio::io::copy(&mut r, &mut w).await?;
        w.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    });
    let (mut r, mut w) = tokio::io::split(c);
    let writer = tokio::spawn(async move {
        let mut pat = Pattern::new(7);
        let mut buf = vec![0u8; 70_001];
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(1 + sent % buf.len());
            pat.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            sent += n;
        }
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut pat = Pattern::new(7);
    let mut scratch = Vec::new();
    let mut buf = vec![0u8; 50_000];
    let mut got = 0;
    loop {
        let want = 1 + got % buf.len();
        let n = r.read(&mut buf[..want]).await.unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(pat.check(&buf[..n], &mut scratch), Ok(()), "at {got}");
        got += n;
    }
    assert_eq!(got, total);
    let _w = writer.await.unwrap().unwrap();
    assert_eq!(server.await.unwrap().unwrap(), total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_echo_over_smcd_and_fallback() {
    let b = small_lpar();
    let (c, s) = async_pair(&b.stacks[0], &b.stacks[1]).await;
    assert!(c.get_ref().is_smc() && s.get_ref().is_smc());
    let ring = c.get_ref().conn().unwrap().ring_len() as usize;
    timeout(JOIN_TIMEOUT, echo(c, s, 40 * ring + 123))
        .await
        .expect("smc-d echo in time");

    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    let (c, s) = async_pair(&bare, &b.stacks[1]).await;
    assert!(!c.get_ref().is_smc());
    assert!(c.get_ref().fallback_reason().is_some());
    timeout(JOIN_TIMEOUT, echo(c, s, 3 << 20))
        .await
        .expect("fallback echo in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_read_loses_no_data() {
    let b = small_lpar();
    let (mut c, mut s) = async_pair(&b.stacks[0], &b.stacks[1]).await;
    let mut buf = [0u8; 16];
    // Nothing to read yet: the read is cancelled, its background part stays in flight.
    assert!(timeout(Duration::from_millis(50), c.read(&mut buf))
        .await
        .is_err());
    assert!(format!("{c:?}").contains("reading: true"), "{c:?}");
    s.write_all(b"not lost").await.unwrap();
    s.flush().await.unwrap();
    let n = timeout(JOIN_TIMEOUT, c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"not lost");
    // A reader with a smaller buffer than the background read gets the rest next time.
    s.write_all(b"0123456789").await.unwrap();
    s.flush().await.unwrap();
    let mut small = [0u8; 4];
    let mut got = Vec::new();
    while got.len() < 10 {
        let n = timeout(JOIN_TIMEOUT, c.read(&mut small))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&small[..n]);
    }
    assert_eq!(got, b"0123456789");
}

#[tokio::test(flavor = "current_thread")]
async fn waiting_reads_and_accepts_leave_the_executor_thread_free() {
    // One executor thread: if a waiting read or accept blocked it, the ticker below could
    // not run, nothing would be written, and the read would fail on its timeout.
    let b = small_lpar();
    let l = AsyncListener::bind(&b.stacks[1], "127.0.0.1:0")
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let t2 = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            t2.fetch_add(1, Ordering::Relaxed);
        }
    });
    let accept = tokio::spawn(async move { l.accept().await });
    // The accept waits (on no thread) while the executor ticks; then a client comes.
    while ticks.load(Ordering::Relaxed) < 5 {
        tokio::task::yield_now().await;
    }
    let cs = b.stacks[0].clone();
    let c = AsyncStream::connect(&cs, addr).await.unwrap();
    let (mut s, _) = timeout(JOIN_TIMEOUT, accept)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).await.map(|_| buf)
    });
    let start = ticks.load(Ordering::Relaxed);
    while ticks.load(Ordering::Relaxed) < start + 5 {
        tokio::task::yield_now().await;
    }
    let mut c = c;
    c.write_all(b"abc").await.unwrap();
    c.flush().await.unwrap();
    let got = timeout(JOIN_TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"abc");
    ticker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_with_a_read_in_progress_closes_the_connection() {
    // Without ending the background read, it would keep the connection open: the peer
    // would see no end of stream and fail on its read timeout instead.
    let b = small_lpar();
    let l = AsyncListener::bind(&b.stacks[1], "127.0.0.1:0")
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(AsyncStream::connect(&b.stacks[0], addr), l.accept());
    let mut c = c.unwrap();
    // The server end as a plain `Stream`, read on a thread of its own.
    let s = s.unwrap().0;
    let std_s = s.get_ref().try_clone().unwrap();
    drop(s);
    std_s.set_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4];
    assert!(timeout(Duration::from_millis(30), c.read(&mut buf))
        .await
        .is_err());
    drop(c);
    let eof = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        (&std_s).read_to_end(&mut rest).map(|_| rest.len())
    });
    let n = timeout(JOIN_TIMEOUT, eof).await.unwrap().unwrap();
    assert_eq!(n.unwrap(), 0, "end of stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_timeout_is_timed_out_on_both_kinds() {
    // `WouldBlock` from a poll function means "poll again" to async code: a TCP fallback
    // socket's expired timeout (`WouldBlock` on Unix) must read as `TimedOut`.
    let b = small_lpar();
    let bare = SmcStack::new(StackConfig::default(), Vec::new()).unwrap();
    for cs in [&b.stacks[0], &bare] {
        let (mut c, _s) = async_pair(cs, &b.stacks[1]).await;
        c.get_ref()
            .set_read_timeout(Some(Duration::from_millis(30)))
            .unwrap();
        let mut buf = [0u8; 4];
        let e = timeout(JOIN_TIMEOUT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "smc: {}",
            c.get_ref().is_smc()
        );
    }
}
