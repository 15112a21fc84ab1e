//! CLC: the SMC connection-layer-control handshake carried over the TCP "clcsock".
//!
//! A client sends a [`Proposal`]; the server answers with an ACCEPT or a DECLINE; the client
//! confirms with a CONFIRM (or declines). Each message is one frame:
//!
//! | part    | size | content                                               |
//! |---------|------|-------------------------------------------------------|
//! | header  | 8    | [`header`]: eyecatcher, type, BE length, version/types |
//! | body    | …    | per type: [`proposal`], [`accept_confirm`], [`decline`] |
//! | trailer | 4    | eyecatcher again (`length − 4`)                        |
//!
//! All multi-byte integers are **network (big-endian) order**; layouts follow Linux's
//! `net/smc/smc_clc.h`. Eyecatchers are EBCDIC: "SMCR" `E2 D4 C3 D9` (proposals,
//! declines, SMC-R), "SMCD" `E2 D4 C3 C4` (SMC-D accept/confirm). Receivers accept either, on
//! header and trailer independently, as Linux does.
//!
//! Style (as smoltcp's `wire`): fixed parts are zerocopy structs of unaligned big-endian
//! fields, taken as views only after a length check, so parsing never panics; each message has
//! a typed representation with `parse` (validating everything a Linux receiver validates, plus
//! offset sanity checks) and `emit`. Reading from a stream: peek the 8-byte header, call
//! [`read_message_len`], read the rest, then [`ClcMessage::parse`].
//!
//! Choices where Linux leaves room, or where this model differs (documented at each item):
//! * version 0 is rejected ([`ClcError::BadVersion`]); versions above 2 are parsed as
//!   version 2, as Linux does (a proposal keeps the number it came with);
//! * messages are bounded by [`MAX_MESSAGE_LEN`] (the largest legal proposal is 652 bytes);
//! * lengths: a v2 accept/confirm or proposal may be longer than its parts (the excess is
//!   ignored, as Linux does); v1 messages and declines are checked exactly (as Linux);
//!   [`crate::smcd::handshake::read_clc`] reads a message longer than [`MAX_MESSAGE_LEN`] up to
//!   that bound and discards the rest (Linux's `smc_clc_wait_msg` does so at its buffer size);
//! * only SMC-D accept/confirm bodies are modelled; an SMC-R one parses to
//!   [`ClcError::NotSmcd`].

use core::fmt;

use alloc::vec::Vec;

pub mod accept_confirm;
pub mod decline;
pub mod header;
pub mod proposal;
pub mod reason;

pub use accept_confirm::{
    AcceptConfirm, AcceptConfirmKind, AcceptConfirmV2, FceV2x, FirstContactExt,
};
pub use decline::Decline;
pub use header::{ClcHeader, ClcType, Eyecatcher, SmcType, HEADER_LEN, TRAILER_LEN};
pub use proposal::{IpPrefix, Ipv6Prefix, Proposal, ProposalV2, SmcdDevice, SmcdV2Ext, SmcrLocal};
pub use reason::DeclineReason;

/// Largest CLC message this model reads or writes (bytes, header and trailer included).
///
/// The largest legal message is a v2 proposal with 8 IPv6 prefixes, 8 user EIDs and 8
/// GID/CHID entries: 80 + 8 + 136 + 40 + 256 + 48 + 80 + 4 = 652 bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Length of an EID (system EID or user EID) in bytes (`SMC_MAX_EID_LEN`).
pub const EID_LEN: usize = 32;

/// An enterprise ID (system or user EID): 32 bytes, as on the wire.
pub type Eid = [u8; EID_LEN];

/// The system EID of a host that is not an s390 machine: all zeros (`net/smc/smc_ism.c`
/// `smc_ism_create_system_eid`).
pub const SEID_NON_S390: Eid = [0; EID_LEN];

/// Prefix of the s390 system EID (24 ASCII characters).
pub const SEID_PREFIX: &[u8; 24] = b"IBM-SYSZ-ISMSEID00000000";

/// The system EID of an s390 machine (`smc_ism_create_system_eid`): `"IBM-SYSZ-ISMSEID00000000"`, then four
/// uppercase hex digits of `cpu_ident & 0xFFFF` (`SMC_ISM_IDENT_MASK`), then four of the CPU
/// machine type.
pub fn s390_system_eid(cpu_ident: u32, machine_type: u16) -> Eid {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut eid = [0u8; EID_LEN];
    eid[..24].copy_from_slice(SEID_PREFIX);
    let ident = (cpu_ident & 0xFFFF) as u16;
    for (i, v) in [ident, machine_type].into_iter().enumerate() {
        for d in 0..4 {
            let nibble = (v >> (12 - 4 * d)) & 0xF;
            eid[24 + 4 * i + d] = HEX[nibble as usize];
        }
    }
    eid
}

/// Smallest buffer size a compressed size can express (`SMC_BUF_MIN_SIZE`, 16 KiB).
pub const MIN_BUF_SIZE: usize = 16 * 1024;

/// Largest compressed DMBE size SMC-D uses (`SMCD_DMBE_SIZES`): 6, i.e. 1 MiB.
pub const SMCD_DMBE_SIZES: u8 = 6;

/// Compresses an SMC-D buffer size into the 4-bit CLC `dmbe_size` (`net/smc/smc_core.c`
/// `smc_compress_bufsize`).
///
/// Sizes up to 16 KiB give 0; otherwise `floor(log2((bytes − 1) >> 14)) + 1`, capped at
/// [`SMCD_DMBE_SIZES`]. The result `c` stands for `2^(c + 14)` bytes, the smallest such size
/// that holds `bytes` (up to the cap).
pub fn compress_dmbe_size(bytes: usize) -> u8 {
    if bytes <= MIN_BUF_SIZE {
        return 0;
    }
    let units = (bytes - 1) >> 14; // >= 1
    let log2 = (usize::BITS - 1 - units.leading_zeros()) as u8;
    (log2 + 1).min(SMCD_DMBE_SIZES)
}

/// Expands a compressed buffer size: `2^(c + 14)` bytes (`net/smc/smc_core.h`
/// `smc_uncompress_bufsize`).
///
/// Only the low four bits of `c` are used (the wire field is a nibble), so the result is at
/// most 512 MiB and never overflows. No cap is applied: a peer announcing more than 1 MiB is
/// the caller's business.
pub fn uncompress_dmbe_size(c: u8) -> usize {
    1usize << ((c & 0x0F) as u32 + 14)
}

/// Why a CLC message was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClcError {
    /// Fewer bytes than the header (or the header's length) asks for.
    Truncated,
    /// The header's eyecatcher is neither "SMCR" nor "SMCD".
    BadEyecatcher,
    /// The header's length is impossible for the message, or disagrees with the content or
    /// with the buffer handed to `parse`. Carries the header's length.
    BadLength(u16),
    /// The trailer (last 4 bytes) is neither "SMCR" nor "SMCD".
    BadTrailer,
    /// The type byte is not 1..=4, or not the type the parser expected. Carries the byte.
    BadType(u8),
    /// The version is not 1 or 2 (or not allowed for this message). Carries the version.
    BadVersion(u8),
    /// An SMC-R accept/confirm: this model only handles the SMC-D bodies.
    NotSmcd,
    /// A field is out of range or inconsistent with the others; the text names it.
    Malformed(&'static str),
}

impl fmt::Display for ClcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("CLC message truncated"),
            Self::BadEyecatcher => f.write_str("CLC header eyecatcher is neither SMCR nor SMCD"),
            Self::BadLength(l) => write!(f, "CLC message length {l} is invalid"),
            Self::BadTrailer => f.write_str("CLC trailer eyecatcher is neither SMCR nor SMCD"),
            Self::BadType(t) => write!(f, "unexpected CLC message type {t}"),
            Self::BadVersion(v) => write!(f, "unsupported CLC version {v}"),
            Self::NotSmcd => f.write_str("SMC-R accept/confirm is not supported"),
            Self::Malformed(what) => write!(f, "malformed CLC message: {what}"),
        }
    }
}

impl core::error::Error for ClcError {}

/// Validates an 8-byte CLC header as a stream reader peeks it, and returns the total message
/// length (header and trailer included) still to be read as one message.
///
/// Checks the eyecatcher, the type (1..=4), the version (1 or 2), and that the length is at
/// least the type's minimum (proposal 52, accept/confirm 48, decline 28) and at most
/// [`MAX_MESSAGE_LEN`]. Unlike Linux, which reads up to its buffer and discards any excess,
/// an over-long message is an error here ([`ClcError::BadLength`]).
pub fn read_message_len(header: &[u8; HEADER_LEN]) -> Result<usize, ClcError> {
    ClcHeader::parse(header).map(|h| usize::from(h.length))
}

/// Checks the framing of a whole message: a valid header of type `expected` whose length
/// equals `bytes.len()`, and a valid trailer. Returns the header.
pub(crate) fn check_frame(bytes: &[u8], expected: &[ClcType]) -> Result<ClcHeader, ClcError> {
    let hdr = ClcHeader::parse(bytes)?;
    if !expected.contains(&hdr.msg_type) {
        return Err(ClcError::BadType(hdr.msg_type as u8));
    }
    let len = usize::from(hdr.length);
    if bytes.len() < len {
        return Err(ClcError::Truncated);
    }
    if bytes.len() > len {
        return Err(ClcError::BadLength(hdr.length));
    }
    header::check_trailer(bytes)?;
    Ok(hdr)
}

/// Any CLC message, as read from the clcsock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClcMessage {
    /// PROPOSAL (type 1), client to server.
    Proposal(Proposal),
    /// ACCEPT (type 2), server to client.
    Accept(AcceptConfirm),
    /// CONFIRM (type 3), client to server.
    Confirm(AcceptConfirm),
    /// DECLINE (type 4), either way, at any point of the handshake.
    Decline(Decline),
}

impl ClcMessage {
    /// Parses exactly one whole message (`bytes.len()` must equal the header's length),
    /// dispatching on the header's type.
    pub fn parse(bytes: &[u8]) -> Result<Self, ClcError> {
        let hdr = ClcHeader::parse(bytes)?;
        match hdr.msg_type {
            ClcType::Proposal => Proposal::parse(bytes).map(Self::Proposal),
            ClcType::Accept | ClcType::Confirm => {
                AcceptConfirm::parse(bytes).map(|(kind, ac)| match kind {
                    AcceptConfirmKind::Accept => Self::Accept(ac),
                    AcceptConfirmKind::Confirm => Self::Confirm(ac),
                })
            }
            ClcType::Decline => Decline::parse(bytes).map(Self::Decline),
        }
    }

    /// Writes the message.
    pub fn emit(&self) -> Vec<u8> {
        match self {
            Self::Proposal(p) => p.emit(),
            Self::Accept(a) => a.emit(AcceptConfirmKind::Accept),
            Self::Confirm(c) => c.emit(AcceptConfirmKind::Confirm),
            Self::Decline(d) => d.emit(),
        }
    }

    /// The message's type.
    pub fn msg_type(&self) -> ClcType {
        match self {
            Self::Proposal(_) => ClcType::Proposal,
            Self::Accept(_) => ClcType::Accept,
            Self::Confirm(_) => ClcType::Confirm,
            Self::Decline(_) => ClcType::Decline,
        }
    }
}

/// A view of the `T` at offset `off` of `bytes`, or [`ClcError::BadLength`]`(len)` if the
/// message (whose header says `len`) ends before it.
pub(crate) fn take<T>(bytes: &[u8], off: usize, len: u16) -> Result<&T, ClcError>
where
    T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned,
{
    bytes
        .get(off..)
        .and_then(|b| T::ref_from_prefix(b).ok())
        .map(|(v, _)| v)
        .ok_or(ClcError::BadLength(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmbe_size_compression() {
        assert_eq!(compress_dmbe_size(0), 0);
        assert_eq!(compress_dmbe_size(16384), 0);
        assert_eq!(compress_dmbe_size(16385), 1);
        assert_eq!(compress_dmbe_size(32768), 1);
        assert_eq!(compress_dmbe_size(32769), 2);
        assert_eq!(compress_dmbe_size(65536), 2);
        assert_eq!(compress_dmbe_size(512 * 1024), 5);
        assert_eq!(compress_dmbe_size(1024 * 1024), 6);
        assert_eq!(compress_dmbe_size(1024 * 1024 + 1), 6);
        assert_eq!(compress_dmbe_size(usize::MAX), 6);
        assert_eq!(uncompress_dmbe_size(0), 16384);
        assert_eq!(uncompress_dmbe_size(6), 1 << 20);
        assert_eq!(uncompress_dmbe_size(15), 1 << 29);
        assert_eq!(uncompress_dmbe_size(0xF6), 1 << 20);
        for c in 0..=SMCD_DMBE_SIZES {
            assert_eq!(compress_dmbe_size(uncompress_dmbe_size(c)), c);
        }
    }

    #[test]
    fn seid() {
        assert_eq!(SEID_NON_S390, [0u8; 32]);
        let eid = s390_system_eid(0x00AB_CDEF, 0x8561);
        assert_eq!(&eid, b"IBM-SYSZ-ISMSEID00000000CDEF8561");
    }

    #[test]
    fn read_len() {
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 4, 0, 28, 0x10];
        assert_eq!(read_message_len(&h), Ok(28));
        let h = [0xE2, 0xD4, 0xC3, 0xC4, 2, 0, 48, 0x11];
        assert_eq!(read_message_len(&h), Ok(48));
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 1, 0x04, 0x01, 0x25];
        assert_eq!(read_message_len(&h), Err(ClcError::BadLength(1025)));
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 1, 0x04, 0x00, 0x25];
        assert_eq!(read_message_len(&h), Ok(1024));
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 4, 0, 27, 0x10];
        assert_eq!(read_message_len(&h), Err(ClcError::BadLength(27)));
        let h = [0xE2, 0xD4, 0xC3, 0xD8, 4, 0, 28, 0x10];
        assert_eq!(read_message_len(&h), Err(ClcError::BadEyecatcher));
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 5, 0, 28, 0x10];
        assert_eq!(read_message_len(&h), Err(ClcError::BadType(5)));
        // Versions above 2 are read as version 2 (Linux); 0 is refused.
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 4, 0, 44, 0x30];
        assert_eq!(read_message_len(&h), Ok(44));
        let h = [0xE2, 0xD4, 0xC3, 0xD9, 4, 0, 28, 0x00];
        assert_eq!(read_message_len(&h), Err(ClcError::BadVersion(0)));
    }

    #[test]
    fn errors_display() {
        use alloc::string::ToString;
        assert_eq!(
            ClcError::Malformed("eid_cnt").to_string(),
            "malformed CLC message: eid_cnt"
        );
        assert_eq!(
            ClcError::BadLength(7).to_string(),
            "CLC message length 7 is invalid"
        );
    }

    #[test]
    fn a_buffer_longer_than_its_header_says_is_refused() {
        // A v1 decline (28 bytes) with a second trailer after it: the bytes past the
        // header's length are not part of the message, whatever they look like.
        let mut b = alloc::vec![
            0xE2, 0xD4, 0xC3, 0xD9, 0x04, 0x00, 28, 0x10, //
            0, 0, 0, 0, 0, 0, 0, 0, //
            0x03, 0x03, 0x00, 0x01, //
            0x00, 0, 0, 0, //
            0xE2, 0xD4, 0xC3, 0xD9,
        ];
        assert!(ClcMessage::parse(&b).is_ok());
        b.extend_from_slice(&header::EYECATCHER_SMCR);
        assert_eq!(ClcMessage::parse(&b), Err(ClcError::BadLength(28)));
        assert_eq!(
            check_frame(&b, &[ClcType::Decline]),
            Err(ClcError::BadLength(28))
        );
        assert_eq!(
            check_frame(&b[..27], &[ClcType::Decline]),
            Err(ClcError::Truncated)
        );
    }

    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = ClcMessage> {
        prop_oneof![
            proposal::tests::arb_proposal().prop_map(ClcMessage::Proposal),
            accept_confirm::tests::arb_accept_confirm().prop_map(ClcMessage::Accept),
            accept_confirm::tests::arb_accept_confirm().prop_map(ClcMessage::Confirm),
            decline::tests::arb_decline().prop_map(ClcMessage::Decline),
        ]
    }

    proptest! {
        #[test]
        fn message_roundtrip(m in arb_message()) {
            let bytes = m.emit();
            let hdr: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
            prop_assert_eq!(read_message_len(&hdr), Ok(bytes.len()));
            prop_assert_eq!(ClcMessage::parse(&bytes), Ok(m.clone()));
            prop_assert_eq!(ClcMessage::parse(&bytes).map(|m| m.msg_type()), Ok(m.msg_type()));
        }

        #[test]
        fn message_truncations_are_errors(m in arb_message(), cut in any::<prop::sample::Index>()) {
            let bytes = m.emit();
            let n = cut.index(bytes.len());
            prop_assert!(ClcMessage::parse(&bytes[..n]).is_err());
            // Extra bytes after a message are an error too.
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(ClcMessage::parse(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(m) = ClcMessage::parse(&b) {
                prop_assert_eq!(ClcMessage::parse(&m.emit()), Ok(m));
            }
            if let Some(h) = b.first_chunk::<HEADER_LEN>() {
                if let Ok(n) = read_message_len(h) {
                    prop_assert!((28..=MAX_MESSAGE_LEN).contains(&n));
                }
            }
        }

        #[test]
        fn framed_arbitrary_bodies_never_panic(mut b in proptest::collection::vec(any::<u8>(), 28..700),
                                               t in 1u8..=4, flags in any::<u8>(), smcd in any::<bool>()) {
            let n = b.len();
            let eye = if smcd { header::EYECATCHER_SMCD } else { header::EYECATCHER_SMCR };
            b[..4].copy_from_slice(&eye);
            b[4] = t;
            b[5..7].copy_from_slice(&(n as u16).to_be_bytes());
            b[7] = (1 + (flags >> 7)) << 4 | (flags & 0x0F);
            b[n - 4..].copy_from_slice(&eye);
            if let Ok(m) = ClcMessage::parse(&b) {
                prop_assert_eq!(ClcMessage::parse(&m.emit()), Ok(m));
            }
        }
    }
}
