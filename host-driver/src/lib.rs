//! # ism-host-driver: the operating-system side of ISM and SMC-D
//!
//! * [`ism`]: the driver of one ISM function, as Linux's `ism_drv` (probe, commands, DMBs,
//!   moves, the interrupt handler), generic over a small [`ism::HostMemory`];
//! * [`smcd`]: the SMC-D device operations (`smcd_ops`) and the SMC-D protocol: CLC
//!   handshake messages, CDC messages and cursors, connections and streams.
//!
//! The core is `no_std + alloc` (`scripts/test.sh` builds it without `std` for
//! `thumbv7em-none-eabihf`); the `std` feature adds what needs sockets and threads.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod ism;
pub mod smcd;
