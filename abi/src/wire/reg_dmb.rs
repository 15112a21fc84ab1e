//! REG_DMB (0x0A): register a direct memory buffer.
//!
//! Request:
//!
//! | off | size | field                                              |
//! |-----|------|----------------------------------------------------|
//! | 0   | 8    | header (len 40)                                    |
//! | 8   | 8    | `dmb`: device address of the buffer               |
//! | 16  | 4    | `dmb_len`: length in bytes (1 ..= 1 MiB)          |
//! | 20  | 4    | `sba_idx`: the DMB's bit in the SBA (32 ..= 1919)  |
//! | 24  | 4    | `vlan_valid`                                      |
//! | 28  | 4    | `vlan_id`                                         |
//! | 32  | 8    | `rgid`: the only remote GID allowed to write      |
//!
//! Response (len 16): header, then `dmb_tok` (u64) at offset 8.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, ResponseHeader, U32, U64};

/// Largest `dmb_len` the device registers: the real device's DMA segment limit, 1 MiB
/// (`drivers/s390/net/ism_drv.c` `ism_probe` sets it with `dma_set_max_seg_size`; Linux
/// refuses a longer DMB in `ism_alloc_dmb`). Longer is refused with `InvalidLength`.
pub const MAX_DMB_LEN: u32 = 1 << 20;

/// REG_DMB request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RegDmbRequest {
    /// Header (`cmd` 0x0A, `len` 40).
    pub hdr: RequestHeader,
    /// Device address of the buffer.
    pub dmb: U64,
    /// Buffer length.
    pub dmb_len: U32,
    /// SBA bit index.
    pub sba_idx: U32,
    /// Non-zero: the DMB is tagged with `vlan_id`.
    pub vlan_valid: U32,
    /// VLAN id.
    pub vlan_id: U32,
    /// The authorized writer.
    pub rgid: U64,
}

/// REG_DMB response.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RegDmbResponse {
    /// Header (`len` 16).
    pub hdr: ResponseHeader,
    /// The new DMB's token (low 32 bits zero).
    pub dmb_tok: U64,
}

const _: () = assert!(core::mem::size_of::<RegDmbRequest>() == 40);
const _: () = assert!(core::mem::size_of::<RegDmbResponse>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_request() {
        let r = RegDmbRequest {
            hdr: RequestHeader::new(0x0A, 40),
            dmb: 0x1_0000_4000.into(),
            dmb_len: 0x4000.into(),
            sba_idx: 32.into(),
            vlan_valid: 1.into(),
            vlan_id: 7.into(),
            rgid: 0x1122_3344_5566_7788.into(),
        };
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0x0A, 0, 0, 0, 40,
            0, 0, 0, 1, 0, 0, 0x40, 0,
            0, 0, 0x40, 0,
            0, 0, 0, 32,
            0, 0, 0, 1,
            0, 0, 0, 7,
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(RegDmbRequest::read_from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn golden_response() {
        let r = RegDmbResponse {
            hdr: ResponseHeader::new(0x0A, 0, 16),
            dmb_tok: 0xDEAD_BEEF_0000_0000.into(),
        };
        let bytes = [
            0, 0, 0, 0x0A, 0, 0, 0, 16, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 0,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(RegDmbResponse::read_from_bytes(&bytes).unwrap(), r);
    }
}
