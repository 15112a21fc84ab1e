//! `ism-sim run`: starts a program with the `ism-run` preload library (`libism_run.so`,
//! crate `preload/`), so that its TCP connections to other programs under `ism-run` on the
//! same board run over SMC-D (as Linux's `smc_run` does with `LD_PRELOAD`). See
//! `docs/ism-run.md`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use crate::cli::Failure;

/// The preload library's file name.
pub const LIBRARY: &str = "libism_run.so";
/// Overrides where the launcher looks for the library.
pub const ENV_LIB: &str = "ISM_RUN_LIB";

/// What `ism-sim run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The board.
    pub board: String,
    /// Send without copying where the board allows it.
    pub nocopy: bool,
    /// RMB size in bytes.
    pub buffer: Option<u64>,
    /// Fail instead of falling back to TCP when there is no board.
    pub require_smc: bool,
    /// Exchange doorbells with peers on a loopback board (`ISM_RUN_PEER_BELL`).
    pub peer_bell: bool,
    /// Microseconds `epoll_wait`, `poll` and `select` spin before they sleep
    /// (`ISM_RUN_BUSY_POLL`); implies `peer_bell`.
    pub busy_poll: Option<u32>,
    /// The program and its arguments.
    pub program: Vec<OsString>,
}

/// Where the library is: `$ISM_RUN_LIB`, else next to the running `ism-sim` (both are
/// built into `target/debug` or `target/release`).
///
/// # Errors
/// Text naming the paths tried, if the library is not there.
pub fn find_library(env_lib: Option<&OsStr>, exe: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = env_lib.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{ENV_LIB}={} is not a file", p.display()))
        };
    }
    let dir = exe
        .and_then(Path::parent)
        .ok_or("cannot tell where ism-sim is")?;
    let p = dir.join(LIBRARY);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "the preload library {} is missing (build it beside ism-sim: cargo build -p ism-run, with --release for a release ism-sim; or set {ENV_LIB})",
            p.display()
        ))
    }
}

/// `LD_PRELOAD` with `lib` added (after what is there: the program's own preloads keep
/// their order; ours only needs to come before the C library).
pub fn preload_value(existing: Option<&OsStr>, lib: &Path) -> OsString {
    let mut v = OsString::new();
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(e);
        v.push(":");
    }
    v.push(lib.as_os_str());
    v
}

/// The variables the library reads (see `ism_run::config`).
pub fn library_env(o: &RunOptions, warned: bool) -> Vec<(&'static str, OsString)> {
    let mut env = vec![("ISM_RUN_BOARD", OsString::from(&o.board))];
    let flag = |b: bool| OsString::from(if b { "1" } else { "0" });
    env.push(("ISM_RUN_NOCOPY", flag(o.nocopy)));
    env.push(("ISM_RUN_REQUIRE_SMC", flag(o.require_smc)));
    let busy = o.busy_poll.unwrap_or(0);
    env.push(("ISM_RUN_PEER_BELL", flag(o.peer_bell || busy > 0)));
    env.push(("ISM_RUN_BUSY_POLL", OsString::from(busy.to_string())));
    env.push(("ISM_RUN_WARNED", flag(warned)));
    if let Some(b) = o.buffer {
        env.push(("ISM_RUN_BUFFER", OsString::from(b.to_string())));
    }
    env
}

/// The one line printed when the board is not there (the library prints the same when it
/// finds no board itself).
pub fn no_board_line(board: &str, require_smc: bool) -> String {
    if require_smc {
        format!(
            "ism-run: no board named {board} (start one with: ism-sim board --name {board}); SMC-D is required (--require-smc)"
        )
    } else {
        format!(
            "ism-run: no board named {board} (start one with: ism-sim board --name {board}); using plain TCP"
        )
    }
}

/// The one line printed when the board is there but this process may not connect to its
/// socket (`EACCES`: a server whose workers drop privileges after `listen`, as nginx,
/// apache2 and squid do when started as root, and the board runs as another user).
pub fn board_denied_line(board: &str, path: &std::path::Path, require_smc: bool) -> String {
    let then = if require_smc {
        "SMC-D is required (--require-smc)"
    } else {
        "using plain TCP"
    };
    format!(
        "ism-run: board {board} is running but this process (uid {}) may not use it: \
         permission denied on {} (run the board as this user, or open it to others with \
         `ism-sim board --socket-mode 660` or `666`; docs/ism-run.md, Limits); {then}",
        rustix::process::getuid().as_raw(),
        path.display()
    )
}

/// Runs the program with the library (replaces this process); returns only on failure.
/// Exit status: 2 if the program cannot be started (not found, not executable), 3 if the
/// library is missing or the board is and `--require-smc` is on.
pub fn run(o: &RunOptions) -> Failure {
    let exe = std::env::current_exe().ok();
    let lib = match find_library(std::env::var_os(ENV_LIB).as_deref(), exe.as_deref()) {
        Ok(l) => l,
        Err(e) => return Failure::Run(e),
    };
    let Some((program, args)) = o.program.split_first() else {
        return Failure::Usage("no program to run (ism-sim run -- PROGRAM ARGS...)".into());
    };
    let reached = super::NameClient::connect(&o.board);
    let board_up = reached.is_ok();
    if let Err(e) = reached {
        // A board that is there but refuses this user says so, as the library does.
        let denied = matches!(&e, super::AttachError::Io(_, io)
            if io.kind() == std::io::ErrorKind::PermissionDenied);
        let line = |require| {
            if denied {
                let path = super::socket_path(&super::board_dir(), &o.board);
                board_denied_line(&o.board, &path, require)
            } else {
                no_board_line(&o.board, require)
            }
        };
        if o.require_smc {
            return Failure::Run(line(true));
        }
        eprintln!("{}", line(false));
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env(
        "LD_PRELOAD",
        preload_value(std::env::var_os("LD_PRELOAD").as_deref(), &lib),
    );
    for (k, v) in library_env(o, !board_up) {
        cmd.env(k, v);
    }
    let e = cmd.exec();
    Failure::Usage(format!("cannot run {}: {e}", Path::new(program).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_preload_is_appended_to() {
        let lib = Path::new("/x/libism_run.so");
        assert_eq!(preload_value(None, lib), "/x/libism_run.so");
        assert_eq!(preload_value(Some(OsStr::new("")), lib), "/x/libism_run.so");
        assert_eq!(
            preload_value(Some(OsStr::new("/a.so")), lib),
            "/a.so:/x/libism_run.so"
        );
    }

    #[test]
    fn the_library_is_found_next_to_the_executable_or_by_variable() {
        let dir = std::env::temp_dir().join(format!("ism-run-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("ism-sim");
        let e = find_library(None, Some(&exe)).unwrap_err();
        assert!(
            e.contains("is missing") && e.contains("cargo build -p ism-run"),
            "{e}"
        );
        std::fs::write(dir.join(LIBRARY), b"").unwrap();
        assert_eq!(find_library(None, Some(&exe)).unwrap(), dir.join(LIBRARY));
        let other = dir.join("other.so");
        let e = find_library(Some(other.as_os_str()), Some(&exe)).unwrap_err();
        assert!(e.contains("ISM_RUN_LIB"), "{e}");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(
            find_library(Some(other.as_os_str()), Some(&exe)).unwrap(),
            other
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_option_becomes_a_variable() {
        let o = RunOptions {
            board: "b".into(),
            nocopy: true,
            buffer: Some(65536),
            require_smc: false,
            peer_bell: true,
            busy_poll: None,
            program: vec![],
        };
        let env = library_env(&o, true);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ISM_RUN_BOARD").unwrap(), "b");
        assert_eq!(get("ISM_RUN_NOCOPY").unwrap(), "1");
        assert_eq!(get("ISM_RUN_REQUIRE_SMC").unwrap(), "0");
        assert_eq!(get("ISM_RUN_PEER_BELL").unwrap(), "1");
        assert_eq!(get("ISM_RUN_WARNED").unwrap(), "1");
        assert_eq!(get("ISM_RUN_BUFFER").unwrap(), "65536");
        assert_eq!(get("ISM_RUN_BUSY_POLL").unwrap(), "0");
        // Busy polling brings the peer bell with it (the spin needs a peer that rings).
        let b = RunOptions {
            peer_bell: false,
            busy_poll: Some(50),
            ..o
        };
        let env = library_env(&b, false);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ISM_RUN_BUSY_POLL").unwrap(), "50");
        assert_eq!(get("ISM_RUN_PEER_BELL").unwrap(), "1");
        // Off is said, not left unset (unset, the library rings by default).
        let off = RunOptions {
            peer_bell: false,
            busy_poll: None,
            ..b
        };
        let env = library_env(&off, false);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ISM_RUN_PEER_BELL").unwrap(), "0");
    }
}
