//! SMC-D ACCEPT (type 2) and CONFIRM (type 3); both have the same layout (`net/smc/smc_clc.h`
//! `struct smc_clc_msg_accept_confirm`).
//!
//! | off | size | field                                                                  |
//! |-----|------|------------------------------------------------------------------------|
//! | 0   | 8    | header: "SMCD", type 2/3, version 1 or 2, `typev1` = D, `typev2` bit 1 = first
//! contact |
//! | 8   | 8    | `d0.gid` BE: sender's ISM GID (64-bit part)                            |
//! | 16  | 8    | `d0.token` BE: sender's DMB token                                      |
//! | 24  | 1    | `d0.dmbe_idx` (Linux: 0)                                               |
//! | 25  | 1    | bits 7–4 `dmbe_size` (compressed, 2^(c+14) bytes), bits 3–0 reserved   |
//! | 26  | 2    | reserved                                                               |
//! | 28  | 4    | `d0.linkid` BE: sender's link-group id                                 |
//! | v1: 32 | 12 | reserved                                                            |
//! | v1: 44 | 4  | trailer "SMCD" → 48 bytes                                           |
//! | v2: 32 | 2  | `d1.chid` BE: CHID of the chosen device                             |
//! | v2: 34 | 32 | `d1.eid`: negotiated EID                                            |
//! | v2: 66 | 8  | `d1.gid_ext` BE: GID extension (Emulated-ISM), else 0               |
//! | v2: 74 | 36/52 | first-contact extension (iff first contact)                      |
//! | v2: end−4 | 4 | trailer "SMCD" → 78, 114 or 130 bytes                          |
//!
//! First-contact extension (FCE), offsets from 74: +0 bit 7 `v2_direct` (SMC-R), +1 bits 7–4
//! `os_type` (1 z/OS, 2 Linux, 3 AIX) and bits 3–0 release, +2 `reserved[2]`, +4 `hostname[32]`
//! (ASCII, blank padded) = 36 bytes; the v2.x form (release ≥ 1) adds +36 `max_conns`, +37
//! `max_links` (SMC-R; reserved for SMC-D), +38 `feature_mask` BE, +40 `vendor_exp_options`
//! BE u32, +44 `reserved[8]` = 52 bytes.
//!
//! Length checks as Linux's `net/smc/smc_clc.c` `smc_clc_msg_acc_conf_valid`: v1 exactly 48;
//! v2 at least 78, parts read where the layout puts them and any excess ignored; with the
//! first-contact flag the FCE is read from offset 74, parts beyond the message reading as
//! zeros (Linux reads them from its zeroed buffer). `typev1` must be D
//! ([`ClcError::NotSmcd`] otherwise).

use alloc::vec::Vec;

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::{
    ClcHeader, ClcType, Eyecatcher, HeaderWire, SmcType, FIRST_CONTACT_MASK, SMC_V1, SMC_V2,
    TRAILER_LEN,
};
use super::{check_frame, take, ClcError, Eid};

/// Length of an SMC-D v1 accept/confirm (`SMCD_CLC_ACCEPT_CONFIRM_LEN`).
pub const LEN_V1: usize = 48;
/// Length of an SMC-D v2 accept/confirm without FCE (`SMCD_CLC_ACCEPT_CONFIRM_LEN_V2`).
pub const LEN_V2: usize = 78;
/// Length of the first-contact extension, base form.
pub const FCE_LEN: usize = 36;
/// Length of the first-contact extension, v2.x form (release ≥ 1).
pub const FCE_V2X_LEN: usize = 52;
/// Length of the hostname field (`SMC_MAX_HOSTNAME_LEN`).
pub const HOSTNAME_LEN: usize = 32;
/// `os_type` z/OS.
pub const OS_TYPE_ZOS: u8 = 1;
/// `os_type` Linux (`SMC_CLC_OS_LINUX`).
pub const OS_TYPE_LINUX: u8 = 2;
/// `os_type` AIX.
pub const OS_TYPE_AIX: u8 = 3;

/// Bytes 0..32: header and the `d0` part common to v1 and v2.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct D0Wire {
    /// Header.
    pub hdr: HeaderWire,
    /// Sender's GID.
    pub gid: U64,
    /// Sender's DMB token.
    pub token: U64,
    /// DMBE index.
    pub dmbe_idx: u8,
    /// Bits 7–4: compressed DMBE size.
    pub dmbe_size: u8,
    /// Reserved.
    pub reserved4: [u8; 2],
    /// Link-group id.
    pub linkid: U32,
}

/// Bytes 32..74 of a v2 message.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct D1Wire {
    /// CHID of the chosen device.
    pub chid: U16,
    /// Negotiated EID.
    pub eid: Eid,
    /// GID extension.
    pub gid_ext: U64,
}

/// The first-contact extension, base form.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct FceWire {
    /// Bit 7: `v2_direct`.
    pub v2_direct: u8,
    /// Bits 7–4 `os_type`, bits 3–0 release.
    pub os_release: u8,
    /// Reserved.
    pub reserved: [u8; 2],
    /// Host name, blank padded.
    pub hostname: [u8; HOSTNAME_LEN],
}

/// The 16 bytes the v2.x form adds.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct FceV2xWire {
    /// SMC-R max connections.
    pub max_conns: u8,
    /// SMC-R max links.
    pub max_links: u8,
    /// Supplemental features.
    pub feature_mask: U16,
    /// Vendor options.
    pub vendor_exp_options: U32,
    /// Reserved.
    pub reserved: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<D0Wire>() == 32);
const _: () = assert!(core::mem::offset_of!(D0Wire, linkid) == 28);
const _: () = assert!(32 + core::mem::size_of::<D1Wire>() + TRAILER_LEN == LEN_V2);
const _: () = assert!(core::mem::size_of::<FceWire>() == FCE_LEN);
const _: () = assert!(FCE_LEN + core::mem::size_of::<FceV2xWire>() == FCE_V2X_LEN);

/// Which of the two messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AcceptConfirmKind {
    /// ACCEPT (type 2).
    Accept,
    /// CONFIRM (type 3).
    Confirm,
}

impl AcceptConfirmKind {
    /// The header type.
    pub const fn clc_type(self) -> ClcType {
        match self {
            Self::Accept => ClcType::Accept,
            Self::Confirm => ClcType::Confirm,
        }
    }
}

/// The fields the v2.x first-contact extension adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FceV2x {
    /// SMC-R max connections (reserved for SMC-D).
    pub max_conns: u8,
    /// SMC-R max links (reserved for SMC-D).
    pub max_links: u8,
    /// Supplemental features (server: its mask; client: the AND).
    pub feature_mask: u16,
    /// Vendor options.
    pub vendor_exp_options: u32,
}

/// The first-contact extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstContactExt {
    /// `v2_direct` (SMC-R only).
    pub v2_direct: bool,
    /// OS type (4 bits; [`OS_TYPE_LINUX`]).
    pub os_type: u8,
    /// SMCv2 release (4 bits).
    pub release: u8,
    /// Host name, ASCII, blank padded ([`hostname_field`]).
    pub hostname: [u8; HOSTNAME_LEN],
    /// The v2.x fields: `Some` gives the 52-byte form (required for release ≥ 1).
    pub v2x: Option<FceV2x>,
}

/// A host name as the 32-byte blank-padded field (longer names are cut at 32 bytes).
pub fn hostname_field(name: &str) -> [u8; HOSTNAME_LEN] {
    let mut f = [b' '; HOSTNAME_LEN];
    let b = name.as_bytes();
    let n = b.len().min(HOSTNAME_LEN);
    f[..n].copy_from_slice(&b[..n]);
    f
}

impl FirstContactExt {
    /// The host name without trailing blanks and NULs (bytes, as sent).
    pub fn hostname_trimmed(&self) -> &[u8] {
        let end = self
            .hostname
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(0, |i| i + 1);
        &self.hostname[..end]
    }
}

/// The v2 part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptConfirmV2 {
    /// CHID of the chosen/used device.
    pub chid: u16,
    /// Negotiated EID.
    pub eid: Eid,
    /// GID extension (Emulated-ISM), else 0.
    pub gid_ext: u64,
    /// First-contact extension: present iff the first-contact flag is set.
    pub fce: Option<FirstContactExt>,
}

/// An SMC-D ACCEPT or CONFIRM.
///
/// The version is 2 iff `v2` is `Some`. [`AcceptConfirm::emit`] writes what it is given (the
/// FCE iff `v2.fce` is `Some`, its 52-byte form iff `v2x` is `Some`); [`AcceptConfirm::check`]
/// says whether the value is one `parse` returns, i.e. whether it round-trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptConfirm {
    /// First contact: a new link group.
    pub first_contact: bool,
    /// Sender's ISM GID (64-bit part).
    pub gid: u64,
    /// Sender's DMB token.
    pub token: u64,
    /// DMBE index (Linux sends 0).
    pub dmbe_idx: u8,
    /// Compressed DMBE size (4 bits; see [`super::uncompress_dmbe_size`]).
    pub dmbe_size: u8,
    /// Sender's link-group id.
    pub link_id: u32,
    /// Version-2 part.
    pub v2: Option<AcceptConfirmV2>,
}

impl AcceptConfirm {
    /// The header version this value is sent with.
    pub const fn version(&self) -> u8 {
        if self.v2.is_some() {
            SMC_V2
        } else {
            SMC_V1
        }
    }

    /// Whether this value round-trips through `emit`/`parse`.
    pub fn check(&self) -> Result<(), ClcError> {
        if self.dmbe_size > 0x0F {
            return Err(ClcError::Malformed("dmbe_size"));
        }
        if let Some(v2) = &self.v2 {
            if v2.fce.is_some() != self.first_contact {
                return Err(ClcError::Malformed("FCE disagrees with first contact"));
            }
            if let Some(f) = &v2.fce {
                if f.os_type > 0x0F || f.release > 0x0F {
                    return Err(ClcError::Malformed("FCE os_type/release"));
                }
                if f.release >= 1 && f.v2x.is_none() {
                    return Err(ClcError::Malformed("FCE release >= 1 needs the v2.x form"));
                }
            }
        }
        Ok(())
    }

    /// Writes the message as an ACCEPT or a CONFIRM.
    pub fn emit(&self, kind: AcceptConfirmKind) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN_V2 + FCE_V2X_LEN);
        out.resize(32, 0);
        match &self.v2 {
            None => out.extend_from_slice(&[0; 12]),
            Some(v2) => {
                let d1 = D1Wire {
                    chid: U16::new(v2.chid),
                    eid: v2.eid,
                    gid_ext: U64::new(v2.gid_ext),
                };
                out.extend_from_slice(d1.as_bytes());
                if let Some(f) = &v2.fce {
                    let w = FceWire {
                        v2_direct: if f.v2_direct { 0x80 } else { 0 },
                        os_release: (f.os_type & 0x0F) << 4 | (f.release & 0x0F),
                        reserved: [0; 2],
                        hostname: f.hostname,
                    };
                    out.extend_from_slice(w.as_bytes());
                    if let Some(x) = &f.v2x {
                        let w = FceV2xWire {
                            max_conns: x.max_conns,
                            max_links: x.max_links,
                            feature_mask: U16::new(x.feature_mask),
                            vendor_exp_options: U32::new(x.vendor_exp_options),
                            reserved: [0; 8],
                        };
                        out.extend_from_slice(w.as_bytes());
                    }
                }
            }
        }
        out.extend_from_slice(&Eyecatcher::Smcd.bytes());
        let hdr = ClcHeader {
            eyecatcher: Eyecatcher::Smcd,
            msg_type: kind.clc_type(),
            length: out.len() as u16,
            version: self.version(),
            typev2: if self.first_contact {
                FIRST_CONTACT_MASK
            } else {
                0
            },
            typev1: SmcType::D.bits(),
        };
        let d0 = D0Wire {
            hdr: zerocopy::transmute!(hdr.emit()),
            gid: U64::new(self.gid),
            token: U64::new(self.token),
            dmbe_idx: self.dmbe_idx,
            dmbe_size: (self.dmbe_size & 0x0F) << 4,
            reserved4: [0; 2],
            linkid: U32::new(self.link_id),
        };
        out[..32].copy_from_slice(d0.as_bytes());
        out
    }

    /// Parses a whole SMC-D ACCEPT or CONFIRM (`bytes.len()` must equal the header's length).
    pub fn parse(bytes: &[u8]) -> Result<(AcceptConfirmKind, Self), ClcError> {
        let hdr = check_frame(bytes, &[ClcType::Accept, ClcType::Confirm])?;
        let kind = if hdr.msg_type == ClcType::Accept {
            AcceptConfirmKind::Accept
        } else {
            AcceptConfirmKind::Confirm
        };
        if hdr.smc_type_v1() != SmcType::D {
            return Err(ClcError::NotSmcd);
        }
        let len = hdr.length;
        let first_contact = hdr.first_contact();
        let d0: &D0Wire = take(bytes, 0, len)?;
        let v2 = if hdr.version == SMC_V1 {
            if usize::from(len) != LEN_V1 {
                return Err(ClcError::BadLength(len));
            }
            None
        } else {
            // `net/smc/smc_clc.c` `smc_clc_msg_acc_conf_valid`: a v2 message needs at least
            // the 78 bytes without extension; whatever follows is read where the layout puts
            // it and anything beyond is ignored. Linux reads the first-contact extension
            // whenever the flag is set, from a zeroed buffer: parts the message does not
            // carry read as zeros.
            let l = usize::from(len);
            if l < LEN_V2 {
                return Err(ClcError::BadLength(len));
            }
            let d1: &D1Wire = take(bytes, 32, len)?;
            let body = &bytes[..l - TRAILER_LEN];
            let fce = if first_contact {
                let at = LEN_V2 - TRAILER_LEN;
                let mut f = [0u8; FCE_LEN];
                if let Some(src) = body.get(at..at + FCE_LEN) {
                    f.copy_from_slice(src);
                }
                let (f, _) =
                    FceWire::read_from_prefix(&f[..]).map_err(|_| ClcError::BadLength(len))?;
                let release = f.os_release & 0x0F;
                const X_LEN: usize = FCE_V2X_LEN - FCE_LEN;
                let mut x = [0u8; X_LEN];
                let x_at = at + FCE_LEN;
                let has_x = body.len() >= x_at + X_LEN;
                if has_x {
                    x.copy_from_slice(&body[x_at..x_at + X_LEN]);
                }
                let (x, _) =
                    FceV2xWire::read_from_prefix(&x[..]).map_err(|_| ClcError::BadLength(len))?;
                let v2x = (has_x || release >= 1).then(|| FceV2x {
                    max_conns: x.max_conns,
                    max_links: x.max_links,
                    feature_mask: x.feature_mask.get(),
                    vendor_exp_options: x.vendor_exp_options.get(),
                });
                Some(FirstContactExt {
                    v2_direct: f.v2_direct & 0x80 != 0,
                    os_type: f.os_release >> 4,
                    release,
                    hostname: f.hostname,
                    v2x,
                })
            } else {
                None
            };
            Some(AcceptConfirmV2 {
                chid: d1.chid.get(),
                eid: d1.eid,
                gid_ext: d1.gid_ext.get(),
                fce,
            })
        };
        Ok((
            kind,
            Self {
                first_contact,
                gid: d0.gid.get(),
                token: d0.token.get(),
                dmbe_idx: d0.dmbe_idx,
                dmbe_size: d0.dmbe_size >> 4,
                link_id: d0.linkid.get(),
                v2,
            },
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMCD: [u8; 4] = [0xE2, 0xD4, 0xC3, 0xC4];

    fn base() -> AcceptConfirm {
        AcceptConfirm {
            first_contact: true,
            gid: 0x0011_2233_4455_6677,
            token: 0x8899_AABB_0000_0000,
            dmbe_idx: 0,
            dmbe_size: 6,
            link_id: 0x0102_0304,
            v2: None,
        }
    }

    fn d0_bytes(e: &mut Vec<u8>) {
        e.extend_from_slice(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        e.extend_from_slice(&[0x88, 0x99, 0xAA, 0xBB, 0, 0, 0, 0]);
        e.extend_from_slice(&[0x00, 0x60, 0, 0, 0x01, 0x02, 0x03, 0x04]);
    }

    #[test]
    fn golden_v1_accept() {
        let a = base();
        let mut e = Vec::new();
        // length 48, version 1, first contact, typev1 D
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xC4, 0x02, 0x00, 48, 0x19]);
        d0_bytes(&mut e);
        e.extend_from_slice(&[0; 12]);
        e.extend_from_slice(&SMCD);
        assert_eq!(a.check(), Ok(()));
        assert_eq!(a.emit(AcceptConfirmKind::Accept), e);
        assert_eq!(AcceptConfirm::parse(&e), Ok((AcceptConfirmKind::Accept, a)));
    }

    #[test]
    fn golden_v1_confirm_not_first_contact() {
        let c = AcceptConfirm {
            first_contact: false,
            ..base()
        };
        let mut e = Vec::new();
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xC4, 0x03, 0x00, 48, 0x11]);
        d0_bytes(&mut e);
        e.extend_from_slice(&[0; 12]);
        e.extend_from_slice(&SMCD);
        assert_eq!(c.emit(AcceptConfirmKind::Confirm), e);
        assert_eq!(
            AcceptConfirm::parse(&e),
            Ok((AcceptConfirmKind::Confirm, c))
        );
    }

    #[test]
    fn golden_v2_no_fce() {
        let c = AcceptConfirm {
            first_contact: false,
            v2: Some(AcceptConfirmV2 {
                chid: 0xFFFF,
                eid: [0x41; 32],
                gid_ext: 0xDEAD_BEEF_CAFE_F00D,
                fce: None,
            }),
            ..base()
        };
        let mut e = Vec::new();
        // length 78, version 2
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xC4, 0x03, 0x00, 78, 0x21]);
        d0_bytes(&mut e);
        e.extend_from_slice(&[0xFF, 0xFF]);
        e.extend_from_slice(&[0x41; 32]);
        e.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF, 0xCA, 0xFE, 0xF0, 0x0D]);
        assert_eq!(e.len(), 74);
        e.extend_from_slice(&SMCD);
        assert_eq!(c.check(), Ok(()));
        assert_eq!(c.emit(AcceptConfirmKind::Confirm), e);
        assert_eq!(
            AcceptConfirm::parse(&e),
            Ok((AcceptConfirmKind::Confirm, c))
        );
    }

    #[test]
    fn golden_v2_fce_release0() {
        let a = AcceptConfirm {
            v2: Some(AcceptConfirmV2 {
                chid: 0x0123,
                eid: [0; 32],
                gid_ext: 0,
                fce: Some(FirstContactExt {
                    v2_direct: false,
                    os_type: OS_TYPE_LINUX,
                    release: 0,
                    hostname: hostname_field("lpar1"),
                    v2x: None,
                }),
            }),
            ..base()
        };
        let mut e = Vec::new();
        // length 114 = 0x72, version 2, first contact (0x08), typev1 D
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xC4, 0x02, 0x00, 0x72, 0x29]);
        d0_bytes(&mut e);
        e.extend_from_slice(&[0x01, 0x23]);
        e.extend_from_slice(&[0; 40]);
        // 74: FCE: v2_direct 0, os 2 / release 0, reserved, "lpar1" + 27 blanks
        e.extend_from_slice(&[0x00, 0x20, 0, 0]);
        e.extend_from_slice(b"lpar1                           ");
        assert_eq!(e.len(), 110);
        e.extend_from_slice(&SMCD);
        assert_eq!(a.check(), Ok(()));
        assert_eq!(a.emit(AcceptConfirmKind::Accept), e);
        let (_, p) = AcceptConfirm::parse(&e).unwrap();
        assert_eq!(p, a);
        assert_eq!(p.v2.unwrap().fce.unwrap().hostname_trimmed(), b"lpar1");
    }

    #[test]
    fn golden_v2_fce_v2x() {
        let a = AcceptConfirm {
            v2: Some(AcceptConfirmV2 {
                chid: 0xFFFF,
                eid: [0x45; 32],
                gid_ext: 0x0102_0304_0506_0708,
                fce: Some(FirstContactExt {
                    v2_direct: false,
                    os_type: OS_TYPE_LINUX,
                    release: 1,
                    hostname: hostname_field("host"),
                    v2x: Some(FceV2x {
                        max_conns: 0,
                        max_links: 0,
                        feature_mask: 0x0001,
                        vendor_exp_options: 0,
                    }),
                }),
            }),
            ..base()
        };
        let mut e = Vec::new();
        // length 130 = 0x82
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xC4, 0x02, 0x00, 0x82, 0x29]);
        d0_bytes(&mut e);
        e.extend_from_slice(&[0xFF, 0xFF]);
        e.extend_from_slice(&[0x45; 32]);
        e.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        e.extend_from_slice(&[0x00, 0x21, 0, 0]);
        e.extend_from_slice(b"host                            ");
        // 110: max_conns, max_links, feature_mask 1, vendor options, reserved
        e.extend_from_slice(&[0, 0, 0x00, 0x01, 0, 0, 0, 0]);
        e.extend_from_slice(&[0; 8]);
        assert_eq!(e.len(), 126);
        e.extend_from_slice(&SMCD);
        assert_eq!(a.check(), Ok(()));
        assert_eq!(a.emit(AcceptConfirmKind::Accept), e);
        assert_eq!(AcceptConfirm::parse(&e), Ok((AcceptConfirmKind::Accept, a)));
    }

    #[test]
    fn rejects() {
        let a = base();
        let mut e = a.emit(AcceptConfirmKind::Accept);
        e[7] = 0x18; // typev1 R
        assert_eq!(AcceptConfirm::parse(&e), Err(ClcError::NotSmcd));
        let mut e = a.emit(AcceptConfirmKind::Accept);
        e[4] = 4;
        assert_eq!(AcceptConfirm::parse(&e), Err(ClcError::BadType(4)));
        e[4] = 1; // a proposal is at least 52 bytes
        assert_eq!(AcceptConfirm::parse(&e), Err(ClcError::BadLength(48)));
        // v2 header on a 48-byte body
        let mut e = a.emit(AcceptConfirmKind::Accept);
        e[7] = 0x29;
        assert_eq!(AcceptConfirm::parse(&e), Err(ClcError::BadLength(48)));
        // 36-byte FCE with release 1
        let mut v2 = AcceptConfirm {
            v2: Some(AcceptConfirmV2 {
                chid: 1,
                eid: [0; 32],
                gid_ext: 0,
                fce: Some(FirstContactExt {
                    v2_direct: false,
                    os_type: 2,
                    release: 1,
                    hostname: [b' '; 32],
                    v2x: None,
                }),
            }),
            ..base()
        };
        assert!(v2.check().is_err());
        // As Linux, the missing v2.x part reads as zeros.
        let e = v2.emit(AcceptConfirmKind::Accept);
        let (_, got) = AcceptConfirm::parse(&e).unwrap();
        let fce = got.v2.unwrap().fce.unwrap();
        assert_eq!((fce.release, fce.v2x.map(|x| x.feature_mask)), (1, Some(0)));
        // First contact without FCE: the FCE reads as zeros (release 0).
        v2.v2.as_mut().unwrap().fce = None;
        let e = v2.emit(AcceptConfirmKind::Accept);
        let (_, got) = AcceptConfirm::parse(&e).unwrap();
        let fce = got.v2.unwrap().fce.unwrap();
        assert_eq!((fce.release, fce.os_type, fce.v2x), (0, 0, None));
        // Shorter than 78 bytes: refused (`smc_clc_msg_acc_conf_valid`).
        let mut e = v2.emit(AcceptConfirmKind::Accept);
        e.drain(60..70);
        e[5..7].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(AcceptConfirm::parse(&e), Err(ClcError::BadLength(68)));
        // Longer than its parts: the excess is ignored.
        let mut long = base();
        long.first_contact = false;
        long.v2 = Some(AcceptConfirmV2 {
            chid: 7,
            eid: [1; 32],
            gid_ext: 0,
            fce: None,
        });
        let mut e = long.emit(AcceptConfirmKind::Confirm);
        let n = e.len();
        e.splice(n - 4..n - 4, [0xAB; 20]);
        e[5..7].copy_from_slice(&((n + 20) as u16).to_be_bytes());
        assert_eq!(
            AcceptConfirm::parse(&e),
            Ok((AcceptConfirmKind::Confirm, long))
        );
    }

    #[test]
    fn check_names_what_would_not_round_trip() {
        let fce = |os_type, release, v2x| FirstContactExt {
            v2_direct: false,
            os_type,
            release,
            hostname: [b' '; HOSTNAME_LEN],
            v2x,
        };
        let with = |f: FirstContactExt| AcceptConfirm {
            v2: Some(AcceptConfirmV2 {
                chid: 1,
                eid: [0; 32],
                gid_ext: 0,
                fce: Some(f),
            }),
            ..base()
        };
        let x = Some(FceV2x::default());
        // Each field at its largest value, alone and together: fine.
        assert_eq!(with(fce(0x0F, 0, None)).check(), Ok(()));
        assert_eq!(with(fce(0, 0x0F, x)).check(), Ok(()));
        assert_eq!(with(fce(0x0F, 0x0F, x)).check(), Ok(()));
        // One field too wide is enough to refuse.
        let wide = Err(ClcError::Malformed("FCE os_type/release"));
        assert_eq!(with(fce(0x10, 0, None)).check(), wide);
        assert_eq!(with(fce(0, 0x10, x)).check(), wide);
        assert_eq!(
            with(fce(2, 1, None)).check(),
            Err(ClcError::Malformed("FCE release >= 1 needs the v2.x form"))
        );
        assert_eq!(
            AcceptConfirm {
                dmbe_size: 0x10,
                ..base()
            }
            .check(),
            Err(ClcError::Malformed("dmbe_size"))
        );
        assert_eq!(
            AcceptConfirm {
                dmbe_size: 0x0F,
                ..base()
            }
            .check(),
            Ok(())
        );
        let mut no_fce = with(fce(2, 0, None));
        no_fce.v2.as_mut().unwrap().fce = None;
        assert_eq!(
            no_fce.check(),
            Err(ClcError::Malformed("FCE disagrees with first contact"))
        );
    }

    fn arb_fce() -> impl Strategy<Value = FirstContactExt> {
        (
            any::<bool>(),
            0u8..16,
            0u8..16,
            any::<[u8; 32]>(),
            proptest::option::of(any::<(u8, u8, u16, u32)>()),
        )
            .prop_map(|(v2_direct, os_type, release, hostname, x)| {
                let v2x = match (release, x) {
                    (0, None) => None,
                    (_, x) => {
                        let (max_conns, max_links, feature_mask, vendor_exp_options) =
                            x.unwrap_or_default();
                        Some(FceV2x {
                            max_conns,
                            max_links,
                            feature_mask,
                            vendor_exp_options,
                        })
                    }
                };
                FirstContactExt {
                    v2_direct,
                    os_type,
                    release,
                    hostname,
                    v2x,
                }
            })
    }

    pub(crate) fn arb_accept_confirm() -> impl Strategy<Value = AcceptConfirm> {
        (
            any::<(bool, u64, u64, u8, u32)>(),
            0u8..16,
            proptest::option::of((any::<(u16, [u8; 32], u64)>(), arb_fce())),
        )
            .prop_map(|((fc, gid, token, dmbe_idx, link_id), dmbe_size, v2)| {
                AcceptConfirm {
                    first_contact: fc,
                    gid,
                    token,
                    dmbe_idx,
                    dmbe_size,
                    link_id,
                    v2: v2.map(|((chid, eid, gid_ext), fce)| AcceptConfirmV2 {
                        chid,
                        eid,
                        gid_ext,
                        fce: fc.then_some(fce),
                    }),
                }
            })
    }

    fn arb_kind() -> impl Strategy<Value = AcceptConfirmKind> {
        prop_oneof![
            Just(AcceptConfirmKind::Accept),
            Just(AcceptConfirmKind::Confirm)
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(a in arb_accept_confirm(), kind in arb_kind()) {
            prop_assert_eq!(a.check(), Ok(()));
            prop_assert_eq!(AcceptConfirm::parse(&a.emit(kind)), Ok((kind, a)));
        }

        #[test]
        fn truncations_never_panic(a in arb_accept_confirm(), kind in arb_kind(),
                                   cut in any::<prop::sample::Index>()) {
            let bytes = a.emit(kind);
            let n = cut.index(bytes.len());
            prop_assert!(AcceptConfirm::parse(&bytes[..n]).is_err());
            let mut b = bytes[..n].to_vec();
            if b.len() >= 8 {
                b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
                let _ = AcceptConfirm::parse(&b);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..200),
                                       flags in any::<u8>()) {
            let _ = AcceptConfirm::parse(&b);
            if b.len() >= 12 {
                let n = b.len();
                b[..4].copy_from_slice(&SMCD);
                b[4] = 2 + (flags & 1);
                b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
                b[7] = (1 + ((flags >> 1) & 1)) << 4 | (flags & 0x0C) | 1;
                b[n - 4..].copy_from_slice(&SMCD);
                if let Ok((kind, a)) = AcceptConfirm::parse(&b) {
                    prop_assert_eq!(a.check(), Ok(()));
                    prop_assert_eq!(AcceptConfirm::parse(&a.emit(kind)), Ok((kind, a)));
                }
            }
        }
    }
}
