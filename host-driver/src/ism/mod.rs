//! The driver of one ISM function, mirroring Linux's `ism_drv`.
//!
//! * [`hal`]: what the driver needs from its platform: the partition's DMA memory
//!   ([`HostMemory`]) and the function's two address spaces, commands and store-blocks ([`Bus`]);
//! * [`driver`]: [`IsmDriver`]: probe and remove, commands, DMB registration with the
//!   SBA-index bitmap, moves chunked at 4 KiB, attach/detach where offered;
//! * [`irq`]: the interrupt handler (SBA walk, IEQ drain) and the [`IsmClient`] trait through
//!   which DMB signals and events reach their users;
//! * [`error`]: [`IsmError`] with an errno-like [`ErrorKind`];
//! * `recording` (with `std`): `RecordingClient`, a client that records what the handler
//!   delivers, for tests and demos.
//!
//! The driver never reads or writes memory outside what it allocated in its own partition;
//! it trusts the device's answers no further than their lengths.

pub mod driver;
pub mod error;
pub mod hal;
pub mod irq;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
#[cfg(any(test, feature = "std"))]
pub mod recording;

pub use driver::{Dmb, IsmDriver, IsmInfo};
pub use error::{ErrorKind, IsmError};
pub use hal::{Bus, BusError, HostMemory};
pub use irq::{IsmClient, IsmEvent};
pub use ism_abi::wire::ieq::{event_code, EventType};
#[cfg(any(test, feature = "std"))]
pub use recording::RecordingClient;
