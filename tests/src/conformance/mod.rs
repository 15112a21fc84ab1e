//! A conformance suite for ISM devices, written against the **host-visible interface only**:
//! the command area and store-blocks of each function ([`Bus`](ism_host_driver::ism::Bus)), the partition memory the
//! device reads and writes ([`HostMemory`](ism_host_driver::ism::HostMemory): SBA, IEQ and DMBs live there), and each function's
//! interrupt. Nothing here looks inside the device, so the same checks run against the
//! `ism-sim` boards, a QEMU device model, or a vendor's hardware behind a thin shim.
//!
//! The expected behaviour is what Linux's ISM driver and SMC-D rely on
//! (`drivers/s390/net/ism.h` and `ism_drv.c`: `ism_cmd`, `ism_probe`, `ism_handle_irq`,
//! `ism_handle_event`; `net/smc/smc_ism.c`): command codes and exact request lengths, the response
//! header (`cmd` echoed, `ret`, `len`), REG_DMB tokens with their low 32 bits zero that die
//! with UNREG_DMB, the SBA bit of SBA index `i` in byte `4 + i/8` under mask `0x80 >> (i%8)`
//! and its DMBE mask at byte `256 + 2i` (`0x1000` for DMBE 0), the IEQ index rule (after
//! writing entry `k` the device stores `idx = k + 1`, 15 entries in Linux's 512-byte queue,
//! wrapping and overwriting), SIGNAL_IEQ software events and QUERY_RGID with VLAN rules. The
//! few places where this suite is stricter than Linux (a wrong request length must be
//! refused; an unknown command must be *answered* with a non-zero `ret` other than `0xFFFF`,
//! which means "no answer") are stated in each check's documentation.
//!
//! # How a vendor plugs in a device
//!
//! 1. Implement [`DeviceUnderTest`] for a type that reaches your device:
//!    * [`DeviceUnderTest::bus`]: for function `f`, an [`ism_host_driver::ism::Bus`] whose
//!      `command` posts the request bytes to the function's command area (body, then header)
//!      and reads back the response header and, if `ret == 0`, the body up to `len`; and
//!      whose `store_block` issues one store-block with the given 64-bit request word;
//!    * [`DeviceUnderTest::host_memory`]: an [`ism_host_driver::ism::HostMemory`] for the memory of the
//!      partition that owns function `f`: byte access by device address, and a DMA allocator
//!      (the checks allocate SBA, IEQ and DMB buffers from it and free them again);
//!    * [`DeviceUnderTest::wait_irq`]: wait up to a timeout for function `f`'s interrupt and
//!      acknowledge it (with a zero timeout: take it if pending);
//!    * [`DeviceUnderTest::chid`], [`DeviceUnderTest::shares_memory`];
//!    * optionally [`DeviceUnderTest::quiet_period`]: how long to wait before concluding
//!      that an interrupt did *not* come (a device that raises interrupts synchronously
//!      with the store, as the simulator does, can use zero).
//! 2. Get one named, filterable `#[test]` per check from one line in a test file (this
//!    crate's `tests/tests/conformance.rs` does exactly that for the simulator boards):
//!
//! ```ignore
//! ism_tests::conformance_tests!(my_device, MyDevice::open().unwrap());
//! // cargo test --test conformance my_device::            every check
//! // cargo test --test conformance my_device::signal_ieq  one check
//! ```
//!
//!    Or run them from code: [`run_all`] returns `(name, result)` for every check, and each
//!    check is a `pub fn` (`check_*`) of its own.
//!
//! Contract between the checks and the device: every check starts from functions with
//! nothing registered (no SBA, IEQ, DMB or VLAN) and leaves them that way, also when it
//! fails (registrations are undone when the check's sessions drop). Checks use the first two
//! functions (one if the device has only one, as the loopback board: the function then
//! writes its own DMBs, as loopback-ism does).
//!
//! [`check_linux_driver_round_trip`] additionally runs this crate's Rust port of Linux's
//! ISM driver ([`IsmDriver`](ism_host_driver::ism::IsmDriver)) over the device.

//!
//! # Where things are
//! * `dut.rs`: the vendor trait [`DeviceUnderTest`];
//! * `harness.rs`: commands and store-blocks through the trait, sessions that undo what
//!   they register, [`checks`], [`run_all`] and the exported [`conformance_tests!`](crate::conformance_tests)
//!   macro;
//! * `checks.rs`: the checks and the one list of them. A new check is a `pub fn check_*`
//!   there plus one line in that list; the tests and [`checks`] follow from the list.

mod checks;
mod dut;
mod harness;

pub use checks::*;
pub use dut::{Check, CheckResult, DeviceUnderTest};
pub use harness::{checks, command, raw_command, run_all, store, Response};
