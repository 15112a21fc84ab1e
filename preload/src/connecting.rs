//! A connection of an `ism-run` peer being set up: a `connect` to an `ism-run` listener
//! (the TCP connection, then the client's CLC handshake) or a connection `accept` returned
//! whose client is an `ism-run` client (the server's handshake), run on a library thread;
//! the program's descriptor is the connection's own from the start.
//!
//! A non-blocking `connect` returns `EINPROGRESS` at once, as TCP's; a blocking one waits
//! in the kernel for the end ([`wait_end`]), so that signals interrupt it as TCP's.
//! `accept` returns at once ([`Side::Server`]), so that handshakes of concurrent clients
//! overlap and a stalled client holds up no other (Linux runs them in `smc_listen_work`,
//! `net/smc/af_smc.c`, off the accept path); meanwhile the descriptor answers as a
//! connected socket (`getpeername`, `EISCONN`), and a failed handshake is a reset
//! connection (`ECONNRESET`).
//!
//! The descriptor holds, from the start, the doorbell socket A of the connection
//! (`crate::smc`). A connect's has its send buffer filled, so it polls neither readable
//! nor writable, as a TCP socket whose connection is under way; an accepted one polls
//! writable, as TCP's, and a non-blocking write waits briefly for the end
//! ([`Connecting::settle_write`]). At the end:
//! * **SMC-D**: A stays (no file changes hands: a `poll`, `select` or `epoll_wait` asleep
//!   on the descriptor sleeps on the connection's own file, and wakes for its data), B is
//!   drained, so A polls writable: `POLLOUT` as for a completed TCP connect;
//! * **TCP** (the peer declined): the TCP socket takes the number back, connected; the
//!   `poll` and `select` sleepers on A wake to look at the number again: those waiting for
//!   `POLLOUT` when A→B is drained, those waiting for `POLLIN` alone once the TCP socket
//!   is readable (the kernel registers a `poll` on no new file after its first pass, so
//!   `crate::late` keeps A until then and shuts it down);
//! * **failure**: B is shut down, so A polls `POLLHUP`, and `SO_ERROR`, `connect` and data
//!   calls give the error, as after a failed TCP connect.
//!
//! In between, a second `connect` fails with `EALREADY`, `SO_ERROR` reads 0, data calls on
//! a non-blocking descriptor fail with `EAGAIN` (a blocking one waits for the end; so does
//! a non-blocking one once the peer's first records are in A: the end is then at hand, and
//! a program told "readable" must not read `EAGAIN`), and a connect's `getpeername` fails
//! with `ENOTCONN`, all as on a TCP socket in `SYN_SENT`. The registrations of the
//! descriptor in `epoll` sets stay on A (and move with the number on a fallback). The end
//! and the program's `close` of the descriptor are ordered by the connection's lock:
//! whichever comes first wins, and the other sees it (a closed descriptor's connection is
//! dropped, never put on a number the program may reuse).

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ism_host_driver::smcd::clc::DeclineReason;
use ism_sim::process::names::ClientKey;
use libc::c_int;

use crate::hooks::set_flags;
use crate::real::{errno, real, KeepsErrno};
use crate::runtime::Runtime;

/// Where a background connect stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The TCP connection or the handshake is under way.
    Pending,
    /// It failed with this `errno`; `reported`: `SO_ERROR` gave it already.
    Failed { errno: c_int, reported: bool },
    /// SMC-D or TCP took the descriptor (a `dup` of the placeholder stays unconnected).
    Done,
    /// The program closed the descriptor first.
    Closed,
}

/// Which end of a connection a library thread sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A `connect`: the TCP connection, then the client's handshake.
    Client,
    /// A connection `accept` returned (its client is an `ism-run` client): the server's
    /// handshake, so that `accept` does not wait for it.
    Server,
}

impl State {
    /// What a data call gets in this state: `Ok(())` once SMC-D or TCP took the
    /// descriptor, `EAGAIN` while under way, the failure's `errno`, `EBADF` once closed.
    fn for_data_call(&self) -> Result<(), c_int> {
        match *self {
            State::Pending => Err(libc::EAGAIN),
            State::Failed { errno, .. } => Err(errno),
            State::Done => Ok(()),
            State::Closed => Err(libc::EBADF),
        }
    }
}

/// The state of one connection being set up (the entry of its descriptor meanwhile).
pub struct Connecting {
    /// Which end this is.
    side: Side,
    /// The doorbell's B (A is on the program's descriptor).
    b: OwnedFd,
    /// A's identity (device, inode), to check that the program's descriptor still holds
    /// it at the end.
    a_id: (u64, u64),
    /// The TCP socket, on a descriptor of the library's (options and `getsockname` go to
    /// it while the connect is under way).
    tcp: OwnedFd,
    /// The program's file status flags at `connect` (`O_NONBLOCK` among them).
    flags: c_int,
    /// Where the connection comes from and goes (for the debug lines).
    local: SocketAddr,
    dest: SocketAddr,
    /// How a client registered the connection with the board (what its
    /// TAKE_SERVER_BELL names); a server's: its client's address (unused).
    reg: ClientKey,
    /// B went to the board (a client's with its registration, a server's with its take:
    /// doorbells are exchanged, see `crate::smc::Bells`).
    bell_passed: bool,
    /// The peer's doorbell, if the board passed it: a server has it from its take, a
    /// client takes it after the handshake.
    peer_bell: Mutex<Option<crate::smc::PeerDoorbell>>,
    /// Our quiet page, offered with our doorbell (`crate::quiet`).
    page: Option<std::sync::Arc<crate::quiet::Page>>,
    /// Socket options the program set meanwhile (level, name, value), set again on the
    /// result at the end: the handshake changes some of them and puts back what it found.
    options: Mutex<Vec<(c_int, c_int, Vec<u8>)>>,
    /// The options the handshake changes on the TCP socket while it runs (its receive
    /// time limit, `TCP_NODELAY`: see `hooks::negotiate`), as the program had them at the
    /// start: `getsockopt` answers from these, or from what the program set meanwhile
    /// ([`Connecting::get_option`]), never with the handshake's own values.
    before: Vec<(c_int, c_int, Vec<u8>)>,
    state: Mutex<State>,
    ended: Condvar,
    /// A server's: whether its handshake may answer the client's proposal (see
    /// [`Connecting::open_gate`]).
    gate: Mutex<Gate>,
    gate_moved: Condvar,
    /// Descriptor numbers a client's `connect` set aside for its set-up (moved to the
    /// set-up's thread: `crate::fds::set_aside`).
    spares: Mutex<Vec<OwnedFd>>,
}

/// Whether a server's handshake may answer its client's proposal. `accept` returns before
/// the handshake ends, so a program that forks right after it (a fork-per-connection
/// server: inetd, `git daemon`, `socat ...,fork`, postgres, Python's `ForkingTCPServer`)
/// would give its child a connection that stays with the parent (`crate::fork`). So the
/// server's handshake, once it has read the proposal, waits here until the program uses the
/// descriptor (a data call, a `poll`, `select` or `epoll_ctl` of it, `close`: the
/// connection is this process's, SMC-D goes on) or forks (the proposal is declined: the
/// child inherits a TCP connection), at most [`GATE_WAIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Neither yet: the handshake waits.
    Shut,
    /// The program used the descriptor (or the wait ran out): SMC-D.
    Open,
    /// The program forks: decline.
    Refused,
}

/// Descriptors a server's set-up takes after it accepted its client's proposal (a copy of
/// A to offer its quiet page again, one of B, the client's doorbell moved above the
/// floor), set aside before it answers ([`crate::fds::reserve`]).
const SERVER_SPARE: usize = 3;

/// The longest a server's handshake waits at its [`Gate`] for the program to use the
/// descriptor or fork.
pub const GATE_WAIT: Duration = Duration::from_millis(200);

/// The longest a `fork` waits for the set-ups it refused to end (each ends within a
/// round trip to the client's library, unless that client stalls).
const FORK_WAIT: Duration = Duration::from_secs(1);

/// Before a `fork` (the prepare handler, before it takes any lock): every server set-up
/// under way that has not answered its client declines, and the fork waits (at most
/// [`FORK_WAIT`] in all) until they ended, so that the child inherits their descriptors as
/// TCP sockets. Set-ups that answered already end on SMC-D and stay with the parent.
pub fn refuse_servers_before_fork() {
    let refused: Vec<Arc<crate::hooks::Entry>> = crate::hooks::TABLE
        .entries()
        .into_iter()
        .filter(|e| matches!(&**e, crate::hooks::Entry::Connecting(c) if c.refuse_at_gate()))
        .collect();
    let end = Instant::now() + FORK_WAIT;
    for e in &refused {
        if let crate::hooks::Entry::Connecting(c) = &**e {
            c.wait_ended(end.saturating_duration_since(Instant::now()));
        }
    }
}

/// The options the handshake changes on the TCP socket while it runs (level, name, size
/// of the value): see [`Connecting::get_option`].
const SHADOWED: [(c_int, c_int, usize); 2] = [
    (
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        std::mem::size_of::<libc::timeval>(),
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        std::mem::size_of::<c_int>(),
    ),
];

/// How long a non-blocking write on an accepted connection waits for the end of the
/// server's handshake (see [`Connecting::settle_write`]).
pub const SERVER_WRITE_WAIT: Duration = Duration::from_millis(100);

/// Set-ups under way in this process: each thread that runs one holds an [`InFlight`].
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How long a process that exits waits for its set-ups under way ([`wait_in_flight`]).
// (Used by the exit handler, which the unit-test build does not have: see lib.rs.)
#[cfg_attr(test, allow(dead_code))]
pub const EXIT_WAIT: Duration = Duration::from_secs(3);

/// One set-up under way (counted in [`IN_FLIGHT`] while it lives).
struct InFlight(());

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// At exit: waits, at most `limit`, until no set-up is under way. Linux's SMC finishes a
/// server's handshake before `accept` returns the connection (`smc_listen_work` in
/// `net/smc/af_smc.c`), so a server that accepts, closes and exits at once leaves its
/// client a connection that ends cleanly; here `accept` returns first, and the process's
/// end would cut the handshake (the client's `connect` would fail). So the library's exit
/// lets the handshakes of accepted (and connecting) connections end, as the kernel would
/// have; the connections then close as every other at exit.
pub fn wait_in_flight(limit: Duration) {
    let end = Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In a forked child: the parent's set-up threads are not there (only atomics: see
/// `crate::fork`).
pub fn forget_in_child() {
    IN_FLIGHT.store(0, Ordering::SeqCst);
}

/// The longest a background connect waits for its TCP connection (Linux gives up on an
/// unanswered SYN after about two minutes with the default `tcp_syn_retries`).
const TCP_CONNECT_LIMIT: Duration = Duration::from_secs(130);

impl Connecting {
    /// Locks the state (the order against `close`: this lock, then the table's).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A server's gate, moved to `to` unless it moved already (see [`Gate`]); where it
    /// stands now (`None` for a client, which has none).
    fn move_gate(&self, to: Gate) -> Option<Gate> {
        if self.side != Side::Server {
            return None;
        }
        let mut g = self.gate();
        if *g == Gate::Shut {
            *g = to;
            self.gate_moved.notify_all();
        }
        Some(*g)
    }

    /// The program used the descriptor (a data call, a readiness wait on it, `epoll_ctl`,
    /// `close`): a server's handshake may answer its client (see [`Gate`]).
    pub fn open_gate(&self) {
        let _ = self.move_gate(Gate::Open);
    }

    /// The process forks: a server's handshake that has not answered its client declines
    /// (see [`Gate`]); whether it will.
    fn refuse_at_gate(&self) -> bool {
        self.move_gate(Gate::Refused) == Some(Gate::Refused)
    }

    /// The server's handshake, with the client's proposal read: waits (at most
    /// [`GATE_WAIT`]) until the program uses the descriptor or forks; whether to decline.
    fn wait_at_gate(&self) -> bool {
        let g = self.gate();
        let (mut g, _) = self
            .gate_moved
            .wait_timeout_while(g, GATE_WAIT, |g| *g == Gate::Shut)
            .unwrap_or_else(|e| e.into_inner());
        if *g == Gate::Shut {
            *g = Gate::Open;
        }
        *g == Gate::Refused
    }

    /// The program hands the descriptor to another process (`SCM_RIGHTS`): a server's
    /// handshake that has not answered its client declines (the other process gets the
    /// TCP connection, as a forked child does), and this waits (at most [`FORK_WAIT`])
    /// until the set-up ended, whichever side it is.
    pub fn hand_over(&self) {
        let _ = self.refuse_at_gate();
        self.wait_ended(FORK_WAIT);
    }

    /// Waits, at most `limit`, until the set-up ended.
    fn wait_ended(&self, limit: Duration) {
        let st = self.lock();
        let _ = self
            .ended
            .wait_timeout_while(st, limit, |s| *s == State::Pending)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// The program closes the descriptor: a connect still under way ends as closed (its
    /// thread drops what it made). Returns the lock, to be held over the real `close`.
    pub fn closing(&self) -> MutexGuard<'_, State> {
        // A server's handshake need not wait for a use that will not come.
        self.open_gate();
        let mut st = self.lock();
        if *st == State::Pending {
            *st = State::Closed;
            self.ended.notify_all();
            // A blocking `connect` waiting in the placeholder (`wait_end`) sees room now.
            crate::smc::drain_all(self.b.as_raw_fd());
        }
        st
    }

    /// The doorbell's B.
    pub fn b_fd(&self) -> c_int {
        self.b.as_raw_fd()
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The library's descriptors of this connection that a forked child must close: the
    /// TCP socket, the doorbell's B and the peer's doorbell.
    pub fn own_fds(&self) -> Vec<c_int> {
        let mut fds = vec![self.tcp_fd(), self.b_fd()];
        if let Some(p) = self
            .peer_bell
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            fds.push(p.fd.as_raw_fd());
        }
        fds
    }

    /// Lets go of the TCP socket once the program's descriptor has it (a fallback to
    /// TCP): B takes the library's number of it (`dup3`, atomic), so that a call that
    /// looked this connect up before its end never reaches another file by that number.
    fn release_tcp(&self) {
        let _: c_int = match real().dup3 {
            // SAFETY: both descriptors are this connect's own.
            Some(f) => unsafe { f(self.b.as_raw_fd(), self.tcp.as_raw_fd(), libc::O_CLOEXEC) },
            None => -1,
        };
    }

    /// `setsockopt` while the connection is set up: applied to the TCP socket now, and
    /// again to the result at the end (see [`Connecting::options`]). The caller holds the
    /// lock with the connection pending (`st`), which orders this against the end.
    ///
    /// # Safety
    /// `val` is valid for `len` bytes of reads (or null with `len` 0), as for
    /// `setsockopt`.
    pub unsafe fn set_option(
        &self,
        _st: &MutexGuard<'_, State>,
        level: c_int,
        name: c_int,
        val: *const libc::c_void,
        len: libc::socklen_t,
    ) -> c_int {
        let Some(f) = real().setsockopt else {
            return crate::real::fail(libc::ENOSYS);
        };
        // SAFETY: the caller's option, passed on to the TCP socket.
        let r = unsafe { f(self.tcp.as_raw_fd(), level, name, val, len) };
        if r == 0 && !val.is_null() {
            // SAFETY: as above, read once.
            let bytes = unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len as usize) };
            let mut o = self.options.lock().unwrap_or_else(|e| e.into_inner());
            o.retain(|(l, n, _)| (*l, *n) != (level, name));
            o.push((level, name, bytes.to_vec()));
        }
        r
    }

    /// `getsockopt` of an option the handshake changes while it runs (see
    /// [`Connecting::before`]): the program's value (what it set meanwhile, else what it
    /// had at the start); `None` for every other option (the TCP socket answers).
    pub fn get_option(&self, level: c_int, name: c_int) -> Option<Vec<u8>> {
        let o = self.options.lock().unwrap_or_else(|e| e.into_inner());
        let set = o.iter().find(|(l, n, _)| (*l, *n) == (level, name));
        set.or_else(|| {
            self.before
                .iter()
                .find(|(l, n, _)| (*l, *n) == (level, name))
        })
        .map(|(_, _, v)| v.clone())
    }

    /// At the end, the lock held: sets the options of [`Connecting::set_option`] again on
    /// the program's descriptor `fd`, through the library's `setsockopt` (an SMC-D
    /// connection applies the time limits to its waits too).
    fn replay_options(&self, fd: c_int) {
        let o = std::mem::take(&mut *self.options.lock().unwrap_or_else(|e| e.into_inner()));
        for (level, name, v) in o {
            // SAFETY: a value of its own length, as the program gave it.
            unsafe {
                crate::hooks::setsockopt(
                    fd,
                    level,
                    name,
                    v.as_ptr().cast(),
                    v.len() as libc::socklen_t,
                )
            };
        }
    }

    /// The TCP socket's descriptor.
    pub fn tcp_fd(&self) -> c_int {
        self.tcp.as_raw_fd()
    }

    /// What a data call gets now: `Ok(())` once SMC-D or TCP took the descriptor (the
    /// caller looks it up again), else the `errno` (`EAGAIN` while under way if `dontwait`;
    /// a blocking call waits for the end first, and so does a non-blocking one when the
    /// peer's records already wait in A: the peer finished its handshake, this side is
    /// about to, and A polls readable, so `EAGAIN` would contradict `poll`).
    pub fn settle(&self, dontwait: bool) -> Result<(), c_int> {
        self.open_gate();
        let mut st = self.lock();
        let dontwait = dontwait && !crate::smc::records_waiting(self.b_fd());
        // No `crate::signals::Pause` here: on waking, the condition variable takes the
        // state's lock again, which a signal handler's call on this descriptor takes too
        // (such a call gets `EAGAIN` meanwhile instead).
        while *st == State::Pending && !dontwait {
            st = self.ended.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.for_data_call()
    }

    /// [`Connecting::settle`] for a write on the program's descriptor `fd`. An accepted
    /// connection polls writable from the start, as TCP's does, so a non-blocking write
    /// during the server's handshake waits for its end (which comes within a round trip
    /// to the client's library, unless the client stalls) for at most
    /// [`SERVER_WRITE_WAIT`]; if the handshake is still under way then, A is filled (it
    /// polls unwritable until the end drains it, a `POLLOUT` edge) and the write gives
    /// `EAGAIN`. A server that answers and closes at once ("too many clients") so keeps
    /// its answer, as over TCP.
    pub fn settle_write(&self, fd: c_int, dontwait: bool) -> Result<(), c_int> {
        if self.side == Side::Client || !dontwait {
            return self.settle(dontwait);
        }
        self.open_gate();
        let st = self.lock();
        let (st, _) = self
            .ended
            .wait_timeout_while(st, SERVER_WRITE_WAIT, |s| *s == State::Pending)
            .unwrap_or_else(|e| e.into_inner());
        if *st == State::Pending && crate::smc::file_id(fd) == Some(self.a_id) {
            crate::smc::fill_all(fd);
        }
        st.for_data_call()
    }

    /// `connect` again: `EALREADY` while under way, the error after a failure (an
    /// accepted connection: `EISCONN`, as TCP's).
    pub fn connect_again(&self) -> c_int {
        if self.side == Side::Server {
            return libc::EISCONN;
        }
        match *self.lock() {
            State::Pending => libc::EALREADY,
            State::Failed { errno, .. } => errno,
            State::Done | State::Closed => libc::EISCONN,
        }
    }

    /// `SO_ERROR`: the failure once, then 0 (0 while under way).
    pub fn take_error(&self) -> c_int {
        let mut st = self.lock();
        match &mut *st {
            State::Failed { errno, reported } if !*reported => {
                *reported = true;
                *errno
            }
            _ => 0,
        }
    }

    /// Ends the connect with a failure: A polls `POLLHUP` (B shut down both ways) and
    /// writable (B drained), as a TCP socket whose connect failed.
    fn fail(&self, st: &mut State, e: c_int) {
        *st = State::Failed {
            errno: e,
            reported: false,
        };
        if let Some(sh) = real().shutdown {
            // SAFETY: shuts down our own descriptors B and the TCP socket.
            unsafe {
                sh(self.b.as_raw_fd(), libc::SHUT_RDWR);
                sh(self.tcp.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        crate::smc::drain_all(self.b.as_raw_fd());
    }
}

/// The doorbell a connection's set-up starts with (see [`start`]).
pub enum Doorbell {
    /// Exchanged with the peer through the board (`crate::smc::Bells`: loopback boards
    /// with peer bells).
    Exchanged(crate::smc::Bells),
    /// The connection's own pair (A, B), made before: a client makes it before it
    /// registers with the board, so that a process out of descriptors connects over plain
    /// TCP instead of failing after the server took it for an `ism-run` client.
    Own((OwnedFd, OwnedFd)),
    /// None yet: [`start`] makes the pair (a server's; if it cannot, the caller declines
    /// the client).
    New,
}

/// After the real `connect` of `fd` from `local` to `dest` started (non-blocking) or
/// completed (blocking), or the real `accept` of `fd` (then `dest` is the client): puts
/// the connection's doorbell A on `fd` (`doorbell`'s pair, or a new one; a connect's
/// filled, so that it polls unwritable until the end) and
/// starts the thread that sets the connection up, taking along the descriptor numbers
/// the calling thread set aside and did not use here (a client's, from `connect`:
/// `crate::fds::set_aside`; none for a server). Returns a
/// descriptor of A of the library's own, for [`wait_end`] (drop it at once otherwise:
/// kept, it would keep A open after the program's `close`). `Err`: nothing changed (the
/// caller leaves the socket on TCP).
pub fn start(
    rt: &'static Runtime,
    side: Side,
    fd: c_int,
    (local, dest): (SocketAddr, SocketAddr),
    reg: ClientKey,
    flags: c_int,
    doorbell: Doorbell,
) -> Result<(Arc<crate::hooks::Entry>, OwnedFd), c_int> {
    use crate::hooks::{put_on, Entry, TABLE};
    let ((a, b), peer, page, bell_passed) = match doorbell {
        Doorbell::Exchanged(bells) => (bells.pair, bells.peer, bells.page, true),
        Doorbell::Own(pair) => (pair, None, None, false),
        Doorbell::New => (crate::smc::doorbell_pair()?, None, None, false),
    };
    let a_id = crate::smc::file_id(a.as_raw_fd()).ok_or_else(errno)?;
    let tcp = crate::fds::lift(fd);
    if tcp < 0 {
        return Err(errno());
    }
    // SAFETY: a new descriptor nobody else owns.
    let tcp = unsafe { OwnedFd::from_raw_fd(tcp) };
    crate::fork::mark_doorbell(a.as_raw_fd());
    // A connect's socket polls unwritable until the connection is made, as TCP's in
    // `SYN_SENT`; an accepted one is writable at once, as TCP's (`settle_write`).
    if side == Side::Client {
        crate::smc::fill_all(a.as_raw_fd());
    }
    set_flags(a.as_raw_fd(), flags & libc::O_NONBLOCK);
    let before = SHADOWED
        .iter()
        .filter_map(|&(level, name, size)| {
            crate::net::sockopt_bytes(tcp.as_raw_fd(), level, name, size).map(|v| (level, name, v))
        })
        .collect();
    let entry = Arc::new(Entry::Connecting(KeepsErrno::new(Connecting {
        side,
        b,
        a_id,
        tcp,
        flags,
        local,
        dest,
        reg,
        bell_passed,
        peer_bell: Mutex::new(peer),
        page,
        options: Mutex::new(Vec::new()),
        before,
        state: Mutex::new(State::Pending),
        ended: Condvar::new(),
        gate: Mutex::new(Gate::Shut),
        gate_moved: Condvar::new(),
        spares: Mutex::new(crate::fds::take_aside()),
    })));
    let old = TABLE.insert(fd, entry.clone());
    if let Err(e) = put_on(fd, a.as_raw_fd(), true) {
        drop(TABLE.remove(fd));
        drop(old);
        return Err(e);
    }
    drop(old);
    let job = entry.clone();
    let counted = InFlight::new();
    let work = Box::new(move || {
        let _counted = counted;
        finish(rt, fd, &job);
    });
    if let Err(job) = crate::workers::run("ism-run-setup", work) {
        // No thread to be had: the caller's (a blocking set-up, as no `ism-run`).
        job();
    }
    Ok((entry, a))
}

/// A blocking `connect`: waits in the kernel until the connect started by [`start`] ends,
/// with a one-byte `send` into the connection's A (filled; the end drains it, or shuts
/// its peer down), so that a signal interrupts the wait as it interrupts TCP's `connect`:
/// `EINTR` unless the handler has `SA_RESTART` (then the kernel restarts the wait), and
/// the connect goes on in the background. `SO_SNDTIMEO` of the socket bounds the wait
/// (`EINPROGRESS` when it expires, as TCP's). `Ok(())`: SMC-D or TCP took the descriptor.
///
/// # Errors
/// The `errno` for `connect` to return.
pub fn wait_end(c: &Connecting, a: &OwnedFd) -> Result<(), c_int> {
    // The placeholder waits as long as the program's socket would (`SO_SNDTIMEO`; not
    // `SO_RCVTIMEO`, which the handshake sets on the TCP socket for its own wait while it
    // runs: copied here, it stayed on A, and every later blocking read on the connection
    // took a signal with `SA_RESTART` for `EINTR`, as a socket with a time limit does).
    crate::hooks::copy_timeout(c.tcp_fd(), a.as_raw_fd(), libc::SO_SNDTIMEO);
    loop {
        let st = *c.lock();
        match st {
            State::Pending => {}
            State::Done => return Ok(()),
            State::Failed { errno, .. } => {
                // Reported by `connect`: `SO_ERROR` reads 0 afterwards, as on TCP.
                c.take_error();
                return Err(errno);
            }
            State::Closed => return Err(libc::EBADF),
        }
        let Some(send) = real().send else {
            return Err(libc::ENOSYS);
        };
        // A wait that holds none of the library's locks (`crate::signals::Pause`).
        // SAFETY: one byte from a static buffer into our own descriptor of the
        // placeholder, without SIGPIPE.
        let n = crate::signals::paused(|| unsafe {
            send(a.as_raw_fd(), b"w".as_ptr().cast(), 1, libc::MSG_NOSIGNAL)
        });
        if n < 0 {
            match errno() {
                libc::EINTR => return Err(libc::EINTR),
                libc::EAGAIN => return Err(libc::EINPROGRESS),
                // B shut down: the connect failed (the state says how).
                _ => {}
            }
        }
    }
}

/// Waits (bounded) for the TCP connection of `tcp`; its `errno` if it failed.
fn wait_tcp(tcp: c_int) -> Result<(), c_int> {
    let deadline = Instant::now() + TCP_CONNECT_LIMIT;
    loop {
        let mut p = libc::pollfd {
            fd: tcp,
            events: libc::POLLOUT,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(libc::ETIMEDOUT);
        }
        let ms = left.as_millis().min(1000) as c_int;
        // SAFETY: one valid pollfd (the library does not interpose `poll`).
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            break;
        }
        if n < 0 && errno() != libc::EINTR {
            return Err(errno());
        }
    }
    match crate::net::sockopt_int(tcp, libc::SOL_SOCKET, libc::SO_ERROR) {
        Some(0) => Ok(()),
        Some(e) => Err(e),
        None => Err(errno()),
    }
}

/// The thread's work: the TCP connection (a client's), the handshake, then the
/// descriptor's new owner.
fn finish(rt: &'static Runtime, fd: c_int, entry: &Arc<crate::hooks::Entry>) {
    use crate::hooks::{install, negotiate, Entry, Negotiated, TABLE};
    let Entry::Connecting(c) = &**entry else {
        return;
    };
    // The numbers set aside (a client's, taken by `connect`; a server's, at its gate) go
    // back however this ends.
    let _spares = crate::fds::ReleaseOnDrop;
    crate::fds::set_aside(std::mem::take(
        &mut *c.spares.lock().unwrap_or_else(|e| e.into_inner()),
    ));
    let client = c.side == Side::Client;
    let connected = if client { wait_tcp(c.tcp_fd()) } else { Ok(()) };
    let mut outcome = match connected {
        Err(e) => Negotiated::Failed(e, format!("TCP connect: errno {e}")),
        Ok(()) => {
            // The handshake blocks (the program cannot reach this file meanwhile: its
            // descriptor is the doorbell's A).
            set_flags(c.tcp_fd(), c.flags & !libc::O_NONBLOCK);
            // A server sets aside the descriptors its set-up takes once it answered, so
            // that it declines a client it could not serve (`crate::fds::reserve`).
            let gate = || {
                if c.wait_at_gate() {
                    Some(DeclineReason::OPTUNSUPP)
                } else if !crate::fds::reserve(c.b_fd(), SERVER_SPARE) {
                    Some(DeclineReason::MEM)
                } else {
                    None
                }
            };
            let n = negotiate(rt, c.tcp_fd(), client, gate);
            match n {
                // An accepted connection whose client went away or broke the handshake
                // is, to the program, one its peer reset.
                Negotiated::Failed(_, why) if !client => Negotiated::Failed(libc::ECONNRESET, why),
                Negotiated::TimedOut(why) => {
                    // As Linux's client after a CLC timeout (`net/smc/af_smc.c`
                    // `__smc_connect`: `ETIMEDOUT`). A proposal the server's kernel has
                    // not acknowledged means it has not finished the connection (its
                    // accept queue was full): a reset ends it there, so that the program
                    // never takes it and reads the proposal as data. An acknowledged
                    // one waits in the server's queue: the connection stays (closed
                    // with a FIN later), so that the server's library still finds this
                    // socket (`sock_diag`) and its registration, and its program reads a
                    // reset or the end of the stream.
                    if crate::net::send_queue_nonempty(c.tcp_fd()) {
                        reset(c.tcp_fd());
                    }
                    Negotiated::Failed(libc::ETIMEDOUT, why)
                }
                n => n,
            }
        }
    };
    // The server left its doorbell with the board at its take (before the handshake):
    // take it (also after a decline, so that the board does not keep it). The board
    // passes doorbells in pairs: if the server has ours, it is there, and the server
    // counts on us to ring it for all our data; a board that cannot be asked now leaves
    // that in doubt, and an SMC-D connection fails (`ECONNRESET`) rather than leave the
    // server waiting for records that never come. (A server has the client's from its
    // take, before the handshake.)
    if client && c.bell_passed && !matches!(outcome, Negotiated::Failed(..)) {
        match rt.names.as_ref().map(|n| n.take_server_bell(c.reg, c.dest)) {
            Some(Ok(peer)) => {
                // With the page the server offered there (`crate::quiet`).
                *c.peer_bell.lock().unwrap_or_else(|e| e.into_inner()) =
                    peer.map(crate::smc::PeerDoorbell::taken);
            }
            Some(Err(e)) if matches!(outcome, Negotiated::Smc(..)) => {
                outcome =
                    Negotiated::Failed(libc::ECONNRESET, format!("the server's doorbell: {e}"));
            }
            _ => {}
        }
    }
    let mut st = c.lock();
    // Every descriptor of the program on this connection (`fd` and its `dup`s, all of
    // them A): the result goes on each. None left (the program closed them, or put other
    // files on their numbers): nothing to put anywhere; a stream made meanwhile is
    // dropped (closed) here.
    let fds: Vec<c_int> = TABLE
        .descriptors_of(entry)
        .into_iter()
        .filter(|&d| crate::smc::file_id(d) == Some(c.a_id))
        .collect();
    let primary = if fds.contains(&fd) {
        fd
    } else {
        fds.first().copied().unwrap_or(fd)
    };
    let others: Vec<c_int> = fds.iter().copied().filter(|&d| d != primary).collect();
    if *st != State::Pending || fds.is_empty() {
        *st = State::Closed;
        c.ended.notify_all();
        crate::smc::drain_all(c.b_fd());
        return;
    }
    // The debug lines name the connection as the blocking calls did.
    let (local, dest) = (c.local, c.dest);
    // The program may have changed `O_NONBLOCK` meanwhile (`fcntl` or `FIONBIO` on A: a
    // server makes an accepted socket non-blocking after `accept`): the result takes A's
    // mode.
    let now = crate::hooks::get_flags(primary);
    let flags = if now < 0 {
        c.flags
    } else {
        (c.flags & !libc::O_NONBLOCK) | (now & libc::O_NONBLOCK)
    };
    let mode = if flags & libc::O_NONBLOCK != 0 {
        " (non-blocking)"
    } else {
        ""
    };
    let what = if client {
        format!("connect {local} -> {dest}{mode}")
    } else {
        format!("accept {dest} -> {local}")
    };
    // On a fallback, a thread of the program may sleep in `poll` or `select` on A: the
    // kernel does not wake such a sleeper when the number gets another file, and A would
    // go with the `dup3` (a sleeper holds no reference to it), leaving the sleeper on a
    // file that never changes. So the library holds A across the change and then shuts it
    // down: its sleepers wake and look at the number again, which names the TCP socket.
    // It has no epoll registration left by then (`put_on` moved them all). After a
    // fallback the shutdown waits until the TCP socket is readable (`crate::late`): a
    // sleeper that waits for `POLLIN` alone would look at the socket too early and sleep
    // on (those that wait for `POLLOUT` wake when A→B is drained below).
    let mut placeholder = None;
    let mut a_again: Option<OwnedFd> = None;
    let mut fell_back = None;
    match outcome {
        Negotiated::Smc(stream, tcp) => {
            let peer = c.peer_bell.lock().unwrap_or_else(|e| e.into_inner()).take();
            // A server's: a descriptor of A of our own, to offer our quiet page on again
            // after B is drained below (the program may close `primary` once the entry is
            // installed, without this state's lock).
            if !client && c.page.is_some() {
                let d = crate::fds::lift(primary);
                // SAFETY: a new descriptor of A that nobody else owns.
                a_again = (d >= 0).then(|| unsafe { OwnedFd::from_raw_fd(d) });
            }
            let b = crate::fds::lift(c.b_fd());
            let installed = if b < 0 {
                Err(errno())
            } else {
                // SAFETY: a new descriptor of B that nobody else owns.
                let b = unsafe { OwnedFd::from_raw_fd(b) };
                let bell = crate::smc::DoorbellParts {
                    b,
                    a_id: c.a_id,
                    peer,
                    page: c.page.clone(),
                };
                install(primary, stream, tcp, bell)
            };
            match installed {
                Ok(()) => {
                    if let Some(Entry::Smc(s)) = TABLE.get(primary).as_deref() {
                        if client {
                            s.set_connect_unreported(true);
                        }
                        // The program may have changed `O_NONBLOCK` on A after `flags` was
                        // read and before the entry was installed: its `fcntl`/`FIONBIO`
                        // hook saw no SMC-D entry then, so the mode is read again now that
                        // one is there (a later change updates the entry itself). A stale
                        // mode made a blocking read give `EAGAIN`.
                        s.set_nonblocking(crate::smc::fd_nonblocking(primary));
                    }
                    // The `dup`s are descriptors of the connection too (of its A).
                    for &d in &others {
                        drop(TABLE.alias(primary, d));
                        crate::hooks::keep_epoll_regs(d);
                    }
                    c.replay_options(primary);
                    rt.debug(|| format!("{what}: SMC-D"));
                    *st = State::Done;
                }
                Err(e) => c.fail(&mut st, e),
            }
        }
        Negotiated::Fallback(why) => {
            placeholder = Some(Placeholder(crate::fds::lift(primary)));
            // The TCP socket takes the number back, in the program's mode.
            set_flags(c.tcp_fd(), flags);
            for &d in &others {
                if crate::hooks::put_on(d, c.tcp_fd(), false).is_ok() {
                    drop(TABLE.remove(d));
                }
            }
            match crate::hooks::put_on(primary, c.tcp_fd(), false) {
                Ok(()) => {
                    // `O_NONBLOCK` as the program last set it: a change made on A after
                    // `flags` was read is A's (the placeholder is a descriptor of A); one
                    // made from now on goes to the TCP socket itself.
                    if let Some(p) = placeholder.as_ref().filter(|p| p.0 >= 0) {
                        let now = crate::hooks::get_flags(p.0);
                        if now >= 0 {
                            set_flags(
                                primary,
                                (flags & !libc::O_NONBLOCK) | (now & libc::O_NONBLOCK),
                            );
                        }
                    }
                    // The library's descriptor of the TCP socket lets go of it before the
                    // program can use it, so that the program's `close` closes it (see
                    // `install`): the number stays the library's, on B.
                    c.release_tcp();
                    drop(TABLE.remove(primary));
                    c.replay_options(primary);
                    rt.debug(|| format!("{what}: TCP (declined: {why})"));
                    *st = State::Done;
                    fell_back = Some(primary);
                }
                Err(e) => c.fail(&mut st, e),
            }
        }
        Negotiated::Failed(e, why) => {
            rt.debug(|| format!("{what}: handshake failed: {why}"));
            c.fail(&mut st, e);
        }
        // Turned into a failure above.
        Negotiated::TimedOut(why) => {
            rt.debug(|| format!("{what}: handshake failed: {why}"));
            c.fail(&mut st, libc::ETIMEDOUT);
        }
    }
    // The numbers set aside and not taken go back (before the drain below lets the
    // program go on).
    crate::fds::release();
    // A→B drained: A polls writable (the connection's `POLLOUT`, or a failed connect's),
    // and a blocking `connect` waiting in it (`wait_end`) sees room. A server's quiet
    // page, offered at the head of A→B for the client (`crate::quiet`), is taken out
    // first and offered again after, if the client has not taken it yet.
    let offer = a_again
        .as_ref()
        .and_then(|_| crate::quiet::Page::take_offer(c.b.as_fd()));
    crate::smc::drain_all(c.b_fd());
    if let (Some(a), Some(fd)) = (&a_again, offer) {
        crate::quiet::Page::offer(a.as_fd(), fd.as_fd());
    }
    drop(a_again);
    c.ended.notify_all();
    match (placeholder, fell_back) {
        (Some(p), Some(fd)) => p.watch(fd),
        (p, _) => drop(p),
    }
}

/// Aborts the TCP connection of `tcp` with a reset (`connect` to `AF_UNSPEC`: Linux's
/// `tcp_disconnect` in `net/ipv4/tcp.c` sends one from every synchronised state), leaving
/// the socket unconnected and open (as bound as it was).
fn reset(tcp: c_int) {
    let Some(connect) = real().connect else {
        return;
    };
    // SAFETY: an `AF_UNSPEC` address of its size (only its family is read).
    let mut a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    a.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: the library's own TCP socket and a valid address of the given size.
    unsafe {
        connect(
            tcp,
            (&a as *const libc::sockaddr_storage).cast(),
            std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
        )
    };
}

/// The library's descriptor of A while its number changes hands on a fallback (see
/// `finish`): dropping it shuts A down, which wakes every `poll` and
/// `select` asleep on it, and closes the descriptor.
struct Placeholder(c_int);

impl Placeholder {
    /// Hands A to `crate::late`, which shuts it down once the TCP socket on the program's
    /// number `fd` is readable.
    fn watch(self, fd: c_int) {
        if self.0 < 0 {
            return;
        }
        use std::os::fd::FromRawFd;
        // SAFETY: the placeholder's own descriptor, owned from here on by the watch (the
        // placeholder is forgotten, so it is not closed twice).
        let a = unsafe { OwnedFd::from_raw_fd(self.0) };
        std::mem::forget(self);
        crate::late::watch(a, fd);
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        if self.0 < 0 {
            return;
        }
        let r = real();
        if let (Some(sh), Some(cl)) = (r.shutdown, r.close) {
            // SAFETY: our own descriptor of the placeholder, shut down and closed once.
            unsafe {
                sh(self.0, libc::SHUT_RDWR);
                cl(self.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_waits_for_the_set_ups_under_way_and_no_longer_than_its_limit() {
        // One under way, ending after 100 ms: the wait ends with it.
        let counted = InFlight::new();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(counted);
        });
        let start = Instant::now();
        wait_in_flight(Duration::from_secs(10));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(90), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(IN_FLIGHT.load(Ordering::SeqCst), 0);
        t.join().unwrap();
        // One that does not end: the wait gives up at its limit.
        let stuck = InFlight::new();
        let start = Instant::now();
        wait_in_flight(Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(50));
        drop(stuck);
        // Nothing under way: no wait.
        let start = Instant::now();
        wait_in_flight(Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
