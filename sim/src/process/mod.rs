//! Process boards: the device as a long-running process, and hosts that attach to it from
//! other processes (`ism-sim board`, [`attach`]).
//!
//! A board process runs the unchanged firmware ([`ism_firmware::Device`]) over memory
//! objects (memfds) that it shares with its hosts; each attached process is one ISM function
//! with its own GID. The host interface crosses the process boundary as
//! `docs/host-interface.md` specifies:
//! * a Unix-domain `SOCK_SEQPACKET` control socket per board (`DIR/NAME.sock`, see
//!   [`board_dir`]): HELLO/WELCOME with magic and spec version, the memory objects passed
//!   with `SCM_RIGHTS`, and its hang-up as the crash signal in both directions;
//! * per function a shared **register object** ([`page`]): command area and doorbell (real
//!   shared registers, `volatile-register`), an interrupt word, and a store-block ring, so a
//!   store-block costs no system call in the common case; waits spin briefly, then sleep on
//!   futexes in the shared object;
//! * the partition memory: an LPAR board gives each function its own object (mapped by that
//!   host and the board only); a loopback board gives all functions one shared object, so
//!   ATTACH_DMB works between processes.
//!
//! Every byte layout is in [`layout`].

pub mod bench;
pub mod board;
pub mod cli;
pub mod demo;
pub mod dmbs;
pub mod host;
pub mod layout;
pub mod local;
pub mod names;
pub mod page;
pub mod run;

use std::path::{Path, PathBuf};

pub use board::{BoardOptions, ProcessBoard};
pub use host::{
    attach, attach_in, attach_raw, attach_raw_in, board_status, board_status_in, AttachError,
    Attachment, ProcBus, ProcDriver, ProcHal, RawAttachment,
};
pub use local::LocalBoard;
pub use names::NameClient;

/// Environment variable that overrides the directory of board sockets.
pub const DIR_ENV: &str = "ISM_SIM_DIR";

/// The lowest descriptor number this module gives the sockets and objects it keeps for an
/// attached process (the control socket, the name-service socket, the partition memory
/// and register objects): 0 (the default) takes whatever number the kernel gives.
static DESCRIPTOR_FLOOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Puts the descriptors this module keeps from now on at `floor` or above (where one is
/// free; below it otherwise). A preload library sets this, so that its attachment's
/// descriptors never take numbers the program would get (`ism-run`: a program that closes
/// descriptors it did not open, as daemons do before they `exec`, must not close the
/// board's sockets, nor find its own new files on their numbers).
pub fn set_descriptor_floor(floor: i32) {
    DESCRIPTOR_FLOOR.store(floor.max(0), std::sync::atomic::Ordering::Relaxed);
}

/// `fd` moved to the [`set_descriptor_floor`] floor or above (close-on-exec), or `fd`
/// itself if there is no floor or no number free above it.
pub(crate) fn lifted(fd: std::os::fd::OwnedFd) -> std::os::fd::OwnedFd {
    let floor = DESCRIPTOR_FLOOR.load(std::sync::atomic::Ordering::Relaxed);
    if floor <= 0 {
        return fd;
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, floor).unwrap_or(fd)
}

/// The directory of board sockets: `$ISM_SIM_DIR`, else `$XDG_RUNTIME_DIR/ism-sim`, else
/// `/tmp/ism-sim-$UID`.
pub fn board_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("ism-sim");
    }
    PathBuf::from(format!(
        "/tmp/ism-sim-{}",
        rustix::process::getuid().as_raw()
    ))
}

/// Whether `name` is a valid board name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting
/// with `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The control socket of board `name` in `dir`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// The lock file of board `name` in `dir` (held by the live board; holds its pid).
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("lpar0") && valid_name("a.b_c-1"));
        assert!(!valid_name("") && !valid_name(".hidden") && !valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
