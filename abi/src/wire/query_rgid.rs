//! QUERY_RGID (0x09) request: is a remote GID reachable from this function?
//!
//! | off | size | field              |
//! |-----|------|--------------------|
//! | 0   | 8    | header (len 24)    |
//! | 8   | 8    | `rgid`            |
//! | 16  | 4    | `vlan_valid`      |
//! | 20  | 4    | `vlan_id`         |
//!
//! Response: header only; `ret` 0 means reachable.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, U32, U64};

/// QUERY_RGID request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct QueryRgidRequest {
    /// Header (`cmd` 0x09, `len` 24).
    pub hdr: RequestHeader,
    /// The remote GID.
    pub rgid: U64,
    /// Non-zero: `vlan_id` must be shared by both functions.
    pub vlan_valid: U32,
    /// The VLAN id.
    pub vlan_id: U32,
}

const _: () = assert!(core::mem::size_of::<QueryRgidRequest>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = QueryRgidRequest {
            hdr: RequestHeader::new(0x09, 24),
            rgid: 0xAABB.into(),
            vlan_valid: 1.into(),
            vlan_id: 0x1FFF.into(),
        };
        let bytes = [
            0, 0, 0, 9, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB, 0, 0, 0, 1, 0, 0, 0x1F, 0xFF,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(QueryRgidRequest::read_from_bytes(&bytes).unwrap(), r);
    }
}
