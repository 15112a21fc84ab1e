//! The applications built on the board kit: what the `ism-sim` CLI runs.
//!
//! * [`bench`](mod@bench): TCP, UNIX and SMC-D measured side by side (`ism-sim bench`);
//! * [`cli`]: exit codes, byte sizes and units of the `ism-sim` command line;
//! * [`demo`]: the device demo of the CLI;
//! * [`soak`]: many verified connections under partition crashes (`ism-sim soak`);
//! * [`workload`]: verified streams for the CLI.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod soak;
pub mod workload;
