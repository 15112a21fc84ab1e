//! Writes the seed corpus under `fuzz/corpus/<target>/` (run from anywhere:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen-corpus`). Every seed is a valid
//! input: a probe-like command sequence, moves into the setup DMBs, well-formed CLC
//! messages, CDC messages with sane cursors.

use std::path::{Path, PathBuf};

use ism_firmware::command::Request;
use ism_fuzz::device::{domain_base, gid, Harness};
use ism_fuzz::ops::{encode_command, encode_move_record, MoveTarget, Op};
use ism_hal::DevAddr;
use ism_host_driver::smcd::cdc::{CdcMessage, ConnStateFlags, Cursor, ProdFlags};
use ism_host_driver::smcd::clc::{
    AcceptConfirm, ClcMessage, Decline, DeclineReason, IpPrefix, Proposal, ProposalV2, SmcType,
    SmcdDevice, SmcdV2Ext, SmcrLocal,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn cmd(f: usize, req: Request) -> Op {
    Op::Cmd {
        f,
        spec: String::new(),
        req,
    }
}

fn probe(f: usize) -> Vec<Op> {
    let base = domain_base(f);
    vec![
        cmd(f, Request::RegSba { sba: DevAddr(base) }),
        cmd(
            f,
            Request::RegIeq {
                ieq: DevAddr(base + 0x1000),
                len: 512,
            },
        ),
        cmd(f, Request::ReadGid),
        cmd(f, Request::AddVlanId { vlan_id: 0x1FFF }),
        cmd(f, Request::QueryInfo),
    ]
}

fn reg(f: usize, off: u64, len: u32, idx: u32, writer: usize) -> Op {
    cmd(
        f,
        Request::RegDmb {
            dmb: DevAddr(domain_base(f) + off),
            len,
            sba_idx: idx,
            vlan: None,
            rgid: gid(writer),
        },
    )
}

fn mv(f: usize, k: u8, offset: u32, signal: bool, len: usize) -> Op {
    Op::Move {
        f,
        target: MoveTarget::Seen {
            k,
            offset,
            signal,
            dmbe: 0,
        },
        len,
        fill: 0x40,
    }
}

/// Runs `ops` on `h` (so every seed is checked by the harness too) and encodes them.
fn run(h: &mut Harness, ops: &[Op], out: &mut Vec<u8>) {
    for op in ops {
        h.run(op);
        encode_command(op, out);
    }
}

fn commands(dir: &Path) {
    let mut h = Harness::new(false);
    let mut bytes = vec![0u8];
    let mut session = probe(0);
    session.extend(probe(1));
    session.extend([
        reg(0, 0x2000, 0x1000, 32, 1),
        reg(1, 0x2000, 0x2000, 33, 0),
        cmd(
            0,
            Request::QueryRgid {
                rgid: gid(1),
                vlan: None,
            },
        ),
        mv(1, 0, 0, false, 4000),
        mv(1, 0, 4000, true, 96),
        mv(0, 1, 32, true, 4096),
        cmd(
            0,
            Request::SignalIeq {
                rgid: gid(1),
                trigger_irq: true,
                code: 0x80,
                info: 7,
            },
        ),
    ]);
    run(&mut h, &session, &mut bytes);
    write(dir, "lpar-session", &bytes);

    // Then: fn 1 crashes and restarts, fn 0 unregisters its DMB, SBA and IEQ.
    let token = h.seen[0];
    let teardown = [
        Op::Down { f: 1, crash: true },
        Op::Up { f: 1 },
        cmd(0, Request::UnregDmb { token }),
        cmd(0, Request::UnregSba),
        cmd(0, Request::UnregIeq),
    ];
    run(&mut h, &teardown, &mut bytes);
    assert_eq!(h.dev.dmbs_in_use(), 0);
    write(dir, "lpar-crash", &bytes);

    // Shared memory: fn 1 registers a DMB for fn 2, which attaches it and moves into it;
    // fn 1 unregisters (deferred until the detach), fn 2 detaches.
    let mut h = Harness::new(true);
    let mut shared = vec![1u8];
    let mut ops = probe(1);
    ops.extend([
        cmd(
            2,
            Request::RegSba {
                sba: DevAddr(domain_base(1) + 0x3000),
            },
        ),
        cmd(
            2,
            Request::RegIeq {
                ieq: DevAddr(domain_base(1) + 0x4000),
                len: 512,
            },
        ),
        reg(1, 0x5000, 0x2000, 32, 2),
    ]);
    run(&mut h, &ops, &mut shared);
    let token = h.seen[0];
    let ops = [
        cmd(2, Request::AttachDmb { token }),
        mv(2, 0, 0, true, 512),
        cmd(1, Request::UnregDmb { token }),
        cmd(2, Request::DetachDmb { token }),
    ];
    run(&mut h, &ops, &mut shared);
    assert_eq!(h.dev.dmbs_in_use(), 0);
    write(dir, "loopback-session", &shared);
}

fn moves(dir: &Path) {
    let mut b = Vec::new();
    encode_move_record(1, 0, 0, false, 4096, 1, &mut b);
    encode_move_record(1, 0, 100, true, 32, 2, &mut b);
    encode_move_record(2, 1, 0, true, 100, 3, &mut b);
    encode_move_record(0, 2, 0x1000, true, 4096, 4, &mut b);
    encode_move_record(2, 4, 0, true, 16, 5, &mut b);
    write(dir, "valid-moves", &b);
    let mut r = Vec::new();
    encode_move_record(1, 3, 0, true, 64, 6, &mut r); // VLAN refused
    encode_move_record(0, 0, 0, true, 64, 7, &mut r); // wrong writer
    encode_move_record(1, 0, 4000, true, 200, 8, &mut r); // out of range
    write(dir, "refused-moves", &r);
}

fn clc(dir: &Path) {
    let v1 = Proposal {
        version: 1,
        typev1: SmcType::D,
        typev2: SmcType::R,
        smcr: SmcrLocal::default(),
        ism_gid: 0x4953_4D00_0000_0001,
        ism_chid: 0x0D10,
        prefix: Some(IpPrefix {
            outgoing_subnet: 0x7F00_0000,
            prefix_len: 8,
            ipv6: vec![],
        }),
        v2: None,
    };
    let v2 = Proposal {
        version: 2,
        typev2: SmcType::D,
        v2: Some(ProposalV2 {
            release: 1,
            seid: true,
            eids: vec![],
            roce_gid: [0; 16],
            max_conns: 255,
            max_links: 0,
            feature_mask: 0,
            smcd: Some(SmcdV2Ext {
                system_eid: [0; 32],
                devices: vec![SmcdDevice {
                    gid: 0x4C4F_4F50_4241_434B,
                    gid_ext: 0,
                    chid: 0xFFFF,
                }],
            }),
        }),
        ..v1.clone()
    };
    let accept = AcceptConfirm {
        first_contact: true,
        gid: 0x4953_4D00_0001_0001,
        token: 0x1234_5678_0000_0000,
        dmbe_idx: 0,
        dmbe_size: 6,
        link_id: 0x0102_0304,
        v2: None,
    };
    let msgs = [
        ("proposal-v1", ClcMessage::Proposal(v1)),
        ("proposal-v2", ClcMessage::Proposal(v2)),
        ("accept-v1", ClcMessage::Accept(accept)),
        (
            "confirm-v1",
            ClcMessage::Confirm(AcceptConfirm {
                first_contact: false,
                ..accept
            }),
        ),
        (
            "decline-v2",
            ClcMessage::Decline(Decline::linux(DeclineReason::MAX_DMB, 2)),
        ),
    ];
    for (name, m) in msgs {
        let bytes = m.emit();
        assert_eq!(ClcMessage::parse(&bytes), Ok(m), "{name} round-trips");
        write(dir, name, &bytes);
    }
}

fn cdc_receive(dir: &Path) {
    for (name, size, cons, prod, msg) in [
        (
            "steady",
            65_504u32,
            100_000u64,
            50_000u64,
            CdcMessage {
                prod: Cursor::new(1, 40_000),
                cons: Cursor::new(0, 50_000),
                ..CdcMessage::default()
            },
        ),
        (
            "closing",
            16_352,
            16_352 * 3,
            16_352 * 2 + 5,
            CdcMessage {
                prod: Cursor::new(3, 0),
                cons: Cursor::new(2, 5),
                prod_flags: ProdFlags::WRITE_BLOCKED,
                conn_state: ConnStateFlags::PEER_DONE_WRITING,
            },
        ),
    ] {
        let mut b = Vec::new();
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(&cons.to_be_bytes());
        b.extend_from_slice(&prod.to_be_bytes());
        b.extend_from_slice(&cons.to_be_bytes());
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(&msg.prod.to_bytes());
        b.extend_from_slice(&msg.cons.to_bytes());
        b.extend_from_slice(&msg.emit());
        write(dir, name, &b);
    }
}

/// `conn` seeds (format in `fuzz/src/conn.rs`): header, then operations.
fn conn(dir: &Path) {
    // Ring lengths: 0x0FFF & v, plus 1 (small), or 16 KiB << (v & 3) when v >> 14 == 3.
    let header = |ours: u16, peers: u16, sndbuf: u16, nocopy: bool| {
        let mut b = Vec::new();
        b.extend_from_slice(&ours.to_be_bytes());
        b.extend_from_slice(&peers.to_be_bytes());
        b.extend_from_slice(&sndbuf.to_be_bytes());
        b.push(u8::from(nocopy));
        b
    };
    let honest = |ahead: u32, back: u32, flags: u8| {
        let mut b = vec![0u8, 0];
        b.extend_from_slice(&ahead.to_be_bytes());
        b.extend_from_slice(&back.to_be_bytes());
        b.push(flags);
        b
    };
    let read = |n: u16| [&[2u8][..], &n.to_be_bytes()].concat();
    let wr = |n: u16| [&[4u8][..], &n.to_be_bytes()].concat();
    for (name, nocopy) in [("steady-copy", false), ("steady-nocopy", true)] {
        // Small rings (100 and 60 bytes) that wrap within a few operations.
        let mut b = header(99, 59, 40, nocopy);
        for _ in 0..6 {
            b.extend(wr(50));
            b.extend(honest(70, 10, 0));
            b.extend(read(33));
            b.extend(read(80));
        }
        b.extend([7, 2]); // close
        write(dir, name, &b);
    }
    // A forged CDC: cursors far outside both rings, every flag.
    let mut b = header(0xC000, 0xC001, 4000, false);
    b.extend([1u8, 1]);
    b.extend(0xFFFFu16.to_be_bytes());
    b.extend(0xFFFF_FFF0u32.to_be_bytes());
    b.extend(7u16.to_be_bytes());
    b.extend(3u32.to_be_bytes());
    b.extend([0xFF, 0xFF]);
    b.extend(read(1000));
    b.extend(wr(40_000));
    b.extend([6u8, 1]); // refuse moves
    b.extend(wr(10));
    write(dir, "forged", &b);
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    conn(&root.join("conn"));
    commands(&root.join("commands"));
    moves(&root.join("moves"));
    clc(&root.join("clc"));
    cdc_receive(&root.join("cdc_receive"));
    println!("seed corpus written under {}", root.display());
}
