//! ADD_VLAN_ID (0x04) and DEL_VLAN_ID (0x05) request.
//!
//! | off | size | field            |
//! |-----|------|------------------|
//! | 0   | 8    | header (len 16)  |
//! | 8   | 8    | `vlan_id`       |
//!
//! Response: header only. `vlan_id` 0x1FFF (`ISM_RESERVED_VLANID`) is Linux's ISMv2 probe:
//! a device that accepts it is v2-capable.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, U64};

/// The reserved VLAN id whose acceptance marks an ISMv2 device.
pub const RESERVED_VLAN_ID: u64 = 0x1FFF;

/// ADD_VLAN_ID / DEL_VLAN_ID request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct VlanIdRequest {
    /// Header (`cmd` 0x04 or 0x05, `len` 16).
    pub hdr: RequestHeader,
    /// The VLAN id.
    pub vlan_id: U64,
}

const _: () = assert!(core::mem::size_of::<VlanIdRequest>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = VlanIdRequest {
            hdr: RequestHeader::new(0x04, 16),
            vlan_id: RESERVED_VLAN_ID.into(),
        };
        let bytes = [0, 0, 0, 4, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0x1F, 0xFF];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(VlanIdRequest::read_from_bytes(&bytes).unwrap(), r);
    }
}
