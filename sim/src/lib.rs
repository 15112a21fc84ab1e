//! # ism-sim: a simulator board for the ISM device
//!
//! Runs the `ism-firmware` device on std threads: partitions with separate memory that the
//! device copies between (as between LPARs), or a loopback board with one shared memory
//! where the device also offers no-copy attach (as Linux's loopback-ism).
//!
//! The crate has two halves, each a folder:
//! * [`kit`]: the board kit: [`board`], [`memory`], [`irq`], [`fault`], [`trace`], [`host`],
//!   [`smc`], [`rng`];
//! * [`apps`]: the applications of the CLI: [`bench`](mod@bench), [`cli`], [`demo`], [`soak`],
//!   [`workload`];
//!
//! and one module that spans both, since a board that lives in its own process needs its own
//! kit and its own commands:
//! * [`process`]: process boards (`ism-sim board`: the device in a process of its own, with
//!   partitions as memfds) and hosts in other processes ([`process::attach`]), as
//!   `docs/host-interface.md` specifies; their CLI, demo part and bench rows.
//!
//! Every module is also re-exported at the crate root (`ism_sim::board`, `ism_sim::bench`, …).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod apps;
pub mod kit;
pub mod process;

pub use apps::{bench, cli, demo, soak, workload};
pub use kit::{board, fault, host, irq, memory, rng, smc, trace};

pub use board::{BoardConfig, BoardKind, Partition, SimBoard, SimDriver};
pub use host::{Host, IrqMode};
