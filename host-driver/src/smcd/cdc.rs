//! The SMC-D CDC message (`struct smcd_cdc_msg`, 32 bytes) and cursor arithmetic.
//!
//! The sender writes this message at offset 0 of the peer's DMB (with the signal flag) after
//! the data; the receive ring follows at offset 32 (`net/smc/smc_cdc.h`: `struct smcd_cdc_msg`,
//! `smc_curs_add`, `smc_curs_diff`).
//!
//! | off | size | field                                                          |
//! |-----|------|----------------------------------------------------------------|
//! | 0   | 1    | type: 0xFE (`SMC_CDC_MSG_TYPE`)                                 |
//! | 1   | 7    | reserved                                                       |
//! | 8   | 2    | `prod.wrap`: producer cursor wrap count                        |
//! | 10  | 4    | `prod.count`: producer cursor offset in the ring               |
//! | 14  | 1    | `prod.prod_flags`: unused (zero)                               |
//! | 15  | 1    | `prod.conn_state_flags`: unused (zero)                         |
//! | 16  | 2    | `cons.wrap`: consumer cursor wrap count                        |
//! | 18  | 4    | `cons.count`: consumer cursor offset                           |
//! | 22  | 1    | `cons.prod_flags`: the producer flags ([`ProdFlags`])          |
//! | 23  | 1    | `cons.conn_state_flags`: connection state ([`ConnStateFlags`]) |
//! | 24  | 8    | reserved                                                       |
//!
//! **Byte order: host order.** Unlike SMC-R's CDC and unlike everything in CLC, Linux writes
//! the SMC-D cursors without `htons`/`htonl`: big-endian on s390, little-endian on x86
//! (loopback-ism). This module uses zerocopy's `native_endian` types, so a message is only
//! meaningful between hosts of the same byte order, which SMC-D guarantees (ISM and loopback
//! never leave one machine). The flag bytes are single bytes and the same on either order.
//!
//! Each 8-byte cursor `{wrap: u16, count: u32, prod_flags: u8, conn_state_flags: u8}` is
//! read and written as one atomic 64-bit word: [`CdcCursor::from_u64`] / [`CdcCursor::to_u64`]
//! convert between the word (as loaded from memory, i.e. `u64::from_ne_bytes`) and the fields.
//!
//! Cursor arithmetic ([`Cursor`]) follows `net/smc/smc_cdc.h` but is total: the cursors come
//! from the peer's memory and may be forged, so no function panics or overflows on any
//! input, and every difference is clamped to `0 ..= size` (see each function).

use bitflags::bitflags;
use core::fmt;
use zerocopy::byteorder::native_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the message.
pub const CDC_MSG_LEN: usize = 32;
/// The message type byte (`SMC_CDC_MSG_TYPE`).
pub const CDC_MSG_TYPE: u8 = 0xFE;
/// Offset of the producer cursor.
pub const PROD_OFFSET: usize = 8;
/// Offset of the consumer cursor (which carries the flags).
pub const CONS_OFFSET: usize = 16;
/// Length of one cursor.
pub const CURSOR_LEN: usize = 8;

bitflags! {
    /// Producer flags (`struct smc_cdc_producer_flags`), byte 22.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ProdFlags: u8 {
        /// The sender is blocked: the receiver's ring is full.
        const WRITE_BLOCKED = 0x80;
        /// Urgent data is pending.
        const URG_DATA_PENDING = 0x40;
        /// Urgent data is present.
        const URG_DATA_PRESENT = 0x20;
        /// The sender asks for a consumer-cursor update.
        const CONS_CURS_UPD_REQ = 0x10;
        /// Failover validation (SMC-R only).
        const FAILOVER_VALIDATION = 0x08;
    }
}

bitflags! {
    /// Connection state flags (`struct smc_cdc_conn_state_flags`), byte 23.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ConnStateFlags: u8 {
        /// The peer will send no more data.
        const PEER_DONE_WRITING = 0x80;
        /// The peer closed the connection.
        const PEER_CONN_CLOSED = 0x40;
        /// The peer aborted the connection.
        const PEER_CONN_ABORT = 0x20;
    }
}

/// One 8-byte cursor as in memory (host order).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct CdcCursorWire {
    /// Wrap count.
    pub wrap: U16,
    /// Offset in the ring.
    pub count: U32,
    /// Producer flags (meaningful in the consumer cursor only).
    pub prod_flags: u8,
    /// Connection state flags (meaningful in the consumer cursor only).
    pub conn_state_flags: u8,
}

/// The whole message as in memory.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct SmcdCdcMsgWire {
    /// [`CDC_MSG_TYPE`].
    pub msg_type: u8,
    /// Reserved.
    pub res1: [u8; 7],
    /// Producer cursor.
    pub prod: CdcCursorWire,
    /// Consumer cursor and flags.
    pub cons: CdcCursorWire,
    /// Reserved.
    pub res3: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<CdcCursorWire>() == CURSOR_LEN);
const _: () = assert!(core::mem::size_of::<SmcdCdcMsgWire>() == CDC_MSG_LEN);
const _: () = assert!(core::mem::offset_of!(SmcdCdcMsgWire, prod) == PROD_OFFSET);
const _: () = assert!(core::mem::offset_of!(SmcdCdcMsgWire, cons) == CONS_OFFSET);
const _: () = assert!(core::mem::offset_of!(CdcCursorWire, prod_flags) == 6);

/// A ring cursor: how often the ring wrapped (mod 2^16) and the offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    /// Wrap count.
    pub wrap: u16,
    /// Offset in the ring (`< size` for a sane cursor; a forged one may be anything).
    pub count: u32,
}

impl Cursor {
    /// A cursor.
    pub const fn new(wrap: u16, count: u32) -> Self {
        Self { wrap, count }
    }

    /// The cursor part of an 8-byte CDC cursor in memory order (the two flag bytes are
    /// ignored).
    pub fn from_bytes(bytes: [u8; CURSOR_LEN]) -> Self {
        CdcCursor::from_bytes(bytes).cursor
    }

    /// The 8-byte CDC cursor of this cursor, flag bytes zero (as in the producer cursor).
    pub fn to_bytes(self) -> [u8; CURSOR_LEN] {
        CdcCursor {
            cursor: self,
            ..CdcCursor::default()
        }
        .to_bytes()
    }

    /// `smc_curs_add`: advances by `value` bytes in a ring of `size` bytes.
    ///
    /// For a sane cursor (`count < size`) and `value <= size` this is Linux's
    /// `count += value; if count >= size { wrap += 1; count -= size }`. In general it is
    /// `count' = (count + value) mod size`, `wrap' = wrap + (count + value) / size` (mod 2^16),
    /// computed without overflow, so the result is always sane. With `size == 0` (no ring)
    /// the cursor is returned unchanged.
    pub fn add(self, size: u32, value: u32) -> Self {
        if size == 0 {
            return self;
        }
        let total = u64::from(self.count) + u64::from(value);
        let size = u64::from(size);
        Self {
            wrap: self.wrap.wrapping_add((total / size) as u16),
            count: (total % size) as u32,
        }
    }

    /// `smc_curs_diff`: bytes from `old` to `new`, where `old <= new` and the difference is at
    /// most `size`.
    ///
    /// Same wrap: `new.count − old.count`; different wraps (taken as one wrap apart):
    /// `(size − old.count) + new.count`. Linux returns `max(0, …)` and trusts the precondition;
    /// here the result is also clamped to `size`, and computed in 64 bits, so a forged cursor
    /// (count ≥ size, or more than a ring ahead) yields at most `size`, never more.
    pub fn diff(size: u32, old: Cursor, new: Cursor) -> u32 {
        let (size64, o, n) = (i64::from(size), i64::from(old.count), i64::from(new.count));
        let d = if old.wrap != new.wrap {
            (size64 - o) + n
        } else {
            n - o
        };
        d.clamp(0, size64) as u32
    }

    /// `smc_curs_comp`: like [`Cursor::diff`] but negative if `old` is ahead of `new`
    /// (compared by wrap, then count).
    ///
    /// As in Linux the wrap comparison is plain, not modular: just after the wrap count rolls
    /// over from 0xFFFF to 0 the newer cursor compares as older. The magnitude is clamped to
    /// `size` as in `diff`.
    pub fn comp(size: u32, old: Cursor, new: Cursor) -> i64 {
        if old.wrap > new.wrap || (old.wrap == new.wrap && old.count > new.count) {
            -i64::from(Self::diff(size, new, old))
        } else {
            i64::from(Self::diff(size, old, new))
        }
    }

    /// `smc_curs_diff_large`: bytes from `old` to `new` where `new` may be several wraps
    /// ahead (including the roll-over of the wrap count from 0xFFFF to 0), capped at `size`.
    ///
    /// Linux caps the multi-wrap cases at `size` but not the same-wrap case, and can go
    /// negative on counts ≥ size; here every case is computed in 64 bits and clamped to
    /// `0 ..= size`.
    pub fn diff_large(size: u32, old: Cursor, new: Cursor) -> u32 {
        let (size64, o, n) = (i64::from(size), i64::from(old.count), i64::from(new.count));
        let (ow, nw) = (i64::from(old.wrap), i64::from(new.wrap));
        let d = if ow < nw {
            (size64 - o) + n + (nw - ow - 1) * size64
        } else if ow > nw {
            (size64 - o) + n + (nw + 0xFFFF - ow) * size64
        } else {
            n - o
        };
        d.clamp(0, size64) as u32
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.wrap, self.count)
    }
}

/// One 8-byte CDC cursor with its two flag bytes, the unit read and written atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CdcCursor {
    /// Wrap and count.
    pub cursor: Cursor,
    /// Producer flags (byte 6 of the cursor). Reserved bits are dropped on reading.
    pub prod_flags: ProdFlags,
    /// Connection state flags (byte 7). Reserved bits are dropped on reading.
    pub conn_state: ConnStateFlags,
}

impl CdcCursor {
    /// The fields of 8 bytes in memory order (host byte order).
    pub fn from_bytes(bytes: [u8; CURSOR_LEN]) -> Self {
        let w: CdcCursorWire = zerocopy::transmute!(bytes);
        Self {
            cursor: Cursor {
                wrap: w.wrap.get(),
                count: w.count.get(),
            },
            prod_flags: ProdFlags::from_bits_truncate(w.prod_flags),
            conn_state: ConnStateFlags::from_bits_truncate(w.conn_state_flags),
        }
    }

    /// The 8 bytes in memory order (host byte order).
    pub fn to_bytes(self) -> [u8; CURSOR_LEN] {
        let w = CdcCursorWire {
            wrap: U16::new(self.cursor.wrap),
            count: U32::new(self.cursor.count),
            prod_flags: self.prod_flags.bits(),
            conn_state_flags: self.conn_state.bits(),
        };
        zerocopy::transmute!(w)
    }

    /// The fields of the 64-bit word as loaded atomically from memory
    /// (`u64::from_ne_bytes` of the 8 bytes).
    pub fn from_u64(word: u64) -> Self {
        Self::from_bytes(word.to_ne_bytes())
    }

    /// The 64-bit word to store atomically (its memory image is [`Self::to_bytes`]).
    pub fn to_u64(self) -> u64 {
        u64::from_ne_bytes(self.to_bytes())
    }
}

/// Why bytes are not a CDC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CdcError {
    /// Fewer than 32 bytes.
    Truncated,
    /// The type byte is not 0xFE; carries it.
    BadType(u8),
}

impl fmt::Display for CdcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("CDC message shorter than 32 bytes"),
            Self::BadType(t) => write!(f, "CDC message type {t:#04x} is not 0xfe"),
        }
    }
}

impl core::error::Error for CdcError {}

/// An SMC-D CDC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CdcMessage {
    /// Producer cursor: where the sender's data ends in the receiver's ring.
    pub prod: Cursor,
    /// Consumer cursor: how far the sender consumed the receiver's data in its own ring.
    pub cons: Cursor,
    /// Producer flags (carried in the consumer cursor).
    pub prod_flags: ProdFlags,
    /// Connection state flags (carried in the consumer cursor).
    pub conn_state: ConnStateFlags,
}

impl CdcMessage {
    /// Parses the first 32 bytes of `bytes` (more are ignored). The producer cursor's flag
    /// bytes and the reserved bytes are ignored, and so are reserved flag bits.
    pub fn parse(bytes: &[u8]) -> Result<Self, CdcError> {
        let (w, _) = SmcdCdcMsgWire::ref_from_prefix(bytes).map_err(|_| CdcError::Truncated)?;
        if w.msg_type != CDC_MSG_TYPE {
            return Err(CdcError::BadType(w.msg_type));
        }
        let cons = CdcCursor::from_bytes(zerocopy::transmute!(w.cons));
        Ok(Self {
            prod: Cursor::from_bytes(zerocopy::transmute!(w.prod)),
            cons: cons.cursor,
            prod_flags: cons.prod_flags,
            conn_state: cons.conn_state,
        })
    }

    /// The message from the two cursor words a receiver loaded atomically from DMB offsets 8
    /// and 16 (the type byte is not checked here: the words carry no type).
    pub fn from_words(prod: u64, cons: u64) -> Self {
        let cons = CdcCursor::from_u64(cons);
        Self {
            prod: CdcCursor::from_u64(prod).cursor,
            cons: cons.cursor,
            prod_flags: cons.prod_flags,
            conn_state: cons.conn_state,
        }
    }

    /// The consumer cursor with the flags, as one 8-byte unit.
    pub const fn cons_cursor(&self) -> CdcCursor {
        CdcCursor {
            cursor: self.cons,
            prod_flags: self.prod_flags,
            conn_state: self.conn_state,
        }
    }

    /// The 32 bytes, as Linux's `smcd_cdc_msg_send` builds them.
    pub fn emit(&self) -> [u8; CDC_MSG_LEN] {
        let w = SmcdCdcMsgWire {
            msg_type: CDC_MSG_TYPE,
            res1: [0; 7],
            prod: zerocopy::transmute!(self.prod.to_bytes()),
            cons: zerocopy::transmute!(self.cons_cursor().to_bytes()),
            res3: [0; 8],
        };
        zerocopy::transmute!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    #[test]
    fn comp_is_negative_when_old_is_ahead_in_the_same_wrap() {
        let (a, b) = (Cursor::new(3, 10), Cursor::new(3, 5));
        assert_eq!(Cursor::comp(100, a, b), -5);
        assert_eq!(Cursor::comp(100, b, a), 5);
        assert_eq!(Cursor::comp(100, a, a), 0);
        // Ahead by wrap: negative too.
        assert_eq!(
            Cursor::comp(100, Cursor::new(4, 5), Cursor::new(3, 10)),
            -95
        );
    }

    #[test]
    fn diff_large_across_the_wrap_roll_over() {
        // One ring apart across 0xFFFF -> 0: the exact distance.
        let d = Cursor::diff_large(100, Cursor::new(0xFFFF, 50), Cursor::new(0, 20));
        assert_eq!(d, 70);
        // Two wraps apart across the roll-over: more than a ring, so capped.
        let d = Cursor::diff_large(100, Cursor::new(0xFFFE, 50), Cursor::new(0, 20));
        assert_eq!(d, 100);
        // Same wrap and the next wrap (no roll-over).
        assert_eq!(
            Cursor::diff_large(100, Cursor::new(7, 20), Cursor::new(7, 50)),
            30
        );
        assert_eq!(
            Cursor::diff_large(100, Cursor::new(7, 50), Cursor::new(8, 20)),
            70
        );
    }

    #[test]
    fn cursors_and_errors_display() {
        assert_eq!(Cursor::new(2, 300).to_string(), "2:300");
        assert_eq!(
            CdcError::Truncated.to_string(),
            "CDC message shorter than 32 bytes"
        );
        assert_eq!(
            CdcError::BadType(0x12).to_string(),
            "CDC message type 0x12 is not 0xfe"
        );
    }

    fn sample() -> CdcMessage {
        CdcMessage {
            prod: Cursor::new(0x0102, 0x0003_0405),
            cons: Cursor::new(0x0A0B, 0x000C_0D0E),
            prod_flags: ProdFlags::WRITE_BLOCKED | ProdFlags::CONS_CURS_UPD_REQ,
            conn_state: ConnStateFlags::PEER_DONE_WRITING,
        }
    }

    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    const GOLDEN: [u8; 32] = [
        0xFE, 0, 0, 0, 0, 0, 0, 0,
        // prod: wrap 0x0102, count 0x00030405 (little-endian), flags 0
        0x02, 0x01, 0x05, 0x04, 0x03, 0x00, 0x00, 0x00,
        // cons: wrap 0x0A0B, count 0x000C0D0E, prod_flags 0x90, conn_state 0x80
        0x0B, 0x0A, 0x0E, 0x0D, 0x0C, 0x00, 0x90, 0x80,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[cfg(target_endian = "big")]
    #[rustfmt::skip]
    const GOLDEN: [u8; 32] = [
        0xFE, 0, 0, 0, 0, 0, 0, 0,
        0x01, 0x02, 0x00, 0x03, 0x04, 0x05, 0x00, 0x00,
        0x0A, 0x0B, 0x00, 0x0C, 0x0D, 0x0E, 0x90, 0x80,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn golden_message() {
        let m = sample();
        assert_eq!(m.emit(), GOLDEN);
        assert_eq!(CdcMessage::parse(&GOLDEN), Ok(m));
        let prod = u64::from_ne_bytes(GOLDEN[8..16].try_into().unwrap());
        let cons = u64::from_ne_bytes(GOLDEN[16..24].try_into().unwrap());
        assert_eq!(CdcMessage::from_words(prod, cons), m);
        assert_eq!(m.cons_cursor().to_u64(), cons);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn golden_word_le() {
        // wrap in bits 0..16, count in 16..48, prod_flags 48..56, conn_state 56..64.
        let c = CdcCursor::from_u64(0x2040_0000_0010_0003);
        assert_eq!(c.cursor, Cursor::new(3, 0x10));
        assert_eq!(c.prod_flags, ProdFlags::URG_DATA_PENDING);
        assert_eq!(c.conn_state, ConnStateFlags::PEER_CONN_ABORT);
    }

    #[cfg(target_endian = "big")]
    #[test]
    fn golden_word_be() {
        let c = CdcCursor::from_u64(0x0003_0000_0010_4020);
        assert_eq!(c.cursor, Cursor::new(3, 0x10));
        assert_eq!(c.prod_flags, ProdFlags::URG_DATA_PENDING);
        assert_eq!(c.conn_state, ConnStateFlags::PEER_CONN_ABORT);
    }

    #[test]
    fn parse_errors_and_flags() {
        assert_eq!(CdcMessage::parse(&GOLDEN[..31]), Err(CdcError::Truncated));
        let mut b = GOLDEN;
        b[0] = 0;
        assert_eq!(CdcMessage::parse(&b), Err(CdcError::BadType(0)));
        let mut b = GOLDEN;
        b[14] = 0xFF; // prod's flag bytes are ignored
        b[22] = 0xFF; // reserved prod_flags bits dropped
        b[23] = 0xFF; // reserved conn_state bits dropped
        let m = CdcMessage::parse(&b).unwrap();
        assert_eq!(m.prod_flags, ProdFlags::all());
        assert_eq!(m.conn_state, ConnStateFlags::all());
        assert_eq!(ProdFlags::all().bits(), 0xF8);
        assert_eq!(ConnStateFlags::all().bits(), 0xE0);
    }

    #[test]
    fn cursor_arithmetic_examples() {
        let size = 1000;
        let c = Cursor::new(5, 990);
        let d = c.add(size, 20);
        assert_eq!(d, Cursor::new(6, 10));
        assert_eq!(Cursor::diff(size, c, d), 20);
        assert_eq!(Cursor::comp(size, c, d), 20);
        assert_eq!(Cursor::comp(size, d, c), -20);
        assert_eq!(Cursor::diff_large(size, c, d), 20);
        // Wrap roll-over.
        let c = Cursor::new(0xFFFF, 500);
        let d = c.add(size, 600);
        assert_eq!(d, Cursor::new(0, 100));
        assert_eq!(Cursor::diff(size, c, d), 600);
        assert_eq!(Cursor::diff_large(size, c, d), 600);
        // Linux's plain comparison: the rolled-over cursor looks older (Linux: -1400; here
        // clamped to -size).
        assert_eq!(Cursor::comp(size, c, d), -1000);
        // Several wraps ahead: diff_large caps at size.
        assert_eq!(
            Cursor::diff_large(size, Cursor::new(1, 0), Cursor::new(4, 0)),
            1000
        );
        // Forged cursors are clamped.
        assert_eq!(
            Cursor::diff(size, Cursor::new(0, 0), Cursor::new(0, 5000)),
            1000
        );
        assert_eq!(
            Cursor::diff(size, Cursor::new(0, 5000), Cursor::new(1, 0)),
            0
        );
        assert_eq!(
            Cursor::diff(size, Cursor::new(0, 10), Cursor::new(1, 999)),
            1000
        );
        assert_eq!(
            Cursor::diff_large(size, Cursor::new(0, 0), Cursor::new(0, u32::MAX)),
            1000
        );
        assert_eq!(
            Cursor::new(0, u32::MAX).add(size, u32::MAX),
            Cursor::new((8_589_934 % 65_536) as u16, 590)
        );
        assert_eq!(Cursor::new(7, 7).add(0, 5), Cursor::new(7, 7));
        assert_eq!(Cursor::diff(0, Cursor::new(0, 1), Cursor::new(1, 2)), 0);
    }

    fn arb_cursor() -> impl Strategy<Value = Cursor> {
        any::<(u16, u32)>().prop_map(|(w, c)| Cursor::new(w, c))
    }

    fn arb_message() -> impl Strategy<Value = CdcMessage> {
        (arb_cursor(), arb_cursor(), any::<u8>(), any::<u8>()).prop_map(|(prod, cons, p, s)| {
            CdcMessage {
                prod,
                cons,
                prod_flags: ProdFlags::from_bits_truncate(p),
                conn_state: ConnStateFlags::from_bits_truncate(s),
            }
        })
    }

    proptest! {
        #[test]
        fn roundtrip(m in arb_message()) {
            let b = m.emit();
            prop_assert_eq!(b[0], 0xFE);
            prop_assert_eq!(CdcMessage::parse(&b), Ok(m));
            let w = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
            prop_assert_eq!(CdcMessage::from_words(w(8), w(16)), m);
            prop_assert_eq!(CdcCursor::from_u64(m.cons_cursor().to_u64()), m.cons_cursor());
            prop_assert_eq!(Cursor::from_bytes(m.prod.to_bytes()), m.prod);
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(m) = CdcMessage::parse(&b) {
                prop_assert_eq!(CdcMessage::parse(&m.emit()), Ok(m));
            }
        }

        #[test]
        fn diff_of_add_is_value(size in 1u32.., wrap in any::<u16>(), count in any::<u32>(),
                                v in any::<u32>()) {
            let c = Cursor::new(wrap, count % size);
            let v = if size == u32::MAX { v } else { v % (size + 1) };
            let d = c.add(size, v);
            prop_assert!(d.count < size);
            prop_assert_eq!(Cursor::diff(size, c, d), v);
            prop_assert_eq!(Cursor::diff_large(size, c, d), v);
            if c.wrap != u16::MAX {
                // No roll-over of the wrap count: comp agrees with diff.
                prop_assert_eq!(Cursor::comp(size, c, d), i64::from(v));
            }
        }

        #[test]
        fn small_ring_diff_of_add(size in 1u32..4096, count in 0u32..4096, wrap in any::<u16>(),
                                  v in 0u32..=4096) {
            let c = Cursor::new(wrap, count % size);
            let v = v % (size + 1);
            let d = c.add(size, v);
            prop_assert_eq!(Cursor::diff(size, c, d), v);
            prop_assert_eq!(Cursor::diff_large(size, c, d), v);
        }

        #[test]
        fn multi_add_diff_large(size in 1u32..10_000, count in any::<u32>(),
                                steps in proptest::collection::vec(0u32..10_000, 0..20)) {
            let start = Cursor::new(0xFFF0, count % size);
            let mut c = start;
            let mut total = 0u64;
            for s in steps {
                let s = s % (size + 1);
                c = c.add(size, s);
                total += u64::from(s);
            }
            prop_assert_eq!(u64::from(Cursor::diff_large(size, start, c)), total.min(u64::from(size)));
        }

        #[test]
        fn hostile_values_bounded(size in any::<u32>(), a in arb_cursor(), b in arb_cursor(),
                                  v in any::<u32>()) {
            prop_assert!(Cursor::diff(size, a, b) <= size);
            prop_assert!(Cursor::diff_large(size, a, b) <= size);
            prop_assert!(Cursor::comp(size, a, b).unsigned_abs() <= u64::from(size));
            let c = a.add(size, v);
            if size > 0 {
                prop_assert!(c.count < size);
            }
        }
    }
}
