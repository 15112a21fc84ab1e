//! An application descriptor that runs over SMC-D, and its doorbell.
//!
//! The application's descriptor stays a real kernel object: one end (A) of a
//! `socketpair(AF_UNIX, SOCK_STREAM)` is `dup3`ed onto its number, so `poll`, `select`,
//! `epoll`, `dup` and `fcntl` work on it natively. The library keeps the other end (B), the
//! TCP socket (moved to a descriptor of its own) and the SMC-D [`Stream`]. Data calls on
//! the descriptor go to the stream (the hooks); readiness comes from B:
//! * the connection's watcher ([`Conn::set_watcher`], run by the interrupt thread) writes
//!   one doorbell byte into B when data arrives or the stream ends, so A polls readable
//!   and a task sleeping in `epoll_wait` wakes (one byte per arrival, so that
//!   edge-triggered `epoll` sees every arrival, as a TCP socket's `sk_data_ready`);
//! * after a read leaves nothing to read, the library drains A's doorbell bytes, so A
//!   polls readable exactly while a read would not block;
//! * when the peer is done (end of stream, abort, termination), `shutdown(B, SHUT_WR)`:
//!   A polls readable and `POLLRDHUP` for good.
//!
//! A is always writable (nothing is ever written into A): a write may then block or, on a
//! non-blocking descriptor, fail with `EAGAIN` while the peer's ring is full (documented).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ism_host_driver::smcd::conn::Conn;
use ism_host_driver::smcd::Stream;
use libc::c_int;

use crate::real::real;

/// Doorbell state of one connection.
#[derive(Debug, Default)]
struct BellState {
    /// Doorbell bytes may be in A.
    rung: bool,
    /// Bytes readable when the doorbell was last rung or drained.
    last: usize,
    /// B's writing side is shut (the peer is done).
    hup: bool,
}

/// The doorbell: the library's end (B) of the socket pair.
pub struct Bell {
    b: OwnedFd,
    conn: Weak<Conn>,
    state: Mutex<BellState>,
    /// Bytes held back by `MSG_PEEK` (readable, not in the ring any more).
    peeked: std::sync::atomic::AtomicUsize,
    /// A non-blocking write found the peer's ring full: the next wake-up of the
    /// connection (the peer's consumer update, which a blocked writer asks for) rings the
    /// doorbell, so that a program waiting for `EPOLLOUT` with edge-triggered `epoll`
    /// (nginx) gets an event and writes again (see [`SmcFd::send`]).
    want_write: std::sync::atomic::AtomicBool,
    /// Wake-ups of the connection seen by the watcher.
    wakes: std::sync::atomic::AtomicU64,
}

impl Bell {
    fn lock(&self) -> MutexGuard<'_, BellState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rings if something became readable (the watcher, and after local state changes).
    pub fn ring(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut st = self.lock();
        if st.hup {
            return; // A is readable (end of file) for good
        }
        if self
            .want_write
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.send_byte();
            st.rung = true;
        }
        if conn.peer_done() {
            // The end: A reads end of file and polls readable and POLLRDHUP at once, as a
            // TCP socket after a FIN (no doorbell byte first, which would show POLLIN
            // without POLLRDHUP for a moment).
            if let Some(sh) = real().shutdown {
                // SAFETY: shuts down our own descriptor B for writing.
                unsafe { sh(self.b.as_raw_fd(), libc::SHUT_WR) };
            }
            st.hup = true;
            return;
        }
        let peeked = self.peeked.load(std::sync::atomic::Ordering::Acquire);
        let avail = conn.available() + peeked;
        let ready = peeked > 0 || conn.read_ready();
        if ready && (!st.rung || avail > st.last) {
            self.send_byte();
            st.rung = true;
        }
        st.last = avail;
    }

    /// One doorbell byte into B: A polls readable, and a task asleep in `epoll_wait` wakes.
    fn send_byte(&self) {
        if let Some(send) = real().send {
            // SAFETY: sends one byte from a valid buffer on our own descriptor B, without
            // waiting (a full B already makes A readable) and without SIGPIPE (A may be
            // closed already while a call still holds this connection: the kernel
            // would otherwise kill the process with SIGPIPE, as sockperf showed).
            let _ = unsafe {
                send(
                    self.b.as_raw_fd(),
                    b"!".as_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
    }

    /// After a read on the application's descriptor `a`: if nothing is readable any more,
    /// drains the doorbell so that `a` stops polling readable.
    pub fn settle(&self, a: c_int) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut st = self.lock();
        let peeked = self.peeked.load(std::sync::atomic::Ordering::Acquire);
        if st.rung && peeked == 0 && !conn.read_ready() {
            if let Some(recv) = real().recv {
                let mut buf = [0u8; 256];
                loop {
                    // SAFETY: reads into a local buffer of its length from the
                    // application's descriptor A, without waiting.
                    let n =
                        unsafe { recv(a, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
                    if n <= 0 || (n as usize) < buf.len() {
                        break;
                    }
                }
            }
            st.rung = false;
        }
        st.last = conn.available() + peeked;
    }
}

/// One SMC-D connection behind one or more application descriptors.
pub struct SmcFd {
    stream: Stream,
    conn: Arc<Conn>,
    /// The TCP socket's descriptor (owned by `stream`).
    tcp: c_int,
    bell: Arc<Bell>,
    /// Bytes read ahead for `MSG_PEEK`, served before the ring.
    peek: Mutex<Vec<u8>>,
}

/// `O_NONBLOCK` of the application's descriptor (shared by its `dup`s).
pub fn fd_nonblocking(fd: c_int) -> bool {
    real().fcntl.is_some_and(|f| {
        // SAFETY: F_GETFL takes no argument; the 0 is ignored.
        let fl = unsafe { f(fd, libc::F_GETFL, 0) };
        fl >= 0 && fl & libc::O_NONBLOCK != 0
    })
}

/// The errno for an I/O error of the stream (as a TCP socket reports the same case).
pub fn errno_of(e: &io::Error) -> c_int {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => libc::EAGAIN,
        io::ErrorKind::BrokenPipe => libc::EPIPE,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::ConnectionAborted => libc::ECONNABORTED,
        io::ErrorKind::NotConnected => libc::ENOTCONN,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::Interrupted => libc::EINTR,
        io::ErrorKind::OutOfMemory => libc::ENOMEM,
        _ => libc::EIO,
    }
}

/// Flags of one receive call.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvFlags {
    /// `MSG_PEEK`.
    pub peek: bool,
    /// `MSG_DONTWAIT` (or the descriptor's `O_NONBLOCK`).
    pub dontwait: bool,
    /// `MSG_WAITALL`.
    pub waitall: bool,
}

impl RecvFlags {
    /// From `recv` flags and the descriptor's mode.
    pub fn of(fd: c_int, flags: c_int) -> Self {
        Self {
            peek: flags & libc::MSG_PEEK != 0,
            dontwait: flags & libc::MSG_DONTWAIT != 0 || fd_nonblocking(fd),
            waitall: flags & libc::MSG_WAITALL != 0,
        }
    }
}

impl SmcFd {
    /// Takes over the application's descriptor `app` (a connected TCP socket, whose
    /// `stream` runs over SMC-D with its TCP socket on the library's own descriptor `tcp`):
    /// builds the socket pair and installs the watcher. Returns the entry and A, which the
    /// caller moves onto the application's descriptor (see `hooks::install`).
    ///
    /// # Errors
    /// The `errno` of a failing `socketpair`.
    pub fn new(stream: Stream, tcp: c_int) -> Result<(Self, OwnedFd), c_int> {
        use std::os::fd::FromRawFd;
        let conn = stream.conn().cloned().ok_or(libc::EINVAL)?;
        let mut sv = [-1 as c_int; 2];
        // SAFETY: `sv` has room for the two descriptors.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(crate::real::errno());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        let b = high_fd(b);
        if let Some(f) = real().fcntl {
            // SAFETY: sets O_NONBLOCK on our own descriptor B: the doorbell never waits.
            unsafe { f(b.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        }
        let bell = Arc::new(Bell {
            b,
            conn: Arc::downgrade(&conn),
            state: Mutex::new(BellState::default()),
            peeked: std::sync::atomic::AtomicUsize::new(0),
            want_write: std::sync::atomic::AtomicBool::new(false),
            wakes: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&bell);
        conn.set_watcher(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                b.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                b.ring();
            }
        }));
        let me = Self {
            stream,
            conn,
            tcp,
            bell,
            peek: Mutex::new(Vec::new()),
        };
        Ok((me, a))
    }

    /// Rings the doorbell if data is already there (data that arrived before the watcher).
    pub fn ring(&self) {
        self.bell.ring();
    }

    /// The library's TCP socket of this connection.
    pub fn tcp_fd(&self) -> c_int {
        self.tcp
    }

    /// The doorbell's descriptor (B, the library's end of the socket pair).
    pub fn bell_fd(&self) -> c_int {
        self.bell.b.as_raw_fd()
    }

    /// The stream (for shutdown and statistics).
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Bytes readable now (`FIONREAD`).
    pub fn readable(&self) -> usize {
        self.peek.lock().unwrap_or_else(|e| e.into_inner()).len() + self.conn.available()
    }

    /// Receives into `buf` from the application's descriptor `fd`.
    ///
    /// # Errors
    /// The `errno` a TCP socket would give.
    pub fn recv(&self, fd: c_int, buf: &mut [u8], f: RecvFlags) -> Result<usize, c_int> {
        let r = self.recv_inner(buf, f);
        self.bell.settle(fd);
        r
    }

    fn recv_inner(&self, buf: &mut [u8], f: RecvFlags) -> Result<usize, c_int> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut peek = self.peek.lock().unwrap_or_else(|e| e.into_inner());
        if f.peek {
            if peek.is_empty() {
                let mut tmp = vec![0u8; buf.len().min(1 << 20)];
                let n = self
                    .conn
                    .read_with(&mut tmp, f.dontwait)
                    .map_err(|e| errno_of(&e))?;
                peek.extend_from_slice(&tmp[..n]);
                self.bell
                    .peeked
                    .store(peek.len(), std::sync::atomic::Ordering::Release);
            }
            let n = peek.len().min(buf.len());
            buf[..n].copy_from_slice(&peek[..n]);
            return Ok(n);
        }
        let mut done = 0;
        if !peek.is_empty() {
            let n = peek.len().min(buf.len());
            buf[..n].copy_from_slice(&peek[..n]);
            peek.drain(..n);
            self.bell
                .peeked
                .store(peek.len(), std::sync::atomic::Ordering::Release);
            done = n;
        }
        drop(peek);
        while done < buf.len() {
            // After some bytes, only MSG_WAITALL waits for more.
            let wait = !f.dontwait && (done == 0 || f.waitall);
            match self.conn.read_with(&mut buf[done..], !wait) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if !f.waitall {
                        break;
                    }
                }
                Err(_) if done > 0 => break,
                Err(e) => return Err(errno_of(&e)),
            }
        }
        Ok(done)
    }

    /// Sends `buf` (`dontwait`: `MSG_DONTWAIT` or the descriptor's `O_NONBLOCK`).
    ///
    /// # Errors
    /// The `errno` a TCP socket would give (`EPIPE` after a close; the caller raises
    /// `SIGPIPE`).
    pub fn send(&self, buf: &[u8], dontwait: bool) -> Result<usize, c_int> {
        use std::sync::atomic::Ordering::SeqCst;
        if buf.is_empty() {
            return Ok(0);
        }
        let wakes = self.bell.wakes.load(SeqCst);
        let r = self
            .conn
            .write_with(buf, dontwait)
            .map_err(|e| errno_of(&e));
        if dontwait && matches!(r, Err(libc::EAGAIN) | Ok(_)) && r != Ok(buf.len()) {
            // The ring was full: ring the doorbell when room comes (writability is not
            // emulated: A is always writable, so edge-triggered epoll would otherwise
            // never report EPOLLOUT again). A wake-up that came in the meantime may have
            // been that room: then ring now.
            self.bell.want_write.store(true, SeqCst);
            if self.bell.wakes.load(SeqCst) != wakes {
                self.bell.ring();
            }
        }
        r
    }

    /// `shutdown(how)`.
    ///
    /// # Errors
    /// `EINVAL` for an unknown `how`; `EPIPE` if the peer cannot be told.
    pub fn shutdown(&self, how: c_int) -> Result<(), c_int> {
        let how = match how {
            libc::SHUT_RD => std::net::Shutdown::Read,
            libc::SHUT_WR => std::net::Shutdown::Write,
            libc::SHUT_RDWR => std::net::Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        let r = self.stream.shutdown(how).map_err(|e| errno_of(&e));
        self.bell.ring();
        r
    }

    /// `SO_RCVTIMEO` / `SO_SNDTIMEO` set by the application: the stream's limits too.
    pub fn set_timeout(&self, recv: bool, t: Option<Duration>) {
        let t = t.filter(|d| !d.is_zero());
        let _ = if recv {
            self.stream.set_read_timeout(t)
        } else {
            self.stream.set_write_timeout(t)
        };
    }
}

/// Moves `fd` to a descriptor number at or above 512 (close-on-exec), out of the way of
/// programs that close "all descriptors above 2" at start-up; keeps it where it is if
/// that fails.
pub fn high_fd(fd: OwnedFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    let Some(f) = real().fcntl else {
        return fd;
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates our own descriptor.
    let n = unsafe { f(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 512) };
    if n < 0 {
        return fd;
    }
    // SAFETY: `n` is a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(n) }
}
