//! A device on a `FakeBoard` with three functions, a shadow of what the hosts registered,
//! and the checks run after every operation.
//!
//! The shadow is driven only by the device's answers (a successful REG_DMB adds a DMB with
//! the token the device returned, an UNREG_DMB that says "released" removes it, …), so it
//! never assumes what the device should do; the checks then compare the device with it:
//!
//! * **memory**: every domain is snapshot before an operation; afterwards bytes may differ
//!   only inside ranges that operation may write: a command only the caller's SBA and IEQ
//!   (plus the target's for SIGNAL_IEQ, the owner's for a DETACH_DMB that frees an orphan),
//!   a move only its DMB and the owner's SBA, a function going down only the other
//!   functions' SBAs and IEQs. A failed command or move changes no byte at all.
//! * **DMB count**: `dmbs_in_use()` equals the shadow's count (registered plus orphaned).
//! * **moves**: accepted exactly when the rules allow (live token, caller is the writer,
//!   VLAN, bounds, length, caller online); accepted data lands at the offset; with the
//!   signal flag the owner's summary and DMB bits are set.
//! * **commands**: the response is a multiple of 8 bytes and echoes the code; UNREG_DMB
//!   succeeds exactly for a live DMB of the caller; ATTACH_DMB only for the authorized writer
//!   in the owner's memory; SBA, IEQ and DMB registrations only inside the caller's domain.

use std::collections::BTreeSet;

use ism_firmware::command::Request;
use ism_firmware::wire::ieq::{self};
use ism_firmware::wire::move_request::{MoveRequest, MAX_MOVE_LEN, OFFSET_MASK, SIGNAL_FLAG};
use ism_firmware::wire::sba::{self, SbaFlags, SBA_SIZE};
use ism_firmware::wire::unreg_dmb::UNREG_DEFERRED;
use ism_firmware::wire::HEADER_LEN;
use ism_firmware::{Device, DownReason, FunctionConfig};
use ism_hal::fakes::FakeBoard;
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, DmbToken, DomainId, FunctionId, Gid};

pub use crate::geometry::{domain_base, gid, DOMAIN_SIZE, FUNCTIONS, TABLE};
use crate::ops::{MoveTarget, Op};

/// The device under test.
pub type FuzzDevice = Device<FakeBoard, 4, TABLE>;

/// Life cycle of a DMB in the shadow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmbState {
    /// Registered and live.
    Registered,
    /// Unregistered while attached elsewhere.
    Orphaned,
}

/// A DMB as the shadow knows it.
#[derive(Clone, Copy, Debug)]
pub struct ShadowDmb {
    /// Token the device returned.
    pub token: DmbToken,
    /// Owner function.
    pub owner: usize,
    /// Address in the owner's domain.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// SBA index.
    pub sba_idx: u32,
    /// Authorized writer.
    pub rgid: Gid,
    /// VLAN, if any.
    pub vlan: Option<u16>,
    /// State.
    pub state: DmbState,
    /// Bit `f`: attached by function `f`.
    pub attachers: u8,
}

/// A writable range: domain, first address, end address.
type Range = (usize, u64, u64);

/// The device, its board and the shadow.
pub struct Harness {
    /// The device.
    pub dev: FuzzDevice,
    domain_of: [usize; FUNCTIONS],
    shared: bool,
    online: [bool; FUNCTIONS],
    sba: [Option<u64>; FUNCTIONS],
    ieq: [Option<(u64, u64)>; FUNCTIONS],
    vlans: [BTreeSet<u16>; FUNCTIONS],
    /// DMBs registered or orphaned.
    pub dmbs: Vec<ShadowDmb>,
    /// Every token the device issued, in order (live or not).
    pub seen: Vec<DmbToken>,
    /// The domains as the last check saw them (the "before" of the next operation).
    last: Vec<Vec<u8>>,
}

impl Harness {
    /// A fresh board. `shared`: functions 1 and 2 share domain 1 and the board offers
    /// no-copy attach; otherwise function `i` has domain `i`.
    pub fn new(shared: bool) -> Self {
        let mut board = FakeBoard::new(FUNCTIONS, DOMAIN_SIZE, FUNCTIONS);
        board.shared_memory = shared;
        let domain_of = if shared { [0, 1, 1] } else { [0, 1, 2] };
        let cfgs: Vec<FunctionConfig> = (0..FUNCTIONS)
            .map(|f| FunctionConfig {
                gid: gid(f),
                domain: DomainId(domain_of[f] as u16),
            })
            .collect();
        let dev = Device::new(board, 0x0D10, &cfgs, 0x5A17_C0DE).expect("valid configuration");
        let mut h = Self {
            dev,
            domain_of,
            shared,
            online: [true; FUNCTIONS],
            sba: [None; FUNCTIONS],
            ieq: [None; FUNCTIONS],
            vlans: Default::default(),
            dmbs: Vec::new(),
            seen: Vec::new(),
            last: Vec::new(),
        };
        h.last = h.snapshot();
        h
    }

    /// The setup of the `moves` target: every function has an SBA (offset 0) and an IEQ
    /// (offset 0x1000); function 2 is in VLAN 5; five DMBs:
    /// 0. fn 0 owns 4 KiB at 0x2000, writer fn 1, SBA index 32;
    /// 1. fn 0 owns 100 bytes at 0x3000, writer fn 2, VLAN 5, index 33;
    /// 2. fn 1 owns 8 KiB at 0x2000, writer fn 0, index 40;
    /// 3. fn 2 owns 16 KiB at 0x2000, writer fn 1, VLAN 7 (fn 1 is not in it), index 1919;
    /// 4. fn 2 owns 16 bytes at 0x6000, writer fn 2 itself, index 32.
    pub fn with_moves_setup() -> Self {
        let mut h = Self::new(false);
        for f in 0..FUNCTIONS {
            let base = domain_base(f);
            h.setup(f, Request::RegSba { sba: DevAddr(base) });
            h.setup(
                f,
                Request::RegIeq {
                    ieq: DevAddr(base + 0x1000),
                    len: 512,
                },
            );
        }
        h.setup(2, Request::AddVlanId { vlan_id: 5 });
        let dmbs = [
            (0, 0x2000, 0x1000, 32, None, 1),
            (0, 0x3000, 100, 33, Some(5), 2),
            (1, 0x2000, 0x2000, 40, None, 0),
            (2, 0x2000, 0x4000, 1919, Some(7), 1),
            (2, 0x6000, 16, 32, None, 2),
        ];
        for (owner, off, len, sba_idx, vlan, writer) in dmbs {
            h.setup(
                owner,
                Request::RegDmb {
                    dmb: DevAddr(domain_base(owner) + off),
                    len,
                    sba_idx,
                    vlan,
                    rgid: gid(writer),
                },
            );
        }
        assert_eq!(h.dmbs.len(), 5, "setup registered every DMB");
        h
    }

    fn setup(&mut self, f: usize, req: Request) {
        let mut buf = [0u8; 64];
        let n = req.emit(&mut buf).expect("fits");
        let ret = self.command(f, &buf[..n]);
        assert_eq!(ret, 0, "setup command {req:?} failed");
    }

    fn memory(&self, d: usize) -> &ism_hal::fakes::FakeMemory {
        &self.dev.board().memories[d]
    }

    fn snapshot(&self) -> Vec<Vec<u8>> {
        (0..FUNCTIONS)
            .map(|d| self.memory(d).snapshot(domain_base(d), DOMAIN_SIZE))
            .collect()
    }

    /// The SBA and IEQ ranges of function `f` as the shadow has them.
    fn pages_of(&self, f: usize, out: &mut Vec<Range>) {
        let d = self.domain_of[f];
        if let Some(s) = self.sba[f] {
            out.push((d, s, s + SBA_SIZE as u64));
        }
        if let Some((q, len)) = self.ieq[f] {
            out.push((d, q, q + len));
        }
    }

    fn in_own_domain(&self, f: usize, addr: u64, len: u64) -> bool {
        let base = domain_base(self.domain_of[f]);
        addr >= base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= base + DOMAIN_SIZE as u64)
    }

    fn dmb_index(&self, token: DmbToken) -> Option<usize> {
        self.dmbs.iter().position(|d| d.token == token)
    }

    /// Checks that memory changed since the last check only inside `allowed` (empty:
    /// nowhere), and remembers it as it is now.
    fn check_memory(&mut self, allowed: &[Range], what: &dyn core::fmt::Debug) {
        let after = self.snapshot();
        let before = core::mem::replace(&mut self.last, after);
        let after = &self.last;
        // Compare in 64-byte chunks (memcmp), and look at single bytes only in a changed
        // chunk that is not wholly inside one permitted range: this keeps the check cheap
        // under coverage instrumentation.
        const CHUNK: usize = 64;
        let inside = |d: usize, s: u64, e: u64| {
            allowed
                .iter()
                .any(|&(ad, rs, re)| ad == d && rs <= s && e <= re)
        };
        for d in 0..FUNCTIONS {
            if before[d] == after[d] {
                continue;
            }
            let chunks = before[d].chunks(CHUNK).zip(after[d].chunks(CHUNK));
            for (c, (a, b)) in chunks.enumerate() {
                let start = domain_base(d) + (c * CHUNK) as u64;
                if a == b || inside(d, start, start + a.len() as u64) {
                    continue;
                }
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    let addr = start + i as u64;
                    assert!(
                        x == y || inside(d, addr, addr + 1),
                        "{what:?}: byte {addr:#x} of domain {d} changed ({x:#04x} -> {y:#04x}) \
                         outside the permitted ranges {allowed:x?}"
                    );
                }
            }
        }
    }

    fn check_count(&self, what: &dyn core::fmt::Debug) {
        assert_eq!(
            self.dev.dmbs_in_use(),
            self.dmbs.len(),
            "{what:?}: device DMB count differs from the shadow {:?}",
            self.dmbs
        );
    }

    /// Executes raw request bytes as function `f`, checks, updates the shadow; returns `ret`.
    pub fn command(&mut self, f: usize, bytes: &[u8]) -> u16 {
        let parsed = Request::parse(bytes).ok();
        let mut pages = Vec::new();
        self.pages_of(f, &mut pages);
        match parsed {
            Some(Request::SignalIeq { rgid, .. }) => {
                for t in 0..FUNCTIONS {
                    if gid(t) == rgid {
                        self.pages_of(t, &mut pages);
                    }
                }
            }
            Some(Request::DetachDmb { token }) => {
                if let Some(i) = self.dmb_index(token) {
                    self.pages_of(self.dmbs[i].owner, &mut pages);
                }
            }
            _ => {}
        }
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let n = self.dev.execute(FunctionId(f as u16), bytes, &mut resp);
        let what = (f, parsed, bytes);
        assert!(
            n.is_multiple_of(8) && (HEADER_LEN..=COMMAND_AREA_SIZE).contains(&n),
            "{what:?}: response length {n}"
        );
        let ret = u16::from_be_bytes([resp[4], resp[5]]);
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[6], resp[7]])),
            n,
            "{what:?}: header length"
        );
        // The code is echoed from a whole header; a request shorter than one echoes 0.
        let code = bytes.get(..HEADER_LEN).map_or(&[0u8; 4][..], |h| &h[..4]);
        assert_eq!(&resp[..4], code, "{what:?}: code echo");
        if ret != 0 {
            assert_eq!(n, HEADER_LEN, "{what:?}: a failed command has no body");
            self.check_memory(&[], &what);
            // A failed UNREG_DMB must be one the shadow does not allow.
            if let Some(Request::UnregDmb { token }) = parsed {
                let live = self.dmb_index(token).is_some_and(|i| {
                    let d = &self.dmbs[i];
                    d.owner == f && d.state == DmbState::Registered
                });
                assert!(
                    !(live && self.online[f]),
                    "{what:?}: UNREG_DMB of a live own DMB refused ({ret:#x})"
                );
            }
            self.check_count(&what);
            return ret;
        }
        let req = parsed.expect("a successful command parses");
        let word = |at: usize| u64::from_be_bytes(resp[at..at + 8].try_into().expect("8"));
        match req {
            Request::RegSba { sba } => {
                assert!(self.in_own_domain(f, sba.0, SBA_SIZE as u64), "{what:?}");
                assert!(self.sba[f].is_none(), "{what:?}: second SBA");
                self.sba[f] = Some(sba.0);
            }
            Request::UnregSba => self.sba[f] = None,
            Request::RegIeq { ieq, len } => {
                assert!(self.in_own_domain(f, ieq.0, len), "{what:?}");
                assert!(self.ieq[f].is_none(), "{what:?}: second IEQ");
                self.ieq[f] = Some((ieq.0, len));
                // The device wrote the header: idx 0, the length, entry length 32.
                let mut h = [0u8; 24];
                self.memory(self.domain_of[f])
                    .read(ieq, &mut h)
                    .expect("in domain");
                assert_eq!(h[..8], [0; 8], "{what:?}: idx");
                assert_eq!(h[8..16], len.to_be_bytes(), "{what:?}: ieq_len");
                assert_eq!(h[16..], (ieq::ENTRY_LEN as u64).to_be_bytes(), "{what:?}");
            }
            Request::UnregIeq => self.ieq[f] = None,
            Request::AddVlanId { vlan_id } => {
                self.vlans[f].insert(vlan_id as u16);
            }
            Request::DelVlanId { vlan_id } => {
                assert!(self.vlans[f].remove(&(vlan_id as u16)), "{what:?}");
            }
            Request::RegDmb {
                dmb,
                len,
                sba_idx,
                vlan,
                rgid,
            } => {
                assert!(self.in_own_domain(f, dmb.0, len.into()), "{what:?}");
                let token = DmbToken(word(8));
                assert!(token.is_well_formed(), "{what:?}: token {token:?}");
                assert!(
                    self.dmb_index(token).is_none(),
                    "{what:?}: token {token:?} issued twice while in use"
                );
                self.dmbs.push(ShadowDmb {
                    token,
                    owner: f,
                    addr: dmb.0,
                    len,
                    sba_idx,
                    rgid,
                    vlan: vlan.map(|v| v as u16),
                    state: DmbState::Registered,
                    attachers: 0,
                });
                self.seen.push(token);
            }
            Request::UnregDmb { token } => {
                let i = self
                    .dmb_index(token)
                    .expect("UNREG_DMB succeeded for a token the device never issued");
                let d = &mut self.dmbs[i];
                assert!(
                    d.owner == f && d.state == DmbState::Registered,
                    "{what:?}: UNREG_DMB of {d:?} by fn {f}"
                );
                if word(8) == UNREG_DEFERRED {
                    assert_ne!(d.attachers, 0, "{what:?}: deferred without attachers");
                    d.state = DmbState::Orphaned;
                } else {
                    assert_eq!(d.attachers, 0, "{what:?}: released while attached");
                    self.dmbs.remove(i);
                }
            }
            Request::AttachDmb { token } => {
                let i = self
                    .dmb_index(token)
                    .expect("ATTACH_DMB succeeded for a token the device never issued");
                let d = &mut self.dmbs[i];
                assert!(
                    self.shared
                        && d.state == DmbState::Registered
                        && d.rgid == gid(f)
                        && self.domain_of[d.owner] == self.domain_of[f]
                        && d.attachers & (1 << f) == 0,
                    "{what:?}: ATTACH_DMB of {d:?} by fn {f}"
                );
                assert_eq!(word(8), d.addr, "{what:?}: attach address");
                d.attachers |= 1 << f;
            }
            Request::DetachDmb { token } => {
                let i = self
                    .dmb_index(token)
                    .expect("DETACH_DMB succeeded for a token the device never issued");
                self.detach(i, f);
            }
            _ => {}
        }
        // The caller's pages as registered now count too (REG_IEQ writes its header).
        self.pages_of(f, &mut pages);
        self.check_memory(&pages, &what);
        self.check_count(&what);
        0
    }

    fn detach(&mut self, i: usize, f: usize) {
        let d = &mut self.dmbs[i];
        assert!(d.attachers & (1 << f) != 0, "detach of {d:?} by fn {f}");
        d.attachers &= !(1 << f);
        if d.state == DmbState::Orphaned && d.attachers == 0 {
            self.dmbs.remove(i);
        }
    }

    /// Whether the shadow allows the move, and into which DMB.
    fn move_allowed(&self, f: usize, word: u64, len: usize) -> (bool, Option<usize>) {
        let m = MoveRequest::parse(word);
        let i = self
            .dmb_index(m.token)
            .filter(|&i| self.dmbs[i].state == DmbState::Registered);
        let Some(i) = i else {
            return (false, None);
        };
        let d = &self.dmbs[i];
        let ok = self.online[f]
            && len <= MAX_MOVE_LEN
            && d.rgid == gid(f)
            && d.vlan.is_none_or(|v| self.vlans[f].contains(&v))
            && u64::from(m.offset) + len as u64 <= u64::from(d.len);
        (ok, Some(i))
    }

    /// A store-block of function `f`, checked against the shadow's rules.
    pub fn store_block(&mut self, f: usize, word: u64, data: &[u8]) {
        let (expect, target) = self.move_allowed(f, word, data.len());
        let r = self.dev.store_block(FunctionId(f as u16), word, data);
        let what = (f, format!("{word:#018x}"), data.len(), r);
        assert_eq!(
            r.is_ok(),
            expect,
            "{what:?}: move outcome against the rules"
        );
        if r.is_err() {
            self.check_memory(&[], &what);
            return;
        }
        let d = self.dmbs[target.expect("an allowed move has a target")];
        let dom = self.domain_of[d.owner];
        let mut allowed = vec![(dom, d.addr, d.addr + u64::from(d.len))];
        self.pages_of(d.owner, &mut allowed);
        self.check_memory(&allowed, &what);
        let m = MoveRequest::parse(word);
        let mut back = vec![0u8; data.len()];
        self.memory(dom)
            .read(DevAddr(d.addr + u64::from(m.offset)), &mut back)
            .expect("in domain");
        assert_eq!(back, data, "{what:?}: data not at the offset");
        if let (true, Some(sba)) = (m.signal, self.sba[d.owner]) {
            let mem = self.memory(dom);
            let flags = mem.snapshot(sba, 1)[0];
            assert!(flags & SbaFlags::SUMMARY.bits() != 0, "{what:?}: summary");
            let (byte, mask) = sba::dmb_bit(d.sba_idx as usize);
            let bits = mem.snapshot(sba + byte as u64, 1)[0];
            assert!(bits & mask != 0, "{what:?}: DMB bit");
        }
    }

    /// `function_down`: checks and updates the shadow.
    pub fn down(&mut self, f: usize, crash: bool) {
        let mut pages = Vec::new();
        for t in (0..FUNCTIONS).filter(|&t| t != f) {
            self.pages_of(t, &mut pages);
        }
        let reason = if crash {
            DownReason::Crash
        } else {
            DownReason::Disabled
        };
        assert!(self.dev.function_down(FunctionId(f as u16), reason));
        self.online[f] = false;
        self.sba[f] = None;
        self.ieq[f] = None;
        self.vlans[f].clear();
        self.dmbs.retain(|d| d.owner != f);
        while let Some(i) = self.dmbs.iter().position(|d| d.attachers & (1 << f) != 0) {
            self.detach(i, f);
        }
        let what = ("function_down", f);
        self.check_memory(&pages, &what);
        self.check_count(&what);
    }

    /// `function_up`.
    pub fn up(&mut self, f: usize) {
        assert!(self.dev.function_up(FunctionId(f as u16)));
        self.online[f] = true;
        let what = ("function_up", f);
        self.check_memory(&[], &what);
        self.check_count(&what);
    }

    /// Runs one decoded operation.
    pub fn run(&mut self, op: &Op) {
        match op {
            Op::Raw { f, bytes } => {
                self.command(*f, bytes);
            }
            Op::Cmd { f, req, .. } => {
                let mut buf = [0u8; 64];
                let n = req.emit(&mut buf).expect("every request fits 64 bytes");
                self.command(*f, &buf[..n]);
            }
            Op::Move {
                f,
                target,
                len,
                fill,
            } => {
                let word = match *target {
                    MoveTarget::Word(w) => w,
                    MoveTarget::Seen {
                        k,
                        offset,
                        signal,
                        dmbe,
                    } => {
                        let tok = if self.seen.is_empty() {
                            0
                        } else {
                            self.seen[usize::from(k) % self.seen.len()].0
                        };
                        tok | (u64::from(dmbe) << 24)
                            | if signal { SIGNAL_FLAG } else { 0 }
                            | (u64::from(offset) & OFFSET_MASK)
                    }
                };
                let data: Vec<u8> = (0..*len).map(|i| fill.wrapping_add(i as u8)).collect();
                self.store_block(*f, word, &data);
            }
            Op::Down { f, crash } => self.down(*f, *crash),
            Op::Up { f } => self.up(*f),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The checker itself must catch what it claims to.
    use super::*;

    #[test]
    #[should_panic(expected = "outside the permitted ranges")]
    fn a_stray_write_is_caught() {
        let mut h = Harness::with_moves_setup();
        // Past every DMB, SBA and IEQ of domain 1.
        h.memory(1)
            .write(DevAddr(domain_base(1) + 0x7000), &[1])
            .unwrap();
        h.up(0);
    }

    #[test]
    #[should_panic(expected = "DMB count")]
    fn a_shadow_mismatch_is_caught() {
        let mut h = Harness::with_moves_setup();
        h.dmbs.pop();
        h.up(0);
    }

    #[test]
    #[should_panic(expected = "move outcome against the rules")]
    fn a_wrong_oracle_is_caught() {
        let mut h = Harness::with_moves_setup();
        // Pretend fn 1 may not write DMB 0: the device's (correct) acceptance now disagrees.
        h.dmbs[0].rgid = gid(2);
        let word = h.dmbs[0].token.0;
        h.store_block(1, word, &[1, 2, 3]);
    }

    #[test]
    fn writes_inside_a_dmb_pass() {
        let mut h = Harness::with_moves_setup();
        let word = h.dmbs[0].token.0 | SIGNAL_FLAG | 8;
        h.store_block(1, word, &[9; 100]);
        h.store_block(0, word, &[9; 100]);
        assert_eq!(h.dev.stats().moves, 1);
    }
}
