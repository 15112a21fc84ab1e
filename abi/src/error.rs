//! Return codes of commands and error codes of moves.
//!
//! The real device's non-zero return codes are not public; Linux only distinguishes 0,
//! `0xFFFF` (`ISM_ERROR`: no response) and "anything else". These are this model's own: every
//! value is stable and documented, and none is `0xFFFF`, which stays reserved for "the
//! device did not answer".

/// Non-zero `ret` of a command response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ReturnCode {
    /// The `cmd` code is not one the device knows (or an extension not offered here).
    UnknownCommand = 0x0001,
    /// `hdr.len` is not the command's request length, or exceeds the command area.
    BadLength = 0x0002,
    /// An address (SBA, IEQ, DMB) is outside the caller's memory domain or misaligned.
    InvalidAddress = 0x0003,
    /// A length field (DMB length, IEQ length) is out of range.
    InvalidLength = 0x0004,
    /// The SBA or IEQ is already registered.
    AlreadyRegistered = 0x0005,
    /// The SBA or IEQ is not registered.
    NotRegistered = 0x0006,
    /// The VLAN id is not 0..=4095 or the reserved 0x1FFF.
    InvalidVlan = 0x0007,
    /// The function already holds 64 VLAN ids.
    VlanTableFull = 0x0008,
    /// DEL_VLAN_ID of an id the function does not hold.
    VlanNotFound = 0x0009,
    /// The SBA index is not in 32..=1919.
    InvalidSbaIndex = 0x000A,
    /// The SBA index is already used by another DMB of this function.
    SbaIndexInUse = 0x000B,
    /// The device's DMB table is full (the host maps this to `ENOSPC`).
    DmbTableFull = 0x000C,
    /// The token names no DMB the caller may act on (unknown, stale, forged, not owned).
    InvalidToken = 0x000D,
    /// The remote GID is not reachable from this function (unknown, down, or VLAN rules).
    RemoteGidUnreachable = 0x000E,
    /// The target of SIGNAL_IEQ has no IEQ registered.
    RemoteNoEventQueue = 0x000F,
    /// ATTACH_DMB/DETACH_DMB: not offered, the caller is not the DMB's authorized writer,
    /// or it does not share the owner's memory domain.
    AttachNotPermitted = 0x0010,
    /// DETACH_DMB of a DMB the caller has not attached.
    NotAttached = 0x0011,
    /// The function is offline (its partition is down).
    FunctionOffline = 0x0012,
}

impl ReturnCode {
    /// Every code.
    pub const ALL: [ReturnCode; 18] = [
        ReturnCode::UnknownCommand,
        ReturnCode::BadLength,
        ReturnCode::InvalidAddress,
        ReturnCode::InvalidLength,
        ReturnCode::AlreadyRegistered,
        ReturnCode::NotRegistered,
        ReturnCode::InvalidVlan,
        ReturnCode::VlanTableFull,
        ReturnCode::VlanNotFound,
        ReturnCode::InvalidSbaIndex,
        ReturnCode::SbaIndexInUse,
        ReturnCode::DmbTableFull,
        ReturnCode::InvalidToken,
        ReturnCode::RemoteGidUnreachable,
        ReturnCode::RemoteNoEventQueue,
        ReturnCode::AttachNotPermitted,
        ReturnCode::NotAttached,
        ReturnCode::FunctionOffline,
    ];

    /// The raw value.
    pub const fn raw(self) -> u16 {
        self as u16
    }

    /// The code for a raw `ret`, or `None` for 0, `0xFFFF` and unknown values.
    pub fn from_raw(raw: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.raw() == raw)
    }

    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReturnCode::UnknownCommand => "unknown command",
            ReturnCode::BadLength => "bad request length",
            ReturnCode::InvalidAddress => "address outside the function's memory or misaligned",
            ReturnCode::InvalidLength => "length out of range",
            ReturnCode::AlreadyRegistered => "already registered",
            ReturnCode::NotRegistered => "not registered",
            ReturnCode::InvalidVlan => "invalid VLAN id",
            ReturnCode::VlanTableFull => "VLAN table full",
            ReturnCode::VlanNotFound => "VLAN id not held",
            ReturnCode::InvalidSbaIndex => "SBA index outside 32..=1919",
            ReturnCode::SbaIndexInUse => "SBA index in use",
            ReturnCode::DmbTableFull => "DMB table full",
            ReturnCode::InvalidToken => "invalid DMB token",
            ReturnCode::RemoteGidUnreachable => "remote GID unreachable",
            ReturnCode::RemoteNoEventQueue => "remote function has no event queue",
            ReturnCode::AttachNotPermitted => "attach not permitted",
            ReturnCode::NotAttached => "DMB not attached",
            ReturnCode::FunctionOffline => "function offline",
        }
    }
}

impl core::fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (ret {:#06x})", self.as_str(), self.raw())
    }
}

/// Why a store-block move was refused. Nothing was written when a move fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MoveError {
    /// More than 4096 bytes in one store-block.
    TooLong = 1,
    /// The token names no live DMB (unknown, unregistered, stale or forged).
    InvalidToken = 2,
    /// The mover is not the DMB's authorized writer, or not in the DMB's VLAN.
    AccessDenied = 3,
    /// `offset + len` exceeds the DMB.
    OutOfRange = 4,
    /// The moving function is offline.
    FunctionOffline = 5,
    /// The board refused the memory access (the DMB's memory is gone).
    MemoryFault = 6,
}

impl MoveError {
    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            MoveError::TooLong => "store-block longer than 4096 bytes",
            MoveError::InvalidToken => "invalid DMB token",
            MoveError::AccessDenied => "not the DMB's authorized writer",
            MoveError::OutOfRange => "offset and length exceed the DMB",
            MoveError::FunctionOffline => "function offline",
            MoveError::MemoryFault => "memory fault",
        }
    }
}

impl core::fmt::Display for MoveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_unique_and_never_ism_error() {
        for (i, c) in ReturnCode::ALL.iter().enumerate() {
            assert_eq!(c.raw() as usize, i + 1, "codes are numbered densely from 1");
            assert_eq!(ReturnCode::from_raw(c.raw()), Some(*c));
            assert_ne!(c.raw(), 0xFFFF);
        }
        assert_eq!(ReturnCode::from_raw(0), None);
        assert_eq!(ReturnCode::from_raw(0xFFFF), None);
    }
}
