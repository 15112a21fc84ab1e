//! The board's name service (spec section 3.5): which listening addresses and which
//! client connections speak SMC-D, so that a program under `ism-run` runs the CLC
//! handshake only with peers that expect it. Linux learns this from the SMC TCP option in
//! the SYN (`net/smc/af_smc.c`, `smc_listen_work` checks `tcp_sk(clcsock->sk)->syn_smc`);
//! user space cannot set TCP options, so hosts tell the board instead.
//!
//! [`NameTable`] is the board's side (registrations per connection: listeners dropped
//! with it, client registrations kept a while to be taken); [`NameClient`] the host's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use rustix::net::{RecvFlags, SendFlags};
use zerocopy::{FromBytes, IntoBytes};

use super::host::AttachError;
use super::layout::{
    NameEndpoint, NameReply, NameRequest, NAMES_FAMILY_COOKIE, NAMES_FAMILY_NONE, NAMES_FAMILY_V4,
    NAMES_FAMILY_V6, NAMES_FULL, NAMES_LOOKUP_LISTENER, NAMES_LOOKUP_REGISTER, NAMES_MAGIC,
    NAMES_MALFORMED, NAMES_MAX_PER_CONNECTION, NAMES_NOT_FOUND, NAMES_OK, NAMES_OK_COOKIES,
    NAMES_REGISTER_CLIENT, NAMES_REGISTER_LISTENER, NAMES_TAKE_CLIENT, NAMES_TAKE_SERVER_BELL,
    NAMES_UNREGISTER_CLIENT, NAMES_UNREGISTER_LISTENER,
};

/// A name-service call whose reply carried a descriptor (a doorbell) this process had no
/// room for: it is at its limit of open files, and the kernel dropped it. The request took
/// effect at the board all the same (a take removed the client's registration, the
/// doorbells were paired), so the caller must not take it for "not found" (see
/// [`is_descriptor_lost`]).
#[derive(Debug)]
pub struct DescriptorLost;

impl std::fmt::Display for DescriptorLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the board passed a descriptor this process had no room for (out of descriptors)",
        )
    }
}

impl std::error::Error for DescriptorLost {}

/// Whether `e` is a [`DescriptorLost`].
pub fn is_descriptor_lost(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<DescriptorLost>())
}

/// `addr` as the name service carries it: IPv4-mapped IPv6 addresses become IPv4 (a
/// dual-stack listener sees an IPv4 client as `::ffff:a.b.c.d`).
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => SocketAddr::new(IpAddr::V6(*a.ip()), a.port()),
        },
        a => a,
    }
}

/// The wire form of `addr` (normalized).
pub fn endpoint(addr: SocketAddr) -> NameEndpoint {
    let mut e = NameEndpoint {
        port: addr.port().into(),
        ..NameEndpoint::default()
    };
    match normalize(addr) {
        SocketAddr::V4(a) => {
            e.family = NAMES_FAMILY_V4.into();
            e.addr[..4].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            e.family = NAMES_FAMILY_V6.into();
            e.addr = a.ip().octets();
        }
    }
    e
}

/// The address of a wire endpoint; `None` for [`NAMES_FAMILY_NONE`] or an unknown family.
pub fn from_endpoint(e: &NameEndpoint) -> Option<SocketAddr> {
    let port = e.port.get();
    match e.family.get() {
        NAMES_FAMILY_V4 => {
            let mut o = [0u8; 4];
            o.copy_from_slice(&e.addr[..4]);
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        NAMES_FAMILY_V6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(e.addr)), port)),
        _ => None,
    }
}

/// How a client registration names the connecting side: its address (the TCP 4-tuple
/// with the server's), or its socket's cookie (`SO_COOKIE`), which a server on the same
/// host finds from the accepted connection through `sock_diag`. The cookie lets a client
/// register before `connect` without binding a port first (a port bound by `bind` stays
/// taken while its connections are in `TIME_WAIT`; one chosen by `connect` is reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The client's address and port.
    Addr(SocketAddr),
    /// The client socket's cookie.
    Cookie(u64),
}

impl From<SocketAddr> for ClientKey {
    fn from(a: SocketAddr) -> Self {
        Self::Addr(normalize(a))
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Cookie(c) => write!(f, "socket {c:#x}"),
        }
    }
}

/// The wire form of a client key.
pub fn client_endpoint(key: ClientKey) -> NameEndpoint {
    match key {
        ClientKey::Addr(a) => endpoint(a),
        ClientKey::Cookie(c) => {
            let mut e = NameEndpoint {
                family: NAMES_FAMILY_COOKIE.into(),
                ..NameEndpoint::default()
            };
            e.addr[..8].copy_from_slice(&c.to_le_bytes());
            e
        }
    }
}

/// The client key of a wire endpoint; `None` for [`NAMES_FAMILY_NONE`], an unknown
/// family, or a cookie endpoint with bytes where zeros belong.
pub fn client_from_endpoint(e: &NameEndpoint) -> Option<ClientKey> {
    if e.family.get() == NAMES_FAMILY_COOKIE {
        if e.port.get() != 0 || e.addr[8..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&e.addr[..8]);
        return Some(ClientKey::Cookie(u64::from_le_bytes(c)));
    }
    from_endpoint(e).map(ClientKey::Addr)
}

/// The `client` endpoint of a LOOKUP_REGISTER: the client socket's cookie in bytes 0..8
/// of `addr`, the seen listener's in bytes 8..16.
pub fn lookup_register_endpoint(client: u64, seen: u64) -> NameEndpoint {
    let mut e = client_endpoint(ClientKey::Cookie(client));
    e.addr[8..].copy_from_slice(&seen.to_le_bytes());
    e
}

/// The client socket's and the seen listener's cookies of a LOOKUP_REGISTER endpoint;
/// `None` unless it is a cookie endpoint with port 0 and both cookies non-zero.
fn lookup_register_cookies(e: &NameEndpoint) -> Option<(u64, u64)> {
    if e.family.get() != NAMES_FAMILY_COOKIE || e.port.get() != 0 {
        return None;
    }
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&e.addr[r]);
        u64::from_le_bytes(w)
    };
    let (client, seen) = (word(0..8), word(8..16));
    (client != 0 && seen != 0).then_some((client, seen))
}

/// Whether a listener bound to `listener` receives connections to `dest`: same port, and
/// the same address or a wildcard (`0.0.0.0` takes IPv4, `::` takes both, as a dual-stack
/// socket does).
pub fn listener_reaches(listener: SocketAddr, dest: SocketAddr) -> bool {
    if listener.port() != dest.port() {
        return false;
    }
    match (listener.ip(), dest.ip()) {
        (IpAddr::V4(l), IpAddr::V4(_)) if l.is_unspecified() => true,
        (IpAddr::V6(l), _) if l.is_unspecified() => true,
        (l, d) => l == d,
    }
}

/// A client registration: the pair, and the client's doorbell if it sent one.
#[derive(Debug)]
struct ClientReg {
    pair: (ClientKey, SocketAddr),
    bell: Option<OwnedFd>,
}

/// A listener registration: the address, the listening socket's cookie (0: not given),
/// and whether its server finds clients registered by socket cookie (section 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListenerReg {
    addr: SocketAddr,
    cookie: u64,
    takes_cookies: bool,
}

/// The wire form of a listener's mark in REGISTER_LISTENER (section 3.5): its socket's
/// `cookie` (0: not given), `port` 1 if its server takes clients by cookie.
pub fn listener_endpoint(cookie: u64, takes_cookies: bool) -> NameEndpoint {
    let mut e = client_endpoint(ClientKey::Cookie(cookie));
    e.port = u16::from(takes_cookies).into();
    e
}

/// The listener's mark of a REGISTER_LISTENER (cookie, takes cookies); `(0, false)` for no
/// endpoint; `None` if malformed.
fn listener_mark(e: &NameEndpoint) -> Option<(u64, bool)> {
    match e.family.get() {
        NAMES_FAMILY_NONE => Some((0, false)),
        NAMES_FAMILY_COOKIE if e.port.get() <= 1 => {
            let mut plain = *e;
            plain.port = 0.into();
            match client_from_endpoint(&plain)? {
                ClientKey::Cookie(c) => Some((c, e.port.get() == 1)),
                ClientKey::Addr(_) => None,
            }
        }
        // Older hosts sent nothing else; an address here says nothing about the listener.
        NAMES_FAMILY_V4 | NAMES_FAMILY_V6 => Some((0, false)),
        _ => None,
    }
}

/// One connection's registrations.
#[derive(Debug, Default)]
struct Registrations {
    listeners: Vec<ListenerReg>,
    clients: Vec<ClientReg>,
}

impl Registrations {
    fn len(&self) -> usize {
        self.listeners.len() + self.clients.len()
    }
}

/// Counters of a [`NameTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameCounters {
    /// Requests answered (malformed ones too).
    pub requests: u64,
    /// Listener lookups.
    pub lookups: u64,
    /// Listener lookups that found one.
    pub lookups_found: u64,
    /// Client registrations taken by a server.
    pub clients_taken: u64,
    /// Take requests that found nothing (a plain client).
    pub clients_not_found: u64,
    /// Doorbell descriptors handed on (a client's to its server, a server's to its client).
    pub bells_passed: u64,
}

/// How long a name-service call looks for the board's reply without waiting before it
/// sleeps (see `NameClient::call_raw`).
pub const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// How long the client registrations of a connection that hung up stay to be taken.
pub const ORPHAN_LIFE: std::time::Duration = std::time::Duration::from_secs(60);

/// Most such registrations kept (the oldest go first).
pub const MAX_ORPHANS: usize = 4096;

/// Most doorbell descriptors the board holds for hosts at once (clients' with their
/// registrations, servers' until their clients take them); past it, a descriptor that
/// comes is closed (its connection then does without: section 3.5).
pub const MAX_BELLS: usize = 512;

/// The board's side: registrations per name-service connection (keyed by a connection
/// id), answered as section 3.5 says. Dropping a connection's id drops its listeners; its
/// client registrations stay to be taken for [`ORPHAN_LIFE`] (a client process that died
/// after its `connect` registered the connection: the server's `accept` must still know
/// that the connection speaks CLC, or it would read the proposal as data).
#[derive(Debug, Default)]
pub struct NameTable {
    conns: std::collections::BTreeMap<u64, Registrations>,
    /// Client registrations of connections that hung up, oldest first, with when.
    orphans: std::collections::VecDeque<((ClientKey, SocketAddr), std::time::Instant)>,
    /// Servers' doorbells for their clients, oldest first: the pair, the connection that
    /// registered the client (the only one that may take it), the descriptor, and when.
    server_bells: std::collections::VecDeque<ServerBell>,
    /// Descriptors held (in `conns` and `server_bells`).
    bells: usize,
    counters: NameCounters,
}

/// A server's doorbell kept for its client (see [`NameTable`]).
#[derive(Debug)]
struct ServerBell {
    pair: (ClientKey, SocketAddr),
    owner: u64,
    bell: OwnedFd,
    since: std::time::Instant,
}

impl NameTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connection `id` hung up: its listeners go, its client registrations stay to be
    /// taken for [`ORPHAN_LIFE`].
    pub fn drop_connection(&mut self, id: u64) {
        self.drop_connection_at(id, std::time::Instant::now());
    }

    fn drop_connection_at(&mut self, id: u64, now: std::time::Instant) {
        if let Some(r) = self.conns.remove(&id) {
            for c in r.clients {
                // The client's doorbell goes: its process is gone, or will never ask.
                self.bells -= usize::from(c.bell.is_some());
                if self.orphans.len() >= MAX_ORPHANS {
                    self.orphans.pop_front();
                }
                self.orphans.push_back((c.pair, now));
            }
        }
        let before = self.server_bells.len();
        self.server_bells.retain(|b| b.owner != id);
        self.bells -= before - self.server_bells.len();
    }

    /// Drops the client registrations of gone connections, and the servers' doorbells,
    /// older than [`ORPHAN_LIFE`].
    fn expire(&mut self, now: std::time::Instant) {
        while self
            .orphans
            .front()
            .is_some_and(|&(_, t)| now.saturating_duration_since(t) >= ORPHAN_LIFE)
        {
            self.orphans.pop_front();
        }
        while self
            .server_bells
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.since) >= ORPHAN_LIFE)
        {
            self.server_bells.pop_front();
            self.bells -= 1;
        }
    }

    /// Keeps `fd` if fewer than [`MAX_BELLS`] are held (counted), else closes it.
    fn hold(&mut self, fd: Option<OwnedFd>) -> Option<OwnedFd> {
        let fd = fd.filter(|_| self.bells < MAX_BELLS)?;
        self.bells += 1;
        Some(fd)
    }

    /// Doorbell descriptors held now.
    pub fn bells_held(&self) -> usize {
        self.bells
    }

    /// Registered listeners and clients (those of gone connections included, until they
    /// expire: counted as expired when asked, though dropped only at the next request).
    pub fn sizes(&self) -> (usize, usize) {
        let now = std::time::Instant::now();
        let orphans = self
            .orphans
            .iter()
            .filter(|&&(_, t)| now.saturating_duration_since(t) < ORPHAN_LIFE)
            .count();
        self.conns.values().fold((0, orphans), |(l, c), r| {
            (l + r.listeners.len(), c + r.clients.len())
        })
    }

    /// The counters.
    pub fn counters(&self) -> NameCounters {
        self.counters
    }

    /// LOOKUP_LISTENER's answer for a connection to `dest` (counted): `seen`, the
    /// cookie of the listener the asking host's kernel would give it to, must be
    /// registered if it came.
    fn lookup(&mut self, seen: Option<u64>, dest: SocketAddr) -> u32 {
        self.counters.lookups += 1;
        let (mut found, mut all_cookies, mut matched) = (false, true, false);
        for l in self.conns.values().flat_map(|r| &r.listeners) {
            if listener_reaches(l.addr, dest) {
                found = true;
                all_cookies &= l.takes_cookies;
                matched |= seen.is_some() && Some(l.cookie) == seen;
            }
        }
        if !found || (seen.is_some() && !matched) {
            return NAMES_NOT_FOUND;
        }
        self.counters.lookups_found += 1;
        if matched && all_cookies {
            NAMES_OK_COOKIES
        } else {
            NAMES_OK
        }
    }

    /// Answers one request (`bytes`, as received) of connection `id`.
    pub fn handle(&mut self, id: u64, bytes: &[u8]) -> NameReply {
        self.handle_with(id, bytes, None).0
    }

    /// Answers one request (`bytes`, as received) of connection `id` that came with the
    /// descriptor `fd` (`SCM_RIGHTS`; kept by REGISTER_CLIENT and TAKE_CLIENT, closed by
    /// the others); returns the reply and the descriptor to send with it.
    pub fn handle_with(
        &mut self,
        id: u64,
        bytes: &[u8],
        fd: Option<OwnedFd>,
    ) -> (NameReply, Option<OwnedFd>) {
        self.handle_at(id, bytes, fd, std::time::Instant::now())
    }

    fn handle_at(
        &mut self,
        id: u64,
        bytes: &[u8],
        mut fd: Option<OwnedFd>,
        now: std::time::Instant,
    ) -> (NameReply, Option<OwnedFd>) {
        self.expire(now);
        self.counters.requests += 1;
        let mut out = None;
        let mut reply = NameReply {
            op: 0.into(),
            seq: 0.into(),
            result: NAMES_MALFORMED.into(),
            reserved: 0.into(),
        };
        let Ok(req) = NameRequest::read_from_bytes(bytes) else {
            return (reply, None);
        };
        reply.op = req.op;
        reply.seq = req.seq;
        let client = client_from_endpoint(&req.client);
        let server = from_endpoint(&req.server);
        let result = match (req.op.get(), client, server) {
            (NAMES_REGISTER_LISTENER, _, Some(s)) => match listener_mark(&req.client) {
                None => NAMES_MALFORMED,
                Some(_)
                    if self.conns.get(&id).map_or(0, Registrations::len)
                        >= NAMES_MAX_PER_CONNECTION =>
                {
                    NAMES_FULL
                }
                Some((cookie, takes_cookies)) => {
                    self.conns
                        .entry(id)
                        .or_default()
                        .listeners
                        .push(ListenerReg {
                            addr: s,
                            cookie,
                            takes_cookies,
                        });
                    NAMES_OK
                }
            },
            (NAMES_UNREGISTER_LISTENER, _, Some(s)) => {
                let r = self.conns.entry(id).or_default();
                match r.listeners.iter().position(|l| l.addr == s) {
                    Some(i) => {
                        r.listeners.swap_remove(i);
                        NAMES_OK
                    }
                    None => NAMES_NOT_FOUND,
                }
            }
            (NAMES_REGISTER_CLIENT, Some(c), Some(s)) => {
                if self.conns.get(&id).map_or(0, Registrations::len) >= NAMES_MAX_PER_CONNECTION {
                    NAMES_FULL
                } else {
                    let bell = self.hold(fd);
                    self.conns
                        .entry(id)
                        .or_default()
                        .clients
                        .push(ClientReg { pair: (c, s), bell });
                    NAMES_OK
                }
            }
            (NAMES_UNREGISTER_CLIENT, Some(c), Some(s)) => {
                let r = self.conns.entry(id).or_default();
                match r.clients.iter().position(|t| t.pair == (c, s)) {
                    Some(i) => {
                        let gone = r.clients.swap_remove(i);
                        self.bells -= usize::from(gone.bell.is_some());
                        NAMES_OK
                    }
                    None => NAMES_NOT_FOUND,
                }
            }
            (NAMES_LOOKUP_LISTENER, c, Some(s)) => {
                // The cookie of the listener the asking host's kernel would give the
                // connection to, if it told: that one must be registered.
                let seen = match c {
                    Some(ClientKey::Cookie(x)) if x != 0 => Some(x),
                    _ => None,
                };
                self.lookup(seen, s)
            }
            (NAMES_LOOKUP_REGISTER, _, Some(s)) => match lookup_register_cookies(&req.client) {
                None => NAMES_MALFORMED,
                Some((client, seen)) => match self.lookup(Some(seen), s) {
                    NAMES_OK_COOKIES
                        if self.conns.get(&id).map_or(0, Registrations::len)
                            >= NAMES_MAX_PER_CONNECTION =>
                    {
                        NAMES_FULL
                    }
                    NAMES_OK_COOKIES => {
                        let bell = self.hold(fd.take());
                        let pair = (ClientKey::Cookie(client), s);
                        let r = self.conns.entry(id).or_default();
                        r.clients.push(ClientReg { pair, bell });
                        NAMES_OK_COOKIES
                    }
                    other => other,
                },
            },
            (NAMES_TAKE_CLIENT, Some(c), Some(s)) => {
                let live = self.conns.iter_mut().find_map(|(&owner, r)| {
                    let i = r.clients.iter().position(|t| t.pair == (c, s))?;
                    Some((owner, r.clients.swap_remove(i).bell))
                });
                let hit = live.is_some() || {
                    let i = self.orphans.iter().position(|&(t, _)| t == (c, s));
                    i.and_then(|i| self.orphans.remove(i)).is_some()
                };
                // Doorbells pass in pairs or not at all: the client's to the server only
                // with the server's kept for the client (only a live client can take it),
                // so that each side rings the other's exactly when the other counts on it.
                // The client's leaves the count before the server's joins it: a pair always
                // fits. One without the other is closed here.
                match (live, fd) {
                    (Some((owner, Some(b))), Some(sb)) => {
                        self.bells -= 1;
                        if let Some(bell) = self.hold(Some(sb)) {
                            self.counters.bells_passed += 1;
                            out = Some(b);
                            self.server_bells.push_back(ServerBell {
                                pair: (c, s),
                                owner,
                                bell,
                                since: now,
                            });
                        }
                    }
                    (Some((_, Some(_client_bell))), None) => self.bells -= 1,
                    _ => {}
                }
                if hit {
                    self.counters.clients_taken += 1;
                    NAMES_OK
                } else {
                    self.counters.clients_not_found += 1;
                    NAMES_NOT_FOUND
                }
            }
            (NAMES_TAKE_SERVER_BELL, Some(c), Some(s)) => {
                let i = self
                    .server_bells
                    .iter()
                    .position(|b| b.pair == (c, s) && b.owner == id);
                match i.and_then(|i| self.server_bells.remove(i)) {
                    Some(b) => {
                        self.bells -= 1;
                        self.counters.bells_passed += 1;
                        out = Some(b.bell);
                        NAMES_OK
                    }
                    None => NAMES_NOT_FOUND,
                }
            }
            _ => NAMES_MALFORMED,
        };
        reply.result = result.into();
        (reply, out)
    }
}

/// What [`NameClient::lookup`] learned of the listeners a connection would reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// None is registered, or the listener the connection goes to is not: the connection
    /// stays plain TCP.
    None,
    /// Registered; the client registers by its address ([`ClientKey::Addr`]).
    Addresses,
    /// The listener the connection goes to is registered (the host named it by its
    /// cookie), and every one that reaches the destination takes clients registered by
    /// socket cookie ([`ClientKey::Cookie`]).
    Cookies,
}

/// The host's side: one name-service connection to a board. Its listener registrations
/// live as long as it does (the board drops them when the connection hangs up, also when
/// the process dies); its client registrations stay to be taken a while longer
/// ([`ORPHAN_LIFE`]). Requests from several threads are serialised.
#[derive(Debug)]
pub struct NameClient {
    sock: Mutex<OwnedFd>,
    seq: AtomicU32,
    /// The board answered LOOKUP_REGISTER as malformed (it predates the op).
    no_lookup_register: AtomicBool,
}

impl std::os::fd::AsRawFd for NameClient {
    /// The connection's socket (for a forked child of a user of this client, which closes
    /// its inherited copy without using it: see `preload/src/fork.rs`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        std::os::fd::AsRawFd::as_raw_fd(&*sock)
    }
}

impl NameClient {
    /// Opens a name-service connection to board `name` (in [`super::board_dir`]).
    ///
    /// # Errors
    /// As [`super::attach`] for a missing or dead board; `Protocol` if the board does not
    /// offer the name service.
    pub fn connect(name: &str) -> Result<Self, AttachError> {
        Self::connect_in(&super::board_dir(), name)
    }

    /// [`NameClient::connect`] to a board whose socket is in `dir`.
    ///
    /// # Errors
    /// As [`NameClient::connect`].
    pub fn connect_in(dir: &Path, name: &str) -> Result<Self, AttachError> {
        let sock = super::host::connect(dir, name)?;
        rustix::net::send(&sock, &NAMES_MAGIC, SendFlags::NOSIGNAL)
            .map_err(|e| AttachError::Io("send".into(), e.into()))?;
        let mut buf = [0u8; 256];
        let (n, _) = rustix::net::recv(&sock, &mut buf, RecvFlags::empty())
            .map_err(|e| AttachError::Io("recv".into(), e.into()))?;
        if buf[..n] != NAMES_MAGIC {
            return Err(AttachError::Protocol(format!(
                "board {name} has no name service (an older board?)"
            )));
        }
        Ok(Self {
            sock: Mutex::new(sock),
            seq: AtomicU32::new(1),
            no_lookup_register: AtomicBool::new(false),
        })
    }

    fn call(
        &self,
        op: u32,
        client: Option<ClientKey>,
        server: SocketAddr,
    ) -> std::io::Result<bool> {
        self.call_with(op, client, server, None)
            .map(|(found, _)| found)
    }

    /// One request, with `fd` attached if given (`SCM_RIGHTS`); whether it succeeded or
    /// found, and the descriptor that came with the reply (close-on-exec).
    fn call_with(
        &self,
        op: u32,
        client: Option<ClientKey>,
        server: SocketAddr,
        fd: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<(bool, Option<OwnedFd>)> {
        let client = client.map_or_else(NameEndpoint::default, client_endpoint);
        let (result, got) = self.call_raw(op, client, server, fd)?;
        Ok(match result {
            NAMES_NOT_FOUND => (false, None),
            _ => (true, got),
        })
    }

    /// [`NameClient::call_with`] with the reply's result as it came: [`NAMES_NOT_FOUND`],
    /// [`NAMES_OK`] or [`NAMES_OK_COOKIES`] (the others are errors).
    fn call_raw(
        &self,
        op: u32,
        client: NameEndpoint,
        server: SocketAddr,
        fd: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<(u32, Option<OwnedFd>)> {
        use rustix::net::{
            RecvAncillaryBuffer, RecvAncillaryMessage, SendAncillaryBuffer, SendAncillaryMessage,
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = NameRequest {
            op: op.into(),
            seq: seq.into(),
            client,
            server: endpoint(server),
        };
        let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = fd.as_slice();
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other("ancillary buffer too small"));
        }
        let iov = [std::io::IoSlice::new(req.as_bytes())];
        // A signal the program handles without `SA_RESTART` (socat's `SIGCHLD`) must not
        // cut a call: one cut after its request left its reply to be read as the next
        // call's, and every call after it read the one before's (a server then took its
        // `ism-run` clients for plain ones, for good).
        loop {
            match rustix::net::sendmsg(&*sock, &iov, &mut control, SendFlags::NOSIGNAL) {
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
                Ok(_) => break,
            }
        }
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "name service reply");
        // The board answers within microseconds once its thread runs: the first looks
        // go without waiting, and only then the call sleeps (a sleeping caller pays a
        // wake-up across cores, ~20 us on the machines this runs on, per request).
        let spin_until = std::time::Instant::now() + REPLY_SPIN;
        let mut hung_up = false;
        let (reply, got, truncated) = loop {
            let mut buf = [0u8; 64];
            // Room for more descriptors than a reply carries: any extra are closed here.
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let wait = std::time::Instant::now() >= spin_until;
            let flags = if wait {
                RecvFlags::CMSG_CLOEXEC
            } else {
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
            };
            let n = match rustix::net::recvmsg(&*sock, &mut iov, &mut control, flags) {
                Err(rustix::io::Errno::AGAIN) if !wait => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(rustix::io::Errno::INTR) => continue,
                r => r?,
            };
            let (n, truncated) = (n.bytes, n.flags.contains(rustix::net::ReturnFlags::CTRUNC));
            let mut got = None;
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(it) = msg {
                    for f in it {
                        got.get_or_insert(f);
                    }
                }
            }
            // A look that does not wait can answer end of file with a reply the board
            // sent just before it hung up already queued (`net/unix/af_unix.c`,
            // `__unix_dgram_recvmsg`: its non-blocking `SOCK_SEQPACKET` end-of-file
            // check comes after the dequeue that found nothing): the hang-up is only
            // taken once a second look, made after it was seen, finds nothing either.
            if n == 0 && !std::mem::replace(&mut hung_up, true) {
                continue;
            }
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the board hung up",
                ));
            }
            let reply = NameReply::read_from_bytes(&buf[..n]).map_err(|_| bad())?;
            // The reply of an earlier call that did not wait for it (none does now; a
            // board's answers come in order): dropped, with any descriptor it carried.
            if reply.seq.get().wrapping_sub(seq) as i32 >= 0 {
                break (reply, got, truncated);
            }
        };
        if reply.seq.get() != seq || reply.op.get() != op {
            return Err(bad());
        }
        // The board passed a descriptor (a doorbell) that the kernel could not install
        // here (`MSG_CTRUNC`, `scm_detach_fds` in `net/core/scm.c`: this process is at its
        // limit of open files). The request took effect at the board (a take removed the
        // registration, the doorbells were paired), so this is no plain "not found".
        if truncated {
            return Err(std::io::Error::other(DescriptorLost));
        }
        match reply.result.get() {
            NAMES_OK => Ok((NAMES_OK, got)),
            NAMES_OK_COOKIES if matches!(op, NAMES_LOOKUP_LISTENER | NAMES_LOOKUP_REGISTER) => {
                Ok((NAMES_OK_COOKIES, got))
            }
            NAMES_NOT_FOUND => Ok((NAMES_NOT_FOUND, None)),
            // A board older than the doorbells does not know the op: no doorbell.
            NAMES_MALFORMED if op == NAMES_TAKE_SERVER_BELL => Ok((NAMES_NOT_FOUND, None)),
            NAMES_MALFORMED if op == NAMES_LOOKUP_REGISTER => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the board predates LOOKUP_REGISTER",
            )),
            NAMES_FULL => Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "too many name-service registrations",
            )),
            _ => Err(bad()),
        }
    }

    /// Registers a listening address (`0.0.0.0` / `::` for every address of the family).
    ///
    /// # Errors
    /// The connection's errors; `OutOfMemory` past [`NAMES_MAX_PER_CONNECTION`].
    pub fn register_listener(&self, addr: SocketAddr) -> std::io::Result<()> {
        self.call(NAMES_REGISTER_LISTENER, None, addr).map(drop)
    }

    /// [`NameClient::register_listener`] with the listening socket's `cookie`
    /// (`SO_COOKIE`; clients that see that socket in their kernel then know the connection
    /// goes to it, see [`NameClient::lookup`]) and whether its server takes clients
    /// registered by cookie (it finds their sockets' cookies through `sock_diag`).
    ///
    /// # Errors
    /// As [`NameClient::register_listener`].
    pub fn register_listener_as(
        &self,
        addr: SocketAddr,
        cookie: u64,
        takes_cookies: bool,
    ) -> std::io::Result<()> {
        let mark = listener_endpoint(cookie, takes_cookies);
        self.call_raw(NAMES_REGISTER_LISTENER, mark, addr, None)
            .map(drop)
    }

    /// Withdraws one registration of `addr`; `false` if there was none.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn unregister_listener(&self, addr: SocketAddr) -> std::io::Result<bool> {
        self.call(NAMES_UNREGISTER_LISTENER, None, addr)
    }

    /// Whether a connection to `dest` reaches a registered listener.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn lookup_listener(&self, dest: SocketAddr) -> std::io::Result<bool> {
        self.lookup(dest, None).map(|l| l != Lookup::None)
    }

    /// Whether a connection to `dest` reaches a registered listener, and how a client
    /// should register with it. `seen`: the cookie of the listening socket this host's
    /// kernel would give the connection to (`sock_diag`), if known: then the answer is
    /// [`Lookup::None`] unless that very socket is registered, and [`Lookup::Cookies`]
    /// only with it.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn lookup(&self, dest: SocketAddr, seen: Option<u64>) -> std::io::Result<Lookup> {
        let client = seen.map_or_else(NameEndpoint::default, |c| {
            client_endpoint(ClientKey::Cookie(c))
        });
        let (result, _) = self.call_raw(NAMES_LOOKUP_LISTENER, client, dest, None)?;
        Ok(match result {
            NAMES_OK_COOKIES => Lookup::Cookies,
            NAMES_OK => Lookup::Addresses,
            _ => Lookup::None,
        })
    }

    /// [`NameClient::lookup`] and [`NameClient::register_client`] in one round trip
    /// (LOOKUP_REGISTER): looks up the listener a connection to `dest` reaches, `seen`
    /// being the cookie of the listening socket this host's kernel would give it to, and
    /// only if the answer is [`Lookup::Cookies`] registers the client socket's cookie
    /// `client` for `dest`, with the doorbell `bell` if given. Returns the lookup's answer;
    /// [`Lookup::Cookies`] means registered (nothing is registered otherwise).
    ///
    /// # Errors
    /// `Unsupported` if the board predates the op (then at once, for good: use the two
    /// requests); `InvalidInput` for a zero cookie; otherwise as
    /// [`NameClient::register_client`].
    pub fn lookup_register(
        &self,
        client: u64,
        dest: SocketAddr,
        seen: u64,
        bell: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<Lookup> {
        if self.no_lookup_register.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        if client == 0 || seen == 0 {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let e = lookup_register_endpoint(client, seen);
        match self.call_raw(NAMES_LOOKUP_REGISTER, e, dest, bell) {
            Ok((NAMES_OK_COOKIES, _)) => Ok(Lookup::Cookies),
            Ok((NAMES_OK, _)) => Ok(Lookup::Addresses),
            Ok(_) => Ok(Lookup::None),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::Unsupported {
                    self.no_lookup_register.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// Registers the connection `client` → `server` (before connecting).
    ///
    /// # Errors
    /// As [`NameClient::register_listener`].
    pub fn register_client(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
    ) -> std::io::Result<()> {
        self.call(NAMES_REGISTER_CLIENT, Some(client.into()), server)
            .map(drop)
    }

    /// Withdraws a client registration of this connection; `false` if there was none.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn unregister_client(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
    ) -> std::io::Result<bool> {
        self.call(NAMES_UNREGISTER_CLIENT, Some(client.into()), server)
    }

    /// Whether `client` → `server` was registered (by any host); removes it if so.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn take_client(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
    ) -> std::io::Result<bool> {
        self.call(NAMES_TAKE_CLIENT, Some(client.into()), server)
    }

    /// [`NameClient::register_client`] with the client's doorbell `bell` (a descriptor the
    /// server may write to, to wake the client: section 3.5), which the board hands to the
    /// server's TAKE_CLIENT.
    ///
    /// # Errors
    /// As [`NameClient::register_client`].
    pub fn register_client_with_bell(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
        bell: BorrowedFd<'_>,
    ) -> std::io::Result<()> {
        self.call_with(
            NAMES_REGISTER_CLIENT,
            Some(client.into()),
            server,
            Some(bell),
        )
        .map(drop)
    }

    /// [`NameClient::take_client`] that leaves the server's doorbell `bell` for the
    /// client (see [`NameClient::take_server_bell`]); returns whether the pair was
    /// registered, and the client's doorbell if it left one.
    ///
    /// # Errors
    /// The connection's errors.
    pub fn take_client_with_bell(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
        bell: BorrowedFd<'_>,
    ) -> std::io::Result<(bool, Option<OwnedFd>)> {
        self.call_with(NAMES_TAKE_CLIENT, Some(client.into()), server, Some(bell))
    }

    /// The doorbell the server of `client` → `server` left at its TAKE_CLIENT for the
    /// client registration this connection made, if any (it is removed).
    ///
    /// # Errors
    /// The connection's errors.
    pub fn take_server_bell(
        &self,
        client: impl Into<ClientKey>,
        server: SocketAddr,
    ) -> std::io::Result<Option<OwnedFd>> {
        self.call_with(NAMES_TAKE_SERVER_BELL, Some(client.into()), server, None)
            .map(|(_, fd)| fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn req(op: u32, client: Option<&str>, server: &str) -> Vec<u8> {
        NameRequest {
            op: op.into(),
            seq: 7.into(),
            client: client.map_or_else(NameEndpoint::default, |c| endpoint(a(c))),
            server: endpoint(a(server)),
        }
        .as_bytes()
        .to_vec()
    }

    fn result(t: &mut NameTable, id: u64, bytes: &[u8]) -> u32 {
        let r = t.handle(id, bytes);
        r.result.get()
    }

    #[test]
    fn endpoints_round_trip_and_mapped_addresses_become_v4() {
        for s in ["127.0.0.1:7000", "[::1]:80", "0.0.0.0:1", "[fe80::1]:65535"] {
            assert_eq!(from_endpoint(&endpoint(a(s))), Some(a(s)));
        }
        assert_eq!(
            from_endpoint(&endpoint(a("[::ffff:10.0.0.1]:5"))),
            Some(a("10.0.0.1:5"))
        );
        assert_eq!(from_endpoint(&NameEndpoint::default()), None);
    }

    #[test]
    fn wildcard_listeners_reach_their_family_and_v6_any_reaches_both() {
        assert!(listener_reaches(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(!listener_reaches(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(listener_reaches(a("[::]:80"), a("127.0.0.1:80")));
        assert!(listener_reaches(a("[::]:80"), a("[::1]:80")));
        assert!(listener_reaches(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(!listener_reaches(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!listener_reaches(a("0.0.0.0:80"), a("127.0.0.1:81")));
    }

    #[test]
    fn listeners_are_found_until_withdrawn_or_their_connection_goes() {
        let mut t = NameTable::new();
        let look = req(NAMES_LOOKUP_LISTENER, None, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 1, &look), NAMES_NOT_FOUND);
        let reg = req(NAMES_REGISTER_LISTENER, None, "0.0.0.0:7000");
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        assert_eq!(result(&mut t, 2, &look), NAMES_OK, "any connection sees it");
        let unreg = req(NAMES_UNREGISTER_LISTENER, None, "0.0.0.0:7000");
        assert_eq!(
            result(&mut t, 2, &unreg),
            NAMES_NOT_FOUND,
            "not connection 2's"
        );
        assert_eq!(result(&mut t, 1, &unreg), NAMES_OK);
        assert_eq!(result(&mut t, 2, &look), NAMES_NOT_FOUND);
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        t.drop_connection(1);
        assert_eq!(result(&mut t, 2, &look), NAMES_NOT_FOUND);
        assert_eq!(
            t.counters(),
            NameCounters {
                requests: 8,
                lookups: 4,
                lookups_found: 1,
                ..NameCounters::default()
            }
        );
    }

    #[test]
    fn a_client_registration_is_taken_once_and_only_exactly() {
        let mut t = NameTable::new();
        let reg = req(
            NAMES_REGISTER_CLIENT,
            Some("127.0.0.1:40000"),
            "127.0.0.1:7000",
        );
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        let other = req(NAMES_TAKE_CLIENT, Some("127.0.0.1:40001"), "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &other), NAMES_NOT_FOUND);
        let take = req(NAMES_TAKE_CLIENT, Some("127.0.0.1:40000"), "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &take), NAMES_OK);
        assert_eq!(result(&mut t, 2, &take), NAMES_NOT_FOUND, "taken once");
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        let unreg = req(
            NAMES_UNREGISTER_CLIENT,
            Some("127.0.0.1:40000"),
            "127.0.0.1:7000",
        );
        assert_eq!(result(&mut t, 1, &unreg), NAMES_OK);
        assert_eq!(result(&mut t, 2, &take), NAMES_NOT_FOUND);
        assert_eq!(t.sizes(), (0, 0));
    }

    /// A request naming the client by a socket cookie.
    fn cookie_req(op: u32, cookie: u64, server: &str) -> Vec<u8> {
        NameRequest {
            op: op.into(),
            seq: 7.into(),
            client: client_endpoint(ClientKey::Cookie(cookie)),
            server: endpoint(a(server)),
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn a_cookie_endpoint_has_its_golden_bytes_and_nothing_else() {
        let e = client_endpoint(ClientKey::Cookie(0x0102_0304_0506_0708));
        let mut want = vec![1, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1];
        want.extend_from_slice(&[0; 8]);
        assert_eq!(e.as_bytes(), &want[..]);
        assert_eq!(
            client_from_endpoint(&e),
            Some(ClientKey::Cookie(0x0102_0304_0506_0708))
        );
        // A port or stray address bytes make it malformed; so does an unknown family.
        let mut bad = e;
        bad.port = 1.into();
        assert_eq!(client_from_endpoint(&bad), None);
        let mut bad = e;
        bad.addr[15] = 1;
        assert_eq!(client_from_endpoint(&bad), None);
        let mut bad = e;
        bad.family = 9.into();
        assert_eq!(client_from_endpoint(&bad), None);
        assert_eq!(
            client_from_endpoint(&endpoint(a("[::ffff:10.0.0.1]:5"))),
            Some(ClientKey::Addr(a("10.0.0.1:5")))
        );
        assert_eq!(
            ClientKey::from(a("[::ffff:10.0.0.1]:5")),
            ClientKey::Addr(a("10.0.0.1:5"))
        );
    }

    #[test]
    fn lookups_say_cookies_only_for_the_listener_seen_and_where_every_one_takes_them() {
        let mut t = NameTable::new();
        let marked = |addr: &str, cookie: u64, takes: bool| {
            let mut r =
                NameRequest::read_from_bytes(&req(NAMES_REGISTER_LISTENER, None, addr)).unwrap();
            r.client = listener_endpoint(cookie, takes);
            r.as_bytes().to_vec()
        };
        let look = |dest: &str, seen: Option<u64>| {
            let mut r =
                NameRequest::read_from_bytes(&req(NAMES_LOOKUP_LISTENER, None, dest)).unwrap();
            if let Some(c) = seen {
                r.client = client_endpoint(ClientKey::Cookie(c));
            }
            r.as_bytes().to_vec()
        };
        assert_eq!(
            result(&mut t, 1, &marked("0.0.0.0:7000", 11, true)),
            NAMES_OK
        );
        // Seen (the kernel gives the connection to socket 11): cookies.
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(11))),
            NAMES_OK_COOKIES
        );
        // Not told: found, by address. Another socket seen (a plain listener that takes
        // the connection, or one in another namespace): not found.
        assert_eq!(result(&mut t, 2, &look("127.0.0.1:7000", None)), NAMES_OK);
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(12))),
            NAMES_NOT_FOUND
        );
        // A second listener that reaches it and takes addresses only: addresses.
        assert_eq!(
            result(&mut t, 3, &marked("127.0.0.1:7000", 13, false)),
            NAMES_OK
        );
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(11))),
            NAMES_OK
        );
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(13))),
            NAMES_OK
        );
        // One that does not reach it does not count.
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.2:7000", Some(11))),
            NAMES_OK_COOKIES
        );
        t.drop_connection(3);
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(11))),
            NAMES_OK_COOKIES
        );
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7001", Some(11))),
            NAMES_NOT_FOUND
        );
        // An older host's registration (no mark): found by address only.
        let plain = req(NAMES_REGISTER_LISTENER, None, "127.0.0.1:7002");
        assert_eq!(result(&mut t, 3, &plain), NAMES_OK);
        assert_eq!(result(&mut t, 2, &look("127.0.0.1:7002", None)), NAMES_OK);
        // A mark with a port other than 0 or 1 is malformed.
        let mut bad = NameRequest::read_from_bytes(&marked("127.0.0.1:7003", 1, true)).unwrap();
        bad.client.port = 2.into();
        assert_eq!(result(&mut t, 1, bad.as_bytes()), NAMES_MALFORMED);
        // Withdrawn by address, whichever way it was registered.
        let unreg = req(NAMES_UNREGISTER_LISTENER, None, "0.0.0.0:7000");
        assert_eq!(result(&mut t, 1, &unreg), NAMES_OK);
        assert_eq!(
            result(&mut t, 2, &look("127.0.0.1:7000", Some(11))),
            NAMES_NOT_FOUND
        );
    }

    #[test]
    fn a_client_registered_by_cookie_is_taken_by_that_cookie_only() {
        let mut t = NameTable::new();
        let reg = cookie_req(NAMES_REGISTER_CLIENT, 42, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        // Another cookie, the right cookie for another server, or an address: not it.
        let other = cookie_req(NAMES_TAKE_CLIENT, 43, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &other), NAMES_NOT_FOUND);
        let elsewhere = cookie_req(NAMES_TAKE_CLIENT, 42, "127.0.0.1:7001");
        assert_eq!(result(&mut t, 2, &elsewhere), NAMES_NOT_FOUND);
        let by_addr = req(NAMES_TAKE_CLIENT, Some("127.0.0.1:42"), "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &by_addr), NAMES_NOT_FOUND);
        let take = cookie_req(NAMES_TAKE_CLIENT, 42, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &take), NAMES_OK);
        assert_eq!(result(&mut t, 2, &take), NAMES_NOT_FOUND, "taken once");
        // Withdrawn by its owner; kept as an orphan when its connection goes.
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        let unreg = cookie_req(NAMES_UNREGISTER_CLIENT, 42, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &unreg), NAMES_NOT_FOUND, "not 2's");
        assert_eq!(result(&mut t, 1, &unreg), NAMES_OK);
        assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        t.drop_connection(1);
        assert_eq!(
            result(&mut t, 2, &take),
            NAMES_OK,
            "an orphan is still found"
        );
        // A cookie endpoint with a port is malformed.
        let mut bad = NameRequest::read_from_bytes(&reg).unwrap();
        bad.client.port = 1.into();
        assert_eq!(result(&mut t, 1, bad.as_bytes()), NAMES_MALFORMED);
    }

    fn lookup_register(client: u64, seen: u64, server: &str) -> Vec<u8> {
        NameRequest {
            op: NAMES_LOOKUP_REGISTER.into(),
            seq: 7.into(),
            client: lookup_register_endpoint(client, seen),
            server: endpoint(a(server)),
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn a_lookup_register_request_has_its_golden_bytes() {
        let r = lookup_register(0x0102_0304_0506_0708, 0x1112_1314_1516_1718, "10.0.0.1:80");
        let mut want = vec![8, 0, 0, 0, 7, 0, 0, 0];
        want.extend_from_slice(&[1, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
        want.extend_from_slice(&[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
        want.extend_from_slice(&[4, 0, 80, 0, 10, 0, 0, 1]);
        want.extend_from_slice(&[0; 12]);
        assert_eq!(r, want);
        let e = NameRequest::read_from_bytes(&r).unwrap().client;
        assert_eq!(
            lookup_register_cookies(&e),
            Some((0x0102_0304_0506_0708, 0x1112_1314_1516_1718))
        );
    }

    #[test]
    fn lookup_register_registers_the_client_only_where_the_lookup_says_cookies() {
        let mut t = NameTable::new();
        let mut marked =
            NameRequest::read_from_bytes(&req(NAMES_REGISTER_LISTENER, None, "0.0.0.0:7000"))
                .unwrap();
        marked.client = listener_endpoint(11, true);
        assert_eq!(result(&mut t, 1, marked.as_bytes()), NAMES_OK);
        let take = |c: u64| cookie_req(NAMES_TAKE_CLIENT, c, "127.0.0.1:7000");
        // The listener seen is registered and takes cookies: registered, taken once.
        let lr = lookup_register(42, 11, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &lr), NAMES_OK_COOKIES);
        assert_eq!(result(&mut t, 1, &take(42)), NAMES_OK);
        assert_eq!(result(&mut t, 1, &take(42)), NAMES_NOT_FOUND);
        // Another socket seen, or nothing on the port: not found, nothing registered.
        let other = lookup_register(43, 12, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &other), NAMES_NOT_FOUND);
        assert_eq!(result(&mut t, 1, &take(43)), NAMES_NOT_FOUND);
        let nobody = lookup_register(44, 11, "127.0.0.1:7001");
        assert_eq!(result(&mut t, 2, &nobody), NAMES_NOT_FOUND);
        assert_eq!(
            result(
                &mut t,
                1,
                &cookie_req(NAMES_TAKE_CLIENT, 44, "127.0.0.1:7001")
            ),
            NAMES_NOT_FOUND
        );
        // A listener beside it that takes addresses only: found (1), the client is left
        // to register by its address.
        let mut plain = marked;
        plain.server = endpoint(a("127.0.0.1:7000"));
        plain.client = listener_endpoint(13, false);
        assert_eq!(result(&mut t, 3, plain.as_bytes()), NAMES_OK);
        let lr = lookup_register(45, 11, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 2, &lr), NAMES_OK);
        assert_eq!(result(&mut t, 1, &take(45)), NAMES_NOT_FOUND);
        // Every answer was a lookup.
        let c = t.counters();
        assert_eq!((c.lookups, c.lookups_found), (4, 2));
        // Malformed: a zero cookie, a port, another family.
        for bad in [
            lookup_register(0, 11, "127.0.0.1:7000"),
            lookup_register(46, 0, "127.0.0.1:7000"),
        ] {
            assert_eq!(result(&mut t, 2, &bad), NAMES_MALFORMED);
        }
        let mut bad =
            NameRequest::read_from_bytes(&lookup_register(46, 11, "127.0.0.1:7000")).unwrap();
        bad.client.port = 1.into();
        assert_eq!(result(&mut t, 2, bad.as_bytes()), NAMES_MALFORMED);
        let mut bad =
            NameRequest::read_from_bytes(&lookup_register(46, 11, "127.0.0.1:7000")).unwrap();
        bad.client = endpoint(a("127.0.0.1:40000"));
        assert_eq!(result(&mut t, 2, bad.as_bytes()), NAMES_MALFORMED);
    }

    #[test]
    fn lookup_register_keeps_the_doorbell_only_with_a_registration_and_counts_it_full() {
        let mut t = NameTable::new();
        let t0 = std::time::Instant::now();
        let mut marked =
            NameRequest::read_from_bytes(&req(NAMES_REGISTER_LISTENER, None, "127.0.0.1:7000"))
                .unwrap();
        marked.client = listener_endpoint(11, true);
        assert_eq!(result(&mut t, 1, marked.as_bytes()), NAMES_OK);
        // Registered: the bell is kept and handed to the server with the take.
        let (cfd, mut cend) = bell();
        let lr = lookup_register(42, 11, "127.0.0.1:7000");
        let (r, out) = t.handle_at(2, &lr, Some(cfd), t0);
        assert_eq!((r.result.get(), out.is_none()), (NAMES_OK_COOKIES, true));
        assert_eq!(t.bells_held(), 1);
        let (sfd, _send) = bell();
        let take = cookie_req(NAMES_TAKE_CLIENT, 42, "127.0.0.1:7000");
        let (r, out) = t.handle_at(1, &take, Some(sfd), t0);
        assert_eq!(r.result.get(), NAMES_OK);
        assert!(same(&out.expect("the client's bell"), &mut cend));
        // Not registered: the bell that came is closed.
        let (cfd, _cend) = bell();
        let lr = lookup_register(43, 12, "127.0.0.1:7000");
        let (r, _) = t.handle_at(2, &lr, Some(cfd), t0);
        assert_eq!(r.result.get(), NAMES_NOT_FOUND);
        assert_eq!(t.bells_held(), 1, "only the server's, kept for its client");
        // A full connection registers nothing more.
        for i in 0..NAMES_MAX_PER_CONNECTION as u64 {
            let reg = cookie_req(NAMES_REGISTER_CLIENT, 1000 + i, "127.0.0.1:7001");
            assert_eq!(result(&mut t, 3, &reg), NAMES_OK);
        }
        let lr = lookup_register(44, 11, "127.0.0.1:7000");
        assert_eq!(result(&mut t, 3, &lr), NAMES_FULL);
        assert_eq!(result(&mut t, 1, &take), NAMES_NOT_FOUND);
    }

    #[test]
    fn a_gone_connections_client_registrations_stay_to_be_taken_for_a_while() {
        let mut t = NameTable::new();
        let t0 = std::time::Instant::now();
        let reg = |c: &str| req(NAMES_REGISTER_CLIENT, Some(c), "127.0.0.1:7000");
        let take = |c: &str| req(NAMES_TAKE_CLIENT, Some(c), "127.0.0.1:7000");
        let listen = req(NAMES_REGISTER_LISTENER, None, "0.0.0.0:7000");
        let look = req(NAMES_LOOKUP_LISTENER, None, "127.0.0.1:7000");
        assert_eq!(
            t.handle_at(1, &reg("127.0.0.1:40000"), None, t0)
                .0
                .result
                .get(),
            NAMES_OK
        );
        assert_eq!(
            t.handle_at(1, &reg("127.0.0.1:40001"), None, t0)
                .0
                .result
                .get(),
            NAMES_OK
        );
        assert_eq!(t.handle_at(1, &listen, None, t0).0.result.get(), NAMES_OK);
        t.drop_connection_at(1, t0);
        assert_eq!(t.sizes(), (0, 2), "the listener goes, the clients stay");
        assert_eq!(
            t.handle_at(2, &look, None, t0).0.result.get(),
            NAMES_NOT_FOUND
        );
        let later = t0 + ORPHAN_LIFE / 2;
        assert_eq!(
            t.handle_at(2, &take("127.0.0.1:40000"), None, later)
                .0
                .result
                .get(),
            NAMES_OK
        );
        assert_eq!(
            t.handle_at(2, &take("127.0.0.1:40000"), None, later)
                .0
                .result
                .get(),
            NAMES_NOT_FOUND,
            "taken once"
        );
        assert_eq!(t.sizes(), (0, 1));
        let expired = t0 + ORPHAN_LIFE;
        assert_eq!(
            t.handle_at(2, &take("127.0.0.1:40001"), None, expired)
                .0
                .result
                .get(),
            NAMES_NOT_FOUND,
            "expired"
        );
        assert_eq!(t.sizes(), (0, 0));
    }

    /// A socket pair: the descriptor to hand over, and the end that tells it apart.
    fn bell() -> (OwnedFd, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (OwnedFd::from(a), b)
    }

    /// Whether `fd` is the socket whose other end is `end` (a byte written into one comes
    /// out of the other).
    fn same(fd: &OwnedFd, end: &mut std::os::unix::net::UnixStream) -> bool {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::from(fd.try_clone().unwrap());
        s.write_all(b"x").unwrap();
        end.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        matches!(end.read(&mut b), Ok(1))
    }

    #[test]
    fn doorbells_pass_from_client_to_server_and_back_to_the_registering_connection() {
        let mut t = NameTable::new();
        let t0 = std::time::Instant::now();
        let (c, s) = (Some("127.0.0.1:40000"), "127.0.0.1:7000");
        let (cfd, mut cend) = bell();
        let (sfd, mut send) = bell();
        let (r, out) = t.handle_at(1, &req(NAMES_REGISTER_CLIENT, c, s), Some(cfd), t0);
        assert_eq!((r.result.get(), out.is_none()), (NAMES_OK, true));
        assert_eq!(t.bells_held(), 1);
        let (r, out) = t.handle_at(2, &req(NAMES_TAKE_CLIENT, c, s), Some(sfd), t0);
        assert_eq!(r.result.get(), NAMES_OK);
        assert!(same(&out.expect("the client's bell"), &mut cend));
        assert_eq!(t.bells_held(), 1, "the server's, kept for the client");
        let take = req(NAMES_TAKE_SERVER_BELL, c, s);
        let (r, out) = t.handle_at(2, &take, None, t0);
        assert_eq!(
            (r.result.get(), out.is_none()),
            (NAMES_NOT_FOUND, true),
            "only the connection that registered the client takes it"
        );
        let (r, out) = t.handle_at(1, &take, None, t0);
        assert_eq!(r.result.get(), NAMES_OK);
        assert!(same(&out.expect("the server's bell"), &mut send));
        assert_eq!(
            t.handle_at(1, &take, None, t0).0.result.get(),
            NAMES_NOT_FOUND
        );
        assert_eq!((t.bells_held(), t.counters().bells_passed), (0, 2));

        // A server's bell goes with the client's connection, or after ORPHAN_LIFE; other
        // requests close what comes with them.
        for (gone, when) in [(true, t0), (false, t0 + ORPHAN_LIFE)] {
            let (cfd, _cend) = bell();
            let (sfd, _send) = bell();
            t.handle_at(3, &req(NAMES_REGISTER_CLIENT, c, s), Some(cfd), t0);
            t.handle_at(4, &req(NAMES_TAKE_CLIENT, c, s), Some(sfd), t0);
            assert_eq!(t.bells_held(), 1);
            if gone {
                t.drop_connection_at(3, t0);
            }
            let (r, out) = t.handle_at(3, &take, None, when);
            assert_eq!((r.result.get(), out.is_none()), (NAMES_NOT_FOUND, true));
            assert_eq!(t.bells_held(), 0);
        }
        let (fd, _end) = bell();
        let look = req(NAMES_LOOKUP_LISTENER, None, s);
        assert!(t.handle_at(5, &look, Some(fd), t0).1.is_none());
        assert_eq!(t.bells_held(), 0);
    }

    /// A board of another time in a directory of its own (`tag`): it answers the name
    /// service's magic, then each request with `answer(op)`, until the host hangs up;
    /// the thread returns the ops it was asked.
    fn old_board(
        tag: &str,
        answer: fn(u32) -> u32,
    ) -> (std::path::PathBuf, std::thread::JoinHandle<Vec<u32>>) {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let dir = std::env::temp_dir().join(format!("names-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = super::super::socket_path(&dir, "old");
        let _ = std::fs::remove_file(&path);
        let l = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&l, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&l, 1).unwrap();
        let board = std::thread::spawn(move || {
            let c = rustix::net::accept(&l).unwrap();
            let mut buf = [0u8; 64];
            rustix::net::recv(&c, &mut buf, RecvFlags::empty()).unwrap();
            rustix::net::send(&c, &NAMES_MAGIC, SendFlags::empty()).unwrap();
            let mut ops = Vec::new();
            loop {
                let (n, _) = rustix::net::recv(&c, &mut buf, RecvFlags::empty()).unwrap();
                if n == 0 {
                    return ops;
                }
                let r = NameRequest::read_from_bytes(&buf[..n]).unwrap();
                ops.push(r.op.get());
                let reply = NameReply {
                    op: r.op,
                    seq: r.seq,
                    result: answer(r.op.get()).into(),
                    reserved: 0.into(),
                };
                rustix::net::send(&c, reply.as_bytes(), SendFlags::empty()).unwrap();
            }
        });
        (dir, board)
    }

    #[test]
    fn a_board_without_doorbells_answers_take_server_bell_as_none() {
        // A board of before op 7: it answers op 7 as malformed.
        let (dir, board) = old_board("old7", |_| NAMES_MALFORMED);
        let n = NameClient::connect_in(&dir, "old").unwrap();
        let got = n.take_server_bell(a("127.0.0.1:40000"), a("127.0.0.1:7000"));
        assert!(matches!(got, Ok(None)), "{got:?}");
        drop(n);
        assert_eq!(board.join().unwrap(), [NAMES_TAKE_SERVER_BELL]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_board_without_lookup_register_is_asked_once_and_then_in_two_requests() {
        // A board of before op 8: it answers op 8 as malformed, lookups as found.
        let (dir, board) = old_board("old8", |op| match op {
            NAMES_LOOKUP_LISTENER => NAMES_OK_COOKIES,
            _ => NAMES_MALFORMED,
        });
        let n = NameClient::connect_in(&dir, "old").unwrap();
        let dest = a("127.0.0.1:7000");
        for _ in 0..2 {
            let got = n.lookup_register(42, dest, 11, None);
            assert_eq!(
                got.map_err(|e| e.kind()),
                Err(std::io::ErrorKind::Unsupported)
            );
        }
        assert_eq!(n.lookup(dest, Some(11)).unwrap(), Lookup::Cookies);
        drop(n);
        assert_eq!(
            board.join().unwrap(),
            [NAMES_LOOKUP_REGISTER, NAMES_LOOKUP_LISTENER],
            "op 8 asked once"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn doorbells_pass_in_pairs_or_not_at_all() {
        use std::io::Read;
        let t0 = std::time::Instant::now();
        let (c, s) = (Some("127.0.0.1:40000"), "127.0.0.1:7000");
        let take = req(NAMES_TAKE_SERVER_BELL, c, s);
        // A client with a doorbell, a server without: the client's is closed, not passed.
        let mut t = NameTable::new();
        let (cfd, mut cend) = bell();
        t.handle_at(1, &req(NAMES_REGISTER_CLIENT, c, s), Some(cfd), t0);
        let (r, out) = t.handle_at(2, &req(NAMES_TAKE_CLIENT, c, s), None, t0);
        assert_eq!((r.result.get(), out.is_none()), (NAMES_OK, true));
        assert_eq!(t.bells_held(), 0);
        cend.set_nonblocking(true).unwrap();
        assert!(matches!(cend.read(&mut [0u8; 1]), Ok(0)), "closed");
        assert_eq!(
            t.handle_at(1, &take, None, t0).0.result.get(),
            NAMES_NOT_FOUND
        );
        // A server with a doorbell, a client without: the server's is not kept.
        let mut t = NameTable::new();
        t.handle_at(1, &req(NAMES_REGISTER_CLIENT, c, s), None, t0);
        let (sfd, mut send) = bell();
        let (r, out) = t.handle_at(2, &req(NAMES_TAKE_CLIENT, c, s), Some(sfd), t0);
        assert_eq!((r.result.get(), out.is_none()), (NAMES_OK, true));
        assert_eq!(t.bells_held(), 0);
        send.set_nonblocking(true).unwrap();
        assert!(matches!(send.read(&mut [0u8; 1]), Ok(0)), "closed");
        assert_eq!(
            t.handle_at(1, &take, None, t0).0.result.get(),
            NAMES_NOT_FOUND
        );
        assert_eq!(t.counters().bells_passed, 0);
    }

    #[test]
    fn the_board_holds_at_most_max_bells_and_registers_without_one_past_it() {
        let mut t = NameTable::new();
        let s = "127.0.0.1:7000";
        let mut ends = Vec::new();
        for port in 0..=MAX_BELLS {
            let (fd, end) = bell();
            ends.push(end);
            let c = format!("127.0.0.1:{}", 20000 + port);
            let r = t.handle_with(1, &req(NAMES_REGISTER_CLIENT, Some(&c), s), Some(fd));
            assert_eq!(r.0.result.get(), NAMES_OK);
        }
        assert_eq!(t.bells_held(), MAX_BELLS);
        let last = format!("127.0.0.1:{}", 20000 + MAX_BELLS);
        let (r, out) = t.handle_with(2, &req(NAMES_TAKE_CLIENT, Some(&last), s), None);
        assert_eq!((r.result.get(), out.is_none()), (NAMES_OK, true));
        t.drop_connection(1);
        assert_eq!(t.bells_held(), 0);
    }

    #[test]
    fn malformed_requests_and_full_connections_are_refused() {
        let mut t = NameTable::new();
        assert_eq!(result(&mut t, 1, &[0u8; 47]), NAMES_MALFORMED, "short");
        assert_eq!(
            result(&mut t, 1, &req(99, None, "127.0.0.1:1")),
            NAMES_MALFORMED,
            "unknown op"
        );
        let no_client = req(NAMES_REGISTER_CLIENT, None, "127.0.0.1:1");
        assert_eq!(result(&mut t, 1, &no_client), NAMES_MALFORMED);
        let reply = t.handle(1, &req(99, None, "127.0.0.1:1"));
        assert_eq!((reply.op.get(), reply.seq.get()), (99, 7), "echoed");
        let reg = req(NAMES_REGISTER_LISTENER, None, "127.0.0.1:1");
        for _ in 0..NAMES_MAX_PER_CONNECTION {
            assert_eq!(result(&mut t, 1, &reg), NAMES_OK);
        }
        assert_eq!(result(&mut t, 1, &reg), NAMES_FULL);
        assert_eq!(result(&mut t, 2, &reg), NAMES_OK, "per connection");
    }

    /// A client on one end of a socket pair, and a thread that answers each request on
    /// the other after `delay` with `result` (and hangs up after `answers` of them).
    fn fake_board(
        delay: std::time::Duration,
        result: u32,
        answers: usize,
    ) -> (NameClient, std::thread::JoinHandle<()>) {
        fake_board_after(None, delay, result, answers)
    }

    /// [`fake_board`], with `first` waiting for the client before any answer.
    fn fake_board_after(
        first: Option<NameReply>,
        delay: std::time::Duration,
        result: u32,
        answers: usize,
    ) -> (NameClient, std::thread::JoinHandle<()>) {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (ours, board) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        if let Some(r) = first {
            rustix::net::send(&board, r.as_bytes(), SendFlags::NOSIGNAL).unwrap();
        }
        let t = std::thread::spawn(move || {
            for _ in 0..answers {
                let mut buf = [0u8; 128];
                let (n, _) = rustix::net::recv(&board, &mut buf, RecvFlags::empty()).unwrap();
                let req = NameRequest::read_from_bytes(&buf[..n]).unwrap();
                std::thread::sleep(delay);
                let reply = NameReply {
                    op: req.op,
                    seq: req.seq,
                    result: result.into(),
                    reserved: 0.into(),
                };
                rustix::net::send(&board, reply.as_bytes(), SendFlags::NOSIGNAL).unwrap();
            }
        });
        let c = NameClient {
            sock: Mutex::new(ours),
            seq: AtomicU32::new(1),
            no_lookup_register: AtomicBool::new(false),
        };
        (c, t)
    }

    /// A reply left unread by an earlier call (a call cut by a signal did so before it
    /// retried) is dropped, not taken for the next call's: before, each call after it
    /// read the one before's answer, for good (socat's fork server under `ism-run` took
    /// its clients for plain ones after a burst).
    #[test]
    fn a_stale_reply_is_skipped_and_the_calls_stay_in_step() {
        let stale = NameReply {
            op: NAMES_LOOKUP_LISTENER.into(),
            seq: 0.into(),
            result: NAMES_NOT_FOUND.into(),
            reserved: 0.into(),
        };
        let (c, t) = fake_board_after(Some(stale), std::time::Duration::ZERO, NAMES_OK, 2);
        let dest = a("127.0.0.1:80");
        assert!(
            c.lookup_listener(dest).unwrap(),
            "the stale 'not found' was taken"
        );
        assert!(c.lookup_listener(dest).unwrap(), "in step");
        t.join().unwrap();
    }

    /// A reply the board sent just before it hung up is taken, not lost to the hang-up:
    /// a look that does not wait can find the queue empty, then the reply and the
    /// hang-up both come, and the kernel answers end-of-file though the reply is there
    /// (`net/unix/af_unix.c`, `__unix_dgram_recvmsg`: its non-blocking `SOCK_SEQPACKET`
    /// end-of-file check comes after the dequeue). Here once in some thousands of calls.
    #[test]
    fn a_reply_sent_just_before_the_board_hangs_up_is_taken() {
        let dest = a("127.0.0.1:80");
        for i in 0..5000 {
            let (c, t) = fake_board(std::time::Duration::ZERO, NAMES_OK, 1);
            assert!(c.lookup_listener(dest).unwrap(), "call {i}");
            t.join().unwrap();
        }
    }

    #[test]
    fn a_call_takes_a_reply_that_comes_at_once_or_after_its_spin() {
        let dest = a("127.0.0.1:80");
        for delay in [std::time::Duration::ZERO, 5 * REPLY_SPIN, 200 * REPLY_SPIN] {
            let (c, t) = fake_board(delay, NAMES_OK, 2);
            assert!(c.lookup_listener(dest).unwrap(), "{delay:?}");
            assert!(c.lookup_listener(dest).unwrap(), "{delay:?}: in step");
            t.join().unwrap();
            // The board hung up: an error, not a wait for good.
            let e = c.lookup_listener(dest).unwrap_err().kind();
            assert!(
                matches!(
                    e,
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "{delay:?}: {e:?}"
            );
        }
        let (c, t) = fake_board(5 * REPLY_SPIN, NAMES_NOT_FOUND, 1);
        assert!(!c.lookup_listener(dest).unwrap());
        t.join().unwrap();
    }
}
