//! Interrupt lines: how the device tells a host "look at your status block".
//!
//! Each ISM function has exactly one interrupt (one MSI vector on the real device). The
//! device raises it after setting bits in the function's SBA; the host lowers it when its
//! handler runs. Raising an already raised line is harmless: interrupts coalesce, and the SBA
//! says what happened.

use embedded_hal::digital::OutputPin;

/// One interrupt line towards a host. `raise` must be callable from any device thread.
pub trait InterruptLine {
    /// Signals the host (level: pending until the host handles it).
    fn raise(&self);
}

impl<L: InterruptLine + ?Sized> InterruptLine for &L {
    fn raise(&self) {
        (**self).raise()
    }
}

/// Adapts an [`OutputPin`] (a GPIO wired to the host's interrupt input, "high = pending") to
/// an [`InterruptLine`].
///
/// `OutputPin::set_high` takes `&mut self`, so the pin sits behind a short spin lock; a pin
/// error is dropped, because an interrupt that cannot be raised is seen by the host as a lost
/// interrupt, which the SBA protocol already tolerates (the next interrupt finds all bits).
pub struct PinLine<P> {
    pin: spin::Mutex<P>,
}

impl<P: OutputPin> PinLine<P> {
    /// Wraps `pin`, driving it low (no interrupt pending).
    pub fn new(mut pin: P) -> Self {
        let _ = pin.set_low();
        Self {
            pin: spin::Mutex::new(pin),
        }
    }

    /// Lowers the line (the host acknowledged the interrupt).
    pub fn lower(&self) {
        let _ = self.pin.lock().set_low();
    }

    /// Gives the pin back.
    pub fn into_inner(self) -> P {
        self.pin.into_inner()
    }
}

impl<P: OutputPin> InterruptLine for PinLine<P> {
    fn raise(&self) {
        let _ = self.pin.lock().set_high();
    }
}
