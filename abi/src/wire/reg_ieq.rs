//! REG_IEQ (0x02) request: register the interrupt event queue.
//!
//! | off | size | field            |
//! |-----|------|------------------|
//! | 0   | 8    | header (len 24)  |
//! | 8   | 8    | `ieq`: device address of the IEQ |
//! | 16  | 8    | `len`: bytes of the IEQ the device may use (Linux: 512) |
//!
//! Response: header only (len 8).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, U64};

/// REG_IEQ request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RegIeqRequest {
    /// Header (`cmd` 0x02, `len` 24).
    pub hdr: RequestHeader,
    /// Device address of the IEQ.
    pub ieq: U64,
    /// Usable length of the IEQ in bytes: a 32-byte header plus 32-byte entries.
    pub len: U64,
}

const _: () = assert!(core::mem::size_of::<RegIeqRequest>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = RegIeqRequest {
            hdr: RequestHeader::new(0x02, 24),
            ieq: 0x2000.into(),
            len: 512.into(),
        };
        let bytes = [
            0, 0, 0, 2, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 2, 0,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(RegIeqRequest::read_from_bytes(&bytes).unwrap(), r);
    }
}
