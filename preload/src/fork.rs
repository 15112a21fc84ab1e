//! `fork` and `exec` (docs/ism-run.md, "fork and exec").
//!
//! **fork.** glibc's `fork` runs the handlers registered with `pthread_atfork` (glibc
//! `posix/fork.c`, `__libc_fork`: the prepare handlers before the system call, then in the
//! child, after its own locks (malloc's among them) were reinitialised, the child handlers).
//! Threads do not survive a `fork`, so the child must not use its parent's function,
//! mappings, name-service connection or connections: they belong to the parent, whose
//! threads still run them. So:
//! * prepare (parent, before `fork`): takes the locks the child will need (the state's
//!   set-up lock, the descriptor table, the epoll records, Rust's stderr, the set-up
//!   threads' pool: `crate::workers`) so that no other
//!   thread holds them at the moment of the fork, and builds the child's table: every SMC-D
//!   descriptor becomes [`Entry::Inherited`], every registered listener a listener not
//!   registered by the child yet; and lists the library's descriptors the child must close.
//! * child: installs that table (the parent's entries are forgotten, never dropped:
//!   dropping would end the parent's connections), closes the parent's library
//!   descriptors (kept TCP sockets, doorbells, name-service and function sockets, so that
//!   the board still sees the parent hang up when it dies), replaces each inherited SMC-D
//!   descriptor by an unconnected TCP socket (so the child can neither read the parent's
//!   doorbell nor see its readiness), forgets the parent's state
//!   (`runtime::forget_in_child`) and releases the locks. Only system calls, atomics and
//!   lock releases: nothing that allocates or waits. The child then sets up its own state
//!   on first use, as a new process does.
//! * parent: releases the locks and drops the prepared table.
//!
//! `vfork`, and glibc's `posix_spawn`, `system` and `popen` (which create the child with
//! `clone(CLONE_VM | CLONE_VFORK)` and the C library's internal calls, glibc
//! `sysdeps/unix/sysv/linux/spawni.c`), run no fork handlers: such a child shares the
//! parent's memory until it `exec`s, so the hooks that change the table check
//! [`owner`] and leave it alone in such a child.
//!
//! **exec.** The library's own descriptors are close-on-exec; the library's state goes with
//! the address space. An SMC-D descriptor without `FD_CLOEXEC` survives as the doorbell
//! socket (A): [`mark_doorbell`] binds every A to an abstract UNIX name with a prefix of
//! ours, and the new image's library ([`after_exec`], from its constructor) finds such
//! descriptors and replaces them as a fork child does, so its reads and writes fail with
//! `ENOTCONN` instead of reading doorbell bytes.

// The unit-test build has no constructor (see lib.rs), so the handlers are unused there.
#![cfg_attr(test, allow(dead_code))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::StderrLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use libc::c_int;

use crate::hooks::{Entry, EpollRegs, Inherited, ListenerReg, EPOLL_REGS, TABLE};
use crate::real::real;
use crate::runtime;

/// The abstract UNIX name prefix of doorbell sockets (A).
const BELL_PREFIX: &[u8] = b"ism-run-bell:";
/// `SO_RCVLOWAT` and `TCP_USER_TIMEOUT` of the dead socket that replaces an inherited
/// SMC-D descriptor (see [`replace_with_dummy`]): how an `exec`ed image tells it from the
/// program's own sockets (no program sets both to these values).
const DUMMY_MARK: (c_int, c_int) = (40_961, 364_826_637);

/// The process whose state the library's memory holds (0: not known yet, as in unit
/// tests). Set at load and in a fork child; a vfork child has another pid.
static OWNER: AtomicU32 = AtomicU32::new(0);

/// Whether the calling process owns the library's state (not a vfork child, nor a child
/// made by a `clone` that ran no fork handlers).
pub fn owner() -> bool {
    let o = OWNER.load(Ordering::Acquire);
    o == 0 || o == std::process::id()
}

type Map = Option<crate::table::FdMap<Arc<Entry>>>;

/// What the prepare handler holds for the parent and child handlers.
struct Held {
    init: MutexGuard<'static, ()>,
    table: MutexGuard<'static, Map>,
    epoll: MutexGuard<'static, Option<EpollRegs>>,
    stderr: StderrLock<'static>,
    workers: MutexGuard<'static, crate::workers::Pool>,
    late: MutexGuard<'static, crate::late::Late>,
    child_map: Map,
    close: Vec<c_int>,
    /// (application descriptor, its socket family): to replace in the child.
    dummies: Vec<(c_int, c_int)>,
}

thread_local! {
    /// Set by the prepare handler in the thread that forks, taken by the parent or the
    /// child handler in the same thread.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Registers the fork handlers and records the owner (from the library's constructor).
pub fn init() {
    let _ = crate::config::Config::loaded();
    OWNER.store(std::process::id(), Ordering::Release);
    // SAFETY: registers three `extern "C" fn()` handlers that live as long as the library
    // (it is never unloaded: LD_PRELOAD).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    let _ = std::panic::catch_unwind(|| {
        // Before any lock: accepted connections whose set-up has not answered the client
        // go on over TCP, which the child inherits (a fork-per-connection server).
        crate::connecting::refuse_servers_before_fork();
        // Before the other locks: this takes the attachment's and the name service's.
        let mut close = runtime::own_fds();
        let init = runtime::init_lock();
        let table = TABLE.lock_map();
        let epoll = EPOLL_REGS.lock().unwrap_or_else(|e| e.into_inner());
        let stderr = std::io::stderr().lock();
        let workers = crate::workers::prepare_fork();
        let late = crate::late::prepare_fork();
        close.extend(crate::late::own_fds(&late));
        let mut child_map = crate::table::FdMap::default();
        let mut dummies = Vec::new();
        let mut seen: HashMap<*const Entry, Arc<Entry>> = HashMap::new();
        if let Some(m) = table.as_ref() {
            for (&fd, e) in m {
                let tcp = match &**e {
                    Entry::Smc(s) => Some(s.tcp_fd()),
                    Entry::Connecting(c) => Some(c.tcp_fd()),
                    _ => None,
                };
                if let Some(tcp) = tcp {
                    let family = crate::net::sockopt_int(tcp, libc::SOL_SOCKET, libc::SO_DOMAIN)
                        .unwrap_or(libc::AF_INET);
                    dummies.push((fd, family));
                }
                let new = match seen.get(&Arc::as_ptr(e)) {
                    Some(n) => n.clone(),
                    None => {
                        let n = Arc::new(match &**e {
                            Entry::Smc(s) => {
                                close.extend(s.own_fds());
                                Entry::Inherited(Inherited::at(crate::net::local_addr(s.tcp_fd())))
                            }
                            Entry::Connecting(c) => {
                                // The connect under way stays with the parent, as a
                                // connection does.
                                close.extend(c.own_fds());
                                Entry::Inherited(Inherited::at(crate::net::local_addr(c.tcp_fd())))
                            }
                            Entry::Inherited(i) => Entry::Inherited(Inherited::at(i.local())),
                            Entry::Listener(l) => {
                                Entry::Listener(ListenerReg::inherited(l.addr(), l.cookie()))
                            }
                        });
                        seen.insert(Arc::as_ptr(e), n.clone());
                        n
                    }
                };
                child_map.insert(fd, new);
            }
        }
        let held = Held {
            init,
            table,
            epoll,
            stderr,
            workers,
            late,
            child_map: Some(child_map),
            close,
            dummies,
        };
        HELD.with(|h| *h.borrow_mut() = Some(held));
    });
}

extern "C" fn parent() {
    let held = HELD.with(|h| h.borrow_mut().take());
    drop(held);
}

extern "C" fn child() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    OWNER.store(pid, Ordering::Release);
    runtime::forget_in_child();
    // The parent's set-up threads are not the child's.
    crate::connecting::forget_in_child();
    let Some(held) = HELD.with(|h| h.borrow_mut().take()) else {
        return;
    };
    let Held {
        init,
        mut table,
        epoll,
        stderr,
        workers,
        late,
        child_map,
        close,
        dummies,
    } = held;
    crate::workers::in_child(workers);
    crate::late::in_child(late);
    // The parent's entries are forgotten: dropping one could end its connection.
    std::mem::forget(std::mem::replace(&mut *table, child_map));
    drop(table);
    if let Some(cl) = real().close {
        for fd in &close {
            // SAFETY: closes the child's copy of a descriptor of the library's (the
            // parent's own stays open).
            unsafe { cl(*fd) };
        }
    }
    for &(fd, family) in &dummies {
        replace_with_dummy(fd, family);
    }
    drop(epoll);
    drop(init);
    drop(stderr);
    // `close` and `dummies` are freed here: glibc reinitialised malloc's locks in the
    // child before running the fork handlers (posix/fork.c).
}

/// Puts an unconnected TCP socket of `family` on `fd` (keeping its close-on-exec flag):
/// reads and writes through the library fail with `ENOTCONN`, `poll` shows `POLLHUP`,
/// and nothing of the parent's connection is reachable. Only system calls
/// (async-signal-safe); leaves `fd` as it is if one fails.
fn replace_with_dummy(fd: c_int, family: c_int) {
    let r = real();
    let (Some(fcntl), Some(dup3), Some(close)) = (r.fcntl, r.dup3, r.close) else {
        return;
    };
    // SAFETY: F_GETFD takes no argument.
    let fdflags = unsafe { fcntl(fd, libc::F_GETFD, 0) };
    if fdflags < 0 {
        return;
    }
    // SAFETY: a plain socket call.
    let d = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if d < 0 {
        return;
    }
    for (level, name, v) in [
        (libc::SOL_SOCKET, libc::SO_RCVLOWAT, DUMMY_MARK.0),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, DUMMY_MARK.1),
    ] {
        // SAFETY: an integer option from a local of its size, on our new socket.
        unsafe {
            libc::setsockopt(
                d,
                level,
                name,
                (&raw const v).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
    }
    let flags = if fdflags & libc::FD_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    // SAFETY: moves our new socket onto `fd` (closing what `fd` was in this process), then
    // closes the new socket's first number.
    unsafe {
        dup3(d, fd, flags);
        close(d);
    }
}

/// Names the doorbell socket A (not yet on the application's descriptor) so that an image
/// that inherits it across `exec` can tell it from the application's own sockets.
pub fn mark_doorbell(a: c_int) {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{}{}:{}",
        std::str::from_utf8(BELL_PREFIX).unwrap_or_default(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    // SAFETY: all-zero bytes are a valid `sockaddr_un`.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    if bytes.len() + 1 > sa.sun_path.len() {
        return;
    }
    // sun_path[0] stays 0: an abstract name (no file).
    for (i, b) in bytes.iter().enumerate() {
        sa.sun_path[i + 1] = *b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + bytes.len();
    // SAFETY: `sa` holds a valid address of `len` bytes; `a` is our own socket.
    unsafe { libc::bind(a, (&raw const sa).cast(), len as libc::socklen_t) };
}

/// Whether `fd` is a doorbell socket A of an earlier image (see [`mark_doorbell`]).
fn is_doorbell(fd: c_int) -> bool {
    let Some(gsn) = real().getsockname else {
        return false;
    };
    // SAFETY: all-zero bytes are a valid `sockaddr_un`.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `sa` has room for `len` bytes.
    if unsafe { gsn(fd, (&raw mut sa).cast(), &mut len) } != 0 {
        return false;
    }
    let off = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    if c_int::from(sa.sun_family) != libc::AF_UNIX
        || (len as usize) < off + 1 + BELL_PREFIX.len()
        || sa.sun_path[0] != 0
    {
        return false;
    }
    sa.sun_path[1..=BELL_PREFIX.len()]
        .iter()
        .zip(BELL_PREFIX)
        .all(|(&c, &b)| c as u8 == b)
}

/// Whether `fd` is the dead socket put in place of an inherited SMC-D descriptor by a
/// fork child (see [`replace_with_dummy`]).
fn is_dummy(fd: c_int) -> bool {
    use crate::net::sockopt_int;
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT) == Some(DUMMY_MARK.0)
        && sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) == Some(DUMMY_MARK.1)
        && crate::net::is_inet_stream(fd)
}

/// From the constructor of a new image: SMC-D descriptors the old image passed across
/// `exec` (without `FD_CLOEXEC`) become inherited descriptors (see the module docs), and
/// listening `AF_INET`/`AF_INET6` sockets listeners of this image, registered on first
/// use (`crate::hooks::ListenerReg::found`).
pub fn after_exec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<c_int> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // Standard input, output and error too: inetd, `posix_spawn` with `dup2` file actions
    // and shell redirections hand a connection to a program there.
    for fd in fds {
        let bell = is_doorbell(fd);
        if bell || is_dummy(fd) {
            if bell {
                replace_with_dummy(fd, libc::AF_INET);
            }
            drop(TABLE.insert(fd, Arc::new(Entry::Inherited(Inherited::default()))));
            debug_line(&format!(
                "fd {fd}: an SMC-D descriptor passed across exec without FD_CLOEXEC (its connection stays with the process image that made it); reads and writes fail with ENOTCONN"
            ));
        } else if let Some(addr) = inherited_listener(fd) {
            // A listener the image before this one (or whoever started it) may have
            // registered: this image takes its clients and registers it itself, at its
            // first accept, epoll_ctl or listen on it, or before it changes its
            // credentials (nginx's binary upgrade: the new master's workers drop theirs).
            let cookie = crate::net::socket_cookie(fd).unwrap_or(0);
            let reg = ListenerReg::found(addr, cookie);
            drop(TABLE.insert(fd, Arc::new(Entry::Listener(reg))));
        }
    }
}

/// What a new image needs to run this library: its path (for `LD_PRELOAD`) and the
/// `ISM_*` variables of the process as it started (`NAME=value`), captured at load.
struct LibraryEnv {
    lib: std::ffi::CString,
    vars: Vec<std::ffi::CString>,
}

static LIBRARY_ENV: std::sync::OnceLock<Option<LibraryEnv>> = std::sync::OnceLock::new();

/// Captures [`LibraryEnv`] (from the library's constructor, before the program can change
/// its environment: nginx rebuilds its own).
pub fn capture_env() {
    LIBRARY_ENV.get_or_init(|| {
        // SAFETY: all-zero bytes are a valid `Dl_info`; `dladdr` fills it for an address
        // of this library (this function's).
        let lib = unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            if libc::dladdr(capture_env as *const libc::c_void, &mut info) == 0
                || info.dli_fname.is_null()
            {
                return None;
            }
            std::ffi::CStr::from_ptr(info.dli_fname).to_owned()
        };
        use std::os::unix::ffi::OsStrExt;
        let vars = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes().starts_with(b"ISM_"))
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                std::ffi::CString::new(kv).ok()
            })
            .collect();
        Some(LibraryEnv { lib, vars })
    });
}

/// For an `execve` with environment `envp`: if registered listeners of this process cross
/// the `exec` (no `FD_CLOEXEC`) and `envp` would start the new image without this library,
/// `envp` with it (`LD_PRELOAD` with the library appended, and the `ISM_*` variables the
/// process started with that `envp` lacks); `None` otherwise. Without the library the new
/// image would accept the clients that the registration sends over CLC as plain TCP and
/// read their CLC proposals as data (nginx's binary upgrade gives the new binary only the
/// variables its `env` directives name); with it, it takes the listeners over (see
/// [`after_exec`]), as an SMC socket that Linux's `smc_run` made stays one across `exec`.
///
/// # Safety
/// `envp` is null or a null-terminated array of NUL-terminated strings.
pub unsafe fn env_for_exec(envp: *const *const libc::c_char) -> Option<Vec<std::ffi::CString>> {
    // A vfork child (or a clone without fork handlers) shares the parent's memory and
    // table: it takes no lock of it and allocates nothing.
    if !owner() {
        return None;
    }
    let lib_env = LIBRARY_ENV.get()?.as_ref()?;
    if !passes_registered_listeners() {
        return None;
    }
    let mut entries: Vec<&std::ffi::CStr> = Vec::new();
    if !envp.is_null() {
        let mut p = envp;
        // SAFETY: the caller's null-terminated array of C strings.
        unsafe {
            while !(*p).is_null() {
                entries.push(std::ffi::CStr::from_ptr(*p));
                p = p.add(1);
            }
        }
    }
    let lib = lib_env.lib.to_bytes();
    let preload = entries
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"LD_PRELOAD="));
    if preload.is_some_and(|v| v.split(|&b| b == b':' || b == b' ').any(|x| x == lib)) {
        return None;
    }
    let name = |e: &[u8]| e.split(|&b| b == b'=').next().map(<[u8]>::to_vec);
    let mut out: Vec<std::ffi::CString> = entries
        .iter()
        .filter(|e| !e.to_bytes().starts_with(b"LD_PRELOAD="))
        .map(|e| (*e).to_owned())
        .collect();
    let mut ld = b"LD_PRELOAD=".to_vec();
    if let Some(v) = preload.filter(|v| !v.is_empty()) {
        ld.extend_from_slice(v);
        ld.push(b':');
    }
    ld.extend_from_slice(lib);
    out.push(std::ffi::CString::new(ld).ok()?);
    for v in &lib_env.vars {
        let n = name(v.to_bytes());
        if !entries.iter().any(|e| name(e.to_bytes()) == n) {
            out.push(v.clone());
        }
    }
    debug_line("exec: the new image's environment lacked this library; LD_PRELOAD and the ISM_* variables added (registered listeners cross the exec)");
    Some(out)
}

/// Whether a listener registered on the board (by this process or one it inherited)
/// stays open across `exec`.
fn passes_registered_listeners() -> bool {
    let Some(fcntl) = real().fcntl else {
        return false;
    };
    TABLE.lock_map().as_ref().is_some_and(|m| {
        m.iter().any(|(&fd, e)| {
            matches!(&**e, Entry::Listener(l) if l.addr().is_some())
                // SAFETY: F_GETFD takes no argument.
                && unsafe { fcntl(fd, libc::F_GETFD, 0) } & libc::FD_CLOEXEC == 0
        })
    })
}

/// The address of `fd` if it is a listening `AF_INET`/`AF_INET6` stream socket.
fn inherited_listener(fd: c_int) -> Option<std::net::SocketAddr> {
    let listening = crate::net::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1);
    (listening && crate::net::is_inet_stream(fd))
        .then(|| crate::net::local_addr(fd))
        .flatten()
}

/// One line on stderr with `ISM_RUN_DEBUG=1`, without setting up the state for it.
pub fn debug_line(line: &str) {
    let on = match runtime::existing() {
        Some(rt) => rt.cfg.debug,
        None => crate::config::Config::loaded().debug,
    };
    if on {
        crate::runtime::say(&format!("ism-run[{}]: {line}", std::process::id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sockets")]
    fn only_listening_inet_sockets_are_taken_for_inherited_listeners() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            inherited_listener(l.as_raw_fd()),
            Some(l.local_addr().unwrap())
        );
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(inherited_listener(c.as_raw_fd()), None, "connected");
        let dir = std::env::temp_dir().join(format!("ism-run-fork-{}", std::process::id()));
        let u = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        assert_eq!(inherited_listener(u.as_raw_fd()), None, "AF_UNIX");
        drop(u);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(inherited_listener(-1), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no UNIX sockets")]
    fn a_marked_doorbell_is_recognised_and_a_dummy_fails_with_enotconn() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (other, _o) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!is_doorbell(a.as_raw_fd()), "unnamed");
        mark_doorbell(a.as_raw_fd());
        assert!(is_doorbell(a.as_raw_fd()));
        assert!(!is_doorbell(b.as_raw_fd()) && !is_doorbell(other.as_raw_fd()));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!is_doorbell(l.as_raw_fd()) && !is_doorbell(-1));

        // The dummy keeps the descriptor number, is an unconnected TCP socket, marked.
        assert!(!is_dummy(a.as_raw_fd()) && !is_dummy(l.as_raw_fd()));
        replace_with_dummy(a.as_raw_fd(), libc::AF_INET);
        assert!(!is_doorbell(a.as_raw_fd()));
        assert!(is_dummy(a.as_raw_fd()));
        assert!(crate::net::is_inet_stream(a.as_raw_fd()));
        let mut buf = [0u8; 4];
        // SAFETY: reads into a local buffer.
        let n = unsafe { libc::recv(a.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
        assert_eq!(n, -1);
        assert_eq!(crate::real::errno(), libc::ENOTCONN);
        // B's peer is gone: the doorbell is no longer reachable from this descriptor.
        // SAFETY: as above.
        let n = unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
        assert_eq!(n, 0, "end of file: A was replaced");
    }
}
