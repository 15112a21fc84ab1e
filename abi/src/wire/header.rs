//! The 8-byte request and response headers (`ism_req_hdr`, `ism_resp_hdr`).
//!
//! | off | size | request           | response            |
//! |-----|------|-------------------|---------------------|
//! | 0   | 4    | `cmd`             | `cmd` (echoed)      |
//! | 4   | 2    | reserved (zero)   | `ret` (0 = success) |
//! | 6   | 2    | `len` incl. header| `len` incl. header  |

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U16, U32};

/// Length of either header.
pub const HEADER_LEN: usize = 8;

/// Request header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct RequestHeader {
    /// Command code ([`super::Opcode`]).
    pub cmd: U32,
    /// Reserved, zero.
    pub reserved: U16,
    /// Total request length, header included.
    pub len: U16,
}

/// Response header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ResponseHeader {
    /// The request's command code, echoed.
    pub cmd: U32,
    /// Return code: 0 on success, else a [`crate::error::ReturnCode`].
    pub ret: U16,
    /// Total response length, header included.
    pub len: U16,
}

impl RequestHeader {
    /// A header for `cmd` with total length `len`.
    pub fn new(cmd: u32, len: u16) -> Self {
        Self {
            cmd: cmd.into(),
            reserved: 0.into(),
            len: len.into(),
        }
    }
}

impl ResponseHeader {
    /// A header answering `cmd` with `ret` and total length `len`.
    pub fn new(cmd: u32, ret: u16, len: u16) -> Self {
        Self {
            cmd: cmd.into(),
            ret: ret.into(),
            len: len.into(),
        }
    }
}

const _: () = assert!(core::mem::size_of::<RequestHeader>() == HEADER_LEN);
const _: () = assert!(core::mem::size_of::<ResponseHeader>() == HEADER_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_request_header() {
        let h = RequestHeader::new(0x0A, 40);
        assert_eq!(h.as_bytes(), &[0, 0, 0, 0x0A, 0, 0, 0, 40]);
        let back = RequestHeader::read_from_bytes(&[0, 0, 0, 0x0B, 0, 0, 0, 16]).unwrap();
        assert_eq!(back.cmd.get(), 0x0B);
        assert_eq!(back.len.get(), 16);
    }

    #[test]
    fn golden_response_header() {
        let h = ResponseHeader::new(0x08, 0x0102, 200);
        assert_eq!(h.as_bytes(), &[0, 0, 0, 0x08, 0x01, 0x02, 0, 200]);
        let back = ResponseHeader::read_from_bytes(&[0, 0, 0, 3, 0xFF, 0xFF, 0, 8]).unwrap();
        assert_eq!(back.ret.get(), 0xFFFF);
    }

    #[test]
    fn short_input_gives_no_view() {
        assert!(super::super::view::<RequestHeader>(&[0; 7]).is_none());
        assert!(super::super::view::<RequestHeader>(&[0; 8]).is_some());
    }
}
