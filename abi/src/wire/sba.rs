//! The status block area (`struct ism_sba`, exactly 4096 bytes), written by the device and
//! read and cleared by the host's interrupt handler.
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 4    | word 0: bit 0x80 of byte 0 = `s` (summary), 0x40 = `e` (event) |
//! | 4   | 240  | `dmb_bits`: one bit per SBA index, MSB-first               |
//! | 244 | 12   | reserved                                                   |
//! | 256 | 3840 | `dmbe_mask[1920]`: u16 per SBA index                        |
//!
//! The bit of SBA index `i` is `0x80 >> (i % 8)` in byte `4 + i / 8` (s390's MSB-0 bit
//! numbering); its mask is the big-endian u16 at `256 + 2 i`. Indices 0..=31 (bytes 4..=7)
//! are never used, so that DMB bits start on an 8-byte boundary.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U16, U32};

/// Size of the SBA.
pub const SBA_SIZE: usize = 4096;
/// Number of SBA indices (bits in `dmb_bits`, entries in `dmbe_mask`): `ISM_NR_DMBS`.
pub const NR_DMBS: usize = 1920;
/// Lowest usable SBA index (`ISM_DMB_BIT_OFFSET`).
pub const FIRST_DMB_INDEX: usize = 32;
/// Offset of `dmb_bits`.
pub const DMB_BITS_OFFSET: usize = 4;
/// Offset of `dmbe_mask`.
pub const DMBE_MASK_OFFSET: usize = 256;

bitflags! {
    /// Flags in byte 0 of the SBA.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SbaFlags: u8 {
        /// `s`: some DMB was signalled.
        const SUMMARY = 0x80;
        /// `e`: the IEQ has new events.
        const EVENT = 0x40;
    }
}

/// The whole SBA as a typed view.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Sba {
    /// Word 0: summary and event bits.
    pub word0: U32,
    /// One bit per SBA index.
    pub dmb_bits: [U32; 60],
    /// Reserved.
    pub reserved: [U32; 3],
    /// Per-index DMBE masks.
    pub dmbe_mask: [U16; NR_DMBS],
}

const _: () = assert!(core::mem::size_of::<Sba>() == SBA_SIZE);
const _: () = assert!(core::mem::offset_of!(Sba, dmb_bits) == DMB_BITS_OFFSET);
const _: () = assert!(core::mem::offset_of!(Sba, dmbe_mask) == DMBE_MASK_OFFSET);

/// Byte offset and bit mask of SBA index `idx` in `dmb_bits`.
pub const fn dmb_bit(idx: usize) -> (usize, u8) {
    (DMB_BITS_OFFSET + idx / 8, 0x80 >> (idx % 8))
}

/// Byte offset of the big-endian `dmbe_mask` entry of SBA index `idx`.
pub const fn dmbe_mask_offset(idx: usize) -> usize {
    DMBE_MASK_OFFSET + 2 * idx
}

/// Where the two bytes of a DMBE mask at byte address `at` lie in their aligned doubleword,
/// for an update of both in one 8-byte operation: the doubleword's address and the index
/// of the mask's first byte in it; `None` if they straddle two doublewords (an SBA at an
/// odd address; the device's SBAs are 8-byte aligned, so never there).
pub const fn dmbe_mask_word(at: u64) -> Option<(u64, usize)> {
    let k = (at % 8) as usize;
    if k < 7 {
        Some((at - k as u64, k))
    } else {
        None
    }
}

/// The mask bit for DMBE index `dmbe_idx`.
///
/// The real device's encoding is not public; this follows Linux's loopback emulation,
/// `ror16(0x1000, idx)`, so DMBE 0 (all SMC uses) is 0x1000.
pub const fn dmbe_mask_bit(dmbe_idx: u8) -> u16 {
    0x1000u16.rotate_right(dmbe_idx as u32)
}

/// Whether `idx` is an SBA index a DMB may use.
pub const fn is_usable_index(idx: usize) -> bool {
    idx >= FIRST_DMB_INDEX && idx < NR_DMBS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bit_positions() {
        assert_eq!(dmb_bit(32), (8, 0x80));
        assert_eq!(dmb_bit(33), (8, 0x40));
        assert_eq!(dmb_bit(39), (8, 0x01));
        assert_eq!(dmb_bit(40), (9, 0x80));
        assert_eq!(dmb_bit(1919), (243, 0x01));
        assert_eq!(dmbe_mask_offset(32), 320);
        assert_eq!(dmbe_mask_offset(1919), 4094);
        assert_eq!(dmbe_mask_bit(0), 0x1000);
        assert_eq!(dmbe_mask_bit(1), 0x0800);
        assert_eq!(dmbe_mask_bit(13), 0x8000);
        assert_eq!(dmbe_mask_word(4096 + 320), Some((4096 + 320, 0)));
        assert_eq!(dmbe_mask_word(4096 + 326), Some((4096 + 320, 6)));
        assert_eq!(dmbe_mask_word(4096 + 327), None);
        assert!(!is_usable_index(31));
        assert!(is_usable_index(32));
        assert!(is_usable_index(1919));
        assert!(!is_usable_index(1920));
    }

    #[test]
    fn golden_view() {
        let mut bytes = [0u8; SBA_SIZE];
        bytes[0] = (SbaFlags::SUMMARY | SbaFlags::EVENT).bits();
        let (b, m) = dmb_bit(35);
        bytes[b] |= m;
        let o = dmbe_mask_offset(35);
        bytes[o..o + 2].copy_from_slice(&dmbe_mask_bit(0).to_be_bytes());
        let sba = Sba::read_from_bytes(&bytes[..]).unwrap();
        assert_eq!(sba.word0.get(), 0xC000_0000);
        assert_eq!(sba.dmb_bits[1].get(), 0x1000_0000);
        assert_eq!(sba.dmbe_mask[35].get(), 0x1000);
        assert_eq!(sba.as_bytes(), &bytes[..]);
    }
}
