//! The C library's own functions behind the ones this library interposes, found once with
//! `dlsym(RTLD_NEXT, ...)` (at load time, from the library's constructor, so that no
//! interposed call made later, e.g. from a signal handler, has to run `dlsym`).

use std::sync::OnceLock;

use libc::{c_int, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

macro_rules! reals {
    ($($name:ident: $ty:ty;)*) => {
        /// The real functions; `None` where the C library has none.
        #[allow(missing_docs)]
        pub struct Real {
            $(pub $name: Option<$ty>,)*
        }

        fn load() -> Real {
            Real {
                $($name: {
                    let name = concat!(stringify!($name), "\0");
                    // SAFETY: `dlsym` with RTLD_NEXT and a NUL-terminated name is always
                    // sound to call; it returns null or the address of that symbol.
                    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
                    if p.is_null() {
                        None
                    } else {
                        // SAFETY: the symbol of this name in the C library has exactly this
                        // C signature (glibc's and the POSIX prototypes).
                        Some(unsafe { std::mem::transmute::<*mut c_void, $ty>(p) })
                    }
                },)*
            }
        }
    };
}

reals! {
    connect: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
    listen: unsafe extern "C" fn(c_int, c_int) -> c_int;
    accept: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    close: unsafe extern "C" fn(c_int) -> c_int;
    dup: unsafe extern "C" fn(c_int) -> c_int;
    dup2: unsafe extern "C" fn(c_int, c_int) -> c_int;
    dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
    fcntl: unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
    fcntl64: unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
    ioctl: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;
    read: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
    write: unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t;
    readv: unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t;
    writev: unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t;
    recv: unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int) -> ssize_t;
    send: unsafe extern "C" fn(c_int, *const c_void, size_t, c_int) -> ssize_t;
    recvfrom: unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
    sendto: unsafe extern "C" fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    recvmsg: unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t;
    sendmsg: unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t;
    recvmmsg: unsafe extern "C" fn(c_int, *mut libc::mmsghdr, libc::c_uint, c_int, *mut libc::timespec) -> c_int;
    sendmmsg: unsafe extern "C" fn(c_int, *mut libc::mmsghdr, libc::c_uint, c_int) -> c_int;
    shutdown: unsafe extern "C" fn(c_int, c_int) -> c_int;
    getsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
    setsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    getsockname: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    getpeername: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    epoll_ctl: unsafe extern "C" fn(c_int, c_int, c_int, *mut libc::epoll_event) -> c_int;
    epoll_wait: unsafe extern "C" fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int;
    epoll_pwait: unsafe extern "C" fn(c_int, *mut libc::epoll_event, c_int, c_int, *const libc::sigset_t) -> c_int;
    poll: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int;
    select: unsafe extern "C" fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int;
    ppoll: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int;
    __poll_chk: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int, size_t) -> c_int;
    __ppoll_chk: unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, *const libc::timespec, *const libc::sigset_t, size_t) -> c_int;
    pselect: unsafe extern "C" fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const libc::timespec, *const libc::sigset_t) -> c_int;
    sendfile: unsafe extern "C" fn(c_int, c_int, *mut libc::off_t, size_t) -> ssize_t;
    sendfile64: unsafe extern "C" fn(c_int, c_int, *mut libc::off64_t, size_t) -> ssize_t;
    splice: unsafe extern "C" fn(c_int, *mut libc::loff_t, c_int, *mut libc::loff_t, size_t, libc::c_uint) -> ssize_t;
    sigaction: unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
    execve: unsafe extern "C" fn(*const libc::c_char, *const *const libc::c_char, *const *const libc::c_char) -> c_int;
    setuid: unsafe extern "C" fn(libc::uid_t) -> c_int;
    setgid: unsafe extern "C" fn(libc::gid_t) -> c_int;
    seteuid: unsafe extern "C" fn(libc::uid_t) -> c_int;
    setegid: unsafe extern "C" fn(libc::gid_t) -> c_int;
    setreuid: unsafe extern "C" fn(libc::uid_t, libc::uid_t) -> c_int;
    setregid: unsafe extern "C" fn(libc::gid_t, libc::gid_t) -> c_int;
    setresuid: unsafe extern "C" fn(libc::uid_t, libc::uid_t, libc::uid_t) -> c_int;
    setresgid: unsafe extern "C" fn(libc::gid_t, libc::gid_t, libc::gid_t) -> c_int;
    setgroups: unsafe extern "C" fn(size_t, *const libc::gid_t) -> c_int;
    __read_chk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t) -> ssize_t;
    __recv_chk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int) -> ssize_t;
    __recvfrom_chk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t;
}

static REAL: OnceLock<Real> = OnceLock::new();

/// The real functions (looked up on first use if the constructor has not run yet).
pub fn real() -> &'static Real {
    REAL.get_or_init(load)
}

/// The calling thread's `errno`.
pub fn errno() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno, valid for the thread's
    // lifetime.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// A value whose drop leaves the calling thread's `errno` as it found it.
///
/// What a descriptor's entry owns (an SMC-D connection, its TCP socket and doorbell, a
/// listener's registration) is let go of by whichever thread drops the last reference,
/// and that may be in the middle of another interposed call that has just set `errno`
/// for the program: a thread whose `recvfrom` ends with `EINTR` while the main thread
/// closes the descriptor drops the connection itself, and the close's own calls (a
/// doorbell write to a closed peer: `EPIPE`) would otherwise be what the program reads.
pub struct KeepsErrno<T>(Option<T>);

impl<T> KeepsErrno<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T> std::ops::Deref for KeepsErrno<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        self.0
            .as_ref()
            .expect("a KeepsErrno is only emptied by its drop")
    }
}

impl<T> Drop for KeepsErrno<T> {
    fn drop(&mut self) {
        let saved = errno();
        drop(self.0.take());
        set_errno(saved);
    }
}

/// `-1` with `errno` set to `e`: the C convention for a failed call.
pub fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `errno` when dropped, as closing a connection's sockets may.
    struct Clobbers;
    impl Drop for Clobbers {
        fn drop(&mut self) {
            set_errno(libc::EPIPE);
        }
    }

    #[test]
    fn a_kept_value_is_dropped_and_errno_stays() {
        set_errno(libc::EINTR);
        drop(Clobbers);
        assert_eq!(errno(), libc::EPIPE, "the value clobbers errno on its own");
        set_errno(libc::EINTR);
        let kept = KeepsErrno::new(Clobbers);
        let _: &Clobbers = &kept;
        drop(kept);
        assert_eq!(errno(), libc::EINTR);
    }
}
