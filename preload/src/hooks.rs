//! The interposed C functions. Each first asks the table whether its descriptor is tracked
//! (one atomic load) and, if not, calls the real function at once: `errno` is then exactly
//! what the real call set. `connect`, `listen` and `accept` of candidate sockets do more
//! (see `docs/ism-run.md`), and restore `errno` on success to what it was on entry.
//!
//! The symbols are exported only from the cdylib build (not from this crate's unit-test
//! binary, which would otherwise interpose its own C library).

// The unit-test build exports nothing (see above), so the hooks are unused there.
#![cfg_attr(test, allow(dead_code))]

use std::collections::HashMap;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use ism_host_driver::smcd::clc::DeclineReason;
use ism_host_driver::smcd::Stream;
use ism_sim::process::names::{ClientKey, Lookup};
use libc::{c_int, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::connecting::{Connecting, Doorbell};
use crate::net;
use crate::real::{errno, fail, real, set_errno, KeepsErrno};
use crate::runtime::{runtime, Runtime};
use crate::smc::{fd_nonblocking, RecvFlags, SmcFd};
use crate::table::{Bitmap, Table};

/// What a tracked descriptor is.
pub enum Entry {
    /// An SMC-D connection (let go of with `errno` kept, as every entry's payload).
    Smc(KeepsErrno<SmcFd>),
    /// A listening socket registered with the board's name service.
    Listener(ListenerReg),
    /// A descriptor of an SMC-D connection of another process image: inherited over
    /// `fork` (the connection stays with the parent) or across `exec` (the connection is
    /// gone with the old image). Its data calls fail with `ENOTCONN` (see `crate::fork`).
    Inherited(Inherited),
    /// A non-blocking `connect` to an `ism-run` listener under way on a library thread
    /// (see `crate::connecting`).
    Connecting(KeepsErrno<Connecting>),
}

/// See [`Entry::Inherited`].
#[derive(Default)]
pub struct Inherited {
    /// The `ISM_RUN_DEBUG` line was printed.
    warned: std::sync::atomic::AtomicBool,
    /// The connection's local address, where the process that made it knew it (over
    /// `fork`; not across `exec`): what `getsockname` gives, as on the TCP socket the
    /// child would have had.
    local: Option<SocketAddr>,
}

impl Inherited {
    /// An inherited connection whose local address was `local`.
    pub fn at(local: Option<SocketAddr>) -> Self {
        Self {
            warned: std::sync::atomic::AtomicBool::new(false),
            local,
        }
    }

    /// The connection's local address, if known.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }
}

/// A listener's registration, withdrawn when its last descriptor is closed.
pub struct ListenerReg {
    /// The registered address; `None`: no board and `--require-smc`, so every accepted
    /// connection is refused.
    addr: Option<SocketAddr>,
    /// The listening socket's cookie (`SO_COOKIE`, 0 if unknown), registered with it.
    cookie: u64,
    /// Registered by this process. A listener inherited over `fork` is not (its
    /// registration belongs to the parent's name-service connection) until its first
    /// `accept`, `epoll_ctl` or `listen` in the child ([`ListenerReg::adopt`]).
    registered: Mutex<bool>,
    /// How this process came to hold it, for the debug line of [`ListenerReg::adopt`].
    origin: &'static str,
}

impl ListenerReg {
    /// A listener registered by this process (`listen`).
    fn registered(addr: Option<SocketAddr>, cookie: u64) -> Self {
        Self {
            addr,
            cookie,
            registered: Mutex::new(addr.is_some()),
            origin: "listened on",
        }
    }

    /// A listener inherited over `fork`, not registered by this process yet.
    pub(crate) fn inherited(addr: Option<SocketAddr>, cookie: u64) -> Self {
        Self {
            addr,
            cookie,
            registered: Mutex::new(false),
            origin: "inherited over fork",
        }
    }

    /// A listener this process image did not open (see [`adopt_untracked`]), not
    /// registered by it yet.
    pub(crate) fn found(addr: SocketAddr, cookie: u64) -> Self {
        Self {
            addr: Some(addr),
            cookie,
            registered: Mutex::new(false),
            origin: "a listener this process image did not open (exec, SCM_RIGHTS)",
        }
    }

    /// The listening socket's cookie (0 if unknown).
    pub(crate) fn cookie(&self) -> u64 {
        self.cookie
    }

    /// The registered address (`None`: no board and `--require-smc`).
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// In a forked child: registers the inherited listener on this process's own
    /// name-service connection (and attaches this process's function), once. The parent's
    /// registration goes when the parent closes the listener or exits; this one keeps
    /// clients coming over SMC-D to this process while it holds the listener.
    /// Returns whether this call registered it.
    pub(crate) fn adopt(&self) -> bool {
        let Some(addr) = self.addr else {
            return false;
        };
        let mut reg = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        if *reg {
            return false;
        }
        let rt = runtime();
        if let Some(n) = rt.names.as_ref() {
            if register_listener(n, addr, self.cookie).is_ok() {
                *reg = true;
                let _ = rt.stack();
                rt.own_listener(addr, true);
                let origin = self.origin;
                rt.debug(|| format!("listen {addr}: {origin}, registered"));
                return true;
            }
        }
        false
    }
}

impl Drop for ListenerReg {
    /// Withdraws the registration; keeps `errno` (see [`KeepsErrno`]).
    fn drop(&mut self) {
        let registered = *self.registered.get_mut().unwrap_or_else(|e| e.into_inner());
        if !registered {
            return;
        }
        let saved = errno();
        if let (Some(n), Some(a)) = (runtime().names.as_ref(), self.addr) {
            runtime().own_listener(a, false);
            let _ = n.unregister_listener(a);
        }
        set_errno(saved);
    }
}

/// Registers an inherited listener `fd` in this process (see [`ListenerReg::adopt`]);
/// nothing for other descriptors. Keeps `errno`.
fn adopt_listener(fd: c_int) {
    if !TABLE.maybe_tracked(fd) {
        return;
    }
    let saved = errno();
    guarded(|| {
        if let Some(e) = TABLE.get(fd) {
            if let Entry::Listener(reg) = &*e {
                reg.adopt();
            }
        }
        0
    });
    set_errno(saved);
}

/// A listener that accepted a connection without an entry here: one this process image
/// did not `listen` on, inherited across `exec` or received with `SCM_RIGHTS` (nginx's
/// binary upgrade passes its listeners to the new image so). Another process may have
/// registered that very socket with the board, whose clients then speak CLC to whoever
/// accepts: so an AF_INET/AF_INET6 listener becomes this process's own (registered as a
/// fork child registers an inherited one), and the connection just accepted is taken as
/// any other. Returns whether `fd` has an entry now. Keeps `errno`.
fn adopt_untracked(fd: c_int) -> bool {
    if !crate::fork::owner() {
        return false;
    }
    let saved = errno();
    let adopted = guarded(|| {
        if runtime().names.is_none() || !net::is_inet_stream(fd) {
            return 0;
        }
        let Some(addr) = net::local_addr(fd) else {
            return 0;
        };
        let reg = ListenerReg::found(addr, net::socket_cookie(fd).unwrap_or(0));
        let entry = Arc::new(Entry::Listener(reg));
        drop(TABLE.insert(fd, entry.clone()));
        if let Entry::Listener(l) = &*entry {
            l.adopt();
        }
        1
    }) == 1;
    set_errno(saved);
    adopted
}

pub(crate) static TABLE: Table<Entry> = Table::new();

/// Candidate sockets registered with epoll (descriptors with an entry in `EPOLL_REGS`).
static EPOLL_FDS: Bitmap = Bitmap::new();
/// Their registrations: descriptor → (epoll descriptor, event). When such a socket becomes
/// SMC-D, its registrations are moved from the TCP socket's open file (which the library
/// keeps) to the doorbell socket that takes its number.
pub(crate) type EpollRegs = HashMap<c_int, Vec<(c_int, libc::epoll_event)>>;
pub(crate) static EPOLL_REGS: Mutex<Option<EpollRegs>> = Mutex::new(None);

fn epoll_regs() -> std::sync::MutexGuard<'static, Option<EpollRegs>> {
    EPOLL_REGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets `fd`'s registrations (all, or those in `epfd`).
fn epoll_forget(fd: c_int, epfd: Option<c_int>) {
    let mut g = epoll_regs();
    if let Some(m) = g.as_mut() {
        if let Some(v) = m.get_mut(&fd) {
            v.retain(|(e, _)| epfd.is_some_and(|x| x != *e));
            if v.is_empty() {
                m.remove(&fd);
                EPOLL_FDS.set(fd, false);
            }
        }
    }
}

/// Runs `f` as a library call ([`crate::signals::Call`]); a panic becomes `-1` with
/// `EIO` instead of unwinding into C. A signal handler's call that would wait for a lock
/// the call it interrupted holds fails with `EAGAIN` instead.
pub(crate) fn guarded<T: From<i8>>(f: impl FnOnce() -> T) -> T {
    let Some(_call) = crate::signals::Call::enter() else {
        return fail(libc::EAGAIN);
    };
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fail(libc::EIO))
}

/// A library call for the whole of a hook on `fd` that does more than [`guarded`] covers
/// (its real call between its look-ups and its bookkeeping, or look-ups outside it): for
/// a tracked `fd`, `Err(())` if a signal handler's call would wait for the library's
/// locks (see [`crate::signals::Call`]), which the caller fails with `EAGAIN` before it
/// changes anything; an untracked `fd` needs no mark.
fn call_on(fd: c_int) -> Result<Option<crate::signals::Call>, ()> {
    if !TABLE.maybe_tracked(fd) {
        return Ok(None);
    }
    crate::signals::Call::enter().map(Some).ok_or(())
}

/// The SMC-D connection behind `fd`, if it is one.
pub(crate) fn smc_of(fd: c_int) -> Option<Arc<Entry>> {
    TABLE.get(fd).filter(|e| matches!(**e, Entry::Smc(_)))
}

/// The entry the data calls of `fd` go to: an SMC-D connection, one of another process
/// image ([`Entry::Inherited`], whose calls fail), or a connect under way.
///
/// While the process exits, a descriptor whose entry [`close_all`] took (its bit stays set)
/// has none: another thread's data call on it waits for the end of the process
/// ([`park_if_exiting_elsewhere`]) instead of reaching the real descriptor A, whose
/// doorbell the close has shut (it would read end of stream).
fn data_of(fd: c_int) -> Option<Arc<Entry>> {
    let e = TABLE.get(fd).filter(|e| {
        matches!(
            **e,
            Entry::Smc(_) | Entry::Inherited(_) | Entry::Connecting(_)
        )
    });
    if e.is_none() && EXITING.load(std::sync::atomic::Ordering::SeqCst) && TABLE.maybe_tracked(fd) {
        park_if_exiting_elsewhere();
    }
    e
}

/// The connect under way behind `fd`, if any.
fn connecting_of(fd: c_int) -> Option<Arc<Entry>> {
    TABLE
        .get(fd)
        .filter(|e| matches!(**e, Entry::Connecting(_)))
}

/// A data call on a descriptor whose connect is under way (or failed): the `errno`
/// (`EAGAIN` while under way for a non-blocking call), or, once SMC-D or TCP took the
/// descriptor (a blocking call waited for that), the entry to redo the call with (`None`:
/// TCP, the real call).
fn settle(c: &Connecting, fd: c_int, dontwait: bool) -> Result<Option<Arc<Entry>>, c_int> {
    c.settle(dontwait)?;
    settled_entry(fd)
}

/// Before a `sendfile` or `splice` that reads (`write` false) or writes `fd`: a
/// connection being set up is waited for as a data call waits for it (`smc_recv`,
/// `smc_send`; `EAGAIN` for a non-blocking call while under way), an inherited one
/// fails with `ENOTCONN` (see `inherited_fail`); any other descriptor at once. After
/// it, `smc_of` says whether SMC-D took the descriptor. (Without it, a `sendfile` right
/// after `accept` went into the doorbell socket: its bytes never reached the peer.)
pub(crate) fn before_transfer(fd: c_int, write: bool, dontwait: bool) -> Result<(), c_int> {
    if !TABLE.maybe_tracked(fd) {
        return Ok(());
    }
    match data_of(fd).as_deref() {
        Some(Entry::Inherited(i)) => {
            let _: c_int = inherited_fail(fd, i);
            Err(libc::ENOTCONN)
        }
        Some(Entry::Connecting(c)) => {
            if write {
                c.settle_write(fd, dontwait)?;
            } else {
                c.settle(dontwait)?;
            }
            settled_entry(fd).map(drop)
        }
        _ => Ok(()),
    }
}

/// After a connection's set-up ended: the entry to redo a data call on `fd` with (`None`:
/// TCP, the real call).
fn settled_entry(fd: c_int) -> Result<Option<Arc<Entry>>, c_int> {
    match data_of(fd) {
        Some(e) if matches!(*e, Entry::Connecting(_)) => Err(libc::ENOTCONN),
        other => Ok(other),
    }
}

/// A data call on an inherited descriptor: `ENOTCONN` (this process has no connection
/// behind it), one line with `ISM_RUN_DEBUG` per descriptor, and once per process a line
/// that says why and what to do (the program only sees its own error). A connection
/// accepted and not used before a `fork` reaches the child as TCP instead
/// (`crate::connecting`'s gate): this is one the parent had used, or connected itself.
fn inherited_fail<T: From<i8>>(fd: c_int, i: &Inherited) -> T {
    static HINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !i.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
        crate::fork::debug_line(&format!(
            "fd {fd}: an SMC-D connection of another process (inherited over fork or exec): ENOTCONN"
        ));
        if !HINTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::runtime::say(&format!(
                "ism-run: fd {fd} is an SMC-D connection of the process this one was forked or \
                 executed from: it cannot be used here (ENOTCONN). Only a connection accepted \
                 and not yet used when the process forks goes to the child (over TCP); run \
                 such a program without ism-run (docs/ism-run.md, fork and exec)"
            ));
        }
    }
    fail(libc::ENOTCONN)
}

macro_rules! smc {
    ($e:expr) => {
        match &*$e {
            Entry::Smc(s) => s,
            Entry::Listener(_) | Entry::Inherited(_) | Entry::Connecting(_) => {
                unreachable!("smc_of returns connections only")
            }
        }
    };
}

/// Calls a real function, or fails with `ENOSYS` if the C library has none.
macro_rules! call_real {
    ($name:ident($($a:expr),*)) => {
        match real().$name {
            // SAFETY: the caller's arguments, passed on unchanged to the function it meant
            // to call, under the same contract.
            Some(f) => unsafe { f($($a),*) },
            None => fail(libc::ENOSYS),
        }
    };
}

/// Set when the process exits: connections are being closed under threads that may still
/// be writing; their `EPIPE` then raises no `SIGPIPE` (a TCP socket is not closed before
/// the process is gone, so its writers never see one at exit).
pub(crate) static EXITING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The thread that runs the exit handlers (`pthread_self`), once [`EXITING`] is set.
static EXIT_THREAD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Never returns if the process is exiting and the caller is not the thread running the
/// exit handlers: called by a data call of another thread that is about to report the end
/// of its connection (end of stream, `EPIPE`, a reset), which [`close_all`] may have
/// caused. Over TCP such a thread sees nothing: the kernel closes a process's sockets only
/// after its last thread is gone, so a thread blocked in `recv` during `exit` stays
/// blocked until the process ends. A program that checks for a closed peer in another
/// thread while it exits (sockperf's receiver thread at the end of `under-load`) must not
/// see an end that its peer did not cause. Signal handlers still run meanwhile.
fn park_if_exiting_elsewhere() {
    use std::sync::atomic::Ordering;
    if !EXITING.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as u64;
    if EXIT_THREAD.load(Ordering::SeqCst) == me {
        return;
    }
    crate::fork::debug_line("a data call waits for the end of the process (it is exiting)");
    loop {
        // SAFETY: waits for a signal; the process ends meanwhile.
        unsafe { libc::pause() };
    }
}

/// Closes every SMC-D connection (at exit).
pub fn close_all() {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as u64;
    EXIT_THREAD.store(me, std::sync::atomic::Ordering::SeqCst);
    EXITING.store(true, std::sync::atomic::Ordering::SeqCst);
    for (_, e) in TABLE.drain_keeping_bits() {
        if let Entry::Smc(s) = &*e {
            let _ = s.stream().shutdown(std::net::Shutdown::Write);
            if let Some(c) = s.stream().conn() {
                c.close();
            }
        }
    }
}

// ------------------------------------------------------------------------ data calls

pub(crate) fn raise_sigpipe() {
    // SAFETY: sends SIGPIPE to the calling thread, as the kernel does for a TCP socket.
    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGPIPE) };
}

/// `recv` on an SMC-D descriptor into `len` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes (or `len` 0).
pub(crate) unsafe fn smc_recv(
    e: &Entry,
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    if let Entry::Inherited(i) = e {
        return inherited_fail(fd, i);
    }
    if let Entry::Connecting(c) = e {
        let dontwait = flags & libc::MSG_DONTWAIT != 0 || fd_nonblocking(fd);
        return match settle(c, fd, dontwait) {
            Err(e) => fail(e),
            // SAFETY: the caller's buffer, as for this call.
            Ok(Some(e)) => unsafe { smc_recv(&e, fd, buf, len, flags) },
            Ok(None) => crate::signals::paused(|| call_real!(recv(fd, buf, len, flags))),
        };
    }
    let s = smc!(e);
    let slice: &mut [u8] = if len == 0 || buf.is_null() {
        &mut []
    } else {
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    // A successful call leaves `errno` as it found it, as the kernel's does (the library's
    // own calls on the way may set it; sockperf reads `errno` after a successful `recvfrom`
    // and takes a stale `EPIPE` or `ECONNRESET` for a closed connection).
    let saved = crate::real::errno();
    match s.recv(fd, slice, RecvFlags::of(s.nonblocking(), flags)) {
        Ok(0) if !slice.is_empty() => {
            park_if_exiting_elsewhere();
            crate::fork::debug_line(&format!("fd {fd}: recv: end of stream"));
            crate::real::set_errno(saved);
            0
        }
        Ok(n) => {
            crate::real::set_errno(saved);
            n as ssize_t
        }
        Err(e) => {
            if e != libc::EAGAIN && e != libc::EINTR {
                park_if_exiting_elsewhere();
                crate::fork::debug_line(&format!("fd {fd}: recv: errno {e}"));
            }
            fail(e)
        }
    }
}

/// `send` on an SMC-D descriptor of `len` bytes at `buf`.
///
/// # Safety
/// `buf` must be valid for `len` bytes of reads (or `len` 0).
pub(crate) unsafe fn smc_send(
    e: &Entry,
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    if let Entry::Inherited(i) = e {
        return inherited_fail(fd, i);
    }
    if let Entry::Connecting(c) = e {
        let dontwait = flags & libc::MSG_DONTWAIT != 0 || fd_nonblocking(fd);
        let settled = c
            .settle_write(fd, dontwait)
            .and_then(|()| settled_entry(fd));
        return match settled {
            Err(e) => fail(e),
            // SAFETY: the caller's buffer, as for this call.
            Ok(Some(e)) => unsafe { smc_send(&e, fd, buf, len, flags) },
            Ok(None) => crate::signals::paused(|| call_real!(send(fd, buf, len, flags))),
        };
    }
    let s = smc!(e);
    let slice: &[u8] = if len == 0 || buf.is_null() {
        &[]
    } else {
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    let dontwait = flags & libc::MSG_DONTWAIT != 0 || s.nonblocking();
    // As in `smc_recv`: success leaves `errno` alone.
    let saved = crate::real::errno();
    match s.send(fd, slice, dontwait) {
        Ok(n) => {
            crate::real::set_errno(saved);
            n as ssize_t
        }
        Err(libc::EPIPE) => {
            park_if_exiting_elsewhere();
            if flags & libc::MSG_NOSIGNAL == 0 && !EXITING.load(std::sync::atomic::Ordering::SeqCst)
            {
                raise_sigpipe();
            }
            fail(libc::EPIPE)
        }
        Err(e) => {
            if e != libc::EAGAIN && e != libc::EINTR {
                park_if_exiting_elsewhere();
            }
            fail(e)
        }
    }
}

/// The iovecs as slices.
///
/// # Safety
/// `iov` must point to `n` valid iovecs (or `n` 0).
unsafe fn iovecs<'a>(iov: *const iovec, n: c_int) -> &'a [iovec] {
    if iov.is_null() || n <= 0 {
        &[]
    } else {
        // SAFETY: the caller's array of `n` iovecs.
        unsafe { std::slice::from_raw_parts(iov, n as usize) }
    }
}

/// `recvmsg`/`readv` on an SMC-D descriptor: one receive into a buffer, scattered.
///
/// # Safety
/// Every iovec must be valid for writes of its length.
unsafe fn smc_recv_iov(e: &Entry, fd: c_int, iov: &[iovec], flags: c_int) -> ssize_t {
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    let mut tmp = vec![0u8; total];
    // SAFETY: `tmp` is valid for `total` bytes.
    let n = unsafe { smc_recv(e, fd, tmp.as_mut_ptr().cast(), total, flags) };
    if n <= 0 {
        return n;
    }
    let mut off = 0usize;
    for v in iov {
        if off >= n as usize {
            break;
        }
        let k = v.iov_len.min(n as usize - off);
        if k > 0 {
            // SAFETY: the iovec's buffer has room for `k <= iov_len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(tmp[off..].as_ptr(), v.iov_base.cast(), k) };
        }
        off += k;
    }
    n
}

/// `sendmsg`/`writev` on an SMC-D descriptor: gathered, then one send.
///
/// # Safety
/// Every iovec must be valid for reads of its length.
unsafe fn smc_send_iov(e: &Entry, fd: c_int, iov: &[iovec], flags: c_int) -> ssize_t {
    let mut tmp = Vec::with_capacity(iov.iter().map(|v| v.iov_len).sum());
    for v in iov {
        if v.iov_len > 0 && !v.iov_base.is_null() {
            // SAFETY: the iovec's buffer of `iov_len` bytes.
            tmp.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
    }
    // SAFETY: `tmp` is valid for its length.
    unsafe { smc_send(e, fd, tmp.as_ptr().cast(), tmp.len(), flags) }
}

/// `read`.
///
/// # Safety
/// As the C library's `read`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(read(fd, buf, n));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's buffer.
        Some(e) => unsafe { smc_recv(&e, fd, buf, n, 0) },
        None => call_real!(read(fd, buf, n)),
    })
}

/// `__read_chk` (`read` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C library's `__read_chk`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(__read_chk(fd, buf, n, buflen));
    }
    if n > buflen {
        // What the C library's check does: a buffer overflow is fatal.
        return call_real!(__read_chk(fd, buf, n, buflen));
    }
    // SAFETY: as `read`.
    unsafe { read(fd, buf, n) }
}

/// `write`.
///
/// # Safety
/// As the C library's `write`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(write(fd, buf, n));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's buffer.
        Some(e) => unsafe { smc_send(&e, fd, buf, n, 0) },
        None => call_real!(write(fd, buf, n)),
    })
}

/// `readv`.
///
/// # Safety
/// As the C library's `readv`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(readv(fd, iov, cnt));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's iovecs.
        Some(e) => unsafe { smc_recv_iov(&e, fd, iovecs(iov, cnt), 0) },
        None => call_real!(readv(fd, iov, cnt)),
    })
}

/// `writev`.
///
/// # Safety
/// As the C library's `writev`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(writev(fd, iov, cnt));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's iovecs.
        Some(e) => unsafe { smc_send_iov(&e, fd, iovecs(iov, cnt), 0) },
        None => call_real!(writev(fd, iov, cnt)),
    })
}

/// `recv`.
///
/// # Safety
/// As the C library's `recv`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(recv(fd, buf, n, flags));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's buffer.
        Some(e) => unsafe { smc_recv(&e, fd, buf, n, flags) },
        None => call_real!(recv(fd, buf, n, flags)),
    })
}

/// `__recv_chk` (`recv` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C library's `__recv_chk`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if !TABLE.maybe_tracked(fd) || n > buflen {
        return call_real!(__recv_chk(fd, buf, n, buflen, flags));
    }
    // SAFETY: as `recv`.
    unsafe { recv(fd, buf, n, flags) }
}

/// `send`.
///
/// # Safety
/// As the C library's `send`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(send(fd, buf, n, flags));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's buffer.
        Some(e) => unsafe { smc_send(&e, fd, buf, n, flags) },
        None => call_real!(send(fd, buf, n, flags)),
    })
}

/// `recvfrom` (on a connection the address, if asked for, is left untouched with length
/// 0, as TCP does).
///
/// # Safety
/// As the C library's `recvfrom`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(recvfrom(fd, buf, n, flags, addr, len));
    }
    guarded(|| match data_of(fd) {
        Some(e) => {
            if !addr.is_null() && !len.is_null() {
                // SAFETY: the caller's length word.
                unsafe { *len = 0 };
            }
            // SAFETY: the caller's buffer.
            unsafe { smc_recv(&e, fd, buf, n, flags) }
        }
        None => call_real!(recvfrom(fd, buf, n, flags, addr, len)),
    })
}

/// `__recvfrom_chk` (`recvfrom` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// As the C library's `__recvfrom_chk`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(fd) || n > buflen {
        return call_real!(__recvfrom_chk(fd, buf, n, buflen, flags, addr, len));
    }
    // SAFETY: as `recvfrom`.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

/// `sendto` (the address is ignored on a connection, as TCP does).
///
/// # Safety
/// As the C library's `sendto`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(sendto(fd, buf, n, flags, addr, len));
    }
    guarded(|| match data_of(fd) {
        // SAFETY: the caller's buffer.
        Some(e) => unsafe { smc_send(&e, fd, buf, n, flags) },
        None => call_real!(sendto(fd, buf, n, flags, addr, len)),
    })
}

/// `recvmsg` (no control messages and no address on an SMC-D descriptor).
///
/// # Safety
/// As the C library's `recvmsg`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(recvmsg(fd, msg, flags));
    }
    guarded(|| match data_of(fd) {
        Some(e) => {
            if msg.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: the caller's message header.
            let m = unsafe { &mut *msg };
            // SAFETY: the caller's iovecs.
            let n =
                unsafe { smc_recv_iov(&e, fd, iovecs(m.msg_iov, m.msg_iovlen as c_int), flags) };
            if n >= 0 {
                m.msg_namelen = 0;
                m.msg_controllen = 0;
                m.msg_flags = 0;
            }
            n
        }
        None => call_real!(recvmsg(fd, msg, flags)),
    })
}

/// `sendmsg` (the address and control messages are ignored on an SMC-D descriptor).
///
/// # Safety
/// As the C library's `sendmsg`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: the caller's message header, if any.
    if let Some(m) = unsafe { msg.as_ref() } {
        // SAFETY: the caller's control buffer of `msg_controllen` bytes.
        if !unsafe { rights_handed_over(m) } {
            return -1;
        }
    }
    if !TABLE.maybe_tracked(fd) {
        return call_real!(sendmsg(fd, msg, flags));
    }
    guarded(|| match data_of(fd) {
        Some(e) => {
            if msg.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: the caller's message header.
            let m = unsafe { &*msg };
            // SAFETY: the caller's iovecs.
            unsafe { smc_send_iov(&e, fd, iovecs(m.msg_iov, m.msg_iovlen as c_int), flags) }
        }
        None => call_real!(sendmsg(fd, msg, flags)),
    })
}

/// Descriptors the program passes to another process in `SCM_RIGHTS` control messages
/// of `m` (Node's `cluster` primary hands each accepted connection to a worker): each of
/// this library's connections among them must become a plain TCP socket first, since
/// the other process cannot reach the SMC-D connection (its state is this process's,
/// and the number holds the connection's doorbell, not its TCP socket). A server's
/// set-up that has not answered its client declines and the number gets the TCP
/// connection back ([`Connecting::hand_over`]), as before a `fork`. An SMC-D connection
/// already made cannot be handed over: `EOPNOTSUPP`, and nothing is sent (Linux's SMC
/// sockets are kernel objects and travel; these cannot). 0, or the `errno` to fail with.
///
/// # Safety
/// `m`'s control buffer is the caller's, `msg_controllen` bytes.
unsafe fn hand_over_rights(m: &msghdr) -> c_int {
    if m.msg_control.is_null() {
        return 0;
    }
    let end = (m.msg_control as usize).saturating_add(m.msg_controllen);
    // SAFETY: the caller's header and control buffer, walked with the C library's macros.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
    while !c.is_null() {
        // SAFETY: `c` points to a header inside the buffer (`CMSG_FIRSTHDR`/`NXTHDR`).
        let h = unsafe { std::ptr::read_unaligned(c) };
        // SAFETY: `CMSG_LEN` computes a length.
        let head = unsafe { libc::CMSG_LEN(0) } as usize;
        if (h.cmsg_len as usize) < head || (c as usize).saturating_add(h.cmsg_len as usize) > end {
            // A header the kernel refuses (`EINVAL`, `net/core/scm.c` `__scm_send` with
            // `CMSG_OK`): nothing of it is read, the real call says so.
            break;
        }
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            let n = (h.cmsg_len as usize - head) / size_of::<c_int>();
            // SAFETY: the data of this header, `n` descriptors (unaligned in general).
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<c_int>();
            for i in 0..n {
                // SAFETY: inside the header's data, as its length says.
                let fd = unsafe { std::ptr::read_unaligned(data.add(i)) };
                let e = hand_over(fd);
                if e != 0 {
                    return e;
                }
            }
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(m, c) };
    }
    0
}

/// [`hand_over_rights`] for a send hook, if `m` has control data: whether the send may
/// go on (`false`: `errno` is set, the hook returns -1).
///
/// # Safety
/// As [`hand_over_rights`].
unsafe fn rights_handed_over(m: &msghdr) -> bool {
    if m.msg_controllen == 0 {
        return true;
    }
    // SAFETY: as the caller's.
    match guarded(|| unsafe { hand_over_rights(m) }) {
        0 => true,
        e if e > 0 => {
            let _: c_int = fail(e);
            false
        }
        _ => false, // a panic: `errno` is set
    }
}

/// See [`hand_over_rights`]: 0 when `fd` may go to another process as it is.
fn hand_over(fd: c_int) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return 0;
    }
    if let Some(e) = TABLE.get(fd) {
        if let Entry::Connecting(c) = &*e {
            c.hand_over();
        }
    }
    match TABLE.get(fd).as_deref() {
        Some(Entry::Smc(_) | Entry::Inherited(_) | Entry::Connecting(_)) => {
            runtime().debug(|| {
                format!("sendmsg: fd {fd} is an SMC-D connection: it cannot go to another process (EOPNOTSUPP)")
            });
            libc::EOPNOTSUPP
        }
        _ => 0,
    }
}

/// `recvmmsg`: on an SMC-D descriptor, one [`recvmsg`] per message header, as the
/// kernel's `do_recvmmsg` (`net/socket.c`) runs one `recvmsg` per entry: each entry's
/// `msg_len` gets what its call read (0 at the end of stream, and the loop goes on);
/// `MSG_WAITFORONE` makes every call after the first non-blocking; the time limit is
/// looked at after each entry (as the kernel does, so it does not bound a wait). An error
/// ends the loop: returned if no entry was filled, else the count of entries is (the
/// kernel keeps such an error for the next call; here the next call meets it again).
///
/// # Safety
/// As the C library's `recvmmsg`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    vec: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if !TABLE.maybe_tracked(fd) || data_of(fd).is_none() {
        return call_real!(recvmmsg(fd, vec, vlen, flags, timeout));
    }
    if vec.is_null() && vlen > 0 {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller's time limit, if any.
    let limit = (!timeout.is_null()).then(|| unsafe { *timeout });
    if limit.is_some_and(|t| t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec)) {
        return fail(libc::EINVAL);
    }
    let end = limit.map(|t| {
        std::time::Instant::now() + std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    });
    let mut flags_now = flags & !libc::MSG_WAITFORONE;
    let one = |entry: &mut libc::mmsghdr| {
        // SAFETY: the caller's message header, passed on.
        let n = unsafe { recvmsg(fd, &mut entry.msg_hdr, flags_now) };
        if n < 0 {
            return None;
        }
        entry.msg_len = n as libc::c_uint;
        if flags & libc::MSG_WAITFORONE != 0 {
            flags_now |= libc::MSG_DONTWAIT;
        }
        let Some(e) = end else {
            return Some(true);
        };
        // As the kernel, the time left goes back to the caller.
        let left = e.saturating_duration_since(std::time::Instant::now());
        // SAFETY: the caller's time limit (non-null: `end` came from it).
        unsafe {
            (*timeout).tv_sec = left.as_secs() as libc::time_t;
            (*timeout).tv_nsec = libc::c_long::from(left.subsec_nanos());
        }
        Some(!left.is_zero())
    };
    // SAFETY: the caller's `vlen` headers.
    unsafe { each_mmsg(vec, vlen, one) }
}

/// The loop of `recvmmsg` and `sendmmsg` over the caller's `vlen` headers at `vec` (at
/// most `UIO_MAXIOV`, as the kernel caps it): `one` handles an entry and says whether to
/// go on (`Some(false)`: this entry counts, stop; `None`: it failed, with `errno` set).
/// Returns the count of entries handled, or -1 if the first one failed; a success leaves
/// `errno` as the program had it (a later entry's failure is not reported now).
///
/// # Safety
/// `vec` points to `vlen` valid headers (it is not null when `vlen > 0`).
unsafe fn each_mmsg(
    vec: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    mut one: impl FnMut(&mut libc::mmsghdr) -> Option<bool>,
) -> c_int {
    let entry_errno = errno();
    let mut done: libc::c_uint = 0;
    while done < vlen.min(libc::UIO_MAXIOV as libc::c_uint) {
        // SAFETY: entry `done` of the caller's `vlen` headers.
        let Some(go_on) = one(unsafe { &mut *vec.add(done as usize) }) else {
            break;
        };
        done += 1;
        if !go_on {
            break;
        }
    }
    if done == 0 && vlen > 0 {
        return -1; // errno from the failed call
    }
    set_errno(entry_errno);
    done as c_int
}

/// `sendmmsg`: on an SMC-D descriptor, one [`sendmsg`] per message header, as the
/// kernel's `__sys_sendmmsg` (`net/socket.c`): each entry's `msg_len` gets what its call
/// wrote; a short write or an error ends the loop; the count of entries sent is returned,
/// or the error if none was.
///
/// # Safety
/// As the C library's `sendmmsg`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    vec: *mut libc::mmsghdr,
    vlen: libc::c_uint,
    flags: c_int,
) -> c_int {
    if !vec.is_null() {
        // The kernel sends at most `UIO_MAXIOV` entries (`net/socket.c` `__sys_sendmmsg`).
        for i in 0..(vlen as usize).min(1024) {
            // SAFETY: the caller's `vlen` message headers.
            let m = unsafe { &(*vec.add(i)).msg_hdr };
            // SAFETY: the caller's control buffer of `msg_controllen` bytes.
            if !unsafe { rights_handed_over(m) } {
                return -1;
            }
        }
    }
    if !TABLE.maybe_tracked(fd) || data_of(fd).is_none() {
        return call_real!(sendmmsg(fd, vec, vlen, flags));
    }
    if vec.is_null() && vlen > 0 {
        return fail(libc::EFAULT);
    }
    let one = |entry: &mut libc::mmsghdr| {
        // SAFETY: the caller's iovecs, only their lengths read.
        let want: usize =
            unsafe { iovecs(entry.msg_hdr.msg_iov, entry.msg_hdr.msg_iovlen as c_int) }
                .iter()
                .map(|v| v.iov_len)
                .sum();
        // SAFETY: the caller's message header, passed on.
        let n = unsafe { sendmsg(fd, &entry.msg_hdr, flags) };
        if n < 0 {
            return None;
        }
        entry.msg_len = n as libc::c_uint;
        Some(n as usize >= want)
    };
    // SAFETY: the caller's `vlen` headers.
    unsafe { each_mmsg(vec, vlen, one) }
}

// ------------------------------------------------------------------------ socket calls

/// `shutdown`.
///
/// # Safety
/// As the C library's `shutdown`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(shutdown(fd, how));
    }
    if let Some(e) = connecting_of(fd) {
        let Entry::Connecting(c) = &*e else {
            return fail(libc::ENOTCONN);
        };
        if c.side() == crate::connecting::Side::Client {
            return fail(libc::ENOTCONN);
        }
        // An accepted connection whose handshake is under way: it ends first (bounded by
        // the handshake's limits), then the call goes where the connection went.
        if let Err(e) = settle(c, fd, false) {
            return fail(e);
        }
    }
    guarded(|| match smc_of(fd) {
        Some(e) => match smc!(e).shutdown(how) {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
        None => call_real!(shutdown(fd, how)),
    })
}

/// `getsockopt`: on an SMC-D descriptor, answered by its TCP socket.
///
/// # Safety
/// As the C library's `getsockopt`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(getsockopt(fd, level, name, val, len));
    }
    guarded(|| match TABLE.get(fd).as_deref() {
        Some(Entry::Smc(s)) => call_real!(getsockopt(s.tcp_fd(), level, name, val, len)),
        Some(Entry::Connecting(c)) if level == libc::SOL_SOCKET && name == libc::SO_ERROR => {
            if val.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: the caller's option length.
            let room = unsafe { *len } as usize;
            if room < size_of::<c_int>() {
                return fail(libc::EINVAL);
            }
            // SAFETY: the caller's option value holds an `int` (checked length).
            unsafe {
                std::ptr::write_unaligned(val.cast::<c_int>(), c.take_error());
                *len = size_of::<c_int>() as socklen_t;
            }
            0
        }
        Some(Entry::Connecting(c)) => match c.get_option(level, name) {
            // An option the handshake changes while it runs: the program's value.
            Some(v) => {
                if val.is_null() || len.is_null() {
                    return fail(libc::EFAULT);
                }
                // SAFETY: the caller's option length.
                let room = unsafe { *len } as usize;
                let n = room.min(v.len());
                // SAFETY: the caller's value has room for `room` bytes; `n` is no more.
                unsafe {
                    std::ptr::copy_nonoverlapping(v.as_ptr(), val.cast::<u8>(), n);
                    *len = n as socklen_t;
                }
                0
            }
            None => call_real!(getsockopt(c.tcp_fd(), level, name, val, len)),
        },
        _ => call_real!(getsockopt(fd, level, name, val, len)),
    })
}

/// `setsockopt`: on an SMC-D descriptor, applied to its TCP socket; `SO_RCVTIMEO` and
/// `SO_SNDTIMEO` also limit the SMC-D reads and writes.
///
/// # Safety
/// As the C library's `setsockopt`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(setsockopt(fd, level, name, val, len));
    }
    guarded(|| match smc_of(fd) {
        Some(e) => {
            let s = smc!(e);
            let r = call_real!(setsockopt(s.tcp_fd(), level, name, val, len));
            let timeo = level == libc::SOL_SOCKET
                && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO);
            if r == 0 && timeo {
                // Blocking SMC-D reads and writes wait in the kernel on A (see
                // `SmcFd::wait_readable`): the same limit there gives TCP's `EAGAIN` when
                // it expires and `EINTR` instead of a restart under `SA_RESTART`.
                let saved = errno();
                let _: c_int = call_real!(setsockopt(fd, level, name, val, len));
                set_errno(saved);
            }
            if r == 0 && timeo && !val.is_null() && len as usize >= size_of::<libc::timeval>() {
                // SAFETY: the caller's option value holds a `timeval` (checked length).
                let tv: libc::timeval = unsafe { std::ptr::read_unaligned(val.cast()) };
                let t = std::time::Duration::new(
                    tv.tv_sec.max(0) as u64,
                    (tv.tv_usec.clamp(0, 999_999) * 1000) as u32,
                );
                s.set_timeout(name == libc::SO_RCVTIMEO, Some(t));
            }
            r
        }
        None => match connecting_of(fd).as_deref() {
            // While the connection is set up, options go to the TCP socket, and again to
            // the result at the end (`Connecting::set_option`); the lock orders the two.
            Some(Entry::Connecting(c)) => {
                let st = c.lock();
                if *st != crate::connecting::State::Pending {
                    drop(st);
                    if connecting_of(fd).is_some() {
                        // Failed: the TCP socket, as before the end.
                        return call_real!(setsockopt(c.tcp_fd(), level, name, val, len));
                    }
                    // It ended meanwhile: the number has its result.
                    // SAFETY: the caller's arguments, as for this call.
                    return unsafe { setsockopt(fd, level, name, val, len) };
                }
                // SAFETY: the caller's option, as for `setsockopt`.
                unsafe { c.set_option(&st, level, name, val, len) }
            }
            _ => call_real!(setsockopt(fd, level, name, val, len)),
        },
    })
}

/// `getsockname`: on an SMC-D descriptor, its TCP socket's address.
///
/// # Safety
/// As the C library's `getsockname`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(getsockname(fd, addr, len));
    }
    guarded(|| match TABLE.get(fd).as_deref() {
        Some(Entry::Smc(s)) => call_real!(getsockname(s.tcp_fd(), addr, len)),
        Some(Entry::Connecting(c)) => call_real!(getsockname(c.tcp_fd(), addr, len)),
        // The descriptor holds a stand-in socket (`crate::fork`), whose own address would
        // be `0.0.0.0:0`: the connection's, as the child's TCP socket would give.
        Some(Entry::Inherited(Inherited { local: Some(a), .. }))
            if !addr.is_null() && !len.is_null() =>
        {
            let (c, c_len) = net::to_c(*a);
            // SAFETY: the caller's `len`, checked non-null; `addr` has room for that many
            // bytes (the contract of `getsockname`), of which at most `c_len` are written,
            // from our own `sockaddr_storage` of at least that size.
            unsafe {
                let room = (*len).min(c_len) as usize;
                std::ptr::copy_nonoverlapping((&raw const c).cast::<u8>(), addr.cast::<u8>(), room);
                *len = c_len;
            }
            0
        }
        _ => call_real!(getsockname(fd, addr, len)),
    })
}

/// `getpeername`: on an SMC-D descriptor, its TCP socket's peer.
///
/// # Safety
/// As the C library's `getpeername`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !TABLE.maybe_tracked(fd) {
        return call_real!(getpeername(fd, addr, len));
    }
    guarded(|| match TABLE.get(fd).as_deref() {
        Some(Entry::Smc(s)) => call_real!(getpeername(s.tcp_fd(), addr, len)),
        // An accepted connection has its peer from the start, as TCP's.
        Some(Entry::Connecting(c)) if c.side() == crate::connecting::Side::Server => {
            call_real!(getpeername(c.tcp_fd(), addr, len))
        }
        Some(Entry::Connecting(_)) => fail(libc::ENOTCONN),
        // The first call of a server's re-executed child (sshd): it ends at once, so
        // the line that says why is printed here.
        Some(Entry::Inherited(i)) => inherited_fail(fd, i),
        _ => call_real!(getpeername(fd, addr, len)),
    })
}

/// `ioctl` (declared with one pointer argument: on x86-64 and AArch64 Linux a variadic
/// argument travels where a fixed one does). `FIONREAD` on an SMC-D descriptor counts the
/// bytes readable over SMC-D; everything else goes to the real call.
///
/// # Safety
/// As the C library's `ioctl`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if TABLE.maybe_tracked(fd) && req == libc::FIONBIO && !arg.is_null() {
        let r: c_int = call_real!(ioctl(fd, req, arg));
        if r == 0 {
            let saved = errno();
            if let Some(e) = smc_of(fd) {
                // SAFETY: FIONBIO's argument is the caller's `int` (the real call read it).
                let on = unsafe { std::ptr::read_unaligned(arg.cast::<c_int>()) } != 0;
                smc!(e).set_nonblocking(on);
            }
            set_errno(saved);
        }
        return r;
    }
    if !TABLE.maybe_tracked(fd) || req != libc::FIONREAD {
        return call_real!(ioctl(fd, req, arg));
    }
    guarded(|| {
        let entry = match connecting_of(fd) {
            // A connection being set up: nothing readable (A's records, if the peer's
            // came already, are no data), unless it ends now (see `Connecting::settle`).
            Some(e) => match &*e {
                Entry::Connecting(c) => settle(c, fd, true).unwrap_or(None),
                _ => None,
            },
            None => smc_of(fd),
        };
        let n = match (entry, connecting_of(fd)) {
            (Some(e), _) if matches!(*e, Entry::Smc(_)) => smc!(e).readable(fd),
            (_, Some(_)) => 0,
            _ => return call_real!(ioctl(fd, req, arg)),
        };
        if arg.is_null() {
            return fail(libc::EFAULT);
        }
        let n = c_int::try_from(n).unwrap_or(c_int::MAX);
        // SAFETY: FIONREAD's argument is the caller's `int`.
        unsafe { std::ptr::write_unaligned(arg.cast::<c_int>(), n) };
        0
    })
}

// ------------------------------------------------------------------------ descriptors

/// Records `new` as a duplicate of `old` (after a successful `dup*`); what `new` referred
/// to before is dropped here, outside the table's lock.
fn after_dup(old: c_int, new: c_int) {
    if new >= 0
        && old != new
        && (TABLE.maybe_tracked(old) || TABLE.maybe_tracked(new))
        && crate::fork::owner()
    {
        let saved = errno();
        drop(TABLE.alias(old, new));
        set_errno(saved);
    }
}

/// `close`: the last descriptor of an SMC-D connection ends it (the peer reads end of
/// stream); the last one of a registered listener withdraws its registration.
///
/// # Safety
/// As the C library's `close`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if crate::busy::SPIN_SETS.maybe(fd) {
        crate::busy::SPIN_SETS.set(fd, false); // an epoll set's number: it may be reused
    }
    if !TABLE.maybe_tracked(fd) && !EPOLL_FDS.maybe(fd) {
        return call_real!(close(fd));
    }
    if !crate::fork::owner() {
        // A vfork child (or a clone without fork handlers) shares or copies the parent's
        // table: it must not change it. Its descriptor goes, the parent's stays.
        return call_real!(close(fd));
    }
    guarded(|| {
        if EPOLL_FDS.maybe(fd) {
            epoll_forget(fd, None);
        }
        // A connect under way on this descriptor ends first or sees the close: its lock
        // orders the two (see `crate::connecting`).
        let connecting = connecting_of(fd);
        // Only the last descriptor of the connect ends it (a `dup` of it carries on); the
        // lock is held over the close either way, so that the connect's end never puts its
        // result on a number closed meanwhile.
        let last = connecting
            .as_ref()
            .is_none_or(|e| TABLE.descriptors_of(e).len() <= 1);
        let order = connecting.as_deref().and_then(|e| match e {
            Entry::Connecting(c) if last => Some(c.closing()),
            Entry::Connecting(c) => Some(c.lock()),
            _ => None,
        });
        let entry = TABLE.remove(fd);
        let r: c_int = call_real!(close(fd));
        let saved = errno();
        drop(order);
        drop(entry);
        drop(connecting);
        set_errno(saved);
        r
    })
}

/// The C library's `syscall`, found on first use with `dlsym` and kept in an atomic (not
/// in [`real`]'s `OnceLock`: the standard library's futex waits go through `syscall`, so
/// a thread waiting for that lock's set-up would come back here).
pub(crate) fn real_syscall() -> Option<RealSyscall> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static P: AtomicUsize = AtomicUsize::new(0);
    let mut p = P.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: `dlsym` with RTLD_NEXT and a NUL-terminated name; null or the symbol.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) } as usize;
        P.store(p, Ordering::Release);
    }
    // SAFETY: the C library's `syscall`, called with six register arguments as a
    // variadic call passes them on x86-64 and AArch64 Linux.
    (p != 0).then(|| unsafe { std::mem::transmute::<usize, RealSyscall>(p) })
}

pub(crate) type RealSyscall = unsafe extern "C" fn(
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
) -> libc::c_long;

/// `syscall` (declared with six fixed arguments: on x86-64 and AArch64 Linux variadic
/// integer arguments travel where fixed ones do; unused ones are passed on unread, as
/// the C library's own `syscall` does). `SYS_close` goes to [`close`]: libuv (Node.js)
/// closes its sockets with `syscall(SYS_close, fd)` to avoid the cancellation point,
/// and a close the library does not see would leave the connection open (the peer never
/// reads its end) and the number tracked (the next socket on it fails with `EISCONN`).
/// Every other number goes to the real call.
///
/// # Safety
/// As the C library's `syscall`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn syscall(
    n: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    if n == libc::SYS_close {
        let fd = a1 as c_int;
        if TABLE.maybe_tracked(fd) || EPOLL_FDS.maybe(fd) || crate::busy::SPIN_SETS.maybe(fd) {
            // SAFETY: `close` of the caller's descriptor, as it asked.
            return libc::c_long::from(unsafe { close(fd) });
        }
    }
    match real_syscall() {
        // SAFETY: the caller's arguments, passed on unchanged.
        Some(f) => unsafe { f(n, a1, a2, a3, a4, a5, a6) },
        None => libc::c_long::from(fail::<c_int>(libc::ENOSYS)),
    }
}

/// `dup`.
///
/// # Safety
/// As the C library's `dup`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let Ok(_call) = call_on(fd) else {
        return fail(libc::EAGAIN);
    };
    let new: c_int = call_real!(dup(fd));
    if TABLE.maybe_tracked(fd) {
        guarded(|| {
            after_dup(fd, new);
            0
        });
    }
    new
}

/// `dup2`.
///
/// # Safety
/// As the C library's `dup2`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let (Ok(_a), Ok(_b)) = (call_on(old), call_on(new)) else {
        return fail(libc::EAGAIN);
    };
    let r: c_int = call_real!(dup2(old, new));
    if r >= 0 && (TABLE.maybe_tracked(old) || TABLE.maybe_tracked(new)) {
        guarded(|| {
            after_dup(old, r);
            0
        });
    }
    r
}

/// `dup3`.
///
/// # Safety
/// As the C library's `dup3`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let (Ok(_a), Ok(_b)) = (call_on(old), call_on(new)) else {
        return fail(libc::EAGAIN);
    };
    let r: c_int = call_real!(dup3(old, new, flags));
    if r >= 0 && (TABLE.maybe_tracked(old) || TABLE.maybe_tracked(new)) {
        guarded(|| {
            after_dup(old, r);
            0
        });
    }
    r
}

fn fcntl_common(
    f: Option<unsafe extern "C" fn(c_int, c_int, ...) -> c_int>,
    fd: c_int,
    cmd: c_int,
    arg: c_ulong,
) -> c_int {
    let Some(f) = f else {
        return fail(libc::ENOSYS);
    };
    let tracked_cmd = matches!(cmd, libc::F_SETFL | libc::F_DUPFD | libc::F_DUPFD_CLOEXEC);
    let Ok(_call) = (if tracked_cmd { call_on(fd) } else { Ok(None) }) else {
        return fail(libc::EAGAIN);
    };
    // SAFETY: the caller's arguments, passed on unchanged.
    let r = unsafe { f(fd, cmd, arg) };
    if r >= 0 && cmd == libc::F_SETFL && TABLE.maybe_tracked(fd) {
        let saved = errno();
        if let Some(e) = smc_of(fd) {
            smc!(e).set_nonblocking(arg as c_int & libc::O_NONBLOCK != 0);
        }
        set_errno(saved);
    }
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) && TABLE.maybe_tracked(fd) {
        guarded(|| {
            after_dup(fd, r);
            0
        });
    }
    r
}

/// `fcntl` (declared with one integer argument, as `ioctl`): `F_DUPFD` and
/// `F_DUPFD_CLOEXEC` of an SMC-D descriptor give another descriptor of the connection.
///
/// # Safety
/// As the C library's `fcntl`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(real().fcntl, fd, cmd, arg)
}

/// `fcntl64` (what `fcntl` is with `_FILE_OFFSET_BITS=64`).
///
/// # Safety
/// As the C library's `fcntl64`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(real().fcntl64.or(real().fcntl), fd, cmd, arg)
}

/// `epoll_ctl`: registrations of sockets that may still become SMC-D (stream sockets
/// without a peer yet) are recorded, so that a socket added to an epoll set before its
/// `connect` keeps its registration when it becomes SMC-D (see `install`).
///
/// # Safety
/// As the C library's `epoll_ctl`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    // A set-up under way keeps its registrations on A (SMC-D) or moves them with the
    // number to the TCP socket (a decline) when it ends, under its lock
    // (`crate::connecting`): the call and its record are made under that lock too, so that
    // they come before the end (recorded, then kept or moved) or after it (on the file
    // that has the number then), never on A between a move and its replacement (where the
    // registration would go with A).
    let Ok(_call) = call_on(fd) else {
        return fail(libc::EAGAIN);
    };
    let under_way = if TABLE.maybe_tracked(fd) {
        connecting_of(fd)
    } else {
        None
    };
    let order = under_way.as_deref().and_then(|e| match e {
        Entry::Connecting(c) => Some(c.lock()),
        _ => None,
    });
    let connecting = order
        .as_deref()
        .is_some_and(|st| *st == crate::connecting::State::Pending);
    if connecting && op != libc::EPOLL_CTL_DEL {
        if let Some(Entry::Connecting(c)) = under_way.as_deref() {
            c.open_gate();
        }
    }
    let r: c_int = call_real!(epoll_ctl(epfd, op, fd, ev));
    if r != 0 {
        return r;
    }
    if TABLE.maybe_tracked(fd) && !connecting {
        if op == libc::EPOLL_CTL_ADD {
            adopt_listener(fd);
        }
        if op != libc::EPOLL_CTL_DEL {
            if let Some(e) = smc_of(fd) {
                guarded(|| {
                    smc!(e).mark_in_epoll(fd);
                    0
                });
            }
        }
        if op != libc::EPOLL_CTL_DEL && !ev.is_null() {
            // SAFETY: the caller's event, read once.
            let events = unsafe { (*ev).events };
            guarded(|| {
                spin_for(epfd, fd, events);
                0
            });
        }
        return r;
    }
    if op == libc::EPOLL_CTL_DEL {
        if EPOLL_FDS.maybe(fd) {
            guarded(|| {
                epoll_forget(fd, Some(epfd));
                0
            });
        }
        return r;
    }
    if ev.is_null() {
        return r;
    }
    let saved = errno();
    if connecting || (net::is_inet_stream(fd) && net::peer_addr(fd).is_none()) {
        // SAFETY: the caller's event, read once.
        let e = unsafe { *ev };
        guarded(|| {
            let mut g = epoll_regs();
            let v = g.get_or_insert_with(HashMap::new).entry(fd).or_default();
            match v.iter_mut().find(|(x, _)| *x == epfd) {
                Some(slot) => slot.1 = e,
                None => v.push((epfd, e)),
            }
            EPOLL_FDS.set(fd, true);
            0
        });
    }
    set_errno(saved);
    r
}

/// Whether `fd` is an SMC-D descriptor whose peer rings its doorbell (busy polling spins
/// only for data on such descriptors: `busy`).
fn rings_peer(fd: c_int) -> bool {
    // A signal handler's look that would wait for the table's lock: no (it does not spin).
    let Ok(Some(_call)) = call_on(fd) else {
        return false;
    };
    matches!(TABLE.get(fd).as_deref(), Some(Entry::Smc(s)) if s.rings_peer())
}

/// Marks the epoll set `epfd` as one whose waits spin (`busy::SPIN_SETS`) if `fd`, now
/// registered in it with `events`, is an SMC-D descriptor whose peer rings its doorbell,
/// registered for `EPOLLIN`.
fn spin_for(epfd: c_int, fd: c_int, events: u32) {
    if events & libc::EPOLLIN as u32 != 0 && rings_peer(fd) {
        crate::busy::SPIN_SETS.set(epfd, true);
    }
}

/// `epoll_wait`: with busy polling on ([`crate::config::ENV_BUSY_POLL`]) and SMC-D
/// connections in the process, looks without waiting for a while before it sleeps (see
/// `busy`); otherwise the C library's call.
///
/// # Safety
/// As the C library's `epoll_wait`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let timeout = match crate::busy::budget(timeout, || crate::busy::SPIN_SETS.maybe(epfd)) {
        None => timeout,
        Some(b) => {
            match crate::busy::spin(b, timeout, || call_real!(epoll_wait(epfd, events, max, 0))) {
                crate::busy::Spun::Done(n) => return n,
                crate::busy::Spun::Interrupted => return fail(libc::EINTR),
                crate::busy::Spun::Sleep { timeout_ms } => timeout_ms,
            }
        }
    };
    call_real!(epoll_wait(epfd, events, max, timeout))
}

/// `epoll_pwait`: as [`epoll_wait`] without a signal mask (the same call); with one, the
/// C library's call (no spin: the mask changes which signals end the wait).
///
/// # Safety
/// As the C library's `epoll_pwait`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const libc::sigset_t,
) -> c_int {
    if sigmask.is_null() {
        // SAFETY: the caller's arguments, under `epoll_wait`'s contract (the same call).
        return unsafe { epoll_wait(epfd, events, max, timeout) };
    }
    call_real!(epoll_pwait(epfd, events, max, timeout, sigmask))
}

/// `poll`: as [`epoll_wait`] (busy polling, see `busy`); otherwise the C library's call.
///
/// # Safety
/// As the C library's `poll`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the caller's array of `n` entries.
    unsafe { settle_polled(fds, n) };
    let reads_smc = || {
        (0..n as usize).any(|i| {
            // SAFETY: the caller's array of `n` entries, read one by one.
            let p = unsafe { *fds.add(i) };
            p.events & libc::POLLIN != 0 && rings_peer(p.fd)
        })
    };
    let timeout = match crate::busy::budget(timeout, reads_smc) {
        None => timeout,
        Some(b) => match crate::busy::spin(b, timeout, || call_real!(poll(fds, n, 0))) {
            crate::busy::Spun::Done(k) => return k,
            crate::busy::Spun::Interrupted => return fail(libc::EINTR),
            crate::busy::Spun::Sleep { timeout_ms } => timeout_ms,
        },
    };
    call_real!(poll(fds, n, timeout))
}

/// Settles the SMC-D descriptors that `fds` (`n` entries) polls for input
/// ([`SmcFd::settle`]): records of data that blocking reads took before the records came
/// must not make them poll readable.
///
/// # Safety
/// `fds` is the caller's array of `n` entries.
unsafe fn settle_polled(fds: *const libc::pollfd, n: libc::nfds_t) {
    for i in 0..n as usize {
        // SAFETY: the caller's array of `n` entries, read one by one.
        let p = unsafe { *fds.add(i) };
        if p.events & libc::POLLIN != 0 {
            settle_fd(p.fd);
        } else {
            open_gate_of(p.fd);
        }
    }
}

/// A wait on `fd` is a use of it: an accepted connection's set-up under way may answer its
/// client (`Connecting::open_gate`).
fn open_gate_of(fd: c_int) {
    if !TABLE.maybe_tracked(fd) {
        return;
    }
    if let Some(e) = connecting_of(fd) {
        if let Entry::Connecting(c) = &*e {
            c.open_gate();
        }
    }
}

/// [`SmcFd::settle`] of `fd` if it is an SMC-D descriptor (an accepted connection's set-up
/// under way may answer its client: `Connecting::open_gate`).
fn settle_fd(fd: c_int) {
    // Untracked, or a signal handler's `poll` that would wait for the library's locks:
    // nothing to settle (the descriptor may then poll readable once with nothing to read).
    let Ok(Some(_call)) = call_on(fd) else {
        return;
    };
    // One lookup: this runs for every polled SMC-D descriptor on every `poll`.
    let Some(e) = TABLE.get(fd) else {
        return;
    };
    match &*e {
        Entry::Connecting(c) => c.open_gate(),
        Entry::Smc(s) => {
            guarded(|| {
                s.settle(fd);
                0
            });
        }
        _ => {}
    }
}

/// [`settle_polled`] for the read set `rd` of a `select` of `nfds` descriptors.
///
/// # Safety
/// `rd` is null or the caller's set.
unsafe fn settle_selected(nfds: c_int, rd: *const libc::fd_set) {
    if rd.is_null() {
        return;
    }
    for fd in 0..nfds.clamp(0, libc::FD_SETSIZE as c_int) {
        // SAFETY: the caller's set, tested below FD_SETSIZE.
        if TABLE.maybe_tracked(fd) && unsafe { libc::FD_ISSET(fd, rd) } {
            settle_fd(fd);
        }
    }
}

/// `__poll_chk` (`poll` in programs built with `_FORTIFY_SOURCE`, memcached's): as
/// [`poll`]; an array shorter than `n` entries goes to the C library's check (which ends
/// the program).
///
/// # Safety
/// As the C library's `__poll_chk`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if (fdslen / size_of::<libc::pollfd>()) < n as usize {
        return call_real!(__poll_chk(fds, n, timeout, fdslen));
    }
    // SAFETY: the caller's array, of at least `n` entries (checked above).
    unsafe { poll(fds, n, timeout) }
}

/// `__ppoll_chk`: as [`ppoll`], with `__poll_chk`'s length check.
///
/// # Safety
/// As the C library's `__ppoll_chk`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    fdslen: size_t,
) -> c_int {
    if (fdslen / size_of::<libc::pollfd>()) < n as usize {
        return call_real!(__ppoll_chk(fds, n, ts, sigmask, fdslen));
    }
    // SAFETY: the caller's array, of at least `n` entries (checked above).
    unsafe { ppoll(fds, n, ts, sigmask) }
}

/// `ppoll`: the C library's call, after [`settle_polled`] (no busy polling).
///
/// # Safety
/// As the C library's `ppoll`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: the caller's array of `n` entries.
    unsafe { settle_polled(fds, n) };
    call_real!(ppoll(fds, n, ts, sigmask))
}

/// `pselect`: the C library's call, after [`settle_selected`] (no busy polling).
///
/// # Safety
/// As the C library's `pselect`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: the caller's read set, if any.
    unsafe { settle_selected(nfds, rd) };
    call_real!(pselect(nfds, rd, wr, ex, ts, sigmask))
}

/// `select`: as [`epoll_wait`] (busy polling, see `busy`): each look works on copies of
/// the caller's sets, which get the result of the look that found something; a spin that
/// found nothing leaves them as they were for the kernel's wait, with `timeout` less the
/// spin (Linux updates it too). Otherwise the C library's call.
///
/// # Safety
/// As the C library's `select`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let ms = if tv.is_null() {
        -1
    } else {
        // SAFETY: the caller's timeout, read once.
        let t = unsafe { *tv };
        if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
            return call_real!(select(nfds, rd, wr, ex, tv)); // EINVAL, as the kernel's
        }
        let ms = (t.tv_sec as i128) * 1000 + (t.tv_usec as i128 + 999) / 1000;
        ms.min(c_int::MAX as i128) as c_int
    };
    // SAFETY: the caller's read set, if any.
    unsafe { settle_selected(nfds, rd) };
    let reads_smc = || {
        // SAFETY: the caller's read set, tested bit by bit below `nfds` (at most
        // FD_SETSIZE, the size of a set).
        !rd.is_null()
            && (0..nfds.clamp(0, libc::FD_SETSIZE as c_int))
                .any(|fd| unsafe { libc::FD_ISSET(fd, rd) } && rings_peer(fd))
    };
    let Some(b) = crate::busy::budget(ms, reads_smc) else {
        return call_real!(select(nfds, rd, wr, ex, tv));
    };
    // SAFETY: copies of the caller's sets (each a plain bit array, or absent).
    let copy = |s: *mut libc::fd_set| (!s.is_null()).then(|| unsafe { *s });
    let (r0, w0, e0) = (copy(rd), copy(wr), copy(ex));
    let start = std::time::Instant::now();
    let spun = crate::busy::spin(b, ms, || {
        let (mut r, mut w, mut e) = (r0, w0, e0);
        let p =
            |s: &mut Option<libc::fd_set>| s.as_mut().map_or(std::ptr::null_mut(), |s| s as *mut _);
        let mut zero = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let k: c_int = call_real!(select(nfds, p(&mut r), p(&mut w), p(&mut e), &mut zero));
        if k != 0 {
            for (out, got) in [(rd, r), (wr, w), (ex, e)] {
                if let Some(got) = got {
                    // SAFETY: the caller's set (present: `got` is its copy), written once.
                    unsafe { *out = got };
                }
            }
        }
        k
    });
    match spun {
        crate::busy::Spun::Done(k) => k,
        crate::busy::Spun::Interrupted => fail(libc::EINTR),
        crate::busy::Spun::Sleep { .. } => {
            if !tv.is_null() {
                // SAFETY: the caller's timeout, less the spin (not below zero).
                unsafe {
                    let left =
                        std::time::Duration::new((*tv).tv_sec as u64, (*tv).tv_usec as u32 * 1000)
                            .saturating_sub(start.elapsed());
                    (*tv).tv_sec = left.as_secs() as libc::time_t;
                    (*tv).tv_usec = left.subsec_micros() as libc::suseconds_t;
                }
            }
            call_real!(select(nfds, rd, wr, ex, tv))
        }
    }
}

// ------------------------------------------------------------------------ connections

/// Sets `fd`'s file status flags (`F_SETFL`: `O_NONBLOCK` among them).
pub(crate) fn set_flags(fd: c_int, flags: c_int) {
    if let Some(f) = real().fcntl {
        // SAFETY: F_SETFL with an integer argument.
        unsafe { f(fd, libc::F_SETFL, flags) };
    }
}

pub(crate) fn get_flags(fd: c_int) -> c_int {
    match real().fcntl {
        // SAFETY: F_GETFL takes no argument.
        Some(f) => unsafe { f(fd, libc::F_GETFL, 0) },
        None => 0,
    }
}

/// The socket options the handshake changes, to put back on a socket that stays TCP.
struct SavedOpts {
    rcvtimeo: Option<std::time::Duration>,
    nodelay: bool,
}

fn save_opts(tcp: &std::net::TcpStream) -> SavedOpts {
    SavedOpts {
        rcvtimeo: tcp.read_timeout().ok().flatten(),
        nodelay: tcp.nodelay().unwrap_or(false),
    }
}

fn restore_opts(fd: c_int, o: &SavedOpts) {
    // SAFETY: borrowed for these two calls only; `ManuallyDrop` keeps it from closing `fd`.
    let tcp = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let _ = tcp.set_read_timeout(o.rcvtimeo);
    let _ = tcp.set_nodelay(o.nodelay);
}

/// Puts the open file of `new` on the application's descriptor `app` (`dup3`, keeping
/// `app`'s close-on-exec flag), with the registrations of `app` in `epoll` sets: those the
/// library recorded (made before `connect`, or while a non-blocking one was under way)
/// are taken off the old file (only those that really exist: the DEL must succeed) and
/// put on the new one. `still_recorded`: the library keeps recording them (the new file is
/// the doorbell A of a connection being set up, which they leave again if it declines).
pub(crate) fn put_on(app: c_int, new: c_int, still_recorded: bool) -> Result<(), c_int> {
    let cloexec = match real().fcntl {
        // SAFETY: F_GETFD takes no argument.
        Some(f) => (unsafe { f(app, libc::F_GETFD, 0) } & libc::FD_CLOEXEC) != 0,
        None => false,
    };
    let regs = if EPOLL_FDS.maybe(app) {
        let r = epoll_regs().as_mut().and_then(|m| m.remove(&app));
        EPOLL_FDS.set(app, false);
        r.unwrap_or_default()
    } else {
        Vec::new()
    };
    let moved: Vec<(c_int, libc::epoll_event)> = regs
        .into_iter()
        .filter(|(epfd, _)| {
            let r: c_int = call_real!(epoll_ctl(
                *epfd,
                libc::EPOLL_CTL_DEL,
                app,
                std::ptr::null_mut()
            ));
            r == 0
        })
        .collect();
    let r: c_int = call_real!(dup3(new, app, if cloexec { libc::O_CLOEXEC } else { 0 }));
    let e = errno();
    for (epfd, mut ev) in &moved {
        let _: c_int = call_real!(epoll_ctl(*epfd, libc::EPOLL_CTL_ADD, app, &mut ev));
        spin_for(*epfd, app, ev.events);
    }
    if still_recorded && !moved.is_empty() {
        epoll_regs()
            .get_or_insert_with(HashMap::new)
            .insert(app, moved);
        EPOLL_FDS.set(app, true);
    }
    if r < 0 {
        return Err(e);
    }
    Ok(())
}

/// Puts the SMC-D `stream` (TCP socket on `tcp`) behind the application's `app`, which
/// holds the connection's doorbell A already (`bell`: its other end, A's identity, the
/// peer's doorbell if the board passed it, the quiet pages: see `crate::connecting`).
pub(crate) fn install(
    app: c_int,
    stream: Stream,
    tcp: c_int,
    bell: crate::smc::DoorbellParts,
) -> Result<(), c_int> {
    let smc = SmcFd::new(stream, tcp, bell)?;
    // A's mode is the program's (its `fcntl`s went to A since the set-up began): never set
    // here. Setting a mode read earlier undid a change the program made meanwhile (a
    // client that made its socket blocking as the set-up ended read `EAGAIN` from a
    // blocking read: test `a_pollin_wait_begun_during_connect_wakes_for_the_greeting`).
    smc.set_nonblocking(crate::smc::fd_nonblocking(app));
    let entry = Arc::new(Entry::Smc(KeepsErrno::new(smc)));
    drop(TABLE.insert(app, entry.clone()));
    keep_epoll_regs(app);
    copy_timeouts(tcp, app);
    smc!(entry).ring();
    Ok(())
}

/// The registrations of `app` in `epoll` sets that the library recorded while its
/// connection was set up stay where they are (on A, which SMC-D keeps on the number): the
/// record is dropped, and each set is marked for busy polling if it should be
/// ([`spin_for`]).
pub(crate) fn keep_epoll_regs(app: c_int) {
    if !EPOLL_FDS.maybe(app) {
        return;
    }
    let regs = epoll_regs().as_mut().and_then(|m| m.remove(&app));
    EPOLL_FDS.set(app, false);
    let regs = regs.unwrap_or_default();
    if !regs.is_empty() {
        if let Some(e) = smc_of(app) {
            smc!(e).mark_in_epoll(app);
        }
    }
    for (epfd, ev) in regs {
        spin_for(epfd, app, ev.events);
    }
}

/// Copies `SO_RCVTIMEO` and `SO_SNDTIMEO` from the socket `from` to `to`.
pub(crate) fn copy_timeouts(from: c_int, to: c_int) {
    for name in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        copy_timeout(from, to, name);
    }
}

/// Copies the time limit `name` (`SO_RCVTIMEO` or `SO_SNDTIMEO`) from the socket `from`
/// to `to`, none included (`to` may hold one it must lose).
pub(crate) fn copy_timeout(from: c_int, to: c_int, name: c_int) {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = size_of::<libc::timeval>() as socklen_t;
    let p = (&mut tv as *mut libc::timeval).cast::<c_void>();
    let r: c_int = call_real!(getsockopt(from, libc::SOL_SOCKET, name, p, &mut len));
    if r == 0 {
        let _: c_int = call_real!(setsockopt(to, libc::SOL_SOCKET, name, p, len));
    }
}

/// What a CLC handshake gave, before anything is installed.
pub(crate) enum Negotiated {
    /// SMC-D: the stream, and its TCP socket's descriptor (the stream owns it).
    Smc(Stream, c_int),
    /// The peer declined (why): the socket stays TCP.
    Fallback(String),
    /// The handshake failed: the `errno` to report, and why.
    Failed(c_int, String),
    /// A client's handshake had no answer within the CLC timeout (why): the server took
    /// its connection too late (a full accept queue) or not at all.
    TimedOut(String),
}

/// Runs the CLC handshake over the connected TCP socket `sock` (a descriptor of it: the
/// stream takes a duplicate), blocking; the program's socket options are as before it
/// unless SMC-D took the connection. A server's handshake asks `refuse` once the client's
/// proposal is in (`crate::connecting`'s gate): a reason declines it with that reason
/// (`OPTUNSUPP` for a program that forks, as Linux's `smc_setsockopt` falls back for what
/// SMC cannot carry; `MEM` for one out of descriptors), and the connection stays TCP.
pub(crate) fn negotiate(
    rt: &Runtime,
    sock: c_int,
    client: bool,
    refuse: impl FnOnce() -> Option<DeclineReason>,
) -> Negotiated {
    let Some(stack) = rt.stack() else {
        return Negotiated::Failed(libc::ECONNREFUSED, "no SMC-D stack".into());
    };
    let tcp = crate::fds::lift(sock);
    if tcp < 0 {
        let e = errno();
        // A server's client is declined on `sock` itself, so that it goes on over TCP.
        if !client && decline_now(rt, sock) {
            return Negotiated::Fallback(format!(
                "{}: the server had no descriptor for the set-up (errno {e})",
                DeclineReason::MEM
            ));
        }
        return Negotiated::Failed(e, "no descriptor for the TCP socket".into());
    }
    // SAFETY: `tcp` is a new descriptor that nobody else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(tcp) };
    let saved = save_opts(&stream);
    let refused = std::cell::Cell::new(None);
    let r = if client {
        Stream::client_on(&stack, stream)
    } else {
        Stream::server_on_gated(&stack, stream, || {
            refused.set(refuse());
            refused.get()
        })
    };
    match r {
        Ok(s) if s.is_smc() => {
            // The program's own time limits (the handshake changed SO_RCVTIMEO) on the
            // TCP socket, for getsockopt, and on A, where blocking calls wait.
            restore_opts(tcp, &saved);
            Negotiated::Smc(s, tcp)
        }
        Ok(s) => {
            restore_opts(sock, &saved);
            let why = if refused.get() == Some(DeclineReason::MEM) {
                format!(
                    "{}: the server had no descriptors for the set-up",
                    DeclineReason::MEM
                )
            } else if refused.get().is_some() {
                "the program forked while the set-up ran: TCP, which the child inherits".into()
            } else {
                match s.fallback_reason() {
                    // Linux's words for the code; what it means between two ism-run peers.
                    Some(r) if r == DeclineReason::OPTUNSUPP => format!(
                        "{r}; from an ism-run server: it forked while the set-up ran \
                         (a fork-per-connection server), so its child serves the connection"
                    ),
                    Some(r) => r.to_string(),
                    None => "fallback".to_owned(),
                }
            };
            drop(s);
            Negotiated::Fallback(why)
        }
        // The server closed or reset the TCP connection before it answered (its process
        // ended right after `accept`, or its handshake failed): over TCP the `connect`
        // had succeeded and the program would read the end of stream (or the reset), so
        // the TCP socket is what it gets. The proposal it sent is nobody's data: the
        // server's side is gone.
        Err(e) if client && closed_by_peer(&e) => {
            restore_opts(sock, &saved);
            // The error the handshake met stays pending on the socket (`EPIPE` from a
            // write after the reset): read, it is gone, so that `SO_ERROR` says the
            // connect succeeded, as over TCP (curl took the connect for failed).
            let _ = net::sockopt_int(sock, libc::SOL_SOCKET, libc::SO_ERROR);
            Negotiated::Fallback(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    "the server closed the connection during the handshake".to_owned()
                }
                _ => format!("the server ended the connection during the handshake: {e}"),
            })
        }
        Err(e) if client && e.kind() == std::io::ErrorKind::TimedOut => {
            restore_opts(sock, &saved);
            Negotiated::TimedOut(e.to_string())
        }
        Err(e) => Negotiated::Failed(
            if client {
                libc::ECONNREFUSED
            } else {
                libc::ECONNABORTED
            },
            match e.kind() {
                // `read_exact`'s own words ("failed to fill whole buffer") say nothing.
                std::io::ErrorKind::UnexpectedEof => {
                    "the peer closed the connection during the handshake".to_owned()
                }
                _ => e.to_string(),
            },
        ),
    }
}

/// Whether a handshake's error says the peer closed or reset the TCP connection.
fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// `connect`: to a destination with a listener registered on the board, connects and runs
/// the CLC client handshake on a library thread (`crate::connecting`): a non-blocking
/// socket gets `EINPROGRESS` at once, a blocking one waits in the kernel for the end (a
/// signal interrupts it with `EINTR`, as TCP's); to anything else, plain TCP.
///
/// # Safety
/// As the C library's `connect`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if TABLE.maybe_tracked(fd) {
        match TABLE.get(fd).as_deref() {
            Some(Entry::Smc(s)) => {
                return match s.take_connect_report() {
                    0 => 0,
                    e => fail(e),
                }
            }
            Some(Entry::Connecting(c)) => return fail(c.connect_again()),
            _ => {}
        }
    }
    // SAFETY: the caller's address of `len` bytes.
    let Some(asked) = (unsafe { net::from_c(addr, len) }) else {
        return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
    };
    let entry_errno = errno();
    // A socket that is connected already (a connect that fell back to TCP, which the
    // program calls `connect` on again to learn how its non-blocking connect went, as
    // APR and Ruby's `connect_nonblock` do): the kernel answers (0 the first time, then
    // `EISCONN`); a handshake started here would send a CLC proposal into the program's
    // TCP stream.
    if !net::is_inet_stream(fd) || net::peer_addr(fd).is_some() {
        set_errno(entry_errno);
        return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
    }
    // `0.0.0.0` and `::` reach this host: the listener and the board know the connection
    // by the address the kernel really connects to.
    let dest = net::connect_dest(fd, asked);
    guarded(|| {
        let rt = runtime();
        let Some(names) = rt.names.as_ref() else {
            if rt.cfg.require_smc {
                return fail(libc::ECONNREFUSED);
            }
            set_errno(entry_errno);
            return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
        };
        if rt.reaches_own_listener(dest) {
            rt.debug(|| format!("connect {dest}: a listener of this process: TCP"));
            set_errno(entry_errno);
            return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
        }
        // The listener this host's kernel gives the connection to, if it is in this
        // network namespace: the board answers for that very socket (a plain server on
        // the port, an IPv6-only one beside it, or a more specific address takes the
        // connection: then it stays TCP).
        let seen = net::listener_cookie(dest).ok();
        // The connection's doorbell and the descriptor numbers its set-up takes once the
        // server accepted (`client_means`), taken before the connection is registered:
        // without them, plain TCP. An exchanged doorbell (`crate::smc::Bells`) goes with
        // the registration, for the board to pass to the server.
        let mut means = None;
        // Where that listener is known and this socket has a cookie, the lookup and the
        // registration by cookie (see below) are one round trip: the board registers the
        // client only if the answer is "cookies". A board that predates it, or an error:
        // the lookup alone, as below.
        let mut registered = None;
        // A socket bound to a device is found by its cookie only with the device's index,
        // which the server cannot know (`net::device_bound`): it registers by address.
        // (Only asked where the board could answer "cookies": a listener seen here.)
        let by_cookie = seen.is_some() && !net::device_bound(fd, dest);
        let mine = seen
            .filter(|_| by_cookie)
            .and_then(|_| net::socket_cookie(fd));
        let no_spares = || {
            rt.debug(|| format!("connect {dest}: no descriptors above the floor: TCP"));
            set_errno(entry_errno);
            crate::signals::paused(|| call_real!(connect(fd, addr, len)))
        };
        let combined = match (seen, mine) {
            (Some(s), Some(c)) => {
                means = client_means(rt, fd);
                let Some((doorbell, _)) = &means else {
                    return no_spares();
                };
                let bell = match doorbell {
                    Doorbell::Exchanged(b) => Some(b.b()),
                    _ => None,
                };
                names.lookup_register(c, dest, s, bell).ok().inspect(|l| {
                    if *l == Lookup::Cookies {
                        registered = Some(ClientKey::Cookie(c));
                    }
                })
            }
            _ => None,
        };
        let listeners =
            combined.unwrap_or_else(|| names.lookup(dest, seen).unwrap_or(Lookup::None));
        if listeners == Lookup::None {
            rt.debug(|| format!("connect {dest}: no ism-run listener there: TCP"));
            set_errno(entry_errno);
            return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
        }
        let Some((mut doorbell, spares)) = means.or_else(|| client_means(rt, fd)) else {
            return no_spares();
        };
        if let Doorbell::Exchanged(b) = &mut doorbell {
            b.offer_page_on_a();
        }
        // The connection is registered before `connect`, by its socket's cookie where
        // every listener it reaches finds its clients' cookies (`after_accept`): then
        // `connect` picks the port as for any TCP socket. By its address otherwise, which
        // needs the port first: a port bound before `connect` stays taken while its
        // connections are in `TIME_WAIT`, and a client that opens many connections runs
        // out of ports (the kernel's own choice in `connect` reuses them).
        let register = |key: ClientKey| match &doorbell {
            Doorbell::Exchanged(b) => names.register_client_with_bell(key, dest, b.b()),
            _ => names.register_client(key, dest),
        };
        // Cookies only where the board answered for the listener seen here: one in
        // another network namespace could not see this socket either.
        let cookie = registered.or_else(|| {
            (listeners == Lookup::Cookies && by_cookie)
                .then(|| net::socket_cookie(fd))
                .flatten()
                .map(ClientKey::Cookie)
        });
        let key = match cookie {
            Some(k) if registered.is_some() || register(k).is_ok() => k,
            _ => {
                let Some(local) = net::bind_for(fd, dest) else {
                    rt.debug(|| format!("connect {dest}: cannot bind a local port: TCP"));
                    set_errno(entry_errno);
                    return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
                };
                if register(ClientKey::Addr(local)).is_err() {
                    set_errno(entry_errno);
                    return crate::signals::paused(|| call_real!(connect(fd, addr, len)));
                }
                ClientKey::Addr(local)
            }
        };
        let flags = get_flags(fd);
        let r: c_int = crate::signals::paused(|| call_real!(connect(fd, addr, len)));
        let e = errno();
        if r != 0 && e != libc::EINPROGRESS {
            let _ = names.unregister_client(key, dest);
            return fail(e);
        }
        // Bound by now (`connect` chose the port before it sent the SYN).
        let local = match key {
            ClientKey::Addr(a) => a,
            ClientKey::Cookie(_) => net::local_addr(fd).unwrap_or(dest),
        };
        let side = crate::connecting::Side::Client;
        let ends = (local, dest);
        // The set-up's descriptors come from `spares` from here on (`start` takes what it
        // does not use along to the set-up's thread).
        crate::fds::set_aside(spares);
        let (entry, a) = match crate::connecting::start(rt, side, fd, ends, key, flags, doorbell) {
            Ok(started) => started,
            Err(why) => {
                crate::fds::release();
                // Left on TCP: the listener must not wait for a handshake.
                rt.debug(|| format!("connect {local} -> {dest}: errno {why}: TCP"));
                let _ = names.unregister_client(key, dest);
                if r == 0 {
                    set_errno(entry_errno);
                    return 0;
                }
                return fail(libc::EINPROGRESS);
            }
        };
        if flags & libc::O_NONBLOCK != 0 {
            rt.debug(|| format!("connect {local} -> {dest}: non-blocking, under way"));
            return fail(libc::EINPROGRESS);
        }
        let Entry::Connecting(c) = &*entry else {
            return fail(libc::EIO);
        };
        match crate::connecting::wait_end(c, &a) {
            Ok(()) => {
                drop(a);
                // The wait's byte may have gone into A→B as the end drained it; and this
                // `connect` reports the connection itself.
                if let Some(e) = smc_of(fd) {
                    smc!(e).unfill_stray();
                    smc!(e).set_connect_unreported(false);
                }
                set_errno(entry_errno);
                0
            }
            Err(e) => fail(e),
        }
    })
}

/// Descriptors a client's set-up takes after it registered (the library's copy of the TCP
/// socket, another for the handshake, one of B, the server's doorbell moved above the
/// floor), set aside before it registers ([`crate::fds::take_spares`]).
const CLIENT_SPARE: usize = 4;

/// What a client's set-up needs before it registers with the board: the connection's
/// doorbell (exchanged with the peer where connections do that, else its own pair) and
/// [`CLIENT_SPARE`] descriptor numbers above the floor for its set-up's thread. `None`
/// where a process out of descriptors cannot have them: the connection goes over plain
/// TCP. Taken after registering instead, a failure came after the server had accepted
/// the connection as an `ism-run` client's.
fn client_means(rt: &Runtime, fd: c_int) -> Option<(Doorbell, Vec<OwnedFd>)> {
    let doorbell = if rt.uses_bells() {
        Doorbell::Exchanged(rt.bells()?)
    } else {
        Doorbell::Own(crate::smc::doorbell_pair().ok()?)
    };
    Some((doorbell, crate::fds::take_spares(fd, CLIENT_SPARE)?))
}

/// Registers the listening address `addr` with the board; as one whose server finds its
/// clients by socket cookie if this process can ask `sock_diag` (see [`after_accept`]).
fn register_listener(
    names: &ism_sim::process::NameClient,
    addr: SocketAddr,
    cookie: u64,
) -> std::io::Result<()> {
    names.register_listener_as(addr, cookie, net::diag_works())
}

/// `listen`: a candidate socket's address is registered with the board's name service
/// (and the function attached, so that the first accept does not wait for it).
///
/// # Safety
/// As the C library's `listen`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let r: c_int = call_real!(listen(fd, backlog));
    if r != 0 {
        return r;
    }
    if TABLE.maybe_tracked(fd) && !moved_listener(fd) {
        adopt_listener(fd);
        return r;
    }
    let entry_errno = errno();
    if !net::is_inet_stream(fd) {
        set_errno(entry_errno);
        return r;
    }
    guarded(|| {
        let rt = runtime();
        let cookie = net::socket_cookie(fd).unwrap_or(0);
        match (rt.names.as_ref(), net::local_addr(fd)) {
            (Some(names), Some(addr)) if register_listener(names, addr, cookie).is_ok() => {
                let _ = rt.stack();
                rt.own_listener(addr, true);
                let reg = ListenerReg::registered(Some(addr), cookie);
                drop(TABLE.insert(fd, Arc::new(Entry::Listener(reg))));
                rt.debug(|| format!("listen {addr}: registered"));
            }
            (None, _) if rt.cfg.require_smc => {
                let reg = ListenerReg::registered(None, 0);
                drop(TABLE.insert(fd, Arc::new(Entry::Listener(reg))));
            }
            _ => {}
        }
        set_errno(entry_errno);
        0
    })
}

/// A registered listener that `listen` again finds on another address (a `shutdown` made
/// the kernel unbind an automatically bound port, and this `listen` bound a new one): the
/// old registration goes, and `listen` registers the new address. Returns whether it went.
/// Keeps `errno`.
fn moved_listener(fd: c_int) -> bool {
    let saved = errno();
    let moved = guarded(|| {
        let Some(e) = TABLE.get(fd) else {
            return 0;
        };
        let Entry::Listener(ListenerReg {
            addr: Some(was), ..
        }) = &*e
        else {
            return 0;
        };
        if net::local_addr(fd).is_none_or(|now| now == *was) {
            return 0;
        }
        drop(TABLE.remove(fd));
        1
    }) == 1;
    set_errno(saved);
    moved
}

/// What [`after_accept`] returns when the handshake could not be started (no descriptor
/// for it): the connection is gone (closed here, its client's handshake fails), and the
/// caller accepts the next one, as Linux's SMC never queues a connection whose handshake
/// failed in `smc_listen_work` (`net/smc/af_smc.c`) for `accept`. Never a descriptor, and
/// not -1.
const ACCEPT_NEXT: c_int = -2;

/// After the real accept of `new` on the registered listener `lfd`: if the client
/// registered the connection, the server's handshake starts on a library thread
/// (`crate::connecting`, [`crate::connecting::Side::Server`]) and `new` is returned at
/// once, holding the connection's doorbell.
fn after_accept(lfd: c_int, new: c_int, entry_errno: c_int) -> c_int {
    match TABLE.get(lfd).as_deref() {
        Some(Entry::Listener(ListenerReg { addr: Some(_), .. })) => {}
        Some(Entry::Listener(ListenerReg { addr: None, .. })) => {
            // No board, and SMC-D is required.
            let _: c_int = call_real!(close(new));
            return fail(libc::ECONNREFUSED);
        }
        _ => return new,
    }
    let rt = runtime();
    let Some(names) = rt.names.as_ref() else {
        return new;
    };
    let (Some(peer), Some(local)) = (net::peer_addr(new), net::local_addr(new)) else {
        return new;
    };
    // The connection's doorbell, made now so that the board can pass it to the client
    // (and the client's to us) with the take.
    let mut bells = rt.bells();
    // A client registered its socket's cookie if the board said that every listener it
    // reaches takes cookies (see `connect`), else its address. The cookie first, found
    // from the accepted connection (`sock_diag` sees the client's socket on this host);
    // then the address (a client told otherwise: a listener of another program on this
    // port takes none; or one whose socket is not to be seen here).
    let take = |key: ClientKey| match &bells {
        Some(b) => names.take_client_with_bell(key, local, b.b()),
        None => names.take_client(key, local).map(|found| (found, None)),
    };
    let by_cookie = net::diag_works().then(|| net::peer_cookie(peer, local));
    let lost = |t: &std::io::Result<_>| matches!(t, Err(e) if ism_sim::process::names::is_descriptor_lost(e));
    let taken = match by_cookie {
        // Not found, or a board that takes no cookies (an error): by the address.
        Some(Ok(c)) => match take(ClientKey::Cookie(c)) {
            t if lost(&t) => t,
            Ok((false, _)) | Err(_) => take(ClientKey::Addr(peer)),
            t => t,
        },
        // The kernel could not be asked now (out of descriptors): a client that
        // registered its cookie cannot be told from a plain one, and its CLC proposal
        // must never reach the program as data. The connection goes, as one whose
        // handshake failed.
        Some(Err(net::DiagError::Failed)) => {
            rt.debug(|| format!("accept {peer} -> {local}: sock_diag failed: dropped"));
            let _: c_int = call_real!(close(new));
            return ACCEPT_NEXT;
        }
        _ => take(ClientKey::Addr(peer)),
    };
    // The take found the client and paired the doorbells, but the client's did not fit
    // into this process (no descriptor left): the client counts on being rung, so it is
    // declined and goes on over TCP.
    if lost(&taken) {
        if decline_now(rt, new) {
            rt.debug(|| {
                format!("accept {peer} -> {local}: no room for its doorbell: declined (MEM): TCP")
            });
            set_errno(entry_errno);
            return new;
        }
        rt.debug(|| format!("accept {peer} -> {local}: no room for its doorbell: the next one"));
        let _: c_int = call_real!(close(new));
        return ACCEPT_NEXT;
    }
    let (true, client_bell) = taken.unwrap_or((false, None)) else {
        rt.debug(|| format!("accept {peer} -> {local}: not an ism-run client: TCP"));
        set_errno(entry_errno);
        return new;
    };
    if let Some(b) = bells.as_mut() {
        // The client's page, offered on its doorbell, is taken now: before the client's
        // handshake ends and it drains its doorbell's fill (`crate::quiet`).
        b.set_peer(client_bell.map(crate::smc::PeerDoorbell::taken));
    }
    // The handshake runs on a library thread, as a connect's: `accept` returns at once,
    // so that a server takes its next connections (and sets them up in parallel) while
    // this one waits for its client's confirmation. The descriptor is the connection's
    // doorbell A from now on; it polls neither readable nor writable until the end, and
    // data calls wait for it (or give `EAGAIN`).
    let side = crate::connecting::Side::Server;
    let flags = get_flags(new);
    match crate::connecting::start(
        rt,
        side,
        new,
        (local, peer),
        ClientKey::Addr(peer),
        flags,
        bells.map_or(Doorbell::New, Doorbell::Exchanged),
    ) {
        Ok((_, a)) => {
            // Not kept: A's only descriptor is the program's (see `install`).
            drop(a);
            rt.debug(|| format!("accept {peer} -> {local}: handshake under way"));
            set_errno(entry_errno);
            new
        }
        Err(e) => {
            // No descriptor (or thread) for the set-up: a program at its limit of open
            // files (memcached sets its soft and hard limits to its connection limit).
            // Over TCP it would have this connection, so the client is declined here, on
            // this thread and with no descriptor of ours, and goes on over TCP.
            if decline_now(rt, new) {
                rt.debug(|| format!("accept {peer} -> {local}: errno {e}: declined (MEM): TCP"));
                set_errno(entry_errno);
                return new;
            }
            rt.debug(|| format!("accept {peer} -> {local}: errno {e}: the next one"));
            let _: c_int = call_real!(close(new));
            ACCEPT_NEXT
        }
    }
}

/// Declines the CLC proposal of the `ism-run` client of the accepted connection `fd` on
/// the calling thread, taking no descriptor: reads the proposal, answers with a DECLINE
/// ("insufficient memory", as Linux's server when it cannot get what a connection needs:
/// `net/smc/af_smc.c` `smc_listen_work` declines with `SMC_CLC_DECL_MEM`), and leaves
/// `fd` a plain TCP connection with its flags and options as before. Blocks for the
/// proposal (bounded by the handshake's CLC time limit). Whether the client was told.
fn decline_now(rt: &Runtime, fd: c_int) -> bool {
    let Some(stack) = rt.stack() else {
        return false;
    };
    let flags = get_flags(fd);
    if flags < 0 {
        return false;
    }
    set_flags(fd, flags & !libc::O_NONBLOCK);
    // SAFETY: borrowed for the handshake only; `ManuallyDrop` keeps it from closing `fd`,
    // which stays the program's.
    let mut tcp = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let saved = save_opts(&tcp);
    let r = ism_host_driver::smcd::handshake::server_gated(&stack, &mut tcp, || {
        Some(DeclineReason::MEM)
    });
    restore_opts(fd, &saved);
    set_flags(fd, flags);
    matches!(
        r,
        Ok(ism_host_driver::smcd::handshake::Outcome::Fallback(_))
    )
}

/// The accept hooks' loop: `accept_once` (the real call) until it gives a connection that
/// is not one whose handshake failed ([`ACCEPT_NEXT`]). The caller's address length is
/// put back before each further call (the real call wrote it).
///
/// # Safety
/// `len` is null or the caller's valid `socklen_t`.
unsafe fn accept_loop(fd: c_int, len: *mut socklen_t, accept_once: impl Fn() -> c_int) -> c_int {
    // Refused before the real `accept` takes a connection it could not set up.
    if TABLE.maybe_tracked(fd) && crate::signals::Call::enter().is_none() {
        return fail(libc::EAGAIN);
    }
    adopt_listener(fd);
    let entry_errno = errno();
    // SAFETY: the caller's `len`, if any.
    let room = (!len.is_null()).then(|| unsafe { *len });
    loop {
        let new = accept_once();
        if new < 0 || (!TABLE.maybe_tracked(fd) && !adopt_untracked(fd)) {
            return new;
        }
        let r = guarded(|| after_accept(fd, new, entry_errno));
        if r != ACCEPT_NEXT {
            return r;
        }
        if let Some(room) = room {
            // SAFETY: as above.
            unsafe { *len = room };
        }
    }
}

/// `accept`.
///
/// # Safety
/// As the C library's `accept`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let once = || call_real!(accept(fd, addr, len));
    // SAFETY: the caller's `len`, as for `accept`.
    unsafe { accept_loop(fd, len, once) }
}

/// `accept4`.
///
/// # Safety
/// As the C library's `accept4`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let once = || call_real!(accept4(fd, addr, len, flags));
    // SAFETY: the caller's `len`, as for `accept4`.
    unsafe { accept_loop(fd, len, once) }
}

// ------------------------------------------------------------------------ credentials

/// Before the process changes its credentials: if it holds listeners registered with the
/// board (its own, or inherited over `fork`), it registers them and attaches its function
/// now, while it may still reach the board's socket. Servers started as root fork workers
/// that drop their privileges before their first `accept` (nginx, apache2, squid:
/// `setgid`, `setgroups`, `setuid` to `nobody` or `www-data`); afterwards the worker may
/// not connect to the board's socket, but what it opened before stays its own (the
/// control and name-service sockets, the mapped memory), as a process keeps its open
/// files across `setuid`. Without this, the master's registration brought `ism-run`
/// clients to workers that could not answer them. A process without listeners is left
/// alone (a client that drops privileges first still needs the board's socket open to
/// its new user).
fn before_credentials_change() {
    if !crate::fork::owner() {
        return; // a vfork child shares the parent's state: nothing of its own to set up
    }
    let saved = errno();
    let _: c_int = guarded(|| {
        let listeners: Vec<Arc<Entry>> = TABLE
            .lock_map()
            .as_ref()
            .map(|m| {
                m.values()
                    .filter(|e| matches!(***e, Entry::Listener(_)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut adopted = false;
        for e in &listeners {
            if let Entry::Listener(l) = &**e {
                adopted |= l.adopt();
            }
        }
        if adopted {
            runtime().debug(|| "attached before the process changes its credentials".to_owned());
        }
        0
    });
    set_errno(saved);
}

/// `execve`: as the C library's, with this library added to the new image's environment
/// where registered listeners cross the `exec` and the environment given would leave the
/// library out ([`crate::fork::env_for_exec`]).
///
/// # Safety
/// As the C library's `execve`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> c_int {
    let saved = errno();
    // SAFETY: the caller's environment array, as `execve` takes it.
    let env = std::panic::catch_unwind(|| unsafe { crate::fork::env_for_exec(envp) })
        .ok()
        .flatten();
    set_errno(saved);
    match env {
        Some(env) => {
            let ptrs: Vec<*const libc::c_char> = env
                .iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            call_real!(execve(path, argv, ptrs.as_ptr()))
        }
        None => call_real!(execve(path, argv, envp)),
    }
}

macro_rules! credential_hook {
    ($(#[$doc:meta])* $name:ident($($a:ident: $t:ty),*)) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As the C library's function of that name.
        #[cfg_attr(not(test), no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
            before_credentials_change();
            call_real!($name($($a),*))
        }
    };
}

credential_hook!(
    /// `setuid`: attaches first where [`before_credentials_change`] says.
    setuid(uid: libc::uid_t)
);
credential_hook!(
    /// `setgid`: attaches first where [`before_credentials_change`] says.
    setgid(gid: libc::gid_t)
);
credential_hook!(
    /// `seteuid`: attaches first where [`before_credentials_change`] says.
    seteuid(uid: libc::uid_t)
);
credential_hook!(
    /// `setegid`: attaches first where [`before_credentials_change`] says.
    setegid(gid: libc::gid_t)
);
credential_hook!(
    /// `setreuid`: attaches first where [`before_credentials_change`] says.
    setreuid(r: libc::uid_t, e: libc::uid_t)
);
credential_hook!(
    /// `setregid`: attaches first where [`before_credentials_change`] says.
    setregid(r: libc::gid_t, e: libc::gid_t)
);
credential_hook!(
    /// `setresuid`: attaches first where [`before_credentials_change`] says.
    setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t)
);
credential_hook!(
    /// `setresgid`: attaches first where [`before_credentials_change`] says.
    setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t)
);
credential_hook!(
    /// `setgroups` (the first call of a privilege drop, before `setgid` and `setuid`):
    /// attaches first where [`before_credentials_change`] says.
    setgroups(n: libc::size_t, list: *const libc::gid_t)
);

/// `sigaction`: the program's handler runs behind the library's trampoline, which lets a
/// spinning blocking call see that it ran (`crate::signals`); the program sees its own.
///
/// # Safety
/// As the C library's `sigaction`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> c_int {
    // SAFETY: the caller's arguments, as the C library's.
    unsafe { crate::signals::sigaction(sig, act, oact) }
}

/// One of the C library's `signal` functions, through [`sigaction`] (`crate::signals`).
macro_rules! signal_hook {
    ($(#[$doc:meta])* $name:ident, $flavour:ident) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As the C library's function of this name.
        #[cfg_attr(not(test), no_mangle)]
        pub unsafe extern "C" fn $name(
            sig: c_int,
            handler: libc::sighandler_t,
        ) -> libc::sighandler_t {
            // SAFETY: as the C library's.
            unsafe { crate::signals::signal(sig, handler, crate::signals::Flavour::$flavour) }
        }
    };
}

signal_hook!(
    /// `signal` (BSD semantics, as glibc's).
    signal,
    Bsd
);
signal_hook!(
    /// `bsd_signal`: `signal`.
    bsd_signal,
    Bsd
);
signal_hook!(
    /// `sysv_signal`: System V semantics (one-shot, no restart).
    sysv_signal,
    SysV
);
signal_hook!(
    /// `__sysv_signal` (what `signal` is under strict X/Open compilation).
    __sysv_signal,
    SysV
);

/// `siginterrupt`: whether `sig`'s handler restarts system calls, kept for `signal`.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn siginterrupt(sig: c_int, flag: c_int) -> c_int {
    crate::signals::siginterrupt(sig, flag)
}
