//! # ism-hal: the boundary between the ISM device core and a board
//!
//! The firmware (`ism-firmware`) *is* the device; a board is whatever runs it: the std
//! simulator, or a bare-metal target. This crate owns the small, orthogonal traits through
//! which the firmware touches the outside world, and nothing else:
//!
//! * [`memory::DmaMemory`]: a partition's memory as the device sees it (device addresses,
//!   every access bounds-checked and fallible), with the atomic accesses the status block
//!   and event queue need;
//! * [`irq::InterruptLine`]: one interrupt line per ISM function (any
//!   [`embedded_hal::digital::OutputPin`] is one, through [`irq::PinLine`]);
//! * [`clock::Clock`]: time stamps for events;
//! * [`board::Board`]: the bundle a device is generic over;
//! * [`regs`] and [`ids`]: the register block and the identifier newtypes, re-exported from
//!   `ism-abi` (the host-visible interface), where they are defined.
//!
//! This crate never allocates and never panics on a board's behalf: every fallible access
//! returns a [`memory::MemError`]. Fakes of every trait live in the `fakes` module behind
//! `cfg(any(test, feature = "test-utils"))`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-utils"))]
extern crate std;

pub mod board;
pub mod clock;
pub mod irq;
pub mod log;
pub mod memory;

#[cfg(any(test, feature = "test-utils"))]
pub mod fakes;

pub use ism_abi::{ids, regs};

pub use board::Board;
pub use clock::Clock;
pub use ids::{DevAddr, DmbToken, DomainId, FunctionId, Gid};
pub use irq::InterruptLine;
pub use memory::{DmaMemory, DmaMemoryExt, MemError};
