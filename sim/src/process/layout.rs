//! Every byte that crosses the process boundary of a process board, in one place: the
//! control-socket messages and the layout of a function's register object. The spec,
//! `docs/host-interface.md`, restates these tables; the offset asserts below keep the two
//! from drifting apart.
//!
//! All integers in this module are **little-endian** (board and hosts share one machine;
//! the spec requires a little-endian machine). The command area carries the device's own
//! big-endian command bytes untouched.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Version of the host interface this crate speaks (HELLO and WELCOME carry it). Version 2
/// added the loopback board's peer table and direct moves (spec section 5.5).
pub const SPEC_VERSION: u32 = 3;

/// `HELLO.magic`: the bytes `ISMHELLO`.
pub const HELLO_MAGIC: [u8; 8] = *b"ISMHELLO";
/// `WELCOME.magic`: the bytes `ISMBOARD`.
pub const WELCOME_MAGIC: [u8; 8] = *b"ISMBOARD";
/// `STATUS.magic`: the bytes `ISMSTATS` (a status query; the reply is JSON text).
pub const STATUS_MAGIC: [u8; 8] = *b"ISMSTATS";
/// `BYE.magic`: the bytes `ISMBYE\0\0` (an orderly detach).
pub const BYE_MAGIC: [u8; 8] = *b"ISMBYE\0\0";
/// Magic at offset 0 of a register object: the bytes `ISMREGS1`.
pub const REGS_MAGIC: [u8; 8] = *b"ISMREGS1";

/// The first message of a host on a fresh connection: it asks for a function.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Hello {
    /// [`HELLO_MAGIC`].
    pub magic: [u8; 8],
    /// The host's [`SPEC_VERSION`].
    pub version: U32,
    /// Reserved, 0.
    pub flags: U32,
    /// The host's process id (for the board's log only).
    pub pid: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<Hello>() == 24);
const _: () = assert!(core::mem::offset_of!(Hello, version) == 8);
const _: () = assert!(core::mem::offset_of!(Hello, pid) == 16);

/// `WELCOME.status`: the function is the host's.
pub const STATUS_OK: u32 = 0;
/// `WELCOME.status`: the board speaks another spec version.
pub const STATUS_VERSION: u32 = 1;
/// `WELCOME.status`: every function is attached (`--max-functions`).
pub const STATUS_FULL: u32 = 2;
/// `WELCOME.status`: the first message was not a HELLO.
pub const STATUS_BAD_HELLO: u32 = 3;
/// `WELCOME.status`: the board failed to set the function up (out of memory, ...).
pub const STATUS_INTERNAL: u32 = 4;

/// `WELCOME.kind` of an LPAR board.
pub const KIND_LPAR: u32 = 1;
/// `WELCOME.kind` of a loopback board.
pub const KIND_LOOPBACK: u32 = 2;

/// The board's answer to a HELLO. With `status == STATUS_OK` it carries file descriptors
/// (`SCM_RIGHTS`): first the partition memory, then the register object, and on a loopback
/// board third the peer table ([`peers`]); otherwise none, and `message` says why (UTF-8,
/// NUL-padded).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Welcome {
    /// [`WELCOME_MAGIC`].
    pub magic: [u8; 8],
    /// The board's [`SPEC_VERSION`].
    pub version: U32,
    /// [`STATUS_OK`] or why not.
    pub status: U32,
    /// [`KIND_LPAR`] or [`KIND_LOOPBACK`].
    pub kind: U32,
    /// The function's index on the board (0-based).
    pub function: U32,
    /// The function's GID.
    pub gid: U64,
    /// The device's CHID.
    pub chid: U16,
    /// Reserved, 0.
    pub reserved0: [u8; 6],
    /// Device address of byte 0 of the memory object.
    pub mem_base: U64,
    /// Bytes of the memory object to map.
    pub mem_size: U64,
    /// Device address of the range the host allocates its DMA buffers from.
    pub pool_base: U64,
    /// Size of that range.
    pub pool_size: U64,
    /// Bytes of the register object to map.
    pub regs_size: U64,
    /// Store-block ring slots in the register object.
    pub ring_slots: U32,
    /// Most functions the board serves at once.
    pub max_functions: U32,
    /// Why the attach was refused (UTF-8, NUL-padded).
    pub message: [u8; 168],
}

const _: () = assert!(core::mem::size_of::<Welcome>() == 256);
const _: () = assert!(core::mem::offset_of!(Welcome, gid) == 24);
const _: () = assert!(core::mem::offset_of!(Welcome, chid) == 32);
const _: () = assert!(core::mem::offset_of!(Welcome, mem_base) == 40);
const _: () = assert!(core::mem::offset_of!(Welcome, regs_size) == 72);
const _: () = assert!(core::mem::offset_of!(Welcome, ring_slots) == 80);
const _: () = assert!(core::mem::offset_of!(Welcome, message) == 88);

/// The 8-byte messages a connection carries after the WELCOME (host to board): [`BYE_MAGIC`].
pub const CONTROL_MSG_LEN: usize = 8;

// ------------------------------------------------------------------ name service

/// `NAMES.magic`: the bytes `ISMNAMES`, the first message of a name-service connection
/// (section 3.5 of the spec); the board answers with the same 8 bytes.
pub const NAMES_MAGIC: [u8; 8] = *b"ISMNAMES";

/// `NameRequest.op`: a listening address (`server`) accepts SMC-D.
pub const NAMES_REGISTER_LISTENER: u32 = 1;
/// `NameRequest.op`: withdraw one registration of `server` made on this connection.
pub const NAMES_UNREGISTER_LISTENER: u32 = 2;
/// `NameRequest.op`: the connection `client` → `server` about to be made speaks CLC.
pub const NAMES_REGISTER_CLIENT: u32 = 3;
/// `NameRequest.op`: withdraw one registration of `client` → `server` made on this
/// connection.
pub const NAMES_UNREGISTER_CLIENT: u32 = 4;
/// `NameRequest.op`: is a listener registered that a connection to `server` reaches?
pub const NAMES_LOOKUP_LISTENER: u32 = 5;
/// `NameRequest.op`: is `client` → `server` registered (by anyone)? If so, remove it.
pub const NAMES_TAKE_CLIENT: u32 = 6;
/// `NameRequest.op`: the doorbell the server of `client` → `server` left for this
/// connection's client registration at its TAKE_CLIENT (sent with the reply), if any.
pub const NAMES_TAKE_SERVER_BELL: u32 = 7;
/// `NameRequest.op`: LOOKUP_LISTENER and REGISTER_CLIENT in one round trip: `client` is a
/// cookie endpoint carrying the client socket's cookie and the cookie of the listener the
/// host sees ([`NAMES_FAMILY_COOKIE`]); the client is registered only if the lookup
/// answers [`NAMES_OK_COOKIES`].
pub const NAMES_LOOKUP_REGISTER: u32 = 8;

/// `NameReply.result`: not found (lookups), nothing to remove (unregistering).
pub const NAMES_NOT_FOUND: u32 = 0;
/// `NameReply.result`: done (registering, unregistering) or found (lookups).
pub const NAMES_OK: u32 = 1;
/// `NameReply.result`: the request was malformed (size, op, family).
pub const NAMES_MALFORMED: u32 = 2;
/// `NameReply.result`: this connection holds [`NAMES_MAX_PER_CONNECTION`] registrations.
pub const NAMES_FULL: u32 = 3;
/// `NameReply.result` of LOOKUP_LISTENER: found, and every listener registered that
/// reaches the destination takes clients registered by socket cookie
/// ([`NAMES_FAMILY_COOKIE`]); of LOOKUP_REGISTER: that, and the client is registered.
pub const NAMES_OK_COOKIES: u32 = 4;
/// Most registrations (listeners and clients together) one name-service connection holds.
pub const NAMES_MAX_PER_CONNECTION: usize = 4096;

/// `NameEndpoint.family`: no address (a field the op does not use).
pub const NAMES_FAMILY_NONE: u16 = 0;
/// `NameEndpoint.family`: IPv4 (the first 4 bytes of `addr`); IPv4-mapped IPv6 addresses
/// are sent as IPv4.
pub const NAMES_FAMILY_V4: u16 = 4;
/// `NameEndpoint.family`: IPv6 (all 16 bytes of `addr`).
pub const NAMES_FAMILY_V6: u16 = 6;
/// `NameEndpoint.family`: a client's TCP socket by its cookie (Linux `SO_COOKIE`, as
/// `sock_diag` reports it too), little-endian in bytes 0..8 of `addr`, the rest and
/// `port` 0; client ops only. In LOOKUP_REGISTER, bytes 8..16 carry the seen listener's
/// cookie (both cookies non-zero).
pub const NAMES_FAMILY_COOKIE: u16 = 1;

/// An IP address and port in a name-service request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NameEndpoint {
    /// [`NAMES_FAMILY_V4`], [`NAMES_FAMILY_V6`], [`NAMES_FAMILY_COOKIE`] or
    /// [`NAMES_FAMILY_NONE`].
    pub family: U16,
    /// The port.
    pub port: U16,
    /// The address in network byte order (IPv4: bytes 0..4, the rest 0).
    pub addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<NameEndpoint>() == 20);

/// A name-service request (host to board), answered by one [`NameReply`].
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NameRequest {
    /// `NAMES_REGISTER_LISTENER` ..= `NAMES_LOOKUP_REGISTER`.
    pub op: U32,
    /// Chosen by the host, echoed in the reply.
    pub seq: U32,
    /// The connecting side (client ops; [`NAMES_FAMILY_NONE`] for listener ops).
    pub client: NameEndpoint,
    /// The listening side: the listener's address, or the address a client connects to.
    pub server: NameEndpoint,
}

const _: () = assert!(core::mem::size_of::<NameRequest>() == 48);
const _: () = assert!(core::mem::offset_of!(NameRequest, client) == 8);
const _: () = assert!(core::mem::offset_of!(NameRequest, server) == 28);

/// The board's answer to a [`NameRequest`].
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NameReply {
    /// The request's `op`.
    pub op: U32,
    /// The request's `seq`.
    pub seq: U32,
    /// [`NAMES_OK`], [`NAMES_NOT_FOUND`], [`NAMES_MALFORMED`] or [`NAMES_FULL`].
    pub result: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<NameReply>() == 16);

// ------------------------------------------------------------------ register object

/// Store-block ring slots.
pub const RING_SLOTS: u32 = 64;
/// Bytes of one slot's data (one store-block).
pub const SLOT_DATA: usize = 4096;
/// Size of the register object: the control page, then the slots' data.
pub const REGS_SIZE: usize = 4096 + RING_SLOTS as usize * SLOT_DATA;

/// Offsets in the register object. Each location has one access width: `u64` words are
/// 8-byte atomics, `u32` words 4-byte atomics, the command area 8-byte volatile registers,
/// slot data 8-byte atomic words.
pub mod regs {
    /// `u64`: [`super::REGS_MAGIC`] (board writes before sending the WELCOME).
    pub const MAGIC: usize = 0x000;
    /// `u32`: spec version.
    pub const VERSION: usize = 0x008;
    /// `u32`: function index.
    pub const FUNCTION: usize = 0x00C;
    /// `u64`: the function's GID.
    pub const GID: usize = 0x010;
    /// `u32`: board state: [`super::BOARD_RUNNING`] or [`super::BOARD_STOPPED`].
    pub const BOARD_STATE: usize = 0x018;
    /// `u32`, futex: host adds 1 after posting a command or store-blocks.
    pub const DOORBELL: usize = 0x040;
    /// `u32`: board sets 1 before it sleeps on `DOORBELL`, 0 after.
    pub const BOARD_SLEEPING: usize = 0x044;
    /// `u32`: host's command sequence number (adds 1 per command, after the request).
    pub const CMD_SEQ: usize = 0x048;
    /// `u32`: board copies `CMD_SEQ` here after writing the response.
    pub const CMD_DONE: usize = 0x04C;
    /// `u32`, futex: board adds 1 after finishing commands or ring entries.
    pub const PROGRESS: usize = 0x050;
    /// `u32`: number of host threads sleeping on `PROGRESS`.
    pub const PROGRESS_WAITERS: usize = 0x054;
    /// `u32`, futex: 1 = interrupt pending (board sets, host takes by swapping 0).
    pub const IRQ: usize = 0x058;
    /// `u32`: number of host threads sleeping on `IRQ`.
    pub const IRQ_WAITERS: usize = 0x05C;
    /// `u32`: ring entries produced (host; wrapping counter).
    pub const SQ_HEAD: usize = 0x060;
    /// `u32`: ring entries consumed (board; wrapping counter).
    pub const SQ_TAIL: usize = 0x064;
    /// `u32`: first error of a posted (non-signalling) ring entry since the host last
    /// cleared it (board sets if 0, host swaps 0 in `flush`): an entry status.
    pub const SQ_ERROR: usize = 0x068;
    /// `u32`: host threads polling the SBA themselves (host; a hint: while non-zero the
    /// board need not wake threads sleeping on `IRQ`). 0, the reserved value, means none.
    pub const HOST_POLLERS: usize = 0x06C;
    /// `u32`: after a successful ATTACH_DMB, the index `k` of the attachment word
    /// (`ATTACHMENTS + 8 k`) the board keeps for it (board, before `CMD_DONE`).
    pub const ATTACH_SLOT: usize = 0x070;
    /// `u32`: after a successful ATTACH_DMB, the function index of the DMB's owner (board,
    /// before `CMD_DONE`).
    pub const ATTACH_OWNER: usize = 0x074;
    /// `u64` × [`super::ATTACHMENT_WORDS`]: word `k` holds the token of this function's
    /// attachment `k` while it may be moved into directly, 0 otherwise (board).
    pub const ATTACHMENTS: usize = 0x800;
    /// Command area: 32 8-byte registers (the device's command bytes, big-endian).
    pub const COMMAND: usize = 0x100;
    /// Ring descriptors: `RING_SLOTS` × 16 bytes: `u64` request word (host), `u32` length
    /// (host), `u32` status (board, before it advances `SQ_TAIL` past the entry).
    pub const DESCRIPTORS: usize = 0x400;
    /// Size of one descriptor.
    pub const DESCRIPTOR_LEN: usize = 16;
    /// Data of slot `i` at `SLOT_DATA_BASE + i * 4096`.
    pub const SLOT_DATA_BASE: usize = 0x1000;
}

const _: () = assert!(regs::COMMAND + ism_hal::regs::COMMAND_AREA_SIZE <= regs::DESCRIPTORS);
const _: () =
    assert!(regs::DESCRIPTORS + RING_SLOTS as usize * regs::DESCRIPTOR_LEN <= regs::SLOT_DATA_BASE);
const _: () = assert!(regs::SLOT_DATA_BASE + RING_SLOTS as usize * SLOT_DATA == REGS_SIZE);
const _: () = assert!(regs::ATTACHMENTS + ATTACHMENT_WORDS * 8 <= regs::SLOT_DATA_BASE);
const _: () =
    assert!(regs::DESCRIPTORS + RING_SLOTS as usize * regs::DESCRIPTOR_LEN <= regs::ATTACHMENTS);

/// Attachment words in a register object: most DMBs one function has attached at once
/// (the device's own limit is its DMB table; an ATTACH_DMB beyond these works, without
/// direct moves).
pub const ATTACHMENT_WORDS: usize = 256;
/// `ATTACH_SLOT` when the board kept no attachment word for the attach.
pub const NO_ATTACH_SLOT: u32 = u32::MAX;

/// The peer table of a loopback board (spec section 5.5): one memory object that every host
/// of the board maps read-write, an entry of [`ENTRY_LEN`](peers::ENTRY_LEN) bytes per
/// function, at `ENTRY_LEN × function`. On a loopback board a function's `IRQ`,
/// `IRQ_WAITERS` and `HOST_POLLERS` live in its entry instead of its register object, so
/// that a host can signal another function's DMB itself (a direct move).
pub mod peers {
    /// Bytes of one function's entry.
    pub const ENTRY_LEN: usize = 256;
    /// `u32`, futex: 1 = interrupt pending (whoever signals sets it, the host takes it).
    pub const IRQ: usize = 0x00;
    /// `u32`: host threads of the function sleeping on `IRQ`.
    pub const IRQ_WAITERS: usize = 0x04;
    /// `u32`: host threads of the function polling its SBA themselves.
    pub const HOST_POLLERS: usize = 0x08;
    /// `u64`: device address of the function's registered SBA, 0 without one (board).
    pub const SBA: usize = 0x40;
    /// `u64`: direct moves the function made (its host only).
    pub const DIRECT_MOVES: usize = 0x80;
    /// `u64`: bytes of those moves (its host only).
    pub const DIRECT_BYTES: usize = 0x88;
    /// `u64`: direct moves that signalled (its host only).
    pub const DIRECT_SIGNALS: usize = 0x90;
    /// `MOVING_SLOTS` × `u64`: the token of a DMB a thread of the host moves into directly
    /// right now, 0 when free (claimed by a compare-and-swap; the board waits for a
    /// withdrawn token to leave them: spec section 5.5).
    pub const MOVING: usize = 0xC0;
    /// Moving words per function: at most this many threads of one host move directly at
    /// once (the others use the ring).
    pub const MOVING_SLOTS: usize = 8;
}

const _: () = assert!(peers::DIRECT_SIGNALS + 8 <= peers::MOVING);
const _: () = assert!(peers::MOVING + 8 * peers::MOVING_SLOTS <= peers::ENTRY_LEN);

/// The DMB table of a loopback board's peer table (spec section 5.5): after the functions'
/// entries, a header and one entry per DMB the board published for direct moves (a DMB of
/// no VLAN, from its REG_DMB to its UNREG_DMB or its owner's end).
pub mod dmb_table {
    /// Bytes of the header.
    pub const HEADER_LEN: usize = 64;
    /// Header `u64`: +1 after each published entry (a host that did not find a token may
    /// look again when it moved).
    pub const PUBLISHED: usize = 0x00;
    /// Entries in the table (the device's own DMB limit).
    pub const ENTRIES: usize = 4096;
    /// Bytes of one entry.
    pub const ENTRY_LEN: usize = 64;
    /// Entry `u64`: the DMB's token, 0 when the entry is free (written last when published,
    /// first when withdrawn).
    pub const TOKEN: usize = 0x00;
    /// Entry `u64`: device address of the DMB.
    pub const ADDR: usize = 0x08;
    /// Entry `u64`: the GID that may write it (REG_DMB's `rgid`).
    pub const RGID: usize = 0x10;
    /// Entry `u32`: its length.
    pub const LEN: usize = 0x18;
    /// Entry `u32`: the owner's function index.
    pub const OWNER: usize = 0x1C;
    /// Entry `u32`: its SBA index at the owner.
    pub const SBA_IDX: usize = 0x20;
}

const _: () = assert!(dmb_table::SBA_IDX + 4 <= dmb_table::ENTRY_LEN);
const _: () = assert!(dmb_table::ENTRIES == crate::board::MAX_DMBS);
const _: () = assert!(RING_SLOTS.is_power_of_two());

/// `BOARD_STATE`: the board serves this function.
pub const BOARD_RUNNING: u32 = 1;
/// `BOARD_STATE`: the board stopped (or detached the function); nothing more will happen.
pub const BOARD_STOPPED: u32 = 2;

/// Entry status prefix of a refused store-block (`0x100 | move error code`).
pub const SQ_ERR_REFUSED: u32 = 0x100;
/// Entry status of a malformed ring entry (length over 4096, or more entries than slots).
pub const SQ_ERR_MALFORMED: u32 = 0x200;

/// A NUL-padded message field from `text` (cut at a character boundary).
pub fn message_field<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

/// The text of a NUL-padded message field (lossy).
pub fn message_text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_golden_bytes() {
        let h = Hello {
            magic: HELLO_MAGIC,
            version: 1.into(),
            flags: 0.into(),
            pid: 0x0102_0304.into(),
            reserved: 0.into(),
        };
        let mut want = Vec::from(*b"ISMHELLO");
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]);
        assert_eq!(h.as_bytes(), &want[..]);
    }

    #[test]
    fn name_service_golden_bytes() {
        let mut server = NameEndpoint {
            family: NAMES_FAMILY_V4.into(),
            port: 7000.into(),
            addr: [0; 16],
        };
        server.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let client = NameEndpoint {
            family: NAMES_FAMILY_V6.into(),
            port: 0x1234.into(),
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        };
        let r = NameRequest {
            op: NAMES_REGISTER_CLIENT.into(),
            seq: 0x0a0b_0c0d.into(),
            client,
            server,
        };
        let mut want = vec![3, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a];
        want.extend_from_slice(&[6, 0, 0x34, 0x12]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[4, 0, 0x58, 0x1b, 127, 0, 0, 1]);
        want.extend_from_slice(&[0; 12]);
        assert_eq!(r.as_bytes(), &want[..]);
        let reply = NameReply {
            op: NAMES_TAKE_CLIENT.into(),
            seq: 9.into(),
            result: NAMES_OK.into(),
            reserved: 0.into(),
        };
        assert_eq!(
            reply.as_bytes(),
            &[6, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&NAMES_MAGIC, b"ISMNAMES");
    }

    #[test]
    fn message_fields_round_trip_and_cut_at_char_boundaries() {
        let f: [u8; 4] = message_field("aé€");
        assert_eq!(message_text(&f), "aé");
        let f: [u8; 16] = message_field("board full");
        assert_eq!(message_text(&f), "board full");
    }
}
