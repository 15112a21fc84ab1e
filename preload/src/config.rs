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
/// `1`: one line on stderr per connection (SMC-D or TCP, and why).
pub const ENV_DEBUG: &str = "ISM_RUN_DEBUG";
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
    /// [`ENV_DEBUG`].
    pub debug: bool,
    /// [`ENV_WARNED`].
    pub warned: bool,
}

fn flag(v: Option<&OsStr>) -> bool {
    matches!(v.and_then(OsStr::to_str), Some("1" | "yes" | "true"))
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
            debug: flag(get(ENV_DEBUG).as_deref()),
            warned: flag(get(ENV_WARNED).as_deref()),
        }
    }

    /// From the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var_os(k))
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
        assert_eq!(d.buffer, None);
        let c = of(&[
            (ENV_BOARD, "b1"),
            (ENV_NOCOPY, "1"),
            (ENV_BUFFER, "65536"),
            (ENV_REQUIRE_SMC, "1"),
            (ENV_DEBUG, "1"),
            (ENV_WARNED, "1"),
        ]);
        assert_eq!(c.board, "b1");
        assert!(c.nocopy && c.require_smc && c.debug && c.warned);
        assert_eq!(c.buffer, Some(65536));
    }

    #[test]
    fn bad_values_are_ignored() {
        let c = of(&[(ENV_BOARD, ""), (ENV_BUFFER, "lots"), (ENV_NOCOPY, "0")]);
        assert_eq!(c.board, "lpar");
        assert_eq!(c.buffer, None);
        assert!(!c.nocopy);
        assert_eq!(of(&[(ENV_BUFFER, "0")]).buffer, None);
    }
}
