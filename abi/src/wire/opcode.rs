//! Command codes (the `cmd` field of the request header).
//!
//! Codes 0x01..=0x12 are exactly those Linux's ISM driver issues. ATTACH_DMB and DETACH_DMB
//! are this model's no-copy extension, in a range Linux never uses (0x20, 0x21), and are only
//! accepted when QUERY_INFO advertises them.

use crate::table::code_table;

code_table! {
    /// A known command code; its text is Linux's name of the command.
    ///
    /// Deliberately not `#[non_exhaustive]` (nor is [`crate::Request`]): a new command is a
    /// change every device and driver must handle, so it should break their exhaustive
    /// matches rather than fall into a wildcard arm.
    pub enum Opcode: u32, text = name {
        /// Register the status block area (SBA).
        RegSba = 0x01 => "REG_SBA",
        /// Register the interrupt event queue (IEQ).
        RegIeq = 0x02 => "REG_IEQ",
        /// Read the function's GID.
        ReadGid = 0x03 => "READ_GID",
        /// Add a VLAN id to the function (0x1FFF doubles as the ISMv2 probe).
        AddVlanId = 0x04 => "ADD_VLAN_ID",
        /// Remove a VLAN id from the function.
        DelVlanId = 0x05 => "DEL_VLAN_ID",
        /// Set "VLAN required".
        SetVlan = 0x06 => "SET_VLAN",
        /// Reset "VLAN required".
        ResetVlan = 0x07 => "RESET_VLAN",
        /// Query the function's information block.
        QueryInfo = 0x08 => "QUERY_INFO",
        /// Is a remote GID reachable?
        QueryRgid = 0x09 => "QUERY_RGID",
        /// Register a DMB.
        RegDmb = 0x0A => "REG_DMB",
        /// Unregister a DMB.
        UnregDmb = 0x0B => "UNREG_DMB",
        /// Send a software event to a remote function's IEQ.
        SignalIeq = 0x0E => "SIGNAL_IEQ",
        /// Unregister the SBA.
        UnregSba = 0x11 => "UNREG_SBA",
        /// Unregister the IEQ.
        UnregIeq = 0x12 => "UNREG_IEQ",
        /// Extension: map a peer's DMB (same memory domain only).
        AttachDmb = 0x20 => "ATTACH_DMB",
        /// Extension: undo an attach.
        DetachDmb = 0x21 => "DETACH_DMB",
    }
}

impl Opcode {
    /// The exact request length (header included) the command must carry in `hdr.len`.
    pub const fn request_len(self) -> usize {
        match self {
            Opcode::ReadGid
            | Opcode::SetVlan
            | Opcode::ResetVlan
            | Opcode::QueryInfo
            | Opcode::UnregSba
            | Opcode::UnregIeq => 8,
            Opcode::RegSba
            | Opcode::AddVlanId
            | Opcode::DelVlanId
            | Opcode::UnregDmb
            | Opcode::AttachDmb
            | Opcode::DetachDmb => 16,
            Opcode::RegIeq | Opcode::QueryRgid => 24,
            Opcode::SignalIeq => 32,
            Opcode::RegDmb => 40,
        }
    }

    /// The response length (header included) on success.
    pub const fn response_len(self) -> usize {
        match self {
            Opcode::ReadGid | Opcode::RegDmb | Opcode::UnregDmb => 16,
            Opcode::AttachDmb => 32,
            Opcode::QueryInfo => 200,
            _ => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_linux() {
        let expected = [
            (Opcode::RegSba, 0x01),
            (Opcode::RegIeq, 0x02),
            (Opcode::ReadGid, 0x03),
            (Opcode::AddVlanId, 0x04),
            (Opcode::DelVlanId, 0x05),
            (Opcode::SetVlan, 0x06),
            (Opcode::ResetVlan, 0x07),
            (Opcode::QueryInfo, 0x08),
            (Opcode::QueryRgid, 0x09),
            (Opcode::RegDmb, 0x0A),
            (Opcode::UnregDmb, 0x0B),
            (Opcode::SignalIeq, 0x0E),
            (Opcode::UnregSba, 0x11),
            (Opcode::UnregIeq, 0x12),
        ];
        for (op, raw) in expected {
            assert_eq!(op as u32, raw);
            assert_eq!(Opcode::from_raw(raw), Some(op));
        }
        for unused in [0x00, 0x0C, 0x0D, 0x0F, 0x10, 0x13, 0x1F, 0x22, u32::MAX] {
            assert_eq!(Opcode::from_raw(unused), None);
        }
    }

    #[test]
    fn lengths_are_multiples_of_eight() {
        for op in Opcode::ALL {
            assert_eq!(op.request_len() % 8, 0, "{}", op.name());
            assert_eq!(op.response_len() % 8, 0, "{}", op.name());
            assert!(op.response_len() <= crate::regs::COMMAND_AREA_SIZE);
        }
    }
}
