//! The stream API for tokio (feature `tokio`): [`AsyncStream`] (`AsyncRead + AsyncWrite`,
//! SMC-D or TCP fallback, as [`Stream`]) and [`AsyncListener`].
//!
//! Design: a stream's blocking reads and writes run on tokio's blocking thread pool
//! (`spawn_blocking`), where they wait in the connection's own wait primitive (a short
//! spin, then a sleep until the interrupt path wakes them); an executor thread never
//! spins or blocks on a connection. A read or write in progress belongs to the
//! [`AsyncStream`], not to the future that started it, so a cancelled `read` (for example
//! in `select!`) loses no data: the next read returns it. The listener needs no thread of
//! its own: its handshakes already run in the background, and [`Listener::poll_accept`]
//! wakes the accepting task when one completes.
//!
//! Writes are accepted as `tokio::fs::File`'s are: `poll_write` hands at most
//! [`MAX_CHUNK`] bytes to a background write and returns at once; an error of that write
//! is returned by the next `write`, `flush` or `shutdown`, and `flush` waits until it is
//! done. Call `flush` (or `shutdown`) to know that everything was sent.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use ism_host_driver::smcd::tokio::{AsyncListener, AsyncStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! # let dev = ism_host_driver::ism::fake::fake_device(2, false);
//! # let stacks: Vec<_> = (0..2)
//! #     .map(|i| {
//! #         let f = ism_host_driver::ism::fake::FakeFunction::new(dev.clone(), i);
//! #         let d = ism_host_driver::ism::IsmDriver::probe(f.clone(), f, 1).unwrap();
//! #         let ops: std::sync::Arc<dyn ism_host_driver::smcd::device::SmcdOps> =
//! #             std::sync::Arc::new(d);
//! #         ism_host_driver::smcd::SmcStack::new(Default::default(), vec![ops]).unwrap()
//! #     })
//! #     .collect();
//! # let (client, server) = (stacks[0].clone(), stacks[1].clone());
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     // `client` and `server`: the SMC-D stacks of two systems.
//!     let listener = AsyncListener::bind(&server, "127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let echo = tokio::spawn(async move {
//!         let (mut s, _) = listener.accept().await?;
//!         let mut buf = [0u8; 5];
//!         s.read_exact(&mut buf).await?;
//!         s.write_all(&buf).await?;
//!         s.shutdown().await
//!     });
//!     let mut c = AsyncStream::connect(&client, addr).await?;
//!     assert!(c.get_ref().is_smc());
//!     c.write_all(b"hello").await?;
//!     c.flush().await?;
//!     let mut back = Vec::new();
//!     c.read_to_end(&mut back).await?;
//!     assert_eq!(back, b"hello");
//!     echo.await?
//! })
//! # }
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::task::{spawn_blocking, JoinHandle};

use super::stack::SmcStack;
use super::stream::{Listener, Stream};

/// Most bytes one background read or write moves.
pub const MAX_CHUNK: usize = 64 << 10;

/// A blocking call's error as an async caller should see it: an expired read or write
/// timeout of the underlying [`Stream`] (`WouldBlock` on Unix sockets) is `TimedOut`, as
/// `WouldBlock` means "not ready, poll again" to async code.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, e)
    } else {
        e
    }
}

fn join_error(e: ::tokio::task::JoinError) -> io::Error {
    io::Error::other(alloc::format!("background I/O task failed: {e}"))
}

/// Runs `f` on the blocking pool and waits for it.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    spawn_blocking(f).await.map_err(join_error)?
}

/// A connected SMC-D stream (or its TCP fallback) for tokio: [`Stream`] as
/// `AsyncRead + AsyncWrite`. Split it with `tokio::io::split` for a reader and a writer
/// task; reads and writes proceed at the same time.
///
/// It must be used inside a tokio runtime (reads and writes start blocking-pool tasks).
/// The underlying stream's read and write timeouts apply (an expired one is a `TimedOut`
/// error); do not switch it to non-blocking mode.
///
/// Dropping it closes the connection once a write still in progress has finished (bound
/// that with [`Stream::set_write_timeout`]); a read in progress is ended at once.
pub struct AsyncStream {
    stream: Stream,
    /// A background read and what it read.
    read_op: Option<JoinHandle<(Vec<u8>, io::Result<usize>)>>,
    /// Bytes read in the background that the caller has not taken yet.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// A background write (all of its bytes, or an error).
    write_op: Option<JoinHandle<io::Result<()>>>,
}

impl AsyncStream {
    /// Connects to `addr` and runs the CLC handshake (on the blocking pool), as
    /// [`Stream::connect`].
    ///
    /// # Errors
    /// As [`Stream::connect`].
    pub async fn connect<A>(stack: &Arc<SmcStack>, addr: A) -> io::Result<AsyncStream>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let stack = stack.clone();
        blocking(move || Stream::connect(&stack, addr))
            .await
            .map(Self::from_std)
    }

    /// Wraps a connected [`Stream`]. Its other handles ([`Stream::try_clone`]) must not
    /// read while this one does, or the two readers share the data between them.
    pub fn from_std(stream: Stream) -> AsyncStream {
        AsyncStream {
            stream,
            read_op: None,
            read_buf: Vec::new(),
            read_pos: 0,
            write_op: None,
        }
    }

    /// The underlying stream, for its settings and statistics ([`Stream::is_smc`],
    /// [`Stream::stats`], timeouts, addresses).
    pub fn get_ref(&self) -> &Stream {
        &self.stream
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As [`Stream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As [`Stream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Waits for a background write, if one runs; its result.
    fn poll_write_op(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(op) = self.write_op.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let r = match Pin::new(op).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.map_err(join_error).and_then(|r| r),
        };
        self.write_op = None;
        Poll::Ready(r)
    }
}

impl AsyncRead for AsyncStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_pos < this.read_buf.len() {
                let n = out.remaining().min(this.read_buf.len() - this.read_pos);
                out.put_slice(&this.read_buf[this.read_pos..this.read_pos + n]);
                this.read_pos += n;
                return Poll::Ready(Ok(()));
            }
            if let Some(op) = this.read_op.as_mut() {
                let (mut data, r) = match Pin::new(op).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(done)) => done,
                    Poll::Ready(Err(e)) => (Vec::new(), Err(join_error(e))),
                };
                this.read_op = None;
                let n = r?;
                if n == 0 {
                    return Poll::Ready(Ok(())); // end of stream
                }
                data.truncate(n);
                this.read_buf = data;
                this.read_pos = 0;
                continue;
            }
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let len = out.remaining().min(MAX_CHUNK);
            let s = this.stream.try_clone()?;
            this.read_op = Some(spawn_blocking(move || {
                let mut data = vec![0u8; len];
                let r = (&s).read(&mut data).map_err(timed_out);
                (data, r)
            }));
        }
    }
}

impl AsyncWrite for AsyncStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_write_op(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_CHUNK);
        let data = buf[..n].to_vec();
        let s = this.stream.try_clone()?;
        this.write_op = Some(spawn_blocking(move || {
            (&s).write_all(&data).map_err(timed_out)
        }));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_write_op(cx) {
            Poll::Ready(Ok(())) => Poll::Ready((&this.stream).flush()),
            other => other,
        }
    }

    /// Waits for the data written so far, then shuts the writing side down (the peer
    /// reads end-of-stream).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_write_op(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(this.stream.shutdown(Shutdown::Write)),
            other => other,
        }
    }
}

impl Drop for AsyncStream {
    fn drop(&mut self) {
        // A background read would hold the connection open until the peer sends or
        // closes: end it (the connection closes with this handle anyway).
        if self.read_op.is_some() {
            let _ = self.stream.shutdown(Shutdown::Read);
        }
    }
}

impl From<Stream> for AsyncStream {
    fn from(s: Stream) -> Self {
        Self::from_std(s)
    }
}

impl core::fmt::Debug for AsyncStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AsyncStream")
            .field("stream", &self.stream)
            .field("reading", &self.read_op.is_some())
            .field("writing", &self.write_op.is_some())
            .field("buffered", &(self.read_buf.len() - self.read_pos))
            .finish()
    }
}

/// A listening socket for tokio: [`Listener`] with an `async` accept. Handshakes run in
/// the background as for [`Listener`]; a slow or failing client delays no other.
#[derive(Debug)]
pub struct AsyncListener {
    listener: Listener,
}

impl AsyncListener {
    /// Binds to `addr` (on the blocking pool: the address may need a name lookup), as
    /// [`Listener::bind`].
    ///
    /// # Errors
    /// As [`Listener::bind`].
    pub async fn bind<A>(stack: &Arc<SmcStack>, addr: A) -> io::Result<AsyncListener>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let stack = stack.clone();
        let listener = blocking(move || Listener::bind(&stack, addr)).await?;
        Ok(Self { listener })
    }

    /// Wraps a bound [`Listener`].
    pub fn from_std(listener: Listener) -> AsyncListener {
        Self { listener }
    }

    /// The underlying listener (statistics, address).
    pub fn get_ref(&self) -> &Listener {
        &self.listener
    }

    /// The bound address.
    ///
    /// # Errors
    /// As [`Listener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for the next connection whose handshake completed; cancel-safe (a
    /// connection is taken only when this returns it).
    ///
    /// # Errors
    /// As [`Listener::accept`].
    pub async fn accept(&self) -> io::Result<(AsyncStream, SocketAddr)> {
        let (s, a) = core::future::poll_fn(|cx| self.listener.poll_accept(cx)).await?;
        Ok((AsyncStream::from_std(s), a))
    }

    /// [`AsyncListener::accept`] for hand-written futures.
    ///
    /// # Errors
    /// As [`Listener::accept`].
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(AsyncStream, SocketAddr)>> {
        self.listener
            .poll_accept(cx)
            .map_ok(|(s, a)| (AsyncStream::from_std(s), a))
    }
}

impl From<Listener> for AsyncListener {
    fn from(l: Listener) -> Self {
        Self::from_std(l)
    }
}
