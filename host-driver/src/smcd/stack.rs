//! The SMC-D stack of one operating system: its SMC-D devices, its link groups, and the
//! routing of device interrupts and events to connections.
//!
//! * Each device gets one [`IsmClient`] ([`StackDevice`]); a DMB signal for SBA index `i`
//!   goes to the connection whose RMB has index `i` (Linux's `smcd->conn[]`).
//! * A link group is the set of connections with one peer GID over one device, in one
//!   role (client or server); new connections reuse it (no "first contact"). An idle link
//!   group lingers for reuse until [`SmcStack::close_idle_link_groups`] or
//!   [`SmcStack::shutdown`] tears it down, which sends the peer a `SIGNAL_IEQ` shutdown
//!   (event code 0x80).
//! * Events: a software shutdown from a peer, or a device event naming a peer GID
//!   (its function went down), terminates the link groups with that peer: their
//!   connections fail with `ConnectionReset`. A TESTLINK request (0x83) is answered.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use alloc::string::String;
#[cfg(test)]
use alloc::vec;
use alloc::vec::Vec;

use ism_firmware::wire::ieq::EventType;

use super::clc::Eid;
use super::conn::Conn;
use super::device::{SmcdGid, SmcdOps};
use super::wait::WaitMode;
use crate::ism::{IsmClient, IsmError, IsmEvent};

/// SMC software event code: link group shutdown.
pub const EVENT_CODE_SHUTDOWN: u32 = 0x80;
/// SMC software event code: test link.
pub const EVENT_CODE_TESTLINK: u32 = 0x83;
/// `info.code` of a request.
pub const EVENT_REQUEST: u16 = 0x0001;
/// `info.code` of a response.
pub const EVENT_RESPONSE: u16 = 0x0002;

/// Most SBA indices a device has (routing table size).
const MAX_INDEX: usize = 1920;

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
        }
    }
}

/// Role of the local side in a link group.
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
    /// Our role.
    pub role: Role,
    conns: Mutex<Vec<Weak<Conn>>>,
    peer_shutdown: std::sync::atomic::AtomicBool,
}

impl LinkGroup {
    /// Live connections.
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn prune(&self) -> usize {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|w| w.strong_count() > 0);
        c.len()
    }

    fn terminate(&self) {
        for c in self.connections() {
            c.terminate();
        }
    }
}

/// Counters of a stack.
#[derive(Debug, Default)]
pub struct StackCounters {
    /// Link groups created.
    pub lgrs_created: AtomicU64,
    /// Link groups reused by a new connection.
    pub lgrs_reused: AtomicU64,
    /// Link groups terminated by a peer (shutdown or device event), or because our own
    /// function went away.
    pub lgrs_terminated: AtomicU64,
    /// Shutdown events sent.
    pub shutdowns_sent: AtomicU64,
    /// TESTLINK requests answered.
    pub testlinks_answered: AtomicU64,
}

/// One device of the stack, and its interrupt client.
pub struct StackDevice {
    index: usize,
    ops: Arc<dyn SmcdOps>,
    client: AtomicU32,
    conns: spin::RwLock<Vec<Option<Arc<Conn>>>>,
    stack: Weak<SmcStack>,
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
        if let Some(slot) = self.conns.write().get_mut(idx as usize) {
            *slot = conn;
        }
    }
}

impl IsmClient for StackDevice {
    fn handle_irq(&self, sba_idx: u32, _dmbe_mask: u16) {
        let conns = self.conns.read();
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
    testlink: (Mutex<Vec<(SmcdGid, u32)>>, Condvar),
    counters: StackCounters,
}

impl SmcStack {
    /// A stack over `devices` (in preference order: Linux puts loopback first), registering
    /// itself as a client of each.
    ///
    /// # Errors
    /// The device's error if it has no room for another client.
    pub fn new(config: StackConfig, devices: Vec<Arc<dyn SmcdOps>>) -> Result<Arc<Self>, IsmError> {
        let seed = Instant::now().elapsed().as_nanos() as u32 ^ std::process::id().rotate_left(16);
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
                        conns: spin::RwLock::new((0..MAX_INDEX).map(|_| None).collect()),
                        stack: weak.clone(),
                    })
                })
                .collect(),
            lgrs: Mutex::new(Vec::new()),
            next_lgr_id: AtomicU32::new((seed & 0x00FF_FF00) | 1),
            testlink: (Mutex::new(Vec::new()), Condvar::new()),
            counters: StackCounters::default(),
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

    /// Current link groups.
    pub fn link_groups(&self) -> Vec<Arc<LinkGroup>> {
        self.lgrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The link group for (`device`, `peer`, `role`), reused if one exists; returns it and
    /// whether it is new ("first contact").
    pub fn link_group(&self, device: usize, peer: SmcdGid, role: Role) -> (Arc<LinkGroup>, bool) {
        let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
        // Reuse rule (facts §9.7, the fixed form): same device and same peer GID, and for an
        // emulated device the same GID extension too (compared as part of SmcdGid).
        if let Some(l) = lgrs
            .iter()
            .find(|l| l.device == device && l.peer_gid == peer && l.role == role)
        {
            self.counters.lgrs_reused.fetch_add(1, Ordering::Relaxed);
            return (l.clone(), false);
        }
        (self.create_link_group(&mut lgrs, device, peer, role), true)
    }

    /// A new link group for (`device`, `peer`, `role`) even if one exists: the client's
    /// answer to a server that says "first contact" (Linux's `smc_conn_create`). New link
    /// groups are found first by later [`SmcStack::link_group`] calls.
    pub fn new_link_group(&self, device: usize, peer: SmcdGid, role: Role) -> Arc<LinkGroup> {
        let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
        self.create_link_group(&mut lgrs, device, peer, role)
    }

    fn create_link_group(
        &self,
        lgrs: &mut Vec<Arc<LinkGroup>>,
        device: usize,
        peer: SmcdGid,
        role: Role,
    ) -> Arc<LinkGroup> {
        let l = Arc::new(LinkGroup {
            id: self.next_lgr_id.fetch_add(1, Ordering::Relaxed),
            device,
            peer_gid: peer,
            role,
            conns: Mutex::new(Vec::new()),
            peer_shutdown: std::sync::atomic::AtomicBool::new(false),
        });
        lgrs.insert(0, l.clone());
        self.counters.lgrs_created.fetch_add(1, Ordering::Relaxed);
        l
    }

    /// Forgets `lgr` if nothing uses it: no connection, and no handshake other than the
    /// caller's holds it. A handshake that opened a link group ("first contact") and then
    /// failed calls this, so that the next handshake with that peer is a first contact on
    /// both sides again (Linux frees such a link group too).
    pub fn forget_link_group(&self, lgr: &Arc<LinkGroup>) {
        let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
        // Other handshakes get a clone only through `link_group`, under this lock: two
        // references (the list's and the caller's) mean nobody else has it.
        if Arc::strong_count(lgr) <= 2 && lgr.prune() == 0 {
            lgrs.retain(|l| !Arc::ptr_eq(l, lgr));
        }
    }

    /// Adds `conn` to `lgr` and routes its RMB's signals to it.
    pub fn attach_conn(&self, lgr: &LinkGroup, conn: &Arc<Conn>) {
        lgr.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(conn));
        self.devices[lgr.device].set_conn(conn.rmb().sba_idx, Some(conn.clone()));
    }

    /// Stops routing to `conn` and releases its device resources.
    pub fn release_conn(&self, device: usize, conn: &Arc<Conn>) {
        self.devices[device].set_conn(conn.rmb().sba_idx, None);
        conn.release();
        for l in self.link_groups() {
            l.prune();
        }
    }

    fn send_shutdown(&self, lgr: &LinkGroup) {
        let dev = &self.devices[lgr.device];
        let own = dev.ops.get_local_gid();
        // Linux's loopback has no signal_event: a link group with ourselves sends nothing.
        if lgr.peer_gid == own || lgr.peer_shutdown.load(Ordering::Acquire) {
            return;
        }
        let info = event_info(lgr.id, 0, EVENT_REQUEST);
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
            let (idle, busy): (Vec<_>, Vec<_>) = lgrs.drain(..).partition(|l| l.prune() == 0);
            *lgrs = busy;
            idle
        };
        for l in &idle {
            self.send_shutdown(l);
        }
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
            for c in l.connections() {
                c.abort();
            }
            self.send_shutdown(l);
        }
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
        let tag = self.next_lgr_id.fetch_add(1, Ordering::Relaxed);
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

    fn terminate_peer(&self, device: usize, peer_gid: u64, by_shutdown: bool) {
        let gone: Vec<Arc<LinkGroup>> = {
            let mut lgrs = self.lgrs.lock().unwrap_or_else(|e| e.into_inner());
            let (gone, keep): (Vec<_>, Vec<_>) = lgrs
                .drain(..)
                .partition(|l| l.device == device && l.peer_gid.gid == peer_gid);
            *lgrs = keep;
            gone
        };
        for l in gone {
            if by_shutdown {
                l.peer_shutdown.store(true, Ordering::Release);
            }
            l.terminate();
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
            Some(EventType::Device) => self.terminate_peer(device, ev.tok, false),
            Some(EventType::Software) if ev.code == EVENT_CODE_SHUTDOWN => {
                log::debug!("smc: peer {:#x} shut its link groups down", ev.tok);
                self.terminate_peer(device, ev.tok, true)
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
}
