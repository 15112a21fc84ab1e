//! Busy polling: `epoll_wait` looks without waiting for a while before it sleeps.
//!
//! Opt-in ([`crate::config::ENV_BUSY_POLL`], `ism-sim run --busy-poll USEC`), as Linux's
//! `net.core.busy_poll` makes `poll`, `select` and `epoll_wait` spin on a device queue
//! (`ep_busy_loop` in `fs/eventpoll.c`). Here the spin saves the sleep and the wake-up: a
//! thread that sleeps in `epoll_wait` is woken by the record the peer (or the interrupt
//! thread) writes into its doorbell, a wake-up across cores that costs more than the
//! whole request of a small HTTP exchange over shared memory; a thread that spins sees
//! the record come in its next look. It costs a core while it spins, so it pays only
//! where every busy process has a core of its own.
//!
//! This module owns the spin and the count of SMC-D connections that enables it; it never
//! changes what a call returns: a spin that sees events returns what the kernel's
//! `epoll_wait` returned for them, one that sees none sleeps in the kernel for what is
//! left of the caller's timeout, and a signal that came during the spin ends the call
//! with `EINTR`, as it would have ended the kernel's wait (`epoll_wait` is never
//! restarted after a handler, `SA_RESTART` or not: signal(7)).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libc::c_int;

/// SMC-D connections alive in this process whose peer rings their doorbell (`Bells`
/// exchanged): the spin runs only while there are some. A process of TCP sockets only (as
/// nginx's master) sleeps as before, and so does one whose connections are woken through
/// the interrupt thread: that thread needs the core a spin would take.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one live SMC-D connection (whose peer rings its doorbell) until dropped.
#[derive(Debug)]
pub struct Live(());

impl Live {
    /// One more live connection.
    pub fn new() -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The longest spin accepted (signals wait at most this long: see [`spin`]).
pub const MAX_SPIN: Duration = Duration::from_millis(10);

/// `epoll` descriptors with an SMC-D descriptor whose peer rings its doorbell registered
/// for `EPOLLIN` (set by the `epoll_ctl` hook, cleared when the number is closed): only
/// their waits spin.
pub static SPIN_SETS: crate::table::Bitmap = crate::table::Bitmap::new();

/// How long a wait with `timeout_ms` (as `epoll_wait`'s: negative is forever) spins now:
/// `None` without busy polling, without live SMC-D connections, for a look (0), or if
/// `reads_smc` (asked last) says the wait is not for data on such a connection. A wait
/// only for writability, or only on other descriptors, sleeps at once: what ends it comes
/// through the interrupt thread or the kernel, and a spin would take the core they need
/// (iperf3's sender, which waits in `select` for room, ran at a third of its speed).
pub fn budget(timeout_ms: c_int, reads_smc: impl FnOnce() -> bool) -> Option<Duration> {
    if timeout_ms == 0 || LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let us = crate::config::Config::loaded().busy_poll_us;
    if us == 0 {
        return None;
    }
    if !reads_smc() {
        return None;
    }
    let mut d = Duration::from_micros(us.into()).min(MAX_SPIN);
    if timeout_ms > 0 {
        d = d.min(Duration::from_millis(timeout_ms as u64));
    }
    Some(d)
}

/// What a spin ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spun {
    /// A look returned this (events, or an error): the call returns it.
    Done(c_int),
    /// A signal with a handler came: the call fails with `EINTR`.
    Interrupted,
    /// Nothing came: the call sleeps in the kernel, with `timeout_ms` (as the caller's,
    /// less the spin).
    Sleep {
        /// What is left of the caller's timeout (negative: forever).
        timeout_ms: c_int,
    },
}

/// Spins for `budget` calling `look` (one `epoll_wait` without waiting: events, 0, or -1
/// with `errno`) until it returns anything but 0. A handler that runs meanwhile ends the
/// spin with `EINTR`, as it would have ended the kernel's wait (see
/// [`crate::signals::Watch`]; where the program has handlers the library cannot see,
/// signals are blocked for the spin and looked at when it ends, so a signal waits at most
/// `budget`).
pub fn spin(budget: Duration, timeout_ms: c_int, mut look: impl FnMut() -> c_int) -> Spun {
    let start = Instant::now();
    // One look before the watch: a busy program finds its events there.
    let n = look();
    if n != 0 {
        return Spun::Done(n);
    }
    let watch = crate::signals::Watch::start();
    loop {
        let n = look();
        if n != 0 {
            let e = crate::real::errno();
            drop(watch); // handlers of what came run now if blocked; the events are returned
            crate::real::set_errno(e);
            return Spun::Done(n);
        }
        if watch.handler_ran() || start.elapsed() >= budget {
            break;
        }
        std::hint::spin_loop();
    }
    if watch.end().is_some() {
        return Spun::Interrupted;
    }
    let timeout_ms = if timeout_ms < 0 {
        timeout_ms
    } else {
        let spent = start.elapsed().as_millis().min(c_int::MAX as u128) as c_int;
        (timeout_ms - spent).max(0)
    };
    Spun::Sleep { timeout_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal sets")]
    fn a_look_that_finds_events_ends_the_spin_with_them() {
        let mut n = 0;
        let r = spin(Duration::from_secs(5), -1, || {
            n += 1;
            if n == 3 {
                2
            } else {
                0
            }
        });
        assert_eq!((r, n), (Spun::Done(2), 3));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal sets")]
    fn a_spin_that_finds_nothing_leaves_the_rest_of_the_timeout() {
        let r = spin(Duration::from_millis(3), 1000, || 0);
        match r {
            Spun::Sleep { timeout_ms } => assert!((990..=997).contains(&timeout_ms), "{r:?}"),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            spin(Duration::from_micros(10), -1, || 0),
            Spun::Sleep { timeout_ms: -1 }
        );
    }

    #[test]
    fn a_failing_look_ends_the_spin_with_its_errno() {
        let r = spin(Duration::from_secs(5), -1, || {
            crate::real::set_errno(libc::EBADF);
            -1
        });
        assert_eq!((r, crate::real::errno()), (Spun::Done(-1), libc::EBADF));
    }

    extern "C" fn on_usr2(_: c_int) {}

    /// Installs `handler` for SIGUSR2, through the library's table (`ours`) or behind its
    /// back (the C library's own `sigaction`, as a raw system call would).
    fn usr2(handler: usize, ours: bool) {
        // SAFETY: an all-zero sigaction is valid; a handler that does nothing, or a
        // default disposition (SA_RESTART: epoll_wait is never restarted all the same).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if ours {
                crate::signals::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
            } else {
                libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no signal sets")]
    fn a_signal_during_the_spin_ends_it_with_eintr() {
        let _s = crate::signals::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Through the trampoline (the handler runs in the spin), and behind the library's
        // back (the spin blocks the signal, which waits for its end).
        for ours in [true, false] {
            usr2(on_usr2 as extern "C" fn(c_int) as usize, ours);
            crate::signals::audit_next();
            let mut looks = 0;
            let r = spin(Duration::from_millis(2), -1, || {
                looks += 1;
                if looks == 2 {
                    // SAFETY: signals the calling thread.
                    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
                }
                0
            });
            assert_eq!(r, Spun::Interrupted, "ours: {ours}");
            // An ignored signal does not interrupt.
            usr2(libc::SIG_IGN, ours);
            crate::signals::audit_next();
            let r = spin(Duration::from_millis(2), -1, || {
                // SAFETY: signals the calling thread.
                unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
                0
            });
            assert_eq!(r, Spun::Sleep { timeout_ms: -1 }, "ours: {ours}");
            usr2(libc::SIG_DFL, ours);
        }
    }

    #[test]
    fn only_live_connections_and_a_timeout_make_a_budget() {
        // Without the variable set (the test process's configuration), never.
        let _live = Live::new();
        assert_eq!(budget(-1, || true), None);
        assert_eq!(budget(0, || true), None);
    }
}
