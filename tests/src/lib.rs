//! # ism-tests: integration and conformance tests for ISM
//!
//! * [`conformance`]: a device-independent conformance suite for the host-visible interface
//!   of an ISM device (commands, store-blocks, SBA, IEQ, interrupt). A vendor implements
//!   [`conformance::DeviceUnderTest`] for their device and gets one named test per check
//!   from [`conformance_tests!`] (or calls [`conformance::run_all`]).
//! * [`sim_dut`]: that trait implemented for the `ism-sim` boards (LPAR and loopback), as the
//!   reference a vendor can copy.
//! * [`process_dut`]: that trait for a process board reached by name (`ism-sim board`, or
//!   any board implementing `docs/host-interface.md`);
//! * [`util`]: small helpers the integration tests share (a seeded PRNG, memory hashing,
//!   bounded waiting).
//!
//! The integration tests themselves live in `tests/`: `driver.rs` (the host driver against
//! the simulator), `isolation.rs` (partitions cannot reach each other through the device),
//! `conformance.rs` (the suite against the simulator, one test per check and board).

pub mod conformance;
pub mod process_dut;
pub mod sim_dut;
pub mod util;
