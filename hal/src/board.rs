//! The bundle of HAL pieces a device runs on.

use crate::clock::Clock;
use crate::ids::{DomainId, FunctionId};
use crate::irq::InterruptLine;
use crate::memory::DmaMemory;

/// What a board gives the ISM device: the memory domains of its partitions, one interrupt
/// line per function, and a clock.
///
/// The device never caches references obtained here across commands; a board may hand out
/// the same objects every time.
pub trait Board {
    /// A partition's memory.
    type Memory: DmaMemory;
    /// One function's interrupt line.
    type Irq: InterruptLine;
    /// The board's clock.
    type Clock: Clock;

    /// The memory of `domain`, or `None` if the board has no such domain.
    fn memory(&self, domain: DomainId) -> Option<&Self::Memory>;

    /// The interrupt line of `function`, or `None` if the board has no such function.
    fn irq(&self, function: FunctionId) -> Option<&Self::Irq>;

    /// The clock.
    fn clock(&self) -> &Self::Clock;

    /// Whether a function of domain `a` may map (attach) a buffer of domain `b` instead of
    /// copying into it, because both are one memory. A board without no-copy support (an
    /// LPAR board, where the device copies between partitions) returns `false`, even for
    /// `a == b`.
    fn may_map(&self, a: DomainId, b: DomainId) -> bool;
}
