//! PROPOSAL (type 1): the client's offer, as Linux ≥ 5.10 builds it (always version 2), and
//! the version-1 form older peers send.
//!
//! Version 2 (`net/smc/smc_clc.h` `struct smc_clc_msg_proposal_area`; X, Y as below):
//!
//! | off    | size   | field                                                              |
//! |--------|--------|--------------------------------------------------------------------|
//! | 0      | 8      | header: "SMCR", type 1, version 2, `typev1`/`typev2` = offered types |
//! | 8      | 8      | `lcl.id_for_peer` (SMC-R v1)                                       |
//! | 16     | 16     | `lcl.gid` (SMC-R v1 RoCE GID)                                      |
//! | 32     | 6      | `lcl.mac` (SMC-R v1 RoCE MAC)                                      |
//! | 38     | 2      | `iparea_offset` BE: 40 if the prefix area is present, else 0       |
//! | 40     | 8      | `smcd.ism.gid` BE: native (V1) ISM GID, 0 if none                  |
//! | 48     | 2      | `smcd.ism.chid` BE                                                 |
//! | 50     | 2      | `smcd.v2_ext_offset` BE: X − 52, 0 if `typev2` = N                  |
//! | 52     | 3+5    | vendor OUI, vendor options: zero                                   |
//! | 60     | 20     | reserved                                                           |
//! | 80     | 8      | prefix area (iff `typev1` ≠ N): subnet BE u32, prefix_len, 2 res.,
//! `ipv6_prefixes_cnt` |
//! | 88     | 17·n6  | IPv6 prefixes {16 bytes, prefix_len}, n6 ≤ 8                        |
//! | X      | 40     | v2 extension (iff `typev2` ≠ N), below                             |
//! | X+40   | 32·e   | user EIDs, e = `eid_cnt` ≤ 8                                        |
//! | Y      | 48     | SMC-Dv2 extension (iff `typev2` ∈ {D, B}): `system_eid[32]`, `reserved[16]`
//! |
//! | Y+48   | 10·g   | GID/CHID entries {gid BE u64, chid BE u16}, g = `ism_gid_cnt` ≤ 8   |
//! | end−4  | 4      | trailer "SMCR"                                                     |
//!
//! v2 extension (40 bytes, offsets from X): `eid_cnt` +0, `ism_gid_cnt` +1, reserved +2,
//! flags +3 (bits 7–4 release, bit 0 `seid`), reserved +4..6, `smcd_v2_ext_offset` BE +6
//! (= Y − (X + 8) = 32 + 32·e, 0 without SMC-Dv2 extension), RoCE GID +8..24, `max_conns` +24,
//! `max_links` +25, `feature_mask` BE +26 (Linux: 0x0001 = Emulated-ISM), reserved +28..40.
//!
//! Version 1 (Linux 4.19): bytes 0..40 as above, then, if `iparea_offset` = 40, the SMC-D area
//! (`gid` at 40; the rest reserved), then the prefix area at `40 + iparea_offset`, then the
//! trailer. This model always emits the SMC-D area in v1 (receivers locate the prefix via
//! `iparea_offset`), and parses `iparea_offset` 0 or 40.
//!
//! The receiver reads as Linux's `net/smc/smc_clc.c` `smc_clc_msg_prop_valid` and the
//! `smc_get_clc_*` accessors of `net/smc/smc_clc.h` do. Version 1 is checked exactly:
//! `length = 40 + iparea_offset + 8 + 17·n6 + 4`. Version 2 (and any later version) is
//! located by its offset fields, each bounded rather than required to be exact: the prefix
//! area at `40 + iparea_offset` (an offset above 40 counts as 0), the v2 extension at
//! `52 + v2_ext_offset` (non-zero and at most [`MAX_V2_EXT_OFFSET`], or the proposal is
//! refused), the SMC-Dv2 extension at `X + 8 + smcd_v2_ext_offset` (non-zero and at most
//! [`MAX_SMCD_V2_EXT_OFFSET`], else absent); counts are at most 8 each; bytes after the
//! last part are ignored. The sender writes every offset exactly where the layout above
//! puts the part.

//! GID/CHID entries: an Emulated-ISM device (CHID 0xFF00..=0xFFFF) takes two consecutive
//! entries, `{gid, chid}` then `{gid_ext, chid}`; a native device one. See
//! [`select_v2_devices`] (the sender's capacity rule) and [`devices_from_entries`] (the
//! receiver's pairing rule).

use alloc::vec::Vec;

use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::{
    ClcHeader, ClcType, Eyecatcher, SmcType, SMC_RELEASE_1, SMC_V1, SMC_V2, TRAILER_LEN,
};
use super::{check_frame, take, ClcError, Eid, EID_LEN};

/// Length of the fixed part (header, SMC-R v1 local info, `iparea_offset`, SMC-D area).
pub const FIXED_LEN: usize = 80;
/// Offset of the SMC-D area, and the base `iparea_offset` is counted from.
pub const SMCD_AREA_OFFSET: usize = 40;
/// Offset `v2_ext_offset` is counted from (end of the `v2_ext_offset` field).
pub const V2_EXT_BASE: usize = 52;
/// Length of the fixed part of the prefix area.
pub const PREFIX_LEN: usize = 8;
/// Length of one IPv6 prefix entry.
pub const IPV6_PREFIX_LEN: usize = 17;
/// Length of the fixed part of the v2 extension.
pub const V2_EXT_LEN: usize = 40;
/// Length of the SMC-Dv2 extension (before the GID/CHID entries).
pub const SMCD_V2_EXT_LEN: usize = 48;
/// Length of one GID/CHID entry.
pub const GID_CHID_LEN: usize = 10;
/// Most IPv6 prefixes in a proposal (`SMC_CLC_MAX_V6_PREFIX`).
pub const MAX_IPV6_PREFIXES: usize = 8;
/// Most user EIDs in a proposal (`SMC_CLC_MAX_UEID`).
pub const MAX_UEIDS: usize = 8;
/// Most GID/CHID entries (`SMCD_CLC_MAX_V2_GID_ENTRIES`).
pub const MAX_GID_ENTRIES: usize = 8;
/// Largest `v2_ext_offset` a receiver follows: where the v2 extension starts after 8 IPv6
/// prefixes (`net/smc/smc_clc.h` `smc_get_clc_v2_ext`).
pub const MAX_V2_EXT_OFFSET: usize =
    FIXED_LEN + PREFIX_LEN + MAX_IPV6_PREFIXES * IPV6_PREFIX_LEN - V2_EXT_BASE;
/// Largest `smcd_v2_ext_offset` a receiver follows: where the SMC-Dv2 extension starts
/// after 8 user EIDs (`net/smc/smc_clc.h` `smc_get_clc_smcd_v2_ext`).
pub const MAX_SMCD_V2_EXT_OFFSET: usize = V2_EXT_LEN - 8 + MAX_UEIDS * EID_LEN;
/// The supplemental-feature mask Linux sends (`SMC_FEATURE_MASK`).
pub const SMC_FEATURE_MASK: u16 = SPF_EMULATED_ISM_DEV;
/// Feature bit: Emulated-ISM devices (`SMC_SPF_EMULATED_ISM_DEV`).
pub const SPF_EMULATED_ISM_DEV: u16 = 0x0001;
pub use ism_abi::chid::{is_emulated_chid, LOOPBACK_CHID};

/// The fixed 80 bytes of a proposal.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ProposalFixedWire {
    /// Header.
    pub hdr: super::header::HeaderWire,
    /// SMC-R v1 system id.
    pub lcl_id_for_peer: [u8; 8],
    /// SMC-R v1 RoCE GID.
    pub lcl_gid: [u8; 16],
    /// SMC-R v1 RoCE MAC.
    pub lcl_mac: [u8; 6],
    /// Distance from byte 40 to the prefix area.
    pub iparea_offset: U16,
    /// Native (V1) ISM GID.
    pub ism_gid: U64,
    /// Native (V1) ISM CHID.
    pub ism_chid: U16,
    /// Distance from byte 52 to the v2 extension.
    pub v2_ext_offset: U16,
    /// Vendor OUI.
    pub vendor_oui: [u8; 3],
    /// Vendor options.
    pub vendor_exp_options: [u8; 5],
    /// Reserved.
    pub reserved: [u8; 20],
}

/// The fixed part of the prefix area.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PrefixWire {
    /// IPv4 subnet of the outgoing interface.
    pub outgoing_subnet: U32,
    /// IPv4 prefix length.
    pub prefix_len: u8,
    /// Reserved.
    pub reserved: [u8; 2],
    /// Number of IPv6 prefixes that follow.
    pub ipv6_prefixes_cnt: u8,
}

/// One IPv6 prefix entry.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Ipv6PrefixWire {
    /// Prefix.
    pub prefix: [u8; 16],
    /// Prefix length.
    pub prefix_len: u8,
}

/// The fixed part of the v2 extension.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct V2ExtWire {
    /// Number of user EIDs.
    pub eid_cnt: u8,
    /// Number of GID/CHID entries.
    pub ism_gid_cnt: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Bits 7–4 release, bit 0 `seid`.
    pub flag: u8,
    /// Reserved.
    pub reserved2: [u8; 2],
    /// Distance from this extension's byte 8 to the SMC-Dv2 extension.
    pub smcd_v2_ext_offset: U16,
    /// SMC-Rv2 RoCE GID.
    pub roce_gid: [u8; 16],
    /// SMC-R max connections per link group.
    pub max_conns: u8,
    /// SMC-R max links per link group.
    pub max_links: u8,
    /// Supplemental features.
    pub feature_mask: U16,
    /// Reserved.
    pub reserved3: [u8; 12],
}

/// The SMC-Dv2 extension.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct SmcdV2ExtWire {
    /// System EID.
    pub system_eid: Eid,
    /// Reserved.
    pub reserved: [u8; 16],
}

/// One GID/CHID entry.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct GidChidWire {
    /// GID (or GID extension, in an Emulated-ISM device's second entry).
    pub gid: U64,
    /// CHID.
    pub chid: U16,
}

const _: () = assert!(core::mem::size_of::<ProposalFixedWire>() == FIXED_LEN);
const _: () = assert!(core::mem::offset_of!(ProposalFixedWire, iparea_offset) == 38);
const _: () = assert!(core::mem::offset_of!(ProposalFixedWire, ism_gid) == 40);
const _: () = assert!(core::mem::offset_of!(ProposalFixedWire, v2_ext_offset) == 50);
const _: () = assert!(core::mem::size_of::<PrefixWire>() == PREFIX_LEN);
const _: () = assert!(core::mem::size_of::<Ipv6PrefixWire>() == IPV6_PREFIX_LEN);
const _: () = assert!(core::mem::size_of::<V2ExtWire>() == V2_EXT_LEN);
const _: () = assert!(core::mem::offset_of!(V2ExtWire, smcd_v2_ext_offset) == 6);
const _: () = assert!(core::mem::offset_of!(V2ExtWire, feature_mask) == 26);
const _: () = assert!(core::mem::size_of::<SmcdV2ExtWire>() == SMCD_V2_EXT_LEN);
const _: () = assert!(core::mem::size_of::<GidChidWire>() == GID_CHID_LEN);

/// An SMC-D device as offered in a proposal (and as `struct smcd_gid` plus CHID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SmcdDevice {
    /// GID (for Emulated-ISM, the first 64 bits).
    pub gid: u64,
    /// GID extension: the second 64 bits of an Emulated-ISM GID. Native ISM devices have
    /// none: it is not sent for them, and parsed as 0.
    pub gid_ext: u64,
    /// CHID (0xFF00..=0xFFFF: Emulated-ISM; 0xFFFF: loopback-ism).
    pub chid: u16,
}

impl SmcdDevice {
    /// Whether the device is Emulated-ISM (CHID 0xFF00..=0xFFFF).
    pub const fn is_emulated(&self) -> bool {
        is_emulated_chid(self.chid)
    }

    /// Whether the device is loopback-ism (CHID 0xFFFF).
    pub const fn is_loopback(&self) -> bool {
        self.chid == LOOPBACK_CHID
    }

    /// How many GID/CHID entries the device takes: 2 for Emulated-ISM, else 1.
    pub const fn entries(&self) -> usize {
        if self.is_emulated() {
            2
        } else {
            1
        }
    }
}

/// The sender's capacity rule for the SMC-Dv2 device list: takes `candidates` in order while
/// they fit into [`MAX_GID_ENTRIES`] entries; an Emulated-ISM device that would need the last
/// free slot plus one is skipped and the next candidate tried.
///
/// Only the wire capacity is applied here; the rest of Linux's client policy (skip
/// going-away devices, the V1 native device, CHIDs already listed, PNETID mismatches) is the
/// caller's.
pub fn select_v2_devices<I: IntoIterator<Item = SmcdDevice>>(candidates: I) -> Vec<SmcdDevice> {
    let mut used = 0;
    let mut out = Vec::new();
    for d in candidates {
        if used >= MAX_GID_ENTRIES {
            break;
        }
        if used + d.entries() > MAX_GID_ENTRIES {
            continue;
        }
        used += d.entries();
        out.push(d);
    }
    out
}

/// The GID/CHID entries of a device list, as `(gid, chid)`: one for a native device, two
/// (`gid`, then `gid_ext`) for an Emulated-ISM device. No capacity rule is applied.
pub fn entries_from_devices(devices: &[SmcdDevice]) -> Vec<(u64, u16)> {
    let mut out = Vec::with_capacity(devices.len() * 2);
    for d in devices {
        out.push((d.gid, d.chid));
        if d.is_emulated() {
            out.push((d.gid_ext, d.chid));
        }
    }
    out
}

/// The receiver's pairing rule (Linux's server): an Emulated-ISM entry takes the next entry as
/// its GID extension if that entry exists and has the same CHID; otherwise the entry is
/// skipped. Native entries give devices with `gid_ext` 0.
pub fn devices_from_entries(entries: &[(u64, u16)]) -> Vec<SmcdDevice> {
    let mut out = Vec::with_capacity(entries.len());
    let mut i = 0;
    while i < entries.len() {
        let (gid, chid) = entries[i];
        if is_emulated_chid(chid) {
            match entries.get(i + 1) {
                Some(&(gid_ext, c2)) if c2 == chid => {
                    out.push(SmcdDevice { gid, gid_ext, chid });
                    i += 2;
                }
                _ => i += 1,
            }
        } else {
            out.push(SmcdDevice {
                gid,
                gid_ext: 0,
                chid,
            });
            i += 1;
        }
    }
    out
}

/// The SMC-R v1 identity at bytes 8..38 (zeros when SMC-R v1 is not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SmcrLocal {
    /// `id_for_peer`: SMC-R system id.
    pub id_for_peer: [u8; 8],
    /// RoCE GID.
    pub gid: [u8; 16],
    /// RoCE MAC.
    pub mac: [u8; 6],
}

/// One IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv6Prefix {
    /// The prefix, network order.
    pub prefix: [u8; 16],
    /// Its length in bits.
    pub prefix_len: u8,
}

/// The IP prefix area (present iff `typev1` ≠ N).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IpPrefix {
    /// IPv4 subnet of the outgoing interface (address bits as a u32; 0 for IPv6).
    pub outgoing_subnet: u32,
    /// IPv4 prefix length.
    pub prefix_len: u8,
    /// IPv6 prefixes (at most [`MAX_IPV6_PREFIXES`]; `emit` writes no more).
    pub ipv6: Vec<Ipv6Prefix>,
}

/// The SMC-Dv2 extension (present iff `typev2` ∈ {D, B}).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SmcdV2Ext {
    /// The system EID (the SEID if the `seid` flag is set; Linux leaves it zero otherwise).
    pub system_eid: Eid,
    /// The offered SMC-Dv2 devices, in order. `emit` applies [`select_v2_devices`].
    pub devices: Vec<SmcdDevice>,
}

/// The v2 extension (present iff version 2 and `typev2` ≠ N).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalV2 {
    /// SMCv2 release (4 bits; Linux sends [`SMC_RELEASE_1`]).
    pub release: u8,
    /// `seid` flag: the system EID is present/enabled.
    pub seid: bool,
    /// User EIDs (at most [`MAX_UEIDS`]; `emit` writes no more).
    pub eids: Vec<Eid>,
    /// SMC-Rv2 RoCE GID (zero for SMC-D only).
    pub roce_gid: [u8; 16],
    /// SMC-R max connections (zero for SMC-D only).
    pub max_conns: u8,
    /// SMC-R max links (zero for SMC-D only).
    pub max_links: u8,
    /// Supplemental features ([`SMC_FEATURE_MASK`]).
    pub feature_mask: u16,
    /// The SMC-Dv2 extension.
    pub smcd: Option<SmcdV2Ext>,
}

impl Default for ProposalV2 {
    /// Linux's values: release 1, no SEID, no EIDs, feature mask 0x0001, no SMC-Dv2 ext.
    fn default() -> Self {
        Self {
            release: SMC_RELEASE_1,
            seid: false,
            eids: Vec::new(),
            roce_gid: [0; 16],
            max_conns: 0,
            max_links: 0,
            feature_mask: SMC_FEATURE_MASK,
            smcd: None,
        }
    }
}

/// A PROPOSAL.
///
/// The parts present follow the header types, and [`Proposal::check`] says whether a value is
/// consistent. [`Proposal::emit`] writes what it is given: the prefix area iff `prefix` is
/// `Some` (in v1 always, zeros if `None`), the v2 extension iff version 2 and `v2` is `Some`,
/// the SMC-Dv2 extension iff `v2.smcd` is `Some`, lists cut to their maxima; the header types
/// are written as given. So `parse(emit(p)) == Ok(p)` exactly when `p.check()` is `Ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Header version: 1 or 2 (Linux ≥ 5.10 sends 2).
    pub version: u8,
    /// Types offered for version 1.
    pub typev1: SmcType,
    /// Types offered for version 2 (in a v1 header: the raw `flag`/reserved bits).
    pub typev2: SmcType,
    /// SMC-R v1 identity.
    pub smcr: SmcrLocal,
    /// Native (V1) ISM GID (`smcd.ism.gid`), 0 if none.
    pub ism_gid: u64,
    /// Native (V1) ISM CHID (`smcd.ism.chid`), 0 if none.
    pub ism_chid: u16,
    /// IP prefix area.
    pub prefix: Option<IpPrefix>,
    /// v2 extension.
    pub v2: Option<ProposalV2>,
}

impl Proposal {
    /// The native V1 device offered in the SMC-D area, if `typev1` offers SMC-D and a GID is
    /// set.
    pub fn v1_device(&self) -> Option<SmcdDevice> {
        (self.typev1.smcd_indicated() && self.ism_gid != 0).then_some(SmcdDevice {
            gid: self.ism_gid,
            gid_ext: 0,
            chid: self.ism_chid,
        })
    }

    /// The offered SMC-Dv2 devices (empty without an SMC-Dv2 extension).
    pub fn v2_devices(&self) -> &[SmcdDevice] {
        self.v2
            .as_ref()
            .and_then(|v2| v2.smcd.as_ref())
            .map_or(&[], |d| &d.devices[..])
    }

    /// Whether this value round-trips: `Ok` iff `parse(emit(self)) == Ok(self)`.
    pub fn check(&self) -> Result<(), ClcError> {
        match self.version {
            SMC_V1 => {
                if self.typev1 == SmcType::N {
                    return Err(ClcError::Malformed("v1 proposal offers no type"));
                }
                if self.prefix.is_none() {
                    return Err(ClcError::Malformed("v1 proposal needs a prefix area"));
                }
                if self.v2.is_some() {
                    return Err(ClcError::Malformed("v1 proposal has a v2 extension"));
                }
            }
            v if (SMC_V2..=0x0F).contains(&v) => {
                if self.prefix.is_some() != (self.typev1 != SmcType::N) {
                    return Err(ClcError::Malformed("prefix area disagrees with typev1"));
                }
                if self.v2.is_some() != (self.typev2 != SmcType::N) {
                    return Err(ClcError::Malformed("v2 extension disagrees with typev2"));
                }
            }
            v => return Err(ClcError::BadVersion(v)),
        }
        if let Some(p) = &self.prefix {
            if p.ipv6.len() > MAX_IPV6_PREFIXES {
                return Err(ClcError::Malformed("too many IPv6 prefixes"));
            }
        }
        if let Some(v2) = &self.v2 {
            if v2.release > 0x0F {
                return Err(ClcError::Malformed("release"));
            }
            if v2.eids.len() > MAX_UEIDS {
                return Err(ClcError::Malformed("too many user EIDs"));
            }
            if v2.smcd.is_some() != self.typev2.smcd_indicated() {
                return Err(ClcError::Malformed(
                    "SMC-Dv2 extension disagrees with typev2",
                ));
            }
            if let Some(smcd) = &v2.smcd {
                if select_v2_devices(smcd.devices.iter().copied()) != smcd.devices {
                    return Err(ClcError::Malformed("device list exceeds 8 entries"));
                }
                if smcd
                    .devices
                    .iter()
                    .any(|d| !d.is_emulated() && d.gid_ext != 0)
                {
                    return Err(ClcError::Malformed("native device with gid_ext"));
                }
            }
        }
        Ok(())
    }

    /// Writes the message (see the type's documentation for what is written).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.resize(FIXED_LEN, 0);
        let v1 = self.version < SMC_V2;
        let prefix_default = IpPrefix::default();
        let prefix = if v1 {
            Some(self.prefix.as_ref().unwrap_or(&prefix_default))
        } else {
            self.prefix.as_ref()
        };
        if let Some(p) = prefix {
            let ipv6 = &p.ipv6[..p.ipv6.len().min(MAX_IPV6_PREFIXES)];
            let w = PrefixWire {
                outgoing_subnet: U32::new(p.outgoing_subnet),
                prefix_len: p.prefix_len,
                reserved: [0; 2],
                ipv6_prefixes_cnt: ipv6.len() as u8,
            };
            out.extend_from_slice(w.as_bytes());
            for e in ipv6 {
                let w = Ipv6PrefixWire {
                    prefix: e.prefix,
                    prefix_len: e.prefix_len,
                };
                out.extend_from_slice(w.as_bytes());
            }
        }
        let mut v2_ext_offset = 0;
        let mut smcd_devices = Vec::new();
        if let (false, Some(v2)) = (v1, &self.v2) {
            v2_ext_offset = out.len() - V2_EXT_BASE;
            let eids = &v2.eids[..v2.eids.len().min(MAX_UEIDS)];
            let entries = v2.smcd.as_ref().map(|s| {
                smcd_devices = select_v2_devices(s.devices.iter().copied());
                entries_from_devices(&smcd_devices)
            });
            let w = V2ExtWire {
                eid_cnt: eids.len() as u8,
                ism_gid_cnt: entries.as_ref().map_or(0, |e| e.len() as u8),
                reserved1: 0,
                flag: (v2.release & 0x0F) << 4 | u8::from(v2.seid),
                reserved2: [0; 2],
                smcd_v2_ext_offset: U16::new(if v2.smcd.is_some() {
                    (V2_EXT_LEN - 8 + EID_LEN * eids.len()) as u16
                } else {
                    0
                }),
                roce_gid: v2.roce_gid,
                max_conns: v2.max_conns,
                max_links: v2.max_links,
                feature_mask: U16::new(v2.feature_mask),
                reserved3: [0; 12],
            };
            out.extend_from_slice(w.as_bytes());
            for e in eids {
                out.extend_from_slice(e);
            }
            if let (Some(s), Some(entries)) = (&v2.smcd, entries) {
                let w = SmcdV2ExtWire {
                    system_eid: s.system_eid,
                    reserved: [0; 16],
                };
                out.extend_from_slice(w.as_bytes());
                for (gid, chid) in entries {
                    let w = GidChidWire {
                        gid: U64::new(gid),
                        chid: U16::new(chid),
                    };
                    out.extend_from_slice(w.as_bytes());
                }
            }
        }
        out.extend_from_slice(&Eyecatcher::Smcr.bytes());
        let hdr = ClcHeader {
            eyecatcher: Eyecatcher::Smcr,
            msg_type: ClcType::Proposal,
            length: out.len() as u16,
            version: self.version,
            typev2: self.typev2.bits(),
            typev1: self.typev1.bits(),
        };
        let has_prefix = prefix.is_some();
        let fixed = ProposalFixedWire {
            hdr: zerocopy::transmute!(hdr.emit()),
            lcl_id_for_peer: self.smcr.id_for_peer,
            lcl_gid: self.smcr.gid,
            lcl_mac: self.smcr.mac,
            iparea_offset: U16::new(if has_prefix {
                (FIXED_LEN - SMCD_AREA_OFFSET) as u16
            } else {
                0
            }),
            ism_gid: U64::new(self.ism_gid),
            ism_chid: U16::new(self.ism_chid),
            v2_ext_offset: U16::new(v2_ext_offset as u16),
            vendor_oui: [0; 3],
            vendor_exp_options: [0; 5],
            reserved: [0; 20],
        };
        out[..FIXED_LEN].copy_from_slice(fixed.as_bytes());
        out
    }

    /// Parses a whole proposal (`bytes.len()` must equal the header's length), performing the
    /// receiver's length check and the offset and count checks described in the module docs.
    pub fn parse(bytes: &[u8]) -> Result<Self, ClcError> {
        let hdr = check_frame(bytes, &[ClcType::Proposal])?;
        let len = hdr.length;
        let typev1 = hdr.smc_type_v1();
        let typev2 = hdr.smc_type_v2();
        // The 40-byte base every version has.
        let base: &[u8; SMCD_AREA_OFFSET] = take(bytes, 0, len)?;
        let smcr = SmcrLocal {
            id_for_peer: base[8..16].try_into().unwrap_or_default(),
            gid: base[16..32].try_into().unwrap_or_default(),
            mac: base[32..38].try_into().unwrap_or_default(),
        };
        let iparea_offset = usize::from(u16::from_be_bytes([base[38], base[39]]));
        if hdr.version == SMC_V1 {
            return Self::parse_v1(bytes, &hdr, smcr, iparea_offset);
        }
        // Version 2 (and later, read as 2), as `net/smc/smc_clc.c` `smc_clc_msg_prop_valid`
        // and the `smc_get_clc_*` accessors of `net/smc/smc_clc.h` read it: every part is
        // where its offset field points, offsets are bounded (not required to be exact),
        // counts are at most 8, and bytes after the last part are ignored.
        let body = &bytes[..bytes.len() - TRAILER_LEN];
        let f: &ProposalFixedWire = take(body, 0, len)?;
        let (ism_gid, ism_chid) = (f.ism_gid.get(), f.ism_chid.get());
        // `smc_clc_proposal_get_prefix`: an offset beyond the SMC-D area counts as 0.
        let off = if iparea_offset > FIXED_LEN - SMCD_AREA_OFFSET {
            0
        } else {
            iparea_offset
        };
        let prefix = if typev1 != SmcType::N {
            Some(Self::parse_prefix(body, SMCD_AREA_OFFSET + off, len)?.0)
        } else {
            None
        };
        let v2 = if typev2 != SmcType::N {
            // `smc_get_clc_v2_ext`: non-zero and at most where 8 IPv6 prefixes end.
            let o = usize::from(f.v2_ext_offset.get());
            if o == 0 || o > MAX_V2_EXT_OFFSET {
                return Err(ClcError::Malformed("v2_ext_offset"));
            }
            let xpos = V2_EXT_BASE + o;
            let x: &V2ExtWire = take(body, xpos, len)?;
            let eid_cnt = usize::from(x.eid_cnt);
            let gid_cnt = usize::from(x.ism_gid_cnt);
            if eid_cnt > MAX_UEIDS {
                return Err(ClcError::Malformed("too many user EIDs"));
            }
            if typev2.smcd_indicated() && gid_cnt > MAX_GID_ENTRIES {
                return Err(ClcError::Malformed("too many GID/CHID entries"));
            }
            let mut eids = Vec::with_capacity(eid_cnt);
            for i in 0..eid_cnt {
                let e: &Eid = take(body, xpos + V2_EXT_LEN + i * EID_LEN, len)?;
                eids.push(*e);
            }
            // `smc_get_clc_smcd_v2_ext`: non-zero and at most where 8 user EIDs end;
            // otherwise there is none (the server then declines `NOV2DEXT`).
            let so = usize::from(x.smcd_v2_ext_offset.get());
            let smcd = if typev2.smcd_indicated() && so != 0 && so <= MAX_SMCD_V2_EXT_OFFSET {
                let dpos = xpos + 8 + so;
                let d: &SmcdV2ExtWire = take(body, dpos, len)?;
                let mut entries = Vec::with_capacity(gid_cnt);
                for i in 0..gid_cnt {
                    let e: &GidChidWire =
                        take(body, dpos + SMCD_V2_EXT_LEN + i * GID_CHID_LEN, len)?;
                    entries.push((e.gid.get(), e.chid.get()));
                }
                Some(SmcdV2Ext {
                    system_eid: d.system_eid,
                    devices: devices_from_entries(&entries),
                })
            } else {
                None
            };
            Some(ProposalV2 {
                release: x.flag >> 4,
                seid: x.flag & 1 != 0,
                eids,
                roce_gid: x.roce_gid,
                max_conns: x.max_conns,
                max_links: x.max_links,
                feature_mask: x.feature_mask.get(),
                smcd,
            })
        } else {
            None
        };
        Ok(Self {
            version: hdr.version,
            typev1,
            typev2,
            smcr,
            ism_gid,
            ism_chid,
            prefix,
            v2,
        })
    }
}

impl Proposal {
    /// The prefix area at `pos` and the position after it.
    fn parse_prefix(body: &[u8], pos: usize, len: u16) -> Result<(IpPrefix, usize), ClcError> {
        let p: &PrefixWire = take(body, pos, len)?;
        let mut at = pos + PREFIX_LEN;
        let n6 = usize::from(p.ipv6_prefixes_cnt);
        if n6 > MAX_IPV6_PREFIXES {
            return Err(ClcError::Malformed("too many IPv6 prefixes"));
        }
        let mut ipv6 = Vec::with_capacity(n6);
        for _ in 0..n6 {
            let e: &Ipv6PrefixWire = take(body, at, len)?;
            at += IPV6_PREFIX_LEN;
            ipv6.push(Ipv6Prefix {
                prefix: e.prefix,
                prefix_len: e.prefix_len,
            });
        }
        Ok((
            IpPrefix {
                outgoing_subnet: p.outgoing_subnet.get(),
                prefix_len: p.prefix_len,
                ipv6,
            },
            at,
        ))
    }

    /// Version 1, checked exactly as `smc_clc_msg_prop_valid` does: a type offered, and
    /// `length = 40 + iparea_offset + 8 + 17·n6 + 4`.
    fn parse_v1(
        bytes: &[u8],
        hdr: &ClcHeader,
        smcr: SmcrLocal,
        iparea_offset: usize,
    ) -> Result<Self, ClcError> {
        let len = hdr.length;
        if hdr.smc_type_v1() == SmcType::N {
            return Err(ClcError::Malformed("v1 proposal offers no type"));
        }
        let (ism_gid, ism_chid, pos) = match iparea_offset {
            0 => (0, 0, SMCD_AREA_OFFSET),
            40 => {
                let f: &ProposalFixedWire = take(bytes, 0, len)?;
                (f.ism_gid.get(), f.ism_chid.get(), FIXED_LEN)
            }
            _ => return Err(ClcError::Malformed("iparea_offset")),
        };
        let (prefix, pos) = Self::parse_prefix(bytes, pos, len)?;
        if pos + TRAILER_LEN != usize::from(len) {
            return Err(ClcError::BadLength(len));
        }
        Ok(Self {
            version: hdr.version,
            typev1: hdr.smc_type_v1(),
            typev2: hdr.smc_type_v2(),
            smcr,
            ism_gid,
            ism_chid,
            prefix: Some(prefix),
            v2: None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const SMCR: [u8; 4] = [0xE2, 0xD4, 0xC3, 0xD9];

    fn seid() -> Eid {
        *b"IBM-SYSZ-ISMSEID000000001234ABCD"
    }

    /// typev1 = D (native device in the SMC-D area, IPv4 prefix), typev2 = D with SEID and no
    /// GID/CHID entries.
    #[test]
    fn golden_native_only() {
        let p = Proposal {
            version: 2,
            typev1: SmcType::D,
            typev2: SmcType::D,
            smcr: SmcrLocal::default(),
            ism_gid: 0x0102_0304_0506_0708,
            ism_chid: 0x0A0B,
            prefix: Some(IpPrefix {
                outgoing_subnet: 0xC0A8_0100,
                prefix_len: 24,
                ipv6: vec![],
            }),
            v2: Some(ProposalV2 {
                release: 1,
                seid: true,
                eids: vec![],
                smcd: Some(SmcdV2Ext {
                    system_eid: seid(),
                    devices: vec![],
                }),
                ..ProposalV2::default()
            }),
        };
        let mut e = Vec::new();
        // 0: header, length 180 = 0xB4, version 2, typev2 D, typev1 D
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 0xB4, 0x25]);
        // 8: lcl id/gid/mac
        e.extend_from_slice(&[0; 30]);
        // 38: iparea_offset 40
        e.extend_from_slice(&[0x00, 0x28]);
        // 40: ism gid, 48: ism chid
        e.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B]);
        // 50: v2_ext_offset = 88 - 52 = 36
        e.extend_from_slice(&[0x00, 0x24]);
        // 52: vendor oui/options, reserved
        e.extend_from_slice(&[0; 28]);
        assert_eq!(e.len(), 80);
        // 80: prefix 192.168.1.0/24, no IPv6
        e.extend_from_slice(&[0xC0, 0xA8, 0x01, 0x00, 24, 0, 0, 0]);
        assert_eq!(e.len(), 88);
        // 88: v2 ext: eid_cnt 0, gid_cnt 0, res, release 1 | seid, res, smcd_v2_ext_offset 32
        e.extend_from_slice(&[0, 0, 0, 0x11, 0, 0, 0x00, 0x20]);
        // 96: roce gid; 112: max_conns, max_links; 114: feature mask 1; 116: reserved
        e.extend_from_slice(&[0; 16]);
        e.extend_from_slice(&[0, 0, 0x00, 0x01]);
        e.extend_from_slice(&[0; 12]);
        assert_eq!(e.len(), 128);
        // 128: SMC-Dv2 ext: system EID, reserved
        e.extend_from_slice(b"IBM-SYSZ-ISMSEID000000001234ABCD");
        e.extend_from_slice(&[0; 16]);
        assert_eq!(e.len(), 176);
        // 176: trailer
        e.extend_from_slice(&SMCR);
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.emit(), e);
        assert_eq!(Proposal::parse(&e), Ok(p.clone()));
        assert_eq!(p.v1_device().map(|d| d.chid), Some(0x0A0B));
        assert!(p.v2_devices().is_empty());
    }

    /// typev1 = N, typev2 = D, one UEID; loopback-ism (2 entries) then a native device.
    #[test]
    fn golden_native_and_loopback() {
        let lo = SmcdDevice {
            gid: 0x1111_2222_3333_4444,
            gid_ext: 0x5555_6666_7777_8888,
            chid: 0xFFFF,
        };
        let ism = SmcdDevice {
            gid: 0xAABB_CCDD_EEFF_0011,
            gid_ext: 0,
            chid: 0x0123,
        };
        let mut ueid = [b' '; 32];
        ueid[..8].copy_from_slice(b"MY-UEID1");
        let p = Proposal {
            version: 2,
            typev1: SmcType::N,
            typev2: SmcType::D,
            smcr: SmcrLocal::default(),
            ism_gid: 0,
            ism_chid: 0,
            prefix: None,
            v2: Some(ProposalV2 {
                eids: vec![ueid],
                smcd: Some(SmcdV2Ext {
                    system_eid: [0; 32],
                    devices: vec![lo, ism],
                }),
                ..ProposalV2::default()
            }),
        };
        let mut e = Vec::new();
        // header: length 234 = 0xEA, version 2, typev2 D (1), typev1 N (2)
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 0xEA, 0x26]);
        e.extend_from_slice(&[0; 30]);
        // 38: iparea_offset 0 (no prefix); 40: gid 0, chid 0; 50: v2_ext_offset 28
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&[0; 10]);
        e.extend_from_slice(&[0x00, 0x1C]);
        e.extend_from_slice(&[0; 28]);
        assert_eq!(e.len(), 80);
        // 80: v2 ext: eid_cnt 1, ism_gid_cnt 3, res, release 1, seid 0, res, offset 64
        e.extend_from_slice(&[1, 3, 0, 0x10, 0, 0, 0x00, 0x40]);
        e.extend_from_slice(&[0; 16]);
        e.extend_from_slice(&[0, 0, 0x00, 0x01]);
        e.extend_from_slice(&[0; 12]);
        assert_eq!(e.len(), 120);
        // 120: UEID
        e.extend_from_slice(b"MY-UEID1                        ");
        assert_eq!(e.len(), 152);
        // 152: SMC-Dv2 ext: zero SEID, reserved
        e.extend_from_slice(&[0; 48]);
        assert_eq!(e.len(), 200);
        // 200: {lo.gid, FFFF}, {lo.gid_ext, FFFF}, {ism.gid, 0123}
        e.extend_from_slice(&[0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0xFF, 0xFF]);
        e.extend_from_slice(&[0x55, 0x55, 0x66, 0x66, 0x77, 0x77, 0x88, 0x88, 0xFF, 0xFF]);
        e.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x11, 0x01, 0x23]);
        assert_eq!(e.len(), 230);
        e.extend_from_slice(&SMCR);
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.emit(), e);
        assert_eq!(Proposal::parse(&e), Ok(p.clone()));
        assert_eq!(p.v1_device(), None);
        assert_eq!(p.v2_devices(), &[lo, ism]);
    }

    /// typev1 = D with an IPv4 and an IPv6 prefix, typev2 = D; candidates: loopback (2
    /// entries), 5 native (5), a virtio-ism (would need 2, 1 left: skipped), a native (1):
    /// 8 entries.
    #[test]
    fn golden_eight_entries() {
        let lo = SmcdDevice {
            gid: 0x0000_0000_0000_0001,
            gid_ext: 0x0000_0000_0000_0002,
            chid: 0xFFFF,
        };
        let native = |n: u8| SmcdDevice {
            gid: 0x1000_0000_0000_0000 | u64::from(n),
            gid_ext: 0,
            chid: 0x0100 | u16::from(n),
        };
        let virtio = SmcdDevice {
            gid: 7,
            gid_ext: 8,
            chid: 0xFF00,
        };
        let candidates = vec![
            lo,
            native(1),
            native(2),
            native(3),
            native(4),
            native(5),
            virtio,
            native(6),
        ];
        let offered = select_v2_devices(candidates.iter().copied());
        assert_eq!(offered.len(), 7);
        assert!(!offered.contains(&virtio));
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&[0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0]);
        let p = Proposal {
            version: 2,
            typev1: SmcType::D,
            typev2: SmcType::D,
            smcr: SmcrLocal::default(),
            ism_gid: 0x2000_0000_0000_0000,
            ism_chid: 0x0200,
            prefix: Some(IpPrefix {
                outgoing_subnet: 0,
                prefix_len: 0,
                ipv6: vec![Ipv6Prefix {
                    prefix: v6,
                    prefix_len: 64,
                }],
            }),
            v2: Some(ProposalV2 {
                seid: true,
                smcd: Some(SmcdV2Ext {
                    system_eid: seid(),
                    devices: candidates,
                }),
                ..ProposalV2::default()
            }),
        };
        // Not consistent as given (the list is cut by emit), but emit is well defined.
        assert!(p.check().is_err());
        let mut e = Vec::new();
        // length 80 + 8 + 17 + 40 + 48 + 80 + 4 = 277 = 0x0115
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x01, 0x15, 0x25]);
        e.extend_from_slice(&[0; 30]);
        e.extend_from_slice(&[0x00, 0x28]);
        e.extend_from_slice(&[0x20, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]);
        // v2_ext_offset = 105 - 52 = 53
        e.extend_from_slice(&[0x00, 0x35]);
        e.extend_from_slice(&[0; 28]);
        // 80: IPv4 0.0.0.0/0, 1 IPv6 prefix
        e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        // 88: 2001:db8::/64
        e.extend_from_slice(&[
            0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64,
        ]);
        assert_eq!(e.len(), 105);
        // 105: v2 ext: 0 EIDs, 8 entries, release 1 | seid, smcd_v2_ext_offset 32
        e.extend_from_slice(&[0, 8, 0, 0x11, 0, 0, 0x00, 0x20]);
        e.extend_from_slice(&[0; 16]);
        e.extend_from_slice(&[0, 0, 0x00, 0x01]);
        e.extend_from_slice(&[0; 12]);
        assert_eq!(e.len(), 145);
        e.extend_from_slice(b"IBM-SYSZ-ISMSEID000000001234ABCD");
        e.extend_from_slice(&[0; 16]);
        assert_eq!(e.len(), 193);
        e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF]);
        e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0xFF, 0xFF]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0x01]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0x02]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x03, 0x01, 0x03]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x04, 0x01, 0x04]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x05, 0x01, 0x05]);
        e.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0x06, 0x01, 0x06]);
        assert_eq!(e.len(), 273);
        e.extend_from_slice(&SMCR);
        assert_eq!(p.emit(), e);
        let parsed = Proposal::parse(&e).unwrap();
        assert_eq!(parsed.v2_devices(), &offered[..]);
        assert_eq!(parsed.check(), Ok(()));
    }

    /// A Linux 4.19-style v1 proposal offering SMC-D.
    #[test]
    fn golden_v1() {
        let p = Proposal {
            version: 1,
            typev1: SmcType::D,
            typev2: SmcType::R,
            smcr: SmcrLocal::default(),
            ism_gid: 0x0000_0000_0000_00AB,
            ism_chid: 0,
            prefix: Some(IpPrefix {
                outgoing_subnet: 0x0A00_0000,
                prefix_len: 8,
                ipv6: vec![],
            }),
            v2: None,
        };
        let mut e = Vec::new();
        // length 92, version 1, flag 0, typev1 D
        e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 92, 0x11]);
        e.extend_from_slice(&[0; 30]);
        e.extend_from_slice(&[0x00, 0x28]);
        e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xAB]);
        e.extend_from_slice(&[0; 32]);
        e.extend_from_slice(&[10, 0, 0, 0, 8, 0, 0, 0]);
        e.extend_from_slice(&SMCR);
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.emit(), e);
        assert_eq!(Proposal::parse(&e), Ok(p));

        // The SMC-R-only form without an SMC-D area: iparea_offset 0, prefix at 40.
        let mut r = Vec::new();
        r.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 52, 0x10]);
        r.extend_from_slice(&[0x55; 30]);
        r.extend_from_slice(&[0, 0]);
        r.extend_from_slice(&[10, 0, 0, 0, 8, 0, 0, 0]);
        r.extend_from_slice(&SMCR);
        let q = Proposal::parse(&r).unwrap();
        assert_eq!(q.typev1, SmcType::R);
        assert_eq!(q.smcr.mac, [0x55; 6]);
        assert_eq!(q.ism_gid, 0);
        assert_eq!(q.prefix.unwrap().prefix_len, 8);
    }

    #[test]
    fn receiver_checks() {
        let good = {
            let mut e = Vec::new();
            e.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 84, 0x2A]);
            e.extend_from_slice(&[0; 72]);
            e.extend_from_slice(&SMCR);
            e
        };
        // v2, typev1 N, typev2 N: just the fixed part.
        let p = Proposal::parse(&good).unwrap();
        assert!(p.prefix.is_none() && p.v2.is_none());
        // Longer than its parts: the excess is ignored (Linux checks a v2 length only
        // against the minimum).
        let mut long = good.clone();
        long[6] = 85;
        long.insert(80, 0);
        assert_eq!(Proposal::parse(&long), Ok(p));
        // v2_ext_offset: 0 or beyond the 8th IPv6 prefix is no extension (refused when
        // typev2 offers one); in between, the extension is read where it points.
        let mut m = Vec::new();
        m.extend_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 124, 0x22]);
        m.extend_from_slice(&[0; 42]);
        m.extend_from_slice(&[0x00, 0x00]);
        m.extend_from_slice(&[0; 28]);
        m.extend_from_slice(&[0; 40]);
        m.extend_from_slice(&SMCR);
        assert_eq!(
            Proposal::parse(&m),
            Err(ClcError::Malformed("v2_ext_offset"))
        );
        m[51] = (MAX_V2_EXT_OFFSET + 1) as u8;
        assert_eq!(
            Proposal::parse(&m),
            Err(ClcError::Malformed("v2_ext_offset"))
        );
        m[51] = 0x1C;
        assert!(Proposal::parse(&m).is_ok());
        // Pointing one byte further: the extension would end in the trailer.
        m[51] = 0x1D;
        assert_eq!(Proposal::parse(&m), Err(ClcError::BadLength(124)));
        m[51] = 0x1C;
        // eid_cnt 9
        m[80] = 9;
        assert_eq!(
            Proposal::parse(&m),
            Err(ClcError::Malformed("too many user EIDs"))
        );
        // Wrong type.
        let mut t = good.clone();
        t[4] = 4;
        assert_eq!(Proposal::parse(&t), Err(ClcError::BadType(4)));
        // Bad trailer.
        let mut t = good.clone();
        t[83] = 0;
        assert_eq!(Proposal::parse(&t), Err(ClcError::BadTrailer));
        // Truncated.
        assert_eq!(Proposal::parse(&good[..83]), Err(ClcError::Truncated));
    }

    #[test]
    fn pairing_rule() {
        // An emulated entry without a partner is skipped; the next entry is still used.
        let entries = [
            (1, 0xFFFF),
            (2, 0x0001),
            (3, 0xFF01),
            (4, 0xFF01),
            (5, 0xFF02),
        ];
        assert_eq!(
            devices_from_entries(&entries),
            vec![
                SmcdDevice {
                    gid: 2,
                    gid_ext: 0,
                    chid: 1
                },
                SmcdDevice {
                    gid: 3,
                    gid_ext: 4,
                    chid: 0xFF01
                },
            ]
        );
    }

    #[test]
    fn capacity_rule_and_device_kinds() {
        let native = |n: u16| SmcdDevice {
            gid: u64::from(n),
            gid_ext: 0,
            chid: 0x0100 + n,
        };
        let emulated = |chid| SmcdDevice {
            gid: 9,
            gid_ext: 10,
            chid,
        };
        // Five native devices (5 entries) leave room for an Emulated-ISM one (2 more).
        let mut d: Vec<SmcdDevice> = (1..=5).map(native).collect();
        d.push(emulated(0xFF00));
        assert_eq!(select_v2_devices(d.iter().copied()), d);
        // Seven entries used: an Emulated-ISM device no longer fits, a native one does.
        d.push(emulated(0xFF01));
        d.push(native(6));
        let mut want = d.clone();
        want.remove(6);
        assert_eq!(select_v2_devices(d.iter().copied()), want);
        assert!(emulated(0xFFFF).is_loopback() && emulated(0xFFFF).is_emulated());
        assert!(!emulated(0xFF00).is_loopback() && emulated(0xFF00).is_emulated());
        assert!(!native(1).is_loopback() && !native(1).is_emulated());
        assert_eq!((native(1).entries(), emulated(0xFF00).entries()), (1, 2));
    }

    /// `smcd_v2_ext_offset` is followed up to where 8 user EIDs end (288) and no further
    /// (`smc_get_clc_smcd_v2_ext`).
    #[test]
    fn smcd_v2_ext_offset_is_bounded() {
        assert_eq!(MAX_SMCD_V2_EXT_OFFSET, 288);
        // typev1 N, typev2 D; the v2 extension at 80, the SMC-Dv2 one at 80 + 8 + 288.
        let mut m = vec![0u8; 428];
        m[..8].copy_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x01, 0xAC, 0x26]);
        m[51] = 0x1C; // v2_ext_offset 28
        m[83] = 0x10; // release 1
        m[86..88].copy_from_slice(&288u16.to_be_bytes());
        m[376] = 0x41; // first byte of the system EID
        m[424..].copy_from_slice(&SMCR);
        let p = Proposal::parse(&m).unwrap();
        let smcd =
            p.v2.unwrap()
                .smcd
                .expect("an SMC-Dv2 extension at offset 288");
        assert_eq!(smcd.system_eid[0], 0x41);
        // One further: not followed, so there is none (the server declines NOV2DEXT).
        m[86..88].copy_from_slice(&289u16.to_be_bytes());
        let p = Proposal::parse(&m).unwrap();
        assert_eq!(p.v2.unwrap().smcd, None);
    }

    #[test]
    fn v1_device_needs_smcd_offered_and_a_gid() {
        let p = |typev1, ism_gid| Proposal {
            version: 2,
            typev1,
            typev2: SmcType::N,
            smcr: SmcrLocal::default(),
            ism_gid,
            ism_chid: 7,
            prefix: Some(IpPrefix::default()),
            v2: None,
        };
        let dev = SmcdDevice {
            gid: 5,
            gid_ext: 0,
            chid: 7,
        };
        assert_eq!(p(SmcType::D, 5).v1_device(), Some(dev));
        assert_eq!(p(SmcType::B, 5).v1_device(), Some(dev));
        assert_eq!(p(SmcType::R, 5).v1_device(), None);
        assert_eq!(p(SmcType::D, 0).v1_device(), None);
        // Versions: 1 to 15 (later ones are read as 2); 0 and what a nibble cannot hold are
        // refused.
        for v in [2, 15] {
            assert_eq!(
                Proposal {
                    version: v,
                    ..p(SmcType::D, 5)
                }
                .check(),
                Ok(())
            );
        }
        for v in [0, 16] {
            assert_eq!(
                Proposal {
                    version: v,
                    ..p(SmcType::D, 5)
                }
                .check(),
                Err(ClcError::BadVersion(v))
            );
        }
    }

    /// An `iparea_offset` past the SMC-D area counts as 0: the prefix is read at 40
    /// (`smc_clc_proposal_get_prefix`).
    #[test]
    fn an_iparea_offset_past_the_smcd_area_counts_as_zero() {
        // v2, typev1 D, typev2 N, 96 bytes; bytes 40..48 (where the ISM GID is) read as
        // the prefix 10.0.0.0/24.
        let mut m = vec![0u8; 96];
        m[..8].copy_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 96, 0x29]);
        m[39] = 41;
        m[40..48].copy_from_slice(&[10, 0, 0, 0, 24, 0, 0, 0]);
        m[92..].copy_from_slice(&SMCR);
        let p = Proposal::parse(&m).unwrap().prefix.unwrap();
        assert_eq!((p.outgoing_subnet, p.prefix_len), (0x0A00_0000, 24));
    }

    /// The SMC-Dv2 extension is read only when typev2 offers SMC-D, whatever the offset.
    #[test]
    fn no_smcd_v2_extension_unless_typev2_offers_smcd() {
        // v2, typev1 N, typev2 R, 172 bytes; the v2 extension at 80 with
        // smcd_v2_ext_offset 32 (as if an SMC-Dv2 extension followed at 120).
        let mut m = vec![0u8; 172];
        m[..8].copy_from_slice(&[0xE2, 0xD4, 0xC3, 0xD9, 0x01, 0x00, 172, 0x22]);
        m[51] = 0x1C;
        m[83] = 0x10;
        m[87] = 32;
        m[168..].copy_from_slice(&SMCR);
        let v2 = Proposal::parse(&m).unwrap().v2.unwrap();
        assert_eq!(v2.smcd, None);
        // The same with typev2 D: read.
        m[7] = 0x26;
        assert!(Proposal::parse(&m).unwrap().v2.unwrap().smcd.is_some());
    }

    fn arb_device() -> impl Strategy<Value = SmcdDevice> {
        prop_oneof![
            (any::<u64>(), 0u16..0xFF00).prop_map(|(gid, chid)| SmcdDevice {
                gid,
                gid_ext: 0,
                chid
            }),
            (any::<u64>(), any::<u64>(), 0xFF00u16..=0xFFFF)
                .prop_map(|(gid, gid_ext, chid)| { SmcdDevice { gid, gid_ext, chid } }),
        ]
    }

    fn arb_type() -> impl Strategy<Value = SmcType> {
        (0u8..4).prop_map(SmcType::from_bits)
    }

    prop_compose! {
        fn arb_prefix()(subnet in any::<u32>(), len in any::<u8>(),
                        v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u8>()), 0..=8))
                        -> IpPrefix {
            IpPrefix {
                outgoing_subnet: subnet,
                prefix_len: len,
                ipv6: v6.into_iter().map(|(prefix, prefix_len)| Ipv6Prefix { prefix, prefix_len }).collect(),
            }
        }
    }

    prop_compose! {
        fn arb_v2(smcd: bool)(release in 0u8..16, seid in any::<bool>(),
                    eids in proptest::collection::vec(any::<[u8; 32]>(), 0..=8),
                    roce_gid in any::<[u8; 16]>(), max_conns in any::<u8>(), max_links in any::<u8>(),
                    feature_mask in any::<u16>(), system_eid in any::<[u8; 32]>(),
                    devices in proptest::collection::vec(arb_device(), 0..10)) -> ProposalV2 {
            ProposalV2 {
                release, seid, eids, roce_gid, max_conns, max_links, feature_mask,
                smcd: smcd.then(|| SmcdV2Ext { system_eid, devices: select_v2_devices(devices) }),
            }
        }
    }

    pub(crate) fn arb_proposal() -> impl Strategy<Value = Proposal> {
        let v2 = (arb_type(), arb_type()).prop_flat_map(|(t1, t2)| {
            (
                Just(t1),
                Just(t2),
                any::<([u8; 8], [u8; 16], [u8; 6])>(),
                any::<(u64, u16)>(),
                proptest::option::of(arb_prefix()),
                arb_v2(t2.smcd_indicated()),
            )
                .prop_map(|(t1, t2, (id, gid, mac), (ig, ic), prefix, v2)| Proposal {
                    version: 2,
                    typev1: t1,
                    typev2: t2,
                    smcr: SmcrLocal {
                        id_for_peer: id,
                        gid,
                        mac,
                    },
                    ism_gid: ig,
                    ism_chid: ic,
                    prefix: if t1 == SmcType::N {
                        None
                    } else {
                        Some(prefix.unwrap_or_default())
                    },
                    v2: (t2 != SmcType::N).then_some(v2),
                })
        });
        let v1 = (
            prop_oneof![Just(SmcType::R), Just(SmcType::D), Just(SmcType::B)],
            arb_type(),
            any::<(u64, u16)>(),
            arb_prefix(),
        )
            .prop_map(|(t1, t2, (ig, ic), prefix)| Proposal {
                version: 1,
                typev1: t1,
                typev2: t2,
                smcr: SmcrLocal::default(),
                ism_gid: ig,
                ism_chid: ic,
                prefix: Some(prefix),
                v2: None,
            });
        prop_oneof![4 => v2, 1 => v1]
    }

    proptest! {
        #[test]
        fn roundtrip(p in arb_proposal()) {
            prop_assert_eq!(p.check(), Ok(()));
            let bytes = p.emit();
            prop_assert!(bytes.len() <= super::super::MAX_MESSAGE_LEN);
            prop_assert_eq!(Proposal::parse(&bytes), Ok(p));
        }

        #[test]
        fn truncations_never_panic(p in arb_proposal(), cut in any::<prop::sample::Index>()) {
            let bytes = p.emit();
            let n = cut.index(bytes.len());
            prop_assert!(Proposal::parse(&bytes[..n]).is_err());
            // With the header's length patched to the cut length as well.
            let mut b = bytes[..n].to_vec();
            if b.len() >= 8 {
                b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
                let _ = Proposal::parse(&b);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..700),
                                       ver in 1u8..3, types in any::<u8>()) {
            let _ = Proposal::parse(&b);
            // Make the frame valid so the body checks are exercised.
            if b.len() >= 12 {
                let n = b.len();
                b[..4].copy_from_slice(&SMCR);
                b[4] = 1;
                b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
                b[7] = ver << 4 | (types & 0x0F);
                b[n - 4..].copy_from_slice(&SMCR);
                let _ = Proposal::parse(&b);
            }
        }

        #[test]
        fn mutations_never_panic(p in arb_proposal(), idx in any::<prop::sample::Index>(), v in any::<u8>()) {
            let mut b = p.emit();
            let i = idx.index(b.len());
            b[i] = v;
            if let Ok(q) = Proposal::parse(&b) {
                // Whatever parses re-emits to something that parses to the same value.
                prop_assert_eq!(Proposal::parse(&q.emit()), Ok(q));
            }
        }
    }
}
