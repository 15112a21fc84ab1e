//! Socket addresses between C and Rust, and the small socket queries the hooks need. Every
//! call here goes to the real C library functions (see `real`), never to a hook.

use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

use ism_sim::process::names::normalize;

use crate::real::{errno, real};

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

/// Where the kernel connects `fd` when the program asks for `dest`. An unspecified
/// address means this host: IPv4 `0.0.0.0` the socket's bound source address, else
/// `127.0.0.1` (`net/ipv4/route.c`, `ip_route_output_key_hash_rcu`); IPv6 `::` `::1`, or
/// `::ffff:127.0.0.1` for a socket bound to an IPv4-mapped address (`net/ipv6/tcp_ipv6.c`,
/// `tcp_v6_connect`, which hands `::ffff:0.0.0.0` to the IPv4 rule). The listener sees that
/// address as its own, so the board must be told it, not the program's.
pub fn connect_dest(fd: c_int, dest: SocketAddr) -> SocketAddr {
    let bound = || local_addr(fd).map(|l| l.ip());
    let v4_source = |bound: Option<IpAddr>| match bound {
        Some(IpAddr::V4(s)) if !s.is_unspecified() => s,
        Some(IpAddr::V6(s)) => match s.to_ipv4_mapped() {
            Some(m) if !m.is_unspecified() => m,
            _ => Ipv4Addr::LOCALHOST,
        },
        _ => Ipv4Addr::LOCALHOST,
    };
    let mut d = dest;
    match dest {
        SocketAddr::V4(a) if a.ip().is_unspecified() => d.set_ip(v4_source(bound()).into()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            let mapped = matches!(bound(), Some(IpAddr::V6(l)) if l.to_ipv4_mapped().is_some());
            d.set_ip(if mapped {
                Ipv4Addr::LOCALHOST.to_ipv6_mapped().into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped() == Some(Ipv4Addr::UNSPECIFIED) => {
            d.set_ip(v4_source(bound()).to_ipv6_mapped().into());
        }
        _ => {}
    }
    d
}

/// Whether the connection of `fd` to `dest` is bound to a network device: by
/// `SO_BINDTODEVICE`/`SO_BINDTOIFINDEX`, or by an IPv6 link-local address at either end
/// (`connect` binds the socket to the scope's device, `net/ipv6/tcp_ipv6.c`
/// `tcp_v6_connect`). `sock_diag` finds such a socket only when asked with that device's
/// index (`inet_diag_find_one_icsk` in `net/ipv4/inet_diag.c` looks it up with the
/// request's `idiag_if`), which the server cannot know: its client registers by address.
pub fn device_bound(fd: c_int, dest: SocketAddr) -> bool {
    let link_local = |a: SocketAddr| match a {
        SocketAddr::V6(v) => v.scope_id() != 0 || v.ip().is_unicast_link_local(),
        SocketAddr::V4(_) => false,
    };
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX).is_some_and(|i| i > 0)
        || link_local(dest)
        || local_addr(fd).is_some_and(link_local)
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
        // A link-local source needs its device (the destination's scope).
        let at = match (ip, dest) {
            (IpAddr::V6(v6), SocketAddr::V6(d)) if v6.is_unicast_link_local() => {
                SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, d.scope_id()))
            }
            _ => SocketAddr::new(ip, 0),
        };
        let (st, len) = to_c(at);
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

/// The socket's cookie (`SO_COOKIE`): a number the kernel gives each socket once and never
/// reuses, which `sock_diag` reports too (see [`peer_cookie`]).
pub fn socket_cookie(fd: c_int) -> Option<u64> {
    let v = sockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_COOKIE, 8)?;
    Some(u64::from_ne_bytes(v.try_into().ok()?))
}

/// `SOCK_DIAG_BY_FAMILY` (`include/uapi/linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The bytes of a `nlmsghdr` and of an `inet_diag_req_v2`
/// (`include/uapi/linux/inet_diag.h`).
const NLMSG_HDR: usize = 16;
const DIAG_REQ: usize = 56;
/// Where `inet_diag_msg.id.idiag_cookie` lies in a reply (after the `nlmsghdr`, the four
/// bytes of family/state/timer/retrans and 40 bytes of the socket id).
const DIAG_COOKIE_AT: usize = NLMSG_HDR + 4 + 40;

/// Why [`peer_cookie`] has no cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagError {
    /// The kernel answered: no such socket in this network namespace.
    NotFound,
    /// No answer (no netlink socket, a refused query, mixed address families).
    Failed,
}

/// Whether the send queue of the socket `fd` holds anything (`SIOCOUTQ`): for TCP, bytes
/// written and not yet acknowledged by the peer (Linux's `tcp_ioctl` in `net/ipv4/tcp.c`);
/// for a UNIX stream socket, what it sent that its peer has not read (`unix_ioctl` in
/// `net/unix/af_unix.c`).
pub fn send_queue_nonempty(fd: c_int) -> bool {
    let Some(ioctl) = real().ioctl else {
        return false;
    };
    let mut n: c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one `int` into `n`.
    let r = unsafe { ioctl(fd, libc::TIOCOUTQ, &mut n as *mut c_int) };
    r == 0 && n > 0
}

/// The cookie of the TCP socket on this host whose local address is `client` and whose
/// peer is `server`, as Linux's `sock_diag` finds it (`net/ipv4/inet_diag.c`,
/// `inet_diag_find_one_icsk`, which looks the 4-tuple up as an arriving packet would):
/// a server learns which socket connected to it, to ask the board whether that socket
/// registered.
///
/// # Errors
/// [`DiagError::NotFound`] if the kernel knows no such socket (a client in another
/// network namespace, or one gone); [`DiagError::Failed`] if it could not be asked.
pub fn peer_cookie(client: SocketAddr, server: SocketAddr) -> Result<u64, DiagError> {
    let r = real();
    let (Some(sendto), Some(recv), Some(close)) = (r.sendto, r.recv, r.close) else {
        return Err(DiagError::Failed);
    };
    let (client, server) = (normalize(client), normalize(server));
    let family = match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => libc::AF_INET,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => libc::AF_INET6,
        _ => return Err(DiagError::Failed),
    };
    let mut req = [0u8; NLMSG_HDR + DIAG_REQ];
    req[0..4].copy_from_slice(&((NLMSG_HDR + DIAG_REQ) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    let d = &mut req[NLMSG_HDR..];
    d[0] = family as u8;
    d[1] = libc::IPPROTO_TCP as u8;
    // Every state; the socket id: source (the client's side), destination, interface 0,
    // no cookie.
    d[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    d[8..10].copy_from_slice(&client.port().to_be_bytes());
    d[10..12].copy_from_slice(&server.port().to_be_bytes());
    let put = |dst: &mut [u8], a: IpAddr| match a {
        IpAddr::V4(a) => dst[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => dst.copy_from_slice(&a.octets()),
    };
    put(&mut d[12..28], client.ip());
    put(&mut d[28..44], server.ip());
    d[48..56].fill(0xff); // INET_DIAG_NOCOOKIE

    let fd = diag_socket();
    if fd < 0 {
        return Err(DiagError::Failed);
    }
    let mut reply = [0u8; 512];
    // SAFETY: `req` and `reply` are buffers of the given lengths; with no address the
    // request goes to the kernel (netlink port 0).
    let n = unsafe {
        if sendto(fd, req.as_ptr().cast(), req.len(), 0, std::ptr::null(), 0) < 0 {
            -1
        } else {
            recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0)
        }
    };
    diag_done(fd, close);
    let n = usize::try_from(n).map_err(|_| DiagError::Failed)?;
    let word = |at: usize| {
        let b: [u8; 4] = reply[at..at + 4].try_into().unwrap_or_default();
        u32::from_ne_bytes(b)
    };
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    if ty == libc::NLMSG_ERROR as u16 && n >= NLMSG_HDR + 4 {
        // `struct nlmsgerr`: the negative errno first.
        return Err(if word(NLMSG_HDR) as i32 == -libc::ENOENT {
            DiagError::NotFound
        } else {
            DiagError::Failed
        });
    }
    if n < DIAG_COOKIE_AT + 8 || ty != SOCK_DIAG_BY_FAMILY {
        return Err(DiagError::Failed);
    }
    Ok(u64::from(word(DIAG_COOKIE_AT)) | (u64::from(word(DIAG_COOKIE_AT + 4)) << 32))
}

/// A descriptor number kept for [`diag_socket`] (a `sock_diag` socket nobody uses, above
/// the floor), or -1: a server whose program took every other number (memcached sets its
/// limits to its connection limit) can still ask which client connected, instead of
/// dropping the connection.
static DIAG_SPARE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// A new `sock_diag` netlink socket, or -1; with no number free, the spare's number.
fn diag_socket() -> c_int {
    use std::sync::atomic::Ordering;
    let open = || {
        // SAFETY: a plain socket() call; the caller closes the descriptor (`diag_done`).
        unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        }
    };
    let fd = open();
    if fd >= 0 || !matches!(errno(), libc::EMFILE | libc::ENFILE) {
        return fd;
    }
    let spare = DIAG_SPARE.swap(-1, Ordering::SeqCst);
    if spare < 0 {
        return fd;
    }
    // The spare's number goes, the new socket takes it (unless another thread of the
    // program took it first).
    if let Some(close) = real().close {
        // SAFETY: our own descriptor, closed once (swapped out above).
        unsafe { close(spare) };
    }
    open()
}

/// Closes the socket of a query, or keeps it as the spare if there is none (it is not
/// used again: a spare that took a number below the floor keeps it, as a program's own
/// socket would).
fn diag_done(fd: c_int, close: unsafe extern "C" fn(c_int) -> c_int) {
    use std::sync::atomic::Ordering;
    if DIAG_SPARE
        .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: our own descriptor, closed once.
        unsafe { close(fd) };
    }
}

/// The cookie of the listening socket in this network namespace that a connection to
/// `dest` would reach, as `sock_diag` finds it (a lookup with no peer falls through to the
/// listeners, `inet_lookup`, which picks the best match: an exact address before a
/// wildcard, IPv6-only sockets only for IPv6).
///
/// # Errors
/// As [`peer_cookie`]: [`DiagError::NotFound`] if none here takes it (the server runs in
/// another namespace or host, or nowhere).
pub fn listener_cookie(dest: SocketAddr) -> Result<u64, DiagError> {
    let any: IpAddr = match normalize(dest) {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    peer_cookie(dest, SocketAddr::new(any, 0))
}

/// Whether this process can ask `sock_diag` (a sandbox may forbid netlink sockets): a
/// server that can, finds its clients by socket cookie, and says so when it registers its
/// listeners. Asked once per process.
pub fn diag_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        // Nobody has port 1 connected to port 1: the kernel's answer is "no such socket".
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        peer_cookie(a, a) != Err(DiagError::Failed)
    })
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

    /// `connect_dest` names the peer the kernel's `connect` really reaches, for each way of
    /// asking for "this host".
    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
    fn an_unspecified_destination_is_where_the_kernel_connects() {
        let Ok(l) = std::net::TcpListener::bind("[::]:0") else {
            return; // no IPv6 here
        };
        let port = l.local_addr().unwrap().port();
        let cases: [(c_int, Option<&str>, &str, &str); 7] = [
            (libc::AF_INET, None, "0.0.0.0", "127.0.0.1"),
            (libc::AF_INET, Some("127.0.0.5"), "0.0.0.0", "127.0.0.5"),
            (libc::AF_INET, None, "127.0.0.1", "127.0.0.1"),
            (libc::AF_INET6, None, "::", "::1"),
            (
                libc::AF_INET6,
                Some("::ffff:127.0.0.6"),
                "::",
                "::ffff:127.0.0.1",
            ),
            (libc::AF_INET6, None, "::ffff:0.0.0.0", "::ffff:127.0.0.1"),
            (
                libc::AF_INET6,
                Some("::ffff:127.0.0.7"),
                "::ffff:0.0.0.0",
                "::ffff:127.0.0.7",
            ),
        ];
        for (family, bind, asked, reached) in cases {
            // SAFETY: a plain socket call; the descriptor is closed below.
            let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            if let Some(b) = bind {
                let (st, len) = to_c(SocketAddr::new(b.parse().unwrap(), 0));
                // SAFETY: `st` holds a valid address of `len` bytes.
                assert_eq!(unsafe { libc::bind(fd, (&raw const st).cast(), len) }, 0);
            }
            let asked = SocketAddr::new(asked.parse().unwrap(), port);
            let dest = connect_dest(fd, asked);
            assert_eq!(dest, SocketAddr::new(reached.parse().unwrap(), port));
            let (st, len) = to_c(asked);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::connect(fd, (&raw const st).cast(), len) }, 0);
            assert_eq!(peer_addr(fd), Some(dest), "{asked} bound to {bind:?}");
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
    fn a_server_finds_the_cookie_of_the_socket_that_connected_to_it() {
        use std::os::fd::AsRawFd;
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = std::net::TcpListener::bind(host) else {
                continue; // no IPv6 here
            };
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, peer) = l.accept().unwrap();
            let cookie = socket_cookie(c.as_raw_fd()).expect("SO_COOKIE");
            assert_ne!(Some(cookie), socket_cookie(s.as_raw_fd()), "one per socket");
            let local = s.local_addr().unwrap();
            assert_eq!(peer_cookie(peer, local), Ok(cookie), "{host}");
            // The server's own socket is not the client's; a gone client is not found.
            assert_ne!(peer_cookie(local, peer), Ok(cookie));
            drop(c);
            drop(s);
            let gone = SocketAddr::new(peer.ip(), 1);
            assert_eq!(peer_cookie(gone, local), Err(DiagError::NotFound));
        }
        assert!(diag_works());
        // A listener is seen by the address it takes, with its own cookie; a port nobody
        // listens on is not.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        assert_eq!(
            listener_cookie(at),
            Ok(socket_cookie(l.as_raw_fd()).unwrap())
        );
        drop(l);
        assert_eq!(listener_cookie(at), Err(DiagError::NotFound));
        if let Ok(l) = std::net::TcpListener::bind("[::]:0") {
            let port = l.local_addr().unwrap().port();
            let own = Ok(socket_cookie(l.as_raw_fd()).unwrap());
            assert_eq!(
                listener_cookie(SocketAddr::from(([127, 0, 0, 1], port))),
                own
            );
            let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
            assert_eq!(listener_cookie(v6), own);
        }
        let (v4, v6) = ("127.0.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap());
        assert_eq!(
            peer_cookie(v4, v6),
            Err(DiagError::Failed),
            "mixed families"
        );
        // A dual-stack server sees an IPv4 client as IPv4-mapped: found all the same.
        if let Ok(l) = std::net::TcpListener::bind("[::]:0") {
            let port = l.local_addr().unwrap().port();
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (s, peer) = l.accept().unwrap();
            assert!(matches!(peer, SocketAddr::V6(_)), "{peer}");
            let cookie = socket_cookie(c.as_raw_fd()).unwrap();
            assert_eq!(peer_cookie(peer, s.local_addr().unwrap()), Ok(cookie));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
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
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
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
