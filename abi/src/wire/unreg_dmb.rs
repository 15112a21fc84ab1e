//! UNREG_DMB (0x0B): unregister a DMB by token.
//!
//! Request (len 16): header, then `dmb_tok` (u64) at offset 8.
//!
//! Response (len 16): header, then `state` (u64) at offset 8. Linux reads nothing past the
//! header of this response; the model adds `state` for its no-copy extension:
//! [`UNREG_RELEASED`] means the device will never touch the memory again and the host may
//! free it now; [`UNREG_DEFERRED`] means another function still has the DMB attached, and
//! the device posts a buffer event (`DMB_UNREGISTERED`, token) to the owner's IEQ when the
//! last one detaches. Only then may the host free the memory. Without the extension (separate
//! memory domains) `state` is always `UNREG_RELEASED`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, ResponseHeader, U64};

/// `state`: the memory is released.
pub const UNREG_RELEASED: u64 = 0;
/// `state`: the memory is released when the last attached function detaches.
pub const UNREG_DEFERRED: u64 = 1;

/// UNREG_DMB request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct UnregDmbRequest {
    /// Header (`cmd` 0x0B, `len` 16).
    pub hdr: RequestHeader,
    /// Token of the DMB.
    pub dmb_tok: U64,
}

/// UNREG_DMB response.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct UnregDmbResponse {
    /// Header (`len` 16).
    pub hdr: ResponseHeader,
    /// [`UNREG_RELEASED`] or [`UNREG_DEFERRED`].
    pub state: U64,
}

const _: () = assert!(core::mem::size_of::<UnregDmbRequest>() == 16);
const _: () = assert!(core::mem::size_of::<UnregDmbResponse>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = UnregDmbRequest {
            hdr: RequestHeader::new(0x0B, 16),
            dmb_tok: 0x0001_0002_0000_0000.into(),
        };
        let bytes = [0, 0, 0, 0x0B, 0, 0, 0, 16, 0, 1, 0, 2, 0, 0, 0, 0];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(UnregDmbRequest::read_from_bytes(&bytes).unwrap(), r);
        let resp = UnregDmbResponse {
            hdr: ResponseHeader::new(0x0B, 0, 16),
            state: UNREG_DEFERRED.into(),
        };
        assert_eq!(
            resp.as_bytes(),
            &[0, 0, 0, 0x0B, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }
}
