//! # ism-sim: a simulator board for the ISM device
//!
//! Runs the `ism-firmware` device on std threads: partitions with separate memory that the
//! device copies between (as between LPARs), or a loopback board with one shared memory
//! where the device also offers no-copy attach (as Linux's loopback-ism).
//!
//! * [`memory`]: a partition's memory (one contiguous mapping) and its DMA allocator.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod memory;
