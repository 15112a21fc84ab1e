//! The interrupt event queue (IEQ): a 32-byte header and 32-byte events, written by the
//! device and drained by the host.
//!
//! Header (`struct ism_eq_header`):
//!
//! | off | size | field                                                  |
//! |-----|------|--------------------------------------------------------|
//! | 0   | 8    | `idx`: index of the newest entry **plus one** (0 = none yet) |
//! | 8   | 8    | `ieq_len`: written by this model at REG_IEQ            |
//! | 16  | 8    | `entry_len`: 32, written by this model at REG_IEQ       |
//! | 24  | 8    | reserved                                               |
//!
//! Event (`struct ism_event`) at `32 + 32 k`:
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 4    | `type` ([`EventType`])                                     |
//! | 4   | 4    | `code` ([`event_code`], or the sender's code for software events) |
//! | 8   | 8    | `tok`: DMB token (buffer events) or GID (device, software)  |
//! | 16  | 8    | `time`                                                     |
//! | 24  | 8    | `info` (software events: the sender's info)                |
//!
//! Index rule (what Linux's drain loop needs): after writing entry `k` the device stores
//! `idx = k + 1`; entries wrap after the last one (15 for Linux's 512-byte queue), so `idx`
//! runs 1..=15 and never returns to 0. There is no overflow protection: an event that finds
//! the queue full overwrites the oldest one, as on the real device.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{U32, U64};
use crate::table::code_table;

/// Size of the header and of each entry.
pub const ENTRY_LEN: usize = 32;
/// The queue length Linux registers: a header and 15 entries.
pub const LINUX_IEQ_LEN: usize = 512;
/// Largest accepted queue length (one page).
pub const MAX_IEQ_LEN: usize = 4096;

code_table! {
    /// Event types (the `type` of an IEQ entry); the text is Linux's name.
    #[non_exhaustive]
    pub enum EventType: u32, text = name {
        /// Buffer event (`ISM_EVENT_BUF`, formerly `ISM_EVENT_DMB`): `tok` is a DMB token.
        Buffer = 0 => "ISM_EVENT_BUF",
        /// Device event (`ISM_EVENT_DEV`, formerly `ISM_EVENT_GID`): `tok` is a GID.
        Device = 1 => "ISM_EVENT_DEV",
        /// Software event from SIGNAL_IEQ (`ISM_EVENT_SWR`): `tok` is the sender's GID.
        Software = 2 => "ISM_EVENT_SWR",
    }
}

/// Hardware event codes (`enum ism_event_code`).
pub mod event_code {
    /// The GID's function is in an error state (a partition crashed).
    pub const DEV_GID_ERR_STATE: u32 = 0x01;
    /// The function owning a buffer is in an error state.
    pub const BUF_OWNING_ISM_DEV_IN_ERR_STATE: u32 = 0x02;
    /// The function using a buffer is in an error state.
    pub const BUF_USING_ISM_DEV_IN_ERR_STATE: u32 = 0x03;
    /// A DMB was unregistered (and its memory released).
    pub const BUF_DMB_UNREGISTERED: u32 = 0x04;
    /// VLAN mismatch with the owner.
    pub const BUF_VLAN_MISMATCH_WITH_OWNER: u32 = 0x05;
    /// VLAN mismatch with the user.
    pub const BUF_VLAN_MISMATCH_WITH_USER: u32 = 0x06;
    /// The GID's function was disabled (orderly).
    pub const DEV_GID_DISABLED: u32 = 0x07;
    /// The function using a buffer was disabled.
    pub const BUF_USING_ISM_DEV_DISABLED: u32 = 0x08;
}

/// IEQ header.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct IeqHeader {
    /// Newest entry index plus one.
    pub idx: U64,
    /// Registered queue length.
    pub ieq_len: U64,
    /// Entry length (32).
    pub entry_len: U64,
    /// Reserved.
    pub reserved: U64,
}

/// One event.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Event {
    /// [`EventType`] value.
    pub ty: U32,
    /// Event code.
    pub code: U32,
    /// Token or GID.
    pub tok: U64,
    /// Time stamp.
    pub time: U64,
    /// Extra information.
    pub info: U64,
}

const _: () = assert!(core::mem::size_of::<IeqHeader>() == ENTRY_LEN);
const _: () = assert!(core::mem::size_of::<Event>() == ENTRY_LEN);

/// Number of entries in a queue of `len` bytes.
pub const fn entries(len: usize) -> usize {
    len / ENTRY_LEN - 1
}

/// Byte offset of entry `k`.
pub const fn entry_offset(k: usize) -> usize {
    ENTRY_LEN * (k + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_event() {
        let e = Event {
            ty: (EventType::Software as u32).into(),
            code: 0x83.into(),
            tok: 0x0102_0304_0506_0708.into(),
            time: 9.into(),
            info: 0xAABB_CCDD_0000_0001.into(),
        };
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 2, 0, 0, 0, 0x83,
            1, 2, 3, 4, 5, 6, 7, 8,
            0, 0, 0, 0, 0, 0, 0, 9,
            0xAA, 0xBB, 0xCC, 0xDD, 0, 0, 0, 1,
        ];
        assert_eq!(e.as_bytes(), &bytes);
        assert_eq!(Event::read_from_bytes(&bytes).unwrap(), e);
    }

    #[test]
    fn golden_header_and_geometry() {
        let h = IeqHeader {
            idx: 15.into(),
            ieq_len: 512.into(),
            entry_len: 32.into(),
            reserved: 0.into(),
        };
        assert_eq!(&h.as_bytes()[..8], &[0, 0, 0, 0, 0, 0, 0, 15]);
        assert_eq!(&h.as_bytes()[8..16], &[0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(entries(LINUX_IEQ_LEN), 15);
        assert_eq!(entry_offset(0), 32);
        assert_eq!(entry_offset(14), 480);
        assert_eq!(EventType::from_raw(1), Some(EventType::Device));
        assert_eq!(EventType::from_raw(3), None);
    }
}
