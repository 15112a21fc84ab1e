//! The checks, and the one list of them.

use std::sync::Arc;

use ism_abi::regs::COMMAND_AREA_SIZE;
use ism_abi::{DevAddr, DmbToken, Gid, Request};
use ism_hal::DmaMemory;
use ism_host_driver::ism::{Bus, BusError, HostMemory, IsmDriver, RecordingClient};

use super::dut::{CheckResult, DeviceUnderTest};
use super::harness::{
    command, expect_ok, expect_refused, must, open_pair, raw_command, store, take_all_irqs,
    unknown_gid, Response, Session,
};

/// Calls `$callback!` back with `$pre;` followed by every check as `(name, function)`:
/// the one list of checks, from which [`super::checks`] and
/// [`conformance_tests!`](crate::conformance_tests) are made. A new check is one line here.
#[doc(hidden)]
#[macro_export]
macro_rules! __ism_conformance_with_checks {
    ($callback:ident ! { $($pre:tt)* }) => {
        $crate::$callback! { $($pre)*;
            (probe_sequence, check_probe_sequence),
            (command_lengths_and_echo, check_command_lengths_and_echo),
            (unknown_commands_refused, check_unknown_commands_refused),
            (bad_lengths_refused, check_bad_lengths_refused),
            (dmb_token_semantics, check_dmb_token_semantics),
            (dmb_registration_limits, check_dmb_registration_limits),
            (move_data_and_bounds, check_move_data_and_bounds),
            (move_signal_sba_bits, check_move_signal_sba_bits),
            (ieq_index_rule_and_wrap, check_ieq_index_rule_and_wrap),
            (signal_ieq, check_signal_ieq),
            (query_rgid, check_query_rgid),
            (linux_driver_round_trip, check_linux_driver_round_trip),
        }
    };
}

// ---------------------------------------------------------------------------- constants
// Restated from Linux (`drivers/s390/net/ism.h`, `ism_drv.c`; `net/smc/smc_ism.c`), not
// imported from `ism-abi`: the suite is an independent oracle for the interface crate and
// the model behind it, so a wrong constant there is caught here rather than repeated.

pub(super) const PAGE: usize = 4096;
pub(super) const SBA_SIZE: usize = 4096;
pub(super) const IEQ_LEN: u64 = 512;
const IEQ_ENTRIES: u64 = 15;
pub(super) const IEQ_ENTRY_LEN: u64 = 32;
const FIRST_SBA_INDEX: u32 = 32;
const NR_SBA_INDICES: u32 = 1920;
const SBA_SUMMARY: u8 = 0x80;
const SBA_EVENT: u8 = 0x40;
const DMB_BITS_OFFSET: usize = 4;
const DMBE_MASK_OFFSET: usize = 256;
const DMBE0_MASK: u16 = 0x1000;
const RESERVED_VLAN: u64 = 0x1FFF;
const MAX_DMB_LEN: usize = 1 << 20;
const MAX_STORE_LEN: usize = 4096;
const EVENT_SOFTWARE: u32 = 2;

/// Linux's command codes and request lengths (`drivers/s390/net/ism.h`, the `ISM_*`
/// command codes and request structs).
const LINUX_COMMANDS: [(u32, &str, u16); 14] = [
    (0x01, "REG_SBA", 16),
    (0x02, "REG_IEQ", 24),
    (0x03, "READ_GID", 8),
    (0x04, "ADD_VLAN_ID", 16),
    (0x05, "DEL_VLAN_ID", 16),
    (0x06, "SET_VLAN", 8),
    (0x07, "RESET_VLAN", 8),
    (0x08, "QUERY_INFO", 8),
    (0x09, "QUERY_RGID", 24),
    (0x0A, "REG_DMB", 40),
    (0x0B, "UNREG_DMB", 16),
    (0x0E, "SIGNAL_IEQ", 32),
    (0x11, "UNREG_SBA", 8),
    (0x12, "UNREG_IEQ", 8),
];

// ---------------------------------------------------------------------------- checks

/// Linux's probe and exit sequence on every function: REG_SBA, REG_IEQ (512 bytes; the
/// IEQ header `idx` must read 0 before the first event), READ_GID (16-byte response,
/// non-zero GID, distinct per function), ADD_VLAN_ID 0x1FFF (the ISMv2 probe; either answer
/// is allowed), QUERY_INFO (200 bytes; `my_gid`, `sba`, `ieq`, `ieq_len` as registered);
/// then DEL_VLAN_ID 0x1FFF, UNREG_IEQ, UNREG_SBA succeed, a second UNREG_* is refused,
/// QUERY_INFO shows no SBA/IEQ, a second REG_SBA/REG_IEQ while registered is refused, and
/// the function can be probed again.
pub fn check_probe_sequence<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let mut gids: Vec<Gid> = Vec::new();
    let mut sessions = Vec::new();
    for f in 0..dut.functions() {
        let mut s = Session::bare(dut, f)?;
        let sba = s.alloc(SBA_SIZE, PAGE)?;
        let ieq = s.alloc(PAGE, PAGE)?;
        expect_ok(dut, f, Request::RegSba { sba })?;
        s.sba = Some(sba);
        expect_ok(dut, f, Request::RegIeq { ieq, len: IEQ_LEN })?;
        s.ieq = Some(ieq);
        if s.ieq_u64(0)? != 0 {
            return Err(format!(
                "function {f}: IEQ header idx is {:#x} after REG_IEQ, must be 0",
                s.ieq_u64(0)?
            ));
        }
        let r = expect_ok(dut, f, Request::ReadGid)?;
        if r.len != 16 {
            return Err(format!(
                "function {f}: READ_GID response len {}, want 16",
                r.len
            ));
        }
        let gid = Gid(r.u64_at(8));
        if gid.0 == 0 || gids.contains(&gid) {
            return Err(format!(
                "function {f}: GID {:#x} is zero or not unique ({gids:x?})",
                gid.0
            ));
        }
        gids.push(gid);
        let v2 = command(
            dut,
            f,
            Request::AddVlanId {
                vlan_id: RESERVED_VLAN,
            },
        )?
        .ret == 0;
        if v2 {
            s.vlans.push(RESERVED_VLAN);
        }
        let q = expect_ok(dut, f, Request::QueryInfo)?;
        if q.len != 200 {
            return Err(format!(
                "function {f}: QUERY_INFO response len {}, want 200",
                q.len
            ));
        }
        let (my_gid, q_sba, q_ieq, q_len) =
            (q.u64_at(24), q.u64_at(32), q.u64_at(40), q.u32_at(48));
        if my_gid != gid.0 || q_sba != sba.0 || q_ieq != ieq.0 || u64::from(q_len) != IEQ_LEN {
            return Err(format!(
                "function {f}: QUERY_INFO says gid {my_gid:#x} sba {q_sba:#x} ieq {q_ieq:#x} ieq_len {q_len}, \
                 registered gid {:#x} sba {:#x} ieq {:#x} len {IEQ_LEN}",
                gid.0, sba.0, ieq.0
            ));
        }
        expect_refused(
            dut,
            f,
            Request::RegSba { sba },
            "an SBA is already registered",
        )?;
        expect_refused(
            dut,
            f,
            Request::RegIeq { ieq, len: IEQ_LEN },
            "an IEQ is already registered",
        )?;
        sessions.push(s);
    }
    for s in &mut sessions {
        let f = s.f;
        if s.vlans.contains(&RESERVED_VLAN) {
            s.del_vlan(RESERVED_VLAN)?;
        }
        expect_ok(dut, f, Request::UnregIeq)?;
        let ieq = s.ieq.take();
        expect_ok(dut, f, Request::UnregSba)?;
        let sba = s.sba.take();
        expect_refused(dut, f, Request::UnregIeq, "no IEQ is registered")?;
        expect_refused(dut, f, Request::UnregSba, "no SBA is registered")?;
        let q = expect_ok(dut, f, Request::QueryInfo)?;
        if q.u64_at(32) != 0 || q.u64_at(40) != 0 {
            return Err(format!(
                "function {f}: QUERY_INFO after UNREG_SBA/UNREG_IEQ still shows sba {:#x} ieq {:#x}",
                q.u64_at(32),
                q.u64_at(40)
            ));
        }
        // Probe again on the same pages.
        let (sba, ieq) = (sba.ok_or("sba")?, ieq.ok_or("ieq")?);
        expect_ok(dut, f, Request::RegSba { sba })?;
        s.sba = Some(sba);
        expect_ok(dut, f, Request::RegIeq { ieq, len: IEQ_LEN })?;
        s.ieq = Some(ieq);
    }
    Ok(())
}

/// Every Linux command answers with its code echoed in `cmd`, `ret` 0, and `len` a multiple
/// of 8 within the command area; READ_GID and REG_DMB answer 16 bytes, QUERY_INFO 200.
pub fn check_command_lengths_and_echo<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let (own, peer) = (ss[0].gid, ss[w].gid);
    let dmb = ss[0].alloc(PAGE, PAGE)?;
    let run = |req: Request, want: Option<u16>| -> Result<Response, String> {
        let r = expect_ok(dut, 0, req)?;
        let code = req.opcode() as u32;
        if r.cmd != code {
            return Err(format!(
                "{}: response cmd {:#x}, must echo {code:#x}",
                req.opcode().name(),
                r.cmd
            ));
        }
        let ok_len = match want {
            Some(n) => r.len == n,
            None => r.len >= 8 && r.len % 8 == 0 && usize::from(r.len) <= COMMAND_AREA_SIZE,
        };
        if !ok_len {
            return Err(format!(
                "{}: response len {}, want {want:?} (multiple of 8)",
                req.opcode().name(),
                r.len
            ));
        }
        Ok(r)
    };
    run(Request::ReadGid, Some(16))?;
    run(Request::QueryInfo, Some(200))?;
    run(Request::AddVlanId { vlan_id: 5 }, None)?;
    run(Request::DelVlanId { vlan_id: 5 }, None)?;
    run(Request::SetVlan, None)?;
    run(Request::ResetVlan, None)?;
    run(
        Request::QueryRgid {
            rgid: peer,
            vlan: None,
        },
        None,
    )?;
    let req = Request::RegDmb {
        dmb,
        len: PAGE as u32,
        sba_idx: FIRST_SBA_INDEX,
        vlan: None,
        rgid: peer,
    };
    let r = run(req, Some(16))?;
    let token = DmbToken(r.u64_at(8));
    ss[0].dmbs.push(token);
    run(Request::UnregDmb { token }, None)?;
    ss[0].dmbs.clear();
    run(
        Request::SignalIeq {
            rgid: own,
            trigger_irq: false,
            code: 0x83,
            info: 1,
        },
        None,
    )?;
    Ok(())
}

/// Codes Linux never uses (0x00, 0x0C, 0x0D, 0x0F, 0x10, 0x13, 0x1F, 0x7F, 0xFFFFFFFF), with
/// lengths 8, 16 and 40, are answered (not `0xFFFF`) with a non-zero `ret`, and change
/// nothing: the registered SBA and IEQ are still in place afterwards.
pub fn check_unknown_commands_refused<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (ss, _) = open_pair(dut)?;
    let s = &ss[0];
    for code in [0x00u32, 0x0C, 0x0D, 0x0F, 0x10, 0x13, 0x1F, 0x7F, u32::MAX] {
        for len in [8u16, 16, 40] {
            let mut req = [0u8; 40];
            req[..4].copy_from_slice(&code.to_be_bytes());
            req[6..8].copy_from_slice(&len.to_be_bytes());
            // A body that would be a valid address, should the device misread it.
            req[8..16].copy_from_slice(&s.sba()?.0.to_be_bytes());
            let r = raw_command(dut, 0, &req[..usize::from(len)])?;
            if r.ret == 0 || r.ret == 0xFFFF {
                return Err(format!(
                    "unknown command {code:#x} (len {len}) answered ret {:#06x}",
                    r.ret
                ));
            }
        }
    }
    let q = expect_ok(dut, 0, Request::QueryInfo)?;
    if q.u64_at(32) != s.sba()?.0 || q.u64_at(40) != s.ieq.map_or(0, |a| a.0) {
        return Err("unknown commands changed the registered SBA/IEQ".into());
    }
    Ok(())
}

/// For every Linux command, a header whose `len` is not the command's exact request length
/// (0, 4, len-8, len+8, 64, 0xFFFF) is refused. A REG_SBA with a valid address but a wrong
/// length registers nothing (a correct REG_SBA afterwards succeeds). Linux always sends the
/// exact length, so this is stricter than Linux needs: it is what keeps a device from
/// reading fields the host never wrote.
pub fn check_bad_lengths_refused<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let mut s = Session::bare(dut, 0)?;
    let sba = s.alloc(SBA_SIZE, PAGE)?;
    for (code, name, good) in LINUX_COMMANDS {
        let mut bad: Vec<u16> = vec![0, 4, good.saturating_sub(8), good + 8, 64, 0xFFFF];
        bad.retain(|&l| l != good);
        bad.dedup();
        for len in bad {
            let mut req = [0u8; 64];
            req[..4].copy_from_slice(&code.to_be_bytes());
            req[6..8].copy_from_slice(&len.to_be_bytes());
            req[8..16].copy_from_slice(&sba.0.to_be_bytes());
            req[16..24].copy_from_slice(&IEQ_LEN.to_be_bytes());
            let r = raw_command(dut, 0, &req[..usize::from(good).max(16)])?;
            if r.ret == 0 || r.ret == 0xFFFF {
                return Err(format!(
                    "{name} with len {len} (want {good}) answered ret {:#06x}",
                    r.ret
                ));
            }
        }
    }
    let q = expect_ok(dut, 0, Request::QueryInfo)?;
    if q.u64_at(32) != 0 || q.u64_at(40) != 0 {
        return Err("a request with a bad length registered an SBA or IEQ".into());
    }
    expect_ok(dut, 0, Request::RegSba { sba })?;
    s.sba = Some(sba);
    Ok(())
}

/// REG_DMB tokens have their low 32 bits zero and are distinct; UNREG_DMB kills a token:
/// a second UNREG_DMB and moves with it are refused, also after a new DMB took the same SBA
/// index (whose token differs). A token with low bits set, and a valid token presented by a
/// function other than the owner (if there are two), are refused by UNREG_DMB and leave
/// the DMB working.
pub fn check_dmb_token_semantics<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let wg = ss[w].gid;
    let mut toks = Vec::new();
    for i in 0..8 {
        let (t, _) = ss[0].reg_dmb(16 << 10, FIRST_SBA_INDEX + i, wg)?;
        if t.0 & 0xFFFF_FFFF != 0 {
            return Err(format!("token {:#018x} has non-zero low 32 bits", t.0));
        }
        if toks.contains(&t) {
            return Err(format!("token {:#018x} issued twice", t.0));
        }
        toks.push(t);
    }
    let dead = toks[3];
    ss[0].unreg_dmb(dead)?;
    expect_refused(
        dut,
        0,
        Request::UnregDmb { token: dead },
        "the token was unregistered",
    )?;
    if store(dut, w, dead, 0, false, 0, &[1; 8]).is_ok() {
        return Err("a move with an unregistered token succeeded".into());
    }
    let (fresh, _) = ss[0].reg_dmb(16 << 10, FIRST_SBA_INDEX + 3, wg)?;
    if fresh == dead || toks.contains(&fresh) {
        return Err(format!("re-registration reissued token {:#018x}", fresh.0));
    }
    expect_refused(dut, 0, Request::UnregDmb { token: dead }, "stale token")?;
    if store(dut, w, dead, 0, false, 0, &[1; 8]).is_ok() {
        return Err("a move with a stale token succeeded after its SBA index was reused".into());
    }
    must(
        store(dut, w, fresh, 0, false, 0, &[1; 8]),
        "move with the fresh token",
    )?;
    for bits in [1u64, 0x80_0000, 0x8000_0000] {
        let t = DmbToken(toks[0].0 | bits);
        expect_refused(
            dut,
            0,
            Request::UnregDmb { token: t },
            "token with low bits set",
        )?;
    }
    if w != 0 {
        expect_refused(
            dut,
            w,
            Request::UnregDmb { token: toks[0] },
            "only the owner may unregister",
        )?;
    }
    must(
        store(dut, w, toks[0], 0, false, 0, &[2; 8]),
        "DMB still usable after refused UNREG_DMBs",
    )?;
    Ok(())
}

/// REG_DMB refuses length 0 and lengths above 1 MiB (1 MiB itself is accepted), SBA indices
/// outside 32..=1919 (32 and 1919 are accepted), and an SBA index already used by another
/// DMB of the function.
pub fn check_dmb_registration_limits<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let wg = ss[w].gid;
    let big = ss[0].alloc(MAX_DMB_LEN + PAGE, PAGE)?;
    let reg = |dmb: DevAddr, len: u32, sba_idx: u32| Request::RegDmb {
        dmb,
        len,
        sba_idx,
        vlan: None,
        rgid: wg,
    };
    expect_refused(dut, 0, reg(big, 0, 40), "length 0")?;
    expect_refused(
        dut,
        0,
        reg(big, MAX_DMB_LEN as u32 + 1, 40),
        "longer than 1 MiB",
    )?;
    for idx in [0, 1, 31, NR_SBA_INDICES, NR_SBA_INDICES + 1, u32::MAX] {
        expect_refused(
            dut,
            0,
            reg(big, PAGE as u32, idx),
            "SBA index outside 32..=1919",
        )?;
    }
    ss[0].reg_dmb_at(big, MAX_DMB_LEN as u32, FIRST_SBA_INDEX, wg)?;
    let (_, _) = ss[0].reg_dmb(PAGE, NR_SBA_INDICES - 1, wg)?;
    let other = ss[0].alloc(PAGE, PAGE)?;
    expect_refused(
        dut,
        0,
        reg(other, PAGE as u32, FIRST_SBA_INDEX),
        "SBA index in use",
    )?;
    expect_refused(
        dut,
        0,
        reg(other, PAGE as u32, NR_SBA_INDICES - 1),
        "SBA index in use",
    )?;
    Ok(())
}

/// Moves write exactly their bytes at their offset (checked by reading the owner's memory);
/// a move that ends past the DMB (by one byte, at the DMB's length, at offset 2^23-1), a
/// store of more than 4096 bytes, a forged token, and a writer that is not the DMB's `rgid`
/// are refused and write nothing; moves without the signal flag set no SBA bit and raise no
/// interrupt.
pub fn check_move_data_and_bounds<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let wg = ss[w].gid;
    const LEN: usize = 10_000;
    let (tok, addr) = ss[0].reg_dmb(LEN, 33, wg)?;
    let mut expect = vec![0u8; LEN];
    let pattern: Vec<u8> = (0..LEN).map(|i| (i * 7 + 3) as u8).collect();
    for (off, n) in [
        (0usize, 4096usize),
        (4096, 4096),
        (8192, LEN - 8192),
        (100, 1),
        (4095, 2),
    ] {
        must(
            store(dut, w, tok, 0, false, off as u32, &pattern[off..off + n]),
            "move inside the DMB",
        )?;
        expect[off..off + n].copy_from_slice(&pattern[off..off + n]);
    }
    must(
        store(dut, w, tok, 0, false, LEN as u32 - 1, &[0xEE]),
        "1-byte move into the last byte",
    )?;
    expect[LEN - 1] = 0xEE;
    let refused: [(u32, usize, &str); 5] = [
        (LEN as u32 - 1, 2, "one byte past the end"),
        (LEN as u32, 1, "at the DMB's length"),
        (LEN as u32 - 4000, 4001, "crossing the end"),
        ((1 << 23) - 1, 1, "at offset 2^23-1"),
        (0, MAX_STORE_LEN + 1, "more than 4096 bytes in one store"),
    ];
    for (off, n, why) in refused {
        if store(dut, w, tok, 0, true, off, &vec![0xFF; n]).is_ok() {
            return Err(format!(
                "a move {why} (offset {off}, {n} bytes) was accepted"
            ));
        }
    }
    let forged = DmbToken(tok.0 ^ (1 << 40));
    if store(dut, w, forged, 0, true, 0, &[0xFF; 8]).is_ok() {
        return Err("a move with a forged token was accepted".into());
    }
    let stranger = unknown_gid(&ss);
    let (tok2, addr2) = ss[0].reg_dmb(PAGE, 34, stranger)?;
    if store(dut, w, tok2, 0, true, 0, &[0xFF; 8]).is_ok() {
        return Err("a move by a function that is not the DMB's rgid was accepted".into());
    }
    let mut back = vec![0u8; LEN];
    must(ss[0].mem().read(addr, &mut back), "read DMB")?;
    if back != expect {
        let at = back
            .iter()
            .zip(&expect)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "DMB content differs from what was moved, first at byte {at}"
        ));
    }
    let mut b2 = vec![0u8; PAGE];
    must(ss[0].mem().read(addr2, &mut b2), "read DMB")?;
    if b2.iter().any(|&b| b != 0) {
        return Err("a refused move wrote into the DMB".into());
    }
    if ss[0].sba_bytes()?.iter().any(|&b| b != 0) {
        return Err("moves without the signal flag (or refused ones) changed the SBA".into());
    }
    if dut.wait_irq(0, dut.quiet_period()) {
        return Err("moves without the signal flag (or refused ones) raised an interrupt".into());
    }
    Ok(())
}

/// A move with the signal flag sets, in the owner's SBA, the summary bit (0x80 of byte 0),
/// the DMB's bit (byte `4 + i/8`, mask `0x80 >> (i % 8)`) and nothing else in `dmb_bits`,
/// and the DMBE mask `0x1000` (DMBE 0) at byte `256 + 2i`, then raises the owner's
/// interrupt; checked for SBA indices 32, 39, 40, 63, 64, 1000, 1918, 1919. A second
/// signal before the host clears the SBA leaves the same bits (coalescing).
pub fn check_move_signal_sba_bits<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let wg = ss[w].gid;
    ss[0].clear_sba()?;
    for i in [32u32, 39, 40, 63, 64, 1000, 1918, 1919] {
        let (tok, _) = ss[0].reg_dmb(PAGE, i, wg)?;
        for round in 0..2 {
            must(
                store(dut, w, tok, 0, true, 8 * round, &[round as u8; 8]),
                "signalled move",
            )?;
            if round == 0 && !dut.wait_irq(0, dut.irq_timeout()) {
                return Err(format!(
                    "no interrupt after a signalled move into SBA index {i}"
                ));
            }
        }
        let sba = ss[0].sba_bytes()?;
        let iu = i as usize;
        if sba[0] & SBA_SUMMARY == 0 {
            return Err(format!(
                "SBA index {i}: summary bit (0x80 of byte 0) not set: {:#04x}",
                sba[0]
            ));
        }
        let (byte, mask) = (DMB_BITS_OFFSET + iu / 8, 0x80u8 >> (iu % 8));
        for (b, &v) in sba
            .iter()
            .enumerate()
            .take(DMBE_MASK_OFFSET)
            .skip(DMB_BITS_OFFSET)
        {
            let want = if b == byte { mask } else { 0 };
            if v != want {
                return Err(format!("SBA index {i}: byte {b} is {v:#04x}, want {want:#04x} (bit in byte {byte} mask {mask:#04x})"));
            }
        }
        let m_at = DMBE_MASK_OFFSET + 2 * iu;
        for e in 0..NR_SBA_INDICES as usize {
            let at = DMBE_MASK_OFFSET + 2 * e;
            let v = u16::from_be_bytes([sba[at], sba[at + 1]]);
            let want = if at == m_at { DMBE0_MASK } else { 0 };
            if v != want {
                return Err(format!(
                    "SBA index {i}: dmbe_mask[{e}] (byte {at}) is {v:#06x}, want {want:#06x}"
                ));
            }
        }
        ss[0].clear_sba()?;
        take_all_irqs(dut);
    }
    Ok(())
}

/// The IEQ index rule: after the n-th event (n = 1..=20, from SIGNAL_IEQ with trigger_irq)
/// the header `idx` is `((n-1) % 15) + 1`, entry `(n-1) % 15` holds the event (type 2, the
/// sender's code and info, `tok` = the sender's GID), the SBA event bit (0x40) is set and
/// the interrupt is raised; after 20 events entries 0..=4 hold events 16..=20 (overwritten)
/// and entries 5..=14 still hold events 6..=15.
pub fn check_ieq_index_rule_and_wrap<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (ss, w) = open_pair(dut)?;
    let (og, wg) = (ss[0].gid, ss[w].gid);
    let info = |n: u64| 0x1CE0_0000_0000_0000 | n;
    for n in 1..=20u64 {
        ss[0].clear_sba()?;
        let req = Request::SignalIeq {
            rgid: og,
            trigger_irq: true,
            code: 0x83,
            info: info(n),
        };
        expect_ok(dut, w, req)?;
        let idx = ss[0].ieq_u64(0)?;
        let want = (n - 1) % IEQ_ENTRIES + 1;
        if idx != want {
            return Err(format!("after event {n}: IEQ idx {idx}, want {want}"));
        }
        let e = ss[0].ieq_entry((n - 1) % IEQ_ENTRIES)?;
        if e != (EVENT_SOFTWARE, 0x83, wg.0, info(n)) {
            return Err(format!(
                "event {n}: entry {} is (type, code, tok, info) {e:x?}, want (2, 0x83, {:#x}, {:#x})",
                (n - 1) % IEQ_ENTRIES,
                wg.0,
                info(n)
            ));
        }
        let b0 = ss[0].sba_bytes()?[0];
        if b0 & SBA_EVENT == 0 {
            return Err(format!(
                "event {n}: SBA event bit (0x40) not set: {b0:#04x}"
            ));
        }
        if !dut.wait_irq(0, dut.irq_timeout()) {
            return Err(format!("event {n}: no interrupt with trigger_irq"));
        }
    }
    for k in 0..IEQ_ENTRIES {
        let n = if k < 5 { k + 16 } else { k + 1 };
        let e = ss[0].ieq_entry(k)?;
        if e.3 != info(n) {
            return Err(format!(
                "after 20 events entry {k} holds info {:#x}, want event {n}",
                e.3
            ));
        }
    }
    Ok(())
}

/// SIGNAL_IEQ with trigger_irq 0 writes the event and sets the SBA event bit but raises no
/// interrupt; with trigger_irq 1 it raises one. A target GID that no function has is
/// refused; so is (on a device with two functions) a target without a registered IEQ.
pub fn check_signal_ieq<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (ss, w) = open_pair(dut)?;
    let (og, wg) = (ss[0].gid, ss[w].gid);
    ss[0].clear_sba()?;
    let sig = |trigger_irq: bool, info: u64| Request::SignalIeq {
        rgid: og,
        trigger_irq,
        code: 0x80,
        info,
    };
    expect_ok(dut, w, sig(false, 11))?;
    if ss[0].ieq_u64(0)? != 1 || ss[0].ieq_entry(0)? != (EVENT_SOFTWARE, 0x80, wg.0, 11) {
        return Err(format!(
            "SIGNAL_IEQ without interrupt: idx {} entry {:x?}",
            ss[0].ieq_u64(0)?,
            ss[0].ieq_entry(0)?
        ));
    }
    if ss[0].sba_bytes()?[0] & SBA_EVENT == 0 {
        return Err("SIGNAL_IEQ without interrupt did not set the SBA event bit".into());
    }
    if dut.wait_irq(0, dut.quiet_period()) {
        return Err("SIGNAL_IEQ with trigger_irq 0 raised an interrupt".into());
    }
    expect_ok(dut, w, sig(true, 12))?;
    if !dut.wait_irq(0, dut.irq_timeout()) {
        return Err("SIGNAL_IEQ with trigger_irq 1 raised no interrupt".into());
    }
    if ss[0].ieq_u64(0)? != 2 || ss[0].ieq_entry(1)?.3 != 12 {
        return Err("second SIGNAL_IEQ not in entry 1".into());
    }
    let stranger = unknown_gid(&ss);
    let req = Request::SignalIeq {
        rgid: stranger,
        trigger_irq: true,
        code: 0x80,
        info: 0,
    };
    expect_refused(dut, 0, req, "no function has that GID")?;
    if w != 0 {
        drop(ss);
        let a = Session::open(dut, 0)?;
        let b = Session::bare(dut, 1)?;
        let req = Request::SignalIeq {
            rgid: b.gid,
            trigger_irq: true,
            code: 0x80,
            info: 0,
        };
        expect_refused(dut, a.f, req, "the target has no IEQ registered")?;
    }
    Ok(())
}

/// QUERY_RGID: the peer's GID is reachable, an unknown GID is not; with a VLAN, reachable
/// only while both functions hold it (ADD_VLAN_ID / DEL_VLAN_ID); with the reserved VLAN
/// 0x1FFF once both were probed as ISMv2 (if the device accepts the v2 probe).
pub fn check_query_rgid<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    let (mut ss, w) = open_pair(dut)?;
    let peer = ss[w].gid;
    let q = |vlan: Option<u32>| Request::QueryRgid { rgid: peer, vlan };
    expect_ok(dut, 0, q(None))?;
    let stranger = unknown_gid(&ss);
    expect_refused(
        dut,
        0,
        Request::QueryRgid {
            rgid: stranger,
            vlan: None,
        },
        "unknown GID",
    )?;
    expect_refused(dut, 0, q(Some(100)), "neither function holds VLAN 100")?;
    ss[0].add_vlan(100)?;
    if w != 0 {
        expect_refused(dut, 0, q(Some(100)), "only the querier holds VLAN 100")?;
        ss[w].add_vlan(100)?;
    }
    expect_ok(dut, 0, q(Some(100)))?;
    ss[w].del_vlan(100)?;
    expect_refused(dut, 0, q(Some(100)), "the peer no longer holds VLAN 100")?;
    if w != 0 {
        ss[0].del_vlan(100)?;
    }
    let v2 = command(
        dut,
        0,
        Request::AddVlanId {
            vlan_id: RESERVED_VLAN,
        },
    )?
    .ret == 0;
    if v2 {
        ss[0].vlans.push(RESERVED_VLAN);
        if w != 0 {
            expect_refused(
                dut,
                0,
                q(Some(RESERVED_VLAN as u32)),
                "the peer did not probe v2",
            )?;
            ss[w].add_vlan(RESERVED_VLAN)?;
        }
        expect_ok(dut, 0, q(Some(RESERVED_VLAN as u32)))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------- driver

struct BusRef<'a, B>(&'a B);

impl<B: Bus> Bus for BusRef<'_, B> {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        self.0.command(request, response)
    }
    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        self.0.store_block(request, data)
    }
}

struct HostMemoryRef<'a, H>(&'a H);

impl<H: HostMemory> HostMemory for HostMemoryRef<'_, H> {
    type Memory = H::Memory;
    fn memory(&self) -> &H::Memory {
        self.0.memory()
    }
    fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr> {
        self.0.dma_alloc(size, align)
    }
    fn dma_free(&self, addr: DevAddr, size: usize) {
        self.0.dma_free(addr, size);
    }
}

type RefDriver<'a, D> = IsmDriver<
    HostMemoryRef<'a, <D as DeviceUnderTest>::HostMemory>,
    BusRef<'a, <D as DeviceUnderTest>::Bus>,
>;

/// The crate's port of Linux's ISM driver works over the device: probe (ISMv2 if offered),
/// REG_DMB through the driver, a 20000-byte move at offset 3000 (chunked at 4 KiB, signal
/// on the last chunk) arrives intact and the owner's interrupt handler reports exactly one
/// signal `(sba_idx, 0x1000)`; a software event arrives through the IEQ drain; unregister
/// and remove succeed.
pub fn check_linux_driver_round_trip<D: DeviceUnderTest>(dut: &D) -> CheckResult {
    take_all_irqs(dut);
    let n = dut.functions().min(2);
    // A dropped driver removes itself, also when the check fails half-way.
    let probe = |f: usize| -> Result<RefDriver<'_, D>, String> {
        IsmDriver::probe(
            HostMemoryRef(dut.host_memory(f)),
            BusRef(dut.bus(f)),
            dut.chid(),
        )
        .map_err(|e| format!("driver probe of function {f}: {e}"))
    };
    let owner = probe(0)?;
    let writer_own = if n > 1 { Some(probe(1)?) } else { None };
    let writer = writer_own.as_ref().unwrap_or(&owner);
    if owner.chid() != dut.chid() {
        return Err("driver reports a different CHID".into());
    }
    let rec = Arc::new(RecordingClient::default());
    let client = must(owner.add_client(rec.clone()), "add client")?;
    let dmb = must(
        owner.register_dmb(64 << 10, writer.gid(), None, client),
        "register DMB",
    )?;
    let data: Vec<u8> = (0..20_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    must(
        writer.move_data(dmb.token, 0, true, 3000, &data),
        "move_data",
    )?;
    if !dut.wait_irq(0, dut.irq_timeout()) {
        return Err("no interrupt after the driver's signalled move".into());
    }
    let report = owner.handle_irq();
    let sig = rec.signals();
    if sig != [(dmb.sba_idx, DMBE0_MASK)] || report.signals != 1 {
        return Err(format!(
            "handler delivered {sig:?}, want exactly [({}, 0x1000)]",
            dmb.sba_idx
        ));
    }
    let mut back = vec![0u8; data.len()];
    must(
        owner.memory().read(DevAddr(dmb.addr.0 + 3000), &mut back),
        "read DMB",
    )?;
    if back != data {
        return Err("data moved by the driver differs in the owner's DMB".into());
    }
    must(
        writer.signal_event(owner.gid(), true, 0x83, 0x77),
        "signal_event",
    )?;
    if !dut.wait_irq(0, dut.irq_timeout()) {
        return Err("no interrupt after signal_event".into());
    }
    owner.handle_irq();
    let evs = rec.events();
    let found = evs.iter().any(|e| {
        e.ty == EVENT_SOFTWARE && e.code == 0x83 && e.tok == writer.gid().0 && e.info == 0x77
    });
    if !found {
        return Err(format!(
            "software event not delivered by the handler: {evs:?}"
        ));
    }
    must(owner.unregister_dmb(&dmb), "unregister DMB")?;
    if writer.move_data(dmb.token, 0, false, 0, &[1]).is_ok() {
        return Err("a move after unregister_dmb succeeded".into());
    }
    Ok(())
}
