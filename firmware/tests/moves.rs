//! Move and event tests: `Device::store_block` (data lands at the right offset of the
//! owner's DMB and nowhere else; the signal sets the DMBE mask, the DMB bit and the summary
//! bit of the owner's SBA and raises its interrupt; every refusal — TooLong, InvalidToken
//! (unknown, stale, forged), AccessDenied (writer GID, VLAN), OutOfRange, FunctionOffline —
//! writes nothing), the IEQ index rule, SIGNAL_IEQ software events with and without
//! interrupt, `function_down`/`function_up` (device events to the others, DMBs dropped), and
//! two threaded tests: a move racing UNREG_DMB never writes after the unregister returns,
//! and concurrent signals all land.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::*;
use ism_firmware::command::Request;
use ism_firmware::wire::ieq::event_code;
use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::wire::sba::SBA_SIZE;
use ism_firmware::{DownReason, MoveError, ReturnCode as Rc};
use ism_hal::{DmaMemory, DmbToken};

/// SBA bytes after signals of `(sba_idx, dmbe_mask)` pairs, plus flag byte `flags`.
fn expected_sba(flags: u8, signals: &[(usize, u16)]) -> Vec<u8> {
    let mut s = vec![0u8; SBA_SIZE];
    s[0] = flags;
    for &(i, mask) in signals {
        s[4 + i / 8] |= 0x80 >> (i % 8);
        let m = u16::from_be_bytes([s[256 + 2 * i], s[257 + 2 * i]]) | mask;
        s[256 + 2 * i..258 + 2 * i].copy_from_slice(&m.to_be_bytes());
    }
    s
}

/// A move that must fail with `want` and change nothing anywhere.
fn refused_move<const D: usize>(h: &Harness<D>, from: u16, req: u64, data: &[u8], want: MoveError) {
    let before = h.state();
    let stats = h.dev.stats();
    assert_eq!(h.dev.store_block(fid(from), req, data), Err(want));
    assert!(before == h.state(), "refused move ({want}) changed state");
    let after = h.dev.stats();
    assert_eq!(after.moves, stats.moves);
    assert_eq!(after.moves_refused, stats.moves_refused + 1);
}

fn word(token: DmbToken, offset: u32, signal: bool) -> u64 {
    MoveRequest {
        token,
        dmbe_idx: 0,
        signal,
        offset,
    }
    .emit()
}

#[test]
fn move_lands_at_the_offset_and_nowhere_else() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 16384, 32, gid(1), None).unwrap();
    let before = h.all_memory();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    h.mv(1, t, 5000, false, &data).unwrap();
    let after = h.all_memory();
    let mut want = before.clone();
    let at = (DMB_OFF + 5000) as usize;
    want[0][at..at + 4096].copy_from_slice(&data);
    assert!(after == want, "exactly the moved bytes changed");
    // The full DMB, first and last byte, and a zero-length move at its end.
    h.mv(1, t, 0, false, &[0x11]).unwrap();
    h.mv(1, t, 16383, false, &[0x22]).unwrap();
    h.mv(1, t, 16384, false, &[]).unwrap();
    assert_eq!(h.read(0, DMB_OFF, 1), [0x11]);
    assert_eq!(h.read(0, DMB_OFF + 16383, 2), [0x22, 0]);
    let s = h.dev.stats();
    assert_eq!(s.moves, 4);
    assert_eq!(s.bytes_moved, 4098);
    assert_eq!(h.irq(0).count(), 0, "no signal, no interrupt");
    assert!(
        h.sba_bytes(0).iter().all(|&b| b == 0),
        "no signal, no SBA bits"
    );
}

#[test]
fn signal_sets_mask_dmb_bit_summary_and_raises_the_interrupt() {
    let h = Harness::lpar();
    h.probe(0);
    let t32 = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.mv(1, t32, 8, true, b"hello").unwrap();
    assert_eq!(h.read(0, DMB_OFF + 8, 5), b"hello");
    let sba = h.sba_bytes(0);
    assert_eq!(sba[0], 0x80, "summary bit");
    assert_eq!(sba[8], 0x80, "byte 4 + 32/8, mask 0x80 >> 0");
    assert_eq!(&sba[320..322], &[0x10, 0x00], "dmbe_mask[32] = 0x1000 BE");
    assert_eq!(sba, expected_sba(0x80, &[(32, 0x1000)]));
    let typed = h.sba(0);
    assert_eq!(typed.word0.get(), 0x8000_0000);
    assert_eq!(typed.dmb_bits[1].get(), 0x8000_0000);
    assert_eq!(typed.dmbe_mask[32].get(), 0x1000);
    assert_eq!(h.irq(0).count(), 1);
    assert_eq!(h.irq(1).count(), 0);
    assert_eq!(h.dev.stats().signals, 1);

    // More indices, and other DMBE indices (ror16(0x1000, idx)).
    let mut signals = vec![(32, 0x1000)];
    for (i, idx) in [39usize, 40, 77, 1919].into_iter().enumerate() {
        let t = h
            .reg_dmb(
                0,
                DMB_OFF + 0x1000 * (i as u64 + 1),
                64,
                idx as u32,
                gid(2),
                None,
            )
            .unwrap();
        let dmbe = [0u8, 1, 13, 255][i];
        let req = MoveRequest {
            token: t,
            dmbe_idx: dmbe,
            signal: true,
            offset: 0,
        }
        .emit();
        h.dev.store_block(fid(2), req, b"z").unwrap();
        signals.push((idx, 0x1000u16.rotate_right(dmbe as u32)));
    }
    assert_eq!(h.sba_bytes(0), expected_sba(0x80, &signals));
    assert_eq!(h.sba(0).dmbe_mask[40].get(), 0x0800);
    assert_eq!(h.sba(0).dmbe_mask[77].get(), 0x8000);
    assert_eq!(h.sba(0).dmbe_mask[1919].get(), 0x2000);
    assert_eq!(h.sba_bytes(0)[243], 0x01, "index 1919 is the last bit");
    assert_eq!(h.irq(0).count(), 5);
}

#[test]
fn signal_bits_accumulate_and_come_back_after_the_host_clears_them() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 100, gid(1), None).unwrap();
    let req1 = MoveRequest {
        token: t,
        dmbe_idx: 1,
        signal: true,
        offset: 0,
    }
    .emit();
    h.dev.store_block(fid(1), req1, b"a").unwrap();
    h.mv(1, t, 1, true, b"b").unwrap();
    assert_eq!(h.sba(0).dmbe_mask[100].get(), 0x1800, "both DMBE bits");
    // The host's handler clears everything.
    h.write(0, SBA_OFF, &[0; SBA_SIZE]);
    h.irq(0).take();
    // A zero-length move with the signal still signals.
    h.mv(1, t, 4096, true, &[]).unwrap();
    assert_eq!(h.sba_bytes(0), expected_sba(0x80, &[(100, 0x1000)]));
    assert_eq!(h.irq(0).count(), 1);
}

#[test]
fn no_sba_no_signal_but_the_data_lands() {
    let h = Harness::lpar();
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.mv(1, t, 0, true, b"data").unwrap();
    assert_eq!(h.read(0, DMB_OFF, 4), b"data");
    assert_eq!(h.irq(0).count(), 0);
    assert!(h.read(0, 0, 0x1000).iter().all(|&b| b == 0));
}

#[test]
fn too_long() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 16384, 32, gid(1), None).unwrap();
    refused_move(&h, 1, word(t, 0, true), &[1; 4097], MoveError::TooLong);
    refused_move(&h, 1, word(t, 0, true), &[1; 8192], MoveError::TooLong);
    h.mv(1, t, 0, false, &[1; 4096]).unwrap();
}

#[test]
fn invalid_token_unknown_and_forged() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    for tok in [0u64, !0xFFFF_FFFF, t.0 ^ (1 << 32), t.0 ^ (1 << 63)] {
        refused_move(
            &h,
            1,
            word(DmbToken(tok), 0, true),
            b"x",
            MoveError::InvalidToken,
        );
    }
    // Forged tokens from a fixed pseudo-random sequence: none may be accepted.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let n = if cfg!(miri) { 64 } else { 4096 };
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let req = x & !(0xFF_FFFF); // keep sf/idx/offset bits random-ish but offset 0
        if req & !0xFFFF_FFFF == t.0 {
            continue;
        }
        assert_eq!(
            h.dev.store_block(fid(1), req, b"forged"),
            Err(MoveError::InvalidToken),
            "{req:#x}"
        );
    }
    assert_eq!(h.read(0, DMB_OFF, 6), [0; 6]);
    assert_eq!(h.irq(0).count(), 0);
    // The low half of the word never changes which DMB is addressed.
    h.dev.store_block(fid(1), t.0 | 0x0500_0003, b"ok").unwrap();
    assert_eq!(h.read(0, DMB_OFF + 3, 2), b"ok");
}

#[test]
fn invalid_token_stale_after_reuse_of_the_same_slot() {
    // A table of one slot: the re-registration reuses the slot of the old token.
    let h = Harness::<1>::build(NF, DOMAIN_SIZE, false, [0, 1, 2, 3]);
    h.probe(0);
    let old = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.mv(1, old, 0, false, b"first").unwrap();
    assert_eq!(h.unreg_dmb(0, old), Ok(0));
    refused_move(&h, 1, word(old, 0, true), b"late", MoveError::InvalidToken);
    let new = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    assert_ne!(old, new);
    refused_move(&h, 1, word(old, 0, true), b"stale", MoveError::InvalidToken);
    h.mv(1, new, 0, false, b"fresh").unwrap();
    assert_eq!(h.read(0, DMB_OFF, 5), b"fresh");
    // Many generations later the old tokens are still refused.
    let mut seen = vec![old, new];
    for _ in 0..if cfg!(miri) { 4 } else { 100 } {
        let cur = *seen.last().unwrap();
        assert_eq!(h.unreg_dmb(0, cur), Ok(0));
        let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
        assert!(!seen.contains(&t), "tokens never repeat");
        seen.push(t);
    }
    let live = *seen.last().unwrap();
    for &t in &seen[..seen.len() - 1] {
        assert_eq!(h.mv(1, t, 0, false, b"x"), Err(MoveError::InvalidToken));
    }
    h.mv(1, live, 0, false, b"x").unwrap();
}

#[test]
fn access_denied_for_anyone_but_the_writer() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    for f in [0, 2, 3] {
        refused_move(&h, f, word(t, 0, true), b"no", MoveError::AccessDenied);
    }
    h.mv(1, t, 0, true, b"yes").unwrap();
}

#[test]
fn access_denied_outside_the_dmbs_vlan() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), Some(42)).unwrap();
    refused_move(&h, 1, word(t, 0, true), b"no", MoveError::AccessDenied);
    h.ok(1, Request::AddVlanId { vlan_id: 41 });
    refused_move(&h, 1, word(t, 0, true), b"no", MoveError::AccessDenied);
    h.ok(1, Request::AddVlanId { vlan_id: 42 });
    h.mv(1, t, 0, true, b"yes").unwrap();
    assert_eq!(h.read(0, DMB_OFF, 3), b"yes");
    // Membership of the other functions does not matter.
    h.ok(2, Request::AddVlanId { vlan_id: 42 });
    refused_move(&h, 2, word(t, 0, true), b"no", MoveError::AccessDenied);
    h.ok(1, Request::DelVlanId { vlan_id: 42 });
    refused_move(&h, 1, word(t, 0, true), b"no", MoveError::AccessDenied);
    // The reserved VLAN tags a DMB like any other.
    let r = h
        .reg_dmb(0, DMB_OFF, 4096, 33, gid(1), Some(0x1FFF))
        .unwrap();
    refused_move(&h, 1, word(r, 0, true), b"no", MoveError::AccessDenied);
    h.ok(1, Request::AddVlanId { vlan_id: 0x1FFF });
    h.mv(1, r, 0, false, b"v2").unwrap();
}

#[test]
fn out_of_range() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 1000, 32, gid(1), None).unwrap();
    for (off, len) in [
        (0u32, 1001usize),
        (1, 1000),
        (999, 2),
        (1000, 1),
        (4095, 4096),
        ((1 << 23) - 1, 1),
        ((1 << 23) - 4096, 4096),
        ((1 << 23) - 1, 0),
    ] {
        refused_move(
            &h,
            1,
            word(t, off, true),
            &vec![0xCC; len],
            MoveError::OutOfRange,
        );
    }
    h.mv(1, t, 999, true, &[0xCC]).unwrap();
    h.mv(1, t, 0, true, &[0xCC; 1000]).unwrap();
}

#[test]
fn function_offline() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.dev.function_down(fid(1), DownReason::Disabled);
    refused_move(&h, 1, word(t, 0, true), b"x", MoveError::FunctionOffline);
    refused_move(&h, 9, word(t, 0, true), b"x", MoveError::FunctionOffline);
    h.dev.function_up(fid(1));
    h.mv(1, t, 0, true, b"x").unwrap();
}

#[test]
fn ieq_index_rule_and_wrap() {
    let h = Harness::lpar();
    h.probe(0);
    assert_eq!(h.ieq_header(0).idx.get(), 0);
    let mut last_time = 0;
    for n in 0..40u64 {
        h.ok(
            1,
            Request::SignalIeq {
                rgid: gid(0),
                trigger_irq: true,
                code: 0x80,
                info: n,
            },
        );
        let k = (n % 15) as usize;
        let hd = h.ieq_header(0);
        assert_eq!(hd.idx.get(), k as u64 + 1, "after event {n}");
        assert_ne!(hd.idx.get(), 0);
        assert_eq!(hd.ieq_len.get(), 512, "header length untouched");
        assert_eq!(hd.entry_len.get(), 32);
        let ev = h.event(0, k);
        assert_eq!(ev.info.get(), n, "event {n} in entry {k}");
        assert!(ev.time.get() > last_time, "time stamps increase");
        last_time = ev.time.get();
    }
    // Entries hold the newest 15 events, 25..40, in ring order.
    for k in 0..15 {
        let n = if k < 10 { 30 + k } else { 15 + k };
        assert_eq!(h.event(0, k as usize).info.get(), n);
    }
    assert_eq!(h.irq(0).count(), 40);
    assert_eq!(h.dev.stats().events, 40);
}

#[test]
fn ieq_index_rule_for_other_lengths() {
    let h = Harness::lpar();
    h.ok(
        0,
        Request::RegIeq {
            ieq: h.addr(0, IEQ_OFF),
            len: 64,
        },
    );
    for n in 0..3 {
        h.ok(
            1,
            Request::SignalIeq {
                rgid: gid(0),
                trigger_irq: false,
                code: 7,
                info: n,
            },
        );
        assert_eq!(h.ieq_header(0).idx.get(), 1, "one entry: idx stays 1");
        assert_eq!(h.event(0, 0).info.get(), n);
    }
    assert_eq!(h.read(0, IEQ_OFF + 64, 32), [0; 32]);
    // Re-registration restarts at entry 0.
    h.ok(0, Request::UnregIeq);
    h.ok(
        0,
        Request::RegIeq {
            ieq: h.addr(0, 0x3000),
            len: 128,
        },
    );
    for n in 0..4u64 {
        h.ok(
            1,
            Request::SignalIeq {
                rgid: gid(0),
                trigger_irq: false,
                code: 7,
                info: n,
            },
        );
        let idx = u64::from_be_bytes(h.read(0, 0x3000, 8).try_into().unwrap());
        assert_eq!(idx, n % 3 + 1);
    }
}

#[test]
fn signal_ieq_with_and_without_interrupt() {
    let h = Harness::lpar();
    h.probe(3);
    h.ok(
        1,
        Request::SignalIeq {
            rgid: gid(3),
            trigger_irq: false,
            code: 0x83,
            info: 0xAABB_CCDD_0000_0001,
        },
    );
    let ev = h.event(3, 0);
    assert_eq!(
        (ev.ty.get(), ev.code.get(), ev.tok.get(), ev.info.get()),
        (2, 0x83, gid(1).0, 0xAABB_CCDD_0000_0001)
    );
    assert_eq!(h.sba_bytes(3)[0], 0x40, "event bit without interrupt");
    assert_eq!(h.irq(3).count(), 0, "trigger_irq = 0 raises nothing");
    h.write(3, SBA_OFF, &[0]);
    h.ok(
        2,
        Request::SignalIeq {
            rgid: gid(3),
            trigger_irq: true,
            code: 0x80,
            info: 5,
        },
    );
    let ev = h.event(3, 1);
    assert_eq!(
        (ev.ty.get(), ev.code.get(), ev.tok.get(), ev.info.get()),
        (2, 0x80, gid(2).0, 5)
    );
    assert_eq!(h.sba_bytes(3)[0], 0x40);
    assert_eq!(h.irq(3).count(), 1);
    // An IEQ without an SBA still gets the event, and no SBA bit is written anywhere.
    h.ok(
        2,
        Request::RegIeq {
            ieq: h.addr(2, IEQ_OFF),
            len: 512,
        },
    );
    h.ok(
        1,
        Request::SignalIeq {
            rgid: gid(2),
            trigger_irq: true,
            code: 1,
            info: 2,
        },
    );
    assert_eq!(h.event(2, 0).code.get(), 1);
    assert!(h.sba_bytes(2).iter().all(|&b| b == 0));
    assert_eq!(h.irq(2).count(), 1);
}

#[test]
fn function_down_notifies_the_others_and_drops_its_dmbs() {
    for (reason, code) in [
        (DownReason::Crash, event_code::DEV_GID_ERR_STATE),
        (DownReason::Disabled, event_code::DEV_GID_DISABLED),
    ] {
        let h = Harness::lpar();
        for f in [0, 1, 2] {
            h.probe(f);
        }
        // Function 3 has no IEQ: it gets nothing.
        h.ok(
            3,
            Request::RegSba {
                sba: h.addr(3, SBA_OFF),
            },
        );
        let owned = h.reg_dmb(1, DMB_OFF, 4096, 32, gid(0), None).unwrap();
        let owned2 = h.reg_dmb(1, DMB_OFF, 4096, 33, gid(2), Some(3)).unwrap();
        let written = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
        h.ok(1, Request::AddVlanId { vlan_id: 9 });
        let tagged = h.reg_dmb(2, DMB_OFF, 4096, 40, gid(1), Some(9)).unwrap();
        h.mv(1, tagged, 0, false, b"before").unwrap();
        for f in 0..NF as u16 {
            h.irq(f).take();
        }
        let mem1 = h.read(1, 0, DOMAIN_SIZE);

        assert!(h.dev.function_down(fid(1), reason));
        assert!(!h.dev.is_online(fid(1)));
        for f in [0, 2] {
            let ev = h.last_event(f);
            assert_eq!(h.ieq_header(f).idx.get(), 1);
            assert_eq!(ev.ty.get(), 1, "device event");
            assert_eq!(ev.code.get(), code);
            assert_eq!(ev.tok.get(), gid(1).0, "tok = the GID that went down");
            assert_eq!(ev.info.get(), 0);
            assert_eq!(h.sba_bytes(f)[0], 0x40);
            assert_eq!(h.irq(f).count(), 1);
        }
        assert_eq!(h.irq(3).count(), 0);
        assert_eq!(h.sba_bytes(3)[0], 0);
        assert_eq!(h.irq(1).count(), 0);
        assert_eq!(
            h.read(1, 0, DOMAIN_SIZE),
            mem1,
            "nothing written to the dead one"
        );
        // Its DMBs are gone: tokens invalid for their writers.
        assert_eq!(h.mv(0, owned, 0, true, b"x"), Err(MoveError::InvalidToken));
        assert_eq!(h.mv(2, owned2, 0, true, b"x"), Err(MoveError::InvalidToken));
        assert_eq!(h.dev.dmbs_in_use(), 2);
        // Back up with nothing registered.
        assert!(h.dev.function_up(fid(1)));
        let qi = h.query_info(1);
        assert_eq!(
            (
                qi.sba.get(),
                qi.ieq.get(),
                qi.dmbs_owned.get(),
                qi.vlan_nr_ids.get()
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(
            qi.dmbs_used.get(),
            2,
            "DMBs others registered for it survive"
        );
        assert_eq!(h.refused(1, Request::UnregSba), Rc::NotRegistered);
        assert_eq!(h.refused(1, Request::UnregIeq), Rc::NotRegistered);
        assert_eq!(
            h.refused(1, Request::UnregDmb { token: owned }),
            Rc::InvalidToken
        );
        // VLAN membership was dropped too; the untagged DMB it writes is still usable.
        assert_eq!(
            h.mv(1, tagged, 0, false, b"x"),
            Err(MoveError::AccessDenied)
        );
        h.mv(1, written, 0, false, b"again").unwrap();
        // Its SBA indices are free again.
        h.probe(1);
        h.reg_dmb(1, DMB_OFF, 4096, 32, gid(0), None).unwrap();
        assert_eq!(h.irq(1).count(), 0);
    }
    let h = Harness::lpar();
    assert!(!h.dev.function_down(fid(4), DownReason::Crash));
    assert!(!h.dev.function_up(fid(4)));
}

#[test]
fn function_down_twice_tells_the_peers_once() {
    let h = Harness::lpar();
    h.probe(0);
    h.probe(1);
    assert!(h.dev.function_down(fid(1), DownReason::Crash));
    assert_eq!(h.ieq_header(0).idx.get(), 1);
    assert!(h.dev.function_down(fid(1), DownReason::Disabled));
    assert_eq!(h.ieq_header(0).idx.get(), 1, "no second device event");
    assert!(!h.dev.is_online(fid(1)));
}

#[test]
fn function_down_of_an_owner_releases_attachments() {
    let h = Harness::shared();
    h.probe(0);
    // Function 1 shares the memory: its status areas go elsewhere (they may not overlap).
    h.ok(
        1,
        Request::RegSba {
            sba: h.addr(1, 0x8000),
        },
    );
    h.ok(
        1,
        Request::RegIeq {
            ieq: h.addr(1, 0x9000),
            len: 512,
        },
    );
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.ok(1, Request::AttachDmb { token: t });
    // The attacher goes down: its attachment goes with it, the DMB stays.
    h.dev.function_down(fid(1), DownReason::Crash);
    assert_eq!(h.dev.dmbs_in_use(), 1);
    assert_eq!(
        h.unreg_dmb(0, t),
        Ok(0),
        "released at once: no attacher left"
    );
    assert_eq!(h.dev.dmbs_in_use(), 0);
    assert_eq!(h.last_event(0).code.get(), 4);
}

#[test]
fn a_move_racing_unreg_never_writes_after_unreg_returns() {
    let rounds = if cfg!(miri) { 2 } else { 50 };
    let checks = if cfg!(miri) { 10 } else { 2000 };
    for _ in 0..rounds {
        let h = Harness::lpar();
        h.probe(0);
        let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
        let unregistered = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let late_ok = AtomicU32::new(0);
        let refused = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let data = [0xA5u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    let after = unregistered.load(Ordering::SeqCst);
                    match h.mv(1, t, 128, true, &data) {
                        Ok(()) if after => {
                            late_ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            assert_eq!(e, MoveError::InvalidToken);
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    std::thread::yield_now();
                }
            });
            // Let the mover write at least once.
            while h.read(0, DMB_OFF + 128, 1)[0] != 0xA5 {
                std::thread::yield_now();
            }
            assert_eq!(h.unreg_dmb(0, t), Ok(0));
            unregistered.store(true, Ordering::SeqCst);
            // The host frees (here: zeroes) the buffer and the SBA.
            let mem = h.mem(0);
            mem.zero(h.addr(0, DMB_OFF), 4096).unwrap();
            mem.zero(h.addr(0, SBA_OFF), SBA_SIZE as u64).unwrap();
            for _ in 0..checks {
                std::thread::yield_now();
                assert!(
                    h.read(0, DMB_OFF, 4096).iter().all(|&b| b == 0),
                    "a move wrote the DMB after UNREG_DMB returned"
                );
                assert!(h.sba_bytes(0).iter().all(|&b| b == 0), "signal after UNREG");
            }
            // Make sure the mover tried after the unregister before stopping it.
            while refused.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(late_ok.load(Ordering::SeqCst), 0);
        assert!(h.read(0, DMB_OFF, 4096).iter().all(|&b| b == 0));
    }
}

#[test]
fn concurrent_signals_all_land() {
    let per = if cfg!(miri) { 5 } else { 500 };
    let h = Harness::lpar();
    h.probe(0);
    let toks: Vec<DmbToken> = (1..4u16)
        .map(|w| {
            h.reg_dmb(
                0,
                DMB_OFF + 0x1000 * w as u64,
                4096,
                32 + w as u32 * 9,
                gid(w),
                None,
            )
            .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, &t) in toks.iter().enumerate() {
            let h = &h;
            s.spawn(move || {
                let w = i as u16 + 1;
                for n in 0..per {
                    let b = [w as u8; 64];
                    h.mv(w, t, (n % 64) * 64, true, &b).unwrap();
                }
            });
        }
        s.spawn(|| {
            for n in 0..per as u64 {
                h.ok(
                    3,
                    Request::SignalIeq {
                        rgid: gid(0),
                        trigger_irq: true,
                        code: 0x83,
                        info: n,
                    },
                );
            }
        });
    });
    let sigs: Vec<(usize, u16)> = (1..4).map(|w| (32 + w * 9, 0x1000)).collect();
    assert_eq!(h.sba_bytes(0), expected_sba(0xC0, &sigs));
    assert_eq!(h.irq(0).count(), 4 * per);
    assert_eq!(h.dev.stats().signals, 3 * per as u64);
    assert_eq!(h.ieq_header(0).idx.get(), (per as u64 - 1) % 15 + 1);
    for w in 1..4u16 {
        let n = per.min(64) as usize;
        assert_eq!(
            h.read(0, DMB_OFF + 0x1000 * w as u64, 64 * n),
            vec![w as u8; 64 * n]
        );
    }
}

#[test]
fn commands_racing_function_down_leave_nothing_registered() {
    // A host thread registers an SBA, a VLAN and a DMB in a loop while the board takes its
    // partition down. Once `function_down` has returned and the command in flight at that
    // moment has finished, the function must hold nothing: brought back up (with the host
    // thread paused), it reports no SBA, no VLAN, no DMB.
    let rounds = if cfg!(miri) { 3 } else { 3000 };
    let h = Harness::lpar();
    let iters = AtomicU32::new(0);
    let pause = AtomicBool::new(false);
    let paused = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    paused.store(true, Ordering::SeqCst);
                    std::thread::yield_now();
                    continue;
                }
                paused.store(false, Ordering::SeqCst);
                let _ = h.try_cmd(
                    1,
                    Request::RegSba {
                        sba: h.addr(1, SBA_OFF),
                    },
                );
                let _ = h.try_cmd(1, Request::AddVlanId { vlan_id: 5 });
                let _ = h.reg_dmb(1, DMB_OFF, 4096, 32, gid(0), None);
                iters.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Stops the host thread however this thread leaves the loop (a failed assertion
        // would otherwise leave the scope waiting for it forever).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(&stop);
        for _ in 0..rounds {
            h.dev.function_down(fid(1), DownReason::Crash);
            // Let the command in flight (if any) finish, then hold the host thread.
            let seen = iters.load(Ordering::SeqCst);
            while iters.load(Ordering::SeqCst) < seen + 2 {
                std::thread::yield_now();
            }
            pause.store(true, Ordering::SeqCst);
            while !paused.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert_eq!(
                h.dev.dmbs_in_use(),
                0,
                "a DMB of an offline function survived"
            );
            h.dev.function_up(fid(1));
            let qi = h.query_info(1);
            assert_eq!(qi.dmbs_owned.get(), 0);
            assert_eq!(
                qi.vlan_nr_ids.get(),
                0,
                "a VLAN of an offline function survived"
            );
            assert_eq!(qi.sba.get(), 0, "an SBA of an offline function survived");
            paused.store(false, Ordering::SeqCst);
            pause.store(false, Ordering::SeqCst);
        }
    });
}

/// `set_dmb_signal` (shared with boards whose hosts signal a DMB themselves, from values
/// other hosts can write): an index past the SBA or an address that wraps is an error,
/// never an overflow or a write elsewhere; a valid one sets the three bits.
#[test]
fn set_dmb_signal_refuses_bad_indices_and_wrapping_addresses() {
    use ism_firmware::set_dmb_signal;
    use ism_firmware::wire::sba::NR_DMBS;
    use ism_hal::MemError;
    let h = Harness::lpar();
    let mem = h.mem(0);
    let sba = h.addr(0, 0);
    let before = h.read(0, 0, SBA_SIZE);
    for idx in [NR_DMBS, NR_DMBS + 1, usize::MAX] {
        assert_eq!(
            set_dmb_signal(mem, sba, idx, 0),
            Err(MemError::OutOfBounds),
            "{idx}"
        );
    }
    assert_eq!(
        set_dmb_signal(mem, ism_hal::DevAddr(u64::MAX - 1), 5, 0),
        Err(MemError::OutOfBounds)
    );
    assert_eq!(h.read(0, 0, SBA_SIZE), before, "nothing written");
    set_dmb_signal(mem, sba, 5, 0).unwrap();
    assert_eq!(
        h.read(0, 0, SBA_SIZE),
        expected_sba(0x80, &[(5, ism_firmware::wire::sba::dmbe_mask_bit(0))])
    );
}
