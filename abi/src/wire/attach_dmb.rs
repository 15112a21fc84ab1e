//! ATTACH_DMB (0x20) and DETACH_DMB (0x21): the model's no-copy extension.
//!
//! Offered only where the attaching function and the DMB's owner share one memory domain
//! (the loopback board); QUERY_INFO advertises it. Semantics follow Linux's loopback-ism:
//! the DMB's memory lives until the owner's UNREG_DMB *and* the last DETACH_DMB.
//!
//! Both requests (len 16): header, then `dmb_tok` (u64) at offset 8. DETACH answers with a
//! bare header. ATTACH answers (len 32):
//!
//! | off | size | field                                   |
//! |-----|------|-----------------------------------------|
//! | 0   | 8    | header (len 32)                         |
//! | 8   | 8    | `dmb`: device address of the DMB       |
//! | 16  | 8    | `dmb_tok`: the token (echoed)           |
//! | 24  | 4    | `dmb_len`                              |
//! | 28  | 4    | `sba_idx` of the DMB at its owner      |

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, ResponseHeader, U32, U64};

/// ATTACH_DMB / DETACH_DMB request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct DmbTokenRequest {
    /// Header (`cmd` 0x20 or 0x21, `len` 16).
    pub hdr: RequestHeader,
    /// The DMB's token.
    pub dmb_tok: U64,
}

/// ATTACH_DMB response.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct AttachDmbResponse {
    /// Header (`len` 32).
    pub hdr: ResponseHeader,
    /// Device address of the DMB, valid in the attacher's domain.
    pub dmb: U64,
    /// The token.
    pub dmb_tok: U64,
    /// Length of the DMB.
    pub dmb_len: U32,
    /// SBA index of the DMB at its owner.
    pub sba_idx: U32,
}

const _: () = assert!(core::mem::size_of::<DmbTokenRequest>() == 16);
const _: () = assert!(core::mem::size_of::<AttachDmbResponse>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = DmbTokenRequest {
            hdr: RequestHeader::new(0x20, 16),
            dmb_tok: 0x0A0B_0C0D_0000_0000.into(),
        };
        let bytes = [
            0, 0, 0, 0x20, 0, 0, 0, 16, 0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 0,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(DmbTokenRequest::read_from_bytes(&bytes).unwrap(), r);

        let resp = AttachDmbResponse {
            hdr: ResponseHeader::new(0x20, 0, 32),
            dmb: 0x1000.into(),
            dmb_tok: 0x0A0B_0C0D_0000_0000.into(),
            dmb_len: 0x4000.into(),
            sba_idx: 33.into(),
        };
        #[rustfmt::skip]
        let golden = [
            0, 0, 0, 0x20, 0, 0, 0, 32,
            0, 0, 0, 0, 0, 0, 0x10, 0,
            0x0A, 0x0B, 0x0C, 0x0D, 0, 0, 0, 0,
            0, 0, 0x40, 0,
            0, 0, 0, 33,
        ];
        assert_eq!(resp.as_bytes(), &golden);
        assert_eq!(AttachDmbResponse::read_from_bytes(&golden).unwrap(), resp);
    }
}
