//! REG_SBA (0x01) request: register the 4096-byte status block area.
//!
//! | off | size | field            |
//! |-----|------|------------------|
//! | 0   | 8    | header (len 16)  |
//! | 8   | 8    | `sba`: device address of the SBA |
//!
//! Response: header only (len 8).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, U64};

/// REG_SBA request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RegSbaRequest {
    /// Header (`cmd` 0x01, `len` 16).
    pub hdr: RequestHeader,
    /// Device address of the SBA.
    pub sba: U64,
}

const _: () = assert!(core::mem::size_of::<RegSbaRequest>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = RegSbaRequest {
            hdr: RequestHeader::new(0x01, 16),
            sba: 0x0000_0001_0000_1000.into(),
        };
        let bytes = [0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0x10, 0];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(RegSbaRequest::read_from_bytes(&bytes).unwrap(), r);
    }
}
