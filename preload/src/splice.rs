//! `sendfile`, `sendfile64` and `splice` with an SMC-D descriptor at one end, emulated
//! with reads and writes through a buffer (the kernel's versions would reach the doorbell
//! socket, not the connection).
//!
//! * `sendfile(out, in, offset, count)` to an SMC-D descriptor: reads the file (`pread`
//!   at `*offset`, which is then advanced by what was sent, or `read`, which advances the
//!   file position) and writes to the connection, as Linux's `do_sendfile` in
//!   `fs/read_write.c`: up to `count` (at most `MAX_RW_COUNT`) bytes or the end of the
//!   file; blocking as the descriptor says (`O_NONBLOCK`: only what fits in the peer's
//!   ring now, else `EAGAIN`); after some bytes an error or a signal gives the count;
//!   `EPIPE` and `SIGPIPE` as `write`. From an SMC-D descriptor (`in`): one read from the
//!   connection, written to `out` (`ESPIPE` with an offset, as for a socket).
//! * `splice` between a pipe and an SMC-D descriptor, either way (an offset for either
//!   end is `ESPIPE`, as for pipes and sockets): to the connection, what the pipe holds,
//!   up to `len` and what the peer's ring takes without waiting if non-blocking
//!   (`SPLICE_F_NONBLOCK` or `O_NONBLOCK`); from the connection, one read of at most the
//!   room in the pipe (`F_GETPIPE_SZ` less `FIONREAD`).
//! * `copy_file_range` and `tee` are not interposed: on a socket the kernel refuses both
//!   (`EINVAL`), and the SMC-D descriptor is a socket (A), so they fail as on TCP.
//!
//! Untracked descriptors go straight to the real functions after the bitmap check.

// The unit-test build exports nothing (see `hooks`), so the hooks are unused there.
#![cfg_attr(test, allow(dead_code))]

use libc::{c_int, c_uint, c_void, size_t, ssize_t};

use crate::hooks::{before_transfer, guarded, smc_of, smc_recv, smc_send, Entry, TABLE};
use crate::real::{errno, fail, real, set_errno};
use crate::smc::{fd_nonblocking, SmcFd};

/// Linux's `MAX_RW_COUNT` (`INT_MAX` rounded down to a page): the most one call moves.
const MAX_RW_COUNT: usize = 0x7fff_f000;
/// The buffer of one step.
const CHUNK: usize = 256 << 10;

fn smc(e: &Entry) -> &SmcFd {
    match e {
        Entry::Smc(s) => s,
        Entry::Listener(_) | Entry::Inherited(_) | Entry::Connecting(_) => {
            unreachable!("smc_of returns connections only")
        }
    }
}

/// `poll` on one descriptor; the kernel's result (`-1` with `errno` on failure).
fn poll1(fd: c_int, events: i16, ms: c_int) -> c_int {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // A wait that holds none of the library's locks (`crate::signals::Pause`).
    // SAFETY: one valid pollfd.
    crate::signals::paused(|| unsafe { libc::poll(&mut p, 1, ms) })
}

/// Writes all of `buf` to `fd` (any descriptor; through this library's `write`, so an
/// SMC-D descriptor too), waiting for room if `fd` is non-blocking: the bytes were taken
/// from their source already and must not be lost. Returns what was written and the
/// `errno` that stopped it early.
fn write_all(fd: c_int, buf: &[u8]) -> (usize, Option<c_int>) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the rest of `buf`, valid for its length.
        let n = unsafe { crate::hooks::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let e = errno();
        if n < 0 && (e == libc::EAGAIN || e == libc::EINTR) {
            if poll1(fd, libc::POLLOUT, 1000) < 0 && errno() != libc::EINTR {
                return (done, Some(errno()));
            }
            continue;
        }
        return (done, Some(if n == 0 { libc::EIO } else { e }));
    }
    (done, None)
}

/// `lseek(fd, -back, SEEK_CUR)`: gives back bytes read from a file and not sent (a
/// descriptor that cannot seek loses them: only a signal or a concurrent writer on the
/// same connection leaves such bytes, see the module docs).
fn unread(fd: c_int, back: usize) {
    if back > 0 {
        let saved = errno();
        // SAFETY: plain lseek on the caller's descriptor.
        unsafe { libc::lseek64(fd, -(back as i64), libc::SEEK_CUR) };
        set_errno(saved);
    }
}

/// `sendfile` to the SMC-D connection `e` behind `out_fd`.
///
/// # Safety
/// `offset` is null or valid for reads and writes.
unsafe fn sendfile_to_smc(
    e: &Entry,
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut i64,
    count: size_t,
) -> ssize_t {
    let s = smc(e);
    let count = count.min(MAX_RW_COUNT);
    let mut pos = if offset.is_null() {
        0
    } else {
        // SAFETY: the caller's offset.
        unsafe { *offset }
    };
    if pos < 0 {
        return fail(libc::EINVAL);
    }
    let dontwait = fd_nonblocking(out_fd);
    let mut buf = vec![0u8; count.clamp(1, CHUNK)];
    let mut total = 0usize;
    let mut err = None;
    while total < count {
        if s.write_space() == 0 {
            if let Err(e) = s.wait_room(out_fd, dontwait) {
                err = Some(e);
                break;
            }
        }
        let mut want = (count - total).min(buf.len());
        if dontwait {
            // Only what the peer's ring takes now: what is read is what is sent. (0: a
            // write fails at once; one byte finds out how.)
            want = want.min(s.write_space().max(1));
        }
        let n = if offset.is_null() {
            // SAFETY: `buf` has room for `want` bytes.
            unsafe { crate::hooks::read(in_fd, buf.as_mut_ptr().cast(), want) }
        } else {
            // SAFETY: as above; pread does not move the file position.
            unsafe { libc::pread64(in_fd, buf.as_mut_ptr().cast(), want, pos) }
        };
        if n < 0 {
            err = Some(errno());
            break;
        }
        if n == 0 {
            break; // end of the file
        }
        let n = n as usize;
        // SAFETY: `buf` holds `n` bytes; `smc_send` is `write` on the connection
        // (EPIPE raises SIGPIPE as `write` does).
        let m = unsafe { smc_send(e, out_fd, buf.as_ptr().cast(), n, 0) };
        if m < 0 {
            err = Some(errno());
            if offset.is_null() {
                unread(in_fd, n);
            }
            break;
        }
        let m = m as usize;
        total += m;
        pos += m as i64;
        if m < n {
            if offset.is_null() {
                unread(in_fd, n - m);
            }
            break;
        }
    }
    if !offset.is_null() {
        // SAFETY: the caller's offset.
        unsafe { *offset = pos };
    }
    match err {
        Some(e) if total == 0 => fail(e),
        _ => total as ssize_t,
    }
}

/// `sendfile` from the SMC-D connection `e` behind `in_fd` to `out_fd`.
fn sendfile_from_smc(e: &Entry, out_fd: c_int, in_fd: c_int, count: size_t) -> ssize_t {
    let mut buf = vec![0u8; count.clamp(1, CHUNK)];
    let want = count.min(buf.len());
    // SAFETY: `buf` has room for `want` bytes.
    let n = unsafe { smc_recv(e, in_fd, buf.as_mut_ptr().cast(), want, 0) };
    if n <= 0 {
        return n;
    }
    match write_all(out_fd, &buf[..n as usize]) {
        (0, Some(e)) => fail(e),
        (k, _) => k as ssize_t,
    }
}

/// `sendfile` and `sendfile64` (`off_t` is 64 bits on the targets of the process boards).
///
/// # Safety
/// As the C library's `sendfile64`.
unsafe fn sendfile_common(out_fd: c_int, in_fd: c_int, offset: *mut i64, count: size_t) -> ssize_t {
    guarded(|| {
        let settled = before_transfer(out_fd, true, fd_nonblocking(out_fd))
            .and_then(|()| before_transfer(in_fd, false, fd_nonblocking(in_fd)));
        if let Err(e) = settled {
            return fail(e);
        }
        if let Some(e) = smc_of(out_fd) {
            // SAFETY: the caller's offset.
            return unsafe { sendfile_to_smc(&e, out_fd, in_fd, offset, count) };
        }
        if let Some(e) = smc_of(in_fd) {
            if !offset.is_null() {
                return fail(libc::ESPIPE);
            }
            return sendfile_from_smc(&e, out_fd, in_fd, count);
        }
        match real().sendfile64 {
            // SAFETY: the caller's arguments, unchanged.
            Some(f) => unsafe { f(out_fd, in_fd, offset, count) },
            None => fail(libc::ENOSYS),
        }
    })
}

/// `sendfile`.
///
/// # Safety
/// As the C library's `sendfile`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off_t,
    count: size_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(out_fd) && !TABLE.maybe_tracked(in_fd) {
        return match real().sendfile {
            // SAFETY: the caller's arguments, unchanged.
            Some(f) => unsafe { f(out_fd, in_fd, offset, count) },
            None => fail(libc::ENOSYS),
        };
    }
    // SAFETY: as the caller's.
    unsafe { sendfile_common(out_fd, in_fd, offset.cast(), count) }
}

/// `sendfile64`.
///
/// # Safety
/// As the C library's `sendfile64`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut libc::off64_t,
    count: size_t,
) -> ssize_t {
    if !TABLE.maybe_tracked(out_fd) && !TABLE.maybe_tracked(in_fd) {
        return match real().sendfile64 {
            // SAFETY: the caller's arguments, unchanged.
            Some(f) => unsafe { f(out_fd, in_fd, offset, count) },
            None => fail(libc::ENOSYS),
        };
    }
    // SAFETY: as the caller's.
    unsafe { sendfile_common(out_fd, in_fd, offset, count) }
}

/// Whether `fd` is a pipe (or FIFO).
fn is_pipe(fd: c_int) -> bool {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: fstat64 writes the local `stat64`.
    unsafe { libc::fstat64(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO }
}

/// Room in the pipe `fd` now (its size less what it holds).
fn pipe_room(fd: c_int) -> usize {
    let size = match real().fcntl {
        // SAFETY: F_GETPIPE_SZ takes no argument.
        Some(f) => unsafe { f(fd, libc::F_GETPIPE_SZ, 0) },
        None => -1,
    };
    let mut held: c_int = 0;
    let r = match real().ioctl {
        // SAFETY: FIONREAD writes the caller's `int`.
        Some(f) => unsafe {
            f(
                fd,
                libc::FIONREAD,
                (&mut held as *mut c_int).cast::<c_void>(),
            )
        },
        None => -1,
    };
    if size <= 0 || r < 0 {
        return CHUNK; // not a pipe: the kernel would refuse; the write finds out
    }
    (size.max(0) as usize).saturating_sub(held.max(0) as usize)
}

/// `splice` from the pipe `in_fd` to the SMC-D connection `e` behind `out_fd`.
fn splice_to_smc(e: &Entry, in_fd: c_int, out_fd: c_int, len: size_t, nonblock: bool) -> ssize_t {
    let s = smc(e);
    let dontwait = nonblock || fd_nonblocking(out_fd);
    if s.write_space() == 0 {
        if let Err(e) = s.wait_room(out_fd, dontwait) {
            return fail(e);
        }
    }
    let mut want = len.min(CHUNK);
    if dontwait {
        want = want.min(s.write_space().max(1));
    }
    if nonblock {
        // The pipe side does not wait either (`SPLICE_F_NONBLOCK`).
        let r = poll1(in_fd, libc::POLLIN, 0);
        if r < 0 {
            return -1;
        }
        if r == 0 {
            return fail(libc::EAGAIN);
        }
    }
    let mut buf = vec![0u8; want.max(1)];
    let n: ssize_t = match real().read {
        // SAFETY: `buf` has room for `want` bytes.
        Some(f) => unsafe { f(in_fd, buf.as_mut_ptr().cast(), want) },
        None => fail(libc::ENOSYS),
    };
    if n <= 0 {
        return n;
    }
    let n = n as usize;
    // SAFETY: `buf` holds `n` bytes.
    let m = unsafe { smc_send(e, out_fd, buf.as_ptr().cast(), n, 0) };
    if m < 0 {
        // Taken from the pipe, not sent: the connection failed (EPIPE, ECONNRESET), or a
        // signal or another writer took the room; send the rest waiting, or lose it with
        // the connection.
        let err = errno();
        if err == libc::EAGAIN || err == libc::EINTR {
            return match write_all(out_fd, &buf[..n]) {
                (0, Some(e)) => fail(e),
                (k, _) => k as ssize_t,
            };
        }
        return fail(err);
    }
    let m = m as usize;
    if m < n {
        let (k, _) = write_all(out_fd, &buf[m..n]);
        return (m + k) as ssize_t;
    }
    m as ssize_t
}

/// `splice` from the SMC-D connection `e` behind `in_fd` to the pipe `out_fd`.
fn splice_from_smc(e: &Entry, in_fd: c_int, out_fd: c_int, len: size_t, nonblock: bool) -> ssize_t {
    let mut room = pipe_room(out_fd);
    while room == 0 {
        if nonblock || fd_nonblocking(out_fd) {
            return fail(libc::EAGAIN);
        }
        if poll1(out_fd, libc::POLLOUT, -1) < 0 {
            return -1; // EINTR, as the kernel's pipe wait
        }
        room = pipe_room(out_fd);
    }
    let want = len.min(room).min(CHUNK);
    let mut buf = vec![0u8; want.max(1)];
    let flags = if nonblock { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: `buf` has room for `want` bytes.
    let n = unsafe { smc_recv(e, in_fd, buf.as_mut_ptr().cast(), want, flags) };
    if n <= 0 {
        return n;
    }
    match write_all(out_fd, &buf[..n as usize]) {
        (0, Some(e)) => fail(e),
        (k, _) => k as ssize_t,
    }
}

/// `splice`.
///
/// # Safety
/// As the C library's `splice`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut libc::loff_t,
    fd_out: c_int,
    off_out: *mut libc::loff_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    let real_splice = || match real().splice {
        // SAFETY: the caller's arguments, unchanged.
        Some(f) => unsafe { f(fd_in, off_in, fd_out, off_out, len, flags) },
        None => fail(libc::ENOSYS),
    };
    if !TABLE.maybe_tracked(fd_in) && !TABLE.maybe_tracked(fd_out) {
        return real_splice();
    }
    guarded(|| {
        let nonblock = flags & libc::SPLICE_F_NONBLOCK != 0;
        let settled = before_transfer(fd_out, true, nonblock || fd_nonblocking(fd_out))
            .and_then(|()| before_transfer(fd_in, false, nonblock || fd_nonblocking(fd_in)));
        if let Err(e) = settled {
            return fail(e);
        }
        let (ein, eout) = (smc_of(fd_in), smc_of(fd_out));
        if ein.is_none() && eout.is_none() {
            return real_splice();
        }
        // Linux's `do_splice` (`fs/splice.c`): one end must be a pipe, and neither a
        // pipe nor a socket takes an offset.
        if ein.is_some() && eout.is_some() {
            return fail(libc::EINVAL);
        }
        let other = if ein.is_some() { fd_out } else { fd_in };
        if !is_pipe(other) {
            return fail(libc::EINVAL);
        }
        if !off_in.is_null() || !off_out.is_null() {
            return fail(libc::ESPIPE);
        }
        if len == 0 {
            return 0;
        }
        match (ein, eout) {
            (_, Some(e)) => splice_to_smc(&e, fd_in, fd_out, len.min(MAX_RW_COUNT), nonblock),
            (Some(e), _) => splice_from_smc(&e, fd_in, fd_out, len.min(MAX_RW_COUNT), nonblock),
            (None, None) => real_splice(),
        }
    })
}
