//! Busy polling in `epoll_wait`: before a program's `epoll_wait` sleeps, it polls the
//! function's SBA for a short while on the program's own thread, as Linux's busy polling
//! does for `epoll` (`ep_busy_loop` in `fs/eventpoll.c`, with `net.core.busy_poll`) and as
//! preload libraries such as libvma do.
//!
//! Why: the readiness of an SMC-D descriptor is its doorbell (see `crate::smc`), which the
//! interrupt handler rings. A program asleep in `epoll_wait` is then woken twice per
//! arrival: the device wakes the process's interrupt thread, which rings the doorbell,
//! which wakes the program; on a machine whose cross-core wake-up costs ~20 µs that halves
//! a request/response server against TCP (one wake-up). While the program's thread polls,
//! it runs the handler itself (rings the doorbell on its own thread) and tells the device
//! not to wake the interrupt thread (`SmcdOps::set_polling`).
//!
//! Signals: the spin runs with signals blocked, and afterwards a signal that came
//! meanwhile and has a handler makes the call fail with `EINTR` once its handler has run,
//! as a signal ends a sleeping `epoll_wait` (never restarted, `SA_RESTART` or not:
//! signal(7)). Without the block, a handler run between two polls would interrupt
//! nothing, and a program that stops its event loop with a signal (nginx's workers)
//! would sleep on.
//!
//! Nothing here sleeps or blocks: what is left of the wait is the C library's
//! `epoll_wait`, with the program's timeout (the spin is far below its 1 ms unit).
//!
//! Only where it pays: on a loopback board with no-copy connections, whose messages need
//! no thread but the two programs' (direct moves, host-interface.md 5.5). Where the board
//! moves the data, a polling program takes the core the board's worker needs on a small
//! machine (`crate::runtime::Runtime::busy_poll`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libc::c_int;

use crate::real::real;

/// How long `epoll_wait` polls before it sleeps. A request/response peer answers within
/// a few µs while it runs, so this covers a round trip; an idle program pays it once per
/// sleep.
const BUSY: Duration = Duration::from_micros(50);

/// How often the spin asks the kernel for the epoll set's events (other descriptors in the
/// set, doorbells rung by another thread) when its own polls found nothing.
const RECHECK: Duration = Duration::from_micros(5);

/// SMC-D connections open in this process ([`Open`] values alive).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Counts one open SMC-D connection while it lives (a field of `crate::smc::SmcFd`).
#[derive(Debug)]
pub struct Open(());

impl Open {
    /// One more open connection.
    pub fn new() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a spin ended.
pub enum Spun {
    /// The epoll set had events (or the kernel's call failed, with `errno` set): return
    /// this result.
    Done(c_int),
    /// A signal with a handler came (the handler has run): fail with `EINTR`.
    Interrupted,
    /// Nothing came: sleep in the kernel.
    Sleep,
}

/// Polls for `epfd`'s events for at most [`BUSY`] if this process has SMC-D connections
/// and the call may wait (`timeout != 0`); `Spun::Sleep` at once otherwise.
///
/// # Safety
/// `events` must be valid for `maxevents` entries, as for `epoll_wait`.
pub unsafe fn epoll_spin(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> Spun {
    if timeout == 0 || maxevents <= 0 || OPEN.load(Ordering::Relaxed) == 0 {
        return Spun::Sleep;
    }
    let Some(stack) = crate::runtime::existing()
        .filter(|rt| rt.busy_poll())
        .and_then(|rt| rt.stack_if_attached())
    else {
        return Spun::Sleep;
    };
    let Some(wait) = real().epoll_wait else {
        return Spun::Sleep;
    };
    let devices = stack.devices();
    let Some(held) = Held::block() else {
        return Spun::Sleep;
    };
    for d in devices {
        d.ops().set_polling(true);
    }
    let start = Instant::now();
    let mut checked = start;
    let mut result = None;
    loop {
        let mut ran = false;
        for d in devices {
            ran |= d.ops().poll_irq();
        }
        let now = Instant::now();
        if ran || now.duration_since(checked) >= RECHECK {
            // SAFETY: the caller's arguments, with a zero timeout (no wait).
            let n = unsafe { wait(epfd, events, maxevents, 0) };
            if n != 0 {
                result = Some((n, crate::real::errno()));
                break;
            }
            checked = now;
        }
        if now.duration_since(start) >= BUSY {
            break;
        }
        std::hint::spin_loop();
    }
    for d in devices {
        d.ops().set_polling(false);
    }
    // The last poll after giving up the polling hint (host-interface.md 5.4: a raise the
    // device held back meanwhile is found here, or it wakes the interrupt thread).
    for d in devices {
        d.ops().poll_irq();
    }
    let interrupted = held.pending_handler();
    drop(held);
    match result {
        Some((n, errno)) => {
            // A failed call's own `errno` (the caller restores it otherwise).
            crate::real::set_errno(errno);
            Spun::Done(n)
        }
        None if interrupted => Spun::Interrupted,
        None => Spun::Sleep,
    }
}

/// The calling thread's signal mask while it spins, restored on drop (pending signals are
/// delivered then, before the call returns).
struct Held {
    old: libc::sigset_t,
}

impl Held {
    fn block() -> Option<Self> {
        // SAFETY: all-zero sigsets are valid values, filled/overwritten by the calls, which
        // change only the calling thread's mask.
        unsafe {
            let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
                (std::mem::zeroed(), std::mem::zeroed());
            libc::sigfillset(&mut all);
            (libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) == 0).then_some(Self { old })
        }
    }

    /// Whether a signal is pending that the program's own mask lets through and that has
    /// a handler: its delivery would have ended a sleeping `epoll_wait` with `EINTR`.
    fn pending_handler(&self) -> bool {
        // SAFETY: an all-zero sigset is valid; `sigpending` fills it for this thread and
        // process; `sigaction` with a null new action only reads the current one.
        unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            if libc::sigpending(&mut pending) != 0 {
                return false;
            }
            (1..=libc::SIGRTMAX()).any(|sig| {
                if libc::sigismember(&pending, sig) != 1 || libc::sigismember(&self.old, sig) == 1 {
                    return false;
                }
                let mut sa: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                    && sa.sa_sigaction != libc::SIG_DFL
                    && sa.sa_sigaction != libc::SIG_IGN
            })
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`, for the calling thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static RAN: AtomicU32 = AtomicU32::new(0);

    extern "C" fn count(_: c_int) {
        RAN.fetch_add(1, Ordering::SeqCst);
    }

    /// Sets `sig`'s action: a counting handler (`true`) or `SIG_IGN`.
    fn action(sig: c_int, handler: bool) {
        // SAFETY: an all-zero sigaction is valid; the handler is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = if handler {
                count as extern "C" fn(c_int) as usize
            } else {
                libc::SIG_IGN
            };
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }

    fn raise(sig: c_int) {
        // SAFETY: signals the calling thread.
        unsafe { libc::pthread_kill(libc::pthread_self(), sig) };
    }

    #[test]
    fn a_signal_held_during_the_spin_interrupts_only_if_it_has_a_handler_the_program_lets_in() {
        // SIGURG: nothing else in the test process uses it.
        let sig = libc::SIGURG;
        // A handler (SA_RESTART or not, epoll_wait is never restarted): interrupts, and
        // the handler runs when the mask is restored.
        action(sig, true);
        let before = RAN.load(Ordering::SeqCst);
        let held = Held::block().expect("block");
        raise(sig);
        assert_eq!(RAN.load(Ordering::SeqCst), before, "ran while blocked");
        assert!(held.pending_handler());
        drop(held);
        assert_eq!(
            RAN.load(Ordering::SeqCst),
            before + 1,
            "not delivered at the end"
        );
        // Ignored: nothing to interrupt.
        action(sig, false);
        let held = Held::block().expect("block");
        raise(sig);
        assert!(!held.pending_handler());
        drop(held);
        // Blocked by the program itself: it would not have interrupted its epoll_wait.
        action(sig, true);
        // SAFETY: an all-zero sigset is valid; changes this thread's mask only.
        let program = unsafe {
            let mut m: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut m);
            libc::sigaddset(&mut m, sig);
            libc::pthread_sigmask(libc::SIG_BLOCK, &m, std::ptr::null_mut());
            m
        };
        let held = Held::block().expect("block");
        raise(sig);
        assert!(!held.pending_handler());
        drop(held);
        let before = RAN.load(Ordering::SeqCst);
        // SAFETY: unblocks what was blocked above; the pending signal is delivered.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &program, std::ptr::null_mut()) };
        assert_eq!(RAN.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn without_smc_d_connections_the_spin_is_skipped() {
        // No connection in this test process: epoll_wait goes straight to the kernel.
        // SAFETY: with no connection, nothing is called with the (invalid) arguments.
        let r = unsafe { epoll_spin(-1, std::ptr::null_mut(), 1, -1) };
        assert!(matches!(r, Spun::Sleep));
    }
}
