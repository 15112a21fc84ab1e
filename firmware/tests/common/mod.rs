//! Shared helpers of the firmware's integration tests: a [`Harness`] around a
//! `Device<FakeBoard, 4, D>` whose functions issue commands the way a host driver does
//! (`Request::emit` into a command area, `Device::execute`, zerocopy views of the response),
//! plus accessors for the SBA, the IEQ and the interrupt counters of each function.
#![allow(dead_code)]

use ism_firmware::command::Request;
use ism_firmware::wire::ieq::{Event, IeqHeader, ENTRY_LEN, LINUX_IEQ_LEN};
use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::wire::query_info::QueryInfoResponse;
use ism_firmware::wire::sba::{Sba, SBA_SIZE};
use ism_firmware::wire::{Opcode, ResponseHeader, HEADER_LEN};
use ism_firmware::{Device, FunctionConfig, MoveError, ReturnCode};
use ism_hal::fakes::{FakeBoard, FakeIrq, FakeMemory};
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, DmbToken, DomainId, FunctionId, Gid};
use zerocopy::FromBytes;

/// Functions on every test device.
pub const NF: usize = 4;
/// Default size of each memory domain.
pub const DOMAIN_SIZE: usize = 64 * 1024;
/// Offset of the SBA inside a function's domain (where [`Harness::probe`] puts it).
pub const SBA_OFF: u64 = 0;
/// Offset of the IEQ inside a function's domain.
pub const IEQ_OFF: u64 = 0x1000;
/// First offset the tests use for DMBs.
pub const DMB_OFF: u64 = 0x2000;
/// Salt of the test devices' tokens.
pub const SALT: u32 = 0x5A5A_1234;

/// The GID of function `f`.
pub const fn gid(f: u16) -> Gid {
    Gid(0x0A0B_0C0D_0000_0000 | (f as u64 + 1))
}

/// Function `f`.
pub const fn fid(f: u16) -> FunctionId {
    FunctionId(f)
}

/// Device base address of domain `d` on a `FakeBoard`.
pub const fn base(d: u16) -> u64 {
    ((d as u64) + 1) << 32
}

/// What [`Harness::state`] captures: memory of every domain, QUERY_INFO bytes of every
/// function (`None` when offline), interrupt counts.
pub type State = (Vec<Vec<u8>>, Vec<Option<Vec<u8>>>, Vec<u32>);

/// One command response, as the host reads it back from the command area.
#[derive(Clone)]
pub struct Resp {
    /// The whole command area after the command.
    pub area: [u8; COMMAND_AREA_SIZE],
    /// The length `execute` returned.
    pub len: usize,
}

impl Resp {
    /// The response header.
    pub fn hdr(&self) -> ResponseHeader {
        ResponseHeader::read_from_prefix(&self.area).unwrap().0
    }
    /// `ret`.
    pub fn ret(&self) -> u16 {
        self.hdr().ret.get()
    }
    /// The response bytes (`len` of them).
    pub fn bytes(&self) -> &[u8] {
        &self.area[..self.len]
    }
    /// A typed view of the response body.
    pub fn view<T: FromBytes>(&self) -> T {
        T::read_from_prefix(&self.area).unwrap().0
    }
    /// The big-endian u64 at byte `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_be_bytes(self.area[off..off + 8].try_into().unwrap())
    }
}

/// A test device with its fake board.
pub struct Harness<const D: usize = 64> {
    /// The device.
    pub dev: Device<FakeBoard, NF, D>,
    /// Domain of each function.
    pub domains: [u16; NF],
}

impl Harness<64> {
    /// An LPAR board: four partitions, each its own domain of [`DOMAIN_SIZE`] bytes.
    pub fn lpar() -> Self {
        Self::build(NF, DOMAIN_SIZE, false, [0, 1, 2, 3])
    }

    /// A loopback-like board: one shared domain for all four functions, attach offered.
    pub fn shared() -> Self {
        Self::build(1, DOMAIN_SIZE, true, [0, 0, 0, 0])
    }
}

impl<const D: usize> Harness<D> {
    /// A board with `domains` domains of `size` bytes, `shared_memory` as given, and function
    /// `f` in domain `fn_domains[f]`.
    pub fn build(domains: usize, size: usize, shared_memory: bool, fn_domains: [u16; NF]) -> Self {
        let mut board = FakeBoard::new(domains, size, NF);
        board.shared_memory = shared_memory;
        let cfgs: Vec<FunctionConfig> = (0..NF as u16)
            .map(|f| FunctionConfig {
                gid: gid(f),
                domain: DomainId(fn_domains[f as usize]),
            })
            .collect();
        let dev = Device::new(board, 0x0123, &cfgs, SALT).expect("valid configuration");
        Self {
            dev,
            domains: fn_domains,
        }
    }

    /// Domain of function `f`.
    pub fn dom(&self, f: u16) -> u16 {
        self.domains[f as usize]
    }

    /// Device address `off` in `f`'s domain.
    pub fn addr(&self, f: u16, off: u64) -> DevAddr {
        DevAddr(base(self.dom(f)) + off)
    }

    /// Executes raw request bytes as function `f` and checks the invariants every response
    /// must meet: length a multiple of 8, `hdr.len` equal to it, `cmd` echoed, failures
    /// header-only with a zero body.
    pub fn raw(&self, f: u16, req: &[u8]) -> Resp {
        let mut area = [0xEEu8; COMMAND_AREA_SIZE];
        let len = self.dev.execute(fid(f), req, &mut area);
        assert_eq!(len % 8, 0, "response length {len} not a multiple of 8");
        assert!((HEADER_LEN..=COMMAND_AREA_SIZE).contains(&len));
        let r = Resp { area, len };
        let h = r.hdr();
        assert_eq!(
            h.len.get() as usize,
            len,
            "hdr.len equals the returned length"
        );
        let cmd = if req.len() >= HEADER_LEN {
            u32::from_be_bytes(req[..4].try_into().unwrap())
        } else {
            0
        };
        assert_eq!(h.cmd.get(), cmd, "cmd echoed");
        if h.ret.get() != 0 {
            assert_eq!(len, HEADER_LEN, "a failure answers with the header only");
            assert!(r.area[HEADER_LEN..].iter().all(|&b| b == 0));
            assert!(ReturnCode::from_raw(h.ret.get()).is_some());
        }
        r
    }

    /// Issues `req` as function `f`; on success also checks the response length against
    /// `Opcode::response_len`.
    pub fn cmd(&self, f: u16, req: Request) -> Resp {
        let mut buf = [0u8; COMMAND_AREA_SIZE];
        let n = req.emit(&mut buf).unwrap();
        assert_eq!(n, req.opcode().request_len());
        let r = self.raw(f, &buf[..n]);
        if r.ret() == 0 {
            assert_eq!(
                r.len,
                req.opcode().response_len(),
                "{}",
                req.opcode().name()
            );
        }
        r
    }

    /// Issues `req`; `Ok(response)` or the typed return code.
    pub fn try_cmd(&self, f: u16, req: Request) -> Result<Resp, ReturnCode> {
        let r = self.cmd(f, req);
        match r.ret() {
            0 => Ok(r),
            raw => Err(ReturnCode::from_raw(raw).unwrap()),
        }
    }

    /// Issues `req` and expects success.
    pub fn ok(&self, f: u16, req: Request) -> Resp {
        match self.try_cmd(f, req) {
            Ok(r) => r,
            Err(rc) => panic!("{:?} by fn {f} failed: {rc}", req),
        }
    }

    /// Issues `req` and returns its return code (panics on success).
    pub fn err(&self, f: u16, req: Request) -> ReturnCode {
        match self.try_cmd(f, req) {
            Ok(_) => panic!("{:?} by fn {f} unexpectedly succeeded", req),
            Err(rc) => rc,
        }
    }

    /// What Linux's probe does: REG_SBA at [`SBA_OFF`], REG_IEQ (512 bytes) at [`IEQ_OFF`].
    pub fn probe(&self, f: u16) {
        self.ok(
            f,
            Request::RegSba {
                sba: self.addr(f, SBA_OFF),
            },
        );
        self.ok(
            f,
            Request::RegIeq {
                ieq: self.addr(f, IEQ_OFF),
                len: LINUX_IEQ_LEN as u64,
            },
        );
    }

    /// REG_DMB at offset `off` of `f`'s domain.
    pub fn reg_dmb(
        &self,
        f: u16,
        off: u64,
        len: u32,
        sba_idx: u32,
        rgid: Gid,
        vlan: Option<u32>,
    ) -> Result<DmbToken, ReturnCode> {
        self.try_cmd(
            f,
            Request::RegDmb {
                dmb: self.addr(f, off),
                len,
                sba_idx,
                vlan,
                rgid,
            },
        )
        .map(|r| DmbToken(r.u64_at(8)))
    }

    /// UNREG_DMB; `Ok(state)` (0 released, 1 deferred).
    pub fn unreg_dmb(&self, f: u16, token: DmbToken) -> Result<u64, ReturnCode> {
        self.try_cmd(f, Request::UnregDmb { token })
            .map(|r| r.u64_at(8))
    }

    /// One store-block by `from`.
    pub fn mv(
        &self,
        from: u16,
        token: DmbToken,
        offset: u32,
        signal: bool,
        data: &[u8],
    ) -> Result<(), MoveError> {
        let req = MoveRequest {
            token,
            dmbe_idx: 0,
            signal,
            offset,
        }
        .emit();
        self.dev.store_block(fid(from), req, data)
    }

    /// QUERY_INFO of `f`.
    pub fn query_info(&self, f: u16) -> QueryInfoResponse {
        self.ok(f, Request::QueryInfo).view()
    }

    /// The memory of domain `d`.
    pub fn mem(&self, d: u16) -> &FakeMemory {
        &self.dev.board().memories[d as usize]
    }

    /// `len` bytes at offset `off` of `f`'s domain.
    pub fn read(&self, f: u16, off: u64, len: usize) -> Vec<u8> {
        self.mem(self.dom(f)).snapshot(base(self.dom(f)) + off, len)
    }

    /// Writes bytes at offset `off` of `f`'s domain (as the host would).
    pub fn write(&self, f: u16, off: u64, data: &[u8]) {
        self.mem(self.dom(f))
            .write(self.addr(f, off), data)
            .unwrap();
    }

    /// Every byte of every domain.
    pub fn all_memory(&self) -> Vec<Vec<u8>> {
        self.dev
            .board()
            .memories
            .iter()
            .enumerate()
            .map(|(d, m)| m.snapshot(base(d as u16), m.size() as usize))
            .collect()
    }

    /// The SBA of `f` at [`SBA_OFF`].
    pub fn sba(&self, f: u16) -> Sba {
        Sba::read_from_bytes(&self.read(f, SBA_OFF, SBA_SIZE)[..]).unwrap()
    }

    /// Raw SBA bytes of `f`.
    pub fn sba_bytes(&self, f: u16) -> Vec<u8> {
        self.read(f, SBA_OFF, SBA_SIZE)
    }

    /// The IEQ header of `f` at [`IEQ_OFF`].
    pub fn ieq_header(&self, f: u16) -> IeqHeader {
        IeqHeader::read_from_bytes(&self.read(f, IEQ_OFF, ENTRY_LEN)[..]).unwrap()
    }

    /// IEQ entry `k` of `f`.
    pub fn event(&self, f: u16, k: usize) -> Event {
        let off = IEQ_OFF + (ENTRY_LEN * (k + 1)) as u64;
        Event::read_from_bytes(&self.read(f, off, ENTRY_LEN)[..]).unwrap()
    }

    /// The newest event of `f` (per the header's `idx`).
    pub fn last_event(&self, f: u16) -> Event {
        let idx = self.ieq_header(f).idx.get() as usize;
        assert!(idx > 0, "no event yet");
        self.event(f, idx - 1)
    }

    /// The interrupt line of `f`.
    pub fn irq(&self, f: u16) -> &FakeIrq {
        &self.dev.board().irqs[f as usize]
    }

    /// Issues `req`, expects it to fail, and checks that it changed nothing observable
    /// (memory of every domain, QUERY_INFO of every function, interrupt counters).
    pub fn refused(&self, f: u16, req: Request) -> ReturnCode {
        let before = self.state();
        let rc = self.err(f, req);
        assert!(
            before == self.state(),
            "{:?} failed with {rc} but changed state",
            req
        );
        rc
    }

    /// Everything observable about the device's state through hosts: all memory, and
    /// QUERY_INFO of every online function.
    pub fn state(&self) -> State {
        let mem = self.all_memory();
        let infos = (0..NF as u16)
            .map(|f| {
                let mut buf = [0u8; 8];
                let n = Request::QueryInfo.emit(&mut buf).unwrap();
                let mut area = [0u8; COMMAND_AREA_SIZE];
                let len = self.dev.execute(fid(f), &buf[..n], &mut area);
                (len == Opcode::QueryInfo.response_len()).then(|| area[..len].to_vec())
            })
            .collect();
        let irqs = (0..NF as u16).map(|f| self.irq(f).count()).collect();
        (mem, infos, irqs)
    }
}
