//! The board kit: what a simulated machine is made of. Partition memory, interrupt lines,
//! fault injection, trace export, the boards themselves, a probed partition (driver plus
//! interrupt delivery) and SMC-D stacks on a board's partitions.
//!
//! * [`board`]: boards, partitions, the host-visible interface of a function, faults;
//! * [`memory`]: a partition's memory (one contiguous mapping) and its DMA allocator;
//! * [`irq`]: interrupt lines that wake a waiting host thread;
//! * [`fault`]: fault injection (lost/delayed interrupts, failed commands and moves);
//! * [`trace`]: Chrome/Perfetto trace export;
//! * [`host`]: a probed partition: its driver plus interrupt delivery (thread or polling);
//! * [`smc`]: SMC-D stacks on a board's partitions;
//! * [`rng`]: the one pseudo-random generator (workloads, soak, faults, tests);
//! * [`hash`]: the hasher of maps keyed by the process's own small integers.

pub mod board;
pub mod fault;
pub mod hash;
pub mod host;
pub mod irq;
pub mod memory;
pub mod rng;
pub mod smc;
pub mod trace;
