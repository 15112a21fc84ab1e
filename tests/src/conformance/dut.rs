//! The vendor trait: a device seen only through what its hosts see.

use std::time::Duration;

use ism_host_driver::ism::{Bus, HostMemory};

/// A device under test, seen only through what its hosts see.
pub trait DeviceUnderTest {
    /// The partition memory and DMA allocator of a function's host.
    type HostMemory: HostMemory;
    /// A function's command area and store-block path.
    type Bus: Bus;

    /// Number of ISM functions the checks may use (at least 1).
    fn functions(&self) -> usize;

    /// The bus of function `f` (`f < functions()`).
    fn bus(&self, f: usize) -> &Self::Bus;

    /// The memory of the partition that owns function `f`.
    fn host_memory(&self, f: usize) -> &Self::HostMemory;

    /// Waits up to `timeout` for function `f`'s interrupt; returns whether one was taken
    /// (acknowledged). A zero timeout takes a pending interrupt without waiting.
    fn wait_irq(&self, f: usize, timeout: Duration) -> bool;

    /// The device's CHID (all functions share it).
    fn chid(&self) -> u16;

    /// Whether all functions share one memory domain (loopback-style devices).
    fn shares_memory(&self) -> bool;

    /// How long to wait before concluding that no interrupt is coming.
    fn quiet_period(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// Upper bound for an expected interrupt to arrive.
    fn irq_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// What a check returns: `Err` with a readable reason on a conformance failure.
pub type CheckResult = Result<(), String>;

/// A check of device `D`.
pub type Check<D> = fn(&D) -> CheckResult;
