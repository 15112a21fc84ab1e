//! Command tests: for every command the device knows (REG_SBA … UNREG_IEQ and the
//! ATTACH/DETACH extension) one test of its success and one of each return code it can
//! give, issued through `Request::emit` + `Device::execute` and decoded with the `wire`
//! views. Also malformed headers (short, bad `len`, unknown codes), offline functions,
//! response lengths (multiples of 8, equal to `Opcode::response_len`), and that a refused
//! command changes no state (every error case goes through `Harness::refused`, which compares
//! all memory, QUERY_INFO of every function and the interrupt counters before and after).

mod common;

use common::*;
use ism_firmware::command::Request;
use ism_firmware::wire::attach_dmb::AttachDmbResponse;
use ism_firmware::wire::ieq::{event_code, EventType, LINUX_IEQ_LEN};
use ism_firmware::wire::query_info::{ExtFeatures, MODEL_VERSION, STATE_ONLINE};
use ism_firmware::wire::read_gid::ReadGidResponse;
use ism_firmware::wire::unreg_dmb::{UNREG_DEFERRED, UNREG_RELEASED};
use ism_firmware::wire::{Opcode, RequestHeader};
use ism_firmware::{DownReason, MoveError, ReturnCode as Rc};
use ism_hal::{DevAddr, DmbToken, Gid};
use zerocopy::IntoBytes;

/// One request of every command, valid for function 0 of an LPAR harness after
/// `probe(0)` (except the ones that need prior state, which may fail: the test only looks
/// at lengths and codes).
fn sample(h: &Harness, op: Opcode) -> Request {
    match op {
        Opcode::RegSba => Request::RegSba {
            sba: h.addr(0, SBA_OFF),
        },
        Opcode::RegIeq => Request::RegIeq {
            ieq: h.addr(0, IEQ_OFF),
            len: 512,
        },
        Opcode::ReadGid => Request::ReadGid,
        Opcode::AddVlanId => Request::AddVlanId { vlan_id: 7 },
        Opcode::DelVlanId => Request::DelVlanId { vlan_id: 7 },
        Opcode::SetVlan => Request::SetVlan,
        Opcode::ResetVlan => Request::ResetVlan,
        Opcode::QueryInfo => Request::QueryInfo,
        Opcode::QueryRgid => Request::QueryRgid {
            rgid: gid(1),
            vlan: None,
        },
        Opcode::RegDmb => Request::RegDmb {
            dmb: h.addr(0, DMB_OFF),
            len: 4096,
            sba_idx: 32,
            vlan: None,
            rgid: gid(1),
        },
        Opcode::UnregDmb => Request::UnregDmb {
            token: DmbToken(0x1234_0000_0000),
        },
        Opcode::SignalIeq => Request::SignalIeq {
            rgid: gid(0),
            trigger_irq: true,
            code: 0x80,
            info: 1,
        },
        Opcode::UnregSba => Request::UnregSba,
        Opcode::UnregIeq => Request::UnregIeq,
        Opcode::AttachDmb => Request::AttachDmb {
            token: DmbToken(0x1234_0000_0000),
        },
        Opcode::DetachDmb => Request::DetachDmb {
            token: DmbToken(0x1234_0000_0000),
        },
    }
}

fn hdr(cmd: u32, len: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(RequestHeader::new(cmd, len).as_bytes());
    b
}

// ------------------------------------------------------------------ generic

#[test]
fn short_requests_are_bad_length() {
    let h = Harness::lpar();
    for n in 0..8 {
        let bytes = [0u8, 0, 0, 3, 0, 0, 0, 8];
        let r = h.raw(0, &bytes[..n]);
        assert_eq!(r.ret(), Rc::BadLength.raw(), "{n} bytes");
        assert_eq!(r.hdr().cmd.get(), 0, "no header to echo");
        assert_eq!(r.len, 8);
    }
}

#[test]
fn unknown_codes_are_unknown_command() {
    let h = Harness::lpar();
    h.probe(0);
    let before = h.state();
    for code in [
        0x00,
        0x0C,
        0x0D,
        0x0F,
        0x10,
        0x13,
        0x1F,
        0x22,
        0x100,
        0xFFFF_FFFF,
    ] {
        for len in [8u16, 16, 24, 40] {
            let mut req = [0u8; 40];
            req[..8].copy_from_slice(&hdr(code, len));
            let r = h.raw(0, &req[..len as usize]);
            assert_eq!(r.ret(), Rc::UnknownCommand.raw(), "code {code:#x}");
            assert_eq!(r.hdr().cmd.get(), code, "code echoed");
        }
    }
    assert!(before == h.state());
}

#[test]
fn wrong_or_truncated_length_is_bad_length() {
    let h = Harness::lpar();
    h.probe(0);
    let before = h.state();
    for op in Opcode::ALL {
        let mut buf = [0u8; 64];
        let n = sample(&h, op).emit(&mut buf).unwrap();
        // hdr.len different from the command's length (smaller, larger, zero).
        for bad in [0u16, 4, n as u16 - 8, n as u16 + 8, 0xFFFF] {
            if bad as usize == n || (bad == 0 && n == 0) {
                continue;
            }
            let mut req = buf;
            req[6..8].copy_from_slice(&bad.to_be_bytes());
            let r = h.raw(0, &req[..64]);
            assert_eq!(r.ret(), Rc::BadLength.raw(), "{} len {bad}", op.name());
        }
        // Right hdr.len, but fewer bytes than it says.
        if n > 8 {
            let r = h.raw(0, &buf[..n - 1]);
            assert_eq!(r.ret(), Rc::BadLength.raw(), "{} truncated", op.name());
            let r = h.raw(0, &buf[..8]);
            assert_eq!(r.ret(), Rc::BadLength.raw(), "{} header only", op.name());
        }
    }
    assert!(before == h.state());
}

#[test]
fn longer_buffer_than_len_is_accepted() {
    // The command area is 256 bytes: the device reads hdr.len of it, not more.
    let h = Harness::lpar();
    let mut buf = [0xFFu8; 256];
    let n = Request::ReadGid.emit(&mut buf).unwrap();
    assert_eq!(n, 8);
    let r = h.raw(2, &buf);
    assert_eq!(r.ret(), 0);
    assert_eq!(r.u64_at(8), gid(2).0);
}

#[test]
fn every_command_of_an_offline_function_is_refused() {
    let h = Harness::lpar();
    h.probe(1);
    assert!(h.dev.function_down(fid(1), DownReason::Crash));
    assert!(!h.dev.is_online(fid(1)));
    for op in Opcode::ALL {
        let req = sample(&h, op);
        assert_eq!(h.refused(1, req), Rc::FunctionOffline, "{}", op.name());
    }
    // A function the device does not have is offline too.
    let mut buf = [0u8; 8];
    Request::ReadGid.emit(&mut buf).unwrap();
    let mut area = [0u8; 256];
    assert_eq!(h.dev.execute(fid(9), &buf, &mut area), 8);
    assert_eq!(&area[..8], &[0, 0, 0, 3, 0, 0x12, 0, 8]);
    // Back up: commands work again.
    assert!(h.dev.function_up(fid(1)));
    assert_eq!(h.ok(1, Request::ReadGid).u64_at(8), gid(1).0);
}

#[test]
fn every_success_has_the_documented_response_length() {
    let h = Harness::shared();
    let mut seen = Vec::new();
    let mut run = |f: u16, req: Request| {
        let r = h.ok(f, req);
        assert_eq!(r.len, req.opcode().response_len());
        assert_eq!(r.len % 8, 0);
        assert_eq!(r.hdr().ret.get(), 0);
        assert_eq!(r.hdr().cmd.get(), req.opcode() as u32);
        seen.push(req.opcode());
        r
    };
    run(
        0,
        Request::RegSba {
            sba: h.addr(0, SBA_OFF),
        },
    );
    run(
        0,
        Request::RegIeq {
            ieq: h.addr(0, IEQ_OFF),
            len: 512,
        },
    );
    run(0, Request::ReadGid);
    run(0, Request::AddVlanId { vlan_id: 0x1FFF });
    run(0, Request::SetVlan);
    run(0, Request::ResetVlan);
    run(0, Request::QueryInfo);
    run(
        0,
        Request::QueryRgid {
            rgid: gid(1),
            vlan: None,
        },
    );
    let tok = DmbToken(
        run(
            0,
            Request::RegDmb {
                dmb: h.addr(0, DMB_OFF),
                len: 8192,
                sba_idx: 40,
                vlan: None,
                rgid: gid(1),
            },
        )
        .u64_at(8),
    );
    run(
        1,
        Request::SignalIeq {
            rgid: gid(0),
            trigger_irq: false,
            code: 0x83,
            info: 0,
        },
    );
    run(1, Request::AttachDmb { token: tok });
    run(1, Request::DetachDmb { token: tok });
    run(0, Request::UnregDmb { token: tok });
    run(0, Request::DelVlanId { vlan_id: 0x1FFF });
    run(0, Request::UnregIeq);
    run(0, Request::UnregSba);
    for op in Opcode::ALL {
        assert!(seen.contains(&op), "{} not exercised", op.name());
    }
}

// ------------------------------------------------------------------ REG_SBA / UNREG_SBA

#[test]
fn reg_sba_success_is_reported_and_used() {
    let h = Harness::lpar();
    // The last 4096 bytes of the domain are a valid place.
    let last = (DOMAIN_SIZE - 4096) as u64;
    h.ok(
        0,
        Request::RegSba {
            sba: h.addr(0, last),
        },
    );
    assert_eq!(h.query_info(0).sba.get(), base(0) + last);
    let tok = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.mv(1, tok, 0, true, b"x").unwrap();
    assert_eq!(
        h.read(0, last, 1)[0],
        0x80,
        "summary bit in the registered SBA"
    );
    assert_eq!(h.read(0, last + 8, 1)[0], 0x80, "DMB bit of index 32");
}

#[test]
fn reg_sba_invalid_address() {
    let h = Harness::lpar();
    let bad = [
        base(0) + 4,                               // misaligned
        base(0) + (DOMAIN_SIZE - 4096) as u64 + 8, // runs past the end
        base(0) + DOMAIN_SIZE as u64,              // just past the end
        base(0) - 4096,                            // below the domain
        base(1),                                   // another partition's memory
        base(1) + 0x1000,                          // ditto
        0,                                         // nowhere
        u64::MAX - 7,                              // overflow
    ];
    for sba in bad {
        assert_eq!(
            h.refused(0, Request::RegSba { sba: DevAddr(sba) }),
            Rc::InvalidAddress,
            "{sba:#x}"
        );
    }
    assert_eq!(h.query_info(0).sba.get(), 0);
}

#[test]
fn reg_sba_twice_is_already_registered() {
    let h = Harness::lpar();
    h.probe(0);
    for off in [SBA_OFF, 0x4000] {
        assert_eq!(
            h.refused(
                0,
                Request::RegSba {
                    sba: h.addr(0, off)
                }
            ),
            Rc::AlreadyRegistered
        );
    }
    assert_eq!(h.query_info(0).sba.get(), base(0) + SBA_OFF);
}

#[test]
fn unreg_sba_success_stops_signalling() {
    let h = Harness::lpar();
    h.probe(0);
    let tok = h.reg_dmb(0, DMB_OFF, 4096, 33, gid(1), None).unwrap();
    h.ok(0, Request::UnregSba);
    assert_eq!(h.query_info(0).sba.get(), 0);
    let irqs = h.irq(0).count();
    h.mv(1, tok, 0, true, b"data").unwrap();
    assert_eq!(h.read(0, DMB_OFF, 4), b"data");
    assert!(h.sba_bytes(0).iter().all(|&b| b == 0), "no SBA write");
    assert_eq!(h.irq(0).count(), irqs, "no interrupt without an SBA");
    // Can be registered again, elsewhere.
    h.ok(
        0,
        Request::RegSba {
            sba: h.addr(0, 0x8000),
        },
    );
    h.mv(1, tok, 0, true, b"d").unwrap();
    assert_eq!(h.read(0, 0x8000, 1)[0], 0x80);
}

#[test]
fn unreg_sba_not_registered() {
    let h = Harness::lpar();
    assert_eq!(h.refused(0, Request::UnregSba), Rc::NotRegistered);
    h.probe(0);
    h.ok(0, Request::UnregSba);
    assert_eq!(h.refused(0, Request::UnregSba), Rc::NotRegistered);
}

// ------------------------------------------------------------------ REG_IEQ / UNREG_IEQ

#[test]
fn reg_ieq_success_writes_the_header() {
    let h = Harness::lpar();
    h.write(2, IEQ_OFF, &[0xAB; 64]);
    h.ok(
        2,
        Request::RegIeq {
            ieq: h.addr(2, IEQ_OFF),
            len: 512,
        },
    );
    let hd = h.ieq_header(2);
    assert_eq!(hd.idx.get(), 0);
    assert_eq!(hd.ieq_len.get(), 512);
    assert_eq!(hd.entry_len.get(), 32);
    assert_eq!(hd.reserved.get(), 0);
    assert_eq!(
        h.read(2, IEQ_OFF + 32, 32),
        vec![0xAB; 32],
        "entries untouched"
    );
    let qi = h.query_info(2);
    assert_eq!(qi.ieq.get(), base(2) + IEQ_OFF);
    assert_eq!(qi.ieq_len.get(), 512);
    // Smallest and largest accepted lengths.
    h.ok(2, Request::UnregIeq);
    h.ok(
        2,
        Request::RegIeq {
            ieq: h.addr(2, 0x3000),
            len: 64,
        },
    );
    h.ok(2, Request::UnregIeq);
    h.ok(
        2,
        Request::RegIeq {
            ieq: h.addr(2, (DOMAIN_SIZE - 4096) as u64),
            len: 4096,
        },
    );
    assert_eq!(h.query_info(2).ieq_len.get(), 4096);
}

#[test]
fn reg_ieq_invalid_length() {
    let h = Harness::lpar();
    for len in [0u64, 8, 32, 48, 500, 513, 4096 + 32, 1 << 32, u64::MAX] {
        assert_eq!(
            h.refused(
                0,
                Request::RegIeq {
                    ieq: h.addr(0, IEQ_OFF),
                    len
                }
            ),
            Rc::InvalidLength,
            "len {len}"
        );
    }
}

#[test]
fn reg_ieq_invalid_address() {
    let h = Harness::lpar();
    for ieq in [
        base(0) + IEQ_OFF + 4,
        base(0) + DOMAIN_SIZE as u64 - 256,
        base(3) + IEQ_OFF,
        0,
        u64::MAX - 511,
    ] {
        assert_eq!(
            h.refused(
                0,
                Request::RegIeq {
                    ieq: DevAddr(ieq),
                    len: 512
                }
            ),
            Rc::InvalidAddress,
            "{ieq:#x}"
        );
    }
}

#[test]
fn reg_ieq_twice_is_already_registered() {
    let h = Harness::lpar();
    h.probe(0);
    assert_eq!(
        h.refused(
            0,
            Request::RegIeq {
                ieq: h.addr(0, 0x3000),
                len: 512
            }
        ),
        Rc::AlreadyRegistered
    );
}

#[test]
fn unreg_ieq_success_stops_events() {
    let h = Harness::lpar();
    h.probe(0);
    h.ok(0, Request::UnregIeq);
    assert_eq!(h.query_info(0).ieq.get(), 0);
    assert_eq!(
        h.query_info(0).ieq_len.get(),
        0,
        "no stale length once unregistered"
    );
    assert_eq!(
        h.refused(
            1,
            Request::SignalIeq {
                rgid: gid(0),
                trigger_irq: true,
                code: 0x80,
                info: 0
            }
        ),
        Rc::RemoteNoEventQueue
    );
    assert_eq!(h.ieq_header(0).idx.get(), 0);
}

#[test]
fn unreg_ieq_not_registered() {
    let h = Harness::lpar();
    assert_eq!(h.refused(3, Request::UnregIeq), Rc::NotRegistered);
    h.probe(3);
    h.ok(3, Request::UnregIeq);
    assert_eq!(h.refused(3, Request::UnregIeq), Rc::NotRegistered);
}

// ------------------------------------------------------------------ READ_GID

#[test]
fn read_gid_answers_each_functions_gid() {
    let h = Harness::lpar();
    for f in 0..NF as u16 {
        let r = h.ok(f, Request::ReadGid);
        let v: ReadGidResponse = r.view();
        assert_eq!(v.gid.get(), gid(f).0);
        let mut golden = vec![0, 0, 0, 3, 0, 0, 0, 16];
        golden.extend_from_slice(&gid(f).0.to_be_bytes());
        assert_eq!(r.bytes(), &golden[..]);
    }
}

// ------------------------------------------------------------------ VLANs

#[test]
fn add_vlan_id_success_and_idempotence() {
    let h = Harness::lpar();
    for v in [0x1FFF, 0, 4095, 7, 7] {
        h.ok(1, Request::AddVlanId { vlan_id: v });
    }
    let qi = h.query_info(1);
    assert_eq!(qi.vlan_nr_ids.get(), 4, "adding 7 twice holds it once");
    let ids: Vec<u16> = qi.vlan_id[..4].iter().map(|v| v.get()).collect();
    assert_eq!(ids, [0x1FFF, 0, 4095, 7]);
    assert!(qi.vlan_id[4..].iter().all(|v| v.get() == 0));
}

#[test]
fn add_vlan_id_invalid_vlan() {
    let h = Harness::lpar();
    for v in [4096u64, 0x1FFE, 0x2000, 0xFFFF, 1 << 32, u64::MAX] {
        assert_eq!(
            h.refused(1, Request::AddVlanId { vlan_id: v }),
            Rc::InvalidVlan,
            "{v:#x}"
        );
    }
}

#[test]
fn add_vlan_id_table_full() {
    let h = Harness::lpar();
    for v in 0..64 {
        h.ok(0, Request::AddVlanId { vlan_id: v });
    }
    assert_eq!(h.query_info(0).vlan_nr_ids.get(), 64);
    assert_eq!(
        h.refused(0, Request::AddVlanId { vlan_id: 100 }),
        Rc::VlanTableFull
    );
    // An id already held is still fine (idempotent), and a free slot is usable again.
    h.ok(0, Request::AddVlanId { vlan_id: 63 });
    h.ok(0, Request::DelVlanId { vlan_id: 5 });
    h.ok(0, Request::AddVlanId { vlan_id: 100 });
    let qi = h.query_info(0);
    assert_eq!(qi.vlan_nr_ids.get(), 64);
    assert!(qi.vlan_id.iter().any(|v| v.get() == 100));
    assert!(!qi.vlan_id.iter().any(|v| v.get() == 5));
}

#[test]
fn del_vlan_id_success() {
    let h = Harness::lpar();
    h.probe(1);
    for v in [3, 9, 0x1FFF] {
        h.ok(1, Request::AddVlanId { vlan_id: v });
    }
    h.ok(1, Request::DelVlanId { vlan_id: 9 });
    let qi = h.query_info(1);
    assert_eq!(qi.vlan_nr_ids.get(), 2);
    assert_eq!(qi.vlan_id[0].get(), 3);
    assert_eq!(qi.vlan_id[1].get(), 0x1FFF);
    // Membership is gone: a DMB tagged with VLAN 9 refuses the function's moves.
    let tok = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), Some(9)).unwrap();
    assert_eq!(h.mv(1, tok, 0, false, b"x"), Err(MoveError::AccessDenied));
    h.ok(1, Request::AddVlanId { vlan_id: 9 });
    assert_eq!(h.mv(1, tok, 0, false, b"x"), Ok(()));
}

#[test]
fn del_vlan_id_invalid_vlan() {
    let h = Harness::lpar();
    for v in [4096u64, 0x2000, u64::MAX] {
        assert_eq!(
            h.refused(0, Request::DelVlanId { vlan_id: v }),
            Rc::InvalidVlan
        );
    }
}

#[test]
fn del_vlan_id_not_found() {
    let h = Harness::lpar();
    h.ok(0, Request::AddVlanId { vlan_id: 1 });
    assert_eq!(
        h.refused(0, Request::DelVlanId { vlan_id: 2 }),
        Rc::VlanNotFound
    );
    h.ok(0, Request::DelVlanId { vlan_id: 1 });
    assert_eq!(
        h.refused(0, Request::DelVlanId { vlan_id: 1 }),
        Rc::VlanNotFound
    );
    // Another function's VLANs are not this function's.
    h.ok(2, Request::AddVlanId { vlan_id: 0x1FFF });
    assert_eq!(
        h.refused(0, Request::DelVlanId { vlan_id: 0x1FFF }),
        Rc::VlanNotFound
    );
}

#[test]
fn set_and_reset_vlan_toggle_vlan_required() {
    let h = Harness::lpar();
    assert_eq!(h.query_info(0).vlan_required.get(), 0);
    h.ok(0, Request::SetVlan);
    assert_eq!(h.query_info(0).vlan_required.get(), 1);
    assert_eq!(h.query_info(1).vlan_required.get(), 0, "per function");
    h.ok(0, Request::SetVlan);
    assert_eq!(h.query_info(0).vlan_required.get(), 1);
    h.ok(0, Request::ResetVlan);
    assert_eq!(h.query_info(0).vlan_required.get(), 0);
    h.ok(0, Request::ResetVlan);
    assert_eq!(h.query_info(0).vlan_required.get(), 0);
}

// ------------------------------------------------------------------ QUERY_INFO

#[test]
fn query_info_reports_the_functions_state() {
    let h = Harness::lpar();
    let qi = h.query_info(1);
    assert_eq!(qi.hdr.len.get(), 200);
    assert_eq!(qi.version.get(), MODEL_VERSION);
    assert_eq!(qi.max_len.get(), 4096);
    assert_eq!(qi.ism_state.get(), STATE_ONLINE);
    assert_eq!(qi.my_gid.get(), gid(1).0);
    assert_eq!(qi.sba.get(), 0);
    assert_eq!(qi.ieq.get(), 0);
    assert_eq!(qi.ieq_len.get(), 0);
    assert_eq!(qi.ext_features.get(), 0, "no attach on an LPAR board");
    assert_eq!(qi.dmbs_owned.get(), 0);
    assert_eq!(qi.dmbs_used.get(), 0);
    assert_eq!(qi.vlan_nr_ids.get(), 0);

    h.probe(1);
    h.ok(1, Request::AddVlanId { vlan_id: 12 });
    h.ok(1, Request::SetVlan);
    h.reg_dmb(1, DMB_OFF, 4096, 32, gid(0), None).unwrap();
    h.reg_dmb(1, DMB_OFF, 4096, 33, gid(2), None).unwrap();
    h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.reg_dmb(2, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.reg_dmb(3, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    h.reg_dmb(3, DMB_OFF, 4096, 33, gid(0), None).unwrap();
    let r = h.ok(1, Request::QueryInfo);
    let b = r.bytes();
    assert_eq!(&b[0..8], &[0, 0, 0, 8, 0, 0, 0, 200]);
    assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0x10, 0]);
    assert_eq!(&b[16..24], &STATE_ONLINE.to_be_bytes());
    assert_eq!(&b[24..32], &gid(1).0.to_be_bytes());
    assert_eq!(&b[32..40], &(base(1) + SBA_OFF).to_be_bytes());
    assert_eq!(&b[40..48], &(base(1) + IEQ_OFF).to_be_bytes());
    assert_eq!(&b[48..52], &512u32.to_be_bytes());
    assert_eq!(&b[52..56], &[0; 4], "ext_features");
    assert_eq!(&b[56..60], &2u32.to_be_bytes(), "dmbs_owned");
    assert_eq!(&b[60..64], &3u32.to_be_bytes(), "dmbs_used (rgid = me)");
    assert_eq!(&b[64..68], &1u32.to_be_bytes(), "vlan_required");
    assert_eq!(&b[68..72], &1u32.to_be_bytes(), "vlan_nr_ids");
    assert_eq!(&b[72..74], &12u16.to_be_bytes());
    assert!(b[74..200].iter().all(|&x| x == 0));
}

#[test]
fn query_info_advertises_attach_only_with_shared_memory() {
    let lpar = Harness::lpar();
    assert_eq!(lpar.query_info(0).ext_features.get(), 0);
    let shared = Harness::shared();
    for f in 0..NF as u16 {
        assert_eq!(
            shared.query_info(f).ext_features.get(),
            ExtFeatures::ATTACH_DMB.bits()
        );
        assert_eq!(ExtFeatures::ATTACH_DMB.bits(), 1, "bit 0");
    }
}

// ------------------------------------------------------------------ QUERY_RGID

#[test]
fn query_rgid_success() {
    let h = Harness::lpar();
    for (me, peer) in [(0, 1), (1, 0), (3, 2), (0, 0)] {
        h.ok(
            me,
            Request::QueryRgid {
                rgid: gid(peer),
                vlan: None,
            },
        );
    }
    for f in [0, 1] {
        h.ok(f, Request::AddVlanId { vlan_id: 0x1FFF });
        h.ok(f, Request::AddVlanId { vlan_id: 44 });
    }
    for v in [0x1FFF, 44] {
        h.ok(
            0,
            Request::QueryRgid {
                rgid: gid(1),
                vlan: Some(v),
            },
        );
    }
}

#[test]
fn query_rgid_unreachable() {
    let h = Harness::lpar();
    h.ok(0, Request::AddVlanId { vlan_id: 5 });
    h.ok(1, Request::AddVlanId { vlan_id: 6 });
    h.ok(2, Request::AddVlanId { vlan_id: 5 });
    let cases = [
        (Gid(0), None),                     // no such GID
        (Gid(0xFFFF_FFFF_FFFF_FFFF), None), // no such GID
        (gid(1), Some(5)),                  // peer not in VLAN 5
        (gid(1), Some(6)),                  // caller not in VLAN 6
        (gid(1), Some(7)),                  // neither
        (gid(2), Some(0x1_0005)),           // VLAN id above u16: not truncated to 5
        (gid(2), Some(4096)),               // not a VLAN id
    ];
    for (rgid, vlan) in cases {
        assert_eq!(
            h.refused(0, Request::QueryRgid { rgid, vlan }),
            Rc::RemoteGidUnreachable,
            "{rgid:?} {vlan:?}"
        );
    }
    h.ok(
        0,
        Request::QueryRgid {
            rgid: gid(2),
            vlan: Some(5),
        },
    );
    // An offline peer is unreachable, and reachable again once up.
    h.dev.function_down(fid(2), DownReason::Disabled);
    assert_eq!(
        h.refused(
            0,
            Request::QueryRgid {
                rgid: gid(2),
                vlan: None
            }
        ),
        Rc::RemoteGidUnreachable
    );
    h.dev.function_up(fid(2));
    h.ok(
        0,
        Request::QueryRgid {
            rgid: gid(2),
            vlan: None,
        },
    );
}

// ------------------------------------------------------------------ REG_DMB

#[test]
fn reg_dmb_success_returns_well_formed_distinct_tokens() {
    let h = Harness::lpar();
    let mut toks = Vec::new();
    for (i, f) in [0u16, 0, 1, 2].into_iter().enumerate() {
        let t = h
            .reg_dmb(
                f,
                DMB_OFF + 0x1000 * i as u64,
                4096,
                32 + i as u32,
                gid(3),
                None,
            )
            .unwrap();
        assert_eq!(t.0 & 0xFFFF_FFFF, 0, "low 32 bits zero");
        assert_ne!(t.0, 0);
        assert!(!toks.contains(&t));
        toks.push(t);
    }
    // Same SBA index at another function is fine; 1919 and a 1-byte DMB are fine.
    h.reg_dmb(1, DMB_OFF, 1, 32, gid(0), None).unwrap();
    h.reg_dmb(1, DMB_OFF, 1, 1919, gid(0), Some(0x1FFF))
        .unwrap();
    h.reg_dmb(1, DMB_OFF, 1, 1918, gid(0), Some(4095)).unwrap();
    assert_eq!(h.query_info(0).dmbs_owned.get(), 2);
    assert_eq!(h.query_info(1).dmbs_owned.get(), 4);
    assert_eq!(h.query_info(3).dmbs_used.get(), 4);
    assert_eq!(h.dev.dmbs_in_use(), 7);
    // The token addresses the right buffer.
    h.mv(3, toks[1], 0, false, b"second").unwrap();
    assert_eq!(h.read(0, DMB_OFF + 0x1000, 6), b"second");
    assert_eq!(h.read(0, DMB_OFF, 6), [0; 6]);
}

#[test]
fn reg_dmb_of_one_mib() {
    let size = (1 << 20) + 0x4000;
    let h = Harness::<64>::build(2, size, false, [0, 1, 1, 1]);
    let t = h.reg_dmb(0, 0x2000, 1 << 20, 32, gid(1), None).unwrap();
    h.mv(1, t, (1 << 20) - 4, false, b"tail").unwrap();
    assert_eq!(h.read(0, 0x2000 + (1 << 20) - 4, 4), b"tail");
    assert_eq!(
        h.mv(1, t, (1 << 20) - 3, false, b"tail"),
        Err(MoveError::OutOfRange)
    );
}

#[test]
fn reg_dmb_invalid_length() {
    let h = Harness::lpar();
    for len in [0u32, (1 << 20) + 1, 1 << 21, u32::MAX] {
        assert_eq!(
            h.refused(
                0,
                Request::RegDmb {
                    dmb: h.addr(0, DMB_OFF),
                    len,
                    sba_idx: 32,
                    vlan: None,
                    rgid: gid(1)
                }
            ),
            Rc::InvalidLength,
            "len {len}"
        );
    }
    // Length is checked first: a bad length with everything else bad is still InvalidLength.
    assert_eq!(
        h.refused(
            0,
            Request::RegDmb {
                dmb: DevAddr(3),
                len: 0,
                sba_idx: 5,
                vlan: Some(9999),
                rgid: gid(1)
            }
        ),
        Rc::InvalidLength
    );
}

#[test]
fn reg_dmb_invalid_vlan() {
    let h = Harness::lpar();
    for v in [4096u32, 0x1FFE, 0x2000, u32::MAX] {
        assert_eq!(
            h.refused(
                0,
                Request::RegDmb {
                    dmb: h.addr(0, DMB_OFF),
                    len: 4096,
                    sba_idx: 32,
                    vlan: Some(v),
                    rgid: gid(1)
                }
            ),
            Rc::InvalidVlan,
            "vlan {v:#x}"
        );
    }
    // vlan_valid = 0: the id is ignored, however bad.
    let mut buf = [0u8; 40];
    Request::RegDmb {
        dmb: h.addr(0, DMB_OFF),
        len: 4096,
        sba_idx: 32,
        vlan: None,
        rgid: gid(1),
    }
    .emit(&mut buf)
    .unwrap();
    buf[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(h.raw(0, &buf).ret(), 0);
}

#[test]
fn reg_dmb_invalid_sba_index() {
    let h = Harness::lpar();
    for idx in [0u32, 1, 31, 1920, 1921, 65535, u32::MAX] {
        assert_eq!(
            h.refused(
                0,
                Request::RegDmb {
                    dmb: h.addr(0, DMB_OFF),
                    len: 4096,
                    sba_idx: idx,
                    vlan: None,
                    rgid: gid(1)
                }
            ),
            Rc::InvalidSbaIndex,
            "idx {idx}"
        );
    }
}

#[test]
fn reg_dmb_sba_index_in_use() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 77, gid(1), None).unwrap();
    let again = Request::RegDmb {
        dmb: h.addr(0, DMB_OFF + 0x1000),
        len: 4096,
        sba_idx: 77,
        vlan: None,
        rgid: gid(2),
    };
    assert_eq!(h.refused(0, again), Rc::SbaIndexInUse);
    // Free after UNREG_DMB.
    assert_eq!(h.unreg_dmb(0, t), Ok(UNREG_RELEASED));
    h.ok(0, again);
}

#[test]
fn reg_dmb_invalid_address() {
    let h = Harness::lpar();
    let end = DOMAIN_SIZE as u64;
    let cases = [
        (base(0) + end - 4095, 4096u32), // runs one byte past the end
        (base(0) + end, 1),              // starts at the end
        (base(0) - 1, 2),                // starts below the domain
        (base(1) + DMB_OFF, 4096),       // another partition's (valid) memory
        (base(3), 1),                    // ditto
        (0, 4096),                       // nowhere
        (u64::MAX - 100, 4096),          // overflow
    ];
    for (dmb, len) in cases {
        assert_eq!(
            h.refused(
                0,
                Request::RegDmb {
                    dmb: DevAddr(dmb),
                    len,
                    sba_idx: 32,
                    vlan: None,
                    rgid: gid(1)
                }
            ),
            Rc::InvalidAddress,
            "{dmb:#x}+{len}"
        );
    }
    // The very last byte is fine.
    h.reg_dmb(0, end - 4096, 4096, 32, gid(1), None).unwrap();
}

#[test]
fn status_areas_and_dmbs_never_overlap() {
    let h = Harness::lpar();
    h.probe(0); // SBA at SBA_OFF (4096 bytes), IEQ at IEQ_OFF (512 bytes)
                // A DMB over the SBA or the IEQ is refused: a move into it would land in a status area.
    for (off, len) in [
        (SBA_OFF, 1u32),
        (IEQ_OFF - 8, 16),
        (IEQ_OFF + 511, 1),
        (0, 1 << 20),
    ] {
        assert_eq!(
            h.refused(
                0,
                Request::RegDmb {
                    dmb: h.addr(0, off),
                    len,
                    sba_idx: 32,
                    vlan: None,
                    rgid: gid(1)
                }
            ),
            Rc::InvalidAddress,
            "DMB at {off:#x}+{len}"
        );
    }
    // Right after the IEQ is fine, and DMBs may overlap each other (their owner's business).
    h.reg_dmb(0, IEQ_OFF + 512, 64, 32, gid(1), None).unwrap();
    h.reg_dmb(0, IEQ_OFF + 512, 4096, 33, gid(2), None).unwrap();
    // Status areas over a DMB, or over each other, are refused too.
    h.ok(0, Request::UnregIeq);
    h.ok(0, Request::UnregSba);
    for req in [
        Request::RegSba {
            sba: h.addr(0, IEQ_OFF + 512),
        },
        Request::RegIeq {
            ieq: h.addr(0, IEQ_OFF + 1024),
            len: 512,
        },
    ] {
        assert_eq!(h.refused(0, req), Rc::InvalidAddress, "{req:?}");
    }
    h.ok(
        0,
        Request::RegIeq {
            ieq: h.addr(0, IEQ_OFF),
            len: 512,
        },
    );
    assert_eq!(
        h.refused(
            0,
            Request::RegSba {
                sba: h.addr(0, SBA_OFF + 8),
            }
        ),
        Rc::InvalidAddress,
        "an SBA over the IEQ"
    );
    h.ok(
        0,
        Request::RegSba {
            sba: h.addr(0, SBA_OFF),
        },
    );
}

#[test]
fn reg_dmb_table_full() {
    // A table of 4 slots shared by all functions.
    let h = Harness::<4>::build(NF, DOMAIN_SIZE, false, [0, 1, 2, 3]);
    h.probe(0);
    let mut toks = Vec::new();
    for i in 0..4u32 {
        toks.push(
            h.reg_dmb((i % 2) as u16, DMB_OFF, 4096, 32 + i, gid(3), None)
                .unwrap(),
        );
    }
    assert_eq!(h.dev.dmbs_in_use(), 4);
    for f in [0, 1, 2] {
        assert_eq!(
            h.refused(
                f,
                Request::RegDmb {
                    dmb: h.addr(f, DMB_OFF),
                    len: 4096,
                    sba_idx: 100,
                    vlan: None,
                    rgid: gid(3)
                }
            ),
            Rc::DmbTableFull
        );
    }
    // One freed slot takes one more DMB; it gets a token none of the old ones had.
    assert_eq!(h.unreg_dmb(0, toks[2]), Ok(UNREG_RELEASED));
    let t = h.reg_dmb(2, DMB_OFF, 4096, 100, gid(3), None).unwrap();
    assert!(!toks.contains(&t));
    assert_eq!(
        h.reg_dmb(2, DMB_OFF, 4096, 101, gid(3), None),
        Err(Rc::DmbTableFull)
    );
}

// ------------------------------------------------------------------ UNREG_DMB

#[test]
fn unreg_dmb_success_posts_the_buffer_event() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 50, gid(1), None).unwrap();
    let irqs = h.irq(0).take();
    assert_eq!(irqs, 0);
    let r = h.ok(0, Request::UnregDmb { token: t });
    assert_eq!(r.u64_at(8), UNREG_RELEASED);
    assert_eq!(h.ieq_header(0).idx.get(), 1);
    let ev = h.event(0, 0);
    assert_eq!(ev.ty.get(), EventType::Buffer as u32);
    assert_eq!(ev.ty.get(), 0);
    assert_eq!(ev.code.get(), event_code::BUF_DMB_UNREGISTERED);
    assert_eq!(ev.code.get(), 4);
    assert_eq!(ev.tok.get(), t.0);
    assert_eq!(ev.info.get(), 0);
    assert_ne!(ev.time.get(), 0);
    assert_eq!(h.sba_bytes(0)[0], 0x40, "event bit");
    assert_eq!(h.irq(0).count(), 1);
    assert_eq!(h.query_info(0).dmbs_owned.get(), 0);
    assert_eq!(h.dev.dmbs_in_use(), 0);
    assert_eq!(h.mv(1, t, 0, false, b"x"), Err(MoveError::InvalidToken));
}

#[test]
fn unreg_dmb_invalid_token() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 50, gid(1), None).unwrap();
    let bad = [
        DmbToken(0),
        DmbToken(u64::MAX),
        DmbToken(t.0 | 1),           // low half not zero
        DmbToken(t.0 | 0x0080_0000), // ditto (looks like a move word)
        DmbToken(t.0 ^ (1 << 32)),   // another slot
        DmbToken(t.0 ^ (1 << 50)),   // another generation
        DmbToken(0xDEAD_BEEF_0000_0000),
    ];
    for token in bad {
        assert_eq!(
            h.refused(0, Request::UnregDmb { token }),
            Rc::InvalidToken,
            "{token:x?}"
        );
    }
    // Only the owner may unregister, not the writer nor a bystander.
    for f in [1, 2] {
        assert_eq!(
            h.refused(f, Request::UnregDmb { token: t }),
            Rc::InvalidToken
        );
    }
    // Stale after unregister, and stays stale when the slot is reused.
    assert_eq!(h.unreg_dmb(0, t), Ok(UNREG_RELEASED));
    assert_eq!(
        h.refused(0, Request::UnregDmb { token: t }),
        Rc::InvalidToken
    );
    let t2 = h.reg_dmb(0, DMB_OFF, 4096, 50, gid(1), None).unwrap();
    assert_ne!(t, t2);
    assert_eq!(
        h.refused(0, Request::UnregDmb { token: t }),
        Rc::InvalidToken
    );
    assert_eq!(h.unreg_dmb(0, t2), Ok(UNREG_RELEASED));
}

// ------------------------------------------------------------------ SIGNAL_IEQ

#[test]
fn signal_ieq_success_delivers_a_software_event() {
    let h = Harness::lpar();
    h.probe(2);
    let info = 0x0102_0304_0000_0001u64;
    h.ok(
        0,
        Request::SignalIeq {
            rgid: gid(2),
            trigger_irq: true,
            code: 0x83,
            info,
        },
    );
    let ev = h.event(2, 0);
    assert_eq!(h.ieq_header(2).idx.get(), 1);
    assert_eq!(ev.ty.get(), 2);
    assert_eq!(ev.code.get(), 0x83);
    assert_eq!(ev.tok.get(), gid(0).0, "tok = sender's GID");
    assert_eq!(ev.info.get(), info);
    assert_eq!(h.sba_bytes(2)[0], 0x40);
    assert_eq!(h.irq(2).count(), 1);
    assert_eq!(h.irq(0).count(), 0);
    // To oneself works too.
    h.ok(
        2,
        Request::SignalIeq {
            rgid: gid(2),
            trigger_irq: true,
            code: 0x80,
            info: 0,
        },
    );
    assert_eq!(h.event(2, 1).tok.get(), gid(2).0);
    assert_eq!(h.irq(2).count(), 2);
}

#[test]
fn signal_ieq_remote_gid_unreachable() {
    let h = Harness::lpar();
    h.probe(1);
    for rgid in [Gid(0), Gid(12345), Gid(u64::MAX)] {
        assert_eq!(
            h.refused(
                0,
                Request::SignalIeq {
                    rgid,
                    trigger_irq: true,
                    code: 1,
                    info: 2
                }
            ),
            Rc::RemoteGidUnreachable
        );
    }
    h.dev.function_down(fid(1), DownReason::Crash);
    assert_eq!(
        h.refused(
            0,
            Request::SignalIeq {
                rgid: gid(1),
                trigger_irq: true,
                code: 1,
                info: 2
            }
        ),
        Rc::RemoteGidUnreachable
    );
}

#[test]
fn signal_ieq_remote_no_event_queue() {
    let h = Harness::lpar();
    h.ok(
        3,
        Request::RegSba {
            sba: h.addr(3, SBA_OFF),
        },
    );
    assert_eq!(
        h.refused(
            0,
            Request::SignalIeq {
                rgid: gid(3),
                trigger_irq: true,
                code: 0x80,
                info: 0
            }
        ),
        Rc::RemoteNoEventQueue
    );
    assert_eq!(h.sba_bytes(3)[0], 0, "no event bit");
}

// ------------------------------------------------------------------ ATTACH / DETACH

#[test]
fn attach_is_unknown_without_shared_memory() {
    let h = Harness::lpar();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    assert_eq!(
        h.refused(1, Request::AttachDmb { token: t }),
        Rc::UnknownCommand
    );
    assert_eq!(
        h.refused(1, Request::DetachDmb { token: t }),
        Rc::UnknownCommand
    );
    // (A board with shared memory but the owner in another domain offers attach and
    // refuses it with AttachNotPermitted: see attach_dmb_not_permitted.)
}

#[test]
fn attach_dmb_success_returns_the_owners_buffer() {
    let h = Harness::shared();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 16384, 45, gid(1), None).unwrap();
    let r = h.ok(1, Request::AttachDmb { token: t });
    let a: AttachDmbResponse = r.view();
    assert_eq!(a.hdr.len.get(), 32);
    assert_eq!(a.dmb.get(), base(0) + DMB_OFF);
    assert_eq!(a.dmb_tok.get(), t.0);
    assert_eq!(a.dmb_len.get(), 16384);
    assert_eq!(a.sba_idx.get(), 45);
    // The attached DMB stays a normal DMB: moves work, release is immediate after detach.
    h.mv(1, t, 0, true, b"ok").unwrap();
    h.ok(1, Request::DetachDmb { token: t });
    assert_eq!(h.unreg_dmb(0, t), Ok(UNREG_RELEASED));
}

#[test]
fn attach_dmb_not_permitted() {
    let h = Harness::shared();
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    // Not the authorized writer (a bystander, the owner itself).
    for f in [2, 3, 0] {
        assert_eq!(
            h.refused(f, Request::AttachDmb { token: t }),
            Rc::AttachNotPermitted,
            "fn {f}"
        );
    }
    // Already attached.
    h.ok(1, Request::AttachDmb { token: t });
    assert_eq!(
        h.refused(1, Request::AttachDmb { token: t }),
        Rc::AttachNotPermitted
    );
    // Attach offered, but the owner's memory is another domain.
    let two = Harness::<64>::build(2, DOMAIN_SIZE, true, [0, 0, 1, 1]);
    assert_eq!(two.query_info(2).ext_features.get(), 1);
    let t = two.reg_dmb(0, DMB_OFF, 4096, 32, gid(2), None).unwrap();
    assert_eq!(
        two.refused(2, Request::AttachDmb { token: t }),
        Rc::AttachNotPermitted
    );
}

#[test]
fn attach_dmb_invalid_token() {
    let h = Harness::shared();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    for token in [DmbToken(0), DmbToken(t.0 | 4), DmbToken(t.0 ^ (1 << 40))] {
        assert_eq!(h.refused(1, Request::AttachDmb { token }), Rc::InvalidToken);
    }
    assert_eq!(h.unreg_dmb(0, t), Ok(UNREG_RELEASED));
    assert_eq!(
        h.refused(1, Request::AttachDmb { token: t }),
        Rc::InvalidToken
    );
}

#[test]
fn unreg_of_an_attached_dmb_is_deferred_to_the_last_detach() {
    let h = Harness::shared();
    h.probe(0);
    let t = h.reg_dmb(0, DMB_OFF, 4096, 60, gid(1), None).unwrap();
    h.ok(1, Request::AttachDmb { token: t });
    h.irq(0).take();
    // Owner unregisters: deferred, no event yet, no more moves or attaches, index free.
    assert_eq!(h.unreg_dmb(0, t), Ok(UNREG_DEFERRED));
    assert_eq!(
        h.ieq_header(0).idx.get(),
        0,
        "no event before the last detach"
    );
    assert_eq!(h.irq(0).count(), 0);
    assert_eq!(h.dev.dmbs_in_use(), 1, "memory still held");
    assert_eq!(h.query_info(0).dmbs_owned.get(), 0);
    assert_eq!(h.mv(1, t, 0, false, b"x"), Err(MoveError::InvalidToken));
    assert_eq!(
        h.refused(1, Request::AttachDmb { token: t }),
        Rc::InvalidToken
    );
    assert_eq!(
        h.refused(0, Request::UnregDmb { token: t }),
        Rc::InvalidToken
    );
    let t2 = h.reg_dmb(0, DMB_OFF, 4096, 60, gid(1), None).unwrap();
    assert_ne!(t2, t);
    assert_eq!(h.dev.dmbs_in_use(), 2);
    // Last detach: released, BUF_DMB_UNREGISTERED with the old token to the owner.
    h.ok(1, Request::DetachDmb { token: t });
    assert_eq!(h.dev.dmbs_in_use(), 1);
    assert_eq!(h.ieq_header(0).idx.get(), 1);
    let ev = h.event(0, 0);
    assert_eq!(ev.ty.get(), 0);
    assert_eq!(ev.code.get(), 4);
    assert_eq!(ev.tok.get(), t.0);
    assert_eq!(h.irq(0).count(), 1);
    assert_eq!(h.sba_bytes(0)[0], 0x40);
    assert_eq!(
        h.refused(1, Request::DetachDmb { token: t }),
        Rc::NotAttached
    );
}

#[test]
fn detach_dmb_not_attached() {
    let h = Harness::shared();
    let t = h.reg_dmb(0, DMB_OFF, 4096, 32, gid(1), None).unwrap();
    // Never attached, unknown token, attached by someone else only.
    assert_eq!(
        h.refused(1, Request::DetachDmb { token: t }),
        Rc::NotAttached
    );
    assert_eq!(
        h.refused(1, Request::DetachDmb { token: DmbToken(0) }),
        Rc::NotAttached
    );
    h.ok(1, Request::AttachDmb { token: t });
    assert_eq!(
        h.refused(2, Request::DetachDmb { token: t }),
        Rc::NotAttached
    );
    h.ok(1, Request::DetachDmb { token: t });
    assert_eq!(
        h.refused(1, Request::DetachDmb { token: t }),
        Rc::NotAttached
    );
}

#[test]
fn ieq_of_512_bytes_has_15_entries() {
    // REG_IEQ with Linux's length: the header says so and events go to 32 + 32 k.
    let h = Harness::lpar();
    h.probe(0);
    assert_eq!(h.ieq_header(0).ieq_len.get(), LINUX_IEQ_LEN as u64);
    for k in 0..15u64 {
        h.ok(
            1,
            Request::SignalIeq {
                rgid: gid(0),
                trigger_irq: false,
                code: 0x100 + k as u32,
                info: k,
            },
        );
        assert_eq!(h.ieq_header(0).idx.get(), k + 1);
    }
    for k in 0..15 {
        assert_eq!(h.event(0, k).code.get(), 0x100 + k as u32);
    }
    assert_eq!(
        h.read(0, IEQ_OFF + 512, 32),
        [0; 32],
        "nothing past the queue"
    );
}
