//! # ism-firmware: the ISM device
//!
//! A `#![no_std]`, heap-free model of the ISM (Internal Shared Memory) virtual PCI device
//! behind SMC-D on IBM Z, written as the device's firmware. It answers exactly the commands
//! Linux's ISM driver issues, keeps the table of registered DMBs (direct memory buffers)
//! with their tokens and access rules, performs *signalled moves* of data into a peer's DMB,
//! and reports through each function's status block (SBA), event queue (IEQ) and interrupt.
//!
//! Where things live:
//! * the host-visible interface is the `ism-abi` crate, re-exported here as [`wire`] (every
//!   byte layout a host sees), [`command`] (a request as a typed [`command::Request`]) and
//!   [`error`] (return codes of commands and errors of moves);
//! * [`dmb`]: the DMB table; **DMB tokens are issued and checked there**;
//! * [`lease`]: the lock-free guard that makes "after UNREG_DMB returns, the device never
//!   writes that memory again" true even with a move racing the unregister;
//! * [`function`]: per-function state (GID, SBA/IEQ registration, VLANs);
//! * [`line`](mod@line): cache-line padding, so that two functions' moves do not write one line;
//! * [`device`]: command dispatch, moves, events; the only entry points of a board.
//!
//! The firmware runs synchronously in its caller's context, as millicode does: a command or
//! a store-block returns when the device has done it. It never panics on host input and
//! never touches memory outside what a host registered in its own domain.
//!
//! ## Building for bare metal
//!
//! `cargo build -p ism-firmware --target thumbv7em-none-eabihf` builds the library as it is.
//! The device keeps 64-bit atomics (lease words, token generations, counters); on targets
//! without native 64-bit atomics (Cortex-M, RISC-V 32) they come from `portable-atomic`
//! through a critical section, enabled automatically for such targets (the `critical-section`
//! feature names it explicitly). The final binary must then link a `critical-section`
//! implementation, e.g. `cortex-m`'s `critical-section-single-core` feature; without one the
//! link fails with an undefined `_critical_section_1_0_acquire`.
//!
//! Features: `defmt` logs through [`defmt`](https://defmt.ferrous-systems.com) (and derives
//! `defmt::Format` on the public types), `log` through the `log` facade; with neither, logging
//! compiles to nothing. `firmware/qemu-selftest` is a complete bare-metal binary:
//! `cargo selftest` from the repository root runs it under QEMU.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod lease;

#[cfg(not(loom))]
pub mod device;
#[cfg(not(loom))]
pub mod dmb;
#[cfg(not(loom))]
pub mod function;
#[cfg(not(loom))]
pub mod line;
#[cfg(not(loom))]
pub use ism_abi::{command, error, wire};

#[cfg(not(loom))]
pub use device::{set_dmb_signal, ConfigError, Device, DownReason, StatsSnapshot};
#[cfg(not(loom))]
pub use error::{MoveError, ReturnCode};
#[cfg(not(loom))]
pub use function::FunctionConfig;
