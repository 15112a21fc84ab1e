//! SMC-D: the device operations SMC needs from an ISM device, and the protocol on top.
//!
//! * [`clc`]: the CLC handshake messages (proposal, accept, confirm, decline), byte-exact;
//! * [`cdc`]: the 32-byte SMC-D CDC message and cursor arithmetic.

pub mod cdc;
pub mod clc;
