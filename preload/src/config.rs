//! The library's configuration: environment variables the launcher (`ism-sim run`) sets.

use std::ffi::OsStr;

/// Board to use (default [`DEFAULT_BOARD`], the name `ism-sim board --kind lpar` takes).
pub const ENV_BOARD: &str = "ISM_RUN_BOARD";
/// `1`: send without copying (ATTACH_DMB) where the board offers it (loopback boards).
pub const ENV_NOCOPY: &str = "ISM_RUN_NOCOPY";
/// Requested RMB size in bytes (decimal; the stack rounds it to 16 KiB × 2^n, ≤ 1 MiB).
pub const ENV_BUFFER: &str = "ISM_RUN_BUFFER";
/// `1`: without a board, `connect` and `accept` fail (`ECONNREFUSED`) instead of using TCP.
pub const ENV_REQUIRE_SMC: &str = "ISM_RUN_REQUIRE_SMC";
/// On a loopback board, exchange doorbells with peers that do too and ring theirs after
/// each send (fewer wake-ups for request/response; see docs/ism-run.md, "The sender rings
/// the receiver's doorbell"): on unless `0`, `no` or `false` (off before 2026-11-28).
pub const ENV_PEER_BELL: &str = "ISM_RUN_PEER_BELL";
/// Microseconds `epoll_wait`, `poll` and `select` spin (looking without waiting) before
/// they sleep, in a process with SMC-D connections (0 or unset: never; as Linux's
/// `net.core.busy_poll`; see docs/ism-run.md, "Busy polling").
pub const ENV_BUSY_POLL: &str = "ISM_RUN_BUSY_POLL";
/// `1`: one line on stderr per connection (SMC-D or TCP, and why).
pub const ENV_DEBUG: &str = "ISM_RUN_DEBUG";
/// How long a handshake waits for each CLC message of its peer, in milliseconds
/// (default `crate::runtime::CLC_TIMEOUT`, 30 s; at least 100).
pub const ENV_CLC_TIMEOUT_MS: &str = "ISM_RUN_CLC_TIMEOUT_MS";
/// `1`: the launcher already printed the no-board warning; do not repeat it.
pub const ENV_WARNED: &str = "ISM_RUN_WARNED";
/// The board name used without [`ENV_BOARD`].
pub const DEFAULT_BOARD: &str = "lpar";

/// The configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`ENV_BOARD`].
    pub board: String,
    /// [`ENV_NOCOPY`].
    pub nocopy: bool,
    /// [`ENV_BUFFER`], if set and valid.
    pub buffer: Option<usize>,
    /// [`ENV_REQUIRE_SMC`].
    pub require_smc: bool,
    /// [`ENV_PEER_BELL`].
    pub peer_bell: bool,
    /// [`ENV_BUSY_POLL`], in microseconds (0: off).
    pub busy_poll_us: u32,
    /// [`ENV_DEBUG`].
    pub debug: bool,
    /// [`ENV_WARNED`].
    pub warned: bool,
    /// [`ENV_CLC_TIMEOUT_MS`], if set and valid.
    pub clc_timeout_ms: Option<u64>,
    /// The boards' socket directory (`ISM_SIM_DIR`, as `ism_sim::process::board_dir`
    /// resolves it when read from the environment); `None`: resolve when used.
    pub dir: Option<std::path::PathBuf>,
}

fn flag(v: Option<&OsStr>) -> bool {
    matches!(v.and_then(OsStr::to_str), Some("1" | "yes" | "true"))
}

/// A variable that is on unless set to `0`, `no` or `false`.
fn flag_on(v: Option<&OsStr>) -> bool {
    !matches!(v.and_then(OsStr::to_str), Some("0" | "no" | "false"))
}

impl Config {
    /// From a variable lookup (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Self {
        let board = get(ENV_BOARD)
            .and_then(|v| v.into_string().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_BOARD.to_owned());
        Self {
            board,
            nocopy: flag(get(ENV_NOCOPY).as_deref()),
            buffer: get(ENV_BUFFER)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &usize| n > 0),
            require_smc: flag(get(ENV_REQUIRE_SMC).as_deref()),
            peer_bell: flag_on(get(ENV_PEER_BELL).as_deref()),
            busy_poll_us: get(ENV_BUSY_POLL)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            debug: flag(get(ENV_DEBUG).as_deref()),
            warned: flag(get(ENV_WARNED).as_deref()),
            clc_timeout_ms: get(ENV_CLC_TIMEOUT_MS)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &u64| n >= 100),
            dir: get(ism_sim::process::DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(std::path::PathBuf::from),
        }
    }

    /// From the process environment, with the board directory resolved.
    pub fn from_env() -> Self {
        let mut c = Self::from_lookup(|k| std::env::var_os(k));
        c.dir = Some(c.dir.unwrap_or_else(ism_sim::process::board_dir));
        c
    }

    /// The configuration read when the library was loaded (from its constructor), before
    /// the program could change its environment: nginx, for one, gives its worker
    /// processes an environment of its own (`ngx_set_environment`), without the
    /// launcher's variables.
    pub fn loaded() -> &'static Config {
        static LOADED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        LOADED.get_or_init(Self::from_env)
    }

    /// The boards' socket directory.
    pub fn board_dir(&self) -> std::path::PathBuf {
        self.dir.clone().unwrap_or_else(ism_sim::process::board_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn of(pairs: &[(&str, &str)]) -> Config {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_and_every_variable() {
        let d = of(&[]);
        assert_eq!(d.board, "lpar");
        assert!(!d.nocopy && !d.require_smc && !d.debug && !d.warned);
        assert!(d.peer_bell, "doorbells by default");
        assert_eq!(d.buffer, None);
        let c = of(&[
            (ENV_BOARD, "b1"),
            (ENV_NOCOPY, "1"),
            (ENV_BUFFER, "65536"),
            (ENV_REQUIRE_SMC, "1"),
            (ENV_DEBUG, "1"),
            (ENV_WARNED, "1"),
            (ENV_PEER_BELL, "1"),
            (ENV_BUSY_POLL, "50"),
            (ENV_CLC_TIMEOUT_MS, "2000"),
            ("ISM_SIM_DIR", "/run/boards"),
        ]);
        assert_eq!(c.board_dir(), std::path::Path::new("/run/boards"));
        assert_eq!(c.board, "b1");
        assert!(c.nocopy && c.require_smc && c.debug && c.warned && c.peer_bell);
        assert_eq!(c.buffer, Some(65536));
        assert_eq!((d.busy_poll_us, c.busy_poll_us), (0, 50));
        assert_eq!((d.clc_timeout_ms, c.clc_timeout_ms), (None, Some(2000)));
    }

    #[test]
    fn bad_values_are_ignored() {
        let c = of(&[(ENV_BOARD, ""), (ENV_BUFFER, "lots"), (ENV_NOCOPY, "0")]);
        assert_eq!(c.board, "lpar");
        assert_eq!(c.buffer, None);
        assert!(!c.nocopy);
        assert_eq!(of(&[(ENV_BUFFER, "0")]).buffer, None);
        assert_eq!(of(&[(ENV_BUSY_POLL, "-5")]).busy_poll_us, 0);
        for off in ["0", "no", "false"] {
            assert!(!of(&[(ENV_PEER_BELL, off)]).peer_bell, "{off}");
        }
        assert!(of(&[(ENV_PEER_BELL, "")]).peer_bell);
        for bad in ["0", "99", "-1", "soon"] {
            assert_eq!(
                of(&[(ENV_CLC_TIMEOUT_MS, bad)]).clc_timeout_ms,
                None,
                "{bad}"
            );
        }
    }
}
