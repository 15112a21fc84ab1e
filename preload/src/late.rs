//! Wakes the `poll` and `select` sleepers that a fallback to TCP left on a connection's
//! doorbell, once the TCP socket has something for them.
//!
//! While a connection is set up, the program's descriptor is the doorbell socket A
//! (`crate::connecting`); a thread of the program may sleep on it in `poll` or `select`.
//! When the peer declines, the TCP socket takes the number, but the kernel registers a
//! `poll` on the files it finds on its **first** pass only (`fs/select.c`, `do_poll`: the
//! poll table's `_qproc` is cleared after it), so the sleeper stays on A's wait queue and
//! is woken only by an event on A; it then looks at the number again, which names the TCP
//! socket. Draining A→B at the end wakes those that wait for `POLLOUT` (the TCP socket is
//! writable); one that waits for `POLLIN` alone (a greeting) must be woken when the TCP
//! socket is readable, or it sleeps until its timeout. So the library keeps A (its own
//! descriptor of it) and watches the TCP socket in an `epoll` set of its own, registered
//! by the program's number: when the socket is readable, hung up or in error, A is shut
//! down, which wakes every sleeper on it, and closed. An `epoll` set does not keep a file
//! open (`fs/eventpoll.c`, `eventpoll_release`), so the program's `close` still closes the
//! connection; a watch whose number no longer holds its socket (closed, or another file
//! put there) ends at the next sweep (every [`SWEEP`]).
//!
//! This module must never keep the program's socket open, read from it or write to it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use libc::c_int;

/// How often the watches whose number no longer holds their socket are looked for.
const SWEEP: Duration = Duration::from_millis(500);

/// At most this many watches at once; beyond, A is shut down at once (as before the
/// watch: a `POLLIN`-only sleeper then sleeps until its timeout).
const MAX_WATCHES: usize = 1024;

/// One sleeper's file kept until its socket has something.
struct Watch {
    /// The library's descriptor of A.
    a: OwnedFd,
    /// The program's number, which held the TCP socket when the watch began.
    fd: c_int,
    /// The TCP socket's identity (device, inode), to tell it from a later file there.
    tcp: (u64, u64),
    /// The key of its registration in the set.
    key: u64,
}

/// The watches, and the `epoll` set they are registered in.
pub struct Late {
    watches: Vec<Watch>,
    epfd: Option<OwnedFd>,
    /// A pool thread serves the set (see [`serve`]).
    serving: bool,
    next_key: u64,
}

static LATE: Mutex<Late> = Mutex::new(Late {
    watches: Vec::new(),
    epfd: None,
    serving: false,
    next_key: 1,
});

fn lock() -> MutexGuard<'static, Late> {
    LATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shuts A down (waking every sleeper on it) and closes it.
fn wake(a: OwnedFd) {
    if let Some(sh) = crate::real::real().shutdown {
        // SAFETY: shuts down the library's own descriptor of A.
        unsafe { sh(a.as_raw_fd(), libc::SHUT_RDWR) };
    }
    drop(a);
}

/// After a fallback put the TCP socket on the program's number `fd`: keeps `a` (the
/// library's descriptor of the connection's doorbell A) until that socket is readable,
/// hung up or in error, then shuts A down (see the module's doc). If it cannot watch
/// (no `epoll` set, too many watches, the number holds no socket), shuts A down at once.
pub fn watch(a: OwnedFd, fd: c_int) {
    let Some(tcp) = crate::smc::file_id(fd) else {
        return wake(a);
    };
    let mut l = lock();
    if l.watches.len() >= MAX_WATCHES {
        drop(l);
        return wake(a);
    }
    if l.epfd.is_none() {
        // SAFETY: a new epoll set, close-on-exec.
        let e = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let e = if e < 0 { -1 } else { crate::fds::lift(e) };
        if e < 0 {
            drop(l);
            return wake(a);
        }
        use std::os::fd::FromRawFd;
        // SAFETY: a new descriptor nobody else owns.
        l.epfd = Some(unsafe { OwnedFd::from_raw_fd(e) });
    }
    let key = l.next_key;
    l.next_key += 1;
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
        u64: key,
    };
    let epfd = l.epfd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    // SAFETY: registers the program's number (the TCP socket now) in our own set, with a
    // valid event; the set does not keep the socket open.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        drop(l);
        return wake(a);
    }
    l.watches.push(Watch { a, fd, tcp, key });
    if !l.serving {
        l.serving = true;
        drop(l);
        if crate::workers::run("ism-run-late", Box::new(serve)).is_err() {
            // No thread to be had: wake them all now rather than leave them asleep.
            let mut l = lock();
            l.serving = false;
            let all: Vec<Watch> = l.watches.drain(..).collect();
            drop(l);
            all.into_iter().for_each(|w| wake(w.a));
        }
    }
}

/// The pool job: waits on the set and ends each watch whose socket has something, sweeps
/// those whose number no longer holds their socket, and returns once none is left.
fn serve() {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
    loop {
        let epfd = {
            let mut l = lock();
            if l.watches.is_empty() {
                l.serving = false;
                return;
            }
            l.epfd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
        };
        // SAFETY: waits on our own set into a local array of its length.
        let n = unsafe {
            libc::epoll_wait(
                epfd,
                events.as_mut_ptr(),
                events.len() as c_int,
                SWEEP.as_millis() as c_int,
            )
        };
        let ready: Vec<u64> = events[..n.max(0) as usize].iter().map(|e| e.u64).collect();
        let mut done = Vec::new();
        {
            let mut l = lock();
            let mut i = 0;
            while i < l.watches.len() {
                let w = &l.watches[i];
                let gone = crate::smc::file_id(w.fd) != Some(w.tcp);
                if ready.contains(&w.key) || gone {
                    let w = l.watches.swap_remove(i);
                    if !gone {
                        // SAFETY: removes the number's registration from our own set (it
                        // still names the watched socket).
                        unsafe {
                            libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, w.fd, std::ptr::null_mut())
                        };
                    }
                    done.push(w);
                } else {
                    i += 1;
                }
            }
        }
        done.into_iter().for_each(|w| wake(w.a));
    }
}

/// The library's descriptors here (A of each watch, the set), for a forked child to close.
pub fn own_fds(l: &Late) -> Vec<c_int> {
    l.watches
        .iter()
        .map(|w| w.a.as_raw_fd())
        .chain(l.epfd.as_ref().map(AsRawFd::as_raw_fd))
        .collect()
}

/// For the fork handlers: the state, locked (see `crate::fork`).
pub fn prepare_fork() -> MutexGuard<'static, Late> {
    lock()
}

/// In a forked child, with the state locked by the prepare handler: forgets the parent's
/// watches and set (their descriptors are closed by the child handler; no thread serves
/// them here). Allocates nothing.
pub fn in_child(mut l: MutexGuard<'static, Late>) {
    std::mem::forget(std::mem::take(&mut l.watches));
    if let Some(e) = l.epfd.take() {
        std::mem::forget(e);
    }
    l.serving = false;
}
