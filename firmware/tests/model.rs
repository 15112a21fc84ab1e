//! Model-based property test: random sequences of operations from four functions (REG_SBA,
//! REG_IEQ and their UNREGs, REG_DMB with random addresses, lengths, SBA indices, writers and
//! VLAN tags, UNREG_DMB with live, stale and random tokens, store-blocks with random tokens,
//! offsets, lengths and signal flags, SIGNAL_IEQ, ADD/DEL_VLAN_ID, QUERY_INFO, QUERY_RGID,
//! `function_down`/`function_up`) run against the device and against a plain reference model
//! written here (vectors and maps, the rules of `device.rs` restated simply). After every step
//! the return codes, every byte of every memory domain (DMB contents, SBA bits, IEQ entries
//! with their time stamps), the interrupt counters and the number of live DMBs must agree.

mod common;

use common::{base, fid, gid, Harness, NF};
use ism_firmware::command::Request;
use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::{DownReason, MoveError, ReturnCode as Rc};
use ism_hal::{DevAddr, DmbToken, Gid};
use proptest::prelude::*;

/// Size of each domain in this test (small, so comparing all memory each step is cheap).
const SIZE: u64 = 0x8000;
/// DMB table size (small, so `DmbTableFull` happens).
const SLOTS: usize = 8;

// ------------------------------------------------------------------ operations

#[derive(Clone, Copy, Debug)]
enum Addr {
    /// Offset in the caller's own domain.
    Own(u64),
    /// Offset in domain `d` (possibly the caller's).
    In(u16, u64),
    /// Any address.
    Raw(u64),
}

#[derive(Clone, Copy, Debug)]
enum Tok {
    /// The `i % n`-th live DMB (by registration order), if any.
    Live(usize),
    /// The `i % n`-th token that is no longer live, if any.
    Stale(usize),
    /// A made-up value.
    Random(u64),
}

/// Who acts on a DMB.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// The function entitled to: for a move the one whose GID is the DMB's `rgid`, for
    /// UNREG_DMB its owner (function 0 if the token names no live DMB).
    Right,
    /// Function `f`.
    Fn(u16),
}

#[derive(Clone, Copy, Debug)]
enum G {
    Fn(u16),
    Random(u64),
}

#[derive(Clone, Debug)]
enum Op {
    RegSba(u16, Addr),
    RegIeq(u16, Addr, u64),
    UnregSba(u16),
    UnregIeq(u16),
    RegDmb {
        f: u16,
        addr: Addr,
        len: u32,
        idx: u32,
        rgid: G,
        vlan: Option<u32>,
    },
    UnregDmb(Who, Tok, u32),
    Move {
        from: Who,
        tok: Tok,
        offset: u32,
        len: usize,
        sf: bool,
        dmbe: u8,
        fill: u8,
    },
    Signal {
        f: u16,
        rgid: G,
        trigger: bool,
        code: u32,
        info: u64,
    },
    AddVlan(u16, u64),
    DelVlan(u16, u64),
    QueryInfo(u16),
    QueryRgid(u16, G, Option<u32>),
    Down(u16, bool),
    Up(u16),
}

fn func() -> impl Strategy<Value = u16> {
    0u16..NF as u16
}

fn addr(preferred: &'static [u64]) -> impl Strategy<Value = Addr> {
    prop_oneof![
        6 => proptest::sample::select(preferred).prop_map(Addr::Own),
        2 => (0u64..SIZE + 0x100).prop_map(Addr::Own),
        1 => (0u16..NF as u16, 0u64..SIZE).prop_map(|(d, o)| Addr::In(d, o)),
        1 => any::<u64>().prop_map(Addr::Raw),
    ]
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        10 => any::<usize>().prop_map(Tok::Live),
        2 => any::<usize>().prop_map(Tok::Stale),
        1 => any::<u64>().prop_map(Tok::Random),
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![3 => Just(Who::Right), 1 => func().prop_map(Who::Fn)]
}

fn g() -> impl Strategy<Value = G> {
    prop_oneof![
        8 => func().prop_map(G::Fn),
        1 => any::<u64>().prop_map(G::Random),
    ]
}

fn vlan_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => proptest::sample::select(&[0u64, 1, 2, 0x1FFF][..]),
        1 => proptest::sample::select(&[4095u64, 4096, 0x2000, u64::MAX][..]),
    ]
}

fn vlan_opt() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        10 => Just(None),
        2 => vlan_id().prop_map(|v| Some(v as u32)),
        1 => any::<u32>().prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (func(), addr(&[0, 0, 0x1000])).prop_map(|(f, a)| Op::RegSba(f, a)),
        2 => (
            func(),
            addr(&[0x1000, 0x1000, 0x1800]),
            proptest::sample::select(&[512u64, 512, 64, 128, 4096, 0, 48, 4128][..])
        )
            .prop_map(|(f, a, l)| Op::RegIeq(f, a, l)),
        1 => func().prop_map(Op::UnregSba),
        1 => func().prop_map(Op::UnregIeq),
        8 => (
            func(),
            addr(&[0x2000, 0x2800, 0x3000, 0x4000, 0x5000, 0x6000, 0x7000]),
            prop_oneof![
                6 => proptest::sample::select(&[1u32, 64, 1000, 4096, 0x2000][..]),
                3 => 1u32..0x3000,
                1 => proptest::sample::select(&[0u32, (1 << 20) + 1, u32::MAX][..]),
            ],
            prop_oneof![
                8 => 32u32..36,
                1 => proptest::sample::select(&[31u32, 1919, 1920, 0][..]),
                1 => any::<u32>(),
            ],
            g(),
            vlan_opt(),
        )
            .prop_map(|(f, addr, len, idx, rgid, vlan)| Op::RegDmb {
                f,
                addr,
                len,
                idx,
                rgid,
                vlan
            }),
        4 => (
            who(),
            tok(),
            prop_oneof![4 => Just(0u32), 1 => any::<u32>()]
        )
            .prop_map(|(f, t, low)| Op::UnregDmb(f, t, low)),
        16 => (
            who(),
            tok(),
            prop_oneof![
                4 => Just(0u32),
                4 => 0u32..0x3000,
                1 => Just((1u32 << 23) - 1),
                1 => 0u32..(1 << 23),
            ],
            prop_oneof![
                2 => Just(0usize),
                4 => 1usize..64,
                2 => 64usize..4096,
                1 => Just(4096usize),
                1 => 4097usize..4200,
            ],
            any::<bool>(),
            prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
            any::<u8>(),
        )
            .prop_map(|(from, tok, offset, len, sf, dmbe, fill)| Op::Move {
                from,
                tok,
                offset,
                len,
                sf,
                dmbe,
                fill
            }),
        3 => (func(), g(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
            |(f, rgid, trigger, code, info)| Op::Signal {
                f,
                rgid,
                trigger,
                code,
                info
            }
        ),
        3 => (func(), vlan_id()).prop_map(|(f, v)| Op::AddVlan(f, v)),
        2 => (func(), vlan_id()).prop_map(|(f, v)| Op::DelVlan(f, v)),
        1 => func().prop_map(Op::QueryInfo),
        1 => (func(), g(), vlan_opt()).prop_map(|(f, r, v)| Op::QueryRgid(f, r, v)),
        1 => (func(), any::<bool>()).prop_map(|(f, c)| Op::Down(f, c)),
        2 => func().prop_map(Op::Up),
    ]
}

// ------------------------------------------------------------------ the reference model

#[derive(Clone, Copy, Debug)]
struct Ieq {
    addr: u64,
    len: u64,
    entries: u64,
    next: u64,
}

/// What a function registers, for the overlap rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Area {
    Sba,
    Ieq,
    Dmb,
}

#[derive(Clone, Debug)]
struct Func {
    online: bool,
    sba: Option<u64>,
    ieq: Option<Ieq>,
    vlans: Vec<u16>,
    vlan_required: bool,
    indices: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Dmb {
    token: u64,
    owner: u16,
    addr: u64,
    len: u32,
    idx: u32,
    rgid: u64,
    vlan: Option<u16>,
}

struct Model {
    fns: Vec<Func>,
    /// Live DMBs in registration order.
    dmbs: Vec<Dmb>,
    /// Tokens that were live once and are not any more.
    stale: Vec<u64>,
    mem: Vec<Vec<u8>>,
    clock: u64,
    irqs: Vec<u32>,
}

fn valid_vlan(v: u64) -> bool {
    v < 4096 || v == 0x1FFF
}

impl Model {
    fn new() -> Self {
        Self {
            fns: (0..NF)
                .map(|_| Func {
                    online: true,
                    sba: None,
                    ieq: None,
                    vlans: Vec::new(),
                    vlan_required: false,
                    indices: Vec::new(),
                })
                .collect(),
            dmbs: Vec::new(),
            stale: Vec::new(),
            mem: vec![vec![0; SIZE as usize]; NF],
            clock: 0,
            irqs: vec![0; NF],
        }
    }

    /// Domain of function `f` (one per function on this board).
    fn dom(f: u16) -> usize {
        f as usize
    }

    fn contains(f: u16, addr: u64, len: u64) -> bool {
        let b = base(f);
        match (addr.checked_sub(b), addr.checked_add(len)) {
            (Some(off), Some(_)) => off <= SIZE && len <= SIZE - off,
            _ => false,
        }
    }

    fn at(&mut self, f: u16, addr: u64, len: usize) -> &mut [u8] {
        let off = (addr - base(f)) as usize;
        &mut self.mem[Self::dom(f)][off..off + len]
    }

    fn resolve_addr(f: u16, a: Addr) -> u64 {
        match a {
            Addr::Own(o) => base(f) + o,
            Addr::In(d, o) => base(d) + o,
            Addr::Raw(x) => x,
        }
    }

    fn resolve_tok(&self, t: Tok) -> u64 {
        match t {
            Tok::Live(i) if !self.dmbs.is_empty() => self.dmbs[i % self.dmbs.len()].token,
            Tok::Stale(i) if !self.stale.is_empty() => self.stale[i % self.stale.len()],
            Tok::Live(i) | Tok::Stale(i) => (i as u64) << 32,
            Tok::Random(x) => x & !0xFFFF_FFFF,
        }
    }

    fn resolve_gid(g: G) -> Gid {
        match g {
            G::Fn(f) => gid(f),
            G::Random(x) => Gid(x),
        }
    }

    fn online_by_gid(&self, rgid: Gid) -> Option<u16> {
        (0..NF as u16).find(|&f| self.fns[f as usize].online && gid(f) == rgid)
    }

    fn in_vlan(&self, f: u16, v: u16) -> bool {
        self.fns[f as usize].vlans.contains(&v)
    }

    fn post_event(
        &mut self,
        target: u16,
        ty: u32,
        code: u32,
        tok: u64,
        info: u64,
        irq: bool,
    ) -> bool {
        let t = target as usize;
        let Some(mut q) = self.fns[t].ieq else {
            return false;
        };
        self.clock += 1;
        let mut ev = Vec::with_capacity(32);
        ev.extend_from_slice(&ty.to_be_bytes());
        ev.extend_from_slice(&code.to_be_bytes());
        ev.extend_from_slice(&tok.to_be_bytes());
        ev.extend_from_slice(&self.clock.to_be_bytes());
        ev.extend_from_slice(&info.to_be_bytes());
        let at = q.addr + 32 * (q.next + 1);
        self.at(target, at, 32).copy_from_slice(&ev);
        self.at(target, q.addr, 8)
            .copy_from_slice(&(q.next + 1).to_be_bytes());
        q.next = (q.next + 1) % q.entries;
        self.fns[t].ieq = Some(q);
        if let Some(sba) = self.fns[t].sba {
            self.at(target, sba, 1)[0] |= 0x40;
        }
        if irq {
            self.irqs[t] += 1;
        }
        true
    }

    fn remove_dmb(&mut self, i: usize) -> Dmb {
        let d = self.dmbs.remove(i);
        self.stale.push(d.token);
        d
    }

    // Commands: Ok(response body check value) or the return code.

    /// The device's overlap rule: an SBA or IEQ never overlaps another status area or a DMB
    /// of the same memory; DMBs may overlap each other.
    fn overlaps(&self, f: u16, a: u64, len: u64, what: Area) -> bool {
        let hit = |b: u64, l: u64| a < b + l && b < a + len;
        let fs = &self.fns[f as usize];
        (what != Area::Sba && fs.sba.is_some_and(|s| hit(s, 4096)))
            || (what != Area::Ieq && fs.ieq.as_ref().is_some_and(|q| hit(q.addr, q.len)))
            || (what != Area::Dmb
                && self
                    .dmbs
                    .iter()
                    .any(|d| d.owner == f && hit(d.addr, d.len as u64)))
    }

    fn reg_sba(&mut self, f: u16, a: u64) -> Result<(), Rc> {
        if !a.is_multiple_of(8) || !Self::contains(f, a, 4096) {
            return Err(Rc::InvalidAddress);
        }
        if self.fns[f as usize].sba.is_some() {
            return Err(Rc::AlreadyRegistered);
        }
        if self.overlaps(f, a, 4096, Area::Sba) {
            return Err(Rc::InvalidAddress);
        }
        let fs = &mut self.fns[f as usize];
        fs.sba = Some(a);
        Ok(())
    }

    fn reg_ieq(&mut self, f: u16, a: u64, len: u64) -> Result<(), Rc> {
        if !len.is_multiple_of(32) || !(64..=4096).contains(&len) {
            return Err(Rc::InvalidLength);
        }
        if !a.is_multiple_of(8) || !Self::contains(f, a, len) {
            return Err(Rc::InvalidAddress);
        }
        if self.fns[f as usize].ieq.is_some() {
            return Err(Rc::AlreadyRegistered);
        }
        if self.overlaps(f, a, len, Area::Ieq) {
            return Err(Rc::InvalidAddress);
        }
        let mut h = [0u8; 32];
        h[8..16].copy_from_slice(&len.to_be_bytes());
        h[16..24].copy_from_slice(&32u64.to_be_bytes());
        self.at(f, a, 32).copy_from_slice(&h);
        self.fns[f as usize].ieq = Some(Ieq {
            addr: a,
            len,
            entries: len / 32 - 1,
            next: 0,
        });
        Ok(())
    }

    fn reg_dmb(
        &mut self,
        f: u16,
        a: u64,
        len: u32,
        idx: u32,
        rgid: Gid,
        vlan: Option<u32>,
    ) -> Result<(), Rc> {
        if len == 0 || len > 1 << 20 {
            return Err(Rc::InvalidLength);
        }
        let vlan = match vlan {
            None => None,
            Some(v) if valid_vlan(v as u64) => Some(v as u16),
            Some(_) => return Err(Rc::InvalidVlan),
        };
        if !(32..1920).contains(&idx) {
            return Err(Rc::InvalidSbaIndex);
        }
        if self.fns[f as usize].indices.contains(&idx) {
            return Err(Rc::SbaIndexInUse);
        }
        if !Self::contains(f, a, len as u64) || self.overlaps(f, a, len as u64, Area::Dmb) {
            return Err(Rc::InvalidAddress);
        }
        if self.dmbs.len() == SLOTS {
            return Err(Rc::DmbTableFull);
        }
        // The token is the device's to choose; `run` fills it in.
        self.fns[f as usize].indices.push(idx);
        self.dmbs.push(Dmb {
            token: 0,
            owner: f,
            addr: a,
            len,
            idx,
            rgid: rgid.0,
            vlan,
        });
        Ok(())
    }

    fn unreg_dmb(&mut self, f: u16, token: u64) -> Result<(), Rc> {
        let i = self
            .dmbs
            .iter()
            .position(|d| d.token == token && d.owner == f && token & 0xFFFF_FFFF == 0)
            .ok_or(Rc::InvalidToken)?;
        let d = self.remove_dmb(i);
        self.fns[f as usize].indices.retain(|&x| x != d.idx);
        self.post_event(f, 0, 4, token, 0, true);
        Ok(())
    }

    fn signal(&mut self, f: u16, rgid: Gid, trigger: bool, code: u32, info: u64) -> Result<(), Rc> {
        let t = self.online_by_gid(rgid).ok_or(Rc::RemoteGidUnreachable)?;
        if self.post_event(t, 2, code, gid(f).0, info, trigger) {
            Ok(())
        } else {
            Err(Rc::RemoteNoEventQueue)
        }
    }

    fn add_vlan(&mut self, f: u16, v: u64) -> Result<(), Rc> {
        if !valid_vlan(v) {
            return Err(Rc::InvalidVlan);
        }
        let vl = &mut self.fns[f as usize].vlans;
        if !vl.contains(&(v as u16)) {
            if vl.len() == 64 {
                return Err(Rc::VlanTableFull);
            }
            vl.push(v as u16);
        }
        Ok(())
    }

    fn del_vlan(&mut self, f: u16, v: u64) -> Result<(), Rc> {
        if !valid_vlan(v) {
            return Err(Rc::InvalidVlan);
        }
        let vl = &mut self.fns[f as usize].vlans;
        let i = vl
            .iter()
            .position(|&x| x == v as u16)
            .ok_or(Rc::VlanNotFound)?;
        vl.remove(i);
        Ok(())
    }

    fn query_rgid(&self, f: u16, rgid: Gid, vlan: Option<u32>) -> Result<(), Rc> {
        let peer = self.online_by_gid(rgid).ok_or(Rc::RemoteGidUnreachable)?;
        if let Some(v) = vlan {
            if v > 0xFFFF
                || !valid_vlan(v as u64)
                || !self.in_vlan(f, v as u16)
                || !self.in_vlan(peer, v as u16)
            {
                return Err(Rc::RemoteGidUnreachable);
            }
        }
        Ok(())
    }

    fn query_info(&self, f: u16) -> Vec<u8> {
        let fs = &self.fns[f as usize];
        let mut b = Vec::with_capacity(200);
        b.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 200]);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&4096u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&gid(f).0.to_be_bytes());
        b.extend_from_slice(&fs.sba.unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&fs.ieq.map_or(0, |q| q.addr).to_be_bytes());
        b.extend_from_slice(&(fs.ieq.map_or(0, |q| q.len) as u32).to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        let owned = self.dmbs.iter().filter(|d| d.owner == f).count() as u32;
        let used = self
            .dmbs
            .iter()
            .filter(|d| d.owner != f && d.rgid == gid(f).0)
            .count() as u32;
        b.extend_from_slice(&owned.to_be_bytes());
        b.extend_from_slice(&used.to_be_bytes());
        b.extend_from_slice(&u32::from(fs.vlan_required).to_be_bytes());
        b.extend_from_slice(&(fs.vlans.len() as u32).to_be_bytes());
        for i in 0..64 {
            b.extend_from_slice(&fs.vlans.get(i).copied().unwrap_or(0).to_be_bytes());
        }
        b
    }

    fn store_block(&mut self, from: u16, req: u64, data: &[u8]) -> Result<(), MoveError> {
        if data.len() > 4096 {
            return Err(MoveError::TooLong);
        }
        if !self.fns[from as usize].online {
            return Err(MoveError::FunctionOffline);
        }
        let m = MoveRequest::parse(req);
        let d = *self
            .dmbs
            .iter()
            .find(|d| d.token == m.token.0)
            .ok_or(MoveError::InvalidToken)?;
        if d.rgid != gid(from).0 {
            return Err(MoveError::AccessDenied);
        }
        if let Some(v) = d.vlan {
            if !self.in_vlan(from, v) {
                return Err(MoveError::AccessDenied);
            }
        }
        if m.offset as u64 + data.len() as u64 > d.len as u64 {
            return Err(MoveError::OutOfRange);
        }
        self.at(d.owner, d.addr + m.offset as u64, data.len())
            .copy_from_slice(data);
        if m.signal {
            if let Some(sba) = self.fns[d.owner as usize].sba {
                let i = d.idx as u64;
                let mask = 0x1000u16.rotate_right(m.dmbe_idx as u32).to_be_bytes();
                let at = self.at(d.owner, sba + 256 + 2 * i, 2);
                at[0] |= mask[0];
                at[1] |= mask[1];
                self.at(d.owner, sba + 4 + i / 8, 1)[0] |= 0x80 >> (i % 8);
                self.at(d.owner, sba, 1)[0] |= 0x80;
                self.irqs[d.owner as usize] += 1;
            }
        }
        Ok(())
    }

    fn down(&mut self, f: u16, crash: bool) {
        let fi = f as usize;
        // A function already down stays down; nobody is told again.
        if !self.fns[fi].online {
            return;
        }
        self.fns[fi].online = false;
        let mut i = 0;
        while i < self.dmbs.len() {
            if self.dmbs[i].owner == f {
                self.remove_dmb(i);
            } else {
                i += 1;
            }
        }
        let fs = &mut self.fns[fi];
        fs.sba = None;
        fs.ieq = None;
        fs.vlans.clear();
        fs.vlan_required = false;
        fs.indices.clear();
        let code = if crash { 0x01 } else { 0x07 };
        for o in 0..NF as u16 {
            if o != f && self.fns[o as usize].online {
                self.post_event(o, 1, code, gid(f).0, 0, true);
            }
        }
    }
}

// ------------------------------------------------------------------ running both

fn check_cmd(h: &Harness<SLOTS>, f: u16, req: Request, want: Result<(), Rc>) -> Option<Vec<u8>> {
    let got = h.try_cmd(f, req);
    match (&got, want) {
        (Ok(_), Ok(())) => {}
        (Err(g), Err(w)) => assert_eq!(*g, w, "{req:?} by fn {f}"),
        (Ok(_), Err(w)) => panic!("{req:?} by fn {f}: device succeeded, model says {w}"),
        (Err(g), Ok(())) => panic!("{req:?} by fn {f}: device says {g}, model succeeded"),
    }
    got.ok().map(|r| r.bytes().to_vec())
}

fn step(h: &Harness<SLOTS>, m: &mut Model, op: &Op) {
    match *op {
        Op::RegSba(f, a) => {
            let a = Model::resolve_addr(f, a);
            let want = if m.fns[f as usize].online {
                m.reg_sba(f, a)
            } else {
                Err(Rc::FunctionOffline)
            };
            check_cmd(h, f, Request::RegSba { sba: DevAddr(a) }, want);
        }
        Op::RegIeq(f, a, len) => {
            let a = Model::resolve_addr(f, a);
            let want = if m.fns[f as usize].online {
                m.reg_ieq(f, a, len)
            } else {
                Err(Rc::FunctionOffline)
            };
            check_cmd(
                h,
                f,
                Request::RegIeq {
                    ieq: DevAddr(a),
                    len,
                },
                want,
            );
        }
        Op::UnregSba(f) => {
            let fs = &mut m.fns[f as usize];
            let want = if !fs.online {
                Err(Rc::FunctionOffline)
            } else if fs.sba.take().is_none() {
                Err(Rc::NotRegistered)
            } else {
                Ok(())
            };
            check_cmd(h, f, Request::UnregSba, want);
        }
        Op::UnregIeq(f) => {
            let fs = &mut m.fns[f as usize];
            let want = if !fs.online {
                Err(Rc::FunctionOffline)
            } else if fs.ieq.take().is_none() {
                Err(Rc::NotRegistered)
            } else {
                Ok(())
            };
            check_cmd(h, f, Request::UnregIeq, want);
        }
        Op::RegDmb {
            f,
            addr,
            len,
            idx,
            rgid,
            vlan,
        } => {
            let a = Model::resolve_addr(f, addr);
            let rgid = Model::resolve_gid(rgid);
            let want = if m.fns[f as usize].online {
                m.reg_dmb(f, a, len, idx, rgid, vlan)
            } else {
                Err(Rc::FunctionOffline)
            };
            let req = Request::RegDmb {
                dmb: DevAddr(a),
                len,
                sba_idx: idx,
                vlan,
                rgid,
            };
            if let Some(resp) = check_cmd(h, f, req, want) {
                let token = u64::from_be_bytes(resp[8..16].try_into().unwrap());
                assert_eq!(token & 0xFFFF_FFFF, 0, "token's low half is zero");
                assert!(
                    !m.stale.contains(&token) && !m.dmbs.iter().any(|d| d.token == token),
                    "token {token:#x} issued twice"
                );
                m.dmbs.last_mut().unwrap().token = token;
            }
        }
        Op::UnregDmb(who, t, low) => {
            let token = m.resolve_tok(t);
            let f = match who {
                Who::Fn(f) => f,
                Who::Right => m
                    .dmbs
                    .iter()
                    .find(|d| d.token == token)
                    .map_or(0, |d| d.owner),
            };
            let token = token | low as u64;
            let want = if m.fns[f as usize].online {
                m.unreg_dmb(f, token)
            } else {
                Err(Rc::FunctionOffline)
            };
            if let Some(resp) = check_cmd(
                h,
                f,
                Request::UnregDmb {
                    token: DmbToken(token),
                },
                want,
            ) {
                assert_eq!(&resp[8..16], &[0; 8], "released at once");
            }
        }
        Op::Move {
            from,
            tok,
            offset,
            len,
            sf,
            dmbe,
            fill,
        } => {
            let token = DmbToken(m.resolve_tok(tok));
            let from = match from {
                Who::Fn(f) => f,
                Who::Right => m
                    .dmbs
                    .iter()
                    .find(|d| d.token == token.0)
                    .and_then(|d| (0..NF as u16).find(|&f| gid(f).0 == d.rgid))
                    .unwrap_or(0),
            };
            let req = MoveRequest {
                token,
                dmbe_idx: dmbe,
                signal: sf,
                offset,
            }
            .emit();
            let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
            let want = m.store_block(from, req, &data);
            let got = h.dev.store_block(fid(from), req, &data);
            assert_eq!(got, want, "{op:?}");
        }
        Op::Signal {
            f,
            rgid,
            trigger,
            code,
            info,
        } => {
            let rgid = Model::resolve_gid(rgid);
            let want = if m.fns[f as usize].online {
                m.signal(f, rgid, trigger, code, info)
            } else {
                Err(Rc::FunctionOffline)
            };
            let req = Request::SignalIeq {
                rgid,
                trigger_irq: trigger,
                code,
                info,
            };
            check_cmd(h, f, req, want);
        }
        Op::AddVlan(f, v) => {
            let want = if m.fns[f as usize].online {
                m.add_vlan(f, v)
            } else {
                Err(Rc::FunctionOffline)
            };
            check_cmd(h, f, Request::AddVlanId { vlan_id: v }, want);
        }
        Op::DelVlan(f, v) => {
            let want = if m.fns[f as usize].online {
                m.del_vlan(f, v)
            } else {
                Err(Rc::FunctionOffline)
            };
            check_cmd(h, f, Request::DelVlanId { vlan_id: v }, want);
        }
        Op::QueryInfo(f) => {
            let online = m.fns[f as usize].online;
            let want = if online {
                Ok(())
            } else {
                Err(Rc::FunctionOffline)
            };
            if let Some(resp) = check_cmd(h, f, Request::QueryInfo, want) {
                assert_eq!(resp, m.query_info(f), "QUERY_INFO of fn {f}");
            }
        }
        Op::QueryRgid(f, g, vlan) => {
            let rgid = Model::resolve_gid(g);
            let want = if m.fns[f as usize].online {
                m.query_rgid(f, rgid, vlan)
            } else {
                Err(Rc::FunctionOffline)
            };
            check_cmd(h, f, Request::QueryRgid { rgid, vlan }, want);
        }
        Op::Down(f, crash) => {
            let reason = if crash {
                DownReason::Crash
            } else {
                DownReason::Disabled
            };
            assert!(h.dev.function_down(fid(f), reason));
            m.down(f, crash);
        }
        Op::Up(f) => {
            assert!(h.dev.function_up(fid(f)));
            m.fns[f as usize].online = true;
        }
    }
}

fn compare(h: &Harness<SLOTS>, m: &Model, op: &Op) {
    for d in 0..NF as u16 {
        let got = h.mem(d).snapshot(base(d), SIZE as usize);
        if got != m.mem[d as usize] {
            let first = got
                .iter()
                .zip(&m.mem[d as usize])
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "after {op:?}: domain {d} differs first at offset {first:#x}: device {:#04x}, model {:#04x}",
                got[first], m.mem[d as usize][first]
            );
        }
    }
    for f in 0..NF as u16 {
        assert_eq!(
            h.irq(f).count(),
            m.irqs[f as usize],
            "irq count of fn {f} after {op:?}"
        );
        assert_eq!(h.dev.is_online(fid(f)), m.fns[f as usize].online);
    }
    assert_eq!(h.dev.dmbs_in_use(), m.dmbs.len(), "live DMBs after {op:?}");
}

/// Runs `ops` after a prologue: functions in `probe_mask` register SBA and IEQ, then each
/// `(owner, writer)` pair of `dmbs` registers a 4 KiB DMB, so moves have targets early.
fn run(probe_mask: u8, dmbs: &[(u16, u16)], ops: &[Op]) {
    let h = Harness::<SLOTS>::build(NF, SIZE as usize, false, [0, 1, 2, 3]);
    let mut m = Model::new();
    for f in 0..NF as u16 {
        if probe_mask & (1 << f) != 0 {
            step(&h, &mut m, &Op::RegSba(f, Addr::Own(0)));
            step(&h, &mut m, &Op::RegIeq(f, Addr::Own(0x1000), 512));
        }
    }
    for (i, &(owner, writer)) in dmbs.iter().enumerate() {
        let reg = Op::RegDmb {
            f: owner,
            addr: Addr::Own(0x2000 + 0x1000 * i as u64),
            len: 4096,
            idx: 40 + i as u32,
            rgid: G::Fn(writer),
            vlan: None,
        };
        step(&h, &mut m, &reg);
    }
    compare(&h, &m, &Op::QueryInfo(0));
    for op in ops {
        step(&h, &mut m, op);
        compare(&h, &m, op);
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const MAX_OPS: usize = if cfg!(miri) { 12 } else { 40 };

proptest! {
    #![proptest_config(config())]

    #[test]
    fn device_agrees_with_the_model(
        probe_mask in 0u8..16,
        dmbs in proptest::collection::vec((func(), func()), 0..4),
        ops in proptest::collection::vec(op(), 1..MAX_OPS),
    ) {
        run(probe_mask, &dmbs, &ops);
    }
}

/// A fixed sequence through the model, so the model itself is exercised deterministically
/// (also under Miri) on the paths random sequences hit rarely.
#[test]
fn model_fixed_sequence() {
    let mv = |from, tok, offset, len, sf| Op::Move {
        from: Who::Fn(from),
        tok,
        offset,
        len,
        sf,
        dmbe: 0,
        fill: 0x30,
    };
    let ops = [
        Op::AddVlan(1, 7),
        Op::RegDmb {
            f: 0,
            addr: Addr::Own(0x2000),
            len: 4096,
            idx: 32,
            rgid: G::Fn(1),
            vlan: Some(7),
        },
        mv(1, Tok::Live(0), 10, 100, true),
        mv(2, Tok::Live(0), 10, 100, true),
        Op::QueryInfo(1),
        Op::Signal {
            f: 3,
            rgid: G::Fn(0),
            trigger: false,
            code: 0x80,
            info: 9,
        },
        Op::UnregDmb(Who::Fn(0), Tok::Live(0), 0),
        mv(1, Tok::Stale(0), 0, 1, true),
        Op::Down(2, true),
        Op::QueryRgid(0, G::Fn(2), None),
        Op::Up(2),
        Op::RegDmb {
            f: 2,
            addr: Addr::Own(0x7000),
            len: 0x1000,
            idx: 1919,
            rgid: G::Fn(0),
            vlan: None,
        },
        mv(0, Tok::Live(0), 0xFFF, 1, true),
        Op::QueryInfo(0),
    ];
    run(0b0011, &[], &ops);
    // Fill the table.
    let fill: Vec<Op> = (0..SLOTS as u32 + 1)
        .map(|i| Op::RegDmb {
            f: (i % 2) as u16,
            addr: Addr::Own(0x2000),
            len: 64,
            idx: 32 + i,
            rgid: G::Fn(3),
            vlan: None,
        })
        .chain([Op::QueryInfo(3), Op::Down(0, false), Op::QueryInfo(3)])
        .collect();
    run(0b1111, &[(3, 0)], &fill);
}
