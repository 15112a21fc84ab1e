//! SIGNAL_IEQ (0x0E): post a software event to a remote function's IEQ.
//!
//! | off | size | field                                          |
//! |-----|------|------------------------------------------------|
//! | 0   | 8    | header (len 32)                                |
//! | 8   | 8    | `rgid`: target function                       |
//! | 16  | 4    | `trigger_irq`: non-zero = interrupt the target |
//! | 20  | 4    | `event_code` (SMC: 0x80 shutdown, 0x83 testlink) |
//! | 24  | 8    | `info` (opaque to the device)                  |
//!
//! Response: header only.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{RequestHeader, U32, U64};

/// SIGNAL_IEQ request.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct SignalIeqRequest {
    /// Header (`cmd` 0x0E, `len` 32).
    pub hdr: RequestHeader,
    /// Target GID.
    pub rgid: U64,
    /// Non-zero: raise the target's interrupt.
    pub trigger_irq: U32,
    /// Event code, copied into the event.
    pub event_code: U32,
    /// Event info, copied into the event.
    pub info: U64,
}

const _: () = assert!(core::mem::size_of::<SignalIeqRequest>() == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let r = SignalIeqRequest {
            hdr: RequestHeader::new(0x0E, 32),
            rgid: 0x42.into(),
            trigger_irq: 1.into(),
            event_code: 0x80.into(),
            info: 0x0102_0304_0000_0001.into(),
        };
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0x0E, 0, 0, 0, 32,
            0, 0, 0, 0, 0, 0, 0, 0x42,
            0, 0, 0, 1,
            0, 0, 0, 0x80,
            1, 2, 3, 4, 0, 0, 0, 1,
        ];
        assert_eq!(r.as_bytes(), &bytes);
        assert_eq!(SignalIeqRequest::read_from_bytes(&bytes).unwrap(), r);
    }
}
