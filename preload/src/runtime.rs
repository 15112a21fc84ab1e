//! The process-wide state, set up lazily: the configuration, the board's name service (on
//! the first listen or connect of a candidate socket) and the ISM function with its SMC-D
//! stack (on the first listen, or the first connect to a registered listener).
//!
//! A forked child does not use its parent's state: `crate::fork`'s child handler forgets
//! it (`forget_in_child`), and the child sets up its own, lazily, as a new process would.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ism_host_driver::smcd::{SmcStack, StackConfig};
use ism_sim::process::{Attachment, NameClient};

use crate::config::Config;

/// The process-wide state.
pub struct Runtime {
    /// The configuration.
    pub cfg: Config,
    /// The board's name service; `None` without a board (everything is plain TCP).
    pub names: Option<NameClient>,
    stack: OnceLock<Option<Arc<SmcStack>>>,
    /// The process that set this up (a forked child shares the state but not the
    /// connections' threads; only this process cleans up at exit).
    pub pid: u32,
    /// Addresses this process listens on (registered): a connection to one of them is
    /// this process talking to itself, which stays on TCP.
    own_listeners: Mutex<Vec<std::net::SocketAddr>>,
    /// The attached function, kept for the life of the process (detached at exit).
    attachment: Mutex<Option<Attachment>>,
}

/// The state of this process: null until first use, and again in a forked child (whose
/// parent's state is forgotten, never dropped: see [`forget_in_child`]). Each state is
/// leaked (lives until exit), so references to it are `'static`.
static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises the setting up of [`RUNTIME`] (held across `fork` by `crate::fork`).
static INIT: Mutex<()> = Mutex::new(());
/// The parent already printed the no-board line: a forked child does not repeat it.
static WARNED_BY_PARENT: AtomicBool = AtomicBool::new(false);

/// The state, set up on first use.
pub fn runtime() -> &'static Runtime {
    if let Some(rt) = existing() {
        return rt;
    }
    let _g = init_lock();
    if let Some(rt) = existing() {
        return rt;
    }
    let cfg = Config::loaded().clone();
    // The board's sockets and objects this process keeps go where the library's own
    // descriptors go, above the program's (`crate::fds`).
    ism_sim::process::set_descriptor_floor(crate::fds::floor());
    let names = match NameClient::connect_in(&cfg.board_dir(), &cfg.board) {
        Ok(n) => Some(n),
        Err(e) => {
            if !cfg.warned && !WARNED_BY_PARENT.load(Ordering::Acquire) {
                warn_no_board(&cfg, &e);
            }
            None
        }
    };
    let rt: &'static Runtime = Box::leak(Box::new(Runtime {
        cfg,
        names,
        stack: OnceLock::new(),
        pid: std::process::id(),
        own_listeners: Mutex::new(Vec::new()),
        attachment: Mutex::new(None),
    }));
    RUNTIME.store(std::ptr::from_ref(rt).cast_mut(), Ordering::Release);
    rt
}

/// [`Runtime::follow_irq_spin`] of the current state, if there is one.
pub fn follow_irq_spin() {
    if let Some(rt) = existing() {
        rt.follow_irq_spin();
    }
}

/// The state if it was set up already (for the exit handler).
pub fn existing() -> Option<&'static Runtime> {
    let p = RUNTIME.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in RUNTIME comes from `Box::leak` in `runtime` and is
    // never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The lock that serialises the setting up of the state (`crate::fork` holds it across
/// `fork`, so that a child never inherits it locked by another thread).
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn init_lock() -> MutexGuard<'static, ()> {
    INIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The library's own descriptors of the current state (the name service's socket and the
/// function's control socket), which a forked child must close without using them. Called
/// by `crate::fork` before `fork`; takes the attachment's lock briefly.
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn own_fds() -> Vec<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    let Some(rt) = existing() else {
        return Vec::new();
    };
    let mut v = Vec::new();
    if let Some(n) = rt.names.as_ref() {
        v.push(n.as_raw_fd());
    }
    if let Some(a) = rt
        .attachment
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        v.push(a.raw().control_fd());
    }
    v
}

/// In a forked child (from `crate::fork`'s child handler; async-signal-safe: two atomic
/// stores): forgets the parent's state without dropping it (dropping would say BYE for the
/// parent's function and join threads that do not exist here). The child sets up its own
/// on first use.
#[cfg_attr(test, allow(dead_code))]
pub(crate) fn forget_in_child() {
    let p = RUNTIME.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: as in `existing`: a leaked, never freed state.
    if !p.is_null() && unsafe { (*p).names.is_none() } {
        WARNED_BY_PARENT.store(true, Ordering::Release);
    }
}

/// The one line printed when there is no board (`ism-sim run` prints the same).
pub fn no_board_line(board: &str, require_smc: bool) -> String {
    if require_smc {
        format!(
            "ism-run: no board named {board} (start one with: ism-sim board --name {board}); SMC-D is required (--require-smc): connect and accept fail with ECONNREFUSED"
        )
    } else {
        format!(
            "ism-run: no board named {board} (start one with: ism-sim board --name {board}); using plain TCP"
        )
    }
}

fn warn_no_board(cfg: &Config, e: &ism_sim::process::AttachError) {
    let denied = matches!(e, ism_sim::process::AttachError::Io(_, io)
        if io.kind() == std::io::ErrorKind::PermissionDenied);
    if denied {
        let path = ism_sim::process::socket_path(&cfg.board_dir(), &cfg.board);
        say(&ism_sim::process::run::board_denied_line(
            &cfg.board,
            &path,
            cfg.require_smc,
        ));
    } else {
        say(&no_board_line(&cfg.board, cfg.require_smc));
    }
    if cfg.debug {
        say(&format!("ism-run: ({e})"));
    }
}

/// One line from the library on standard error. Never fails or panics (as `eprintln!`
/// does when the write fails): the program's descriptor 2 may be anything, a closed
/// descriptor, a full pipe, or an SMC-D connection handed over by a parent process, whose
/// writes fail with `ENOTCONN`. The program's `errno` is kept.
pub fn say(line: &str) {
    use std::io::Write;
    let saved = crate::real::errno();
    // One `write` for the line and its newline (`writeln!` on the unbuffered stderr makes
    // two), so that lines of processes sharing a log do not run together.
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
    crate::real::set_errno(saved);
}

/// How long a handshake waits for each CLC message of its peer. Linux waits 6 s
/// (`CLC_WAIT_TIME`, `net/smc/smc_clc.h`), but its server answers from the kernel's own
/// listen worker (`smc_tcp_listen_work`), before the program's `accept`; here the server's
/// library answers only once the program accepted the connection, which a burst of
/// connections to a small listen backlog (Python's `socketserver`: 5) delays by the
/// kernel's SYN-ACK retries (1, 3, 7, 15 s ...). So the wait is longer, and still well
/// inside the 60 s the board keeps a client's registration (host-interface.md 3.5).
pub const CLC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Runtime {
    /// Records (`add`) or forgets one of this process's listening addresses.
    pub fn own_listener(&self, addr: std::net::SocketAddr, add: bool) {
        let mut l = self.own_listeners.lock().unwrap_or_else(|e| e.into_inner());
        if add {
            l.push(addr);
        } else if let Some(i) = l.iter().position(|&a| a == addr) {
            l.swap_remove(i);
        }
    }

    /// Whether a connection to `dest` would reach a listener of this process. The server
    /// side of a handshake runs in `accept`, so a thread that connects to its own listener
    /// before accepting would wait for itself: such connections stay on TCP.
    pub fn reaches_own_listener(&self, dest: std::net::SocketAddr) -> bool {
        let dest = ism_sim::process::names::normalize(dest);
        self.own_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&l| ism_sim::process::names::listener_reaches(l, dest))
    }

    /// One line on stderr if `ISM_RUN_DEBUG=1`.
    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.cfg.debug {
            say(&format!("ism-run[{}]: {}", std::process::id(), line()));
        }
    }

    /// A doorbell for a connection about to be made, if connections exchange them
    /// ([`Runtime::uses_bells`]) and a socket pair can be had.
    pub fn bells(&self) -> Option<crate::smc::Bells> {
        self.uses_bells()
            .then(crate::smc::Bells::new)
            .and_then(Result::ok)
    }

    /// Whether connections exchange doorbells (`ISM_RUN_PEER_BELL`, and the board is a
    /// loopback board, where the sender's moves land at once: `crate::smc::Bells`).
    pub fn uses_bells(&self) -> bool {
        if !self.cfg.peer_bell || self.stack().is_none() {
            return false;
        }
        self.attachment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|a| a.raw().kind() == ism_sim::board::BoardKind::Loopback)
    }

    /// Sets how long the function's interrupt thread spins before it sleeps: not at all
    /// while every SMC-D connection of the process hears of data from its peer's bell
    /// (`ISM_RUN_PEER_BELL` on a loopback board, and no connection without doorbells),
    /// since its signals then only tell writers of room and its spin would take a core
    /// from the program (docs/ism-run.md, "The interrupt thread"); the default spin
    /// otherwise, which takes the next data signal without a futex wake-up. Takes the
    /// attachment's lock; the count is read under it, so the last caller sets what the
    /// last count asks for.
    pub fn follow_irq_spin(&self) {
        if !self.cfg.peer_bell {
            return;
        }
        let guard = self.attachment.lock().unwrap_or_else(|e| e.into_inner());
        let Some(a) = guard.as_ref() else {
            return;
        };
        if a.raw().kind() != ism_sim::board::BoardKind::Loopback {
            return;
        }
        let spin = if crate::smc::watched() == 0 {
            std::time::Duration::ZERO
        } else {
            ism_sim::process::RawAttachment::DEFAULT_IRQ_SPIN
        };
        if a.raw().irq_spin() != spin {
            a.raw().set_irq_spin(spin);
            self.debug(|| format!("interrupt thread spins {} us", spin.as_micros()));
        }
    }

    /// The SMC-D stack over this process's function, attaching on first use. If the
    /// attach fails (board full, gone), a stack without devices: its handshakes decline,
    /// so a peer that expects CLC falls back to TCP cleanly.
    pub fn stack(&self) -> Option<Arc<SmcStack>> {
        self.stack
            .get_or_init(|| {
                let mut cfg = StackConfig {
                    nocopy: self.cfg.nocopy,
                    // A process is no system: its end is no crash to its peers.
                    peer_exit_like_tcp: true,
                    clc_timeout: self
                        .cfg
                        .clc_timeout_ms
                        .map_or(CLC_TIMEOUT, std::time::Duration::from_millis),
                    ..StackConfig::default()
                };
                if let Some(b) = self.cfg.buffer {
                    cfg.buffer_size = b;
                }
                let attached = with_signals_blocked(|| {
                    ism_sim::process::attach_in(&self.cfg.board_dir(), &self.cfg.board)
                        .map_err(|e| e.to_string())
                        .and_then(|a| {
                            let s = a.smc_stack(cfg.clone()).map_err(|e| e.to_string())?;
                            *self.attachment.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
                            Ok(s)
                        })
                });
                match attached {
                    Ok(s) => {
                        self.follow_irq_spin();
                        self.debug(|| format!("attached to board {}", self.cfg.board));
                        Some(s)
                    }
                    Err(e) => {
                        say(&format!(
                            "ism-run: cannot attach to board {}: {e}; connections decline SMC-D",
                            self.cfg.board
                        ));
                        SmcStack::new(cfg, Vec::new()).ok()
                    }
                }
            })
            .clone()
    }
}

/// Runs `f` with every signal blocked in the calling thread, so that the threads it starts
/// (the board watcher, the interrupt thread) inherit a full signal mask and never run the
/// program's handlers. A signal sent to the process then goes to one of the program's own
/// threads, as without the library (POSIX: a process-directed signal is delivered to a
/// thread that does not block it; Linux's `complete_signal` in `kernel/signal.c` picks
/// one). Run on a library thread, a handler would not interrupt the program's blocking
/// call (`EINTR`) nor end its `sigsuspend`, and a handler that calls `exit` would run the
/// exit handlers on the interrupt thread, which then cannot join itself.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let _blocked = SignalsBlocked::new();
    f()
}

/// Every signal blocked in the calling thread until this is dropped, which restores the
/// mask it had before.
pub struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    /// Blocks every signal (`None` if the mask cannot be changed: nothing was).
    pub fn new() -> Option<Self> {
        // SAFETY: all-zero sigsets are valid values, filled/overwritten by the calls, which
        // change only the calling thread's mask.
        unsafe {
            let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
                (std::mem::zeroed(), std::mem::zeroed());
            libc::sigfillset(&mut all);
            (libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) == 0).then_some(Self { old })
        }
    }

    /// The mask the thread had before (restored on drop).
    pub fn old_mask(&self) -> &libc::sigset_t {
        &self.old
    }

    /// Restores the mask (handlers of the signals that came meanwhile run now) and says
    /// what those signals would have done to a kernel wait: `None` if none came that the
    /// old mask lets through to a handler (none at all, or only ignored ones, or ones with
    /// a default action: nothing, or the process stopped or ended, as in a kernel wait);
    /// `Some(restart)` otherwise, `restart` whether one of those handlers has `SA_RESTART`.
    pub fn end(self) -> Option<bool> {
        // SAFETY: a zeroed sigset filled by `sigpending` for the calling thread.
        let pending = unsafe {
            let mut p: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut p);
            p
        };
        let old = self.old;
        drop(self); // the mask as before: the pending handlers run
        let mut interrupted = false;
        let mut restart = false;
        for sig in 1..=libc::SIGRTMAX() {
            // SAFETY: membership tests of valid sigsets.
            let deliverable = unsafe {
                libc::sigismember(&pending, sig) == 1 && libc::sigismember(&old, sig) == 0
            };
            if !deliverable {
                continue;
            }
            // SAFETY: reads the disposition of `sig` into a zeroed sigaction.
            let act = unsafe {
                let mut a: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut a) != 0 {
                    continue;
                }
                a
            };
            if act.sa_sigaction == libc::SIG_IGN || act.sa_sigaction == libc::SIG_DFL {
                continue;
            }
            interrupted = true;
            restart |= act.sa_flags & libc::SA_RESTART != 0;
        }
        interrupted.then_some(restart)
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`, for the calling thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// At exit: detaches the function in order (BYE), after the connections were closed.
pub fn detach_at_exit() {
    let Some(rt) = existing() else {
        return;
    };
    let a = rt
        .attachment
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    drop(a);
}
