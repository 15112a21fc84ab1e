//! The SMC-D stack of one operating system: its SMC-D devices, its link groups, and the
//! routing of device interrupts and events to connections.
//!
//! * Each device gets one [`IsmClient`] ([`StackDevice`]); a DMB signal for SBA index `i`
//!   goes to the connection whose RMB has index `i` (Linux's `smcd->conn[]`).
//! * A link group is the set of connections with one peer GID over one device; new
//!   connections reuse it (no "first contact") in either direction: as Linux's
//!   `net/smc/smc_core.c` `smcd_lgr_match` notes, SMC-D has only one link-group role, so
//!   the role that opened a link group is recorded ([`LinkGroup::role`]) but not matched.
//!   An idle link
//!   group lingers for reuse until [`SmcStack::close_idle_link_groups`] or
//!   [`SmcStack::shutdown`] tears it down, which sends the peer a `SIGNAL_IEQ` shutdown
//!   (event code 0x80).
//! * A link group keeps the RMBs of its ended connections registered (zeroed when taken
//!   again) for its next ones, as Linux's `smc_buf_unuse` and `smc_buf_get_slot` do:
//!   [`KEPT_RMBS`], [`SmcStack::release_conn`].
//! * Events: a software shutdown from a peer terminates the link groups with that peer on
//!   the VLAN the event names; a device event naming a peer GID (its function went down)
//!   terminates them on every VLAN (`net/smc/smc_core.c` `smc_smcd_terminate`, called from
//!   `net/smc/smc_ism.c` `smcd_handle_sw_event` / `smcd_handle_event`). Their connections
//!   fail with `ConnectionReset`. A TESTLINK request (0x83) is answered.
//! * Link-group ids start at a random point per stack and step by 256, as Linux's
//!   `smc_lgr_create` steps `SMC_LGR_NUM_INCR`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloc::string::String;
#[cfg(test)]
use alloc::vec;
use alloc::vec::Vec;

use ism_abi::wire::ieq::EventType;

use super::cdc::ConnStateFlags;
use super::clc::Eid;
use super::conn::Conn;
use super::device::{SmcdGid, SmcdOps};
use super::stats::StatsCounters;
use super::wait::WaitMode;
use crate::ism::{Dmb, IsmClient, IsmError, IsmEvent};

/// SMC software event code: link group shutdown.
pub const EVENT_CODE_SHUTDOWN: u32 = 0x80;
/// SMC software event code: test link.
pub const EVENT_CODE_TESTLINK: u32 = 0x83;
/// `info.code` of a request.
pub const EVENT_REQUEST: u16 = 0x0001;
/// `info.code` of a response.
pub const EVENT_RESPONSE: u16 = 0x0002;

/// Most SBA indices a device has (routing table size).
const MAX_INDEX: usize = ism_abi::wire::sba::NR_DMBS;

/// Step between link-group ids (`SMC_LGR_NUM_INCR` in `net/smc/smc_core.h`).
pub const LGR_ID_STEP: u32 = 256;

/// The VLAN id of a device event: "every VLAN" (`VLAN_VID_MASK`).
pub const VLAN_ALL: u16 = 0x0FFF;

/// A fresh, unpredictable starting link-group id: the standard library's per-process random
/// hash keys, the wall clock and a process-wide counter, so that two stacks (in one process
/// or in two) do not start at the same id. Never 0.
fn lgr_id_seed() -> u32 {
    static STACKS: AtomicU32 = AtomicU32::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(STACKS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let id = (h.finish() as u32) & !(LGR_ID_STEP - 1);
    if id == 0 {
        LGR_ID_STEP
    } else {
        id
    }
}

/// Builds the 64-bit `info` of an SMC software event: link group id (bytes 0–3), VLAN id
/// (bytes 4–5), code (bytes 6–7), big-endian as on s390.
pub fn event_info(lgr_id: u32, vlan: u16, code: u16) -> u64 {
    ((lgr_id as u64) << 32) | ((vlan as u64) << 16) | code as u64
}

/// Options of a stack.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Use ATTACH_DMB (no-copy sending) when the chosen device offers it.
    pub nocopy: bool,
    /// Requested RMB size in bytes (rounded to 16 KiB × 2^n, at most 1 MiB).
    pub buffer_size: usize,
    /// The user EID offered in proposals (SMC-Dv2 needs an EID; off s390 there is no SEID).
    pub ueid: Option<Eid>,
    /// Offer the system EID (the s390 default; off elsewhere).
    pub seid: bool,
    /// Offer the first native (non-emulated) device as SMC-Dv1 too.
    pub offer_v1: bool,
    /// How readers and writers wait when not busy-polling.
    pub wait: WaitMode,
    /// New connections busy-poll.
    pub busy_poll: bool,
    /// Host name sent in the first-contact extension.
    pub hostname: String,
    /// How long to wait for a CLC message.
    pub clc_timeout: Duration,
    /// The s390 CPU id the system EID is built from when [`StackConfig::seid`] is on.
    pub cpu_id: CpuId,
    /// A peer whose function goes away ends its connections as a TCP peer's exit would
    /// (`Conn::set_peer_exit_like_tcp`) instead of with a reset (off: Linux's SMC-D, where
    /// a function is a system, and its loss a crash). `ism-run` sets it: there a
    /// function is one process, and a process that ends without closing its sockets
    /// (killed by a signal, `_exit`) is no crash to its peers over TCP.
    pub peer_exit_like_tcp: bool,
}

/// The parts of an s390 CPU id that Linux builds the system EID from
/// (`net/smc/smc_ism.c` `smc_ism_create_system_eid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuId {
    /// The CPU identification (its low 16 bits go into the SEID).
    pub ident: u32,
    /// The machine type (e.g. 0x8561 for a z15).
    pub machine: u16,
}

impl Default for CpuId {
    /// A z15 with CPU ident 0x01_2345.
    fn default() -> Self {
        Self {
            ident: 0x0001_2345,
            machine: 0x8561,
        }
    }
}

impl StackConfig {
    /// The system EID this stack offers and accepts, if [`StackConfig::seid`] is on: as
    /// Linux builds it on s390, never all zeros.
    pub fn system_eid(&self) -> Option<Eid> {
        self.seid
            .then(|| super::clc::s390_system_eid(self.cpu_id.ident, self.cpu_id.machine))
    }
}

/// The user EID this model's stacks use unless configured otherwise.
pub fn default_ueid() -> Eid {
    let mut e = [b' '; 32];
    e[..12].copy_from_slice(b"ISM-SIM-UEID");
    e
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            nocopy: true,
            buffer_size: 256 << 10,
            ueid: Some(default_ueid()),
            seid: false,
            offer_v1: true,
            wait: WaitMode::default(),
            busy_poll: false,
            hostname: String::from("ism-sim"),
            clc_timeout: Duration::from_secs(6),
            cpu_id: CpuId::default(),
            peer_exit_like_tcp: false,
        }
    }
}

/// Whether the peer of the connection on `rmb` is done with it: its CDC area shows the
/// peer's close or abort, after which the peer writes nothing more into it
/// (`net/smc/smc_close.c` `smc_close_active`: the closing CDC is the last).
fn peer_finished(mem: &dyn ism_hal::memory::DmaMemory, rmb: &Dmb) -> bool {
    super::conn::peer_cdc_at(mem, rmb.addr)
        .conn_state
        .intersects(ConnStateFlags::PEER_CONN_CLOSED | ConnStateFlags::PEER_CONN_ABORT)
}

/// Role of the local side when the link group was opened (SMC-D link groups are shared by
/// both directions; this is only a record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We connected.
    Client,
    /// We accepted.
    Server,
}

/// A link group: connections with one peer over one device.
#[derive(Debug)]
pub struct LinkGroup {
    /// Link group id (sent in CLC and in shutdown events).
    pub id: u32,
    /// Index of the device in the stack.
    pub device: usize,
    /// The peer's GID.
    pub peer_gid: SmcdGid,
    /// Our role in the handshake that opened the link group.
    pub role: Role,
    /// The VLAN id (this model registers DMBs without VLAN: 0).
    pub vlan_id: u16,
    conns: Mutex<Members>,
    peer_shutdown: std::sync::atomic::AtomicBool,
    sync_err: std::sync::atomic::AtomicBool,
    /// The device's operations and the RMBs to unregister (see [`DeviceOps`]).
    ops: DeviceOps,
}

/// A device's operations, in a link group (which prints without them), and the RMBs
/// that ended link groups of that device kept: a link group can end in the device's
/// interrupt path (a peer's shutdown or GID event), where no command may be issued (the
/// command could wait on what the interrupt path holds), so its RMBs are left here and
/// unregistered by the next caller outside it ([`SmcStack::unregister_ended`]), as Linux
/// frees a terminated link group's buffers later from a work queue
/// (`net/smc/smc_core.c` `smc_lgr_free_work`).
#[derive(Clone)]
struct DeviceOps {
    ops: Arc<dyn SmcdOps>,
    ended: Arc<Mutex<Vec<Dmb>>>,
}

impl core::fmt::Debug for DeviceOps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SmcdOps")
    }
}

/// Most RMBs a link group keeps registered for its next connections (see
/// `LinkGroup::keep_rmb`): a process that once had many connections to one peer keeps
/// this many, not all, of their buffers (Linux keeps all). A process holds an RMB per
/// connection in flight to a peer: with 16, 50 connections set up in parallel (`ab -c 50`
/// against nginx under `ism-run`, with handshakes off the accept path) paid a REG_DMB
/// and an UNREG_DMB for most connections (3.9 board commands per connection instead of
/// 1). Kept ones never stand in the way of a new RMB: the first refusal of the device
/// frees them.
pub const KEPT_RMBS: usize = 64;

/// RMBs of ended connections that a link group keeps registered for its next ones, as
/// Linux keeps its buffers in `lgr->rmbs` (`net/smc/smc_core.c` `smc_buf_unuse` zeroes
/// one and marks it unused; `smc_buf_get_slot` hands it to the next connection that asks
/// for its size): a connection then costs no REG_DMB and no UNREG_DMB.
#[derive(Debug, Default)]
struct KeptRmbs {
    /// Free for a new connection.
    free: Vec<Dmb>,
    /// Of connections we closed whose peer had not closed yet: it may still write its
    /// CDCs into them. Each becomes free once its CDC area shows the peer's close or
    /// abort (looked at when a connection asks for an RMB).
    closing: Vec<Dmb>,
}

impl KeptRmbs {
    fn len(&self) -> usize {
        self.free.len() + self.closing.len()
    }
}

/// The connections of a link group, and how it ended (under one lock, so that a
/// connection a handshake adds after the end ends too: see [`LinkGroup::end`]).
#[derive(Debug, Default)]
struct Members {
    conns: Vec<Weak<Conn>>,
    ended: Option<End>,
    rmbs: KeptRmbs,
}

/// How a link group ended, which is how its connections end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Without a goodbye (own function gone, peer's shutdown): `Conn::terminate`.
    Terminated,
    /// The peer's function went away (the device's event for its GID):
    /// `Conn::peer_function_gone`.
    PeerGone,
    /// By us (sync error, failed first contact, stack shutdown, idle): `Conn::abort`, which
    /// tells the peer.
    Aborted,
}

impl End {
    fn apply(self, c: &Conn) {
        match self {
            End::Terminated => c.terminate(),
            End::PeerGone => c.peer_function_gone(),
            End::Aborted => c.abort(),
        }
    }
}

impl LinkGroup {
    /// Live connections.
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn prune(&self) -> usize {
        let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        m.conns.retain(|w| w.strong_count() > 0);
        m.conns.len()
    }

    /// Ends the link group `how` (the first end wins) and its connections with it. A
    /// handshake that picked the link group before the end and adds its connection after
    /// it ([`SmcStack::attach_conn`]) finds it ended and ends the connection the same way:
    /// as Linux's `net/smc/smc_core.c` `__smc_lgr_terminate` kills the connections a
    /// listen worker has registered in the link group (`smc_conn_create`) whatever step
    /// of the handshake they are in.
    fn end(&self, how: End) {
        let (how, conns, kept) = {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let how = *m.ended.get_or_insert(how);
            (
                how,
                m.conns.iter().filter_map(Weak::upgrade).collect::<Vec<_>>(),
                core::mem::take(&mut m.rmbs),
            )
        };
        self.leave_kept(kept);
        for c in conns {
            how.apply(&c);
        }
    }

    /// Ends the link group (aborted) if it has no live connection; returns whether it did.
    fn end_if_idle(&self) -> bool {
        let kept = {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            m.conns.retain(|w| w.strong_count() > 0);
            if !m.conns.is_empty() {
                return false;
            }
            m.ended.get_or_insert(End::Aborted);
            core::mem::take(&mut m.rmbs)
        };
        self.leave_kept(kept);
        true
    }

    /// Whether `conn` is one of this link group's connections.
    fn holds(&self, conn: &Arc<Conn>) -> bool {
        let m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        m.conns
            .iter()
            .any(|w| core::ptr::eq(w.as_ptr(), Arc::as_ptr(conn)))
    }

    /// How many RMBs the link group keeps for its next connections (free or waiting for
    /// their peer's close).
    pub fn kept_rmbs(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rmbs
            .len()
    }

    /// Keeps `rmb`, the RMB of a connection that ended cleanly (we closed it, nothing
    /// broke), for a later connection of this link group, if the link group still runs
    /// and keeps fewer than [`KEPT_RMBS`]; unregisters it otherwise. It is free at once
    /// if the peer closed too (it writes nothing more into it), else when its close or
    /// abort shows in the RMB's CDC area.
    fn keep_rmb(&self, rmb: Dmb) {
        let peer_gone = peer_finished(self.ops.ops.memory(), &rmb);
        {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            if m.ended.is_none() && m.rmbs.len() < KEPT_RMBS {
                if peer_gone {
                    m.rmbs.free.push(rmb);
                } else {
                    m.rmbs.closing.push(rmb);
                }
                return;
            }
        }
        self.unregister(&rmb);
    }

    /// A kept RMB of `len` bytes for a new connection, zeroed (the cursors and flags of
    /// its CDC area start from nothing, as in a new one), if the link group has one.
    fn take_rmb(&self, len: u32) -> Option<Dmb> {
        let mem = self.ops.ops.memory();
        let rmb = {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            if m.ended.is_some() {
                return None;
            }
            let kept = &mut m.rmbs;
            let mut i = 0;
            while i < kept.closing.len() {
                if peer_finished(mem, &kept.closing[i]) {
                    let d = kept.closing.swap_remove(i);
                    kept.free.push(d);
                } else {
                    i += 1;
                }
            }
            let i = kept.free.iter().position(|d| d.len == len)?;
            kept.free.swap_remove(i)
        };
        if mem.zero(rmb.addr, u64::from(rmb.len)).is_err() {
            self.unregister(&rmb);
            return None;
        }
        Some(rmb)
    }

    /// Unregisters the free kept RMBs (the device refused a new one: they may be what it
    /// lacks); returns how many.
    fn free_kept(&self) -> usize {
        let free = {
            let mut m = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            core::mem::take(&mut m.rmbs.free)
        };
        let n = free.len();
        for d in &free {
            self.unregister(d);
        }
        n
    }

    /// Leaves the kept RMBs of the ended link group to [`SmcStack::unregister_ended`]
    /// (this may run in the device's interrupt path).
    fn leave_kept(&self, kept: KeptRmbs) {
        if kept.len() == 0 {
            return;
        }
        self.ops
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(kept.free.into_iter().chain(kept.closing));
    }

    fn unregister(&self, rmb: &Dmb) {
        if let Err(e) = self.ops.ops.unregister_dmb(rmb) {
            log::warn!("smc: kept RMB not unregistered: {e:?}");
        }
    }

    fn terminate(&self) {
        self.end(End::Terminated);
    }
}

/// Client handshakes that have not yet settled on a link group.
#[derive(Debug, Default)]
struct InFlight {
    /// Proposals sent whose ACCEPT is not handled yet.
    running: usize,
    /// Of those, the ones waiting in [`SmcStack::link_group_settled`].
    waiting: usize,
}

/// Counters of a stack.
#[derive(Debug, Default)]
pub struct StackCounters {
    /// Link groups created.
    pub lgrs_created: AtomicU64,
    /// Link groups reused by a new connection.
    pub lgrs_reused: AtomicU64,
    /// RMBs of ended connections reused by a new one (no REG_DMB: see [`KEPT_RMBS`]).
    pub rmbs_reused: AtomicU64,
    /// Link groups terminated by a peer (shutdown or device event), or because our own
    /// function went away.
    pub lgrs_terminated: AtomicU64,
    /// Shutdown events sent.
    pub shutdowns_sent: AtomicU64,
    /// TESTLINK requests answered.
    pub testlinks_answered: AtomicU64,
    /// Client handshakes that waited for a link group another handshake was opening.
    pub lgr_waits: AtomicU64,
}

/// One device of the stack, and its interrupt client.
pub struct StackDevice {
    index: usize,
    ops: Arc<dyn SmcdOps>,
    client: AtomicU32,
    conns: std::sync::RwLock<Vec<Option<Arc<Conn>>>>,
    stack: Weak<SmcStack>,
    /// RMBs of ended link groups, to unregister (see [`SmcStack::unregister_ended`]).
    ended_rmbs: Arc<Mutex<Vec<Dmb>>>,
}

impl StackDevice {
    /// The device operations.
    pub fn ops(&self) -> &Arc<dyn SmcdOps> {
        &self.ops
    }

    /// Position in the stack's device list.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The client id under which RMBs of this device are registered.
    pub fn client_id(&self) -> u8 {
        self.client.load(Ordering::Relaxed) as u8
    }

    /// Routes signals of SBA index `idx` to `conn` (or stops routing).
    pub fn set_conn(&self, idx: u32, conn: Option<Arc<Conn>>) {
        if let Some(slot) = self
            .conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(idx as usize)
        {
            *slot = conn;
        }
    }
}

impl IsmClient for StackDevice {
    fn handle_irq(&self, sba_idx: u32, _dmbe_mask: u16) {
        let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(c)) = conns.get(sba_idx as usize) {
            c.on_signal();
        }
    }

    fn handle_event(&self, event: &IsmEvent) {
        if let Some(stack) = self.stack.upgrade() {
            stack.on_event(self.index, event);
        }
    }

    fn handle_function_gone(&self) {
        if let Some(stack) = self.stack.upgrade() {
            stack.terminate_device(self.index);
        }
    }
}

/// The client the stack registers with a driver: forwards to its [`StackDevice`] while the
/// stack lives, and does nothing after.
struct ClientLink(Weak<StackDevice>);

impl IsmClient for ClientLink {
    fn handle_irq(&self, sba_idx: u32, dmbe_mask: u16) {
        if let Some(d) = self.0.upgrade() {
            d.handle_irq(sba_idx, dmbe_mask);
        }
    }

    fn handle_event(&self, event: &IsmEvent) {
        if let Some(d) = self.0.upgrade() {
            d.handle_event(event);
        }
    }

    fn handle_function_gone(&self) {
        if let Some(d) = self.0.upgrade() {
            d.handle_function_gone();
        }
    }
}

/// The SMC-D stack of one OS.
pub struct SmcStack {
    config: StackConfig,
    devices: Vec<Arc<StackDevice>>,
    lgrs: Mutex<Vec<Arc<LinkGroup>>>,
    next_lgr_id: AtomicU32,
    next_tag: AtomicU32,
    testlink: (Mutex<Vec<(SmcdGid, u32)>>, Condvar),
    clients: (Mutex<InFlight>, Condvar),
    counters: StackCounters,
    stats: StatsCounters,
}

impl SmcStack {
    /// A stack over `devices` (in preference order: Linux puts loopback first), registering
    /// itself as a client of each.
    ///
    /// # Errors
    /// The device's error if it has no room for another client.
    pub fn new(config: StackConfig, devices: Vec<Arc<dyn SmcdOps>>) -> Result<Arc<Self>, IsmError> {
        let seed = lgr_id_seed();
        let stack = Arc::new_cyclic(|weak: &Weak<SmcStack>| SmcStack {
            config,
            devices: devices
                .into_iter()
                .enumerate()
                .map(|(index, ops)| {
                    Arc::new(StackDevice {
                        index,
                        ops,
                        client: AtomicU32::new(0),
                        conns: std::sync::RwLock::new((0..MAX_INDEX).map(|_| None).collect()),
                        stack: weak.clone(),
                        ended_rmbs: Arc::default(),
                    })
                })
                .collect(),
            lgrs: Mutex::new(Vec::new()),
            next_lgr_id: AtomicU32::new(seed),
            next_tag: AtomicU32::new(seed),
            testlink: (Mutex::new(Vec::new()), Condvar::new()),
            clients: (Mutex::new(InFlight::default()), Condvar::new()),
            counters: StackCounters::default(),
            stats: StatsCounters::default(),
        });
        for d in &stack.devices {
            // The driver keeps its clients for its whole life; a weak link back keeps the
            // stack (which owns the driver) from owning itself through it.
            let link = Arc::new(ClientLink(Arc::downgrade(d)));
            let id = d.ops.add_client(link)?;
            d.client.store(id as u32, Ordering::Relaxed);
        }
        Ok(stack)
    }

    /// The options.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The devices.
    pub fn devices(&self) -> &[Arc<StackDevice>] {
        &self.devices
    }

    /// Counters.
    pub fn counters(&self) -> &StackCounters {
        &self.counters
    }

    /// The counters behind [`SmcStack::stats`].
    pub fn stats_counters(&self) -> &StatsCounters {
        &self.stats
    }

    /// Current link groups.
    pub fn link_groups(&self) -> Vec<Arc<LinkGroup>> {
        self.lgrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The link group for (`device`, `peer`), reused if one exists whatever its role;
    /// returns it and whether it is new ("first contact"). `role` is recorded in a new one.
    ///
    /// The match is Linux's `net/smc/smc_core.c` `smcd_lgr_match`: same device, same peer
    /// GID and, for an Emulated-ISM device, the same GID extension (both are compared as
    /// part of [`SmcdGid`]); a link group that saw a synchronization error is never reused.
    ///
    /// The device's queued events are handled first ([`SmcdOps::sync_events`]): a peer
    /// whose function went down (crash, deactivation, reboot) and came back with the same
    /// GID must not find the link group of its old incarnation. Linux ends those link groups
    /// on the device's GID event (`net/smc/smc_ism.c` `smc_ism_event_work`, `ISM_EVENT_GID`,
    /// then `net/smc/smc_core.c` `smc_smcd_terminate`), as [`SmcStack`] does in its event
    /// handler; handling the events already queued before the lookup keeps a late
    /// interrupt from letting the old link group be reused ("no first contact" to a peer
    /// that has none, which it declines with `SYNCERR`).
    pub fn link_group(&self, device: usize, peer: SmcdGid, role: Role) -> (Arc<LinkGroup>, bool) {
        self.devices[device].ops.sync_events();
        let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lgrs.iter().find(|l| {
            l.device == device && l.peer_gid == peer && !l.sync_err.load(Ordering::Acquire)
        }) {
            self.counters.lgrs_reused.fetch_add(1, Ordering::Relaxed);
            return (l.clone(), false);
        }
        let l = self.create_link_group(&mut lgrs, device, peer, role);
        drop(lgrs);
        // Wake clients waiting in `link_group_settled` (taking their lock first, so that a
        // waiter between its check and its wait cannot miss this).
        drop(self.clients.0.lock().unwrap_or_else(|e| e.into_inner()));
        self.clients.1.notify_all();
        (l, true)
    }

    /// The link group for (`device`, `peer`), if there is one (no new one is opened).
    pub fn find_link_group(&self, device: usize, peer: SmcdGid) -> Option<Arc<LinkGroup>> {
        let lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
        let l = lgrs.iter().find(|l| {
            l.device == device && l.peer_gid == peer && !l.sync_err.load(Ordering::Acquire)
        })?;
        self.counters.lgrs_reused.fetch_add(1, Ordering::Relaxed);
        Some(l.clone())
    }

    /// A client handshake sent its proposal (see [`SmcStack::link_group_settled`]).
    pub fn client_begin(&self) {
        let (lock, _) = &self.clients;
        lock.lock().unwrap_or_else(|e| e.into_inner()).running += 1;
    }

    /// A client handshake settled on a link group, or ended.
    pub fn client_end(&self) {
        let (lock, cond) = &self.clients;
        let mut f = lock.lock().unwrap_or_else(|e| e.into_inner());
        f.running = f.running.saturating_sub(1);
        cond.notify_all();
    }

    /// For a client whose server reuses a link group this stack does not have: waits (at
    /// most `timeout`) while another of this stack's client handshakes, still before its
    /// ACCEPT, may open it, and returns it if one did. `None` when nothing else is in
    /// flight: the handshake is out of sync (`SYNCERR`).
    ///
    /// Linux declines at once (`smc_conn_create`); two connections opened at the same
    /// moment then race. Waiting here closes that race for this stack's own connections;
    /// on the wire nothing changes.
    pub fn link_group_settled(
        &self,
        device: usize,
        peer: SmcdGid,
        timeout: Duration,
    ) -> Option<Arc<LinkGroup>> {
        let (lock, cond) = &self.clients;
        let deadline = std::time::Instant::now() + timeout;
        let mut f = lock.lock().unwrap_or_else(|e| e.into_inner());
        f.waiting += 1;
        cond.notify_all();
        self.counters.lgr_waits.fetch_add(1, Ordering::Relaxed);
        let found = loop {
            if let Some(l) = self.find_link_group(device, peer) {
                break Some(l);
            }
            let now = std::time::Instant::now();
            // Every other handshake in flight waits too: nobody will open it.
            if f.running <= f.waiting || now >= deadline {
                break None;
            }
            f = cond
                .wait_timeout(f, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        f.waiting -= 1;
        cond.notify_all();
        found
    }

    fn create_link_group(
        &self,
        lgrs: &mut Vec<Arc<LinkGroup>>,
        device: usize,
        peer: SmcdGid,
        role: Role,
    ) -> Arc<LinkGroup> {
        let l = Arc::new(LinkGroup {
            id: self.next_lgr_id.fetch_add(LGR_ID_STEP, Ordering::Relaxed),
            device,
            peer_gid: peer,
            role,
            vlan_id: 0,
            conns: Mutex::new(Members::default()),
            peer_shutdown: std::sync::atomic::AtomicBool::new(false),
            sync_err: std::sync::atomic::AtomicBool::new(false),
            ops: DeviceOps {
                ops: self.devices[device].ops.clone(),
                ended: self.devices[device].ended_rmbs.clone(),
            },
        });
        lgrs.insert(0, l.clone());
        self.counters.lgrs_created.fetch_add(1, Ordering::Relaxed);
        l
    }

    /// Terminates `lgr` after the peer declined with the synchronization flag: it is no
    /// longer reused, its connections fail with `ConnectionReset`, the peer is told. As
    /// Linux's `net/smc/smc_clc.c` `smc_clc_wait_msg` (`sync_err`, then
    /// `smc_lgr_terminate_sched`).
    pub fn terminate_link_group(&self, lgr: &Arc<LinkGroup>) {
        lgr.sync_err.store(true, Ordering::Release);
        self.lgrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| !Arc::ptr_eq(l, lgr));
        lgr.end(End::Aborted);
        self.send_shutdown(lgr);
        self.unregister_ended();
        self.counters
            .lgrs_terminated
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Device indices in the order Linux's `net/smc/smc_ism.c` `smcd_register_dev` keeps
    /// its device list when the devices register in stack order (none has a PNET id):
    /// each new device goes to the front, behind loopback-ism if that is already there.
    /// Device selection walks the devices in this order.
    pub fn linux_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter().enumerate() {
            let front_is_loopback = order
                .first()
                .is_some_and(|&f| self.devices[f].ops.get_chid() == super::device::LOOPBACK_CHID);
            if front_is_loopback && d.ops.get_chid() != super::device::LOOPBACK_CHID {
                order.insert(1, i);
            } else {
                order.insert(0, i);
            }
        }
        order
    }

    /// Whether any device is ISMv2-capable (Linux's system-wide `smc_ism_is_v2_capable`).
    pub fn v2_capable(&self) -> bool {
        self.devices.iter().any(|d| d.ops.supports_v2())
    }

    /// A handshake that opened `lgr` ("first contact") failed: the link group is taken out
    /// of use at once, whatever else holds it, as Linux's `net/smc/af_smc.c`
    /// `smc_conn_abort` does with `net/smc/smc_core.c` `smc_lgr_cleanup_early`: no new
    /// connection reuses it, and connections that other handshakes already put in it end
    /// (`ConnectionReset`).
    ///
    /// Keeping it while another handshake still held it (server handshakes overlap once an
    /// ACCEPT is out, as after Linux's `smc_listen_work` drops `smc_server_lgr_pending`)
    /// left a link group the peer did not have: the peer's next connection got "no first
    /// contact" and fell back with `SYNCERR`.
    ///
    /// Linux's `smc_lgr_cleanup` also signals a shutdown to the peer. Here that is done only
    /// when a connection was in the link group: otherwise the peer holds no connection in
    /// it, and the event (which names no link group: `smc_smcd_terminate` ends every link
    /// group with our GID) could arrive after the peer opened its next link group with us
    /// and end that one.
    pub fn forget_link_group(&self, lgr: &Arc<LinkGroup>) {
        let was_listed = {
            let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
            let before = lgrs.len();
            lgrs.retain(|l| !Arc::ptr_eq(l, lgr));
            lgrs.len() != before
        };
        if !was_listed {
            return; // already ended (peer shutdown, device event, sync error)
        }
        let had_conns = !lgr.connections().is_empty();
        lgr.end(End::Aborted);
        if had_conns {
            self.send_shutdown(lgr);
        }
        self.unregister_ended();
    }

    /// Adds `conn` to `lgr` and routes its RMB's signals to it.
    ///
    /// If the link group ended meanwhile (it was picked before the end), the connection
    /// ends as its other connections did.
    pub fn attach_conn(&self, lgr: &LinkGroup, conn: &Arc<Conn>) {
        conn.count_into(self.stats.traffic.clone());
        let ended = {
            let mut m = lgr.conns.lock().unwrap_or_else(|e| e.into_inner());
            m.conns.push(Arc::downgrade(conn));
            m.ended
        };
        self.devices[lgr.device].set_conn(conn.rmb().sba_idx, Some(conn.clone()));
        if let Some(how) = ended {
            how.apply(conn);
        }
    }

    /// Stops routing to `conn` and releases its device resources: the peer's DMB is
    /// detached; our RMB is kept for the link group's next connection if the connection
    /// ended cleanly ([`Conn::release_keeping_rmb`], `LinkGroup::keep_rmb`), otherwise
    /// unregistered.
    pub fn release_conn(&self, device: usize, conn: &Arc<Conn>) {
        self.unregister_ended();
        self.devices[device].set_conn(conn.rmb().sba_idx, None);
        let lgrs = self.link_groups();
        let lgr = lgrs.iter().find(|l| l.device == device && l.holds(conn));
        match (conn.release_keeping_rmb(), lgr) {
            (Some(rmb), Some(l)) => l.keep_rmb(rmb),
            (Some(rmb), None) => {
                let _ = self.devices[device].ops.unregister_dmb(&rmb);
            }
            (None, _) => {}
        }
        for l in &lgrs {
            l.prune();
        }
    }

    /// A kept RMB of `len` bytes from `lgr` for a new connection (counted in
    /// [`StackCounters::rmbs_reused`]), if it has one.
    pub fn reuse_rmb(&self, lgr: &LinkGroup, len: u32) -> Option<Dmb> {
        self.unregister_ended();
        let d = lgr.take_rmb(len)?;
        self.counters.rmbs_reused.fetch_add(1, Ordering::Relaxed);
        Some(d)
    }

    /// Unregisters the RMBs that ended link groups kept (they end in the device's
    /// interrupt path, which leaves them here: see `LinkGroup::leave_kept`). Called by
    /// every handshake, every release of a connection and the link-group teardowns.
    pub fn unregister_ended(&self) {
        for d in self.devices.iter() {
            let ended =
                core::mem::take(&mut *d.ended_rmbs.lock().unwrap_or_else(|e| e.into_inner()));
            for rmb in &ended {
                if let Err(e) = d.ops.unregister_dmb(rmb) {
                    log::warn!("smc: RMB of an ended link group not unregistered: {e:?}");
                }
            }
        }
    }

    /// Unregisters the free kept RMBs of every link group on `device` (the device refused
    /// a new RMB); returns how many.
    pub fn free_kept_rmbs(&self, device: usize) -> usize {
        self.unregister_ended();
        self.link_groups()
            .iter()
            .filter(|l| l.device == device)
            .map(|l| l.free_kept())
            .sum()
    }

    fn send_shutdown(&self, lgr: &LinkGroup) {
        let dev = &self.devices[lgr.device];
        let own = dev.ops.get_local_gid();
        // Linux's loopback has no signal_event: a link group with ourselves sends nothing.
        if lgr.peer_gid == own || lgr.peer_shutdown.load(Ordering::Acquire) {
            return;
        }
        let info = event_info(lgr.id, lgr.vlan_id, EVENT_REQUEST);
        if dev
            .ops
            .signal_event(lgr.peer_gid, true, EVENT_CODE_SHUTDOWN, info)
            .is_ok()
        {
            self.counters.shutdowns_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tears down link groups without connections, telling each peer (SIGNAL_IEQ shutdown).
    /// Returns how many were torn down.
    pub fn close_idle_link_groups(&self) -> usize {
        let idle: Vec<Arc<LinkGroup>> = {
            let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
            let (idle, busy): (Vec<_>, Vec<_>) = lgrs.drain(..).partition(|l| l.end_if_idle());
            *lgrs = busy;
            idle
        };
        for l in &idle {
            self.send_shutdown(l);
        }
        self.unregister_ended();
        idle.len()
    }

    /// Tears down every link group: connections fail with `ConnectionReset`, peers are told.
    pub fn shutdown(&self) {
        let all: Vec<Arc<LinkGroup>> = self
            .lgrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for l in &all {
            l.end(End::Aborted);
            self.send_shutdown(l);
        }
        self.unregister_ended();
    }

    /// Sends a TESTLINK request to `peer` over device `device` and waits for the answer.
    ///
    /// # Errors
    /// The device's error; `Ok(false)` if no answer came within `timeout`.
    pub fn test_link(
        &self,
        device: usize,
        peer: SmcdGid,
        timeout: Duration,
    ) -> Result<bool, IsmError> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        self.devices[device].ops.signal_event(
            peer,
            true,
            EVENT_CODE_TESTLINK,
            event_info(tag, 0, EVENT_REQUEST),
        )?;
        let (lock, cond) = &self.testlink;
        let g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = cond
            .wait_timeout_while(g, timeout, |v| {
                !v.iter().any(|&(p, t)| p.gid == peer.gid && t == tag)
            })
            .unwrap_or_else(|e| e.into_inner());
        let found = g.iter().position(|&(p, t)| p.gid == peer.gid && t == tag);
        if let Some(i) = found {
            g.swap_remove(i);
        }
        Ok(found.is_some())
    }

    fn terminate_peer(&self, device: usize, peer_gid: u64, vlan: u16, by_shutdown: bool) {
        let gone: Vec<Arc<LinkGroup>> = {
            let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
            let (gone, keep): (Vec<_>, Vec<_>) = lgrs.drain(..).partition(|l| {
                l.device == device
                    && l.peer_gid.gid == peer_gid
                    && (vlan == VLAN_ALL || l.vlan_id == vlan)
            });
            *lgrs = keep;
            gone
        };
        for l in gone {
            if by_shutdown {
                l.peer_shutdown.store(true, Ordering::Release);
                l.terminate();
            } else {
                l.end(End::PeerGone);
            }
            self.counters
                .lgrs_terminated
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Our own function of device `device` is gone: every link group over it ends, and
    /// its connections fail with `ConnectionReset` (Linux's `smc_smcd_terminate_all`,
    /// `net/smc/smc_core.c`). No peer is told: the device cannot reach it any more (the
    /// peers learn from the device's own event).
    pub fn terminate_device(&self, device: usize) {
        let gone: Vec<Arc<LinkGroup>> = {
            let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
            let (gone, keep): (Vec<_>, Vec<_>) = lgrs.drain(..).partition(|l| l.device == device);
            *lgrs = keep;
            gone
        };
        for l in gone {
            l.peer_shutdown.store(true, Ordering::Release);
            l.terminate();
            self.counters
                .lgrs_terminated
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_event(&self, device: usize, ev: &IsmEvent) {
        match ev.event_type() {
            Some(EventType::Device) => self.terminate_peer(device, ev.tok, VLAN_ALL, false),
            Some(EventType::Software) if ev.code == EVENT_CODE_SHUTDOWN => {
                let vlan = (ev.info >> 16) as u16;
                log::debug!(
                    "smc: peer {:#x} shut its link groups on VLAN {vlan} down",
                    ev.tok
                );
                self.terminate_peer(device, ev.tok, vlan, true)
            }
            Some(EventType::Software) if ev.code == EVENT_CODE_TESTLINK => {
                let code = ev.info as u16;
                let peer = SmcdGid {
                    gid: ev.tok,
                    gid_ext: 0,
                };
                if code == EVENT_REQUEST {
                    let info = (ev.info & !0xFFFF) | EVENT_RESPONSE as u64;
                    let ops = &self.devices[device].ops;
                    if ops
                        .signal_event(peer, true, EVENT_CODE_TESTLINK, info)
                        .is_ok()
                    {
                        self.counters
                            .testlinks_answered
                            .fetch_add(1, Ordering::Relaxed);
                    }
                } else if code == EVENT_RESPONSE {
                    let (lock, cond) = &self.testlink;
                    lock.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((peer, (ev.info >> 32) as u32));
                    cond.notify_all();
                }
            }
            _ => {}
        }
    }
}

impl core::fmt::Debug for SmcStack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmcStack")
            .field("devices", &self.devices.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ism::fake::{fake_device, FakeFunction};
    use crate::ism::IsmDriver;
    use crate::smcd::conn::PeerInfo;
    use crate::smcd::wait::WaitMode;

    #[test]
    fn a_dropped_stack_frees_its_driver() {
        let dev = fake_device(1, false);
        let f = FakeFunction::new(dev, 0);
        let driver = Arc::new(IsmDriver::probe(f.clone(), f, 1).unwrap());
        let weak = Arc::downgrade(&driver);
        let stack = SmcStack::new(
            StackConfig::default(),
            vec![driver.clone() as Arc<dyn SmcdOps>],
        )
        .unwrap();
        drop(driver);
        assert!(weak.upgrade().is_some(), "the stack holds the driver");
        drop(stack);
        assert!(
            weak.upgrade().is_none(),
            "no cycle through the driver's client list"
        );
    }

    /// A connection on the fake device's own RMB of 64 KiB (its peer: itself).
    fn conn_on(stack: &SmcStack) -> Arc<Conn> {
        let ops = stack.devices()[0].ops().clone();
        let me = ops.get_local_gid();
        let rmb = ops.register_dmb(1 << 16, me, 0, 0).unwrap();
        let peer = PeerInfo {
            gid: me,
            token: rmb.token,
            dmbe_idx: 0,
            ring_len: rmb.len - super::super::conn::RING_OFFSET,
        };
        Arc::new(Conn::new(ops, rmb, peer, None, WaitMode::BusyPoll))
    }

    #[test]
    fn a_connection_added_after_its_link_group_ended_ends_too() {
        let peer = SmcdGid {
            gid: 0x4953_4D00_0000_0042,
            gid_ext: 0,
        };
        type Ending = fn(&SmcStack, &Arc<LinkGroup>);
        let endings: [(&str, Ending); 6] = [
            ("sync error", |s, l| s.terminate_link_group(l)),
            ("failed first contact", |s, l| s.forget_link_group(l)),
            ("stack shutdown", |s, _| s.shutdown()),
            ("idle", |s, _| assert_eq!(s.close_idle_link_groups(), 1)),
            ("own function gone", |s, _| s.terminate_device(0)),
            ("peer gone", |s, l| {
                s.terminate_peer(0, l.peer_gid.gid, VLAN_ALL, false)
            }),
        ];
        for (what, end) in endings {
            let dev = fake_device(1, false);
            let f = FakeFunction::new(dev, 0);
            let driver = Arc::new(IsmDriver::probe(f.clone(), f, 1).unwrap());
            let stack =
                SmcStack::new(StackConfig::default(), vec![driver as Arc<dyn SmcdOps>]).unwrap();
            // A handshake picks the link group; it ends before the handshake adds its
            // connection (as when a DECLINE with the sync flag arrives meanwhile).
            let (lgr, _) = stack.link_group(0, peer, Role::Server);
            end(&stack, &lgr);
            let late = conn_on(&stack);
            stack.attach_conn(&lgr, &late);
            assert!(late.is_broken(), "{what}: a late connection must end too");
            // The first end decides; a connection added before the end ends as well.
            let (lgr, _) = stack.link_group(0, peer, Role::Server);
            let early = conn_on(&stack);
            stack.attach_conn(&lgr, &early);
            assert!(!early.is_broken());
            if what != "idle" {
                end(&stack, &lgr);
                assert!(early.is_broken(), "{what}: its connections end");
            }
        }
    }

    #[test]
    fn a_failed_first_contact_ends_its_link_group_while_another_handshake_holds_it() {
        let dev = fake_device(1, false);
        let f = FakeFunction::new(dev, 0);
        let driver = Arc::new(IsmDriver::probe(f.clone(), f, 1).unwrap());
        let stack =
            SmcStack::new(StackConfig::default(), vec![driver as Arc<dyn SmcdOps>]).unwrap();
        let peer = SmcdGid {
            gid: 0x4953_4D00_0000_0042,
            gid_ext: 0,
        };
        // Handshake A opens the link group; handshake B (its ACCEPT out while A waits for
        // its CONFIRM) reuses it.
        let (a, first) = stack.link_group(0, peer, Role::Server);
        assert!(first);
        let (b, first) = stack.link_group(0, peer, Role::Server);
        assert!(!first && Arc::ptr_eq(&a, &b));
        // A fails: the link group is no longer offered, though B still holds it.
        stack.forget_link_group(&a);
        assert!(stack.link_groups().is_empty());
        let (c, first) = stack.link_group(0, peer, Role::Server);
        assert!(first && !Arc::ptr_eq(&a, &c));
    }
}
