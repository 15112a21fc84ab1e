//! Criterion benches of the firmware's hot paths: store-block moves (with and without the
//! signal), signal plus the host's interrupt scan, command dispatch, and DMB token lookup.
//!
//! Most run on [`FastBoard`], a board written here whose memory is one flat allocation
//! accessed like the simulator's (`memcpy` for bulk copies, native atomics for the SBA),
//! because `hal::fakes::FakeMemory` takes a spin lock on every access (two for a checked
//! one) and would measure its lock rather than the firmware. One group repeats the 4 KiB
//! move on the fakes for comparison.
//!
//! Run: `cargo bench -p ism-firmware --bench device`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zerocopy::FromBytes;

use ism_firmware::command::Request;
use ism_firmware::dmb::DmbTable;
use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::wire::reg_dmb::RegDmbResponse;
use ism_firmware::wire::sba::{self, SbaFlags, FIRST_DMB_INDEX, NR_DMBS};
use ism_firmware::{Device, FunctionConfig};
use ism_hal::fakes::FakeBoard;
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{
    Board, Clock, DevAddr, DmaMemory, DmbToken, DomainId, FunctionId, Gid, InterruptLine, MemError,
};

// ----------------------------------------------------------------------------- board

/// One domain: a flat, 8-aligned allocation. Bulk copies are `memcpy`s, SBA bytes and
/// doublewords native atomics, as on the simulator's board.
struct FastMemory {
    base: u64,
    words: Box<[AtomicU64]>,
}

impl FastMemory {
    fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            words: (0..size.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.words.len() * 8
    }

    fn offset(&self, addr: DevAddr, len: usize) -> Result<usize, MemError> {
        if self.contains(addr, len as u64) {
            Ok((addr.0 - self.base) as usize)
        } else {
            Err(MemError::OutOfBounds)
        }
    }

    fn ptr(&self) -> *mut u8 {
        // AtomicU64 is an UnsafeCell: writing through a pointer derived from a shared
        // reference to it is allowed.
        self.words.as_ptr() as *mut u8
    }

    fn byte(&self, addr: DevAddr) -> Result<&AtomicU8, MemError> {
        let off = self.offset(addr, 1)?;
        // SAFETY: `off < len`, inside the allocation, which lives as long as `&self`;
        // AtomicU8 has alignment 1.
        Ok(unsafe { AtomicU8::from_ptr(self.ptr().add(off)) })
    }

    fn word(&self, addr: DevAddr) -> Result<&AtomicU64, MemError> {
        if !addr.0.is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        let off = self.offset(addr, 8)?;
        Ok(&self.words[off / 8])
    }
}

impl DmaMemory for FastMemory {
    fn base(&self) -> DevAddr {
        DevAddr(self.base)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(addr, buf.len())?;
        // SAFETY: `[off, off + len)` is inside the allocation (checked); `buf` is another
        // allocation. The benches are single-threaded, so nothing races the copy.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr().add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(addr, data.len())?;
        // SAFETY: as in `read`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().add(off), data.len()) };
        Ok(())
    }
    fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
        let off = self.offset(addr, len as usize)?;
        // SAFETY: `[off, off + len)` is inside the allocation (checked).
        unsafe { std::ptr::write_bytes(self.ptr().add(off), 0, len as usize) };
        Ok(())
    }
    fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
        Ok(self.word(addr)?.load(Ordering::Acquire).to_ne_bytes())
    }
    fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
        self.word(addr)?
            .store(u64::from_ne_bytes(bytes), Ordering::Release);
        Ok(())
    }
    fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        Ok(self.byte(addr)?.fetch_or(mask, Ordering::AcqRel))
    }
    fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
        Ok(self.byte(addr)?.fetch_and(mask, Ordering::AcqRel))
    }
    fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
        Ok(self.byte(addr)?.swap(value, Ordering::AcqRel))
    }
    fn fetch_or_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        let w = self.word(addr)?;
        Ok(w.fetch_or(u64::from_ne_bytes(mask), Ordering::AcqRel)
            .to_ne_bytes())
    }
    fn fetch_and_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
        let w = self.word(addr)?;
        Ok(w.fetch_and(u64::from_ne_bytes(mask), Ordering::AcqRel)
            .to_ne_bytes())
    }
}

/// An interrupt line that only counts.
#[derive(Default)]
struct CountingIrq(AtomicU32);

impl InterruptLine for CountingIrq {
    fn raise(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A clock that reads a counter.
#[derive(Default)]
struct TickClock(AtomicU64);

impl Clock for TickClock {
    fn now(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Two LPAR-like domains and two functions.
struct FastBoard {
    memories: Vec<FastMemory>,
    irqs: Vec<CountingIrq>,
    clock: TickClock,
}

impl Board for FastBoard {
    type Memory = FastMemory;
    type Irq = CountingIrq;
    type Clock = TickClock;
    fn memory(&self, d: DomainId) -> Option<&FastMemory> {
        self.memories.get(d.0 as usize)
    }
    fn irq(&self, f: FunctionId) -> Option<&CountingIrq> {
        self.irqs.get(f.index())
    }
    fn clock(&self) -> &TickClock {
        &self.clock
    }
    fn may_map(&self, _: DomainId, _: DomainId) -> bool {
        false
    }
}

// ----------------------------------------------------------------------------- setup

const DOMAIN: usize = 1 << 20;
const SBA_OFF: u64 = 0;
const IEQ_OFF: u64 = 0x1000;
const DMB_OFF: u64 = 0x10000;
const DMB_LEN: u32 = 64 << 10;
const DMB_IDX: u32 = 100;

fn base(d: u16) -> u64 {
    (u64::from(d) + 1) << 32
}

fn gid(f: u16) -> Gid {
    Gid(0x4953_4D00_0000_0001 + (u64::from(f) << 16))
}

/// A device on `board` whose function 0 registered SBA, IEQ and a 64 KiB DMB (SBA index
/// 100) that function 1 may write; returns it with the DMB's token.
fn setup<B: Board>(board: B) -> (Device<B, 2, 64>, DmbToken) {
    let cfgs = [0u16, 1].map(|f| FunctionConfig {
        gid: gid(f),
        domain: DomainId(f),
    });
    let dev = Device::new(board, 0x0D10, &cfgs, 0x1234_5678).expect("device");
    let b0 = base(0);
    for req in [
        Request::RegSba {
            sba: DevAddr(b0 + SBA_OFF),
        },
        Request::RegIeq {
            ieq: DevAddr(b0 + IEQ_OFF),
            len: 512,
        },
    ] {
        assert_eq!(cmd(&dev, 0, req).1, 0, "{req:?}");
    }
    let (resp, ret) = cmd(
        &dev,
        0,
        Request::RegDmb {
            dmb: DevAddr(b0 + DMB_OFF),
            len: DMB_LEN,
            sba_idx: DMB_IDX,
            vlan: None,
            rgid: gid(1),
        },
    );
    assert_eq!(ret, 0, "REG_DMB");
    let token = RegDmbResponse::read_from_prefix(&resp[..])
        .expect("response")
        .0
        .dmb_tok
        .get();
    (dev, DmbToken(token))
}

/// Executes `req` as function `f`; returns the command area and `ret`.
fn cmd<B: Board>(dev: &Device<B, 2, 64>, f: u16, req: Request) -> ([u8; COMMAND_AREA_SIZE], u16) {
    let mut buf = [0u8; COMMAND_AREA_SIZE];
    let n = req.emit(&mut buf).expect("emit");
    let mut resp = [0u8; COMMAND_AREA_SIZE];
    dev.execute(FunctionId(f), &buf[..n], &mut resp);
    let ret = u16::from_be_bytes([resp[4], resp[5]]);
    (resp, ret)
}

fn fast_board() -> FastBoard {
    FastBoard {
        memories: (0..2).map(|d| FastMemory::new(base(d), DOMAIN)).collect(),
        irqs: (0..2).map(|_| CountingIrq::default()).collect(),
        clock: TickClock::default(),
    }
}

fn word(token: DmbToken, signal: bool, offset: u32) -> u64 {
    MoveRequest {
        token,
        dmbe_idx: 0,
        signal,
        offset,
    }
    .emit()
}

/// The host side of a signal, as the ISM driver's handler does it: clear the summary and
/// event bits, walk the DMB bits from index 32 (skipping zero doublewords), clear each set
/// bit and its DMBE mask. Returns the signals found.
fn host_scan<M: DmaMemory>(mem: &M, sba_base: u64) -> u32 {
    let _ = mem.fetch_and_u8(
        DevAddr(sba_base),
        !(SbaFlags::SUMMARY | SbaFlags::EVENT).bits(),
    );
    let first = sba::dmb_bit(FIRST_DMB_INDEX).0;
    let last = sba::dmb_bit(NR_DMBS - 1).0;
    let mut n = 0;
    let mut byte = first;
    while byte <= last {
        if byte.is_multiple_of(8) && byte + 8 <= last + 1 {
            let w = mem
                .load_u64(DevAddr(sba_base + byte as u64))
                .unwrap_or([0; 8]);
            if w == [0; 8] {
                byte += 8;
                continue;
            }
        }
        let bits = mem.swap_u8(DevAddr(sba_base + byte as u64), 0).unwrap_or(0);
        for bit in 0..8 {
            if bits & (0x80 >> bit) != 0 {
                let idx = (byte - sba::DMB_BITS_OFFSET) * 8 + bit;
                // Both mask bytes in one doubleword AND, as the driver's `take_mask`.
                let m = sba_base + sba::dmbe_mask_offset(idx) as u64;
                let (word_at, k) = sba::dmbe_mask_word(m).expect("an aligned SBA");
                let mut keep = [0xFF; 8];
                keep[k..k + 2].fill(0);
                let _ = mem.fetch_and_u64(DevAddr(word_at), keep);
                n += 1;
            }
        }
        byte += 1;
    }
    n
}

// ----------------------------------------------------------------------------- benches

fn store_block(c: &mut Criterion) {
    let (dev, token) = setup(fast_board());
    let from = FunctionId(1);
    let mut g = c.benchmark_group("store_block");
    for (name, len) in [("64B", 64usize), ("4KiB", 4096)] {
        let data = vec![0xA5u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        for signal in [false, true] {
            let id = format!("{name}{}", if signal { "+signal" } else { "" });
            let w = word(token, signal, 32);
            g.bench_function(id, |b| {
                b.iter(|| dev.store_block(from, black_box(w), black_box(&data)))
            });
            // Keep the SBA from saturating (bits already set are cheaper to set again).
            host_scan(dev.board().memory(DomainId(0)).expect("domain"), base(0));
        }
    }
    g.finish();

    // The same 4 KiB move on hal::fakes (a spin lock per memory access), for comparison.
    let (dev, token) = setup(FakeBoard::new(2, DOMAIN, 2));
    let data = vec![0xA5u8; 4096];
    let mut g = c.benchmark_group("store_block_on_fakes");
    g.throughput(Throughput::Bytes(4096));
    for signal in [false, true] {
        let w = word(token, signal, 32);
        let id = if signal { "4KiB+signal" } else { "4KiB" };
        g.bench_function(id, |b| {
            b.iter(|| dev.store_block(FunctionId(1), black_box(w), black_box(&data)))
        });
    }
    g.finish();
}

fn signal_and_irq(c: &mut Criterion) {
    let (dev, token) = setup(fast_board());
    let mem = dev.board().memory(DomainId(0)).expect("domain");
    let cdc = [0x11u8; 32];
    let w = word(token, true, 0);
    let mut g = c.benchmark_group("signal");
    g.bench_function("cdc32B+signal+host_scan", |b| {
        b.iter(|| {
            dev.store_block(FunctionId(1), black_box(w), black_box(&cdc))
                .expect("move");
            assert_eq!(host_scan(mem, base(0)), 1);
        })
    });
    g.bench_function("host_scan_empty_sba", |b| {
        b.iter(|| host_scan(mem, black_box(base(0))))
    });
    g.finish();
}

fn commands(c: &mut Criterion) {
    let (dev, _) = setup(fast_board());
    let mut g = c.benchmark_group("command");
    for (name, req) in [
        ("READ_GID", Request::ReadGid),
        (
            "QUERY_RGID",
            Request::QueryRgid {
                rgid: gid(1),
                vlan: None,
            },
        ),
        ("QUERY_INFO", Request::QueryInfo),
    ] {
        let mut buf = [0u8; COMMAND_AREA_SIZE];
        let n = req.emit(&mut buf).expect("emit");
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        g.bench_function(name, |b| {
            b.iter(|| dev.execute(FunctionId(0), black_box(&buf[..n]), &mut resp))
        });
    }
    g.finish();
}

fn token_lookup(c: &mut Criterion) {
    let table: DmbTable<4096> = DmbTable::new(0x1234_5678);
    let info = ism_firmware::dmb::DmbInfo {
        owner: FunctionId(0),
        addr: DevAddr(base(0) + DMB_OFF),
        len: DMB_LEN,
        sba_idx: DMB_IDX as u16,
        rgid: gid(1),
        vlan: None,
    };
    let (valid, _) = table.publish(17, &info);
    // Same slot, other generation: what a forged or stale token looks like.
    let forged = DmbToken(valid.0 ^ (0x40 << 44));
    assert!(table.lease(forged).is_none());
    let mut g = c.benchmark_group("token_lookup");
    g.bench_function("valid", |b| {
        b.iter(|| table.lease(black_box(valid)).map(|l| l.info.len))
    });
    g.bench_function("forged", |b| {
        b.iter(|| table.lease(black_box(forged)).map(|l| l.info.len))
    });
    g.finish();

    // The whole refused move: a store-block with a forged token.
    let (dev, token) = setup(fast_board());
    let w = word(DmbToken(token.0 ^ (0x40 << 44)), true, 0);
    let data = [0u8; 64];
    c.bench_function("store_block/forged_token_refused", |b| {
        b.iter(|| dev.store_block(FunctionId(1), black_box(w), &data).is_err())
    });
}

/// Criterion's macros generate undocumented public items; they live here.
mod group {
    #![allow(missing_docs)]
    use super::*;

    criterion_group! {
        name = benches;
        config = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(50);
        targets = store_block, signal_and_irq, commands, token_lookup
    }
}
criterion_main!(group::benches);
