//! Where the library's own descriptors go: the doorbells' ends (B) and the TCP sockets it
//! keeps behind SMC-D connections, two per connection that the program does not know of.
//!
//! They must not take numbers the program would have had, nor make it run out of
//! descriptors sooner than over TCP (a server under a soft `RLIMIT_NOFILE` of 1024 ran out
//! at its 337th connection, three descriptors each). So on first use the library raises
//! the soft limit (to four times what it was, at most the hard limit; Go's runtime raises
//! it to the hard limit at start-up) and puts its descriptors at or above the program's
//! old limit: the numbers below it are the program's alone, as without the library. If the
//! limit cannot be raised (soft limit = hard limit), the library starts at half the limit,
//! and once nothing is free up there takes any number, as it did before: such a program
//! may run out of descriptors sooner than over TCP (documented in `docs/ism-run.md`).
//!
//! A set-up must not run out of descriptors once it committed to SMC-D (the peer would be
//! on SMC-D, the program's connection failed): a server, before it answers its client,
//! sets aside the numbers it will need, above the floor ([`reserve`]), and declines the
//! client if it cannot (`SMC_CLC_DECL_MEM`, as Linux's server when it cannot get what a
//! connection needs); a client takes them before it registers with the board
//! ([`take_spares`]) and connects over plain TCP if it cannot. A [`lift`] that finds no
//! free number then takes a set-aside one.
//!
//! Owns: the floor, the raise and the set-aside numbers. Must never: close or move a
//! descriptor it did not make.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;

use libc::c_int;

use crate::real::real;

/// The lowest number for the library's own descriptors (see the module docs).
static FLOOR: OnceLock<c_int> = OnceLock::new();

/// The floor never goes above this (a descriptor at a high number grows the process's
/// descriptor table to that size in the kernel; a program with more than this many
/// descriptors of its own shares the numbers above it with the library).
const MOST: u64 = 1 << 16;

/// The floor, raising the soft limit on first use.
pub fn floor() -> c_int {
    *FLOOR.get_or_init(raise)
}

/// Raises the soft `RLIMIT_NOFILE` (to four times, at most the hard limit) and returns the
/// floor: the old soft limit if it was raised, half of it otherwise (at most [`MOST`]).
fn raise() -> c_int {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limit into a local structure of its type.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 512;
    }
    let soft = lim.rlim_cur;
    let want = soft.saturating_mul(4).min(lim.rlim_max);
    let raised = want > soft && {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: sets the limit from a local structure of its type.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 }
    };
    let floor = if raised { soft } else { soft / 2 };
    floor.clamp(3, MOST) as c_int
}

/// A duplicate of `fd` at or above the [`floor`], close-on-exec; if no number is free
/// there (or the program lowered its limit below the floor), at any number; `-1` with
/// `errno` set (`EMFILE`) if none is free at all and the thread set none aside
/// ([`reserve`]). The caller closes `fd`.
pub fn lift(fd: c_int) -> c_int {
    let floor = floor();
    let Some(f) = real().fcntl else {
        return crate::real::fail(libc::ENOSYS);
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates the caller's descriptor.
    let n = unsafe { f(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if n >= 0 {
        return n;
    }
    // SAFETY: as above, at any number.
    let n = unsafe { f(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n >= 0 {
        return n;
    }
    match RESERVED.try_with(|r| r.borrow_mut().pop()).ok().flatten() {
        Some(spare) => take_spare(fd, spare),
        None => n,
    }
}

/// Puts the open file of `fd` on the number of `spare` (`dup3`, close-on-exec: it needs
/// no free number) and returns that number, or -1 with `errno`.
fn take_spare(fd: c_int, spare: OwnedFd) -> c_int {
    let Some(dup3) = real().dup3 else {
        return crate::real::fail(libc::ENOSYS);
    };
    // SAFETY: `spare` is ours; `dup3` replaces its file with `fd`'s.
    let n = unsafe { dup3(fd, spare.as_raw_fd(), libc::O_CLOEXEC) };
    if n < 0 {
        return n;
    }
    spare.into_raw_fd()
}

thread_local! {
    /// Numbers this thread set aside ([`reserve`]) for its set-up under way.
    static RESERVED: RefCell<Vec<OwnedFd>> = const { RefCell::new(Vec::new()) };
}

/// `n` descriptor numbers at or above the [`floor`] (copies of `like`), or `None` if
/// that many are not free there: a set-up takes them before it commits to SMC-D, so that
/// it never runs out of descriptors after (see [`set_aside`]). Only above the floor: a
/// set-up that would take the program's own numbers (below it) goes to TCP instead, so
/// that the program keeps every number it would have had (a memcached whose limits equal
/// its connection limit serves its clients over TCP once the library's numbers are used
/// up, instead of running out of descriptors itself).
pub fn take_spares(like: c_int, n: usize) -> Option<Vec<OwnedFd>> {
    let floor = floor();
    let f = real().fcntl?;
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: F_DUPFD_CLOEXEC duplicates the caller's descriptor.
        let d = unsafe { f(like, libc::F_DUPFD_CLOEXEC, floor) };
        if d < 0 {
            return None; // `got` closes them
        }
        // SAFETY: a new descriptor nobody else owns.
        got.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) });
    }
    Some(got)
}

/// Gives `spares` (from [`take_spares`]) to the calling thread's later [`lift`]s, until
/// [`release`].
pub fn set_aside(spares: Vec<OwnedFd>) {
    let _ = RESERVED.try_with(|r| r.borrow_mut().extend(spares));
}

/// The numbers the calling thread set aside and did not take (for another thread to
/// [`set_aside`]).
pub fn take_aside() -> Vec<OwnedFd> {
    RESERVED
        .try_with(|r| std::mem::take(&mut *r.borrow_mut()))
        .unwrap_or_default()
}

/// [`take_spares`] and [`set_aside`]: whether the calling thread has `n` numbers aside.
pub fn reserve(like: c_int, n: usize) -> bool {
    take_spares(like, n).map(set_aside).is_some()
}

/// Closes the numbers the calling thread set aside and did not take.
pub fn release() {
    drop(take_aside());
}

/// Calls [`release`] when dropped: a set-up's numbers go back on every way out of it
/// (early returns, a panic).
pub struct ReleaseOnDrop;

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release();
    }
}

/// [`lift`] for a descriptor the library owns: `fd` is closed, its duplicate returned.
///
/// # Errors
/// `errno` of [`lift`] (`EMFILE`: no number free).
pub fn lift_owned(fd: std::os::fd::OwnedFd) -> Result<std::os::fd::OwnedFd, c_int> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let n = lift(fd.as_raw_fd());
    if n < 0 {
        return Err(crate::real::errno());
    }
    // SAFETY: `n` is a new descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no resource limits")]
    fn the_library_descriptors_go_above_the_floor_and_the_limit_was_raised_for_them() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads the limit into a local structure.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) };
        let floor = floor();
        let mut after = before;
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) };
        // Another test of this process may have raised it first: then the floor is the
        // limit as that test found it, and the limit is what it raised it to.
        assert!(after.rlim_cur >= floor as u64, "{floor} {after:?}");
        if before.rlim_cur < before.rlim_max {
            assert!(after.rlim_cur > floor as u64, "raised above the floor");
        }
        let f = std::fs::File::open("/dev/null").unwrap();
        let n = lift(f.as_raw_fd());
        assert!(n >= floor, "{n} below {floor}");
        // SAFETY: reads the flags of the new descriptor, then closes it.
        unsafe {
            assert_ne!(libc::fcntl(n, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            libc::close(n);
        }
    }
}
