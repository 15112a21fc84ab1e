//! # ism-abi: the host-visible interface of the ISM device
//!
//! Everything both sides of the bus must agree on, and nothing else: like smoltcp's `wire`
//! module or Linux's uapi headers, this is the one crate the device (`ism-firmware`) and its
//! host driver (`ism-host-driver`) share. It is `#![no_std]`, never allocates and has no
//! `unsafe`.
//!
//! * [`wire`]: every byte layout a host sees, one file per format (command headers and
//!   bodies, the store-block request word, the SBA, the IEQ and its typed events);
//! * [`command`]: the typed [`Request`] behind every command, with its decoder and encoder;
//! * [`error`]: the return codes of commands ([`ReturnCode`]) and the errors of moves
//!   ([`MoveError`]);
//! * [`regs`]: the register block of a function (the command area) and its protocol;
//! * [`ids`]: the address, GID and token newtypes that cross the device boundary;
//! * [`chid`]: the loopback CHID and the Emulated-ISM CHID range.
#![no_std]
#![forbid(unsafe_code)]

pub mod chid;
pub mod command;
pub mod error;
pub mod ids;
pub mod regs;
mod table;
pub mod wire;

pub use command::Request;
pub use error::{MoveError, ReturnCode};
pub use ids::{DevAddr, DmbToken, DomainId, FunctionId, Gid};
pub use wire::Opcode;
