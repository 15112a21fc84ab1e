//! SMC-D: the device operations SMC needs from an ISM device, and the protocol on top.
//!
//! * [`clc`]: the CLC handshake messages (proposal, accept, confirm, decline), byte-exact;
//! * [`device`]: the SMC-D device operations ([`device::SmcdOps`], Linux's `smcd_ops`);
//! * [`cdc`]: the 32-byte SMC-D CDC message and cursor arithmetic.

pub mod cdc;
pub mod clc;
pub mod device;
