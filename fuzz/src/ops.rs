//! The input format of the device targets: a sequence of records, each one operation.
//!
//! `commands` input: byte 0 selects the board (bit 0 set: functions 1 and 2 share one memory
//! domain and no-copy attach is offered), then records until the input ends. Each record
//! starts with a tag byte (taken mod 6) and a function byte (taken mod 3):
//!
//! | tag | rest                                             | operation                      |
//! |-----|--------------------------------------------------|--------------------------------|
//! | 0   | `n: u8`, `n` bytes                               | `execute` of the raw bytes     |
//! | 1   | a [`ReqSpec`] decoded by `arbitrary`             | `execute` of the emitted request |
//! | 2   | word `u64` BE, `len: u16` BE, `fill: u8`         | `store_block(word, data)`      |
//! | 3   | `k: u8`, offset `u32` BE, `flags: u8`, `dmbe: u8`, `len: u16` BE, `fill: u8` | `store_block` to the `k`-th token seen (stale ones too); flags bit 0 = signal |
//! | 4   | `crash: u8`                                      | `function_down`                |
//! | 5   | —                                                | `function_up`                  |
//!
//! Data of a move is `fill, fill+1, …` (mod 256), `len mod 4200` bytes (so some exceed the
//! 4096-byte limit). `moves` input is a sequence of records 2 and 3 only, without the tag.

use arbitrary::{Arbitrary, Unstructured};
use ism_firmware::command::Request;
use ism_hal::{DevAddr, DmbToken, Gid};

use crate::geometry::{domain_base, gid, DOMAIN_SIZE, FUNCTIONS};

/// An address: mostly inside (or just past) one of the domains, sometimes anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum AddrSpec {
    /// `domain_base(d % 3) + 8 * (off mod (DOMAIN_SIZE / 8 + 64))`.
    Domain {
        /// Domain.
        d: u8,
        /// Offset in doublewords.
        off: u16,
    },
    /// Any address.
    Raw(u64),
}

impl AddrSpec {
    fn resolve(self) -> DevAddr {
        match self {
            AddrSpec::Domain { d, off } => {
                let dw = u64::from(off) % (DOMAIN_SIZE as u64 / 8 + 64);
                DevAddr(domain_base(usize::from(d) % FUNCTIONS) + 8 * dw)
            }
            AddrSpec::Raw(a) => DevAddr(a),
        }
    }
}

/// A GID: usually one of the functions', sometimes anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum GidSpec {
    /// Function `f % 3`.
    Function(u8),
    /// Any GID.
    Raw(u64),
}

impl GidSpec {
    fn resolve(self) -> Gid {
        match self {
            GidSpec::Function(f) => gid(usize::from(f) % FUNCTIONS),
            GidSpec::Raw(g) => Gid(g),
        }
    }
}

/// A token: one the device issued (live or stale), or anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum TokenSpec {
    /// The `k`-th token seen, mod the number seen.
    Seen(u8),
    /// Any value.
    Raw(u64),
}

impl TokenSpec {
    fn resolve(self, seen: &[DmbToken]) -> DmbToken {
        match self {
            TokenSpec::Seen(k) if !seen.is_empty() => seen[usize::from(k) % seen.len()],
            TokenSpec::Seen(k) => DmbToken(u64::from(k) << 32),
            TokenSpec::Raw(t) => DmbToken(t),
        }
    }
}

/// A structured request with arbitrary fields (tag 1).
#[derive(Arbitrary, Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum ReqSpec {
    RegSba(AddrSpec),
    RegIeq(AddrSpec, u16),
    ReadGid,
    AddVlanId(u16),
    DelVlanId(u16),
    AnyVlanId(bool, u64),
    SetVlan,
    ResetVlan,
    QueryInfo,
    QueryRgid(GidSpec, Option<u32>),
    RegDmb {
        addr: AddrSpec,
        small_len: Option<u16>,
        len: u32,
        sba_idx: u16,
        vlan: Option<u32>,
        rgid: GidSpec,
    },
    UnregDmb(TokenSpec),
    SignalIeq(GidSpec, bool, u32, u64),
    UnregSba,
    UnregIeq,
    AttachDmb(TokenSpec),
    DetachDmb(TokenSpec),
}

impl ReqSpec {
    /// The request, with tokens drawn from `seen`.
    pub fn resolve(self, seen: &[DmbToken]) -> Request {
        match self {
            ReqSpec::RegSba(a) => Request::RegSba { sba: a.resolve() },
            ReqSpec::RegIeq(a, len) => Request::RegIeq {
                ieq: a.resolve(),
                len: u64::from(len),
            },
            ReqSpec::ReadGid => Request::ReadGid,
            ReqSpec::AddVlanId(v) => Request::AddVlanId {
                vlan_id: u64::from(v % 4100),
            },
            ReqSpec::DelVlanId(v) => Request::DelVlanId {
                vlan_id: u64::from(v % 4100),
            },
            ReqSpec::AnyVlanId(add, v) if add => Request::AddVlanId { vlan_id: v },
            ReqSpec::AnyVlanId(_, v) => Request::DelVlanId { vlan_id: v },
            ReqSpec::SetVlan => Request::SetVlan,
            ReqSpec::ResetVlan => Request::ResetVlan,
            ReqSpec::QueryInfo => Request::QueryInfo,
            ReqSpec::QueryRgid(g, vlan) => Request::QueryRgid {
                rgid: g.resolve(),
                vlan,
            },
            ReqSpec::RegDmb {
                addr,
                small_len,
                len,
                sba_idx,
                vlan,
                rgid,
            } => Request::RegDmb {
                dmb: addr.resolve(),
                len: small_len.map_or(len, |l| u32::from(l) % 0x3000),
                sba_idx: u32::from(sba_idx % 2048),
                vlan,
                rgid: rgid.resolve(),
            },
            ReqSpec::UnregDmb(t) => Request::UnregDmb {
                token: t.resolve(seen),
            },
            ReqSpec::SignalIeq(g, trigger_irq, code, info) => Request::SignalIeq {
                rgid: g.resolve(),
                trigger_irq,
                code,
                info,
            },
            ReqSpec::UnregSba => Request::UnregSba,
            ReqSpec::UnregIeq => Request::UnregIeq,
            ReqSpec::AttachDmb(t) => Request::AttachDmb {
                token: t.resolve(seen),
            },
            ReqSpec::DetachDmb(t) => Request::DetachDmb {
                token: t.resolve(seen),
            },
        }
    }
}

/// Where a move goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveTarget {
    /// A raw request word.
    Word(u64),
    /// The `k`-th token seen (mod the number seen), with these fields.
    Seen {
        /// Index into the tokens seen.
        k: u8,
        /// Offset (masked to 23 bits in the word).
        offset: u32,
        /// Signal flag.
        signal: bool,
        /// DMBE index.
        dmbe: u8,
    },
}

/// One operation of a device target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Tag 0: raw request bytes.
    Raw {
        /// Function.
        f: usize,
        /// Request bytes.
        bytes: Vec<u8>,
    },
    /// Tag 1: a structured request (tokens resolved when the operation runs).
    Cmd {
        /// Function.
        f: usize,
        /// The request as decoded.
        spec: String,
        /// The request.
        req: Request,
    },
    /// Tags 2 and 3: a store-block.
    Move {
        /// Function.
        f: usize,
        /// Target.
        target: MoveTarget,
        /// Data length (may exceed the limit).
        len: usize,
        /// First data byte.
        fill: u8,
    },
    /// Tag 4: the function's partition goes down.
    Down {
        /// Function.
        f: usize,
        /// Crash (else disable).
        crash: bool,
    },
    /// Tag 5: the function comes back.
    Up {
        /// Function.
        f: usize,
    },
}

fn take<const N: usize>(u: &mut Unstructured<'_>) -> Option<[u8; N]> {
    u.bytes(N).ok().and_then(|b| b.try_into().ok())
}

fn take_u8(u: &mut Unstructured<'_>) -> Option<u8> {
    take::<1>(u).map(|b| b[0])
}

/// Maximum data length a record asks for (a little above the 4096-byte limit).
pub const MOVE_LEN_MOD: usize = 4200;

/// Decodes the body of a move record (tag 2 if `known` is false, 3 if true).
fn decode_move(u: &mut Unstructured<'_>, f: usize, known: bool) -> Option<Op> {
    let target = if known {
        let k = take_u8(u)?;
        let offset = u32::from_be_bytes(take(u)?);
        let flags = take_u8(u)?;
        let dmbe = take_u8(u)?;
        MoveTarget::Seen {
            k,
            offset,
            signal: flags & 1 != 0,
            dmbe,
        }
    } else {
        MoveTarget::Word(u64::from_be_bytes(take(u)?))
    };
    let len = usize::from(u16::from_be_bytes(take(u)?)) % MOVE_LEN_MOD;
    let fill = take_u8(u)?;
    Some(Op::Move {
        f,
        target,
        len,
        fill,
    })
}

/// Decodes one `commands` record; `None` at the end of the input. `seen` resolves tokens of
/// structured requests.
pub fn decode_command(u: &mut Unstructured<'_>, seen: &[DmbToken]) -> Option<Op> {
    let tag = take_u8(u)? % 6;
    let f = usize::from(take_u8(u)?) % FUNCTIONS;
    match tag {
        0 => {
            let n = usize::from(take_u8(u)?);
            let n = n.min(u.len());
            Some(Op::Raw {
                f,
                bytes: u.bytes(n).ok()?.to_vec(),
            })
        }
        1 => {
            let spec = ReqSpec::arbitrary(u).ok()?;
            Some(Op::Cmd {
                f,
                spec: format!("{spec:?}"),
                req: spec.resolve(seen),
            })
        }
        2 => decode_move(u, f, false),
        3 => decode_move(u, f, true),
        4 => Some(Op::Down {
            f,
            crash: take_u8(u)? & 1 != 0,
        }),
        _ => Some(Op::Up { f }),
    }
}

/// Decodes one `moves` record (function byte, then selector byte: even = tag 3 body with
/// `k = selector / 2` already read, odd = tag 2 body); `None` at the end of the input.
pub fn decode_move_record(u: &mut Unstructured<'_>) -> Option<Op> {
    let f = usize::from(take_u8(u)?) % FUNCTIONS;
    let sel = take_u8(u)?;
    if sel & 1 == 1 {
        return decode_move(u, f, false);
    }
    let offset = u32::from_be_bytes(take(u)?);
    let flags = take_u8(u)?;
    let dmbe = take_u8(u)?;
    let len = usize::from(u16::from_be_bytes(take(u)?)) % MOVE_LEN_MOD;
    let fill = take_u8(u)?;
    Some(Op::Move {
        f,
        target: MoveTarget::Seen {
            k: sel >> 1,
            offset,
            signal: flags & 1 != 0,
            dmbe,
        },
        len,
        fill,
    })
}

/// Encodes `op` as a `commands` record (structured requests are encoded as raw bytes).
pub fn encode_command(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::Raw { f, bytes } => {
            out.extend_from_slice(&[0, *f as u8, bytes.len() as u8]);
            out.extend_from_slice(bytes);
        }
        Op::Cmd { f, req, .. } => {
            let mut buf = [0u8; 64];
            let n = req.emit(&mut buf).unwrap_or(0);
            encode_command(
                &Op::Raw {
                    f: *f,
                    bytes: buf[..n].to_vec(),
                },
                out,
            );
        }
        Op::Move {
            f,
            target,
            len,
            fill,
        } => {
            match *target {
                MoveTarget::Word(w) => {
                    out.extend_from_slice(&[2, *f as u8]);
                    out.extend_from_slice(&w.to_be_bytes());
                }
                MoveTarget::Seen {
                    k,
                    offset,
                    signal,
                    dmbe,
                } => {
                    out.extend_from_slice(&[3, *f as u8, k]);
                    out.extend_from_slice(&offset.to_be_bytes());
                    out.extend_from_slice(&[u8::from(signal), dmbe]);
                }
            }
            out.extend_from_slice(&(*len as u16).to_be_bytes());
            out.push(*fill);
        }
        Op::Down { f, crash } => out.extend_from_slice(&[4, *f as u8, u8::from(*crash)]),
        Op::Up { f } => out.extend_from_slice(&[5, *f as u8]),
    }
}

/// Encodes a move to the `k`-th setup DMB as a `moves` record.
pub fn encode_move_record(
    f: usize,
    k: u8,
    offset: u32,
    signal: bool,
    len: u16,
    fill: u8,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&[f as u8, k << 1]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&[u8::from(signal), 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(fill);
}
