//! QUERY_INFO (0x08): the function's information block. Request: bare header (len 8).
//!
//! Response (len 200):
//!
//! | off | size | field                                                     |
//! |-----|------|-----------------------------------------------------------|
//! | 0   | 8    | header                                                    |
//! | 8   | 4    | `version`: [`MODEL_VERSION`]                             |
//! | 12  | 4    | `max_len`: largest store-block move, 4096                 |
//! | 16  | 8    | `ism_state`: [`STATE_ONLINE`]                            |
//! | 24  | 8    | `my_gid`                                                 |
//! | 32  | 8    | `sba`: registered SBA address, 0 if none                 |
//! | 40  | 8    | `ieq`: registered IEQ address, 0 if none                 |
//! | 48  | 4    | `ieq_len`                                                |
//! | 52  | 4    | `ext_features` ([`ExtFeatures`]; padding in Linux's struct) |
//! | 56  | 4    | `dmbs_owned`: DMBs this function registered              |
//! | 60  | 4    | `dmbs_used`: DMBs other functions registered for this one to write |
//! | 64  | 4    | `vlan_required`                                          |
//! | 68  | 4    | `vlan_nr_ids`                                            |
//! | 72  | 128  | `vlan_id[64]` (u16 each)                                 |
//!
//! Linux only logs this block, so the meaning of `version`, `max_len`, `ism_state` and
//! the two DMB counts is this model's (the real device's is not public). `ext_features` sits
//! in the 4 bytes that are padding in Linux's `struct ism_query_info`, so Linux ignores it.

use bitflags::bitflags;
#[cfg(test)]
use zerocopy::FromZeros;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ResponseHeader, U16, U32, U64};

/// `version` reported by this model.
pub const MODEL_VERSION: u32 = 1;
/// `ism_state` of a function that accepts commands.
pub const STATE_ONLINE: u64 = 1;
/// Number of VLAN ids a function can hold (the size of `vlan_id[]`).
pub const MAX_VLAN_IDS: usize = 64;

bitflags! {
    /// Extensions the device offers to this function (`ext_features`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExtFeatures: u32 {
        /// ATTACH_DMB / DETACH_DMB are available (shared memory domain).
        const ATTACH_DMB = 1 << 0;
    }
}

/// QUERY_INFO response.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct QueryInfoResponse {
    /// Header (`len` 200).
    pub hdr: ResponseHeader,
    /// Model version.
    pub version: U32,
    /// Largest store-block move in bytes.
    pub max_len: U32,
    /// Function state.
    pub ism_state: U64,
    /// The function's GID.
    pub my_gid: U64,
    /// Registered SBA address (0: none).
    pub sba: U64,
    /// Registered IEQ address (0: none).
    pub ieq: U64,
    /// Registered IEQ length.
    pub ieq_len: U32,
    /// [`ExtFeatures`] bits.
    pub ext_features: U32,
    /// DMBs registered by this function.
    pub dmbs_owned: U32,
    /// DMBs registered elsewhere with this function as the authorized writer.
    pub dmbs_used: U32,
    /// Non-zero after SET_VLAN.
    pub vlan_required: U32,
    /// Number of valid entries in `vlan_id`.
    pub vlan_nr_ids: U32,
    /// The function's VLAN ids.
    pub vlan_id: [U16; MAX_VLAN_IDS],
}

const _: () = assert!(core::mem::size_of::<QueryInfoResponse>() == 200);
const _: () = assert!(core::mem::offset_of!(QueryInfoResponse, my_gid) == 24);
const _: () = assert!(core::mem::offset_of!(QueryInfoResponse, ieq_len) == 48);
const _: () = assert!(core::mem::offset_of!(QueryInfoResponse, dmbs_owned) == 56);
const _: () = assert!(core::mem::offset_of!(QueryInfoResponse, vlan_id) == 72);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let mut r = QueryInfoResponse::new_zeroed();
        r.hdr = ResponseHeader::new(0x08, 0, 200);
        r.version = MODEL_VERSION.into();
        r.max_len = 4096.into();
        r.ism_state = STATE_ONLINE.into();
        r.my_gid = 0x1111.into();
        r.sba = 0x2000.into();
        r.ieq = 0x3000.into();
        r.ieq_len = 512.into();
        r.ext_features = ExtFeatures::ATTACH_DMB.bits().into();
        r.dmbs_owned = 2.into();
        r.dmbs_used = 3.into();
        r.vlan_required = 1.into();
        r.vlan_nr_ids = 1.into();
        r.vlan_id[0] = 0x1FFF.into();
        let b = r.as_bytes();
        assert_eq!(b.len(), 200);
        assert_eq!(&b[0..8], &[0, 0, 0, 8, 0, 0, 0, 200]);
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0x10, 0]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&b[24..32], &[0, 0, 0, 0, 0, 0, 0x11, 0x11]);
        assert_eq!(&b[32..40], &[0, 0, 0, 0, 0, 0, 0x20, 0]);
        assert_eq!(&b[40..48], &[0, 0, 0, 0, 0, 0, 0x30, 0]);
        assert_eq!(&b[48..56], &[0, 0, 2, 0, 0, 0, 0, 1]);
        assert_eq!(
            &b[56..72],
            &[0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1]
        );
        assert_eq!(&b[72..74], &[0x1F, 0xFF]);
        assert!(b[74..].iter().all(|&x| x == 0));
        assert_eq!(QueryInfoResponse::read_from_bytes(b).unwrap(), r);
    }
}
