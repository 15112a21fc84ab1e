//! READ_GID (0x03): request is a bare header (len 8); the response carries the GID.
//!
//! Response:
//!
//! | off | size | field           |
//! |-----|------|-----------------|
//! | 0   | 8    | header (len 16) |
//! | 8   | 8    | `gid`          |

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ResponseHeader, U64};

/// READ_GID response.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ReadGidResponse {
    /// Header (`len` 16).
    pub hdr: ResponseHeader,
    /// The function's GID.
    pub gid: U64,
}

const _: () = assert!(core::mem::size_of::<ReadGidResponse>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = ReadGidResponse {
            hdr: ResponseHeader::new(0x03, 0, 16),
            gid: 0x0102_0304_0506_0708.into(),
        };
        let bytes = [0, 0, 0, 3, 0, 0, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(ReadGidResponse::read_from_bytes(&bytes).unwrap(), r);
    }
}
