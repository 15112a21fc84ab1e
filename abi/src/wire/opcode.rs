//! Command codes (the `cmd` field of the request header).
//!
//! Codes 0x01..=0x12 are exactly those Linux's ISM driver issues. ATTACH_DMB and DETACH_DMB
//! are this model's no-copy extension, in a range Linux never uses (0x20, 0x21), and are only
//! accepted when QUERY_INFO advertises them.

/// A known command code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Opcode {
    /// Register the status block area (SBA).
    RegSba = 0x01,
    /// Register the interrupt event queue (IEQ).
    RegIeq = 0x02,
    /// Read the function's GID.
    ReadGid = 0x03,
    /// Add a VLAN id to the function (0x1FFF doubles as the ISMv2 probe).
    AddVlanId = 0x04,
    /// Remove a VLAN id from the function.
    DelVlanId = 0x05,
    /// Set "VLAN required".
    SetVlan = 0x06,
    /// Reset "VLAN required".
    ResetVlan = 0x07,
    /// Query the function's information block.
    QueryInfo = 0x08,
    /// Is a remote GID reachable?
    QueryRgid = 0x09,
    /// Register a DMB.
    RegDmb = 0x0A,
    /// Unregister a DMB.
    UnregDmb = 0x0B,
    /// Send a software event to a remote function's IEQ.
    SignalIeq = 0x0E,
    /// Unregister the SBA.
    UnregSba = 0x11,
    /// Unregister the IEQ.
    UnregIeq = 0x12,
    /// Extension: map a peer's DMB (same memory domain only).
    AttachDmb = 0x20,
    /// Extension: undo an attach.
    DetachDmb = 0x21,
}

impl Opcode {
    /// Every code, in numeric order.
    pub const ALL: [Opcode; 16] = [
        Opcode::RegSba,
        Opcode::RegIeq,
        Opcode::ReadGid,
        Opcode::AddVlanId,
        Opcode::DelVlanId,
        Opcode::SetVlan,
        Opcode::ResetVlan,
        Opcode::QueryInfo,
        Opcode::QueryRgid,
        Opcode::RegDmb,
        Opcode::UnregDmb,
        Opcode::SignalIeq,
        Opcode::UnregSba,
        Opcode::UnregIeq,
        Opcode::AttachDmb,
        Opcode::DetachDmb,
    ];

    /// The code for a raw `cmd` value, or `None` if the device does not know it.
    pub fn from_raw(raw: u32) -> Option<Opcode> {
        Self::ALL.into_iter().find(|op| *op as u32 == raw)
    }

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

    /// Linux's name for the command.
    pub const fn name(self) -> &'static str {
        match self {
            Opcode::RegSba => "REG_SBA",
            Opcode::RegIeq => "REG_IEQ",
            Opcode::ReadGid => "READ_GID",
            Opcode::AddVlanId => "ADD_VLAN_ID",
            Opcode::DelVlanId => "DEL_VLAN_ID",
            Opcode::SetVlan => "SET_VLAN",
            Opcode::ResetVlan => "RESET_VLAN",
            Opcode::QueryInfo => "QUERY_INFO",
            Opcode::QueryRgid => "QUERY_RGID",
            Opcode::RegDmb => "REG_DMB",
            Opcode::UnregDmb => "UNREG_DMB",
            Opcode::SignalIeq => "SIGNAL_IEQ",
            Opcode::UnregSba => "UNREG_SBA",
            Opcode::UnregIeq => "UNREG_IEQ",
            Opcode::AttachDmb => "ATTACH_DMB",
            Opcode::DetachDmb => "DETACH_DMB",
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
