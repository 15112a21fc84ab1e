//! Socket addresses between C and Rust, and the small socket queries the hooks need. Every
//! call here goes to the real C library functions (see `real`), never to a hook.

use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

use crate::real::real;

/// The address `addr` (of `len` bytes) names, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn from_c(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above).
    let family = c_int::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: `len` covers a `sockaddr_in`; unaligned read as the caller's buffer
            // may be any byte buffer.
            let a: sockaddr_in = unsafe { std::ptr::read_unaligned(addr.cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let a: sockaddr_in6 = unsafe { std::ptr::read_unaligned(addr.cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `addr` as a C socket address and its length.
pub fn to_c(addr: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
    let mut st: sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: all-zero bytes are a valid `sockaddr_in`.
            let mut s: sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
            unsafe { std::ptr::write((&raw mut st).cast(), s) };
            size_of::<sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero bytes are a valid `sockaddr_in6`.
            let mut s: sockaddr_in6 = unsafe { MaybeUninit::zeroed().assume_init() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe { std::ptr::write((&raw mut st).cast(), s) };
            size_of::<sockaddr_in6>()
        }
    };
    (st, len as socklen_t)
}

type NameFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;

fn name_of(f: Option<NameFn>, fd: c_int) -> Option<SocketAddr> {
    let f = f?;
    // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
    let mut st: sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut len = size_of::<sockaddr_storage>() as socklen_t;
    // SAFETY: `st` has room for `len` bytes; the function writes at most that many.
    if unsafe { f(fd, (&raw mut st).cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: `st` holds `len` bytes written by the call.
    unsafe { from_c((&raw const st).cast(), len) }
}

/// The socket's local address (`getsockname`).
pub fn local_addr(fd: c_int) -> Option<SocketAddr> {
    name_of(real().getsockname, fd)
}

/// The socket's peer address (`getpeername`).
pub fn peer_addr(fd: c_int) -> Option<SocketAddr> {
    name_of(real().getpeername, fd)
}

/// An integer socket option.
pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let f = real().getsockopt?;
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `v` has room for `len` bytes.
    let r = unsafe { f(fd, level, name, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// The value of a socket option of at most `size` bytes (the real `getsockopt`), as the
/// kernel gave it (its length), or `None` if the call fails.
pub fn sockopt_bytes(fd: c_int, level: c_int, name: c_int, size: usize) -> Option<Vec<u8>> {
    let f = real().getsockopt?;
    let mut v = vec![0u8; size];
    let mut len = size as socklen_t;
    // SAFETY: `v` has room for `len` bytes.
    let r = unsafe { f(fd, level, name, v.as_mut_ptr().cast(), &mut len) };
    (r == 0).then(|| {
        v.truncate((len as usize).min(size));
        v
    })
}

/// Whether `fd` is an `AF_INET`/`AF_INET6` `SOCK_STREAM` socket: the only kind this
/// library takes over.
pub fn is_inet_stream(fd: c_int) -> bool {
    let domain = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    matches!(domain, Some(libc::AF_INET | libc::AF_INET6))
        && sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

/// The local address the kernel picks for a connection to `dest` (a UDP socket
/// connected there tells, without sending anything).
pub fn source_for(dest: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dest {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let u = UdpSocket::bind(any).ok()?;
    u.connect(dest).ok()?;
    Some(u.local_addr().ok()?.ip())
}

/// Makes sure `fd` has a local address with a port before it connects to `dest` (binding
/// it to the kernel's choice of source address and an ephemeral port if the program did
/// not bind it), and returns that address as the peer will see it.
pub fn bind_for(fd: c_int, dest: SocketAddr) -> Option<SocketAddr> {
    let mut local = local_addr(fd)?;
    if local.port() == 0 {
        let ip = if local.ip().is_unspecified() {
            source_for(dest)?
        } else {
            local.ip()
        };
        let (st, len) = to_c(SocketAddr::new(ip, 0));
        // SAFETY: `st` holds a valid address of `len` bytes.
        if unsafe { libc::bind(fd, (&raw const st).cast(), len) } != 0 {
            return None;
        }
        local = local_addr(fd)?;
    }
    if local.ip().is_unspecified() {
        local.set_ip(source_for(dest)?);
    }
    Some(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_c() {
        for s in ["127.0.0.1:7000", "[::1]:80", "[fe80::1%2]:9", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            let (st, len) = to_c(a);
            // SAFETY: `st` holds `len` bytes.
            let back = unsafe { from_c((&raw const st).cast(), len) };
            assert_eq!(back, Some(a), "{s}");
        }
        // SAFETY: null is allowed.
        assert_eq!(unsafe { from_c(std::ptr::null(), 16) }, None);
        let (st, _) = to_c("127.0.0.1:1".parse().unwrap());
        // SAFETY: a too-short length is refused before reading past it.
        assert_eq!(unsafe { from_c((&raw const st).cast(), 4) }, None);
    }

    #[test]
    fn only_inet_stream_sockets_are_candidates() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_inet_stream(l.as_raw_fd()));
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!is_inet_stream(u.as_raw_fd()));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!is_inet_stream(a.as_raw_fd()));
        assert!(!is_inet_stream(-1));
    }

    #[test]
    fn an_unbound_socket_gets_a_port_and_a_real_source_address() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: a plain socket() call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        // SAFETY: `fd` is ours.
        let _owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let local = bind_for(fd, l.local_addr().unwrap()).unwrap();
        assert_eq!(local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(local.port(), 0);
        assert_eq!(local_addr(fd), Some(local));
    }
}
