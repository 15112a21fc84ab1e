//! Time, as the device stamps it into events.

/// A monotonic clock. The IEQ `time` field of every event comes from here.
pub trait Clock {
    /// Current time in TOD-clock-like units. The model uses nanoseconds since the board
    /// started; only monotonicity matters to hosts.
    fn now(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> u64 {
        (**self).now()
    }
}
