//! The platform traits of the ISM driver, split as the hardware is: the partition's memory
//! (control of buffers) and the function's bus (commands on the control path, store-blocks
//! on the data path).

use ism_abi::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory};

/// A bus-level failure: the request never reached the device or no answer came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusError {
    /// The function is gone (hot-unplugged, partition deactivated).
    NoDevice,
    /// A store-block into a DMB was refused; carries the device's reason code
    /// (`ism_abi::MoveError as u8`, or a vendor's own).
    StoreRefused(u8),
}

impl core::fmt::Display for BusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BusError::NoDevice => f.write_str("the function is gone"),
            BusError::StoreRefused(code) => write!(f, "store-block refused with code {code}"),
        }
    }
}

impl core::error::Error for BusError {}

/// The partition's memory, as the OS sees it.
pub trait HostMemory: Send + Sync {
    /// The memory type.
    type Memory: DmaMemory + Send + Sync;

    /// The partition's memory, by device address.
    fn memory(&self) -> &Self::Memory;

    /// Allocates `size` zeroed bytes aligned to `align` (a power of two) for DMA.
    ///
    /// # Errors
    /// `None` when the partition has no memory left.
    fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr>;

    /// Frees what `dma_alloc` returned.
    fn dma_free(&self, addr: DevAddr, size: usize);
}

/// The two address spaces of an ISM function.
pub trait Bus: Send + Sync {
    /// Control path (PCI space 2): posts `request` (body, then header as the doorbell) and
    /// reads back the response header and, when `ret == 0`, the body up to its length.
    ///
    /// # Errors
    /// [`BusError::NoDevice`] if the function does not answer.
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError>;

    /// Data path (PCI space 0): one store-block of at most 4096 bytes with the encoded DMB
    /// request word as its offset operand.
    ///
    /// # Errors
    /// [`BusError::StoreRefused`] with the device's reason, [`BusError::NoDevice`].
    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError>;

    /// Data path, synchronous: one store-block executed here and now, in the calling
    /// thread, if this bus can (a loopback board moves data on the sender's CPU, as
    /// Linux's `net/smc/smc_loopback.c` `smc_lo_move_data` does). `Some(Ok(()))`: the bytes
    /// are in the target DMB when this returns, which a caller that tells the receiver by
    /// another way than the device's signal relies on. `None`: not possible now (this bus
    /// never can, or earlier store-blocks are still on their way and must land first);
    /// nothing was written, and [`Bus::store_block`] does it. `request`'s signal bit should
    /// be clear (a bus may refuse a signalled one with `None`). The default: `None`.
    ///
    /// # Errors
    /// As [`Bus::store_block`].
    fn store_block_now(&self, request: u64, data: &[u8]) -> Option<Result<(), BusError>> {
        let _ = (request, data);
        None
    }

    /// A hint, not a command of the device: `true` while a host thread polls this
    /// function's SBA itself (a busy-polling or spinning reader running the interrupt
    /// handler), `false` when it stops; calls nest (each `true` is matched by one `false`).
    /// While anyone polls, a board may raise the interrupt without waking the host's
    /// interrupt thread, as a NAPI driver masks its interrupt while it polls: the poller
    /// finds the work, and a thread woken for nothing would only take a core from it. After
    /// its last `false` the poller polls once more (or takes the interrupt and looks for
    /// work: [`Bus::ack_interrupt`]), so an interrupt raised while the wake-up was held
    /// back is never lost. The default ignores the hint.
    fn set_polling(&self, on: bool) {
        let _ = on;
    }

    /// Acknowledges the function's interrupt without running the handler: a raise that
    /// came before no longer wakes or runs an interrupt thread, and the SBA's bits stay
    /// for a later run of the handler (which any later raise, or a poll, brings about).
    /// For a poller that found its news itself after it stopped polling, and checks the
    /// SBA after this for anything else (`SmcdOps::ack_irq`), so the order matters: a
    /// board marks the interrupt raised only after the SBA bits it signals are set
    /// (release), and this takes it with an acquiring read-modify-write; whoever takes it
    /// must then run the handler for anything but its own news. The default does nothing.
    fn ack_interrupt(&self) {}

    /// Whether the function's interrupt is raised and not yet taken (by an interrupt
    /// thread or [`Bus::ack_interrupt`]); `None` if this bus cannot tell (the default),
    /// always the same answer for one bus.
    /// A poller that found a signal's news itself waits for its raise before it stops
    /// polling, so that the raise does not wake an interrupt thread for it.
    fn interrupt_raised(&self) -> Option<bool> {
        None
    }

    /// Whether only polling host threads take this function's interrupts (no interrupt
    /// thread waits on them, as with NAPI busy polling and the interrupt masked). A poller
    /// may then leave a signal it has not handled yet for its own next poll. The default
    /// says no (an interrupt thread may be there).
    fn polled_only(&self) -> bool {
        false
    }
}
