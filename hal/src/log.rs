//! One logging shim for both worlds: `defmt` on bare metal (feature `defmt`), the `log`
//! facade on hosts (feature `log`), nothing otherwise.
//!
//! Use only `{}` placeholders with integer or `&str` arguments, which both back ends accept.

#[cfg(feature = "defmt")]
#[doc(hidden)]
pub use defmt as __defmt;
#[cfg(feature = "log")]
#[doc(hidden)]
pub use log as __log;

/// Logs at debug level through the enabled back end.
#[cfg(feature = "defmt")]
#[macro_export]
macro_rules! ism_debug {
    ($($t:tt)*) => { $crate::log::__defmt::debug!($($t)*) };
}
/// Logs at debug level through the enabled back end.
#[cfg(all(feature = "log", not(feature = "defmt")))]
#[macro_export]
macro_rules! ism_debug {
    ($($t:tt)*) => { $crate::log::__log::debug!($($t)*) };
}
/// Logs at debug level through the enabled back end (none enabled: arguments are only
/// type-checked).
#[cfg(not(any(feature = "log", feature = "defmt")))]
#[macro_export]
macro_rules! ism_debug {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}

/// Logs at warn level through the enabled back end.
#[cfg(feature = "defmt")]
#[macro_export]
macro_rules! ism_warn {
    ($($t:tt)*) => { $crate::log::__defmt::warn!($($t)*) };
}
/// Logs at warn level through the enabled back end.
#[cfg(all(feature = "log", not(feature = "defmt")))]
#[macro_export]
macro_rules! ism_warn {
    ($($t:tt)*) => { $crate::log::__log::warn!($($t)*) };
}
/// Logs at warn level through the enabled back end (none enabled: arguments are only
/// type-checked).
#[cfg(not(any(feature = "log", feature = "defmt")))]
#[macro_export]
macro_rules! ism_warn {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}
