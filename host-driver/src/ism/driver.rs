//! [`IsmDriver`]: the OS driver of one ISM function.
//!
//! It owns the function's SBA and IEQ pages, the bitmap of SBA indices (from 32, as Linux's
//! `sba_bitmap`), the routing of DMB signals to clients, and the command lock. Every command
//! goes through [`IsmDriver::command`], which presets `ret` to `0xFFFF` (`ISM_ERROR`) as
//! Linux does, so a response that never arrives reads as an error.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use ism_abi::command::Request;
use ism_abi::wire::attach_dmb::AttachDmbResponse;
use ism_abi::wire::ieq::{self, event_code, EventType};
use ism_abi::wire::move_request::{MoveRequest, MAX_MOVE_LEN};
use ism_abi::wire::query_info::{ExtFeatures, QueryInfoResponse};
use ism_abi::wire::read_gid::ReadGidResponse;
use ism_abi::wire::reg_dmb::RegDmbResponse;
use ism_abi::wire::sba::{FIRST_DMB_INDEX, NR_DMBS, SBA_SIZE};
use ism_abi::wire::unreg_dmb::{UnregDmbResponse, UNREG_DEFERRED};
use ism_abi::wire::vlan_id::RESERVED_VLAN_ID;
use ism_abi::wire::ResponseHeader;

use ism_abi::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, DmbToken, Gid};
use zerocopy::FromBytes;

use super::error::{ErrorKind, IsmError};
use super::hal::{Bus, HostMemory};
use super::irq::{self, IeqCursor, IrqReport, IsmClient, IsmEvent};

/// Page size of DMA allocations.
const PAGE: usize = 4096;
/// Largest DMB (the DMA segment limit, [`ism_abi::wire::reg_dmb::MAX_DMB_LEN`]).
pub const MAX_DMB_LEN: usize = ism_abi::wire::reg_dmb::MAX_DMB_LEN as usize;
/// "No client" in the routing table.
const NO_CLIENT: u8 = 0xFF;
/// Most clients one function serves.
pub const MAX_CLIENTS: usize = 8;

/// A registered (or attached) DMB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dmb {
    /// The device's token.
    pub token: DmbToken,
    /// SBA index (at the owner).
    pub sba_idx: u32,
    /// Length in bytes.
    pub len: u32,
    /// Device address in this partition's memory.
    pub addr: DevAddr,
    /// Authorized writer.
    pub rgid: Gid,
    /// True for a DMB mapped with ATTACH_DMB (owned by someone else).
    pub attached: bool,
}

/// QUERY_INFO, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsmInfo {
    /// Device model version.
    pub version: u32,
    /// Largest store-block.
    pub max_len: u32,
    /// The function's GID.
    pub gid: Gid,
    /// Registered SBA.
    pub sba: DevAddr,
    /// Registered IEQ.
    pub ieq: DevAddr,
    /// IEQ length.
    pub ieq_len: u32,
    /// Extensions offered.
    pub features: ExtFeatures,
    /// DMBs this function registered.
    pub dmbs_owned: u32,
    /// DMBs registered for this function to write.
    pub dmbs_used: u32,
    /// SET_VLAN state.
    pub vlan_required: bool,
    /// VLAN ids held.
    pub vlans: Vec<u16>,
}

struct Deferred {
    token: DmbToken,
    addr: DevAddr,
    size: usize,
}

/// The command area's lock. A command holds it over its whole round trip, which on a
/// board in another process sleeps (a futex wait for the board's answer): with `std`, the
/// lock sleeps too, so that threads queued behind a command (handshakes of concurrent
/// connections) do not spin for that long on a machine with few CPUs, taking them from
/// the board that must answer. Without `std`, a spin lock (nothing to sleep on).
#[cfg(feature = "std")]
type CmdLock = std::sync::Mutex<()>;
#[cfg(not(feature = "std"))]
type CmdLock = spin::Mutex<()>;

#[cfg(feature = "std")]
fn lock_cmd(l: &CmdLock) -> std::sync::MutexGuard<'_, ()> {
    // The guarded value is `()`: a panic of a holder leaves nothing inconsistent.
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(not(feature = "std"))]
fn lock_cmd(l: &CmdLock) -> spin::MutexGuard<'_, ()> {
    l.lock()
}

/// The driver of one ISM function. Share it with `Arc`; every method takes `&self`.
///
/// A platform gives it a [`HostMemory`] (DMA memory) and a [`Bus`] (commands and store-blocks);
/// an SMC-D stack, or any other [`IsmClient`], registers DMBs and gets their signals and
/// the device's events from [`IsmDriver::handle_irq`]. Here on the in-process fake device
/// (feature `test-utils`), two functions in two partitions:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use ism_hal::{DevAddr, DmaMemory};
/// use ism_host_driver::ism::fake::{fake_device, FakeFunction};
/// use ism_host_driver::ism::{IsmClient, IsmDriver, IsmEvent};
///
/// /// What the SMC-D stack would be: told about signalled DMBs and events.
/// #[derive(Default)]
/// struct Signals(Mutex<Vec<u32>>);
/// impl IsmClient for Signals {
///     fn handle_irq(&self, sba_idx: u32, _dmbe_mask: u16) {
///         self.0.lock().unwrap().push(sba_idx);
///     }
///     fn handle_event(&self, _event: &IsmEvent) {}
/// }
///
/// # fn main() -> Result<(), ism_host_driver::ism::IsmError> {
/// let dev = fake_device(2, false);
/// let (fa, fb) = (FakeFunction::new(dev.clone(), 0), FakeFunction::new(dev, 1));
/// // Probe as Linux's `ism_probe` does: SBA, IEQ, GID, the ISMv2 check, QUERY_INFO.
/// let a = IsmDriver::probe(fa.clone(), fa, 0x0123)?;
/// let b = IsmDriver::probe(fb.clone(), fb, 0x0123)?;
/// assert!(a.supports_v2());
/// a.query_remote_gid(b.gid(), None)?; // b is reachable from a
///
/// // a registers a DMB that b may write; b moves into it with the signal.
/// let signals = Arc::new(Signals::default());
/// let client = a.add_client(signals.clone())?;
/// let dmb = a.register_dmb(16384, b.gid(), None, client)?;
/// b.move_data(dmb.token, 0, true, 100, b"through the device")?;
///
/// // a's interrupt handler finds the DMB's bit in its SBA and tells the client.
/// assert!(a.irq_pending());
/// a.handle_irq();
/// assert_eq!(*signals.0.lock().unwrap(), [dmb.sba_idx]);
/// let mut got = [0u8; 18];
/// a.memory().read(DevAddr(dmb.addr.0 + 100), &mut got).unwrap();
/// assert_eq!(&got, b"through the device");
/// a.unregister_dmb(&dmb)?;
/// # Ok(())
/// # }
/// ```
pub struct IsmDriver<H: HostMemory, B: Bus> {
    hal: H,
    bus: B,
    chid: u16,
    gid: Gid,
    v2: bool,
    attach: bool,
    sba: DevAddr,
    ieq: DevAddr,
    /// Held over a command's whole round trip to the device (the one command area).
    cmd_lock: CmdLock,
    sba_bitmap: spin::Mutex<[u64; NR_DMBS / 64]>,
    /// The SBA doublewords the handler scans: those of the indices in `sba_bitmap`
    /// (`irq::sba_words_of`), kept with it.
    sba_words: AtomicU32,
    dmb_client: Vec<AtomicU8>,
    clients: spin::RwLock<Vec<Arc<dyn IsmClient>>>,
    irq_state: spin::Mutex<IeqCursor>,
    deferred: spin::Mutex<Vec<Deferred>>,
    /// DMBs registered and not yet unregistered (`remove` unregisters what is left).
    registered: spin::Mutex<Vec<Dmb>>,
    removed: AtomicBool,
    /// Clients were told the function is gone.
    told_gone: AtomicBool,
    /// The function is unusable (see [`IsmDriver::function_gone`]).
    gone: AtomicBool,
    /// The poller that reads the SBA (a caller's token; 0: none): see
    /// [`IsmDriver::claim_polling`].
    poll_owner: AtomicUsize,
}

fn align_for(len: usize) -> usize {
    len.next_power_of_two().clamp(PAGE, MAX_DMB_LEN)
}

fn alloc_size(len: usize) -> usize {
    len.div_ceil(PAGE) * PAGE
}

impl<H: HostMemory, B: Bus> IsmDriver<H, B> {
    /// Probes the function as Linux does: allocates and registers the SBA (one page) and the
    /// IEQ (one page, 512 bytes registered), reads the GID, tries ADD_VLAN_ID 0x1FFF (success
    /// = ISMv2), and reads QUERY_INFO (extensions). `chid` is the function's PCHID.
    ///
    /// # Errors
    /// `NoMemory` if the pages cannot be allocated; the device's error otherwise (what was
    /// registered is undone).
    pub fn probe(hal: H, bus: B, chid: u16) -> Result<Self, IsmError> {
        let sba = hal
            .dma_alloc(SBA_SIZE, PAGE)
            .ok_or(IsmError::Local(ErrorKind::NoMemory))?;
        let Some(ieq) = hal.dma_alloc(PAGE, PAGE) else {
            hal.dma_free(sba, SBA_SIZE);
            return Err(IsmError::Local(ErrorKind::NoMemory));
        };
        let mut drv = Self {
            hal,
            bus,
            chid,
            gid: Gid(0),
            v2: false,
            attach: false,
            sba,
            ieq,
            cmd_lock: CmdLock::new(()),
            sba_bitmap: spin::Mutex::new([0; NR_DMBS / 64]),
            sba_words: AtomicU32::new(0),
            dmb_client: (0..NR_DMBS).map(|_| AtomicU8::new(NO_CLIENT)).collect(),
            clients: spin::RwLock::new(Vec::new()),
            irq_state: spin::Mutex::new(IeqCursor {
                last: -1,
                entries: ieq::entries(ieq::LINUX_IEQ_LEN) as i64,
            }),
            deferred: spin::Mutex::new(Vec::new()),
            registered: spin::Mutex::new(Vec::new()),
            removed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            told_gone: AtomicBool::new(false),
            poll_owner: AtomicUsize::new(0),
        };
        if let Err(e) = drv.init() {
            drv.hal.dma_free(drv.ieq, PAGE);
            drv.hal.dma_free(drv.sba, SBA_SIZE);
            // Already undone: Drop must not release it again.
            drv.removed.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(drv)
    }

    fn init(&mut self) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::RegSba { sba: self.sba }, &mut resp)?;
        let ieq_req = Request::RegIeq {
            ieq: self.ieq,
            len: ieq::LINUX_IEQ_LEN as u64,
        };
        if let Err(e) = self.command(ieq_req, &mut resp) {
            let _ = self.command(Request::UnregSba, &mut resp);
            return Err(e);
        }
        let gid = self
            .command(Request::ReadGid, &mut resp)
            .and_then(|_| Self::body::<ReadGidResponse>(&resp).map(|r| Gid(r.gid.get())));
        self.gid = match gid {
            Ok(g) => g,
            Err(e) => {
                let _ = self.command(Request::UnregIeq, &mut resp);
                let _ = self.command(Request::UnregSba, &mut resp);
                return Err(e);
            }
        };
        self.v2 = self
            .command(
                Request::AddVlanId {
                    vlan_id: RESERVED_VLAN_ID,
                },
                &mut resp,
            )
            .is_ok();
        self.attach = self
            .query_info()
            .is_ok_and(|i| i.features.contains(ExtFeatures::ATTACH_DMB));
        log::debug!(
            "ism: probed gid {:#x} chid {:#x} v2 {}",
            self.gid.0,
            self.chid,
            self.v2
        );
        Ok(())
    }

    /// Removes the function (the reverse of probe): DEL_VLAN_ID 0x1FFF if v2, UNREG_IEQ,
    /// UNREG_SBA, frees the pages. DMBs still registered are unregistered first. Calling it
    /// twice is harmless; dropping the driver does it too.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Clients first: their connections end before their DMBs go away.
        self.tell_gone();
        let left = core::mem::take(&mut *self.registered.lock());
        for dmb in &left {
            let _ = self.unregister_dmb(dmb);
        }
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        if self.v2 {
            let _ = self.command(
                Request::DelVlanId {
                    vlan_id: RESERVED_VLAN_ID,
                },
                &mut resp,
            );
        }
        // As Linux's `drivers/s390/net/ism_drv.c` `unregister_ieq`/`unregister_sba`: memory
        // the device refused to let go of stays allocated (the device may still write
        // it); only success, or a device that no longer answers (`0xFFFF`), frees it.
        if self.unregister_area(Request::UnregIeq, &mut resp) {
            self.hal.dma_free(self.ieq, PAGE);
        }
        if self.unregister_area(Request::UnregSba, &mut resp) {
            self.hal.dma_free(self.sba, SBA_SIZE);
        }
        self.gone.store(true, Ordering::Release);
    }

    /// Runs UNREG_IEQ/UNREG_SBA; whether the memory may be freed.
    fn unregister_area(&self, req: Request, resp: &mut [u8; COMMAND_AREA_SIZE]) -> bool {
        match self.command(req, resp) {
            Ok(_) | Err(IsmError::DeviceRaw(0xFFFF)) => true,
            Err(IsmError::Local(ErrorKind::NoDevice)) => true,
            Err(e) => {
                log::warn!(
                    "ism: {} refused ({e:?}); its memory is kept",
                    req.opcode().name()
                );
                false
            }
        }
    }

    /// The platform reports that the function is no longer available (on s390, a zPCI
    /// availability or error event; in the simulator, the board taking the partition's
    /// function down). Every client is told once ([`IsmClient::handle_function_gone`]), and
    /// from now on commands and moves fail with `NoDevice` without reaching the device,
    /// which after a restart of the function may belong to another boot of the partition.
    /// The driver notices this by itself when the device answers a command or a move with
    /// "function offline".
    pub fn function_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.tell_gone();
    }

    /// Whether the function is gone ([`IsmDriver::function_gone`], or removed).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    fn tell_gone(&self) {
        if self.told_gone.swap(true, Ordering::AcqRel) {
            return;
        }
        log::debug!("ism: function {:#x} gone", self.gid.0);
        let clients = self.clients.read().clone();
        for c in clients {
            c.handle_function_gone();
        }
    }

    fn check_offline(&self, e: IsmError) -> IsmError {
        if e.kind() == ErrorKind::NoDevice {
            self.function_gone();
        }
        e
    }

    /// Posts one command and returns the response length.
    ///
    /// # Errors
    /// The device's return code as [`IsmError::Device`]/[`IsmError::DeviceRaw`]; `NoDevice`
    /// if the bus fails.
    pub fn command(
        &self,
        req: Request,
        resp: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<usize, IsmError> {
        let mut buf = [0u8; 64];
        let n = req
            .emit(&mut buf)
            .ok_or(IsmError::Local(ErrorKind::InvalidArgument))?;
        if self.is_gone() {
            return Err(IsmError::Local(ErrorKind::NoDevice));
        }
        let _g = lock_cmd(&self.cmd_lock);
        resp.fill(0);
        resp[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
        self.bus
            .command(&buf[..n], resp)
            .map_err(|e| self.check_offline(IsmError::from_bus(e)))?;
        let hdr = ResponseHeader::read_from_prefix(&resp[..])
            .map_err(|_| IsmError::DeviceRaw(0xFFFF))?
            .0;
        match hdr.ret.get() {
            0 => Ok(hdr.len.get() as usize),
            ret => {
                log::debug!("ism: {} failed: ret {:#x}", req.opcode().name(), ret);
                Err(self.check_offline(IsmError::from_ret(ret)))
            }
        }
    }

    fn body<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
        resp: &[u8],
    ) -> Result<T, IsmError> {
        T::read_from_prefix(resp)
            .map(|(t, _)| t)
            .map_err(|_| IsmError::DeviceRaw(0xFFFF))
    }

    // ------------------------------------------------------------------ identity

    /// The function's GID.
    pub fn gid(&self) -> Gid {
        self.gid
    }

    /// The function's CHID.
    pub fn chid(&self) -> u16 {
        self.chid
    }

    /// Whether the device accepted the ISMv2 probe.
    pub fn supports_v2(&self) -> bool {
        self.v2
    }

    /// Whether ATTACH_DMB/DETACH_DMB are offered.
    pub fn supports_attach(&self) -> bool {
        self.attach
    }

    /// The partition's memory (DMB contents are read and written through it).
    pub fn memory(&self) -> &H::Memory {
        self.hal.memory()
    }

    /// The platform.
    pub fn host_memory(&self) -> &H {
        &self.hal
    }

    /// Device address of the SBA.
    pub fn sba_addr(&self) -> DevAddr {
        self.sba
    }

    /// QUERY_INFO.
    ///
    /// # Errors
    /// The device's error.
    pub fn query_info(&self) -> Result<IsmInfo, IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::QueryInfo, &mut resp)?;
        let r = Self::body::<QueryInfoResponse>(&resp)?;
        let n = (r.vlan_nr_ids.get() as usize).min(r.vlan_id.len());
        Ok(IsmInfo {
            version: r.version.get(),
            max_len: r.max_len.get(),
            gid: Gid(r.my_gid.get()),
            sba: DevAddr(r.sba.get()),
            ieq: DevAddr(r.ieq.get()),
            ieq_len: r.ieq_len.get(),
            features: ExtFeatures::from_bits_truncate(r.ext_features.get()),
            dmbs_owned: r.dmbs_owned.get(),
            dmbs_used: r.dmbs_used.get(),
            vlan_required: r.vlan_required.get() != 0,
            vlans: r.vlan_id[..n].iter().map(|v| v.get()).collect(),
        })
    }

    /// QUERY_RGID: `Ok` iff `rgid` is reachable (with `vlan`, if given).
    ///
    /// # Errors
    /// `Unreachable` kind when not reachable.
    pub fn query_remote_gid(&self, rgid: Gid, vlan: Option<u16>) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let vlan = vlan.map(u32::from);
        self.command(Request::QueryRgid { rgid, vlan }, &mut resp)
            .map(|_| ())
    }

    /// ADD_VLAN_ID.
    ///
    /// # Errors
    /// The device's error.
    pub fn add_vlan_id(&self, vlan_id: u64) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::AddVlanId { vlan_id }, &mut resp)
            .map(|_| ())
    }

    /// DEL_VLAN_ID.
    ///
    /// # Errors
    /// The device's error.
    pub fn del_vlan_id(&self, vlan_id: u64) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::DelVlanId { vlan_id }, &mut resp)
            .map(|_| ())
    }

    /// SET_VLAN ("VLAN required").
    ///
    /// # Errors
    /// The device's error.
    pub fn set_vlan_required(&self) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::SetVlan, &mut resp).map(|_| ())
    }

    /// RESET_VLAN.
    ///
    /// # Errors
    /// The device's error.
    pub fn reset_vlan_required(&self) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::ResetVlan, &mut resp).map(|_| ())
    }

    /// SIGNAL_IEQ: a software event to `rgid`.
    ///
    /// # Errors
    /// `Unreachable` kind if no such function; `Io` if it has no IEQ.
    pub fn signal_event(
        &self,
        rgid: Gid,
        trigger_irq: bool,
        code: u32,
        info: u64,
    ) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let req = Request::SignalIeq {
            rgid,
            trigger_irq,
            code,
            info,
        };
        self.command(req, &mut resp).map(|_| ())
    }

    // ------------------------------------------------------------------ clients

    /// Registers a client; returns its id for [`IsmDriver::register_dmb`].
    ///
    /// # Errors
    /// `NoSpace` after [`MAX_CLIENTS`] clients.
    pub fn add_client(&self, client: Arc<dyn IsmClient>) -> Result<u8, IsmError> {
        let mut c = self.clients.write();
        if c.len() >= MAX_CLIENTS {
            return Err(IsmError::Local(ErrorKind::NoSpace));
        }
        c.push(client);
        Ok((c.len() - 1) as u8)
    }

    // ------------------------------------------------------------------ DMBs

    fn take_sba_index(&self) -> Option<u32> {
        let mut bm = self.sba_bitmap.lock();
        let idx = (FIRST_DMB_INDEX..NR_DMBS).find(|&i| bm[i / 64] & (1 << (i % 64)) == 0)?;
        bm[idx / 64] |= 1 << (idx % 64);
        self.sba_words
            .store(irq::sba_words_of(&bm), Ordering::Release);
        Some(idx as u32)
    }

    fn release_sba_index(&self, idx: u32) {
        let i = idx as usize;
        if i < NR_DMBS {
            let mut bm = self.sba_bitmap.lock();
            bm[i / 64] &= !(1 << (i % 64));
            self.sba_words
                .store(irq::sba_words_of(&bm), Ordering::Release);
            drop(bm);
            self.dmb_client[i].store(NO_CLIENT, Ordering::Release);
        }
    }

    /// Allocates and registers a DMB of `len` bytes that only `rgid` may write; its signals
    /// go to `client`.
    ///
    /// # Errors
    /// `InvalidArgument` for `len` 0 or above 1 MiB or an unknown client; `NoSpace` when no
    /// SBA index is free or the device's table is full; `NoMemory` when the partition has no
    /// memory; the device's error otherwise. Nothing stays allocated on error.
    pub fn register_dmb(
        &self,
        len: usize,
        rgid: Gid,
        vlan: Option<u16>,
        client: u8,
    ) -> Result<Dmb, IsmError> {
        if len == 0 || len > MAX_DMB_LEN || client as usize >= self.clients.read().len() {
            return Err(IsmError::Local(ErrorKind::InvalidArgument));
        }
        let idx = self
            .take_sba_index()
            .ok_or(IsmError::Local(ErrorKind::NoSpace))?;
        let Some(addr) = self.hal.dma_alloc(alloc_size(len), align_for(len)) else {
            self.release_sba_index(idx);
            return Err(IsmError::Local(ErrorKind::NoMemory));
        };
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let req = Request::RegDmb {
            dmb: addr,
            len: len as u32,
            sba_idx: idx,
            vlan: vlan.map(u32::from),
            rgid,
        };
        let token = self
            .command(req, &mut resp)
            .and_then(|_| Self::body::<RegDmbResponse>(&resp))
            .map(|r| DmbToken(r.dmb_tok.get()));
        match token {
            Ok(token) => {
                self.dmb_client[idx as usize].store(client, Ordering::Release);
                let dmb = Dmb {
                    token,
                    sba_idx: idx,
                    len: len as u32,
                    addr,
                    rgid,
                    attached: false,
                };
                self.registered.lock().push(dmb);
                Ok(dmb)
            }
            Err(e) => {
                self.hal.dma_free(addr, alloc_size(len));
                self.release_sba_index(idx);
                Err(e)
            }
        }
    }

    /// Unregisters a DMB and frees its memory, or, if the device defers the release because
    /// the DMB is still attached elsewhere, frees it when the device's
    /// `BUF_DMB_UNREGISTERED` event arrives. A device that does not answer (`0xFFFF`) is
    /// treated as done, as Linux does; so is a function that is gone (the device dropped
    /// its DMBs when it went down).
    ///
    /// # Errors
    /// The device's error (memory is then not freed).
    pub fn unregister_dmb(&self, dmb: &Dmb) -> Result<(), IsmError> {
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        let r = self.command(Request::UnregDmb { token: dmb.token }, &mut resp);
        let deferred = match r {
            Ok(_) => {
                Self::body::<UnregDmbResponse>(&resp).is_ok_and(|r| r.state.get() == UNREG_DEFERRED)
            }
            Err(IsmError::DeviceRaw(0xFFFF)) => false,
            // A function that went down lost its DMBs with it (the device dropped them):
            // the memory is ours again.
            Err(_) if self.is_gone() => false,
            Err(e) => return Err(e),
        };
        self.registered.lock().retain(|d| d.token != dmb.token);
        self.release_sba_index(dmb.sba_idx);
        let size = alloc_size(dmb.len as usize);
        if deferred {
            self.deferred.lock().push(Deferred {
                token: dmb.token,
                addr: dmb.addr,
                size,
            });
        } else {
            self.hal.dma_free(dmb.addr, size);
        }
        Ok(())
    }

    /// DMBs whose release the device has deferred (still attached elsewhere).
    pub fn deferred_releases(&self) -> usize {
        self.deferred.lock().len()
    }

    /// ATTACH_DMB: maps the DMB `token` (registered by another user of the same memory) so
    /// that writes to its memory need no move.
    ///
    /// # Errors
    /// `NotSupported` if the device does not offer it; the device's error otherwise.
    pub fn attach_dmb(&self, token: DmbToken) -> Result<Dmb, IsmError> {
        if !self.attach {
            return Err(IsmError::Local(ErrorKind::NotSupported));
        }
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::AttachDmb { token }, &mut resp)?;
        let r = Self::body::<AttachDmbResponse>(&resp)?;
        let (addr, len) = (DevAddr(r.dmb.get()), r.dmb_len.get());
        // Trust the device no further than the partition's own memory.
        if !self.memory().contains(addr, len as u64) {
            let _ = self.detach_dmb(token);
            return Err(IsmError::Local(ErrorKind::InvalidArgument));
        }
        Ok(Dmb {
            token,
            sba_idx: r.sba_idx.get(),
            len,
            addr,
            rgid: self.gid,
            attached: true,
        })
    }

    /// DETACH_DMB.
    ///
    /// # Errors
    /// `NotSupported` if not offered; the device's error otherwise.
    pub fn detach_dmb(&self, token: DmbToken) -> Result<(), IsmError> {
        if !self.attach {
            return Err(IsmError::Local(ErrorKind::NotSupported));
        }
        let mut resp = [0u8; COMMAND_AREA_SIZE];
        self.command(Request::DetachDmb { token }, &mut resp)
            .map(|_| ())
    }

    // ------------------------------------------------------------------ moves

    /// Writes `data` at `offset` into the remote DMB `token`, in store-blocks that end at
    /// 4 KiB boundaries of the offset; signals DMBE `idx` after the last one if `signal`.
    /// An empty `data` issues nothing.
    ///
    /// # Errors
    /// The first refused store-block's error; later chunks are not sent.
    pub fn move_data(
        &self,
        token: DmbToken,
        idx: u8,
        signal: bool,
        offset: u32,
        data: &[u8],
    ) -> Result<(), IsmError> {
        if self.is_gone() {
            return Err(IsmError::Local(ErrorKind::NoDevice));
        }
        let mut off = offset as usize;
        let mut rest = data;
        while !rest.is_empty() {
            let n = (MAX_MOVE_LEN - off % MAX_MOVE_LEN).min(rest.len());
            let last = n == rest.len();
            let word = MoveRequest {
                token,
                dmbe_idx: idx,
                signal: signal && last,
                offset: off as u32,
            }
            .emit();
            if off > ism_abi::wire::move_request::OFFSET_MASK as usize {
                return Err(IsmError::Local(ErrorKind::InvalidArgument));
            }
            self.bus
                .store_block(word, &rest[..n])
                .map_err(|e| self.check_offline(IsmError::from_bus(e)))?;
            off += n;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Writes `data` (one store-block: at most up to the next 4 KiB boundary of `offset`)
    /// at `offset` into the remote DMB `token` without a signal, here and now if the bus
    /// can ([`Bus::store_block_now`]): `Ok(true)` when the bytes are in the target as this
    /// returns; `Ok(false)` if the bus cannot now, or `data` needs more than one
    /// store-block (nothing written: use [`IsmDriver::move_data`]).
    ///
    /// # Errors
    /// The store-block's error (as [`IsmDriver::move_data`]).
    pub fn move_data_now(
        &self,
        token: DmbToken,
        idx: u8,
        offset: u32,
        data: &[u8],
    ) -> Result<bool, IsmError> {
        if self.is_gone() {
            return Err(IsmError::Local(ErrorKind::NoDevice));
        }
        let off = offset as usize;
        if data.is_empty()
            || off > ism_abi::wire::move_request::OFFSET_MASK as usize
            || data.len() > MAX_MOVE_LEN - off % MAX_MOVE_LEN
        {
            return Ok(false);
        }
        let word = MoveRequest {
            token,
            dmbe_idx: idx,
            signal: false,
            offset,
        }
        .emit();
        match self.bus.store_block_now(word, data) {
            None => Ok(false),
            Some(r) => r
                .map(|()| true)
                .map_err(|e| self.check_offline(IsmError::from_bus(e))),
        }
    }

    // ------------------------------------------------------------------ interrupts

    /// A host thread polls this function's SBA itself from now on (`true`) or no longer
    /// (`false`); calls nest. Passed to the bus ([`Bus::set_polling`]): a board may then
    /// hold back waking the interrupt thread.
    pub fn set_polling(&self, on: bool) {
        self.bus.set_polling(on);
    }

    /// Acknowledges the function's interrupt without running the handler
    /// ([`Bus::ack_interrupt`]).
    pub fn ack_interrupt(&self) {
        self.bus.ack_interrupt();
    }

    /// Whether the function's interrupt is raised and not yet taken
    /// ([`Bus::interrupt_raised`]).
    pub fn interrupt_raised(&self) -> Option<bool> {
        self.bus.interrupt_raised()
    }

    /// Whether only polling host threads take this function's interrupts
    /// ([`Bus::polled_only`]).
    pub fn polled_only(&self) -> bool {
        self.bus.polled_only()
    }

    /// A polling thread (`token`, non-zero and its own) claims the SBA's reads while it
    /// spins (`on`) or gives them up. While one holds them, the others' [`IsmDriver::poll_sba`]
    /// skip the SBA: on a function both ends of a connection use (the loopback board), two
    /// spinning readers of one SBA pull its cache line back and forth on every poll, and the
    /// holder's handler runs deliver the others' signals anyway.
    pub fn claim_polling(&self, token: usize, on: bool) {
        let (from, to) = if on { (0, token) } else { (token, 0) };
        let _ = self
            .poll_owner
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The poll a thread makes once more after it stopped polling (see [`Bus::set_polling`]):
    /// runs the handler if work is pending, whoever holds the poll claim
    /// ([`IsmDriver::claim_polling`]); returns whether it ran. A raise held back while
    /// threads polled woke no interrupt thread, and the claim's holder may not run again
    /// for a while (preempted on a busy machine: a stress trial saw other connections'
    /// signals wait up to 16 ms behind one), so the thread about to sleep takes the work
    /// itself. Once per wait, so two of them do not pull the SBA's line back and forth as
    /// spinning pollers would.
    pub fn poll_sba_last(&self) -> bool {
        if self.irq_pending() {
            self.handle_irq();
            true
        } else {
            false
        }
    }

    /// A poll by `token` (see [`IsmDriver::claim_polling`]): unless another poller holds
    /// the SBA, runs the handler if work is pending; returns whether it ran.
    pub fn poll_sba(&self, token: usize) -> bool {
        let owner = self.poll_owner.load(Ordering::Acquire);
        if owner != 0 && owner != token {
            return false;
        }
        if self.irq_pending() {
            self.handle_irq();
            true
        } else {
            false
        }
    }

    /// Whether the SBA shows work besides a signal of DMB `sba_idx` (an event, another
    /// registered DMB's signal): see [`crate::smcd::device::SmcdOps::pending_besides`].
    /// Loads only.
    pub fn pending_besides(&self, sba_idx: u32) -> bool {
        let words = self.sba_words.load(Ordering::Acquire);
        irq::pending_besides(self.memory(), self.sba, words, sba_idx as usize)
    }

    /// Whether the SBA shows pending work (summary or event bit); a cheap check for pollers.
    pub fn irq_pending(&self) -> bool {
        self.memory().load_u64(self.sba).is_ok_and(|w| w[0] != 0)
    }

    /// The interrupt handler (see [`super::irq`]): delivers DMB signals to their clients and
    /// events to all clients. Safe to call at any time and from any thread (runs are
    /// serialised); a busy poller calls it when [`IsmDriver::irq_pending`].
    pub fn handle_irq(&self) -> IrqReport {
        let st = self.irq_state.lock();
        self.handle_irq_locked(st)
    }

    /// [`IsmDriver::handle_irq`] unless a run is in progress (on any thread, this one
    /// included): `None` then, and the running handler or a later one picks the work up.
    /// For a board that runs the handler in the context that raised the interrupt, which
    /// may be inside a handler run already (an event answered by a command).
    pub fn try_handle_irq(&self) -> Option<IrqReport> {
        let st = self.irq_state.try_lock()?;
        Some(self.handle_irq_locked(st))
    }

    fn handle_irq_locked(&self, mut st: spin::MutexGuard<'_, IeqCursor>) -> IrqReport {
        let mem = self.memory();
        let flags = irq::take_flags(mem, self.sba);
        let clients = self.clients.read();
        let words = self.sba_words.load(Ordering::Acquire);
        let signals = irq::take_dmb_signals(mem, self.sba, words, |idx, mask| {
            let c = self.dmb_client[idx as usize].load(Ordering::Acquire);
            if let Some(client) = clients.get(c as usize) {
                client.handle_irq(idx, mask);
            }
        });
        let mut events = 0;
        if flags.contains(ism_abi::wire::sba::SbaFlags::EVENT) {
            events = irq::drain_ieq(mem, self.ieq, &mut st, |ev| {
                self.on_event(ev);
                for c in clients.iter() {
                    c.handle_event(ev);
                }
            });
        }
        IrqReport { signals, events }
    }

    /// The driver's own reaction to an event: completes deferred DMB releases.
    fn on_event(&self, ev: &IsmEvent) {
        if ev.event_type() == Some(EventType::Buffer) && ev.code == event_code::BUF_DMB_UNREGISTERED
        {
            let mut d = self.deferred.lock();
            if let Some(pos) = d.iter().position(|x| x.token.0 == ev.tok) {
                let x = d.swap_remove(pos);
                self.hal.dma_free(x.addr, x.size);
            }
        }
    }
}

/// Dropping the driver releases the function, as [`IsmDriver::remove`] does (nothing happens
/// if it was removed already), so a driver that goes out of scope leaves no SBA, IEQ or DMB
/// registered and no DMA page allocated.
impl<H: HostMemory, B: Bus> Drop for IsmDriver<H, B> {
    fn drop(&mut self) {
        self.remove();
    }
}

impl<H: HostMemory, B: Bus> core::fmt::Debug for IsmDriver<H, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IsmDriver")
            .field("gid", &self.gid)
            .field("chid", &self.chid)
            .field("v2", &self.v2)
            .field("attach", &self.attach)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ism::fake::{fake_device, FakeFunction};
    use alloc::vec::Vec;

    /// A function whose device refuses UNREG_SBA and UNREG_IEQ with `ret`, recording what
    /// the driver frees.
    #[derive(Clone)]
    struct Refusing {
        f: FakeFunction,
        ret: u16,
        freed: Arc<spin::Mutex<Vec<u64>>>,
    }

    impl HostMemory for Refusing {
        type Memory = <FakeFunction as HostMemory>::Memory;
        fn memory(&self) -> &Self::Memory {
            self.f.memory()
        }
        fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr> {
            self.f.dma_alloc(size, align)
        }
        fn dma_free(&self, addr: DevAddr, size: usize) {
            self.freed.lock().push(addr.0);
            self.f.dma_free(addr, size)
        }
    }

    impl Bus for Refusing {
        fn command(
            &self,
            request: &[u8],
            response: &mut [u8; COMMAND_AREA_SIZE],
        ) -> Result<(), super::super::BusError> {
            let cmd = u32::from_be_bytes([request[0], request[1], request[2], request[3]]);
            if cmd == 0x11 || cmd == 0x12 {
                response[4..6].copy_from_slice(&self.ret.to_be_bytes());
                return Ok(());
            }
            self.f.command(request, response)
        }
        fn store_block(&self, request: u64, data: &[u8]) -> Result<(), super::super::BusError> {
            self.f.store_block(request, data)
        }
    }

    fn removed_with(ret: u16) -> (usize, Vec<u64>) {
        let f = FakeFunction::new(fake_device(1, false), 0);
        let r = Refusing {
            f,
            ret,
            freed: Arc::new(spin::Mutex::new(Vec::new())),
        };
        let d = IsmDriver::probe(r.clone(), r.clone(), 1).unwrap();
        let areas = [d.sba.0, d.ieq.0];
        d.remove();
        let freed = r.freed.lock().clone();
        (areas.iter().filter(|a| freed.contains(a)).count(), freed)
    }

    #[test]
    fn refused_unregistration_keeps_the_sba_and_ieq() {
        // A device that refuses (a real return code) may still write the areas.
        let (n, freed) = removed_with(0x0008);
        assert_eq!(n, 0, "freed {freed:x?}");
        // A device that no longer answers (0xFFFF) is gone: Linux frees.
        assert_eq!(removed_with(0xFFFF).0, 2);
    }
}
