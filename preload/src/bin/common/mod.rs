//! What the test programs `ism-run-echo` and `ism-run-io` share: the byte pattern both
//! ends of a stream agree on, argument lookup, the time limit of every wait, and small
//! system-call helpers. (A directory without `main.rs`, so Cargo does not take it for a
//! program of its own.)

use std::time::Duration;

/// The longest any wait of a test program takes before it reports a failure.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Byte `i` of every test stream (not periodic at powers of two, so shifted or repeated
/// chunks are caught).
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7) ^ (i / 251)) as u8
}

/// Checks that `got` is the pattern from stream offset `from`.
///
/// # Errors
/// The offset of the first byte that differs.
pub fn check(got: &[u8], from: usize) -> Result<(), String> {
    match got
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(from + i))
    {
        Some((i, _)) => Err(format!("byte {} differs", from + i)),
        None => Ok(()),
    }
}

/// Reads `r` to its end, checking every byte against the pattern from offset 0; returns
/// how many bytes came. `what` names the reads in errors.
///
/// # Errors
/// A failed read (`"{what}: ..."`) or the first byte that differs.
pub fn read_pattern_to_end(r: &mut impl std::io::Read, what: &str) -> Result<usize, String> {
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("{what}: {e}"))?;
        if n == 0 {
            return Ok(got);
        }
        check(&buf[..n], got)?;
        got += n;
    }
}

/// The value after `name` in `args`, parsed; `None` if `name` is not there. A value that
/// is missing or does not parse ends the program (exit status 2, the value named): taken
/// silently for the default, `--bytes 100M` sent 1 MiB and said `ok` (a new-user trial).
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    match args.get(i + 1).map(|v| (v, v.parse())) {
        Some((_, Ok(v))) => Some(v),
        Some((v, Err(_))) => usage_error(&format!("{name}: invalid value {v:?}")),
        None => usage_error(&format!("{name}: value missing")),
    }
}

/// Says what is wrong with the command line and exits with status 2.
fn usage_error(what: &str) -> ! {
    let program = std::env::args().next().unwrap_or_default();
    eprintln!("{program}: {what}");
    std::process::exit(2)
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `poll` on one descriptor for `events`; the revents (0 on timeout or error).
pub fn poll1(fd: i32, events: i16, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}

/// `connect` of the socket `fd` to `to` through the C library (so that the library under
/// test sees it); 0 or the `errno`. (For `ism-run-echo`'s raw-socket modes and
/// `ism-run-io timeouts`; the rest connects with std.)
#[allow(dead_code)]
pub fn connect_v4(fd: i32, to: std::net::SocketAddrV4) -> i32 {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of its size.
    let r = unsafe {
        libc::connect(
            fd,
            (&raw const sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r == 0 {
        0
    } else {
        errno()
    }
}

/// Sets `ITIMER_REAL` to fire every `us` microseconds (0: off).
pub fn interval_timer(us: i64) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: us,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a valid itimerval; the old value is not wanted.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
}
