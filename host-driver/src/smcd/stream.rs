//! The stream API: `Listener` and `Stream`, a reliable byte stream that runs over SMC-D when
//! both ends agree and over the same TCP connection otherwise (transparently: the
//! application sees `Read + Write` either way, and [`Stream::fallback_reason`] says why).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::task::{Context, Poll, Waker};
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::clc::DeclineReason;
use super::conn::{Conn, ConnStats};
use super::handshake::{self, Outcome};
use super::stack::SmcStack;

enum Transport {
    Smc {
        conn: Arc<Conn>,
        device: usize,
        version: u8,
        first_contact: bool,
    },
    Tcp {
        reason: DeclineReason,
    },
}

struct Shared {
    stack: Arc<SmcStack>,
    tcp: TcpStream,
    transport: Transport,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Transport::Smc { conn, device, .. } = &self.transport {
            conn.close();
            self.stack.release_conn(*device, conn);
        }
    }
}

/// Per-connection statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Whether data flows over SMC-D.
    pub smc: bool,
    /// Whether the sender writes into the peer's DMB without copying.
    pub nocopy: bool,
    /// Why the connection fell back to TCP, if it did.
    pub fallback: Option<DeclineReason>,
    /// SMC-D data-path counters (zero for TCP).
    pub conn: ConnStats,
}

/// A connected stream. Clones (see [`Stream::try_clone`]) share the connection, which is
/// closed when the last one is dropped. It behaves as `std::net::TcpStream`: `Read` and
/// `Write` (also on `&Stream`), `shutdown`, read and write timeouts, non-blocking mode.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use ism_host_driver::smcd::{Listener, Stream};
///
/// # let dev = ism_host_driver::ism::fake::fake_device(2, false);
/// # let stacks: Vec<_> = (0..2)
/// #     .map(|i| {
/// #         let f = ism_host_driver::ism::fake::FakeFunction::new(dev.clone(), i);
/// #         let d = ism_host_driver::ism::IsmDriver::probe(f.clone(), f, 1).unwrap();
/// #         let ops: std::sync::Arc<dyn ism_host_driver::smcd::device::SmcdOps> =
/// #             std::sync::Arc::new(d);
/// #         ism_host_driver::smcd::SmcStack::new(Default::default(), vec![ops]).unwrap()
/// #     })
/// #     .collect();
/// # let (client, server) = (stacks[0].clone(), stacks[1].clone());
/// // `client` and `server`: the SMC-D stacks of two systems (here on a fake device).
/// let listener = Listener::bind(&server, "127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let echo = std::thread::spawn(move || -> std::io::Result<()> {
///     let (mut s, _) = listener.accept()?;
///     let mut buf = Vec::new();
///     s.read_to_end(&mut buf)?; // until the client shuts its side down
///     s.write_all(&buf)
/// });
/// let mut c = Stream::connect(&client, addr)?; // CLC handshake over TCP, then SMC-D
/// assert!(c.is_smc() && c.fallback_reason().is_none());
/// c.set_read_timeout(Some(Duration::from_secs(10)))?;
/// c.write_all(b"ping")?;
/// c.shutdown(std::net::Shutdown::Write)?;
/// let mut back = Vec::new();
/// c.read_to_end(&mut back)?;
/// assert_eq!(back, b"ping");
/// assert_eq!(c.stats().conn.bytes_sent, 4);
/// echo.join().unwrap()
/// # }
/// ```
pub struct Stream {
    shared: Arc<Shared>,
}

impl Stream {
    fn from_outcome(stack: &Arc<SmcStack>, tcp: TcpStream, outcome: Outcome) -> Self {
        let transport = match outcome {
            Outcome::Smc(e) => Transport::Smc {
                conn: e.conn,
                device: e.device,
                version: e.version,
                first_contact: e.first_contact,
            },
            Outcome::Fallback(reason) => {
                log::debug!("smc: fallback to TCP: {reason}");
                Transport::Tcp { reason }
            }
        };
        let _ = tcp.set_nodelay(true);
        Self {
            shared: Arc::new(Shared {
                stack: stack.clone(),
                tcp,
                transport,
            }),
        }
    }

    /// Connects to `addr` and runs the CLC handshake; falls back to TCP when SMC-D is not
    /// possible.
    ///
    /// # Errors
    /// TCP connect errors, malformed CLC answers, and `TimedOut` if the server does not
    /// answer within the stack's CLC timeout.
    pub fn connect(stack: &Arc<SmcStack>, addr: impl ToSocketAddrs) -> io::Result<Stream> {
        Self::client_on(stack, TcpStream::connect(addr)?)
    }

    /// Runs the client side of the CLC handshake on `tcp`, a TCP connection this program
    /// connected itself (for code that owns its sockets, such as `ism-run`'s preload
    /// library); falls back to TCP on the same socket when SMC-D is not possible. The
    /// handshake leaves `tcp` with the stack's CLC timeout as its read timeout and
    /// `TCP_NODELAY` on; callers that hand the socket back restore them.
    ///
    /// # Errors
    /// As [`Stream::connect`], without the connect errors.
    pub fn client_on(stack: &Arc<SmcStack>, mut tcp: TcpStream) -> io::Result<Stream> {
        let outcome = handshake::client(stack, &mut tcp).map_err(timed_out)?;
        Ok(Self::from_outcome(stack, tcp, outcome))
    }

    /// Runs the server side of the CLC handshake on `tcp`, a connection this program
    /// accepted itself, in the calling thread (unlike [`Listener`], which runs it in the
    /// background); falls back to TCP on the same socket when SMC-D is not possible. As
    /// [`Stream::client_on`] for the socket's options.
    ///
    /// # Errors
    /// I/O errors of the TCP connection, `TimedOut` if the client does not finish within
    /// the stack's CLC timeout, and an `InvalidData` error carrying an
    /// [`Abort`](super::handshake::Abort) where Linux aborts.
    pub fn server_on(stack: &Arc<SmcStack>, tcp: TcpStream) -> io::Result<Stream> {
        Self::server_on_gated(stack, tcp, || None)
    }

    /// [`Stream::server_on`] with a gate after the client's proposal
    /// ([`handshake::server_gated`]): `Some(reason)` declines it, and the stream runs on
    /// TCP.
    ///
    /// # Errors
    /// As [`Stream::server_on`].
    pub fn server_on_gated(
        stack: &Arc<SmcStack>,
        mut tcp: TcpStream,
        gate: impl FnOnce() -> Option<DeclineReason>,
    ) -> io::Result<Stream> {
        let outcome = handshake::server_gated(stack, &mut tcp, gate).map_err(timed_out)?;
        Ok(Self::from_outcome(stack, tcp, outcome))
    }

    /// Whether data flows over SMC-D.
    pub fn is_smc(&self) -> bool {
        matches!(self.shared.transport, Transport::Smc { .. })
    }

    /// Why the connection runs over TCP, if it does.
    pub fn fallback_reason(&self) -> Option<DeclineReason> {
        match self.shared.transport {
            Transport::Tcp { reason } => Some(reason),
            Transport::Smc { .. } => None,
        }
    }

    /// SMC-D version in use (1 or 2), if SMC-D.
    pub fn smc_version(&self) -> Option<u8> {
        match self.shared.transport {
            Transport::Smc { version, .. } => Some(version),
            Transport::Tcp { .. } => None,
        }
    }

    /// Whether this connection opened a new link group, if SMC-D.
    pub fn first_contact(&self) -> Option<bool> {
        match self.shared.transport {
            Transport::Smc { first_contact, .. } => Some(first_contact),
            Transport::Tcp { .. } => None,
        }
    }

    /// The SMC-D connection, if any (for inspection and tests).
    pub fn conn(&self) -> Option<&Arc<Conn>> {
        match &self.shared.transport {
            Transport::Smc { conn, .. } => Some(conn),
            Transport::Tcp { .. } => None,
        }
    }

    /// Statistics.
    pub fn stats(&self) -> StreamStats {
        match &self.shared.transport {
            Transport::Smc { conn, .. } => StreamStats {
                smc: true,
                nocopy: conn.is_nocopy(),
                fallback: None,
                conn: conn.stats(),
            },
            Transport::Tcp { reason } => StreamStats {
                smc: false,
                nocopy: false,
                fallback: Some(*reason),
                conn: ConnStats::default(),
            },
        }
    }

    /// Busy-poll the device while waiting instead of sleeping (SMC-D only).
    pub fn set_busy_poll(&self, on: bool) {
        if let Some(c) = self.conn() {
            c.set_busy_poll(on);
        }
    }

    /// Limit for one blocking read and for one blocking write (both at once, see
    /// [`Stream::set_read_timeout`]); `None` waits forever.
    ///
    /// # Errors
    /// As [`Stream::set_read_timeout`].
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }

    /// Limit for one blocking read, as `TcpStream::set_read_timeout`: a read that waits
    /// longer fails with `TimedOut` on SMC-D (`WouldBlock` or `TimedOut` on a TCP fallback
    /// stream, as the platform reports it); `None` waits forever. On SMC-D the limit is
    /// kept in whole milliseconds, rounded up.
    ///
    /// # Errors
    /// `InvalidInput` for `Some(Duration::ZERO)`, on SMC-D and TCP alike, as std.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self.conn() {
            Some(c) => c.set_read_timeout_ms(timeout_ms(t)?),
            None => self.shared.tcp.set_read_timeout(t)?,
        }
        Ok(())
    }

    /// Limit for one blocking write, as `TcpStream::set_write_timeout`. A write that times
    /// out after sending part of its buffer returns that count, as TCP does.
    ///
    /// # Errors
    /// As [`Stream::set_read_timeout`].
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self.conn() {
            Some(c) => c.set_write_timeout_ms(timeout_ms(t)?),
            None => self.shared.tcp.set_write_timeout(t)?,
        }
        Ok(())
    }

    /// The read time limit (`None`: none).
    ///
    /// # Errors
    /// As `TcpStream::read_timeout` on a TCP fallback stream.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self.conn() {
            Some(c) => Ok(ms_timeout(c.timeouts_ms().0)),
            None => self.shared.tcp.read_timeout(),
        }
    }

    /// The write time limit (`None`: none).
    ///
    /// # Errors
    /// As `TcpStream::write_timeout` on a TCP fallback stream.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        match self.conn() {
            Some(c) => Ok(ms_timeout(c.timeouts_ms().1)),
            None => self.shared.tcp.write_timeout(),
        }
    }

    /// Non-blocking mode, as `TcpStream::set_nonblocking`: a read with no data and a write
    /// with no room fail at once with `WouldBlock` (a write that sent a part returns that
    /// count). Applies to every handle of the connection (see [`Stream::try_clone`]).
    ///
    /// # Errors
    /// As `TcpStream::set_nonblocking` on a TCP fallback stream.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self.conn() {
            Some(c) => {
                c.set_nonblocking(on);
                Ok(())
            }
            None => self.shared.tcp.set_nonblocking(on),
        }
    }

    /// Shuts down reading, writing or both.
    ///
    /// # Errors
    /// As `TcpStream::shutdown` for TCP; `BrokenPipe` if the SMC-D peer cannot be told.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self.conn() {
            Some(c) => {
                if matches!(how, Shutdown::Read | Shutdown::Both) {
                    c.shutdown_read();
                }
                if matches!(how, Shutdown::Write | Shutdown::Both) {
                    c.shutdown_write()?;
                }
                Ok(())
            }
            None => self.shared.tcp.shutdown(how),
        }
    }

    /// Aborts the connection, as a TCP reset does: the peer first reads what had already
    /// reached it, then its reads fail with `ConnectionReset`, and its writes fail with
    /// `ConnectionReset` or `BrokenPipe`. Local reads and writes fail from now on
    /// (SMC-D: `ConnectionReset`).
    ///
    /// On SMC-D the peer's CDC carries the abort flag (Linux's `smc_close_active_abort`);
    /// on a TCP fallback stream the socket sends a RST (a `connect` with `AF_UNSPEC`, which
    /// Linux's `tcp_disconnect` answers with a reset), even while other handles of the
    /// stream are open.
    pub fn abort(&self) {
        match self.conn() {
            Some(c) => c.abort(),
            None => {
                #[cfg(unix)]
                if rustix::net::connect_unspec(&self.shared.tcp).is_ok() {
                    return;
                }
                let _ = self.shared.tcp.shutdown(Shutdown::Both);
            }
        }
    }

    /// A second handle to the same connection (for a reader and a writer thread).
    ///
    /// # Errors
    /// None today; fallible like `TcpStream::try_clone`.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Self {
            shared: self.shared.clone(),
        })
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As `TcpStream::peer_addr`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.tcp.peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// As `TcpStream::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.tcp.local_addr()
    }
}

/// A read timeout on the socket reads as `WouldBlock` on Unix: say what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "CLC handshake timed out")
    } else {
        e
    }
}

/// A time limit in whole milliseconds, rounded up (0: none), refusing a zero limit as std.
fn timeout_ms(t: Option<Duration>) -> io::Result<u64> {
    match t {
        None => Ok(0),
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            Ok(u64::try_from(ms).unwrap_or(u64::MAX))
        }
    }
}

fn ms_timeout(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn() {
            Some(c) => c.read(buf),
            None => (&self.shared.tcp).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.conn() {
            Some(c) => c.write(buf),
            None => (&self.shared.tcp).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.conn() {
            Some(_) => Ok(()),
            None => (&self.shared.tcp).flush(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl core::fmt::Debug for Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stream")
            .field("smc", &self.is_smc())
            .field("fallback", &self.fallback_reason())
            .finish_non_exhaustive()
    }
}

/// Most connections a [`Listener`] holds that `accept` has not taken yet, completed or
/// still in their handshake (Linux's default `somaxconn`, 4096, is for kernels; a
/// simulated OS needs fewer).
pub const DEFAULT_BACKLOG: usize = 128;

/// Counters of a [`Listener`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Handshakes that ended in a connection (SMC-D or fallback) put in the backlog.
    pub completed: u64,
    /// Handshakes that failed (the client went away, spoke garbage, or timed out); the
    /// client's TCP connection was closed and `accept` never sees it.
    pub failed: u64,
    /// Completed connections waiting for `accept`.
    pub queued: usize,
    /// Handshakes running now.
    pub in_progress: usize,
}

#[derive(Default)]
struct BacklogState {
    ready: VecDeque<(Stream, SocketAddr)>,
    /// Handshakes running: a handle of each one's socket, to cut it short on drop.
    running: BTreeMap<u64, TcpStream>,
    workers: Vec<JoinHandle<()>>,
    closed: bool,
    /// An error of the listening socket itself (not of one client), for `accept`.
    error: Option<io::Error>,
    completed: u64,
    failed: u64,
    /// Tasks waiting in [`Listener::poll_accept`].
    wakers: Vec<Waker>,
}

struct Backlog {
    state: Mutex<BacklogState>,
    /// Signalled when a connection is queued, a slot frees, or the listener closes.
    cond: Condvar,
    limit: usize,
    next_id: AtomicU64,
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, BacklogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes blocked threads and waiting tasks: something changed in `st`.
    fn notify(&self, st: &mut BacklogState) {
        for w in st.wakers.drain(..) {
            w.wake();
        }
        self.cond.notify_all();
    }
}

/// Most wakers [`Listener::poll_accept`] keeps before it wakes them all.
const MAX_WAKERS: usize = 64;

/// How long [`Listener::accept_until`] waits.
#[derive(Clone, Copy)]
enum AcceptWait {
    Forever,
    Until(Instant),
    /// Non-blocking mode: `WouldBlock` if nothing is ready.
    No,
}

/// A listening socket. As in Linux (`net/smc/af_smc.c`, `smc_listen_work`), the server
/// side of the CLC handshake runs in the background for every incoming connection,
/// whether or not the program calls [`Listener::accept`]: an acceptor thread takes TCP
/// connections and starts one handshake thread each; connections whose handshake
/// completed (over SMC-D or fallen back to TCP) wait in a bounded backlog for `accept`.
/// A client whose handshake fails is closed and counted ([`Listener::stats`]), never
/// returned by `accept`. Dropping the listener closes the socket, cuts running handshakes
/// short, joins its threads and closes the connections nobody accepted.
///
/// As `std::net::TcpListener`, with [`Listener::incoming`], [`Listener::accept`] and
/// non-blocking mode; [`Listener::accept_timeout`] and [`Listener::stats`] in addition:
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use ism_host_driver::smcd::{Listener, Stream};
///
/// # let dev = ism_host_driver::ism::fake::fake_device(2, false);
/// # let stacks: Vec<_> = (0..2)
/// #     .map(|i| {
/// #         let f = ism_host_driver::ism::fake::FakeFunction::new(dev.clone(), i);
/// #         let d = ism_host_driver::ism::IsmDriver::probe(f.clone(), f, 1).unwrap();
/// #         let ops: std::sync::Arc<dyn ism_host_driver::smcd::device::SmcdOps> =
/// #             std::sync::Arc::new(d);
/// #         ism_host_driver::smcd::SmcStack::new(Default::default(), vec![ops]).unwrap()
/// #     })
/// #     .collect();
/// # let (client, server) = (stacks[0].clone(), stacks[1].clone());
/// let listener = Listener::bind(&server, "127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// // Clients: one of them connects and never says a word (it does not hold up the others).
/// let silent = std::net::TcpStream::connect(addr)?;
/// let clients = std::thread::spawn(move || -> std::io::Result<()> {
///     for i in 0..3u8 {
///         let mut c = Stream::connect(&client, addr)?;
///         c.write_all(&[i])?;
///     }
///     Ok(())
/// });
/// // A server serving each connection on its own thread.
/// let mut got = Vec::new();
/// for s in listener.incoming().take(3) {
///     let mut s = s?;
///     s.set_read_timeout(Some(Duration::from_secs(10)))?;
///     got.push(std::thread::spawn(move || {
///         let mut b = [0u8];
///         s.read_exact(&mut b).map(|()| b[0])
///     }));
/// }
/// clients.join().unwrap()?;
/// let mut got: Vec<u8> = got.into_iter().map(|t| t.join().unwrap()).collect::<Result<_, _>>()?;
/// got.sort();
/// assert_eq!(got, [0, 1, 2]);
/// assert_eq!(listener.stats().completed, 3); // the silent one is not among them
/// # drop(silent);
/// # Ok(())
/// # }
/// ```
pub struct Listener {
    addr: SocketAddr,
    backlog: Arc<Backlog>,
    acceptor: Option<JoinHandle<()>>,
    nonblocking: AtomicBool,
}

impl Listener {
    /// Binds to `addr` with a backlog of [`DEFAULT_BACKLOG`] and starts accepting.
    ///
    /// # Errors
    /// As `TcpListener::bind`; an error spawning the acceptor thread.
    pub fn bind(stack: &Arc<SmcStack>, addr: impl ToSocketAddrs) -> io::Result<Listener> {
        Self::bind_with_backlog(stack, addr, DEFAULT_BACKLOG)
    }

    /// Binds to `addr`, holding at most `backlog` (at least 1) connections that `accept`
    /// has not taken, completed or in their handshake; further clients wait in the TCP
    /// listen queue.
    ///
    /// # Errors
    /// As `TcpListener::bind`; an error spawning the acceptor thread.
    pub fn bind_with_backlog(
        stack: &Arc<SmcStack>,
        addr: impl ToSocketAddrs,
        backlog: usize,
    ) -> io::Result<Listener> {
        let tcp = TcpListener::bind(addr)?;
        let addr = tcp.local_addr()?;
        let shared = Arc::new(Backlog {
            state: Mutex::new(BacklogState::default()),
            cond: Condvar::new(),
            limit: backlog.max(1),
            next_id: AtomicU64::new(0),
        });
        let (b, st) = (shared.clone(), stack.clone());
        let acceptor = std::thread::Builder::new()
            .name("smc-listen".into())
            .spawn(move || acceptor(&tcp, &st, &b))?;
        Ok(Self {
            addr,
            backlog: shared,
            acceptor: Some(acceptor),
            nonblocking: AtomicBool::new(false),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// None today; fallible like `TcpListener::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// Takes the next connection whose handshake completed (SMC-D or fallback), waiting
    /// for one (in non-blocking mode, see [`Listener::set_nonblocking`], failing with
    /// `WouldBlock` instead). Slow or failing clients do not hold it up: every handshake
    /// runs on its own thread, and only completed ones reach `accept`.
    ///
    /// # Errors
    /// Only errors of the listening socket itself (for example, no file descriptors
    /// left); a client's failed handshake is not an error here.
    pub fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        if self.nonblocking.load(Ordering::Relaxed) {
            self.accept_until(AcceptWait::No)
        } else {
            self.accept_until(AcceptWait::Forever)
        }
    }

    /// [`Listener::accept`], waiting at most `limit` (also in non-blocking mode).
    ///
    /// # Errors
    /// `TimedOut` if no connection completed its handshake within `limit`; as
    /// [`Listener::accept`] otherwise.
    pub fn accept_timeout(&self, limit: Duration) -> io::Result<(Stream, SocketAddr)> {
        match Instant::now().checked_add(limit) {
            Some(deadline) => self.accept_until(AcceptWait::Until(deadline)),
            None => self.accept_until(AcceptWait::Forever),
        }
    }

    /// Non-blocking mode, as `TcpListener::set_nonblocking`: [`Listener::accept`] (and
    /// [`Listener::incoming`]) fail with `WouldBlock` when no connection is ready.
    /// Handshakes go on in the background either way.
    ///
    /// # Errors
    /// None today; fallible like `TcpListener::set_nonblocking`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// An iterator over incoming connections, as `TcpListener::incoming`: each item is
    /// [`Listener::accept`]'s stream; it never ends (`None` is never returned).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Polls for the next connection whose handshake completed, for executors: `Ready`
    /// with what [`Listener::accept`] would return, or `Pending` after arranging for
    /// `cx`'s waker to be woken when a connection is ready (or the listening socket
    /// fails). Never blocks.
    ///
    /// # Errors
    /// As [`Listener::accept`].
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, SocketAddr)>> {
        let mut st = self.backlog.lock();
        if let Some(r) = Self::take_ready(&self.backlog, &mut st) {
            return Poll::Ready(r);
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            // Tasks that stopped waiting leave their wakers behind: keep the list bounded
            // by waking everyone now and then (a spurious wake-up just polls again).
            if st.wakers.len() >= MAX_WAKERS {
                for w in st.wakers.drain(..) {
                    w.wake();
                }
            }
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A completed connection or the socket's error, if there is one.
    fn take_ready(b: &Backlog, st: &mut BacklogState) -> Option<io::Result<(Stream, SocketAddr)>> {
        if let Some(c) = st.ready.pop_front() {
            // A slot is free: the acceptor may take the next client.
            b.notify(st);
            return Some(Ok(c));
        }
        st.error.take().map(Err)
    }

    fn accept_until(&self, wait: AcceptWait) -> io::Result<(Stream, SocketAddr)> {
        let mut st = self.backlog.lock();
        loop {
            if let Some(r) = Self::take_ready(&self.backlog, &mut st) {
                return r;
            }
            st = match wait {
                AcceptWait::No => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "no connection to accept",
                    ))
                }
                AcceptWait::Until(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no connection to accept",
                        ));
                    }
                    self.backlog
                        .cond
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                AcceptWait::Forever => self
                    .backlog
                    .cond
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Counters and the backlog's current contents.
    pub fn stats(&self) -> ListenerStats {
        let st = self.backlog.lock();
        ListenerStats {
            completed: st.completed,
            failed: st.failed,
            queued: st.ready.len(),
            in_progress: st.running.len(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let workers = {
            let mut st = self.backlog.lock();
            st.closed = true;
            for t in st.running.values() {
                let _ = t.shutdown(Shutdown::Both);
            }
            core::mem::take(&mut st.workers)
        };
        self.backlog.cond.notify_all();
        // Wake the acceptor out of `accept` with a connection of our own; it sees `closed`
        // and drops the listening socket.
        let ip = match self.addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = TcpStream::connect_timeout(
            &SocketAddr::new(ip, self.addr.port()),
            Duration::from_secs(1),
        );
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for w in workers {
            let _ = w.join();
        }
        // Workers started before `closed` was set and not yet in the list are gone now
        // too (the acceptor adds them before it checks `closed` again); what they queued is
        // dropped here, which closes those connections.
        let rest = core::mem::take(&mut *self.backlog.lock());
        for w in rest.workers {
            let _ = w.join();
        }
        drop(rest.ready);
    }
}

/// The iterator of [`Listener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<Stream>;

    fn next(&mut self) -> Option<io::Result<Stream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl core::fmt::Debug for Listener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The acceptor thread: takes TCP connections while the backlog has room and starts a
/// handshake thread for each.
fn acceptor(tcp: &TcpListener, stack: &Arc<SmcStack>, b: &Arc<Backlog>) {
    loop {
        {
            let mut st = b.lock();
            while !st.closed && st.ready.len() + st.running.len() >= b.limit {
                st = b.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed {
                return;
            }
        }
        let (sock, addr) = match tcp.accept() {
            Ok(c) => c,
            // A client that went away between SYN and accept, or an interrupted call.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // The socket's own trouble (descriptors, memory): tell `accept`, and back
                // off briefly instead of spinning on it.
                log::warn!("smc: listen: accept failed: {e}");
                let mut st = b.lock();
                if st.closed {
                    return;
                }
                st.error = Some(e);
                b.notify(&mut st);
                let _ = b
                    .cond
                    .wait_timeout(st, Duration::from_millis(10))
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
        };
        let id = b.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = b.lock();
        if st.closed {
            return; // our own wake-up connection, or a client too late: closed with `sock`
        }
        let Ok(handle) = sock.try_clone() else {
            st.failed += 1;
            continue;
        };
        st.running.insert(id, handle);
        let (b2, stack) = (b.clone(), stack.clone());
        let spawned = std::thread::Builder::new()
            .name("smc-handshake".into())
            .spawn(move || handshake_worker(id, sock, addr, &stack, &b2));
        match spawned {
            Ok(h) => {
                st.workers.retain(|w| !w.is_finished());
                st.workers.push(h);
            }
            Err(e) => {
                log::warn!("smc: listen: no thread for a handshake: {e}");
                st.running.remove(&id);
                st.failed += 1;
            }
        }
    }
}

/// One connection's server-side handshake; the result goes to the backlog, a failure
/// only to the log and the counters.
fn handshake_worker(
    id: u64,
    mut sock: TcpStream,
    addr: SocketAddr,
    stack: &Arc<SmcStack>,
    b: &Backlog,
) {
    let r = handshake::server(stack, &mut sock);
    let stream = match r {
        Ok(outcome) => Some(Stream::from_outcome(stack, sock, outcome)),
        Err(e) => {
            log::debug!("smc: handshake with {addr} failed: {e}");
            None
        }
    };
    let mut st = b.lock();
    st.running.remove(&id);
    match stream {
        Some(s) if !st.closed => {
            st.completed += 1;
            st.ready.push_back((s, addr));
        }
        Some(s) => {
            // The listener is gone: nobody will accept this connection.
            drop(st);
            drop(s);
            b.cond.notify_all();
            return;
        }
        None => st.failed += 1,
    }
    b.notify(&mut st);
}
