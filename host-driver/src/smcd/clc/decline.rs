//! DECLINE (type 4): refuse SMC, with a reason; either side, at any point (`net/smc/smc_clc.h`
//! `struct smc_clc_msg_decline`, sent by `net/smc/smc_clc.c` `smc_clc_send_decline`).
//!
//! | off | size | field                                                            |
//! |-----|------|------------------------------------------------------------------|
//! | 0   | 8    | header: "SMCR", type 4, version 1 or 2, `typev2` bit 1 = sync error |
//! | 8   | 8    | `id_for_peer` (SMC-R system id; not filled for SMC-D link groups) |
//! | 16  | 4    | `peer_diagnosis` BE: the [`DeclineReason`]                        |
//! | 20  | 1    | bits 7–4 `os_type` (v2: 2 = Linux; v1: 0), bits 3–0 reserved      |
//! | 21  | 3    | reserved                                                         |
//! | v1: 24 | 4 | trailer → 28 bytes                                             |
//! | v2: 24 | 16 | `peer_diagnosis_v2[4]`, BE u32 each                           |
//! | v2: 40 | 4  | trailer → 44 bytes                                            |
//!
//! Lengths are checked exactly (28 for v1, 44 for v2). The header's `typev1` and `typev2`
//! bit 0 are ignored on parse and written as zero.

use alloc::vec::Vec;

use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::{
    ClcHeader, ClcType, Eyecatcher, HeaderWire, FIRST_CONTACT_MASK, SMC_V1, SMC_V2,
};
use super::{check_frame, take, ClcError, DeclineReason};

/// Length of a v1 decline.
pub const LEN_V1: usize = 28;
/// Length of a v2 decline.
pub const LEN_V2: usize = 44;

/// Bytes 0..24, common to v1 and v2.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct DeclineWire {
    /// Header.
    pub hdr: HeaderWire,
    /// SMC-R system id.
    pub id_for_peer: [u8; 8],
    /// Reason code.
    pub peer_diagnosis: U32,
    /// Bits 7–4: OS type.
    pub os_type: u8,
    /// Reserved.
    pub reserved2: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<DeclineWire>() == 24);
const _: () = assert!(core::mem::offset_of!(DeclineWire, peer_diagnosis) == 16);

/// A DECLINE. The version is 2 iff `peer_diagnosis_v2` is `Some`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decline {
    /// Out of sync (`typev2` bit 1; Linux sets it with [`DeclineReason::SYNCERR`]).
    pub sync_error: bool,
    /// SMC-R system id of the sender (zeros for SMC-D).
    pub id_for_peer: [u8; 8],
    /// The reason.
    pub peer_diagnosis: DeclineReason,
    /// OS type (4 bits; v2: 2 = Linux, v1: 0).
    pub os_type: u8,
    /// The v2 extra diagnosis words (Linux sends zeros).
    pub peer_diagnosis_v2: Option<[u32; 4]>,
}

impl Decline {
    /// A decline as Linux sends it: `version` 1 (os_type 0) or 2 (os_type Linux), the sync
    /// flag iff the reason is [`DeclineReason::SYNCERR`], zero system id.
    pub fn linux(reason: DeclineReason, version: u8) -> Self {
        let v2 = version >= SMC_V2;
        Self {
            sync_error: reason == DeclineReason::SYNCERR,
            id_for_peer: [0; 8],
            peer_diagnosis: reason,
            os_type: if v2 {
                super::accept_confirm::OS_TYPE_LINUX
            } else {
                0
            },
            peer_diagnosis_v2: v2.then_some([0; 4]),
        }
    }

    /// The header version this value is sent with.
    pub const fn version(&self) -> u8 {
        if self.peer_diagnosis_v2.is_some() {
            SMC_V2
        } else {
            SMC_V1
        }
    }

    /// Whether this value round-trips through `emit`/`parse`.
    pub fn check(&self) -> Result<(), ClcError> {
        if self.os_type > 0x0F {
            return Err(ClcError::Malformed("os_type"));
        }
        Ok(())
    }

    /// Writes the message.
    pub fn emit(&self) -> Vec<u8> {
        let len = if self.peer_diagnosis_v2.is_some() {
            LEN_V2
        } else {
            LEN_V1
        };
        let hdr = ClcHeader {
            eyecatcher: Eyecatcher::Smcr,
            msg_type: ClcType::Decline,
            length: len as u16,
            version: self.version(),
            typev2: if self.sync_error {
                FIRST_CONTACT_MASK
            } else {
                0
            },
            typev1: 0,
        };
        let w = DeclineWire {
            hdr: zerocopy::transmute!(hdr.emit()),
            id_for_peer: self.id_for_peer,
            peer_diagnosis: U32::new(self.peer_diagnosis.0),
            os_type: (self.os_type & 0x0F) << 4,
            reserved2: [0; 3],
        };
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(w.as_bytes());
        if let Some(d) = &self.peer_diagnosis_v2 {
            for v in d {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out.extend_from_slice(&Eyecatcher::Smcr.bytes());
        out
    }

    /// Parses a whole DECLINE (`bytes.len()` must equal the header's length).
    pub fn parse(bytes: &[u8]) -> Result<Self, ClcError> {
        let hdr = check_frame(bytes, &[ClcType::Decline])?;
        let len = hdr.length;
        let expected = if hdr.version == SMC_V1 {
            LEN_V1
        } else {
            LEN_V2
        };
        if usize::from(len) != expected {
            return Err(ClcError::BadLength(len));
        }
        let w: &DeclineWire = take(bytes, 0, len)?;
        let peer_diagnosis_v2 = if hdr.version == SMC_V1 {
            None
        } else {
            let d: &[U32; 4] = take(bytes, 24, len)?;
            Some([d[0].get(), d[1].get(), d[2].get(), d[3].get()])
        };
        Ok(Self {
            sync_error: hdr.first_contact(),
            id_for_peer: w.id_for_peer,
            peer_diagnosis: DeclineReason(w.peer_diagnosis.get()),
            os_type: w.os_type >> 4,
            peer_diagnosis_v2,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_v1() {
        let d = Decline::linux(DeclineReason::NOSMCDDEV, 1);
        let e = [
            0xE2, 0xD4, 0xC3, 0xD9, 0x04, 0x00, 28, 0x10, //
            0, 0, 0, 0, 0, 0, 0, 0, //
            0x03, 0x03, 0x00, 0x01, //
            0x00, 0, 0, 0, //
            0xE2, 0xD4, 0xC3, 0xD9,
        ];
        assert_eq!(d.emit(), e);
        assert_eq!(Decline::parse(&e), Ok(d));
    }

    #[test]
    fn golden_v2_syncerr() {
        let d = Decline {
            id_for_peer: [1, 2, 3, 4, 5, 6, 7, 8],
            peer_diagnosis_v2: Some([0, 0, 0, 0x0A0B_0C0D]),
            ..Decline::linux(DeclineReason::SYNCERR, 2)
        };
        assert!(d.sync_error);
        let e = [
            0xE2, 0xD4, 0xC3, 0xD9, 0x04, 0x00, 44, 0x28, //
            1, 2, 3, 4, 5, 6, 7, 8, //
            0x04, 0x00, 0x00, 0x00, //
            0x20, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0x0B, 0x0C, 0x0D, //
            0xE2, 0xD4, 0xC3, 0xD9,
        ];
        assert_eq!(d.emit(), e);
        assert_eq!(Decline::parse(&e), Ok(d));
    }

    #[test]
    fn rejects() {
        let d = Decline::linux(DeclineReason::MEM, 1);
        let mut e = d.emit();
        e[7] = 0x20; // v2 header on a v1 body
        assert_eq!(Decline::parse(&e), Err(ClcError::BadLength(28)));
        // Either eyecatcher is accepted, on header and trailer independently.
        let mut e = d.emit();
        e[3] = 0xC4;
        assert_eq!(Decline::parse(&e), Ok(d));
        e[27] = 0xC5;
        assert_eq!(Decline::parse(&e), Err(ClcError::BadTrailer));
    }

    #[test]
    fn check_refuses_an_os_type_wider_than_its_nibble() {
        let d = |os_type| Decline {
            os_type,
            ..Decline::linux(DeclineReason::MEM, 2)
        };
        assert_eq!(d(0x0F).check(), Ok(()));
        assert_eq!(d(0x10).check(), Err(ClcError::Malformed("os_type")));
        // What check refuses would not round-trip: emit keeps the low nibble only.
        assert_eq!(Decline::parse(&d(0x12).emit()), Ok(d(0x02)));
    }

    pub(crate) fn arb_decline() -> impl Strategy<Value = Decline> {
        (
            any::<(bool, [u8; 8], u32)>(),
            0u8..16,
            proptest::option::of(any::<[u32; 4]>()),
        )
            .prop_map(|((sync_error, id, reason), os_type, v2)| Decline {
                sync_error,
                id_for_peer: id,
                peer_diagnosis: DeclineReason(reason),
                os_type,
                peer_diagnosis_v2: v2,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(d in arb_decline()) {
            prop_assert_eq!(d.check(), Ok(()));
            prop_assert_eq!(Decline::parse(&d.emit()), Ok(d));
        }

        #[test]
        fn truncations_never_panic(d in arb_decline(), cut in any::<prop::sample::Index>()) {
            let bytes = d.emit();
            let n = cut.index(bytes.len());
            prop_assert!(Decline::parse(&bytes[..n]).is_err());
            let mut b = bytes[..n].to_vec();
            if b.len() >= 8 {
                b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
                let _ = Decline::parse(&b);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Decline::parse(&b);
        }
    }
}
