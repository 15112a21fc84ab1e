//! The program's signal handlers as the library sees them, so that a blocking call that
//! spins in user space can tell what a signal would have done to the kernel's wait it
//! stands for, for one load per turn instead of two signal-mask system calls per wait.
//!
//! This module owns the table of the program's handlers, filled by the interposed
//! `sigaction`, `signal`, `bsd_signal`, `sysv_signal`, `__sysv_signal` and
//! `siginterrupt`, the trampoline the kernel calls instead of each of them (it counts, per
//! thread, the handlers that ran, then runs the program's), and [`Watch`], which a spin
//! holds. It never changes what the program sees or gets: `sigaction` reports the
//! program's own handler and flags, a handler receives its signal number, `siginfo_t` and
//! context, and runs when the kernel delivers the signal, as without the library.
//!
//! Handlers it cannot see (installed with the raw `rt_sigaction` system call, or by
//! `sigset`) are found by an audit of the kernel's dispositions: a thread's first watch,
//! its first after a new connection was set up ([`audit_soon`]), and every
//! [`AUDIT_EVERY`]th. While there are any, a watch blocks every signal
//! for the spin and looks at what came at its end ([`crate::runtime::SignalsBlocked`]),
//! as before this module.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_void, sighandler_t, siginfo_t};

use crate::real::{errno, fail, real, set_errno};
use crate::runtime::SignalsBlocked;

/// Signal numbers are 1..NSIG on Linux (`_NSIG` is 65 on every architecture it runs on).
const NSIG: usize = 65;

/// The program's handler for each signal installed through the trampoline (0: none yet).
/// Left in place when the program sets `SIG_DFL` or `SIG_IGN`: a signal delivered while
/// the kernel still held the trampoline then runs the handler that was current, as it
/// would have without the library.
static HANDLER: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];

/// The `sa_flags` the program gave with that handler (the trampoline adds `SA_SIGINFO`).
static FLAGS: [AtomicI32; NSIG] = [const { AtomicI32::new(0) }; NSIG];

/// Signals that `siginterrupt(sig, 1)` made interrupting: `signal` then installs their
/// handlers without `SA_RESTART` (bit `sig - 1`).
static INTERRUPTING: AtomicU64 = AtomicU64::new(0);

/// Signals whose last install here added `SA_SIGINFO` for the trampoline (bit `sig - 1`):
/// the kernel keeps the flag after a one-shot handler resets to `SIG_DFL`, and a query
/// must not show it.
static ADDED_SIGINFO: AtomicU64 = AtomicU64::new(0);

/// The last audit found a handler the trampoline does not run: watches block signals.
static FOREIGN: AtomicBool = AtomicBool::new(false);

/// Bumped by [`audit_soon`]: a thread whose last audit is older audits at its next watch.
static AUDIT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// A watch audits the kernel's dispositions once in this many per thread (~60 system
/// calls, ~8 µs here: a few nanoseconds per watch).
pub const AUDIT_EVERY: u32 = 4096;

thread_local! {
    /// Handlers the trampoline ran in this thread.
    static RAN: AtomicU64 = const { AtomicU64::new(0) };
    /// Of those, the ones installed without `SA_RESTART`.
    static RAN_NO_RESTART: AtomicU64 = const { AtomicU64::new(0) };
    /// Watches in this thread until the next audit.
    static UNTIL_AUDIT: Cell<u32> = const { Cell::new(0) };
    /// [`AUDIT_EPOCH`] at this thread's last audit.
    static AUDITED_EPOCH: Cell<u64> = const { Cell::new(0) };
    /// Where this thread is in the library ([`Call`]); one thread-local, so that a
    /// library call reaches it once (a preloaded library's thread-locals cost a call of
    /// `__tls_get_addr` each).
    static MARKS: Marks = const {
        Marks {
            in_call: Cell::new(0),
            beneath: Cell::new(0),
            handler: Cell::new(0),
        }
    };
}

/// See `MARKS`.
struct Marks {
    /// The stack address of the library call this thread is in while that call may hold
    /// the library's locks ([`Call`]); 0: in none, or in one that waits holding none
    /// ([`Pause`]).
    in_call: Cell<usize>,
    /// While a program's handler runs: `in_call` as the signal found it (or as the signal
    /// under this one found it), else 0.
    beneath: Cell<usize>,
    /// While a program's handler runs: the stack address of the trampoline's frame, above
    /// every frame of the handler's.
    handler: Cell<usize>,
}

/// What the kernel calls for every handler the program installed: counts the run in this
/// thread, then calls the program's handler with what the kernel passed (a one-argument
/// handler ignores the other two, as the C calling convention allows).
extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let Some(i) = slot(sig) else {
        return;
    };
    let handler = HANDLER[i].load(Ordering::Acquire);
    let flags = FLAGS[i].load(Ordering::Acquire);
    // `try_with` cannot fail for these (no destructor); it has no panic path.
    let _ = RAN.try_with(|r| r.fetch_add(1, Ordering::Relaxed));
    if flags & libc::SA_RESTART == 0 {
        let _ = RAN_NO_RESTART.try_with(|r| r.fetch_add(1, Ordering::Relaxed));
    }
    // What the thread's spin holds for its peer goes first: the handler may leave the
    // read by `siglongjmp`, past the spin's clean-up.
    crate::quiet::withdraw_for_handler();
    if handler == 0 || handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    // SAFETY: `handler` is a function the program installed for `sig` through `sigaction`
    // or `signal`, with either C handler signature; both take these arguments.
    let f = unsafe {
        std::mem::transmute::<usize, extern "C" fn(c_int, *mut siginfo_t, *mut c_void)>(handler)
    };
    // The handler's own calls into the library start afresh, with what it interrupted
    // beneath them ([`Call::enter`]); both put back when it returns (a `siglongjmp` out
    // leaves them: see there).
    as_handler(|| f(sig, info, ctx));
}

/// Runs `f` (a program's handler) with the marks of the call it interrupted beneath it
/// ([`Call::enter`]); puts them back after.
#[inline(never)]
fn as_handler<T>(f: impl FnOnce() -> T) -> T {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker).addr();
    let (call, beneath, handler) = MARKS
        .try_with(|m| {
            let (call, handler) = (m.in_call.get(), m.handler.get());
            // Marks of a handler left by `siglongjmp` (this frame is above its
            // trampoline's): nothing of it is beneath this one.
            let beneath = if handler != 0 && here >= handler {
                0
            } else {
                m.beneath.get()
            };
            // `beneath` before `in_call` is cleared: a signal in between finds one of them.
            m.beneath.set(if call != 0 { call } else { beneath });
            m.handler.set(here);
            compiler_fence(Ordering::SeqCst);
            m.in_call.set(0);
            (call, beneath, handler)
        })
        .unwrap_or((0, 0, 0));
    compiler_fence(Ordering::SeqCst);
    let r = f();
    compiler_fence(Ordering::SeqCst);
    let _ = MARKS.try_with(|m| {
        m.in_call.set(call);
        compiler_fence(Ordering::SeqCst);
        m.beneath.set(beneath);
        m.handler.set(handler);
    });
    r
}

/// The library call a hook makes on a descriptor it tracks (`crate::hooks::guarded`), so
/// that a program's signal handler that interrupted one does not call into the library
/// again and wait forever for a lock the interrupted call holds (a `write` in
/// mosquitto's `SIGTERM` handler, while the thread it interrupted was in the middle of a
/// read's cursor update, left the program unkillable; a new-user trial). Such a call
/// fails with `EAGAIN` instead ([`Call::enter`]). A call that waits (for data, room,
/// the end of a connect) holds no lock meanwhile and says so ([`Pause`]): a handler
/// that interrupts the wait may use the library as before.
#[must_use = "the call ends when the guard drops"]
pub struct Call {
    /// `in_call` before this call (put back at its end).
    outer: usize,
    /// This thread's marks (null if they could not be had).
    marks: *const Marks,
}

impl Call {
    /// Enters a library call; `None` if this is a signal handler's call and the call the
    /// signal interrupted may hold the library's locks (the caller fails with `EAGAIN`).
    ///
    /// A handler's calls run below the trampoline's frame (on the interrupted thread's
    /// stack or on an alternate one). A call above it is not in that handler any more: the
    /// handler left by `siglongjmp`, past the trampoline's clean-up, and the stale marks
    /// are dropped.
    #[inline(never)]
    pub fn enter() -> Option<Self> {
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker).addr();
        let Ok((outer, marks)) = MARKS.try_with(|m| (m.in_call.get(), m as *const Marks)) else {
            return Some(Self {
                outer: 0,
                marks: std::ptr::null(),
            });
        };
        // SAFETY: this thread's marks, which live as long as the thread; the pointer is
        // only used on this thread (the guard is not `Send`) and within this call.
        let m = unsafe { &*marks };
        if outer == 0 {
            if m.beneath.get() != 0 {
                if here < m.handler.get() {
                    return None;
                }
                m.beneath.set(0);
                m.handler.set(0);
            }
            m.in_call.set(here);
            // The mark is in place before anything of the call (its locks): the compiler
            // may not move it past them (a signal handler reads it on this thread).
            compiler_fence(Ordering::SeqCst);
        }
        Some(Self { outer, marks })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Everything of the call (its locks released) before the mark goes.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as in `enter`: this thread's marks, on this thread.
        if let Some(m) = unsafe { self.marks.as_ref() } {
            m.in_call.set(self.outer);
        }
    }
}

/// A library call that waits and holds no lock of the library meanwhile (see [`Call`]):
/// until the guard drops, a signal handler that interrupts it may call into the library.
#[must_use = "the wait ends when the guard drops"]
pub struct Pause {
    /// `in_call` before the pause (put back at its end).
    call: usize,
    /// This thread's marks (null if they could not be had).
    marks: *const Marks,
}

impl Pause {
    /// From here until the guard drops, this thread's call holds no lock.
    pub fn begin() -> Self {
        compiler_fence(Ordering::SeqCst);
        let p = MARKS
            .try_with(|m| Self {
                call: m.in_call.replace(0),
                marks: m as *const Marks,
            })
            .unwrap_or(Self {
                call: 0,
                marks: std::ptr::null(),
            });
        compiler_fence(Ordering::SeqCst);
        p
    }

    /// Runs `f`, which takes locks, as the paused call again.
    pub fn hold<T>(&self, f: impl FnOnce() -> T) -> T {
        // SAFETY: as in `Call::enter`: this thread's marks, on this thread.
        let m = unsafe { self.marks.as_ref() };
        if let Some(m) = m {
            m.in_call.set(self.call);
        }
        compiler_fence(Ordering::SeqCst);
        let r = f();
        compiler_fence(Ordering::SeqCst);
        if let Some(m) = m {
            m.in_call.set(0);
        }
        r
    }
}

/// Runs `f`, a real call that may wait and that the caller makes holding none of the
/// library's locks, as a [`Pause`].
pub fn paused<T>(f: impl FnOnce() -> T) -> T {
    let _pause = Pause::begin();
    f()
}

impl Drop for Pause {
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as in `Call::enter`: this thread's marks, on this thread.
        if let Some(m) = unsafe { self.marks.as_ref() } {
            m.in_call.set(self.call);
        }
        compiler_fence(Ordering::SeqCst);
    }
}

/// The trampoline's address, as the kernel holds it.
fn trampoline_addr() -> usize {
    trampoline as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize
}

/// The slot of `sig` in the table, if it is a signal number.
fn slot(sig: c_int) -> Option<usize> {
    usize::try_from(sig).ok().filter(|&i| i > 0 && i < NSIG)
}

/// `sigaction`: installs a program's handler behind the trampoline (other dispositions as
/// given) and reports the program's own handler and flags for the old one.
///
/// # Safety
/// As the C library's `sigaction`: `act` and `oact` are null or valid.
pub unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    oact: *mut libc::sigaction,
) -> c_int {
    let Some(real_sigaction) = real().sigaction else {
        return fail(libc::ENOSYS);
    };
    let Some(i) = slot(sig) else {
        // SAFETY: the caller's arguments; the kernel refuses the number.
        return unsafe { real_sigaction(sig, act, oact) };
    };
    let prev = (
        HANDLER[i].load(Ordering::Acquire),
        FLAGS[i].load(Ordering::Acquire),
    );
    // SAFETY: `act` is null or valid (the caller's contract).
    let given = unsafe { act.as_ref() }.copied();
    let wrapped = given.filter(|a| {
        let h = a.sa_sigaction;
        h != libc::SIG_DFL && h != libc::SIG_IGN && h != trampoline_addr()
    });
    let mut kact = given;
    let prev_added = ADDED_SIGINFO.load(Ordering::Relaxed) & bit(sig) != 0;
    if let (Some(a), Some(k)) = (wrapped, kact.as_mut()) {
        // The table first: a signal delivered as soon as the kernel holds the trampoline
        // finds the handler.
        FLAGS[i].store(a.sa_flags, Ordering::Release);
        HANDLER[i].store(a.sa_sigaction, Ordering::Release);
        k.sa_sigaction = trampoline_addr();
        k.sa_flags |= libc::SA_SIGINFO;
    }
    let kptr = kact
        .as_ref()
        .map_or(std::ptr::null(), |k| k as *const libc::sigaction);
    // SAFETY: an all-zero sigaction is a valid value, overwritten by the call.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `kptr` is null or a local copy of the caller's action; `old` is local.
    let r = unsafe { real_sigaction(sig, kptr, &mut old) };
    if r != 0 {
        if wrapped.is_some() {
            HANDLER[i].store(prev.0, Ordering::Release);
            FLAGS[i].store(prev.1, Ordering::Release);
        }
        return r;
    }
    if given.is_some() {
        let added = wrapped.is_some_and(|a| a.sa_flags & libc::SA_SIGINFO == 0);
        if added {
            ADDED_SIGINFO.fetch_or(bit(sig), Ordering::Relaxed);
        } else {
            ADDED_SIGINFO.fetch_and(!bit(sig), Ordering::Relaxed);
        }
    }
    if old.sa_sigaction == trampoline_addr() {
        old.sa_sigaction = prev.0;
        if prev.1 & libc::SA_SIGINFO == 0 {
            old.sa_flags &= !libc::SA_SIGINFO;
        }
    } else if prev_added {
        // A one-shot handler of ours ran: the kernel reset the handler, not the flags.
        old.sa_flags &= !libc::SA_SIGINFO;
    }
    // SAFETY: `oact` is null or valid (the caller's contract).
    if let Some(o) = unsafe { oact.as_mut() } {
        *o = old;
    }
    0
}

/// Which C library `signal` flavour is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `signal`, `bsd_signal`: the signal blocked in its handler, `SA_RESTART` unless
    /// `siginterrupt` said otherwise.
    Bsd,
    /// `sysv_signal`: reset to `SIG_DFL` on delivery, not blocked in its handler, no
    /// restart.
    SysV,
}

/// `signal` and its System V and BSD forms, as the C library defines them (glibc's
/// `sysdeps/posix/signal.c` and `sysv_signal.c`), through [`sigaction`].
///
/// # Safety
/// As the C library's `signal`: `handler` is `SIG_DFL`, `SIG_IGN` or a handler.
pub unsafe fn signal(sig: c_int, handler: sighandler_t, flavour: Flavour) -> sighandler_t {
    if handler == libc::SIG_ERR || slot(sig).is_none() {
        set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    // SAFETY: all-zero sigactions and sigsets are valid values; the set is filled below.
    let (mut act, mut old): (libc::sigaction, libc::sigaction) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    act.sa_sigaction = handler;
    // SAFETY: a local, valid sigset and a valid signal number.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    act.sa_flags = match flavour {
        Flavour::Bsd => {
            // SAFETY: as above.
            unsafe { libc::sigaddset(&mut act.sa_mask, sig) };
            if INTERRUPTING.load(Ordering::Relaxed) & bit(sig) != 0 {
                0
            } else {
                libc::SA_RESTART
            }
        }
        Flavour::SysV => libc::SA_RESETHAND | libc::SA_NODEFER,
    };
    // SAFETY: local actions.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `siginterrupt`: whether a handler of `sig` interrupts system calls (`flag` non-zero:
/// no `SA_RESTART`), for its current handler and for those `signal` installs later.
pub fn siginterrupt(sig: c_int, flag: c_int) -> c_int {
    if slot(sig).is_none() {
        return fail(libc::EINVAL);
    }
    // SAFETY: an all-zero sigaction is a valid value, overwritten by the query.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query into a local action.
    if unsafe { sigaction(sig, std::ptr::null(), &mut act) } != 0 {
        return -1;
    }
    if flag != 0 {
        INTERRUPTING.fetch_or(bit(sig), Ordering::Relaxed);
        act.sa_flags &= !libc::SA_RESTART;
    } else {
        INTERRUPTING.fetch_and(!bit(sig), Ordering::Relaxed);
        act.sa_flags |= libc::SA_RESTART;
    }
    // SAFETY: a local action.
    unsafe { sigaction(sig, &act, std::ptr::null_mut()) }
}

fn bit(sig: c_int) -> u64 {
    1u64 << ((sig - 1) & 63)
}

/// Signals the audit passes over: those no handler can catch, and those a fault raises
/// in the faulting thread (a spin does not fault; Rust's runtime, for one, installs its
/// stack-overflow handler for `SIGSEGV` and `SIGBUS` before the library is asked).
const UNWATCHED: [c_int; 8] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Whether the kernel holds a handler for some signal that the trampoline does not run
/// ([`UNWATCHED`] and glibc's own, for its internal signals between 32 and `SIGRTMIN`,
/// aside). Leaves `errno` as it found it.
fn foreign_handlers() -> bool {
    let Some(real_sigaction) = real().sigaction else {
        return true;
    };
    let saved = errno();
    let internal = 32..libc::SIGRTMIN();
    let mut found = false;
    for sig in 1..=libc::SIGRTMAX() {
        if UNWATCHED.contains(&sig) || internal.contains(&sig) {
            continue;
        }
        // SAFETY: an all-zero sigaction is a valid value, overwritten by the query.
        let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a query of one disposition into a local action.
        if unsafe { real_sigaction(sig, std::ptr::null(), &mut a) } != 0 {
            continue;
        }
        let h = a.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN && h != trampoline_addr() {
            found = true;
            break;
        }
    }
    set_errno(saved);
    found
}

/// Makes every thread audit at its next watch (a new connection: a handler installed
/// behind the table's back before it is found by the first read on it).
pub fn audit_soon() {
    AUDIT_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Whether this watch is one that audits (see [`AUDIT_EVERY`] and [`audit_soon`]).
fn audit_due() -> bool {
    let epoch = AUDIT_EPOCH.load(Ordering::Relaxed);
    let stale = AUDITED_EPOCH
        .try_with(|e| e.replace(epoch) != epoch)
        .unwrap_or(false);
    UNTIL_AUDIT
        .try_with(|n| match n.get() {
            k if k == 0 || stale => {
                n.set(AUDIT_EVERY - 1);
                true
            }
            k => {
                n.set(k - 1);
                false
            }
        })
        .unwrap_or(false)
}

/// Makes this thread's next watch audit (tests: a handler installed behind the table's
/// back is found at once).
#[cfg(test)]
pub(crate) fn audit_next() {
    UNTIL_AUDIT.with(|n| n.set(0));
}

fn ran() -> (u64, u64) {
    let all = RAN.try_with(|r| r.load(Ordering::Relaxed)).unwrap_or(0);
    let no_restart = RAN_NO_RESTART
        .try_with(|r| r.load(Ordering::Relaxed))
        .unwrap_or(0);
    (all, no_restart)
}

/// What a spin in a blocking call holds: it tells whether a handler ran in this thread
/// since the spin began, and at its end what the kernel's wait would have done with the
/// signals that came.
pub struct Watch(Kind);

enum Kind {
    /// The trampoline counts (the handlers run as signals come).
    Counting { all: u64, no_restart: u64 },
    /// A handler the trampoline does not run exists: every signal is blocked until
    /// [`Watch::end`] or the drop (`None`: the mask could not be changed).
    Blocked(Option<SignalsBlocked>),
}

impl Watch {
    /// Starts watching (audits now and then: see [`AUDIT_EVERY`]).
    pub fn start() -> Self {
        if audit_due() {
            FOREIGN.store(foreign_handlers(), Ordering::Relaxed);
        }
        if FOREIGN.load(Ordering::Relaxed) {
            return Self(Kind::Blocked(SignalsBlocked::new()));
        }
        let (all, no_restart) = ran();
        Self(Kind::Counting { all, no_restart })
    }

    /// Whether a handler ran in this thread since [`Watch::start`]: the spin should end
    /// and ask [`Watch::end`]. Always `false` while signals are blocked (they wait for
    /// the end).
    #[inline]
    pub fn handler_ran(&self) -> bool {
        match self.0 {
            Kind::Counting { all, .. } => ran().0 != all,
            Kind::Blocked(_) => false,
        }
    }

    /// Ends the watch (blocked signals' handlers run now) and says what the signals that
    /// came would have done to a kernel wait: `None` if no handler ran (none came, or
    /// only ignored ones, or ones with a default action), `Some(restart)` otherwise,
    /// `restart` whether every handler that ran has `SA_RESTART`.
    pub fn end(self) -> Option<bool> {
        match self.0 {
            Kind::Counting { all, no_restart } => {
                let (a, n) = ran();
                (a != all).then_some(n == no_restart)
            }
            Kind::Blocked(b) => b.and_then(SignalsBlocked::end),
        }
    }

    /// While counting: what the handlers that ran since the watch began (or since the
    /// last call) would have done to a kernel wait, as [`Watch::end`] says, and the watch
    /// begins again. `None` while signals are blocked (they wait for the end).
    pub fn take(&mut self) -> Option<bool> {
        match &mut self.0 {
            Kind::Counting { all, no_restart } => {
                let (a, n) = ran();
                let r = (a != *all).then_some(n == *no_restart);
                (*all, *no_restart) = (a, n);
                r
            }
            Kind::Blocked(_) => None,
        }
    }

    /// Whether this watch blocks signals (a handler the trampoline does not run exists).
    #[cfg(test)]
    pub fn blocks(&self) -> bool {
        matches!(self.0, Kind::Blocked(_))
    }
}

/// Held by every unit test that installs a signal handler (they share the process and
/// its dispositions, which the audit reads).
#[cfg(test)]
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static USR1: AtomicUsize = AtomicUsize::new(0);
    static INFO_VALUE: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn on_usr1(_: c_int) {
        USR1.fetch_add(1, Ordering::SeqCst);
    }

    extern "C" fn on_info(_: c_int, info: *mut siginfo_t, _: *mut c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let v = unsafe { (*info).si_value().sival_ptr } as usize;
        INFO_VALUE.store(v, Ordering::SeqCst);
    }

    fn query(sig: c_int) -> libc::sigaction {
        // SAFETY: a query into a local action.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            assert_eq!(sigaction(sig, std::ptr::null(), &mut a), 0);
            a
        }
    }

    fn kernel(sig: c_int) -> libc::sigaction {
        // SAFETY: a query of the C library's (the kernel's) disposition.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut a), 0);
            a
        }
    }

    use super::SERIAL;

    /// An action of `handler` with `flags` and an empty mask.
    fn action(handler: usize, flags: c_int) -> libc::sigaction {
        // SAFETY: an all-zero sigaction is a valid value; its mask is emptied below.
        let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
        a.sa_sigaction = handler;
        a.sa_flags = flags;
        // SAFETY: a valid local sigset.
        unsafe { libc::sigemptyset(&mut a.sa_mask) };
        a
    }

    /// Installs `handler` for `sig` through the table.
    fn install(sig: c_int, handler: usize, flags: c_int) {
        let a = action(handler, flags);
        // SAFETY: a local action of a handler of this module (or a default disposition).
        let r = unsafe { sigaction(sig, &a, std::ptr::null_mut()) };
        assert_eq!(r, 0);
    }

    fn usr1() -> usize {
        on_usr1 as extern "C" fn(c_int) as usize
    }

    /// Runs `f` as a program's handler would run: below the frames of what it
    /// interrupted (the kernel pushes a signal frame), with the trampoline's marks.
    #[inline(never)]
    fn handler<T>(f: impl FnOnce() -> T) -> T {
        let pad = std::hint::black_box([0u8; 512]);
        let r = as_handler(f);
        std::hint::black_box(&pad);
        r
    }

    fn in_call() -> usize {
        MARKS.with(|m| m.in_call.get())
    }

    /// A call marks the thread until it ends, a nested one keeps the mark, a pause clears
    /// it while it lasts (but for what it holds) and puts it back.
    #[test]
    fn calls_mark_the_thread_and_pauses_clear_the_mark() {
        assert_eq!(in_call(), 0);
        let outer = Call::enter().expect("a call of its own");
        let mark = in_call();
        assert_ne!(mark, 0);
        drop(Call::enter().expect("nested"));
        assert_eq!(
            in_call(),
            mark,
            "the nested call ended, the outer one goes on"
        );
        {
            let pause = Pause::begin();
            assert_eq!(in_call(), 0);
            assert_eq!(pause.hold(in_call), mark);
            assert_eq!(in_call(), 0);
        }
        assert_eq!(in_call(), mark);
        drop(outer);
        assert_eq!(in_call(), 0);
    }

    /// The library's calls nest within one context; a handler's call on top of a call
    /// that holds locks is refused, one on top of a wait is not, and what the handler
    /// found is put back after it; marks that a `siglongjmp` left are dropped by the next
    /// call from above the trampoline's frame.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's locals are not laid out on a stack that grows down"
    )]
    fn a_handler_may_call_in_only_where_the_call_beneath_holds_no_lock() {
        let outer = Call::enter().expect("a call of its own");
        assert!(Call::enter().is_some(), "nested in the same context");
        assert!(handler(Call::enter).is_none(), "on top of a call");
        {
            let _pause = Pause::begin();
            assert!(handler(Call::enter).is_some(), "on top of a wait");
            let held = _pause.hold(|| handler(Call::enter).is_none());
            assert!(held, "on top of a wait's locked look");
            // A handler of a handler: still on top of the wait only.
            assert!(as_handler(|| handler(Call::enter).is_some()));
        }
        assert!(handler(Call::enter).is_none(), "the pause is over");
        drop(outer);
        assert!(handler(Call::enter).is_some(), "no call beneath");
        // A handler left by `siglongjmp` from a call beneath (its marks stay): below the
        // trampoline's frame still in it, above it not.
        MARKS.with(|m| {
            m.beneath.set(usize::MAX);
            m.handler.set(usize::MAX);
        });
        assert!(Call::enter().is_none(), "below a live handler");
        MARKS.with(|m| m.handler.set(1));
        assert!(Call::enter().is_some(), "the stale marks are dropped");
        assert_eq!(
            MARKS.with(|m| (m.in_call.get(), m.beneath.get(), m.handler.get())),
            (0, 0, 0)
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal handlers")]
    fn the_program_sees_its_own_handler_and_flags_and_the_kernel_the_trampoline() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        install(libc::SIGUSR1, usr1(), libc::SA_RESTART);
        let q = query(libc::SIGUSR1);
        assert_eq!(q.sa_sigaction, usr1());
        assert_eq!(
            q.sa_flags & (libc::SA_RESTART | libc::SA_SIGINFO),
            libc::SA_RESTART
        );
        let k = kernel(libc::SIGUSR1);
        assert_eq!(k.sa_sigaction, trampoline_addr());
        assert_ne!(k.sa_flags & libc::SA_SIGINFO, 0);
        let before = USR1.load(Ordering::SeqCst);
        let w = Watch::start();
        assert!(!w.blocks(), "no foreign handler in this test process");
        assert!(!w.handler_ran());
        // SAFETY: signals this thread (not blocked: the handler runs before it returns).
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
        assert_eq!(USR1.load(Ordering::SeqCst), before + 1);
        assert!(w.handler_ran());
        let mut w2 = Watch::start();
        assert_eq!(w2.take(), None, "nothing since it began");
        assert_eq!(w.end(), Some(true), "SA_RESTART: restarted");
        // SAFETY: as above.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
        assert_eq!(w2.take(), Some(true));
        assert!(!w2.handler_ran(), "take begins the watch again");
        assert_eq!(w2.end(), None);
        // signal(): the old handler back, BSD flags; siginterrupt takes SA_RESTART away.
        // SAFETY: valid handler values.
        let old = unsafe { signal(libc::SIGUSR1, libc::SIG_IGN, Flavour::Bsd) };
        assert_eq!(old, usr1());
        assert_eq!(kernel(libc::SIGUSR1).sa_sigaction, libc::SIG_IGN);
        // SAFETY: as above.
        let old = unsafe { signal(libc::SIGUSR1, usr1(), Flavour::Bsd) };
        assert_eq!(old, libc::SIG_IGN);
        assert_ne!(query(libc::SIGUSR1).sa_flags & libc::SA_RESTART, 0);
        assert_eq!(siginterrupt(libc::SIGUSR1, 1), 0);
        assert_eq!(query(libc::SIGUSR1).sa_flags & libc::SA_RESTART, 0);
        assert_eq!(kernel(libc::SIGUSR1).sa_sigaction, trampoline_addr());
        let w = Watch::start();
        // SAFETY: as above.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
        assert_eq!(w.end(), Some(false), "no SA_RESTART: EINTR");
        assert_eq!(siginterrupt(libc::SIGUSR1, 0), 0);
        assert_ne!(query(libc::SIGUSR1).sa_flags & libc::SA_RESTART, 0);
        // An ignored signal runs nothing: no handler ran.
        // SAFETY: as above.
        unsafe { signal(libc::SIGUSR1, libc::SIG_IGN, Flavour::Bsd) };
        let w = Watch::start();
        // SAFETY: as above.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
        assert!(!w.handler_ran());
        assert_eq!(w.end(), None);
        // SAFETY: as above.
        unsafe { signal(libc::SIGUSR1, libc::SIG_DFL, Flavour::Bsd) };
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal handlers")]
    fn a_siginfo_handler_gets_the_senders_value_and_one_shot_handlers_reset() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let info = on_info as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
        install(libc::SIGUSR2, info, libc::SA_SIGINFO | libc::SA_RESETHAND);
        assert_eq!(
            query(libc::SIGUSR2).sa_flags & libc::SA_SIGINFO,
            libc::SA_SIGINFO,
            "the program's own SA_SIGINFO is reported"
        );
        // SAFETY: queues SIGUSR2 with a value to this thread.
        unsafe {
            let v = libc::sigval {
                sival_ptr: 0x5eed as *mut c_void,
            };
            assert_eq!(
                libc::pthread_sigqueue(libc::pthread_self(), libc::SIGUSR2, v),
                0
            );
        }
        assert_eq!(INFO_VALUE.load(Ordering::SeqCst), 0x5eed);
        // SA_RESETHAND: the kernel reset the disposition, and the program sees that.
        assert_eq!(query(libc::SIGUSR2).sa_sigaction, libc::SIG_DFL);
        // A one-shot handler without SA_SIGINFO: after its run the kernel keeps the flags
        // it was given, the trampoline's SA_SIGINFO among them; the program must not see it.
        install(libc::SIGUSR2, usr1(), libc::SA_RESETHAND);
        // SAFETY: signals this thread (the handler counts).
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
        let q = query(libc::SIGUSR2);
        assert_eq!(q.sa_sigaction, libc::SIG_DFL);
        assert_eq!(q.sa_flags & libc::SA_SIGINFO, 0, "{:#x}", q.sa_flags);
        assert_ne!(kernel(libc::SIGUSR2).sa_flags & libc::SA_SIGINFO, 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal sets")]
    fn bad_numbers_and_handlers_fail_as_in_the_c_library() {
        // SAFETY: invalid arguments only.
        unsafe {
            assert_eq!(signal(0, libc::SIG_IGN, Flavour::Bsd), libc::SIG_ERR);
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(
                signal(libc::SIGUSR1, libc::SIG_ERR, Flavour::Bsd),
                libc::SIG_ERR
            );
            assert_eq!(errno(), libc::EINVAL);
            let a = action(usr1(), 0);
            assert_eq!(sigaction(libc::SIGKILL, &a, std::ptr::null_mut()), -1);
            assert_eq!(errno(), libc::EINVAL);
            assert_eq!(sigaction(99, &a, std::ptr::null_mut()), -1);
            assert_eq!(errno(), libc::EINVAL);
        }
        assert_eq!(siginterrupt(0, 1), -1);
        assert_ne!(
            kernel(libc::SIGKILL).sa_sigaction,
            trampoline_addr(),
            "a refused install leaves nothing behind"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal handlers")]
    fn a_handler_the_trampoline_does_not_run_makes_watches_block_signals() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!foreign_handlers());
        // SAFETY: a handler installed behind the table's back (the C library's own
        // sigaction, as a raw system call would), then the default again.
        unsafe { libc::signal(libc::SIGURG, usr1()) };
        assert!(foreign_handlers());
        // The next audit of this thread finds it.
        audit_next();
        let w = Watch::start();
        assert!(w.blocks());
        drop(w);
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGURG, libc::SIG_DFL) };
        audit_next();
        assert!(!Watch::start().blocks());
    }
}
