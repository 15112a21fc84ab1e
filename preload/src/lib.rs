//! `libism_run.so`: unmodified TCP programs over SMC-D on a process board, as Linux's
//! `smc_run` (smc-tools) does with its preload library.
//!
//! Start a program with `ism-sim run [--board NAME] -- PROGRAM ARGS...` (which sets
//! `LD_PRELOAD` and the variables of [`config`]). Its `AF_INET`/`AF_INET6` `SOCK_STREAM`
//! sockets then talk SMC-D to every other program under `ism-run` on the same board, and
//! plain TCP to everything else; nothing else is touched. How, and every limit:
//! `docs/ism-run.md`.
//!
//! The library interposes the C library's socket and I/O functions (the `hooks`), reaching
//! the real ones through `dlsym(RTLD_NEXT)` ([`real`]). Descriptors it does not track pass
//! straight through after one atomic load ([`table`]); they never take a lock or allocate,
//! so signal handlers that write to their own pipes are as safe as without the library.
//! No hook lets a panic cross into C: each one that does more than pass through runs under
//! `catch_unwind` and fails with `EIO` instead. A forked child starts with a state of its
//! own (fork handlers; inherited listeners work, inherited connections stay with the
//! parent), and an `exec`ed image neutralises SMC-D descriptors passed to it (`fork.rs`).

mod busy;
pub mod config;
mod connecting;
mod fds;
mod fork;
mod hooks;
mod late;
pub mod net;
mod quiet;
pub mod real;
pub mod runtime;
mod signals;
pub mod smc;
mod splice;
pub mod table;
mod workers;

pub use hooks::{Entry, Inherited, ListenerReg};

/// Resolves the real functions when the library is loaded, before `main`.
#[cfg(not(test))]
extern "C" fn ism_run_init() {
    let _ = real::real();
    let _ = hooks::real_syscall();
    let _ = std::panic::catch_unwind(|| {
        fork::init();
        fork::capture_env();
        fork::after_exec();
    });
}

/// Closes this process's SMC-D connections (their peers read end of stream, as after
/// `close`) and detaches its function (BYE) when the process exits, after the set-ups
/// still under way have ended (at most `connecting::EXIT_WAIT`).
#[cfg(not(test))]
extern "C" fn ism_run_fini() {
    let _ = std::panic::catch_unwind(|| {
        if runtime::existing().is_some_and(|rt| rt.pid == std::process::id()) {
            connecting::wait_in_flight(connecting::EXIT_WAIT);
            hooks::close_all();
            runtime::detach_at_exit();
        }
    });
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = ism_run_init;

#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = ism_run_fini;
