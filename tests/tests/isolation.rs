//! Isolation between partitions: whatever a partition posts to its own function (raw
//! commands through its `SimPort`, raw store-blocks with crafted request words), it cannot
//! write a DMB registered for another writer, use a forged, stale or unregistered token,
//! write past a DMB's end, or make the device read or write outside its own memory domain.
//! Each refusal is checked for its typed code, and after each attack every partition's
//! memory is checked byte-identical (whole-domain hashes before and after).

use ism_firmware::command::Request;
use ism_firmware::{MoveError, ReturnCode};
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, DmbToken, Gid};
use ism_host_driver::ism::{Bus, BusError, HostMemory, IsmError, RecordingClient};
use ism_sim::board::SimPort;
use ism_sim::{BoardConfig, BoardKind, SimBoard, SimDriver};
use ism_tests::util::{hash_domain, Rng};
use std::sync::Arc;

/// Memory per partition: small, so whole-domain hashes stay cheap.
const MEM: u64 = 2 << 20;

struct Rig {
    board: SimBoard,
    /// Drivers of partitions 0 and 1; partition 2 stays unprobed (raw attacker).
    d: Vec<Arc<SimDriver>>,
}

fn rig() -> Rig {
    let cfg = BoardConfig {
        partition_memory: MEM as usize,
        ..BoardConfig::default()
    };
    let board = SimBoard::build(BoardKind::Lpar, 3, cfg);
    let d: Vec<Arc<SimDriver>> = (0..2)
        .map(|i| board.partition(i).probe(board.chid()).unwrap())
        .collect();
    for x in &d {
        x.add_client(Arc::new(RecordingClient::default())).unwrap();
    }
    Rig { board, d }
}

impl Rig {
    fn hashes(&self) -> Vec<u64> {
        self.board
            .partitions()
            .iter()
            .map(|p| hash_domain(p.host_memory().memory()))
            .collect()
    }

    fn port(&self, i: usize) -> &SimPort {
        self.board.partition(i).port()
    }

    fn base(&self, i: usize) -> u64 {
        self.board.partition(i).host_memory().memory().base().0
    }

    fn gid(&self, i: usize) -> Gid {
        self.board.partition(i).gid()
    }

    /// A raw command of partition `f`: its `ret` and response.
    fn raw(&self, f: usize, req: Request) -> (u16, [u8; COMMAND_AREA_SIZE]) {
        let mut buf = [0u8; 64];
        let n = req.emit(&mut buf).unwrap();
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.port(f).command(&buf[..n], &mut resp).unwrap();
        (u16::from_be_bytes([resp[4], resp[5]]), resp)
    }

    /// A command attack: must be refused with `want`, and change no memory anywhere.
    fn attack(&self, f: usize, req: Request, want: ReturnCode) {
        let before = self.hashes();
        let (ret, _) = self.raw(f, req);
        assert_eq!(ret, want.raw(), "{req:?} from partition {f}: want {want}");
        assert_eq!(self.hashes(), before, "memory changed after {req:?}");
    }

    /// A raw store-block attack: must be refused with `want`, and change no memory.
    fn store_attack(&self, f: usize, word: u64, data: &[u8], want: MoveError) {
        let before = self.hashes();
        let r = self.port(f).store_block(word, data);
        assert_eq!(
            r,
            Err(BusError::StoreRefused(want as u8)),
            "store {word:#018x} ({} bytes) from {f}",
            data.len()
        );
        assert_eq!(
            self.hashes(),
            before,
            "memory changed after store {word:#018x}"
        );
    }

    /// QUERY_INFO of `f`: (sba, ieq, dmbs_owned).
    fn info(&self, f: usize) -> (u64, u64, u32) {
        let (ret, r) = self.raw(f, Request::QueryInfo);
        assert_eq!(ret, 0);
        let u64_at = |o: usize| u64::from_be_bytes(r[o..o + 8].try_into().unwrap());
        (
            u64_at(32),
            u64_at(40),
            u32::from_be_bytes(r[56..60].try_into().unwrap()),
        )
    }
}

fn word(token: DmbToken, signal: bool, offset: u64) -> u64 {
    token.0 | (u64::from(signal) << 23) | offset
}

#[test]
fn a_partition_cannot_write_a_dmb_registered_for_another_rgid() {
    let r = rig();
    let dmb = r.d[0].register_dmb(16 << 10, r.gid(1), None, 0).unwrap();
    for f in [0, 2] {
        for sf in [false, true] {
            r.store_attack(
                f,
                word(dmb.token, sf, 0),
                b"intruder",
                MoveError::AccessDenied,
            );
            r.store_attack(
                f,
                word(dmb.token, sf, 8000),
                &[0xFF; 4096],
                MoveError::AccessDenied,
            );
        }
    }
    // The driver reports it typed.
    let e = r.d[0]
        .move_data(dmb.token, 0, true, 0, b"self")
        .unwrap_err();
    assert_eq!(e, IsmError::Move(MoveError::AccessDenied));
    // VLAN-tagged DMB: the rgid must also be in the VLAN.
    let tagged = r.d[0].register_dmb(4096, r.gid(1), Some(9), 0).unwrap();
    r.store_attack(
        1,
        word(tagged.token, true, 0),
        b"no vlan",
        MoveError::AccessDenied,
    );
    r.d[1].add_vlan_id(9).unwrap();
    r.store_attack(
        2,
        word(tagged.token, true, 0),
        b"wrong gid",
        MoveError::AccessDenied,
    );
    r.port(1)
        .store_block(word(tagged.token, false, 0), b"in vlan")
        .unwrap();
    // Positive control: the authorized writer writes, and only partition 0 changes.
    let before = r.hashes();
    r.port(1)
        .store_block(word(dmb.token, false, 0), b"allowed")
        .unwrap();
    let after = r.hashes();
    assert_ne!(before[0], after[0]);
    assert_eq!(before[1..], after[1..]);
    let mut got = [0u8; 7];
    r.d[0].memory().read(dmb.addr, &mut got).unwrap();
    assert_eq!(&got, b"allowed");
}

#[test]
fn forged_random_and_stale_tokens_are_refused() {
    let r = rig();
    let dmb = r.d[0].register_dmb(16 << 10, r.gid(1), None, 0).unwrap();
    let t = dmb.token;
    // The authorized writer itself, with every high-half bit of the token flipped.
    for bit in 32..64 {
        let forged = DmbToken(t.0 ^ (1 << bit));
        r.store_attack(1, word(forged, true, 0), b"forged", MoveError::InvalidToken);
        r.attack(
            0,
            Request::UnregDmb { token: forged },
            ReturnCode::InvalidToken,
        );
    }
    // Low-half bits are the request word's offset/flags for moves; UNREG_DMB refuses them.
    for bit in 0..32 {
        r.attack(
            0,
            Request::UnregDmb {
                token: DmbToken(t.0 ^ (1 << bit)),
            },
            ReturnCode::InvalidToken,
        );
    }
    // Random tokens (checked in batches: a write would stay visible in the hash).
    let mut rng = Rng::new(0x0007_0CE2);
    for _batch in 0..4 {
        let before = r.hashes();
        for _ in 0..500 {
            let forged = DmbToken(rng.next_u64() & !0xFFFF_FFFF);
            if forged == t {
                continue;
            }
            let off = rng.range(0, 16 << 10);
            for f in [1, 2] {
                assert_eq!(
                    r.port(f)
                        .store_block(word(forged, true, off & 0x3FFF), b"random"),
                    Err(BusError::StoreRefused(MoveError::InvalidToken as u8))
                );
            }
        }
        assert_eq!(r.hashes(), before);
    }
    // Only the owner may unregister.
    r.attack(1, Request::UnregDmb { token: t }, ReturnCode::InvalidToken);
    r.attack(2, Request::UnregDmb { token: t }, ReturnCode::InvalidToken);
    // Unregistered: the token is dead, and stays dead when its slot and SBA index are reused.
    r.d[0].unregister_dmb(&dmb).unwrap();
    r.store_attack(1, word(t, true, 0), b"stale", MoveError::InvalidToken);
    r.attack(0, Request::UnregDmb { token: t }, ReturnCode::InvalidToken);
    let again = r.d[0].register_dmb(16 << 10, r.gid(1), None, 0).unwrap();
    assert_eq!(again.sba_idx, dmb.sba_idx);
    assert_ne!(again.token, t);
    r.store_attack(1, word(t, true, 0), b"stale", MoveError::InvalidToken);
    r.port(1)
        .store_block(word(again.token, false, 0), b"fresh")
        .unwrap();
}

#[test]
fn a_writer_cannot_write_past_a_dmb_end() {
    let r = rig();
    const LEN: u64 = 10_000; // the allocation is 12 KiB: 2288 bytes of slack after the DMB
    let dmb = r.d[0]
        .register_dmb(LEN as usize, r.gid(1), None, 0)
        .unwrap();
    let t = dmb.token;
    let cases: [(u64, usize); 8] = [
        (LEN - 1, 2),
        (LEN, 1),
        (LEN - 4095, 4096),
        (12 * 1024 - 1, 1),
        (16 * 1024, 4096),
        ((1 << 23) - 1, 1),
        ((1 << 23) - 4096, 4096),
        ((1 << 22) + 3, 100),
    ];
    for (off, n) in cases {
        for sf in [false, true] {
            r.store_attack(1, word(t, sf, off), &vec![0xEE; n], MoveError::OutOfRange);
        }
    }
    let mut rng = Rng::new(0xE11D);
    for _ in 0..40 {
        let n = rng.range(1, 4096) as usize;
        let off = rng.range(LEN - n as u64 + 1, (1 << 23) - 1);
        r.store_attack(1, word(t, true, off), &vec![0xEE; n], MoveError::OutOfRange);
    }
    r.store_attack(1, word(t, true, 0), &[0xEE; 4097], MoveError::TooLong);
    // Through the driver: a multi-chunk move that crosses the end fails on the last chunk;
    // the chunks before it land inside the DMB, nothing lands after it.
    let e = r.d[1]
        .move_data(t, 0, true, 4000, &[0x77; 6001])
        .unwrap_err();
    assert_eq!(e, IsmError::Move(MoveError::OutOfRange));
    let mut slack = vec![0u8; 12 * 1024 - LEN as usize];
    r.d[0]
        .memory()
        .read(DevAddr(dmb.addr.0 + LEN), &mut slack)
        .unwrap();
    assert!(
        slack.iter().all(|&b| b == 0),
        "nothing written past the DMB"
    );
    // Positive control: the last byte is writable.
    r.port(1)
        .store_block(word(t, false, LEN - 1), &[1])
        .unwrap();
}

#[test]
fn commands_cannot_make_the_device_touch_another_domain() {
    let r = rig();
    let (b0, b1, own) = (r.base(0), r.base(1), r.base(2));
    assert_eq!(r.info(2), (0, 0, 0));
    // Addresses outside partition 2's domain, at its edges, overflowing, misaligned.
    let outside: Vec<(u64, &str)> = vec![
        (b0, "partition 0's base"),
        (b0 + 0x10_0000, "inside partition 0"),
        (b1 + MEM - 4096, "partition 1's last page"),
        (own - 4096, "the page below the domain"),
        (own - 8, "straddling the domain's start"),
        (own + MEM, "just past the domain"),
        (u64::MAX - 7, "the top of the address space"),
        (u64::MAX, "u64::MAX"),
        (0, "address 0"),
    ];
    for &(a, why) in &outside {
        let _ = why;
        r.attack(
            2,
            Request::RegSba { sba: DevAddr(a) },
            ReturnCode::InvalidAddress,
        );
        r.attack(
            2,
            Request::RegIeq {
                ieq: DevAddr(a),
                len: 512,
            },
            ReturnCode::InvalidAddress,
        );
        for len in [1, 4096, 1 << 20] {
            let req = Request::RegDmb {
                dmb: DevAddr(a),
                len,
                sba_idx: 40,
                vlan: None,
                rgid: r.gid(1),
            };
            r.attack(2, req, ReturnCode::InvalidAddress);
        }
    }
    // Straddling the domain's end by 8 bytes.
    r.attack(
        2,
        Request::RegSba {
            sba: DevAddr(own + MEM - 4096 + 8),
        },
        ReturnCode::InvalidAddress,
    );
    r.attack(
        2,
        Request::RegIeq {
            ieq: DevAddr(own + MEM - 512 + 8),
            len: 512,
        },
        ReturnCode::InvalidAddress,
    );
    // Misaligned (the SBA and IEQ are read and written with 8-byte atomics).
    for a in [own + 4, own + 1, own + 4095] {
        r.attack(
            2,
            Request::RegSba { sba: DevAddr(a) },
            ReturnCode::InvalidAddress,
        );
        r.attack(
            2,
            Request::RegIeq {
                ieq: DevAddr(a),
                len: 512,
            },
            ReturnCode::InvalidAddress,
        );
    }
    r.attack(
        2,
        Request::RegIeq {
            ieq: DevAddr(own + MEM - 256),
            len: 512,
        },
        ReturnCode::InvalidAddress,
    );
    for len in [0, 8, 33, 8192, u64::MAX] {
        r.attack(
            2,
            Request::RegIeq {
                ieq: DevAddr(own),
                len,
            },
            ReturnCode::InvalidLength,
        );
    }
    let dmb = |dmb: u64, len: u32, sba_idx: u32| Request::RegDmb {
        dmb: DevAddr(dmb),
        len,
        sba_idx,
        vlan: None,
        rgid: r.gid(1),
    };
    r.attack(2, dmb(own + MEM - 1, 2, 40), ReturnCode::InvalidAddress);
    r.attack(2, dmb(u64::MAX - 10, 4096, 40), ReturnCode::InvalidAddress);
    r.attack(2, dmb(own, 0, 40), ReturnCode::InvalidLength);
    r.attack(2, dmb(own, (1 << 20) + 1, 40), ReturnCode::InvalidLength);
    r.attack(2, dmb(own, 4096, 31), ReturnCode::InvalidSbaIndex);
    r.attack(2, dmb(own, 4096, 1920), ReturnCode::InvalidSbaIndex);
    // Partition 0 (probed) cannot register partition 1's memory either.
    r.attack(0, dmb(b1 + 4096, 4096, 100), ReturnCode::InvalidAddress);
    // Nothing was registered by any of it.
    assert_eq!(r.info(2), (0, 0, 0));
    assert_eq!(r.board.device().dmbs_in_use(), 0);
    // The edges are exact: the last page / bytes of the own domain are accepted, one at a
    // time (status areas and DMBs may not overlap each other).
    let sba = Request::RegSba {
        sba: DevAddr(own + MEM - 4096),
    };
    assert_eq!(r.raw(2, sba).0, 0);
    assert_eq!(r.info(2), (own + MEM - 4096, 0, 0));
    assert_eq!(r.raw(2, Request::UnregSba).0, 0);
    let ieq = Request::RegIeq {
        ieq: DevAddr(own + MEM - 512),
        len: 512,
    };
    assert_eq!(r.raw(2, ieq).0, 0);
    assert_eq!(r.info(2), (0, own + MEM - 512, 0));
    assert_eq!(r.raw(2, Request::UnregIeq).0, 0);
    let (ret, resp) = r.raw(2, dmb(own + MEM - 1, 1, 1919));
    assert_eq!(ret, 0);
    let tok = DmbToken(u64::from_be_bytes(resp[8..16].try_into().unwrap()));
    assert_eq!(r.info(2), (0, 0, 1));
    r.port(1).store_block(word(tok, false, 0), &[0xAB]).unwrap();
    let mut last = [0u8; 1];
    r.board
        .partition(2)
        .host_memory()
        .memory()
        .read(DevAddr(own + MEM - 1), &mut last)
        .unwrap();
    assert_eq!(last, [0xAB]);
    r.store_attack(1, word(tok, false, 1), &[0xAB], MoveError::OutOfRange);
}

#[test]
fn the_device_never_writes_unregistered_sba_ieq_or_dmb_memory() {
    let r = rig();
    let owner = &r.d[0];
    let mem = r.board.partition(0).host_memory().memory();
    let dmb = owner.register_dmb(8192, r.gid(1), None, 0).unwrap();
    owner.unregister_dmb(&dmb).unwrap();
    // The freed DMB memory now holds something else of partition 0's.
    mem.write(dmb.addr, &[0x5A; 8192]).unwrap();
    r.store_attack(
        1,
        word(dmb.token, true, 0),
        b"after unreg",
        MoveError::InvalidToken,
    );
    // Remove the driver (UNREG_IEQ, UNREG_SBA); the pages get reused with a pattern.
    let (sba, ieq, _) = r.info(0);
    // A DMB buffer for later, allocated while the SBA and IEQ pages are still in use.
    let buf = r
        .board
        .partition(0)
        .host_memory()
        .dma_alloc(4096, 4096)
        .unwrap();
    owner.remove();
    assert_eq!(r.info(0), (0, 0, 0));
    mem.write(DevAddr(sba), &[0xA5; 4096]).unwrap();
    mem.write(DevAddr(ieq), &[0xA5; 4096]).unwrap();
    let before = r.hashes();
    // SIGNAL_IEQ to a function without an IEQ is refused and writes nothing.
    let (ret, _) = r.raw(
        1,
        Request::SignalIeq {
            rgid: r.gid(0),
            trigger_irq: true,
            code: 0x80,
            info: 1,
        },
    );
    assert_eq!(ret, ReturnCode::RemoteNoEventQueue.raw());
    assert_eq!(r.hashes(), before);
    // A signalled move into a DMB registered without an SBA writes the data only.
    let (ret, resp) = r.raw(
        0,
        Request::RegDmb {
            dmb: buf,
            len: 4096,
            sba_idx: 32,
            vlan: None,
            rgid: r.gid(1),
        },
    );
    assert_eq!(ret, 0);
    let tok = DmbToken(u64::from_be_bytes(resp[8..16].try_into().unwrap()));
    r.port(1)
        .store_block(word(tok, true, 0), b"data only")
        .unwrap();
    let mut page = vec![0u8; 4096];
    for at in [sba, ieq] {
        mem.read(DevAddr(at), &mut page).unwrap();
        assert!(
            page.iter().all(|&b| b == 0xA5),
            "old SBA/IEQ page untouched at {at:#x}"
        );
    }
    // A crash of partition 1 posts no event into partition 0's old IEQ.
    let before = r.hashes();
    r.board.crash(1);
    assert_eq!(r.hashes()[0], before[0]);
}
