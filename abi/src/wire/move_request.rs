//! The store-block request word: the 64-bit PCI offset operand of a move into a DMB.
//!
//! Linux builds it as `dmb_tok | idx << 24 | sf << 23 | offset` (`ISM_CREATE_REQ`):
//!
//! | bits (0 = LSB) | content                                      |
//! |----------------|----------------------------------------------|
//! | 0–22           | byte offset inside the target DMB            |
//! | 23             | signal flag: set the DMB's SBA bit afterwards |
//! | 24–31          | DMBE index (selects the bit in `dmbe_mask`)  |
//! | 32–63          | the DMB token's high half                    |
//!
//! One store-block carries at most [`MAX_MOVE_LEN`] bytes; Linux splits larger moves at
//! 4 KiB boundaries and sets the signal flag only on the last piece.

use crate::ids::DmbToken;

/// Largest payload of one store-block, in bytes.
pub const MAX_MOVE_LEN: usize = 4096;
/// Mask of the offset field.
pub const OFFSET_MASK: u64 = (1 << 23) - 1;
/// The signal flag.
pub const SIGNAL_FLAG: u64 = 1 << 23;

/// A decoded request word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveRequest {
    /// Target DMB (low 32 bits zero).
    pub token: DmbToken,
    /// DMBE index (SMC always uses 0).
    pub dmbe_idx: u8,
    /// Signal the owner after the copy.
    pub signal: bool,
    /// Byte offset inside the DMB (23 bits).
    pub offset: u32,
}

impl MoveRequest {
    /// Decodes a request word. Every 64-bit value decodes; validity is the device's business.
    pub const fn parse(word: u64) -> Self {
        Self {
            token: DmbToken(word & !0xFFFF_FFFF),
            dmbe_idx: (word >> 24) as u8,
            signal: word & SIGNAL_FLAG != 0,
            offset: (word & OFFSET_MASK) as u32,
        }
    }

    /// Encodes the request word. The token's low half and offset bits above bit 22 are
    /// masked off, so the fields cannot bleed into each other.
    pub const fn emit(&self) -> u64 {
        (self.token.0 & !0xFFFF_FFFF)
            | ((self.dmbe_idx as u64) << 24)
            | if self.signal { SIGNAL_FLAG } else { 0 }
            | (self.offset as u64 & OFFSET_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_word() {
        let r = MoveRequest {
            token: DmbToken(0x1234_5678_0000_0000),
            dmbe_idx: 0x9A,
            signal: true,
            offset: 0x12_3456,
        };
        assert_eq!(r.emit(), 0x1234_5678_9A92_3456);
        assert_eq!(MoveRequest::parse(0x1234_5678_9A92_3456), r);
        let plain = MoveRequest::parse(0xAAAA_BBBB_0000_0020);
        assert!(!plain.signal);
        assert_eq!(plain.offset, 0x20);
        assert_eq!(plain.dmbe_idx, 0);
    }

    #[test]
    fn fields_never_bleed() {
        let r = MoveRequest {
            token: DmbToken(u64::MAX),
            dmbe_idx: 0,
            signal: false,
            offset: u32::MAX,
        };
        assert_eq!(r.emit(), 0xFFFF_FFFF_007F_FFFF);
    }
}
