//! # ism-fuzz: what the fuzz targets share
//!
//! * [`device`]: an ISM device on a `FakeBoard` with three functions, a shadow model of what
//!   the hosts registered, and the checker run after every operation (memory written only
//!   where permitted, DMB count consistent, moves accepted exactly when the rules allow);
//! * [`ops`]: the byte format the `commands` and `moves` targets decode (the seed generator
//!   encodes the same format);
//! * [`geometry`]: the board's shape both of them use (functions, domains, GIDs);
//! * [`cdc`]: the receive-side cursor arithmetic checks of `cdc_receive`;
//! * [`clc`]: the parse/emit checks of `clc`;
//! * [`conn`]: the real `Conn` of one SMC-D connection against a forged or honest peer, its
//!   memory accesses, moves and results checked (target `conn`).
//!
//! Every check panics on violation, which libFuzzer reports as a crash.

pub mod cdc;
pub mod clc;
pub mod conn;
pub mod device;
pub mod geometry;
pub mod ops;
