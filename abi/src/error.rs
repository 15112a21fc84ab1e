//! Return codes of commands and error codes of moves.
//!
//! The real device's non-zero return codes are not public; Linux only distinguishes 0,
//! `0xFFFF` (`ISM_ERROR`: no response) and "anything else". These are this model's own: every
//! value is stable and documented, and none is `0xFFFF`, which stays reserved for "the
//! device did not answer".

use crate::table::code_table;

code_table! {
    /// Non-zero `ret` of a command response; its text is a short description.
    #[non_exhaustive]
    pub enum ReturnCode: u16, text = as_str {
        /// The `cmd` code is not one the device knows (or an extension not offered here).
        UnknownCommand = 0x0001 => "unknown command",
        /// `hdr.len` is not the command's request length, or exceeds the command area.
        BadLength = 0x0002 => "bad request length",
        /// An address (SBA, IEQ, DMB) is outside the caller's memory domain or misaligned.
        InvalidAddress = 0x0003 => "address outside the function's memory or misaligned",
        /// A length field (DMB length, IEQ length) is out of range.
        InvalidLength = 0x0004 => "length out of range",
        /// The SBA or IEQ is already registered.
        AlreadyRegistered = 0x0005 => "already registered",
        /// The SBA or IEQ is not registered.
        NotRegistered = 0x0006 => "not registered",
        /// The VLAN id is not 0..=4095 or the reserved 0x1FFF.
        InvalidVlan = 0x0007 => "invalid VLAN id",
        /// The function already holds 64 VLAN ids.
        VlanTableFull = 0x0008 => "VLAN table full",
        /// DEL_VLAN_ID of an id the function does not hold.
        VlanNotFound = 0x0009 => "VLAN id not held",
        /// The SBA index is not in 32..=1919.
        InvalidSbaIndex = 0x000A => "SBA index outside 32..=1919",
        /// The SBA index is already used by another DMB of this function.
        SbaIndexInUse = 0x000B => "SBA index in use",
        /// The device's DMB table is full (the host maps this to `ENOSPC`).
        DmbTableFull = 0x000C => "DMB table full",
        /// The token names no DMB the caller may act on (unknown, stale, forged, not owned).
        InvalidToken = 0x000D => "invalid DMB token",
        /// The remote GID is not reachable from this function (unknown, down, or VLAN rules).
        RemoteGidUnreachable = 0x000E => "remote GID unreachable",
        /// The target of SIGNAL_IEQ has no IEQ registered.
        RemoteNoEventQueue = 0x000F => "remote function has no event queue",
        /// ATTACH_DMB/DETACH_DMB: not offered, the caller is not the DMB's authorized writer,
        /// or it does not share the owner's memory domain.
        AttachNotPermitted = 0x0010 => "attach not permitted",
        /// DETACH_DMB of a DMB the caller has not attached.
        NotAttached = 0x0011 => "DMB not attached",
        /// The function is offline (its partition is down).
        FunctionOffline = 0x0012 => "function offline",
    }
}

impl core::fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (ret {:#06x})", self.as_str(), self.raw())
    }
}

impl core::error::Error for ReturnCode {}

code_table! {
    /// Why a store-block move was refused (the code a board reports for a refused store);
    /// its text is a short description. Nothing was written when a move fails.
    #[non_exhaustive]
    pub enum MoveError: u8, text = as_str {
        /// More than 4096 bytes in one store-block.
        TooLong = 1 => "store-block longer than 4096 bytes",
        /// The token names no live DMB (unknown, unregistered, stale or forged).
        InvalidToken = 2 => "invalid DMB token",
        /// The mover is not the DMB's authorized writer, or not in the DMB's VLAN.
        AccessDenied = 3 => "not the DMB's authorized writer",
        /// `offset + len` exceeds the DMB.
        OutOfRange = 4 => "offset and length exceed the DMB",
        /// The moving function is offline.
        FunctionOffline = 5 => "function offline",
        /// The board refused the memory access (the DMB's memory is gone).
        MemoryFault = 6 => "memory fault",
    }
}

impl core::fmt::Display for MoveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for MoveError {}

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

    #[test]
    fn move_errors_round_trip_through_their_codes() {
        for (i, m) in MoveError::ALL.iter().enumerate() {
            assert_eq!(m.raw() as usize, i + 1, "codes are numbered densely from 1");
            assert_eq!(MoveError::from_raw(m.raw()), Some(*m));
            assert!(!m.as_str().is_empty());
        }
        assert_eq!(MoveError::from_raw(0), None);
        assert_eq!(MoveError::from_raw(MoveError::ALL.len() as u8 + 1), None);
    }
}
