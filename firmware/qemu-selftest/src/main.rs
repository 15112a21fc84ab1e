//! Bare-metal self-test of the ISM device firmware on QEMU's `mps2-an386` (Cortex-M4).
//!
//! Builds an [`ism_firmware::Device`] with two functions, one per memory domain, drives it
//! the way Linux's ISM driver and SMC-D would (probe, DMB registration, a signalled move,
//! refused moves, SIGNAL_IEQ, UNREG_DMB) and checks every byte the device is supposed to
//! write, and nothing else. Each step is logged with `defmt` (frames over semihosting, decoded
//! on the host by `defmt-print`); the program leaves QEMU with `EXIT_SUCCESS` only if every
//! check passed, `EXIT_FAILURE` otherwise (also on panic).
//!
//! Run it with `cargo selftest` or `scripts/qemu-selftest.sh` from the repository root, or
//! `cargo run --release` in this folder.
#![no_std]
#![no_main]

mod board;

use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use defmt::println;
// The global defmt logger: frames go to the host over semihosting.
use defmt_semihosting as _;
use zerocopy::{FromBytes, FromZeros};

use ism_firmware::command::Request;
use ism_firmware::wire::ieq::{event_code, Event, EventType, IeqHeader, LINUX_IEQ_LEN};
use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::wire::read_gid::ReadGidResponse;
use ism_firmware::wire::reg_dmb::RegDmbResponse;
use ism_firmware::wire::unreg_dmb::{UnregDmbResponse, UNREG_RELEASED};
use ism_firmware::wire::ResponseHeader;
use ism_firmware::{Device, FunctionConfig, MoveError, ReturnCode};
use ism_hal::regs::{FunctionRegisters, COMMAND_AREA_SIZE};
use ism_hal::{DevAddr, DmaMemory, DmbToken, DomainId, FunctionId, Gid};

use board::{domain_cell, Domain, DomainCell, SelfTestBoard, DOMAIN_SIZE};

/// Backing store of partition 0's memory.
static MEM0: DomainCell = domain_cell();
/// Backing store of partition 1's memory.
static MEM1: DomainCell = domain_cell();
/// Level of function 0's interrupt pin (high = pending).
static IRQ0: AtomicBool = AtomicBool::new(false);
/// Level of function 1's interrupt pin (high = pending).
static IRQ1: AtomicBool = AtomicBool::new(false);

/// Device base address of each domain: distinct, and above 4 GiB, so that any truncation of
/// a 64-bit device address to the target's 32-bit `usize` would show.
const BASES: [u64; 2] = [0x1_0000_0000, 0x2_0000_0000];
/// The GID of each function.
const GIDS: [Gid; 2] = [Gid(0x1D00_0000_0000_0A01), Gid(0x1D00_0000_0000_0B02)];
/// The device's CHID.
const CHID: u16 = 0x0123;
/// Token salt. QEMU offers no entropy source; a fixed salt keeps the run reproducible.
const TOKEN_SALT: u32 = 0x5A17_C0DE;

/// Offset of the SBA (4096 bytes) in each domain.
const SBA_OFF: u64 = 0x0000;
/// Offset of the IEQ in each domain.
const IEQ_OFF: u64 = 0x1000;
/// Offset of function 0's DMB in domain 0.
const DMB_OFF: u64 = 0x2000;
/// Length of the DMB.
const DMB_LEN: u32 = 4096;
/// SBA index of the DMB (not byte-aligned, to exercise the MSB-first bit numbering).
const SBA_IDX: u32 = 45;
/// Where in the DMB the move writes.
const MOVE_OFFSET: u32 = 64;
/// What the move writes.
const PAYLOAD: &[u8] = b"SMC-D data through the ISM firmware, bare metal on a Cortex-M4";
/// Event code and info of the SIGNAL_IEQ software event.
const SW_CODE: u32 = 0xC1;
/// Info of the SIGNAL_IEQ software event.
const SW_INFO: u64 = 0x0123_4567_89AB_CDEF;

/// The device under test: two functions, sixteen DMB slots.
type Dev = Device<SelfTestBoard, 2, 16>;

/// The command area a response lands in.
type Response = [u8; COMMAND_AREA_SIZE];

/// Return code meaning "no response" (Linux's `ISM_ERROR`), used when a request does not fit.
const NO_RESPONSE: u16 = 0xFFFF;

/// Runs the self-test and leaves QEMU with its verdict.
#[entry]
fn main() -> ! {
    println!("ism-qemu-selftest: ISM firmware on mps2-an386 (Cortex-M4)");
    let status = match SelfTest::new() {
        Some(mut t) => {
            t.run();
            t.summary()
        }
        None => {
            println!("FAIL: Device::new refused the board's configuration");
            false
        }
    };
    debug::exit(if status {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached if semihosting is off (no debugger to report to).
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Prints the panic and leaves QEMU with `EXIT_FAILURE`.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Formatted on the target (a panic message is not known at compile time).
    println!("PANIC: {}", defmt::Display2Format(info));
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The device, the host's view of both domains, and the tally of checks.
struct SelfTest {
    dev: Dev,
    host: [Domain; 2],
    passed: u32,
    failed: u32,
}

impl SelfTest {
    /// Builds the board and the device.
    fn new() -> Option<Self> {
        let host = [Domain::new(BASES[0], &MEM0), Domain::new(BASES[1], &MEM1)];
        let board = SelfTestBoard::new(host, [&IRQ0, &IRQ1]);
        let cfg = [0, 1].map(|i| FunctionConfig {
            gid: GIDS[i],
            domain: DomainId(i as u16),
        });
        let dev = Dev::new(board, CHID, &cfg, TOKEN_SALT).ok()?;
        Some(Self {
            dev,
            host,
            passed: 0,
            failed: 0,
        })
    }

    // ------------------------------------------------------------------ helpers

    /// Records one check.
    fn check(&mut self, what: impl defmt::Format, ok: bool) {
        if ok {
            self.passed += 1;
            println!("    ok   {}", what);
        } else {
            self.failed += 1;
            println!("    FAIL {}", what);
        }
    }

    /// Records that a command returned `want`.
    fn check_ret(&mut self, what: impl defmt::Format, ret: u16, want: u16) {
        if ret == want {
            self.check(what, true);
        } else {
            self.failed += 1;
            println!(
                "    FAIL {}: ret {=u16:#06x}, expected {=u16:#06x}",
                what,
                ret,
                want
            );
        }
    }

    /// Records that a move had the expected outcome.
    fn check_move(
        &mut self,
        what: impl defmt::Format,
        got: Result<(), MoveError>,
        want: Result<(), MoveError>,
    ) {
        if got == want {
            self.check(what, true);
        } else {
            self.failed += 1;
            println!("    FAIL {}: got {}, expected {}", what, got, want);
        }
    }

    /// Executes `req` on function `f` through [`Device::execute`]; returns `ret`.
    fn command(&self, f: usize, req: Request, resp: &mut Response) -> u16 {
        let mut buf = [0u8; COMMAND_AREA_SIZE];
        let Some(n) = req.emit(&mut buf) else {
            return NO_RESPONSE;
        };
        self.dev.execute(FunctionId(f as u16), &buf[..n], resp);
        ret_of(resp)
    }

    /// Executes `req` on function `f` the way a host does on the real device: request into
    /// the function's register block (body, then header as doorbell), [`Device::doorbell`],
    /// response read back from the same registers. Returns `ret`.
    fn command_via_registers(&self, f: usize, req: Request, resp: &mut Response) -> u16 {
        let mut buf = [0u8; COMMAND_AREA_SIZE];
        let Some(n) = req.emit(&mut buf) else {
            return NO_RESPONSE;
        };
        let regs = FunctionRegisters::new();
        regs.post_request(&buf[..n]);
        self.dev.doorbell(FunctionId(f as u16), &regs);
        regs.read_bytes(resp);
        ret_of(resp)
    }

    /// One store-block of function `from` into `token`'s DMB.
    fn store(
        &self,
        from: usize,
        token: DmbToken,
        offset: u32,
        signal: bool,
        data: &[u8],
    ) -> Result<(), MoveError> {
        let word = MoveRequest {
            token,
            dmbe_idx: 0,
            signal,
            offset,
        }
        .emit();
        self.dev.store_block(FunctionId(from as u16), word, data)
    }

    /// Host read of `buf.len()` bytes at `off` in domain `d` (zeros if out of range, which
    /// the checks then catch).
    fn read(&self, d: usize, off: u64, buf: &mut [u8]) {
        if self.host[d].read(DevAddr(BASES[d] + off), buf).is_err() {
            buf.fill(0);
        }
    }

    /// Host read of one byte.
    fn byte(&self, d: usize, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.read(d, off, &mut b);
        b[0]
    }

    /// FNV-1a hash of all of domain `d`: "nothing was written" is "the hash did not change".
    fn digest(&self, d: usize) -> u64 {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut chunk = [0u8; 512];
        for off in (0..DOMAIN_SIZE as u64).step_by(chunk.len()) {
            self.read(d, off, &mut chunk);
            for &b in chunk.iter() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
            }
        }
        h
    }

    /// The IEQ header and event `k` of function `f`'s queue, as the host reads them.
    fn ieq(&self, f: usize, k: u64) -> (IeqHeader, Event) {
        let mut hdr = [0u8; 32];
        let mut ev = [0u8; 32];
        self.read(f, IEQ_OFF, &mut hdr);
        self.read(f, IEQ_OFF + 32 * (k + 1), &mut ev);
        (
            IeqHeader::read_from_bytes(&hdr[..]).unwrap_or_else(|_| IeqHeader::new_zeroed()),
            Event::read_from_bytes(&ev[..]).unwrap_or_else(|_| Event::new_zeroed()),
        )
    }

    // ------------------------------------------------------------------ the test

    /// All steps, in order; a failed check does not stop the run.
    fn run(&mut self) {
        let mut resp = [0u8; COMMAND_AREA_SIZE];

        println!(
            "[1] REG_SBA + REG_IEQ ({} bytes) for both functions",
            LINUX_IEQ_LEN
        );
        for (f, &base) in BASES.iter().enumerate() {
            let sba = DevAddr(base + SBA_OFF);
            let ret = self.command(f, Request::RegSba { sba }, &mut resp);
            self.check_ret(PerFn("REG_SBA", f), ret, 0);
            let ieq = DevAddr(base + IEQ_OFF);
            let len = LINUX_IEQ_LEN as u64;
            let ret = self.command(f, Request::RegIeq { ieq, len }, &mut resp);
            self.check_ret(PerFn("REG_IEQ", f), ret, 0);
            let (hdr, _) = self.ieq(f, 0);
            self.check(
                PerFn("IEQ header idx 0, ieq_len 512, entry_len 32:", f),
                hdr.idx.get() == 0 && hdr.ieq_len.get() == len && hdr.entry_len.get() == 32,
            );
        }
        let ret = self.command(
            0,
            Request::RegSba {
                sba: DevAddr(BASES[1]),
            },
            &mut resp,
        );
        self.check_ret(
            "REG_SBA in the peer's domain refused",
            ret,
            ReturnCode::InvalidAddress.raw(),
        );

        println!("[2] READ_GID (fn 0 through its register block and Device::doorbell)");
        let ret = self.command_via_registers(0, Request::ReadGid, &mut resp);
        self.check_ret("READ_GID fn 0 via doorbell", ret, 0);
        let gid0 = ReadGidResponse::read_from_prefix(&resp[..]).map_or(0, |(r, _)| r.gid.get());
        self.check("fn 0 reports its GID", gid0 == GIDS[0].0);
        let ret = self.command(1, Request::ReadGid, &mut resp);
        self.check_ret("READ_GID fn 1", ret, 0);
        let gid1 = ReadGidResponse::read_from_prefix(&resp[..]).map_or(0, |(r, _)| r.gid.get());
        self.check("fn 1 reports its GID", gid1 == GIDS[1].0);

        println!("[3] ADD_VLAN_ID 0x1FFF (the v2 probe)");
        for f in 0..2 {
            let ret = self.command(f, Request::AddVlanId { vlan_id: 0x1FFF }, &mut resp);
            self.check_ret(PerFn("ADD_VLAN_ID", f), ret, 0);
        }

        println!("[4] QUERY_RGID");
        let ret = self.command(
            0,
            Request::QueryRgid {
                rgid: GIDS[1],
                vlan: None,
            },
            &mut resp,
        );
        self.check_ret("fn 0 reaches fn 1's GID", ret, 0);
        let ret = self.command(
            1,
            Request::QueryRgid {
                rgid: GIDS[0],
                vlan: None,
            },
            &mut resp,
        );
        self.check_ret("fn 1 reaches fn 0's GID", ret, 0);
        let ret = self.command(
            0,
            Request::QueryRgid {
                rgid: Gid(0xDEAD),
                vlan: None,
            },
            &mut resp,
        );
        self.check_ret(
            "unknown GID unreachable",
            ret,
            ReturnCode::RemoteGidUnreachable.raw(),
        );

        println!("[5] REG_DMB in fn 0's domain, writer = fn 1");
        let req = Request::RegDmb {
            dmb: DevAddr(BASES[0] + DMB_OFF),
            len: DMB_LEN,
            sba_idx: SBA_IDX,
            vlan: None,
            rgid: GIDS[1],
        };
        let ret = self.command(0, req, &mut resp);
        self.check_ret("REG_DMB", ret, 0);
        let token = DmbToken(
            RegDmbResponse::read_from_prefix(&resp[..]).map_or(0, |(r, _)| r.dmb_tok.get()),
        );
        println!("    token {=u64:#018x}", token.0);
        self.check(
            "token non-zero with a zero low half",
            token.0 != 0 && token.is_well_formed(),
        );

        println!(
            "[6] signalled store-block of {} bytes from fn 1",
            PAYLOAD.len()
        );
        self.check(
            "fn 0's interrupt pin low before the move",
            !IRQ0.load(Ordering::SeqCst),
        );
        let r = self.store(1, token, MOVE_OFFSET, true, PAYLOAD);
        self.check_move("store_block accepted", r, Ok(()));
        let mut got = [0u8; PAYLOAD.len()];
        self.read(0, DMB_OFF + u64::from(MOVE_OFFSET), &mut got);
        self.check("data is in the DMB at the offset", got == *PAYLOAD);
        let mut before = [0xFFu8; MOVE_OFFSET as usize];
        self.read(0, DMB_OFF, &mut before);
        self.check(
            "DMB bytes before the offset untouched",
            before.iter().all(|&b| b == 0),
        );
        self.check(
            "SBA summary bit (0x80 in byte 0)",
            self.byte(0, SBA_OFF) & 0x80 != 0,
        );
        let idx = u64::from(SBA_IDX);
        let (byte, mask) = (4 + idx / 8, 0x80u8 >> (idx % 8));
        self.check(
            "SBA DMB bit (byte 4 + idx/8, 0x80 >> idx%8)",
            self.byte(0, SBA_OFF + byte) & mask != 0,
        );
        let mut m = [0u8; 2];
        self.read(0, SBA_OFF + 256 + 2 * idx, &mut m);
        self.check(
            "dmbe_mask of the index is 0x1000 (BE)",
            u16::from_be_bytes(m) == 0x1000,
        );
        self.check(
            "fn 0's interrupt pin went high",
            IRQ0.load(Ordering::SeqCst),
        );
        self.check(
            "fn 1's interrupt pin stayed low",
            !IRQ1.load(Ordering::SeqCst),
        );

        println!("[7] refused moves write nothing and signal nothing");
        self.dev.board().lower_irq(FunctionId(0));
        let digests = [self.digest(0), self.digest(1)];
        let refused_before = self.dev.stats().moves_refused;
        let forged_generation = DmbToken(token.0 ^ (1 << (32 + 14)));
        let r = self.store(1, forged_generation, 0, true, b"forged");
        self.check_move(
            "forged token (generation bits) refused",
            r,
            Err(MoveError::InvalidToken),
        );
        let forged_slot = DmbToken(token.0 ^ (1 << 32));
        let r = self.store(1, forged_slot, 0, true, b"forged");
        self.check_move(
            "forged token (slot bits) refused",
            r,
            Err(MoveError::InvalidToken),
        );
        let r = self.store(0, token, 0, true, b"not the writer");
        self.check_move(
            "move by a GID other than rgid refused",
            r,
            Err(MoveError::AccessDenied),
        );
        let r = self.store(1, token, DMB_LEN - 8, true, &[0xEE; 16]);
        self.check_move(
            "move crossing the DMB end refused",
            r,
            Err(MoveError::OutOfRange),
        );
        let r = self.store(1, token, DMB_LEN, true, &[0xEE]);
        self.check_move(
            "move starting at the DMB end refused",
            r,
            Err(MoveError::OutOfRange),
        );
        self.check("domain 0 unchanged", self.digest(0) == digests[0]);
        self.check("domain 1 unchanged", self.digest(1) == digests[1]);
        self.check(
            "no interrupt raised",
            !IRQ0.load(Ordering::SeqCst) && !IRQ1.load(Ordering::SeqCst),
        );
        self.check(
            "device counted 5 refused moves",
            self.dev.stats().moves_refused == refused_before + 5,
        );

        println!("[8] SIGNAL_IEQ from fn 1 to fn 0");
        let req = Request::SignalIeq {
            rgid: GIDS[0],
            trigger_irq: true,
            code: SW_CODE,
            info: SW_INFO,
        };
        let ret = self.command(1, req, &mut resp);
        self.check_ret("SIGNAL_IEQ", ret, 0);
        let (hdr, ev) = self.ieq(0, 0);
        self.check("IEQ header idx is 1", hdr.idx.get() == 1);
        self.check(
            "event type 2 (software)",
            ev.ty.get() == EventType::Software as u32,
        );
        self.check("event code is the sender's", ev.code.get() == SW_CODE);
        self.check("event tok is fn 1's GID", ev.tok.get() == GIDS[1].0);
        self.check("event info is the sender's", ev.info.get() == SW_INFO);
        self.check("event time stamped", ev.time.get() != 0);
        self.check(
            "SBA event bit (0x40 in byte 0)",
            self.byte(0, SBA_OFF) & 0x40 != 0,
        );
        self.check(
            "fn 0's interrupt pin went high",
            IRQ0.load(Ordering::SeqCst),
        );
        let (hdr1, _) = self.ieq(1, 0);
        self.check("fn 1's IEQ untouched", hdr1.idx.get() == 0);

        println!("[9] UNREG_DMB, then the token is dead");
        let ret = self.command(0, Request::UnregDmb { token }, &mut resp);
        self.check_ret("UNREG_DMB", ret, 0);
        let state =
            UnregDmbResponse::read_from_prefix(&resp[..]).map_or(u64::MAX, |(r, _)| r.state.get());
        self.check("buffer released at once", state == UNREG_RELEASED);
        let (hdr, ev) = self.ieq(0, 1);
        self.check(
            "buffer event (type 0, DMB unregistered, tok) at idx 2",
            hdr.idx.get() == 2
                && ev.ty.get() == EventType::Buffer as u32
                && ev.code.get() == event_code::BUF_DMB_UNREGISTERED
                && ev.tok.get() == token.0,
        );
        let digest = self.digest(0);
        let r = self.store(1, token, 0, true, PAYLOAD);
        self.check_move(
            "move with the unregistered token refused",
            r,
            Err(MoveError::InvalidToken),
        );
        self.check("domain 0 unchanged", self.digest(0) == digest);
        let ret = self.command(0, Request::UnregDmb { token }, &mut resp);
        self.check_ret(
            "second UNREG_DMB refused",
            ret,
            ReturnCode::InvalidToken.raw(),
        );
    }

    /// Prints the tally and the device's counters; `true` if every check passed.
    fn summary(&self) -> bool {
        let s = self.dev.stats();
        println!(
            "device stats: commands {}, moves {}, bytes {}, refused {}, signals {}, events {}, interrupts {}",
            s.commands,
            s.moves,
            s.bytes_moved,
            s.moves_refused,
            s.signals,
            s.events,
            s.interrupts
        );
        println!(
            "ism-qemu-selftest: {} passed, {} failed",
            self.passed,
            self.failed
        );
        self.failed == 0 && self.passed > 0
    }
}

/// A check's label that names a function: `"<what> fn <n>"`.
struct PerFn(&'static str, usize);

impl defmt::Format for PerFn {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=str} fn {=usize}", self.0, self.1);
    }
}

/// The `ret` of the response header in `resp`.
fn ret_of(resp: &Response) -> u16 {
    ResponseHeader::read_from_prefix(&resp[..]).map_or(NO_RESPONSE, |(h, _)| h.ret.get())
}
