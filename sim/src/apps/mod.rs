//! The applications built on the board kit: what the `ism-sim` CLI runs.
//!
//! * [`bench`](mod@bench): TCP, UNIX and SMC-D measured side by side (`ism-sim bench`);
//! * [`demo`]: the device demo of the CLI;
//! * [`soak`]: many verified connections under partition crashes (`ism-sim soak`);
//! * [`workload`]: verified streams for the CLI.

pub mod bench;
pub mod demo;
pub mod soak;
pub mod workload;
