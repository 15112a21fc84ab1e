//! The common 8-byte CLC header (`struct smc_clc_msg_hdr`, packed) and the 4-byte trailer.
//!
//! | off | size | field                                                          |
//! |-----|------|----------------------------------------------------------------|
//! | 0   | 4    | eyecatcher: "SMCR" `E2 D4 C3 D9` or "SMCD" `E2 D4 C3 C4`        |
//! | 4   | 1    | type: 1 proposal, 2 accept, 3 confirm, 4 decline               |
//! | 5   | 2    | length (BE): whole message, header and trailer included         |
//! | 7   | 1    | bits 7–4 version, bits 3–2 `typev2`, bits 1–0 `typev1`          |
//!
//! `typev1`/`typev2` are the SMC types offered for version 1 and version 2 ([`SmcType`]) in a
//! proposal. In accept/confirm `typev1` is the chosen type and bit 1 of `typev2` is the
//! first-contact flag (byte-7 value `0x08`); in a decline the same bit means "sync error".
//! (In the v1 header these bits were `flag` and a reserved bit.)
//!
//! The trailer is the eyecatcher again, in the last 4 bytes (`length − 4`).

use zerocopy::byteorder::big_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{ClcError, MAX_MESSAGE_LEN};

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// Length of the trailer.
pub const TRAILER_LEN: usize = 4;

/// "SMCR" in EBCDIC (`SMC_EYECATCHER`).
pub const EYECATCHER_SMCR: [u8; 4] = [0xE2, 0xD4, 0xC3, 0xD9];
/// "SMCD" in EBCDIC (`SMCD_EYECATCHER`).
pub const EYECATCHER_SMCD: [u8; 4] = [0xE2, 0xD4, 0xC3, 0xC4];

/// SMC version 1 (`SMC_V1`).
pub const SMC_V1: u8 = 1;
/// SMC version 2 (`SMC_V2`).
pub const SMC_V2: u8 = 2;
/// SMCv2 release 0 (`SMC_RELEASE_0`).
pub const SMC_RELEASE_0: u8 = 0;
/// SMCv2 release 1, "SMCv2.1" (`SMC_RELEASE_1`); what Linux sends.
pub const SMC_RELEASE_1: u8 = 1;

/// The first-contact flag in the 2-bit `typev2` field (`SMC_FIRST_CONTACT_MASK`).
pub const FIRST_CONTACT_MASK: u8 = 0b10;

/// One of the two eyecatchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Eyecatcher {
    /// "SMCR": proposals, declines, SMC-R accept/confirm.
    Smcr,
    /// "SMCD": SMC-D accept/confirm.
    Smcd,
}

impl Eyecatcher {
    /// The four EBCDIC bytes.
    pub const fn bytes(self) -> [u8; 4] {
        match self {
            Self::Smcr => EYECATCHER_SMCR,
            Self::Smcd => EYECATCHER_SMCD,
        }
    }

    /// Recognizes an eyecatcher.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b == EYECATCHER_SMCR {
            Some(Self::Smcr)
        } else if b == EYECATCHER_SMCD {
            Some(Self::Smcd)
        } else {
            None
        }
    }
}

/// CLC message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ClcType {
    /// `SMC_CLC_PROPOSAL`.
    Proposal = 1,
    /// `SMC_CLC_ACCEPT`.
    Accept = 2,
    /// `SMC_CLC_CONFIRM`.
    Confirm = 3,
    /// `SMC_CLC_DECLINE`.
    Decline = 4,
}

impl ClcType {
    /// Smallest legal length of a message of this type: a v1 proposal without IPv6 prefixes
    /// (52), an SMC-D v1 accept/confirm (48), a v1 decline (28).
    pub const fn min_len(self) -> usize {
        match self {
            Self::Proposal => 52,
            Self::Accept | Self::Confirm => 48,
            Self::Decline => 28,
        }
    }
}

impl TryFrom<u8> for ClcType {
    type Error = ClcError;
    fn try_from(v: u8) -> Result<Self, ClcError> {
        match v {
            1 => Ok(Self::Proposal),
            2 => Ok(Self::Accept),
            3 => Ok(Self::Confirm),
            4 => Ok(Self::Decline),
            other => Err(ClcError::BadType(other)),
        }
    }
}

/// A 2-bit SMC type (`SMC_TYPE_*`). Every 2-bit value is one of these, so conversion from
/// bits is total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum SmcType {
    /// SMC-R only (`SMC_TYPE_R`).
    R = 0,
    /// SMC-D only (`SMC_TYPE_D`).
    D = 1,
    /// Neither (`SMC_TYPE_N`).
    #[default]
    N = 2,
    /// Both (`SMC_TYPE_B`).
    B = 3,
}

impl SmcType {
    /// The type in the low two bits of `bits` (higher bits ignored).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::R,
            1 => Self::D,
            2 => Self::N,
            _ => Self::B,
        }
    }

    /// The 2-bit value.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// SMC-D is offered or chosen (D or B; `smcd_indicated`).
    pub const fn smcd_indicated(self) -> bool {
        matches!(self, Self::D | Self::B)
    }

    /// SMC-R is offered or chosen (R or B; `smcr_indicated`).
    pub const fn smcr_indicated(self) -> bool {
        matches!(self, Self::R | Self::B)
    }
}

/// The header as bytes (a view; never invalid as such).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct HeaderWire {
    /// Eyecatcher.
    pub eyecatcher: [u8; 4],
    /// Message type.
    pub msg_type: u8,
    /// Total length, BE.
    pub length: U16,
    /// Version (bits 7–4), `typev2` (3–2), `typev1` (1–0).
    pub version_types: u8,
}

const _: () = assert!(core::mem::size_of::<HeaderWire>() == HEADER_LEN);

/// A validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClcHeader {
    /// Which eyecatcher the header carries.
    pub eyecatcher: Eyecatcher,
    /// Message type.
    pub msg_type: ClcType,
    /// Total message length.
    pub length: u16,
    /// Version (1 or 2).
    pub version: u8,
    /// The raw 2-bit `typev2` field (see [`Self::smc_type_v2`], [`Self::first_contact`]).
    pub typev2: u8,
    /// The raw 2-bit `typev1` field (see [`Self::smc_type_v1`]).
    pub typev1: u8,
}

impl ClcHeader {
    /// Parses and validates the first 8 bytes of `bytes`: eyecatcher, type, version 1..=2, and
    /// `type.min_len() <= length <= MAX_MESSAGE_LEN`. Does not look past the header.
    pub fn parse(bytes: &[u8]) -> Result<Self, ClcError> {
        let (w, _) = HeaderWire::ref_from_prefix(bytes).map_err(|_| ClcError::Truncated)?;
        let eyecatcher = Eyecatcher::from_bytes(&w.eyecatcher).ok_or(ClcError::BadEyecatcher)?;
        let msg_type = ClcType::try_from(w.msg_type)?;
        let version = w.version_types >> 4;
        // `net/smc/smc_clc.c` `smc_clc_wait_msg` refuses only versions below 1; every
        // later version is read as version 2 (`smc_listen_v2_check`: "> SMC_V1").
        if version < SMC_V1 {
            return Err(ClcError::BadVersion(version));
        }
        let length = w.length.get();
        let l = usize::from(length);
        if l < msg_type.min_len() || l > MAX_MESSAGE_LEN {
            return Err(ClcError::BadLength(length));
        }
        Ok(Self {
            eyecatcher,
            msg_type,
            length,
            version,
            typev2: (w.version_types >> 2) & 0b11,
            typev1: w.version_types & 0b11,
        })
    }

    /// The 8 header bytes. Fields are masked to their widths (version 4 bits, types 2 bits).
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let w = HeaderWire {
            eyecatcher: self.eyecatcher.bytes(),
            msg_type: self.msg_type as u8,
            length: U16::new(self.length),
            version_types: (self.version & 0x0F) << 4
                | (self.typev2 & 0b11) << 2
                | (self.typev1 & 0b11),
        };
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(w.as_bytes());
        out
    }

    /// `typev1` as an SMC type.
    pub const fn smc_type_v1(&self) -> SmcType {
        SmcType::from_bits(self.typev1)
    }

    /// `typev2` as an SMC type (proposals).
    pub const fn smc_type_v2(&self) -> SmcType {
        SmcType::from_bits(self.typev2)
    }

    /// The first-contact flag (accept/confirm), alias "sync error" (decline).
    pub const fn first_contact(&self) -> bool {
        self.typev2 & FIRST_CONTACT_MASK != 0
    }
}

/// Checks that the last 4 bytes of a message are an eyecatcher (either one).
pub fn check_trailer(msg: &[u8]) -> Result<Eyecatcher, ClcError> {
    let start = msg
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(ClcError::Truncated)?;
    Eyecatcher::from_bytes(&msg[start..]).ok_or(ClcError::BadTrailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let h = ClcHeader {
            eyecatcher: Eyecatcher::Smcd,
            msg_type: ClcType::Accept,
            length: 114,
            version: 2,
            typev2: FIRST_CONTACT_MASK,
            typev1: SmcType::D.bits(),
        };
        let bytes = [0xE2, 0xD4, 0xC3, 0xC4, 0x02, 0x00, 0x72, 0x29];
        assert_eq!(h.emit(), bytes);
        assert_eq!(ClcHeader::parse(&bytes), Ok(h));
        assert!(h.first_contact());
        assert_eq!(h.smc_type_v1(), SmcType::D);
    }

    #[test]
    fn types() {
        for b in 0..4 {
            assert_eq!(SmcType::from_bits(b).bits(), b);
        }
        assert!(SmcType::B.smcd_indicated() && SmcType::B.smcr_indicated());
        assert!(!SmcType::N.smcd_indicated() && !SmcType::N.smcr_indicated());
        assert_eq!(ClcType::try_from(0), Err(ClcError::BadType(0)));
        assert_eq!(ClcType::try_from(3), Ok(ClcType::Confirm));
    }

    #[test]
    fn trailer() {
        assert_eq!(
            check_trailer(&[1, 0xE2, 0xD4, 0xC3, 0xC4]),
            Ok(Eyecatcher::Smcd)
        );
        assert_eq!(
            check_trailer(&[0xE2, 0xD4, 0xC3, 0xD9]),
            Ok(Eyecatcher::Smcr)
        );
        assert_eq!(check_trailer(&[0xE2, 0xD4, 0xC3]), Err(ClcError::Truncated));
        assert_eq!(
            check_trailer(&[0xE2, 0xD4, 0xC3, 0]),
            Err(ClcError::BadTrailer)
        );
    }
}
