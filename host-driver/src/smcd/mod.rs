//! SMC-D: the device operations SMC needs from an ISM device, and the protocol on top.
//!
//! * [`clc`]: the CLC handshake messages (proposal, accept, confirm, decline), byte-exact;
//! * [`device`]: the SMC-D device operations ([`device::SmcdOps`], Linux's `smcd_ops`);
//! * [`cdc`]: the 32-byte SMC-D CDC message and cursor arithmetic;
//! * `conn` (std): one connection's data path over two rings and CDC messages;
//! * `stack` (std): devices, link groups, routing of signals and events;
//! * `handshake` (std): the CLC handshake over TCP and device selection;
//! * `stats` (std): statistics per stack and per connection (`smcd stats`, `smcss`);
//! * `stream` (std): `Listener` and `Stream` (`Read + Write`, TCP fallback);
//! * `tokio` (feature `tokio`): `AsyncStream` and `AsyncListener` for tokio;
//! * `wait` (std): blocking and busy-poll waiting.

pub mod cdc;
pub mod clc;
#[cfg(feature = "std")]
pub mod conn;
pub mod device;
#[cfg(feature = "std")]
pub mod handshake;
#[cfg(feature = "std")]
pub mod stack;
#[cfg(feature = "std")]
pub mod stats;
#[cfg(feature = "std")]
pub mod stream;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "std")]
pub mod wait;

#[cfg(feature = "std")]
pub use stack::{SmcStack, StackConfig};
#[cfg(feature = "std")]
pub use stats::{ConnInfo, HandshakeStats, StackStats};
#[cfg(feature = "std")]
pub use stream::{Listener, Stream, StreamStats};
