//! An application descriptor that runs over SMC-D, and its doorbell.
//!
//! The application's descriptor stays a real kernel object: one end (A) of a
//! `socketpair(AF_UNIX, SOCK_STREAM)` is `dup3`ed onto its number when the connection's
//! set-up begins (`crate::connecting`) and stays there, so `poll`, `select`, `epoll`,
//! `dup` and `fcntl` work on it natively, also for a wait begun during the set-up. The library keeps the other end (B), the
//! TCP socket (moved to a descriptor of its own) and the SMC-D [`Stream`]. Data calls on
//! the descriptor go to the stream (the hooks); readiness comes from **records** written
//! into B, each the count of bytes the peer had sent in all when it was written (8 bytes):
//! * the connection's watcher ([`Conn::set_watcher`], run by the interrupt thread) writes
//!   one for data that came, so A polls readable and a task sleeping in `epoll_wait`
//!   wakes, as a TCP socket's `sk_data_ready`; a read that leaves nothing readable takes
//!   every record from A (under the lock the watcher writes under), so A polls readable
//!   exactly while a read would not block;
//! * with doorbells exchanged (`ISM_RUN_PEER_BELL`, loopback boards: [`Bells`]) the peer's
//!   library writes them instead, after every data CDC (`Conn::set_peer_bell`), and the
//!   program wakes with no interrupt thread in between. Then the peer is the only writer
//!   of records for data (the watcher writes none), and it writes without this
//!   library's lock, so a read first takes every record from A and reads **no further
//!   than they announced** (data whose record is on its way stays for the next read; a
//!   record of our own goes back into A if announced bytes are left): A never holds a
//!   record of data already read (wrk counts the `EAGAIN` of a read after `epoll` said
//!   readable as an error);
//! * when the peer is done (end of stream, abort, termination), `shutdown(B, SHUT_WR)`:
//!   A polls readable and `POLLRDHUP` for good, and reads take everything (every record of
//!   the peer is in A before its end);
//! * except while a thread of ours spins in a blocking read: then the peer delivers
//!   quietly, with no record, and says so in our quiet page (`crate::quiet`); reads count
//!   what it delivered so as announced.
//!
//! Writability: while the peer's ring is full, A→B is filled ([`Bell::fill`]), so A polls
//! unwritable exactly while a write would block; the watcher drains B when the peer makes
//! room, or, with doorbells exchanged, the peer's reader drains it itself (its room bell,
//! `Conn::set_room_bell`: the peer holds B). Blocking reads and writes wait in the kernel
//! on A (a `recv(MSG_PEEK)` of the doorbell, a one-byte `send` into the filled A), so that
//! signals interrupt them with `EINTR` (or restart them, `SA_RESTART`) and
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` (mirrored onto A) expire them, as on a TCP socket.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ism_host_driver::smcd::conn::Conn;
use ism_host_driver::smcd::wait::SpinPhase;
use ism_host_driver::smcd::Stream;
use libc::c_int;

use crate::quiet::{Page, Spinning};
use crate::real::real;
use crate::signals::Watch;

/// One doorbell record: how many bytes the connection's peer had sent in all when it was
/// written (`Conn::received_total` as its writer saw it), little-endian.
const RECORD: usize = 8;

/// Doorbell state of one connection.
#[derive(Debug, Default)]
struct BellState {
    /// The most that the records taken from A announced: reads take the received bytes up
    /// to this count, and no further (see the module's doc).
    announced: u64,
    /// The most that this library's own records (the watcher's, ungated) announced.
    rung_to: u64,
    /// The first bytes of a record that came cut (a peer that died while writing it).
    partial: Vec<u8>,
    /// B's writing side is shut (the peer is done).
    hup: bool,
    /// A→B is full (A polls unwritable) because the peer's ring was full.
    filled: bool,
    /// Bytes taken from A in all (records, and the cut bytes of one).
    taken: u64,
    /// Records of our own put into A ([`Bell::finish_read`]) in all.
    own: u64,
}

/// The doorbell: the library's end (B) of the socket pair.
pub struct Bell {
    b: OwnedFd,
    /// A's identity (device and inode of the socket): the application's descriptor number
    /// may be closed by another thread while a call on it is under way, and the number
    /// given to a new file, which the doorbell must never read from or write into.
    a_id: (u64, u64),
    conn: Weak<Conn>,
    state: Mutex<BellState>,
    /// Bytes held back by `MSG_PEEK` (readable, not in the ring any more).
    peeked: std::sync::atomic::AtomicUsize,
    /// B went to the peer ([`Bells`]), whose library writes the records of all its data
    /// into it, without this state's lock: reads stop at what the records announced, and
    /// the watcher writes none. Otherwise only the watcher writes them, under the lock,
    /// and a read that leaves nothing readable takes them all ([`Bell::finish_read`]).
    gated: bool,
    /// Our quiet page, if gated (`crate::quiet`): what the peer delivered without a
    /// record while a read spun, and how many records it wrote.
    page: Option<Arc<Page>>,
}

impl Bell {
    fn lock(&self) -> MutexGuard<'_, BellState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the descriptor number `a` still is this connection's A (one `fstat`): false
    /// once the program closed it, even if the number now names another file. Over TCP a
    /// call holds the socket it started on; the doorbell works on the number, so every use
    /// of it after a wait checks first.
    fn is_a(&self, a: c_int) -> bool {
        file_id(a) == Some(self.a_id)
    }

    /// Whether the number `a` is still tracked for this connection (a table lookup, not
    /// the `fstat` of `Bell::is_a`: this runs on every read, so it takes no reference to
    /// the entry). The program may have closed A in another thread: its number is then no
    /// longer tracked (the close clears it first), or tracked for another connection.
    fn still_a(&self, a: c_int) -> bool {
        crate::hooks::TABLE.holds(a, |e| match e {
            crate::hooks::Entry::Smc(s) => std::ptr::eq(Arc::as_ptr(&s.bell), self),
            _ => false,
        })
    }

    /// Rings if data came that no record announced yet (the watcher, run on every wake-up
    /// of the connection by the device's signal, and after local state changes).
    pub fn ring(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut st = self.lock();
        self.drain_if_ready(&conn, &mut st);
        if st.hup {
            return; // A is readable (end of file) for good
        }
        if conn.peer_done() {
            // The end: A reads end of file and polls readable and POLLRDHUP at once, as a
            // TCP socket after a FIN (no record first, which would show POLLIN without
            // POLLRDHUP for a moment). Every record of the peer is in A before its end
            // (it writes them before its closing CDC).
            if let Some(sh) = real().shutdown {
                // SAFETY: shuts down our own descriptor B for writing.
                unsafe { sh(self.b.as_raw_fd(), libc::SHUT_WR) };
            }
            st.hup = true;
            return;
        }
        if self.gated {
            return; // the peer's records tell of data, and nothing else does
        }
        let total = conn.received_total();
        if total > st.announced.max(st.rung_to) {
            self.send_record(total);
            st.rung_to = total;
        }
    }

    /// One record into B: A polls readable, and a task asleep in `epoll_wait` wakes.
    fn send_record(&self, total: u64) -> bool {
        send_record(self.b.as_raw_fd(), total)
    }

    /// Takes every record from the application's descriptor `a` (A), without waiting, and
    /// returns how many received bytes reads may take now (announced and not read), or
    /// `None` if they may take everything that came: the stream ended (every record is in
    /// by then) or a read would fail or end at once. If `a` is no longer this connection's
    /// (another thread closed it while this call waited; a `dup` may still name A), nothing
    /// is taken from it and reads take everything that came (a record still on its way
    /// may then make the `dup` poll readable once with nothing to read).
    pub fn collect(&self, a: c_int) -> Option<u64> {
        if !self.gated {
            return None;
        }
        let conn = self.conn.upgrade()?;
        let mut st = self.lock();
        if !self.still_a(a) {
            return None;
        }
        self.fold_quiet(&conn, &mut st);
        if self.nothing_in_a(&st) {
            return allowed(&conn, st.announced);
        }
        if let Some(recv) = real().recv {
            let mut buf = [0u8; 64 * RECORD];
            loop {
                let have = st.partial.len();
                buf[..have].copy_from_slice(&st.partial);
                // SAFETY: reads into the rest of a local buffer, without waiting, from
                // the application's descriptor A.
                let n = unsafe {
                    recv(
                        a,
                        buf[have..].as_mut_ptr().cast(),
                        buf.len() - have,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    break;
                }
                st.taken += n as u64;
                let got = have + n as usize;
                let whole = got - got % RECORD;
                st.announced = st.announced.max(most_announced(&buf[..whole]));
                st.partial.clear();
                st.partial.extend_from_slice(&buf[whole..got]);
                if got < buf.len() {
                    break;
                }
            }
        }
        allowed(&conn, st.announced)
    }

    /// The most that the records taken from A so far announced, or the peer delivered
    /// quietly.
    fn announced(&self) -> u64 {
        let mut st = self.lock();
        if let Some(conn) = self.conn.upgrade() {
            self.fold_quiet(&conn, &mut st);
        }
        st.announced
    }

    /// Counts this thread as looking at the ring before it sleeps, if the peer took our
    /// quiet page: until the guard drops, the peer delivers without records
    /// (`crate::quiet`).
    fn spinning(&self) -> Option<Spinning<'_>> {
        self.page
            .as_ref()
            .filter(|p| p.taken())
            .map(|p| p.spinning())
    }

    /// Counts what the peer delivered quietly (`crate::quiet`) as announced: no record
    /// comes for it.
    fn fold_quiet(&self, conn: &Conn, st: &mut BellState) {
        if let Some(p) = &self.page {
            st.announced = st.announced.max(p.quiet_total(conn.received_total()));
        }
    }

    /// Whether A holds no record now, as the peer's count of the records it wrote says
    /// (`crate::quiet`): every one it wrote, and every one of our own, was taken. Read
    /// after [`Bell::fold_quiet`]: a record written before a quiet delivery was counted
    /// before it. `false` without a page the peer took (then only a `recv` can tell).
    fn nothing_in_a(&self, st: &BellState) -> bool {
        self.page
            .as_ref()
            .is_some_and(|p| p.taken() && (p.records() + st.own) * RECORD as u64 == st.taken)
    }

    /// How many received bytes reads may take now, as [`Bell::collect`] would say, without
    /// taking the records (`MSG_PEEK`; for `FIONREAD`).
    pub fn peek_readable(&self, a: c_int) -> Option<u64> {
        if !self.gated {
            return None;
        }
        let conn = self.conn.upgrade()?;
        let mut st = self.lock();
        self.fold_quiet(&conn, &mut st);
        let mut announced = st.announced;
        if self.still_a(a) && st.partial.is_empty() && !self.nothing_in_a(&st) {
            let saved = crate::real::errno();
            if let Some(recv) = real().recv {
                let mut buf = [0u8; 64 * RECORD];
                // SAFETY: peeks into a local buffer of its length, without waiting, on the
                // application's descriptor A.
                let n = unsafe {
                    recv(
                        a,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_PEEK,
                    )
                };
                announced = announced.max(most_announced(&buf[..n.max(0) as usize]));
            }
            crate::real::set_errno(saved);
        }
        allowed(&conn, announced)
    }

    /// After a read (or `MSG_PEEK`) on the application's descriptor `a`: if announced bytes
    /// are left, or peeked ones, a record of our own goes back into A, which the read's
    /// [`Bell::collect`] emptied: A polls readable exactly while a read would not block.
    /// Records that came meanwhile announce bytes past what was read, so A never holds a
    /// record of bytes already read (which would make it poll readable with nothing to
    /// read: wrk counts such a read's `EAGAIN` as an error).
    ///
    /// Ungated (no peer writes records): if nothing is readable any more, takes every
    /// record from A, so that it stops polling readable; the watcher, under the same lock,
    /// records only bytes received after those read. If bytes are left that no record
    /// announced yet, records them.
    pub fn finish_read(&self, a: c_int) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut st = self.lock();
        let peeked = self.peeked.load(std::sync::atomic::Ordering::Acquire);
        if !self.gated {
            if peeked == 0 && !conn.read_ready() {
                if self.still_a(a) {
                    drain_all(a);
                }
                st.announced = conn.consumed_total();
                return;
            }
            // Bytes are left that the watcher has not recorded yet (the read took the
            // first of them in its spin, before the device's signal woke the watcher): a
            // record now, so that A polls readable while they wait, as a TCP socket with
            // bytes queued does (a zero-timeout poll right after a partial read said "not
            // readable" in nearly every round trip). The watcher, under this lock, then
            // records only bytes received after these.
            let total = conn.received_total();
            if total > st.announced.max(st.rung_to) && !st.hup && self.still_a(a) {
                self.send_record(total);
                st.rung_to = total;
            }
            return;
        }
        self.fold_quiet(&conn, &mut st);
        let left = st.announced.min(conn.received_total()) > conn.consumed_total();
        if (left || peeked > 0) && !st.hup && self.still_a(a) && self.send_record(st.announced) {
            st.own += 1;
        }
    }

    /// Whether received bytes wait that no record announced yet (the peer's record, or the
    /// watcher's, is on its way: a wait in the kernel on A ends when it comes).
    pub fn unannounced(&self) -> bool {
        if !self.gated {
            return false;
        }
        let Some(conn) = self.conn.upgrade() else {
            return false;
        };
        let mut st = self.lock();
        self.fold_quiet(&conn, &mut st);
        conn.received_total() > st.announced
    }

    /// Makes the application's descriptor `a` poll unwritable while the peer's ring is full:
    /// fills A→B (A's send buffer is the smallest the kernel allows) until the kernel
    /// refuses more, as a TCP socket stops polling writable when its send queue is full.
    /// [`Bell::ring`] (the watcher, run on every wake-up of the connection: the peer's
    /// consumer-cursor update is one) drains B when the peer has room again, which makes
    /// A writable and wakes `poll`/`epoll` waiters for `POLLOUT` (edge-triggered too:
    /// reading B frees A's send buffer, and the kernel's `unix_write_space` in
    /// `net/unix/af_unix.c` wakes them). Returns whether A stays filled (false: the peer
    /// made room meanwhile, so B was drained again at once).
    ///
    /// # Errors
    /// `EBADF` if another thread closed `a` meanwhile (no A to fill or wait on: see
    /// `Bell::is_a`).
    pub fn fill(&self, a: c_int) -> Result<bool, c_int> {
        let Some(conn) = self.conn.upgrade() else {
            return Ok(false);
        };
        if !self.is_a(a) {
            return Err(libc::EBADF);
        }
        let mut st = self.lock();
        fill_all(a);
        st.filled = true;
        // The peer may have made room before `filled` was set (its watcher run saw
        // nothing to drain): check once more under the lock.
        if conn.write_ready_for(conn.write_lowat()) {
            self.drain(&mut st);
        }
        Ok(st.filled)
    }

    /// Whether A→B is filled (A polls unwritable because the peer's ring was full).
    pub fn is_filled(&self) -> bool {
        self.lock().filled
    }

    /// Drains A→B if it is filled and the peer has room (or a write would fail at once).
    pub fn drain_if_room(&self) {
        if let Some(conn) = self.conn.upgrade() {
            self.drain_if_ready(&conn, &mut self.lock());
        }
    }

    /// [`Bell::drain_if_room`] under the lock.
    fn drain_if_ready(&self, conn: &Conn, st: &mut BellState) {
        // Writable again once the peer's ring has the room a TCP socket would want
        // (`Conn::write_lowat`), not at its first free byte.
        if st.filled && conn.write_ready_for(conn.write_lowat()) {
            self.drain(st);
        }
    }

    /// After a wait for writability on A: takes out the byte that wait put into A→B if
    /// nothing is filled (it would otherwise stay, and a few of them make A unwritable).
    pub fn unfill_stray(&self) {
        let mut st = self.lock();
        if !st.filled {
            self.drain(&mut st);
        }
    }

    /// Empties B's receive queue (A→B): A polls writable again.
    fn drain(&self, st: &mut BellState) {
        drain_all(self.b.as_raw_fd());
        st.filled = false;
    }
}

/// What a blocking call's spin in user space, before its kernel wait, does about signals.
///
/// To the program the spin is part of a blocking `recv`; had the thread been asleep in the
/// kernel, a signal would have ended the wait (`EINTR`, or a restart with `SA_RESTART`).
/// A handler that ran in the middle of the spin and left the call waiting on would break
/// a program that tells a thread to stop with `pthread_kill` (sockperf at the end of
/// `under-load`): it would find the thread still inside the call afterwards. So the spin
/// holds a [`Watch`]: it ends as soon as a handler ran in this thread
/// ([`SpinSignals::interrupted`]), and [`SpinSignals::end`] reports what the kernel would
/// have done. Where the program has a handler the library cannot see, the watch blocks
/// every signal for the spin instead (two system calls, ~0.4 µs here, per wait; see
/// `crate::signals`).
struct SpinSignals {
    watch: Watch,
    /// A handler that ends the call ran (see [`SpinSignals::interrupted`]).
    eintr: bool,
}

impl SpinSignals {
    /// Starts watching the calling thread's signal handlers.
    fn watch() -> Self {
        Self {
            watch: Watch::start(),
            eintr: false,
        }
    }

    /// Whether the spin must end because of a handler that ran since it began (or since
    /// the last look): one without `SA_RESTART`, or any while `SO_RCVTIMEO` is set on
    /// `fd` (then [`SpinSignals::end`] says `EINTR`). Handlers with `SA_RESTART` leave
    /// the spin going, as a restarted kernel wait would be: a program with a frequent
    /// timer signal does not lose its spin to it.
    #[inline]
    fn interrupted(&mut self, fd: c_int) -> bool {
        if !self.watch.handler_ran() {
            return false;
        }
        match self.watch.take() {
            Some(true) if !has_rcvtimeo(fd) => false,
            Some(_) => {
                self.eintr = true;
                true
            }
            None => false,
        }
    }

    /// Ends the spin without data and says what a kernel wait on the socket `fd` would
    /// have done with the signals that came: `EINTR` if one has a handler without
    /// `SA_RESTART`, or any handler while `SO_RCVTIMEO` is set (Linux's `sock_intr_errno`
    /// in `include/net/sock.h`); `Ok` (wait on, as a restarted call) otherwise: none came,
    /// or only ignored ones.
    fn end(self, fd: c_int) -> Result<(), c_int> {
        if self.eintr {
            return Err(libc::EINTR);
        }
        match self.watch.end() {
            None => Ok(()),
            Some(true) if !has_rcvtimeo(fd) => Ok(()),
            Some(_) => Err(libc::EINTR),
        }
    }
}

/// Whether `SO_RCVTIMEO` is set on `fd` (mirrored onto A by `setsockopt`).
fn has_rcvtimeo(fd: c_int) -> bool {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    let Some(getsockopt) = real().getsockopt else {
        return false;
    };
    // SAFETY: reads a timeval of its size from the caller's descriptor (A, the real call).
    let r = unsafe {
        getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    r == 0 && (tv.tv_sec != 0 || tv.tv_usec != 0)
}

/// One SMC-D connection behind one or more application descriptors.
pub struct SmcFd {
    stream: Stream,
    conn: Arc<Conn>,
    /// The TCP socket's descriptor (owned by `stream`).
    tcp: c_int,
    bell: Arc<Bell>,
    /// The peer's doorbell (owned by the connection's peer bell), if the board passed it.
    peer_bell: Option<c_int>,
    /// The peer's quiet page (`crate::quiet`), if it offered one.
    peer_page: Option<Arc<Page>>,
    /// How the peer bell told the peer of our data (for the debug line at the end).
    rings: Arc<Rings>,
    /// `O_NONBLOCK` of A's open file as this library last set or saw it set (`install`,
    /// and the `fcntl(F_SETFL)` and `ioctl(FIONBIO)` hooks: every way a program changes it
    /// on its descriptors, which are all this connection's), read instead of an
    /// `F_GETFL` per call.
    nonblocking: std::sync::atomic::AtomicBool,
    /// Bytes read ahead for `MSG_PEEK`, served before the ring.
    peek: Mutex<Vec<u8>>,
    /// A write after the peer's close was taken as a TCP socket takes it (`send`): the
    /// next one fails with `EPIPE`.
    reset_pending: std::sync::atomic::AtomicBool,
    /// A connect of the program that ended in the background (non-blocking, or a blocking
    /// one that a signal interrupted) and that `connect` has not reported yet: the next
    /// `connect` returns 0, as TCP's first `connect` after the connection is made, and
    /// `EISCONN` after that.
    connect_unreported: std::sync::atomic::AtomicBool,
    /// A program's `epoll` set holds A (added with `epoll_ctl`, also while the connection
    /// was set up): reads stop at what the records announced ([`SmcFd::relaxes`]).
    in_epoll: std::sync::atomic::AtomicBool,
    /// The count of received bytes (in all) up to which a read took data that no record
    /// had announced yet, if one did (0: none): their records may still be on the way
    /// into A ([`SmcFd::settle`]).
    unsettled: std::sync::atomic::AtomicU64,
    /// Counted among the process's connections whose peer rings the doorbell (busy polling
    /// spins while there are: `busy`).
    _live: Option<crate::busy::Live>,
    /// Counted among the connections whose reader hears of data from the interrupt
    /// thread (no doorbells exchanged): while there are none, that thread does not spin.
    _watched: Option<Watched>,
}

impl Drop for SmcFd {
    /// Bytes a `MSG_PEEK` took from the ring and no read took yet are unread data: the
    /// close is then an abort, as `Conn::close` makes it for data still in the ring
    /// (Linux counts peeked bytes in `bytes_to_rcv`; `smc_close_final`).
    fn drop(&mut self) {
        if let (Some(rt), Some(_)) = (crate::runtime::existing(), self.peer_bell) {
            rt.debug(|| {
                format!(
                    "connection closed: {} doorbell records written, {} deliveries without one \
                     (the peer's read spun)",
                    self.rings.records.load(Ordering::Relaxed),
                    self.rings.quiet.load(Ordering::Relaxed)
                )
            });
        }
        if !self
            .peek
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.conn.abort();
        }
    }
}

/// SMC-D connections alive in this process whose reader hears of data through the
/// interrupt thread (the watcher writes their records: no doorbells exchanged).
static WATCHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many connections of this process depend on the interrupt thread for their data
/// (see [`crate::runtime::Runtime::follow_irq_spin`]).
pub fn watched() -> usize {
    WATCHED.load(std::sync::atomic::Ordering::Acquire)
}

/// Counts one connection in [`WATCHED`] until dropped; the first and the last change
/// the interrupt thread's spin.
#[derive(Debug)]
struct Watched(());

impl Watched {
    fn new() -> Self {
        if WATCHED.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0 {
            crate::runtime::follow_irq_spin();
        }
        Self(())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if WATCHED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            crate::runtime::follow_irq_spin();
        }
    }
}

/// How long a blocking read spins on the ring before it waits in the kernel (the stack's
/// own blocking wait spins as long: `WaitMode::default`).
const SPIN: Duration = Duration::from_micros(30);

/// The first part of [`SPIN`] in a read's wait, a plain spin: a peer on another core that
/// answers at once (ping-pong) is seen without a system call. Where the peer rings our
/// doorbell itself, the spin begins with one yield: a peer on this same core, which the
/// write before this read has just woken, answers now rather than after the plain spin (two plain spins per round trip made
/// same-core ping-pong 14.7 µs against TCP's 8.3; with the yield 6.6, and cross-core
/// unchanged at 1.7-1.9 µs, sockperf, 2026-11-28). The rest of the spin yields now and
/// then ([`SpinPhase`]): a writer on this same core gets to run, rather than wait for the
/// spin's end (a reader that spun its full 30 µs per ring's worth halved the throughput
/// of a writer and reader sharing a core).
const PLAIN_SPIN: Duration = Duration::from_micros(6);

/// Longest [`SmcFd::settle`] waits for the records of data that relaxed reads took: a
/// record comes microseconds after its data unless the peer is descheduled in between
/// (or died, after which its end comes).
const SETTLE_LIMIT: Duration = Duration::from_millis(10);

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
    /// From `recv` flags and the descriptor's `O_NONBLOCK`.
    pub fn of(nonblocking: bool, flags: c_int) -> Self {
        Self {
            peek: flags & libc::MSG_PEEK != 0,
            dontwait: flags & libc::MSG_DONTWAIT != 0 || nonblocking,
            waitall: flags & libc::MSG_WAITALL != 0,
        }
    }
}

impl SmcFd {
    /// Takes over the application's descriptor, which already holds the connection's
    /// doorbell socket A (`parts.a_id`: put on it when the connection's set-up began,
    /// `crate::connecting`), for `stream` (its TCP socket on the library's own descriptor
    /// `tcp`): keeps B, installs the watcher and, with the peer's doorbell (`parts.peer`,
    /// which the board passed in exchange for our B), the peer bell, quiet where the
    /// peer's page allows (`crate::quiet`).
    ///
    /// # Errors
    /// `EINVAL` if `stream` is not an SMC-D stream; the `errno` of a failing move of the
    /// peer's doorbell to a library number.
    pub fn new(stream: Stream, tcp: c_int, parts: DoorbellParts) -> Result<Self, c_int> {
        let DoorbellParts {
            b,
            a_id,
            peer,
            page,
        } = parts;
        let conn = stream.conn().cloned().ok_or(libc::EINVAL)?;
        // Handlers installed behind the library's back before this connection are found
        // by the first blocking read on it (`crate::signals`).
        crate::signals::audit_soon();
        // The board passes doorbells in pairs (host-interface.md 3.5): holding the peer's
        // means the peer holds ours and rings it for all its data.
        let gated = peer.is_some();
        let bell = Arc::new(Bell {
            b,
            a_id,
            conn: Arc::downgrade(&conn),
            state: Mutex::new(BellState::default()),
            peeked: std::sync::atomic::AtomicUsize::new(0),
            gated,
            // Our page counts only where the peer rings us and took it.
            page: page.filter(|_| gated),
        });
        // The peer's doorbell, rung after each data CDC that went without the device's
        // signal (`Conn::set_peer_bell`): the peer's `epoll_wait` wakes with no interrupt
        // thread in between.
        // The peer waits for our records as we wait for its: no peer bell, no connection.
        // The same doorbell tells the peer's waiting writer of room: emptying the peer's
        // A→B makes its A writable (`Conn::set_room_bell`), with no interrupt thread in
        // between either.
        let mut peer_page = None;
        let rings = Arc::new(Rings::default());
        let peer_bell = match peer.map(|p| crate::fds::lift_owned(p.fd).map(|fd| (fd, p.page))) {
            Some(Ok((peer, page))) => {
                peer_page.clone_from(&page);
                let fd = peer.as_raw_fd();
                let peer = Arc::new(peer);
                let room = Arc::clone(&peer);
                let rung = Arc::clone(&rings);
                conn.set_peer_bell(Box::new(move |total| {
                    ring_peer(&peer, page.as_deref(), total, &rung)
                }));
                conn.set_room_bell(Box::new(move || drain_peer(&room)));
                Some(fd)
            }
            Some(Err(e)) => return Err(e),
            None => None,
        };
        if let Some(rt) = crate::runtime::existing() {
            rt.debug(|| {
                format!(
                    "quiet pages (docs/ism-run.md): ours {}, the peer's {}",
                    if bell.page.is_some() {
                        "offered"
                    } else {
                        "none"
                    },
                    if peer_page.is_some() { "taken" } else { "none" }
                )
            });
        }
        let weak = Arc::downgrade(&bell);
        conn.set_watcher(Box::new(move || {
            if let Some(b) = weak.upgrade() {
                b.ring();
            }
        }));
        let me = Self {
            stream,
            conn,
            tcp,
            bell,
            peer_bell,
            peer_page,
            rings,
            nonblocking: std::sync::atomic::AtomicBool::new(false),
            peek: Mutex::new(Vec::new()),
            reset_pending: std::sync::atomic::AtomicBool::new(false),
            connect_unreported: std::sync::atomic::AtomicBool::new(false),
            in_epoll: std::sync::atomic::AtomicBool::new(false),
            unsettled: std::sync::atomic::AtomicU64::new(0),
            _live: gated.then(crate::busy::Live::new),
            _watched: (!gated).then(Watched::new),
        };
        Ok(me)
    }

    /// Marks a connect made in the background as not reported yet (see
    /// [`SmcFd::take_connect_report`]).
    pub fn set_connect_unreported(&self, on: bool) {
        self.connect_unreported
            .store(on, std::sync::atomic::Ordering::Release);
    }

    /// `connect` on the connection: 0 the first time after a connect that ended in the
    /// background, `EISCONN` after (as TCP's `__inet_stream_connect`).
    pub fn take_connect_report(&self) -> c_int {
        if self
            .connect_unreported
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            0
        } else {
            libc::EISCONN
        }
    }

    /// Rings the doorbell if data is already there (data that arrived before the watcher).
    pub fn ring(&self) {
        self.bell.ring();
    }

    /// After a wait for writability on A that another path began (a blocking `connect`
    /// waiting on A while the connection was set up): takes out the byte
    /// that wait put into A→B unless A is filled on purpose.
    pub fn unfill_stray(&self) {
        self.bell.unfill_stray();
    }

    /// The library's TCP socket of this connection.
    pub fn tcp_fd(&self) -> c_int {
        self.tcp
    }

    /// The library's descriptors of this connection that a forked child must close: the
    /// TCP socket, the doorbell's end B and the peer's doorbell.
    pub fn own_fds(&self) -> impl Iterator<Item = c_int> {
        [
            Some(self.tcp),
            Some(self.bell.b.as_raw_fd()),
            self.peer_bell,
        ]
        .into_iter()
        .flatten()
    }

    /// `O_NONBLOCK` of the application's descriptor (see the field).
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that `O_NONBLOCK` of the application's descriptor was set to `on`.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the peer's reader may be on this thread's core, waiting for it to yield:
    /// its last spin began there, or where it spins is unknown (no quiet page). A peer on
    /// another core needs no yield (a system call per wait).
    fn peer_may_share_core(&self) -> bool {
        self.peer_page
            .as_ref()
            .is_none_or(|p| p.spinner_may_be_here())
    }

    /// Whether the peer's doorbell is rung from here (the board passed it on).
    pub fn rings_peer(&self) -> bool {
        self.peer_bell.is_some()
    }

    /// The stream (for shutdown and statistics).
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Bytes readable now (`FIONREAD`).
    pub fn readable(&self, fd: c_int) -> usize {
        let peeked = self.peek.lock().unwrap_or_else(|e| e.into_inner()).len();
        let avail = self.conn.available();
        let n = self
            .bell
            .peek_readable(fd)
            .map_or(avail, |k| (k as usize).min(avail));
        peeked + n
    }

    /// One non-blocking read of the ring into `buf`, of at most what the doorbell's records
    /// announced ([`Bell::collect`], which takes them from A first), or, `relax`ed, of
    /// whatever came (see [`SmcFd::relaxes`]); `WouldBlock` if none.
    fn read_announced(&self, fd: c_int, buf: &mut [u8], relax: bool) -> io::Result<usize> {
        let limit = self.bell.collect(fd);
        let limit = if relax { None } else { limit };
        let n = limit.map_or(buf.len(), |k| buf.len().min(k as usize));
        if n == 0 && !buf.is_empty() {
            // No message: it would cost an allocation on every look that finds nothing.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = self.conn.read_with(&mut buf[..n], true);
        if relax && matches!(r, Ok(k) if k > 0) {
            let read = self.conn.consumed_total();
            if read > self.bell.announced() {
                self.unsettled.fetch_max(read, Ordering::SeqCst);
                // Added to an epoll set by another thread meanwhile: settled now (that
                // thread's `mark_in_epoll` may have looked before this read).
                if self.in_epoll.load(Ordering::SeqCst) {
                    self.settle_all(fd);
                }
            }
        }
        r
    }

    /// Whether a receive may read data whose record has not come yet (a **relaxed**
    /// read; the peer writes a record after each data CDC, and a reader that waited for
    /// it paid that `send` on every round trip: sockperf's ping-pong latency with the
    /// peer bell was twice the interrupt thread's). Only while no `epoll` set holds A: a
    /// record that comes after its data was read would make A poll readable with nothing
    /// to read, and `epoll_wait` reports what the kernel sees. Such records are taken by
    /// the next read, and before any `poll` or `select` on the descriptor looks
    /// ([`SmcFd::settle`]).
    fn relaxes(&self) -> bool {
        self.bell.gated && !self.in_epoll.load(Ordering::SeqCst)
    }

    /// Takes the records of data that relaxed reads took before them (see
    /// `SmcFd::relaxes`), waiting for those still on their way (at most 10 ms,
    /// `SETTLE_LIMIT`; a peer that died between its data and its record sends none),
    /// so that A polls readable only with data to read. Called before `poll`, `ppoll`,
    /// `select` and `pselect` look at the descriptor, and when an `epoll` set takes it.
    pub fn settle(&self, fd: c_int) {
        // With bytes left to read, a record of bytes already read only says "readable",
        // which is true: nothing to take (the next read takes it).
        if self.conn.received_total() > self.conn.consumed_total() {
            return;
        }
        self.settle_all(fd);
    }

    /// [`SmcFd::settle`] with bytes left to read too: for a descriptor an `epoll` set
    /// holds, whose reads stop at the records, a record of bytes read earlier that came
    /// after the rest was read would make `epoll_wait` say readable with nothing to read.
    fn settle_all(&self, fd: c_int) {
        let want = self.unsettled.load(Ordering::SeqCst);
        if want == 0 {
            return;
        }
        // The caller's call sets `errno` only if it fails (the records' reads here end in
        // `EAGAIN`).
        let saved = crate::real::errno();
        let mut phase = SpinPhase::new(SETTLE_LIMIT);
        loop {
            let _ = self.bell.collect(fd);
            if self.bell.announced() >= want
                || self.conn.read_would_end()
                || !self.bell.still_a(fd)
                || !phase.spin()
            {
                break;
            }
        }
        let _ = self
            .unsettled
            .compare_exchange(want, 0, Ordering::SeqCst, Ordering::SeqCst);
        // The collect took every record: one of our own goes back for data left.
        self.bell.finish_read(fd);
        crate::real::set_errno(saved);
    }

    /// An `epoll` set took A (`epoll_ctl`): from now on reads stop at what the records
    /// announced, and the records of earlier relaxed reads are taken first.
    pub fn mark_in_epoll(&self, fd: c_int) {
        self.in_epoll.store(true, Ordering::SeqCst);
        self.settle_all(fd);
    }

    /// Receives into `buf` from the application's descriptor `fd`.
    ///
    /// # Errors
    /// The `errno` a TCP socket would give.
    pub fn recv(&self, fd: c_int, buf: &mut [u8], f: RecvFlags) -> Result<usize, c_int> {
        let mut collected = false;
        // A call that may wait looks at the ring before it sleeps: from its start the peer
        // may deliver without a record (`crate::quiet`; the wait gives the count up
        // before it sleeps in the kernel). What came quietly and is left unread when the
        // call ends gets a record of our own below (`Bell::finish_read`).
        let mut quiet = if f.dontwait {
            None
        } else {
            self.bell.spinning()
        };
        let r = self.recv_inner(fd, buf, f, &mut collected, &mut quiet);
        drop(quiet);
        // Served from the bytes a peek held back, the call took no record from A: our own
        // record of them (or one of the peer's for bytes read since) would stay there, and
        // A poll readable with nothing to read (tinyproxy, which peeks then reads what it
        // saw, waited there for good). Taken now; one goes back if anything is left.
        if !collected && self.bell.gated {
            let _ = self.bell.collect(fd);
        }
        self.bell.finish_read(fd);
        r
    }

    /// [`SmcFd::recv`]; sets `collected` if it took the records from A
    /// ([`Bell::collect`], with each look at the ring).
    fn recv_inner<'a>(
        &'a self,
        fd: c_int,
        buf: &mut [u8],
        f: RecvFlags,
        collected: &mut bool,
        quiet: &mut Option<Spinning<'a>>,
    ) -> Result<usize, c_int> {
        if buf.is_empty() {
            return Ok(0);
        }
        let relax = self.relaxes();
        let mut peek = self.peek.lock().unwrap_or_else(|e| e.into_inner());
        if f.peek {
            // A peek shows what a read would take now, as TCP's (`tcp_recvmsg` copies
            // from the queue without consuming it): the bytes held back by earlier peeks,
            // topped up from the ring; it waits only while it has nothing to show, or,
            // with `MSG_WAITALL`, until it can show `buf.len()` bytes (or the stream ends).
            let want = buf.len().min(1 << 20);
            while peek.len() < want {
                let wait = !f.dontwait && (peek.is_empty() || f.waitall);
                let mut tmp = vec![0u8; want - peek.len()];
                *collected = true;
                match self.read_announced(fd, &mut tmp, relax) {
                    Ok(0) => break,
                    Ok(n) => {
                        peek.extend_from_slice(&tmp[..n]);
                        self.bell
                            .peeked
                            .store(peek.len(), std::sync::atomic::Ordering::Release);
                    }
                    Err(e) if wait && e.kind() == io::ErrorKind::WouldBlock => {
                        // Not held across the wait: a handler that leaves the call by
                        // `siglongjmp` would leave it locked, and every later read with it.
                        drop(peek);
                        let waited = self.wait_readable(fd, relax, quiet);
                        peek = self.peek.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = waited {
                            if peek.is_empty() {
                                return Err(e);
                            }
                            break;
                        }
                    }
                    Err(_) if !peek.is_empty() => break,
                    Err(e) => return Err(errno_of(&e)),
                }
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
            *collected = true;
            match self.read_announced(fd, &mut buf[done..], relax) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if !f.waitall {
                        break;
                    }
                }
                Err(e) if wait && e.kind() == io::ErrorKind::WouldBlock => {
                    // A signal or the time limit after some bytes: the count, as TCP's
                    // `tcp_recvmsg` returns what it copied.
                    if let Err(e) = self.wait_readable(fd, relax, quiet) {
                        if done > 0 {
                            break;
                        }
                        return Err(e);
                    }
                }
                Err(_) if done > 0 => break,
                Err(e) => return Err(errno_of(&e)),
            }
        }
        Ok(done)
    }

    /// Waits until a read on the application's descriptor `fd` (A) may not block: a short
    /// spin on the ring (as the stack's own blocking wait), then a wait in the kernel, in
    /// a `recv(A, MSG_PEEK)` of one byte of the doorbell, so that signals and time limits
    /// act as on a TCP socket: a handler installed without `SA_RESTART` makes it fail with
    /// `EINTR`, one with `SA_RESTART` restarts it, unless `SO_RCVTIMEO` is set (mirrored
    /// onto A by `setsockopt`), which makes it `EINTR` and, when it expires, `EAGAIN`
    /// (Linux: `sock_intr_errno` in `include/net/sock.h`, used by both `tcp_recvmsg` and
    /// `unix_stream_read_generic`). The spin ends when data is readable (gated: with its
    /// record in A); before the kernel wait, A is left holding no record of data already
    /// read ([`Bell::finish_read`]).
    ///
    /// # Errors
    /// `EINTR`, `EAGAIN` (time limit, or `O_NONBLOCK` set meanwhile), `EBADF` (another
    /// thread closed `fd` before this wait began), or another `errno` of the kernel's
    /// `recv`.
    fn wait_readable<'a>(
        &'a self,
        fd: c_int,
        relax: bool,
        quiet: &mut Option<Spinning<'a>>,
    ) -> Result<(), c_int> {
        // While it spins, the peer delivers without a record (`crate::quiet`): this loop
        // looks at the ring itself. The caller's count, or one of this wait's own.
        if quiet.is_none() {
            *quiet = self.bell.spinning();
        }
        // The spin stands for part of the kernel's wait: a signal that comes meanwhile
        // must end the call as it would end that wait (see `SpinSignals`).
        let mut signals = SpinSignals::watch();
        let start = std::time::Instant::now();
        let mut phase = SpinPhase::new(SPIN);
        // Only where the peer rings our doorbell itself: where the interrupt thread tells
        // of data, the yield gives the core to that thread before the read looks at the
        // ring (on two vCPUs ping-pong went from 2-3 to 5-6 µs RTT/2).
        let mut first = self.rings_peer() && self.peer_may_share_core();
        let (mut turns, mut plain) = (0u32, true);
        // The spin holds none of the library's locks but in its looks at the records
        // (`ready_to_read`): a handler that interrupts it may call in.
        let pause = crate::signals::Pause::begin();
        loop {
            // Gated, data counts once its record is in A (it comes right after the data),
            // unless the read is relaxed; ungated, this is one look at the peer's CDC per
            // turn, as before the records.
            if self.ready_to_read(fd, relax, Some(&pause)) {
                drop(signals); // a signal now pending is handled; the data is returned
                return Ok(());
            }
            if signals.interrupted(fd) {
                break;
            }
            // A peer on this core that our last write woke runs now (see `PLAIN_SPIN`).
            if std::mem::take(&mut first) {
                if !phase.yield_now() {
                    break;
                }
                continue;
            }
            // The clock every few turns only (see `SpinPhase::spin`).
            turns = turns.wrapping_add(1);
            if plain && (!turns.is_multiple_of(8) || start.elapsed() < PLAIN_SPIN) {
                std::hint::spin_loop();
                continue;
            }
            plain = false;
            if !phase.spin() {
                break;
            }
        }
        drop(pause);
        // No longer spinning: a delivery the peer made quietly before this is in the
        // page (its data is readable, and no record will come for it); every later one
        // writes a record, which ends the kernel's wait below.
        if quiet.take().is_some() && self.ready_to_read(fd, relax, None) {
            drop(signals);
            return Ok(());
        }
        signals.end(fd)?;
        // Another thread closed the descriptor while this call ran: nothing to wait on
        // (TCP's call would wait on the socket it holds; this one cannot).
        if !self.bell.is_a(fd) {
            return Err(libc::EBADF);
        }
        // A holds no record of bytes already read (gated: the read before this wait took
        // every record, and records announce only bytes not read yet; ungated: taken
        // here): the wait below ends when the next one comes, or the peer is done.
        self.bell.finish_read(fd);
        let Some(recv) = real().recv else {
            return Err(libc::ENOSYS);
        };
        let mut b = 0u8;
        // The kernel's wait holds none of the library's locks: a handler may call in.
        // SAFETY: a one-byte peek into a local byte on the application's descriptor A.
        let n = crate::signals::paused(|| unsafe {
            recv(fd, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK)
        });
        if n >= 0 {
            // A record, or B shut down (the peer is done): read again.
            Ok(())
        } else {
            Err(crate::real::errno())
        }
    }

    /// Whether a read on `fd` would not block now ([`SmcFd::wait_readable`]'s test): data
    /// came and, gated, its record is in A or the peer delivered it quietly, unless the
    /// read is `relax`ed; or the stream ended.
    /// `paused`: the caller's call holds no lock but here (see `crate::signals::Pause`).
    fn ready_to_read(
        &self,
        fd: c_int,
        relax: bool,
        paused: Option<&crate::signals::Pause>,
    ) -> bool {
        let unannounced = || match paused {
            Some(p) => p.hold(|| self.bell.unannounced()),
            None => self.bell.unannounced(),
        };
        self.conn.read_ready()
            && (relax || !unannounced() || self.conn.read_would_end() || has_record(fd))
    }

    /// Waits until a write on the application's descriptor `fd` (A) may not block, in
    /// the kernel: A was filled ([`Bell::fill`]), so a blocking one-byte `send` on A
    /// waits until the watcher drains B, which it does when the peer has made room.
    /// Signals and `SO_SNDTIMEO` act as on a TCP socket's `send` (see
    /// [`SmcFd::wait_readable`]; Linux's `sk_stream_wait_memory` and `unix_stream_sendmsg`
    /// both end in `sock_intr_errno`).
    fn wait_writable(&self, fd: c_int) -> Result<(), c_int> {
        let Some(send) = real().send else {
            return Err(libc::ENOSYS);
        };
        // A wait that holds none of the library's locks (`crate::signals::Pause`).
        // SAFETY: sends one byte from a static buffer on the application's descriptor A,
        // without SIGPIPE (B lives as long as this connection).
        let n = crate::signals::paused(|| unsafe {
            send(fd, b"w".as_ptr().cast(), 1, libc::MSG_NOSIGNAL)
        });
        let r = if n >= 0 {
            Ok(())
        } else {
            Err(crate::real::errno())
        };
        self.bell.unfill_stray();
        r
    }

    /// Sends `buf` (`dontwait`: `MSG_DONTWAIT` or the descriptor's `O_NONBLOCK`).
    ///
    /// # Errors
    /// The `errno` a TCP socket would give (`EPIPE` after a close; the caller raises
    /// `SIGPIPE`); `EBADF` if it must wait and another thread has closed `fd` meanwhile.
    pub fn send(&self, fd: c_int, buf: &[u8], dontwait: bool) -> Result<usize, c_int> {
        let r = self.send_inner(fd, buf, dontwait);
        if matches!(r, Ok(n) if n > 0) {
            self.after_write(fd);
        }
        match r {
            // The peer closed: the stack says `ECONNRESET` at once, as Linux's
            // `smc_tx_sendmsg`; a TCP socket takes the first write (the peer's kernel
            // answers it with a reset) and fails the next with `EPIPE`. Programs written
            // for TCP greet or answer a client that already left and only then read its
            // end (Python's `selectors` servers, Ruby's `IO.select` ones died of the
            // `ECONNRESET`), so the program sees TCP's sequence. The bytes go nowhere, as
            // over TCP.
            Err(libc::ECONNRESET) if self.conn.closed_by_peer() => {
                if self
                    .reset_pending
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    Err(libc::EPIPE)
                } else {
                    Ok(buf.len())
                }
            }
            r => r,
        }
    }

    /// After a write that put data: A may still be filled from an earlier `EAGAIN` (a
    /// program may write again without waiting for writability, as iperf3 does after
    /// `select`), and putting data cleared `WRITE_BLOCKED`, so with a peer bell the peer's
    /// cursor updates would go unsignalled and nothing would drain A: the program would
    /// wait for `POLLOUT` forever (iperf3 stalled so under load). So while A is filled the
    /// peer is told again that we wait, then A is drained if the peer has room (the
    /// peer's check after its unsignalled update, or this one, sees the other's store).
    ///
    /// And a write that leaves the peer's ring with less room than `Conn::write_lowat`
    /// makes A poll unwritable (filled) until the peer has made that much room, as a TCP
    /// socket stops polling writable when little of its buffer is free: a program that waits
    /// for writability and then writes a few kilobytes blocking (socat) must not block
    /// in that write (two socats echoing to each other on a loopback board both blocked
    /// in writes and hung, 3 runs of 5, while A polled writable on any room).
    ///
    /// With a peer bell the peer empties A→B itself once it made room (its room bell,
    /// `Conn::set_room_bell`), unseen by our `filled`: so with little room A is filled
    /// again whatever `filled` says (one refused `send` if it still is).
    fn after_write(&self, fd: c_int) {
        let lowat = self.conn.write_lowat();
        let filled = self.bell.is_filled();
        if self.conn.write_space() >= lowat {
            if filled {
                let _ = self.conn.say_waiting_for_room_below(lowat);
                self.bell.drain_if_room();
            }
            return;
        }
        let _ = self.conn.say_waiting_for_room_below(lowat);
        if !filled || self.rings_peer() {
            let _ = self.bell.fill(fd);
        } else {
            self.bell.drain_if_room();
        }
    }

    fn send_inner(&self, fd: c_int, buf: &[u8], dontwait: bool) -> Result<usize, c_int> {
        if buf.is_empty() {
            return Ok(0);
        }
        // What was sent, or the error if nothing was (as TCP's `send`).
        let short = |done: usize, e: c_int| if done > 0 { Ok(done) } else { Err(e) };
        let mut done = 0;
        loop {
            match self.conn.write_with(&buf[done..], true) {
                Ok(n) => {
                    done += n;
                    if done == buf.len() {
                        return Ok(done);
                    }
                    if n > 0 {
                        continue; // the ring filled up during this write: once more
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return short(done, errno_of(&e)),
            }
            if !dontwait && self.spin_for_room() {
                continue;
            }
            // The peer's ring is full: A stops polling writable until it has room.
            match self.bell.fill(fd) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return short(done, e),
            }
            if dontwait {
                return short(done, libc::EAGAIN);
            }
            if let Err(e) = self.wait_writable(fd) {
                return short(done, e);
            }
        }
    }

    /// A blocking write's short spin for room in the peer's ring (at least the low-water
    /// mark, [`Conn::write_lowat`]) before it sleeps: a reader on another core frees room
    /// within microseconds, and a sleeping writer pays a wake-up (~20 µs across cores on
    /// the machines this runs on) per ring's worth. `true` if the room came.
    fn spin_for_room(&self) -> bool {
        let lowat = self.conn.write_lowat();
        let mut phase = SpinPhase::new(SPIN);
        loop {
            if self.conn.write_ready_for(lowat) {
                return true;
            }
            if !phase.spin() {
                return false;
            }
        }
    }

    /// Room in the peer's ring now (bytes a write would take without waiting).
    pub fn write_space(&self) -> usize {
        self.conn.write_space()
    }

    /// Waits until the peer has room for a write on `fd` (blocking) or returns `EAGAIN`
    /// (`dontwait`) after making `fd` poll unwritable; `Ok` when there is room.
    ///
    /// # Errors
    /// `EAGAIN`, `EINTR`, `EBADF` (`fd` closed by another thread), or the `errno` of the
    /// wait.
    pub fn wait_room(&self, fd: c_int, dontwait: bool) -> Result<(), c_int> {
        loop {
            // The peer must know that we wait (its cursor updates are signalled then, and
            // wake the watcher that drains A→B), as a write that found the ring full says.
            let full = self.conn.say_waiting_for_room().map_err(|e| errno_of(&e))?;
            if !full || self.conn.write_ready() || !self.bell.fill(fd)? {
                return Ok(());
            }
            if dontwait {
                return Err(libc::EAGAIN);
            }
            self.wait_writable(fd)?;
        }
    }

    /// Waits until a read on `fd` would not block (see [`SmcFd::recv`]); `Ok` at once if
    /// data, end of stream or an error is there.
    ///
    /// # Errors
    /// `EINTR`, `EAGAIN` (`SO_RCVTIMEO`), `EBADF` (`fd` closed by another thread), or the
    /// `errno` of the wait.
    pub fn wait_data(&self, fd: c_int) -> Result<(), c_int> {
        while self.readable(fd) == 0 && !self.conn.read_would_end() {
            self.wait_readable(fd, false, &mut None)?;
        }
        Ok(())
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

/// A connection's doorbell made before its handshake, so that B can be handed to the
/// peer through the board's name service (host-interface.md 3.5: a client's with its
/// registration, a server's with its take): then the peer's library writes the doorbell
/// record itself after its data, and the peer's descriptor wakes with no interrupt thread
/// in between (one wake-up per message, as TCP's).
pub struct Bells {
    /// (A, B), as [`doorbell_pair`] makes them.
    pub pair: (OwnedFd, OwnedFd),
    /// The peer's B, if the board passed it on (then the peer holds ours: the board
    /// passes them in pairs).
    pub peer: Option<PeerDoorbell>,
    /// Our quiet page (see `crate::quiet`), and its descriptor until it is offered.
    pub page: Option<Arc<Page>>,
    page_fd: Option<OwnedFd>,
}

/// What a connection's doorbell is made of when its set-up ends (see [`SmcFd::new`]).
#[derive(Debug)]
pub struct DoorbellParts {
    /// B, the library's end of the pair.
    pub b: OwnedFd,
    /// A's identity (see [`file_id`]).
    pub a_id: (u64, u64),
    /// The peer's doorbell, if the board passed it.
    pub peer: Option<PeerDoorbell>,
    /// Our quiet page, if the peer took it (`crate::quiet`).
    pub page: Option<Arc<Page>>,
}

/// The peer's doorbell (its B) and the quiet page it offered there (see `crate::quiet`).
#[derive(Debug)]
pub struct PeerDoorbell {
    /// The peer's B.
    pub fd: OwnedFd,
    /// The peer's page, if it offered one.
    pub page: Option<Arc<Page>>,
}

impl PeerDoorbell {
    /// The peer's B as the board handed it over, with the page the peer offered there
    /// (`crate::quiet`), taken at once.
    pub fn taken(fd: OwnedFd) -> Self {
        use std::os::fd::AsFd;
        let page = Page::take(fd.as_fd()).map(Arc::new);
        Self { fd, page }
    }
}

impl Bells {
    /// A new socket pair (no peer's doorbell yet).
    ///
    /// # Errors
    /// As [`doorbell_pair`].
    pub fn new() -> Result<Self, c_int> {
        let pair = doorbell_pair()?;
        let (page, page_fd) = match Page::create() {
            Ok((p, fd)) => (Some(Arc::new(p)), Some(fd)),
            Err(_) => (None, None),
        };
        Ok(Self {
            pair,
            peer: None,
            page,
            page_fd,
        })
    }

    /// Offers our page on A, where the peer finds it in our B (`crate::quiet`): a
    /// client's before its registration, a server's at its take.
    pub fn offer_page_on_a(&mut self) {
        use std::os::fd::AsFd;
        if let Some(fd) = self.page_fd.take() {
            if !Page::offer(self.pair.0.as_fd(), fd.as_fd()) {
                self.page = None;
            }
        }
    }

    /// A server's, with the client's doorbell taken: offers our page on A, where the
    /// client finds it in our B, only if the client offered one (pages go in pairs).
    pub fn set_peer(&mut self, peer: Option<PeerDoorbell>) {
        if peer.as_ref().is_some_and(|p| p.page.is_some()) {
            self.offer_page_on_a();
        } else {
            self.page_fd = None;
            self.page = None;
        }
        self.peer = peer;
    }

    /// B, to hand to the board.
    pub fn b(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pair.1.as_fd()
    }

    /// The library's descriptors (for a forked child to close).
    pub fn own_fds(&self) -> impl Iterator<Item = c_int> {
        [
            Some(self.pair.0.as_raw_fd()),
            Some(self.pair.1.as_raw_fd()),
            self.peer.as_ref().map(|p| p.fd.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
    }
}

/// The peer's doorbell: one record of `total` (bytes sent in all) into the peer's B, after
/// the CDC that announced them is in place; `false` if it cannot be written now (B full:
/// the peer has not read its records for a while; `Conn` then owes it a ring and rings
/// again after the peer's next consumer-cursor update). A record is one `send` of 8
/// bytes, which the kernel takes whole or not at all (`unix_stream_sendmsg` in
/// `net/unix/af_unix.c` allocates the message at once, or fails with `EAGAIN`).
///
/// With the peer's quiet page (`crate::quiet`) no record is written while a reader of the
/// peer spins in a blocking read: it sees the data in the ring, and the page tells its
/// library that nothing announced it. Every record written is counted there.
fn ring_peer(peer: &OwnedFd, page: Option<&Page>, total: u64, rings: &Rings) -> bool {
    if page.is_some_and(|p| p.try_quiet(total)) {
        rings.quiet.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    rings.records.fetch_add(1, Ordering::Relaxed);
    if let Some(p) = page {
        p.count_record();
    }
    let saved = crate::real::errno();
    let told = send_record(peer.as_raw_fd(), total);
    crate::real::set_errno(saved);
    if !told {
        if let Some(p) = page {
            p.uncount_record();
        }
    }
    told
}

/// How a connection's peer bell told the peer of its data: records written, deliveries
/// that needed none (the peer's reader spun: `crate::quiet`).
#[derive(Debug, Default)]
struct Rings {
    records: std::sync::atomic::AtomicU64,
    quiet: std::sync::atomic::AtomicU64,
}

/// The peer's doorbell as its room bell: empties the peer's A→B (the fill that makes its
/// A poll unwritable, and the byte a blocked write waits to put), so that its A polls
/// writable and its blocked write or `poll` for `POLLOUT` wakes. Only junk is in A→B.
fn drain_peer(peer: &OwnedFd) {
    let saved = crate::real::errno();
    drain_all(peer.as_raw_fd());
    crate::real::set_errno(saved);
}

/// Writes one record of `total` into the doorbell end `b`, without waiting and without
/// `SIGPIPE`; whether all of it went.
fn send_record(b: c_int, total: u64) -> bool {
    let Some(send) = real().send else {
        return false;
    };
    let rec = total.to_le_bytes();
    // SAFETY: sends a local buffer of its length on a doorbell descriptor the caller owns,
    // without waiting (a full B already makes A readable) and without SIGPIPE (A may be
    // closed already while a call still holds this connection: the kernel would otherwise
    // kill the process with SIGPIPE, as sockperf showed).
    let n = unsafe {
        send(
            b,
            rec.as_ptr().cast(),
            rec.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    n == RECORD as isize
}

/// A socket pair for an application descriptor: (A, B), both close-on-exec, A's send
/// buffer the smallest the kernel allows (`SO_SNDBUF` 1, raised to `SOCK_MIN_SNDBUF`, so
/// that a few kilobytes fill A→B), B non-blocking and on a number of the library's
/// (`crate::fds::lift_owned`).
///
/// # Errors
/// The `errno` of a failing `socketpair`, or `EMFILE` (no number free for B).
pub fn doorbell_pair() -> Result<(OwnedFd, OwnedFd), c_int> {
    use std::os::fd::FromRawFd;
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
    let b = crate::fds::lift_owned(b)?;
    if let Some(set) = real().setsockopt {
        let one: c_int = 1;
        // SAFETY: SO_SNDBUF with an `int` of its size on our own new descriptor A.
        unsafe {
            set(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&one as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
    }
    if let Some(f) = real().fcntl {
        // SAFETY: sets O_NONBLOCK on our own descriptor B: it never waits.
        unsafe { f(b.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    Ok((a, b))
}

/// How many received bytes reads of `conn` may take with `announced` announced: `None`
/// (everything that came) if a read would end or fail at once; never past what came (a
/// forged record announces nothing more).
fn allowed(conn: &Conn, announced: u64) -> Option<u64> {
    if conn.read_would_end() {
        return None;
    }
    let upto = announced.min(conn.received_total());
    Some(upto.saturating_sub(conn.consumed_total()))
}

/// The most that the whole records in `bytes` announce (0 for none; a cut record at the
/// end is left out).
fn most_announced(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(RECORD)
        .map(|r| {
            let mut w = [0u8; RECORD];
            w.copy_from_slice(r);
            u64::from_le_bytes(w)
        })
        .max()
        .unwrap_or(0)
}

/// Whether A (`fd`) holds a record, or its peer end is shut (one `MSG_PEEK`, not waiting).
fn has_record(fd: c_int) -> bool {
    let Some(recv) = real().recv else {
        return false;
    };
    let mut b = 0u8;
    // SAFETY: a one-byte peek into a local byte, without waiting.
    let n = unsafe {
        recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

/// Whether records written into the doorbell end `b` wait in A, unread (B's send queue,
/// `SIOCOUTQ`: for a UNIX stream socket the memory of what it sent that its peer has not
/// read, Linux's `unix_ioctl` in `net/unix/af_unix.c`). Asked of B, the library's own
/// descriptor, never of the program's number.
pub fn records_waiting(b: c_int) -> bool {
    crate::net::send_queue_nonempty(b)
}

/// The (device, inode) of the open file behind `fd`, or `None` (not open).
pub fn file_id(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: fstat into a zeroed stat buffer of its size.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some((st.st_dev, st.st_ino))
    }
}

/// Fills A's send buffer (A→B) until the kernel refuses more, without waiting and without
/// `SIGPIPE`: A polls unwritable. `a` must be a socket of the pair, open.
pub fn fill_all(a: c_int) {
    let Some(send) = real().send else {
        return;
    };
    let junk = [0u8; 4096];
    // SAFETY: sends from a local buffer of its length on the open descriptor A, without
    // waiting and without SIGPIPE.
    while unsafe {
        send(
            a,
            junk.as_ptr().cast(),
            junk.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    } > 0
    {}
}

/// Reads everything the library's end `b` holds, without waiting.
pub fn drain_all(b: c_int) {
    let Some(recv) = real().recv else {
        return;
    };
    let mut buf = [0u8; 4096];
    // Until the queue is empty: a short read does not say so, since a read stops after a
    // message that carried descriptors (`unix_stream_read_generic` in `net/unix/af_unix.c`),
    // and a quiet page's offer nobody took may wait here (`crate::quiet`; a client whose
    // server runs without doorbells stopped its drain there, and its `connect` waited for
    // room in A for good).
    // SAFETY: reads into a local buffer of its length from our own descriptor, without
    // waiting.
    while unsafe { recv(b, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_announce_their_largest_count_and_a_cut_one_nothing() {
        let mut b = Vec::new();
        for n in [5u64, 1 << 40, 7] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(most_announced(&b), 1 << 40);
        assert_eq!(most_announced(&b[..8]), 5);
        assert_eq!(most_announced(&b[..7]), 0, "a cut record is no record");
        assert_eq!(most_announced(&[]), 0);
    }
}
