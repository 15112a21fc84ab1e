//! The device: command dispatch, the move engine, and event delivery.
//!
//! [`Device`] owns every piece of device state and is the only thing a board talks to:
//! * [`Device::execute`] / [`Device::doorbell`]: one command of one function, synchronously,
//!   as millicode runs it. Commands serialise on one control lock.
//! * [`Device::store_block`]: one move into a DMB. Lock-free: a lease on the DMB (and on the
//!   owner's SBA when signalling) is all it takes.
//! * [`Device::function_down`] / [`Device::function_up`]: what a board does when a
//!   partition crashes or is deactivated, and when it comes back.
//!
//! Nothing here trusts a host: every address is checked against the caller's own memory
//! domain before it is stored, every token against the table, every move against the DMB's
//! bounds and its authorized writer. Nothing here panics on host input.

use core::sync::atomic::Ordering;

use portable_atomic::AtomicU64;

use ism_hal::regs::{FunctionRegisters, COMMAND_AREA_SIZE};
use ism_hal::{
    Board, Clock, DevAddr, DmaMemory, DmaMemoryExt, DmbToken, DomainId, FunctionId, Gid,
    InterruptLine,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::command::Request;
use crate::dmb::{DmbInfo, DmbTable, SlotControl, SlotState, MAX_DMB_LEN};
use crate::error::{MoveError, ReturnCode};
use crate::function::{is_valid_vlan, FunctionConfig, FunctionControl, FunctionState};
use crate::line::CacheLine;
use crate::wire::attach_dmb::AttachDmbResponse;
use crate::wire::ieq::{self, event_code, Event, EventType};
use crate::wire::move_request::{MoveRequest, MAX_MOVE_LEN};
use crate::wire::query_info::{self, ExtFeatures, QueryInfoResponse};
use crate::wire::read_gid::ReadGidResponse;
use crate::wire::reg_dmb::RegDmbResponse;
use crate::wire::sba::{self, SbaFlags, SBA_SIZE};
use crate::wire::unreg_dmb::{UnregDmbResponse, UNREG_DEFERRED, UNREG_RELEASED};
use crate::wire::{view, RequestHeader, ResponseHeader, HEADER_LEN};

/// Why a function went down (the code of the device events its peers receive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DownReason {
    /// The partition crashed: peers get `DEV_GID_ERR_STATE` (0x01).
    Crash,
    /// The function was deactivated in an orderly way: peers get `DEV_GID_DISABLED` (0x07).
    Disabled,
}

/// Counters of the device's control path (monotonic, relaxed); the moves are counted per
/// mover in [`MoveStats`].
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Commands executed (successful or not).
    pub commands: AtomicU64,
    /// Events written to IEQs.
    pub events: AtomicU64,
    /// Interrupts raised for events.
    pub interrupts: AtomicU64,
    /// Store-blocks refused that name a function beyond the device's capacity `F` (those
    /// of a function index below `F` count in its [`MoveStats`]).
    pub moves_refused: AtomicU64,
}

/// Counters of one function's moves (monotonic, relaxed), on a line of their own
/// ([`CacheLine`]): with one set for the whole device, every move of one partition pulled
/// the line from the core of the partition that moved before it (in a ping-pong, every
/// message). Only moves *by* the function count here, including the signals and
/// interrupts they raise at their target.
#[derive(Debug, Default)]
pub struct MoveStats {
    /// Store-blocks that wrote data.
    pub moves: AtomicU64,
    /// Bytes moved.
    pub bytes_moved: AtomicU64,
    /// Store-blocks refused.
    pub moves_refused: AtomicU64,
    /// DMB signals set in an SBA.
    pub signals: AtomicU64,
    /// Interrupts raised for those signals.
    pub interrupts: AtomicU64,
}

/// The device's counters at one moment ([`DeviceStats`] and every function's
/// [`MoveStats`] added up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commands executed.
    pub commands: u64,
    /// Store-blocks that wrote data.
    pub moves: u64,
    /// Bytes moved.
    pub bytes_moved: u64,
    /// Store-blocks refused.
    pub moves_refused: u64,
    /// DMB signals set.
    pub signals: u64,
    /// Events written.
    pub events: u64,
    /// Interrupts raised.
    pub interrupts: u64,
}

struct Control<const F: usize, const D: usize> {
    slots: [SlotControl; D],
    next_slot: usize,
    functions: [FunctionControl; F],
}

/// Error returned by [`Device::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// More functions than the device's capacity `F` (or than 64).
    TooManyFunctions,
    /// Two functions share a GID.
    DuplicateGid,
    /// A function's domain is not on the board.
    UnknownDomain,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigError::TooManyFunctions => "more functions than the device holds",
            ConfigError::DuplicateGid => "two functions share a GID",
            ConfigError::UnknownDomain => "a function's memory domain is not on the board",
        })
    }
}

impl core::error::Error for ConfigError {}

/// An ISM device with up to `F` functions and a table of `D` DMBs, running on board `B`.
///
/// A board calls [`Device::execute`] when a host issues a command and
/// [`Device::store_block`] for a move; everything else the device does (status bits,
/// events, interrupts) goes through the board's memory and interrupt lines. Here on the
/// HAL's fake board (feature `test-utils` of `ism-hal`), two partitions with one function
/// each:
///
/// ```
/// use ism_firmware::command::Request;
/// use ism_firmware::wire::move_request::MoveRequest;
/// use ism_firmware::wire::ResponseHeader;
/// use ism_firmware::{Device, FunctionConfig, MoveError};
/// use ism_hal::fakes::FakeBoard;
/// use ism_hal::regs::COMMAND_AREA_SIZE;
/// use ism_hal::{DevAddr, DmaMemory, DmbToken, DomainId, FunctionId, Gid};
/// use zerocopy::FromBytes;
///
/// // Two memory domains (partitions) of 64 KiB, two interrupt lines.
/// let board = FakeBoard::new(2, 64 << 10, 2);
/// let functions = [
///     FunctionConfig { gid: Gid(0xA), domain: DomainId(0) },
///     FunctionConfig { gid: Gid(0xB), domain: DomainId(1) },
/// ];
/// let dev: Device<FakeBoard, 2, 16> =
///     Device::new(board, 0x0123, &functions, 0x5EED).expect("a valid configuration");
/// let base0 = dev.board().memories[0].base().0;
///
/// // A command as a host issues it: request bytes in, response bytes out (`ret` 0: done).
/// let command = |f: u16, req: Request| {
///     let mut buf = [0u8; COMMAND_AREA_SIZE];
///     let n = req.emit(&mut buf).expect("fits the command area");
///     let mut resp = [0u8; COMMAND_AREA_SIZE];
///     let len = dev.execute(FunctionId(f), &buf[..n], &mut resp);
///     let hdr = ResponseHeader::read_from_prefix(&resp).unwrap().0;
///     assert_eq!(hdr.ret.get(), 0, "{req:?}");
///     resp[..len].to_vec()
/// };
/// // Function 0 registers its status block (SBA) and a 4 KiB DMB only GID 0xB may write.
/// command(0, Request::RegSba { sba: DevAddr(base0) });
/// let dmb = DevAddr(base0 + 0x1000);
/// let resp = command(
///     0,
///     Request::RegDmb { dmb, len: 4096, sba_idx: 32, vlan: None, rgid: Gid(0xB) },
/// );
/// let token = DmbToken(u64::from_be_bytes(resp[8..16].try_into().unwrap()));
///
/// // Function 1 moves into it with the signal flag: the data lands in partition 0's
/// // memory and function 0's interrupt line is raised.
/// let word = |token| MoveRequest { token, dmbe_idx: 0, signal: true, offset: 0 }.emit();
/// dev.store_block(FunctionId(1), word(token), b"hello").expect("an allowed move");
/// let mut got = [0u8; 5];
/// dev.board().memories[0].read(dmb, &mut got).unwrap();
/// assert_eq!(&got, b"hello");
/// assert_eq!(dev.board().irqs[0].count(), 1);
///
/// // A forged token and a writer other than the authorized one are refused.
/// let forged = DmbToken(token.0 ^ (1 << 40));
/// assert_eq!(dev.store_block(FunctionId(1), word(forged), b"x"), Err(MoveError::InvalidToken));
/// assert_eq!(dev.store_block(FunctionId(0), word(token), b"x"), Err(MoveError::AccessDenied));
/// ```
pub struct Device<B: Board, const F: usize, const D: usize> {
    board: B,
    chid: u16,
    functions: heapless::Vec<FunctionState, F>,
    dmbs: DmbTable<D>,
    control: spin::Mutex<Control<F, D>>,
    stats: DeviceStats,
    movers: [CacheLine<MoveStats>; F],
}

/// A memory area a function registers, for the overlap rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Area {
    Sba(FunctionId),
    Ieq(FunctionId),
    Dmb,
}

/// Result of a command handler: the response length on success.
type CmdResult = Result<usize, ReturnCode>;

impl<B: Board, const F: usize, const D: usize> Device<B, F, D> {
    /// A device on `board` with CHID `chid` and the given functions (function `i` is
    /// `FunctionId(i)`). `token_salt` scrambles DMB tokens; a board should pass something
    /// unpredictable.
    ///
    /// # Errors
    /// [`ConfigError`] if the functions do not fit, share a GID, or name a missing domain.
    pub fn new(
        board: B,
        chid: u16,
        functions: &[FunctionConfig],
        token_salt: u32,
    ) -> Result<Self, ConfigError> {
        if functions.len() > F || functions.len() > 64 {
            return Err(ConfigError::TooManyFunctions);
        }
        let mut states = heapless::Vec::new();
        for (i, cfg) in functions.iter().enumerate() {
            if functions[..i].iter().any(|o| o.gid == cfg.gid) {
                return Err(ConfigError::DuplicateGid);
            }
            if board.memory(cfg.domain).is_none() {
                return Err(ConfigError::UnknownDomain);
            }
            if states.push(FunctionState::new(*cfg)).is_err() {
                return Err(ConfigError::TooManyFunctions);
            }
        }
        Ok(Self {
            board,
            chid,
            functions: states,
            dmbs: DmbTable::new(token_salt),
            control: spin::Mutex::new(Control {
                slots: [SlotControl::default(); D],
                next_slot: 0,
                functions: core::array::from_fn(|_| FunctionControl::new()),
            }),
            stats: DeviceStats::default(),
            movers: core::array::from_fn(|_| CacheLine::default()),
        })
    }

    /// The board.
    pub fn board(&self) -> &B {
        &self.board
    }

    /// The device's CHID (all its functions share it).
    pub fn chid(&self) -> u16 {
        self.chid
    }

    /// Number of functions.
    pub fn function_count(&self) -> usize {
        self.functions.len()
    }

    /// The GID of `f`.
    pub fn gid(&self, f: FunctionId) -> Option<Gid> {
        self.functions.get(f.index()).map(|s| s.config.gid)
    }

    /// Whether `f` exists and is online.
    pub fn is_online(&self, f: FunctionId) -> bool {
        self.functions.get(f.index()).is_some_and(|s| s.is_online())
    }

    /// A snapshot of the counters (the moves of every function added up).
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sum = |f: fn(&MoveStats) -> &AtomicU64| self.movers.iter().map(|m| l(f(m))).sum();
        StatsSnapshot {
            commands: l(&s.commands),
            moves: sum(|m| &m.moves),
            bytes_moved: sum(|m| &m.bytes_moved),
            moves_refused: l(&s.moves_refused) + sum(|m| &m.moves_refused),
            signals: sum(|m| &m.signals),
            events: l(&s.events),
            interrupts: l(&s.interrupts) + sum(|m| &m.interrupts),
        }
    }

    /// Number of DMBs currently registered (or orphaned but attached).
    pub fn dmbs_in_use(&self) -> usize {
        let c = self.control.lock();
        c.slots
            .iter()
            .filter(|s| s.state != SlotState::Free)
            .count()
    }

    // ------------------------------------------------------------------ commands

    /// Executes the command in the command area of `f`'s register block, as the device does
    /// when the host stores the request header (the doorbell), and leaves the response there.
    pub fn doorbell(&self, f: FunctionId, regs: &FunctionRegisters) {
        let mut req = [0u8; COMMAND_AREA_SIZE];
        regs.read_bytes(&mut req);
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let n = self.execute(f, &req, &mut resp);
        regs.write_bytes(0, &resp[..n]);
    }

    /// Executes one request of function `f` and writes the response into `resp`; returns
    /// the response length (always a multiple of 8). The response header echoes the code
    /// and carries `ret`: 0 on success, else a [`ReturnCode`]. A request is validated
    /// completely before any state changes; a failed command changes nothing.
    pub fn execute(&self, f: FunctionId, req: &[u8], resp: &mut [u8; COMMAND_AREA_SIZE]) -> usize {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        let cmd = view::<RequestHeader>(req).map_or(0, |h| h.cmd.get());
        resp.fill(0);
        let result = match Request::parse(req) {
            Err(rc) => Err(rc),
            Ok(r) => match self.functions.get(f.index()) {
                Some(state) if state.is_online() => self.dispatch(f, state, r, resp),
                _ => Err(ReturnCode::FunctionOffline),
            },
        };
        let (ret, len) = match result {
            Ok(len) => (0, len),
            Err(rc) => {
                ism_hal::ism_debug!("ism: fn {} cmd {} failed: ret {}", f.0, cmd, rc.raw());
                resp.fill(0);
                (rc.raw(), HEADER_LEN)
            }
        };
        resp[..HEADER_LEN].copy_from_slice(ResponseHeader::new(cmd, ret, len as u16).as_bytes());
        len
    }

    fn dispatch(
        &self,
        f: FunctionId,
        me: &FunctionState,
        req: Request,
        resp: &mut [u8; COMMAND_AREA_SIZE],
    ) -> CmdResult {
        match req {
            Request::RegSba { sba } => self.reg_sba(f, me, sba),
            Request::UnregSba => self.unreg_sba(me),
            Request::RegIeq { ieq, len } => self.reg_ieq(f, me, ieq, len),
            Request::UnregIeq => self.unreg_ieq(me),
            Request::ReadGid => {
                let mut r = ReadGidResponse::new_zeroed();
                r.gid = me.config.gid.0.into();
                Ok(put(resp, r.as_bytes()))
            }
            Request::AddVlanId { vlan_id } => self.add_vlan(f, me, vlan_id),
            Request::DelVlanId { vlan_id } => self.del_vlan(f, me, vlan_id),
            Request::SetVlan | Request::ResetVlan => {
                let mut c = self.lock_online(me)?;
                c.functions[f.index()].vlan_required = req == Request::SetVlan;
                Ok(HEADER_LEN)
            }
            Request::QueryInfo => Ok(self.query_info(f, me, resp)),
            Request::QueryRgid { rgid, vlan } => {
                self.query_rgid(me, rgid, vlan).map(|_| HEADER_LEN)
            }
            Request::RegDmb {
                dmb,
                len,
                sba_idx,
                vlan,
                rgid,
            } => self.reg_dmb(f, me, dmb, len, sba_idx, vlan, rgid, resp),
            Request::UnregDmb { token } => self.unreg_dmb(f, token, resp),
            Request::SignalIeq {
                rgid,
                trigger_irq,
                code,
                info,
            } => self.signal_ieq(me, rgid, trigger_irq, code, info),
            Request::AttachDmb { token } => self.attach_dmb(f, me, token, resp),
            Request::DetachDmb { token } => self.detach_dmb(f, me, token),
        }
    }

    /// REG_SBA: the SBA (4096 bytes, 8-byte aligned) must lie in the caller's domain.
    /// Errors: `InvalidAddress`, `AlreadyRegistered`.
    fn reg_sba(&self, f: FunctionId, me: &FunctionState, sba: DevAddr) -> CmdResult {
        let c = self.lock_online(me)?;
        if !sba.0.is_multiple_of(8) || !self.own_memory_contains(me, sba, SBA_SIZE as u64) {
            return Err(ReturnCode::InvalidAddress);
        }
        if me.sba_lease.live_generation().is_some() {
            return Err(ReturnCode::AlreadyRegistered);
        }
        if self.overlaps_registered(&c, me.config.domain, sba, SBA_SIZE as u64, Area::Sba(f)) {
            return Err(ReturnCode::InvalidAddress);
        }
        me.sba_addr.store(sba.0, Ordering::Relaxed);
        me.sba_lease.publish(u32::MAX);
        Ok(HEADER_LEN)
    }

    /// UNREG_SBA: after it returns the device never writes the old SBA again.
    /// Errors: `NotRegistered`.
    fn unreg_sba(&self, me: &FunctionState) -> CmdResult {
        let _c = self.control.lock();
        if me.sba_lease.revoke() {
            Ok(HEADER_LEN)
        } else {
            Err(ReturnCode::NotRegistered)
        }
    }

    /// REG_IEQ: `len` is a multiple of 32 in 64..=4096 (Linux: 512, 15 entries); the queue
    /// must lie in the caller's domain, 8-byte aligned. The device writes the header
    /// (`idx` 0, `ieq_len`, `entry_len` 32). Errors: `InvalidLength`, `InvalidAddress`,
    /// `AlreadyRegistered`.
    fn reg_ieq(&self, f: FunctionId, me: &FunctionState, addr: DevAddr, len: u64) -> CmdResult {
        let c = self.lock_online(me)?;
        if !len.is_multiple_of(ieq::ENTRY_LEN as u64)
            || !(64..=ieq::MAX_IEQ_LEN as u64).contains(&len)
        {
            return Err(ReturnCode::InvalidLength);
        }
        if !addr.0.is_multiple_of(8) || !self.own_memory_contains(me, addr, len) {
            return Err(ReturnCode::InvalidAddress);
        }
        if me.ieq.lock().addr.is_some() {
            return Err(ReturnCode::AlreadyRegistered);
        }
        if self.overlaps_registered(&c, me.config.domain, addr, len, Area::Ieq(f)) {
            return Err(ReturnCode::InvalidAddress);
        }
        let mut q = me.ieq.lock();
        let mem = self.own_memory(me).ok_or(ReturnCode::InvalidAddress)?;
        let header = ieq::IeqHeader {
            idx: 0.into(),
            ieq_len: len.into(),
            entry_len: (ieq::ENTRY_LEN as u64).into(),
            reserved: 0.into(),
        };
        mem.store_words(addr, &header)
            .map_err(|_| ReturnCode::InvalidAddress)?;
        q.addr = Some(addr);
        q.len = len as usize;
        q.entries = ieq::entries(len as usize);
        q.next = 0;
        Ok(HEADER_LEN)
    }

    /// UNREG_IEQ: afterwards no event is written to the old queue. Errors: `NotRegistered`.
    fn unreg_ieq(&self, me: &FunctionState) -> CmdResult {
        let _c = self.control.lock();
        let mut q = me.ieq.lock();
        if q.addr.is_none() {
            return Err(ReturnCode::NotRegistered);
        }
        // Forget the length too, so QUERY_INFO reports `ieq_len` 0 once no IEQ is registered.
        *q = Default::default();
        Ok(HEADER_LEN)
    }

    /// ADD_VLAN_ID: idempotent. Errors: `InvalidVlan`, `VlanTableFull`.
    fn add_vlan(&self, f: FunctionId, me: &FunctionState, id: u64) -> CmdResult {
        if !is_valid_vlan(id) {
            return Err(ReturnCode::InvalidVlan);
        }
        let id = id as u16;
        let mut c = self.lock_online(me)?;
        let fc = &mut c.functions[f.index()];
        if !fc.vlans.contains(&id) {
            fc.vlans.push(id).map_err(|_| ReturnCode::VlanTableFull)?;
            me.set_vlan(id, true);
        }
        Ok(HEADER_LEN)
    }

    /// DEL_VLAN_ID. Errors: `InvalidVlan`, `VlanNotFound`.
    fn del_vlan(&self, f: FunctionId, me: &FunctionState, id: u64) -> CmdResult {
        if !is_valid_vlan(id) {
            return Err(ReturnCode::InvalidVlan);
        }
        let id = id as u16;
        let mut c = self.control.lock();
        let fc = &mut c.functions[f.index()];
        let pos = fc
            .vlans
            .iter()
            .position(|&v| v == id)
            .ok_or(ReturnCode::VlanNotFound)?;
        fc.vlans.remove(pos);
        me.set_vlan(id, false);
        Ok(HEADER_LEN)
    }

    fn query_info(&self, f: FunctionId, me: &FunctionState, resp: &mut [u8]) -> usize {
        let c = self.control.lock();
        let fc = &c.functions[f.index()];
        let mut r = QueryInfoResponse::new_zeroed();
        r.version = query_info::MODEL_VERSION.into();
        r.max_len = (MAX_MOVE_LEN as u32).into();
        r.ism_state = query_info::STATE_ONLINE.into();
        r.my_gid = me.config.gid.0.into();
        r.sba = me.sba().map_or(0, |a| a.0).into();
        {
            let q = me.ieq.lock();
            r.ieq = q.addr.map_or(0, |a| a.0).into();
            r.ieq_len = (q.len as u32).into();
        }
        if self.attach_offered(me) {
            r.ext_features = ExtFeatures::ATTACH_DMB.bits().into();
        }
        let live = c.slots.iter().filter(|s| s.state == SlotState::Registered);
        let (mut owned, mut used) = (0u32, 0u32);
        for s in live {
            owned += u32::from(s.owner == f);
            used += u32::from(s.owner != f && s.rgid == me.config.gid);
        }
        r.dmbs_owned = owned.into();
        r.dmbs_used = used.into();
        r.vlan_required = u32::from(fc.vlan_required).into();
        r.vlan_nr_ids = (fc.vlans.len() as u32).into();
        for (slot, v) in r.vlan_id.iter_mut().zip(fc.vlans.iter()) {
            *slot = (*v).into();
        }
        put(resp, r.as_bytes())
    }

    /// QUERY_RGID: reachable iff an online function of this device (the same CHID) has
    /// `rgid`, and, with a VLAN, both it and the caller are members of that VLAN.
    /// Errors: `RemoteGidUnreachable`.
    fn query_rgid(
        &self,
        me: &FunctionState,
        rgid: Gid,
        vlan: Option<u32>,
    ) -> Result<(), ReturnCode> {
        let peer = self
            .online_function_by_gid(rgid)
            .ok_or(ReturnCode::RemoteGidUnreachable)?;
        if let Some(v) = vlan {
            let v = u16::try_from(v).map_err(|_| ReturnCode::RemoteGidUnreachable)?;
            if !is_valid_vlan(v as u64) || !me.in_vlan(v) || !peer.in_vlan(v) {
                return Err(ReturnCode::RemoteGidUnreachable);
            }
        }
        Ok(())
    }

    /// REG_DMB. Checks, in order: length 1..=1 MiB (`InvalidLength`), VLAN id
    /// (`InvalidVlan`), SBA index 32..=1919 (`InvalidSbaIndex`) and free at this function
    /// (`SbaIndexInUse`), the buffer inside the caller's domain (`InvalidAddress`), a free
    /// table slot (`DmbTableFull`). On success returns the token.
    #[allow(clippy::too_many_arguments)]
    fn reg_dmb(
        &self,
        f: FunctionId,
        me: &FunctionState,
        dmb: DevAddr,
        len: u32,
        sba_idx: u32,
        vlan: Option<u32>,
        rgid: Gid,
        resp: &mut [u8],
    ) -> CmdResult {
        if len == 0 || len > MAX_DMB_LEN {
            return Err(ReturnCode::InvalidLength);
        }
        let vlan = match vlan {
            None => None,
            Some(v) if is_valid_vlan(v as u64) => Some(v as u16),
            Some(_) => return Err(ReturnCode::InvalidVlan),
        };
        let idx = sba_idx as usize;
        if !sba::is_usable_index(idx) {
            return Err(ReturnCode::InvalidSbaIndex);
        }
        let mut c = self.lock_online(me)?;
        if c.functions[f.index()].index_in_use(idx) {
            return Err(ReturnCode::SbaIndexInUse);
        }
        if !self.own_memory_contains(me, dmb, len as u64)
            || self.overlaps_registered(&c, me.config.domain, dmb, len as u64, Area::Dmb)
        {
            return Err(ReturnCode::InvalidAddress);
        }
        let slot = (0..D)
            .map(|i| (c.next_slot + i) % D)
            .find(|&s| c.slots[s].state == SlotState::Free)
            .ok_or(ReturnCode::DmbTableFull)?;
        let info = DmbInfo {
            owner: f,
            addr: dmb,
            len,
            sba_idx: idx as u16,
            rgid,
            vlan,
        };
        let (token, generation) = self.dmbs.publish(slot, &info);
        c.slots[slot] = SlotControl {
            state: SlotState::Registered,
            generation,
            owner: f,
            sba_idx: idx as u16,
            rgid,
            attachers: 0,
        };
        c.next_slot = (slot + 1) % D;
        c.functions[f.index()].set_index(idx, true);
        let mut r = RegDmbResponse::new_zeroed();
        r.dmb_tok = token.0.into();
        Ok(put(resp, r.as_bytes()))
    }

    /// The control slot named by `token` if its generation matches and it is not free.
    fn slot_of(&self, c: &Control<F, D>, token: DmbToken) -> Option<usize> {
        if !token.is_well_formed() {
            return None;
        }
        let (slot, generation) = self.dmbs.decode(token)?;
        let s = &c.slots[slot];
        (s.state != SlotState::Free && s.generation == generation).then_some(slot)
    }

    /// UNREG_DMB: only the owner may unregister (`InvalidToken` otherwise, as for unknown,
    /// stale or forged tokens). Waits for moves in flight; afterwards no move writes the
    /// buffer. If another function has it attached, release is deferred to the last detach.
    fn unreg_dmb(&self, f: FunctionId, token: DmbToken, resp: &mut [u8]) -> CmdResult {
        let mut c = self.control.lock();
        let slot = self
            .slot_of(&c, token)
            .filter(|&s| c.slots[s].state == SlotState::Registered && c.slots[s].owner == f)
            .ok_or(ReturnCode::InvalidToken)?;
        self.dmbs.revoke(slot);
        let idx = c.slots[slot].sba_idx as usize;
        c.functions[f.index()].set_index(idx, false);
        let state = if c.slots[slot].attachers != 0 {
            c.slots[slot].state = SlotState::Orphaned;
            UNREG_DEFERRED
        } else {
            c.slots[slot].state = SlotState::Free;
            self.post_event(
                f,
                EventType::Buffer,
                event_code::BUF_DMB_UNREGISTERED,
                token.0,
                0,
                true,
            );
            UNREG_RELEASED
        };
        let mut r = UnregDmbResponse::new_zeroed();
        r.state = state.into();
        Ok(put(resp, r.as_bytes()))
    }

    /// SIGNAL_IEQ: a software event (type 2, the caller's code and info, `tok` = the
    /// caller's GID) in the target's IEQ; its interrupt only with `trigger_irq`.
    /// Errors: `RemoteGidUnreachable`, `RemoteNoEventQueue`.
    fn signal_ieq(
        &self,
        me: &FunctionState,
        rgid: Gid,
        trigger: bool,
        code: u32,
        info: u64,
    ) -> CmdResult {
        let target = self
            .functions
            .iter()
            .position(|s| s.is_online() && s.config.gid == rgid)
            .ok_or(ReturnCode::RemoteGidUnreachable)?;
        let target = FunctionId(target as u16);
        if !self.post_event(
            target,
            EventType::Software,
            code,
            me.config.gid.0,
            info,
            trigger,
        ) {
            return Err(ReturnCode::RemoteNoEventQueue);
        }
        Ok(HEADER_LEN)
    }

    fn attach_offered(&self, me: &FunctionState) -> bool {
        self.board.may_map(me.config.domain, me.config.domain)
    }

    /// ATTACH_DMB (extension): the caller must be the DMB's authorized writer and share the
    /// owner's memory. Errors: `UnknownCommand` (extension not offered to this function),
    /// `InvalidToken`, `AttachNotPermitted` (not the writer, other memory, already attached).
    fn attach_dmb(
        &self,
        f: FunctionId,
        me: &FunctionState,
        token: DmbToken,
        resp: &mut [u8],
    ) -> CmdResult {
        if !self.attach_offered(me) {
            return Err(ReturnCode::UnknownCommand);
        }
        let mut c = self.lock_online(me)?;
        let slot = self
            .slot_of(&c, token)
            .filter(|&s| c.slots[s].state == SlotState::Registered)
            .ok_or(ReturnCode::InvalidToken)?;
        let info = self.dmbs.info(slot);
        let owner_domain = self.functions[info.owner.index()].config.domain;
        let mask = 1u64 << f.index();
        if info.rgid != me.config.gid
            || !self.board.may_map(me.config.domain, owner_domain)
            || c.slots[slot].attachers & mask != 0
        {
            return Err(ReturnCode::AttachNotPermitted);
        }
        c.slots[slot].attachers |= mask;
        let mut r = AttachDmbResponse::new_zeroed();
        r.dmb = info.addr.0.into();
        r.dmb_tok = token.0.into();
        r.dmb_len = info.len.into();
        r.sba_idx = u32::from(info.sba_idx).into();
        Ok(put(resp, r.as_bytes()))
    }

    /// DETACH_DMB (extension). Errors: `UnknownCommand` (not offered), `NotAttached`.
    fn detach_dmb(&self, f: FunctionId, me: &FunctionState, token: DmbToken) -> CmdResult {
        if !self.attach_offered(me) {
            return Err(ReturnCode::UnknownCommand);
        }
        let mut c = self.control.lock();
        let mask = 1u64 << f.index();
        let slot = self
            .slot_of(&c, token)
            .filter(|&s| c.slots[s].attachers & mask != 0)
            .ok_or(ReturnCode::NotAttached)?;
        self.detach_slot(&mut c, slot, mask);
        Ok(HEADER_LEN)
    }

    fn detach_slot(&self, c: &mut Control<F, D>, slot: usize, mask: u64) {
        let s = &mut c.slots[slot];
        s.attachers &= !mask;
        if s.state == SlotState::Orphaned && s.attachers == 0 {
            s.state = SlotState::Free;
            let (owner, token) = (s.owner, self.dmbs.token(slot, s.generation));
            self.post_event(
                owner,
                EventType::Buffer,
                event_code::BUF_DMB_UNREGISTERED,
                token.0,
                0,
                true,
            );
        }
    }

    // ------------------------------------------------------------------ moves

    /// One store-block of function `from`: writes `data` into the DMB addressed by the
    /// request word `req` and, with the signal flag, signals the DMB's owner (DMBE mask bit,
    /// DMB bit, summary bit, interrupt). Lock-free.
    ///
    /// # Errors
    /// [`MoveError`]; a refused move writes nothing and signals nothing.
    pub fn store_block(&self, from: FunctionId, req: u64, data: &[u8]) -> Result<(), MoveError> {
        let r = self.try_store_block(from, req, data);
        if r.is_err() {
            let counter = self
                .movers
                .get(from.index())
                .map_or(&self.stats.moves_refused, |m| &m.moves_refused);
            counter.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn try_store_block(&self, from: FunctionId, req: u64, data: &[u8]) -> Result<(), MoveError> {
        if data.len() > MAX_MOVE_LEN {
            return Err(MoveError::TooLong);
        }
        let me = self
            .functions
            .get(from.index())
            .filter(|s| s.is_online())
            .ok_or(MoveError::FunctionOffline)?;
        let m = MoveRequest::parse(req);
        let dmb = self.dmbs.lease(m.token).ok_or(MoveError::InvalidToken)?;
        let info = dmb.info;
        if info.rgid != me.config.gid {
            return Err(MoveError::AccessDenied);
        }
        if let Some(v) = info.vlan {
            if !me.in_vlan(v) {
                return Err(MoveError::AccessDenied);
            }
        }
        if m.offset as u64 + data.len() as u64 > info.len as u64 {
            return Err(MoveError::OutOfRange);
        }
        let owner = &self.functions[info.owner.index()];
        let mem = self.own_memory(owner).ok_or(MoveError::MemoryFault)?;
        mem.write(DevAddr(info.addr.0 + m.offset as u64), data)
            .map_err(|_| MoveError::MemoryFault)?;
        // `from` indexes `functions` (checked above), and `movers` is at least as long.
        let counts = &self.movers[from.index()];
        counts.moves.fetch_add(1, Ordering::Relaxed);
        counts
            .bytes_moved
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if m.signal {
            self.signal_dmb(info.owner, owner, info.sba_idx as usize, m.dmbe_idx, counts);
        }
        drop(dmb);
        Ok(())
    }

    /// Sets the DMBE mask bit, the DMB bit and the summary bit in the owner's SBA (if one is
    /// registered), then raises the owner's interrupt; counts both in the mover's `counts`.
    fn signal_dmb(
        &self,
        owner_id: FunctionId,
        owner: &FunctionState,
        idx: usize,
        dmbe_idx: u8,
        counts: &MoveStats,
    ) {
        let Some(_sba_lease) = owner.sba_lease.acquire(None) else {
            return;
        };
        let Some(mem) = self.own_memory(owner) else {
            return;
        };
        let base = DevAddr(owner.sba_addr.load(Ordering::Relaxed));
        // The SBA was checked to lie in the owner's domain at REG_SBA; this cannot fail.
        if set_dmb_signal(mem, base, idx, dmbe_idx).is_ok() {
            counts.signals.fetch_add(1, Ordering::Relaxed);
            self.raise(owner_id, &counts.interrupts);
        }
    }

    // ------------------------------------------------------------------ events

    /// Writes one event into `target`'s IEQ (index rule: entry `k`, then `idx = k + 1`),
    /// sets the SBA event bit and, if `irq`, raises the interrupt. Returns `false` if the
    /// target has no IEQ.
    fn post_event(
        &self,
        target: FunctionId,
        ty: EventType,
        code: u32,
        tok: u64,
        info: u64,
        irq: bool,
    ) -> bool {
        let Some(t) = self.functions.get(target.index()) else {
            return false;
        };
        let Some(mem) = self.own_memory(t) else {
            return false;
        };
        {
            let mut q = t.ieq.lock();
            let Some(base) = q.addr else {
                return false;
            };
            let k = q.next;
            let ev = Event {
                ty: (ty as u32).into(),
                code: code.into(),
                tok: tok.into(),
                time: self.board.clock().now().into(),
                info: info.into(),
            };
            let at = base.0 + ieq::entry_offset(k) as u64;
            let _ = mem.store_words(DevAddr(at), &ev);
            let _ = mem.store_be_u64(base, k as u64 + 1);
            q.next = (k + 1) % q.entries;
        }
        if let Some(_l) = t.sba_lease.acquire(None) {
            let base = t.sba_addr.load(Ordering::Relaxed);
            let _ = mem.fetch_or_u8(DevAddr(base), SbaFlags::EVENT.bits());
        }
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if irq {
            self.raise(target, &self.stats.interrupts);
        }
        true
    }

    /// Raises `f`'s interrupt, counted first in `counter` (so that a handler it wakes
    /// sees the count); nothing if the board gives `f` no line.
    fn raise(&self, f: FunctionId, counter: &AtomicU64) {
        if let Some(line) = self.board.irq(f) {
            counter.fetch_add(1, Ordering::Relaxed);
            line.raise();
        }
    }

    // ------------------------------------------------------------------ board events

    /// The partition of `f` went away: every DMB it owns is dropped (moves in flight
    /// finish first; none follows), its attachments are released, its SBA and IEQ are
    /// forgotten, and it refuses commands and moves until [`Device::function_up`]. Every
    /// other online function with an IEQ receives a device event (`tok` = `f`'s GID).
    /// Returns `false` if `f` does not exist. A function that is already down stays down
    /// and its peers are not told again.
    pub fn function_down(&self, f: FunctionId, reason: DownReason) -> bool {
        let Some(me) = self.functions.get(f.index()) else {
            return false;
        };
        if !me.online.swap(false, Ordering::AcqRel) {
            return true;
        }
        {
            let mut c = self.control.lock();
            let mask = 1u64 << f.index();
            for slot in 0..D {
                let s = c.slots[slot];
                if s.state != SlotState::Free && s.owner == f {
                    self.dmbs.revoke(slot);
                    c.slots[slot].state = SlotState::Free;
                    c.slots[slot].attachers = 0;
                } else if s.attachers & mask != 0 {
                    self.detach_slot(&mut c, slot, mask);
                }
            }
            let fc = &mut c.functions[f.index()];
            for v in fc.vlans.iter() {
                me.set_vlan(*v, false);
            }
            *fc = FunctionControl::new();
            me.sba_lease.revoke();
            *me.ieq.lock() = Default::default();
        }
        let code = match reason {
            DownReason::Crash => event_code::DEV_GID_ERR_STATE,
            DownReason::Disabled => event_code::DEV_GID_DISABLED,
        };
        for (i, other) in self.functions.iter().enumerate() {
            if i != f.index() && other.is_online() {
                self.post_event(
                    FunctionId(i as u16),
                    EventType::Device,
                    code,
                    me.config.gid.0,
                    0,
                    true,
                );
            }
        }
        ism_hal::ism_debug!("ism: function {} down", f.0);
        true
    }

    /// `f` is back, with nothing registered (its host probes it again). Returns `false` if
    /// `f` does not exist.
    pub fn function_up(&self, f: FunctionId) -> bool {
        match self.functions.get(f.index()) {
            Some(me) => {
                me.online.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------------ helpers

    /// Takes the control lock for a command of `me` that creates state, re-checking under
    /// the lock that `me` is still online: `execute` checks before dispatch, but
    /// [`Device::function_down`] may run in between, and a command that registered after its
    /// clean-up would leave an SBA, IEQ, VLAN or DMB on a function that is down.
    fn lock_online(
        &self,
        me: &FunctionState,
    ) -> Result<spin::MutexGuard<'_, Control<F, D>>, ReturnCode> {
        let c = self.control.lock();
        if me.is_online() {
            Ok(c)
        } else {
            Err(ReturnCode::FunctionOffline)
        }
    }

    /// Whether `[addr, addr + len)` in `domain` overlaps a registered SBA or IEQ of any
    /// function of that domain (other than `area` itself), or, when `area` is an SBA or IEQ,
    /// a registered DMB there. The device refuses such registrations so that no move can land
    /// in a status area and no event in a buffer; DMBs may overlap each other (only their
    /// owner's data is at stake).
    fn overlaps_registered(
        &self,
        c: &Control<F, D>,
        domain: DomainId,
        addr: DevAddr,
        len: u64,
        area: Area,
    ) -> bool {
        let hit = |a: u64, l: u64| addr.0 < a.saturating_add(l) && a < addr.0.saturating_add(len);
        for (g, st) in self.functions.iter().enumerate() {
            if st.config.domain != domain {
                continue;
            }
            let g = FunctionId(g as u16);
            if area != Area::Sba(g) {
                if let Some(sba) = st.sba() {
                    if hit(sba.0, SBA_SIZE as u64) {
                        return true;
                    }
                }
            }
            if area != Area::Ieq(g) {
                let q = st.ieq.lock();
                if let Some(a) = q.addr {
                    if hit(a.0, q.len as u64) {
                        return true;
                    }
                }
            }
        }
        if area == Area::Dmb {
            return false;
        }
        (0..D).any(|slot| {
            let s = &c.slots[slot];
            s.state != SlotState::Free
                && self.functions[s.owner.index()].config.domain == domain
                && {
                    let i = self.dmbs.info(slot);
                    hit(i.addr.0, i.len as u64)
                }
        })
    }

    fn own_memory(&self, me: &FunctionState) -> Option<&B::Memory> {
        self.board.memory(me.config.domain)
    }

    fn own_memory_contains(&self, me: &FunctionState, addr: DevAddr, len: u64) -> bool {
        self.own_memory(me).is_some_and(|m| m.contains(addr, len))
    }

    fn online_function_by_gid(&self, gid: Gid) -> Option<&FunctionState> {
        self.functions
            .iter()
            .find(|s| s.is_online() && s.config.gid == gid)
    }
}

/// Copies a response into the buffer; returns its length.
fn put(resp: &mut [u8], bytes: &[u8]) -> usize {
    resp[HEADER_LEN..bytes.len()].copy_from_slice(&bytes[HEADER_LEN..]);
    bytes.len()
}

/// Sets the bits a signalled move into DMB `idx` (DMBE `dmbe_idx`) leaves in the SBA at
/// `sba`: the DMBE mask bit (its two bytes in one doubleword OR), then the DMB bit, then
/// the summary bit, each an atomic OR, so a host that sees the summary bit finds the others (Linux's `ism_handle_irq` reads the
/// DMB bits after the summary, `ism_move` is what sets them on the real device). The one
/// home of this order: the device's moves use it, and so do boards whose hosts signal a
/// shared-memory DMB themselves (the process loopback board's direct moves).
///
/// # Errors
/// `MemError::OutOfBounds` if `idx` is not an SBA index (at least `NR_DMBS`) or the SBA's
/// address wraps around; the memory's error if the SBA does not lie in `mem`.
pub fn set_dmb_signal<M: DmaMemory>(
    mem: &M,
    sba_base: DevAddr,
    idx: usize,
    dmbe_idx: u8,
) -> Result<(), ism_hal::MemError> {
    // The device passes an index it checked at REG_DMB and its own SBA address; a loopback
    // host's direct move passes values from memory other hosts can write: out of range is
    // an error here, never an overflow.
    if idx >= sba::NR_DMBS {
        return Err(ism_hal::MemError::OutOfBounds);
    }
    let base = sba_base.0;
    let at = |off: usize| {
        base.checked_add(off as u64)
            .map(DevAddr)
            .ok_or(ism_hal::MemError::OutOfBounds)
    };
    let bit = sba::dmbe_mask_bit(dmbe_idx).to_be_bytes();
    let mask_at = at(sba::dmbe_mask_offset(idx))?;
    let (byte, mask) = sba::dmb_bit(idx);
    // The mask's two bytes in one operation when they share a doubleword: one locked
    // instruction fewer on every signal.
    if let Some((word_at, k)) = sba::dmbe_mask_word(mask_at.0) {
        let mut word = [0; 8];
        word[k..k + 2].copy_from_slice(&bit);
        mem.fetch_or_u64(DevAddr(word_at), word)?;
    } else {
        mem.fetch_or_u8(mask_at, bit[0])?;
        mem.fetch_or_u8(at(sba::dmbe_mask_offset(idx) + 1)?, bit[1])?;
    }
    mem.fetch_or_u8(at(byte)?, mask)?;
    mem.fetch_or_u8(at(0)?, SbaFlags::SUMMARY.bits())?;
    Ok(())
}
