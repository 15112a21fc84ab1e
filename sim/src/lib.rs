//! # ism-sim: a simulator board for the ISM device
//!
//! Runs the `ism-firmware` device on std threads: partitions with separate memory that the
//! device copies between (as between LPARs), or a loopback board with one shared memory
//! where the device also offers no-copy attach (as Linux's loopback-ism).
//!
//! * [`bench`](mod@bench): TCP, UNIX and SMC-D measured side by side (`ism-sim bench`);
//! * [`board`]: boards, partitions, the host-visible interface of a function, faults;
//! * [`fault`]: fault injection (lost/delayed interrupts, failed commands and moves);
//! * [`memory`]: a partition's memory (one contiguous mapping, private or a shared memfd,
//!   reached only through 8-byte atomics) and its DMA allocator;
//! * [`process`]: process boards (`ism-sim board`) and hosts in other processes
//!   ([`process::attach`]), as `docs/host-interface.md` specifies;
//! * [`irq`]: interrupt lines that wake a waiting host thread;
//! * [`host`]: a probed partition: its driver plus interrupt delivery (thread or polling);
//! * [`smc`]: SMC-D stacks on a board's partitions;
//! * [`soak`]: many verified connections under partition crashes (`ism-sim soak`);
//! * [`demo`]: the device demo of the CLI;
//! * [`workload`]: verified streams for the CLI;
//! * [`trace`]: Chrome/Perfetto trace export.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod board;
pub mod demo;
pub mod fault;
pub mod host;
pub mod irq;
pub mod memory;
pub mod process;
pub mod smc;
pub mod soak;
pub mod trace;
pub mod workload;

pub use board::{Board, BoardConfig, BoardKind, Partition, SimDriver};
pub use host::{Host, IrqMode};
