//! The SMC-D device operations: what SMC needs from an ISM device (`struct smcd_ops` of
//! Linux 6.10), as a trait, and its implementation on [`IsmDriver`].
//!
//! Errors are [`IsmError`]s; their [`ErrorKind`] is the errno SMC reacts to (`net/smc/smc_core.c`
//! `smcd_new_buf_create`):
//! `NoSpace` for a full DMB table (CLC decline `MAX_DMB`), `NoMemory` (try a smaller
//! buffer), anything else an I/O error. Optional operations return `NotSupported` by
//! default, as a `NULL` op in Linux.

use alloc::sync::Arc;

use ism_hal::{DmaMemory, DmbToken, Gid};

use crate::ism::{Bus, Dmb, ErrorKind, HostMemory, IsmClient, IsmDriver, IsmError};

/// An SMC-D GID: 64 bits for native ISM, plus an extension for Emulated-ISM (6.8+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SmcdGid {
    /// The GID.
    pub gid: u64,
    /// The extension (0 for native ISM).
    pub gid_ext: u64,
}

pub use ism_abi::chid::{is_emulated_chid, LOOPBACK_CHID};

fn not_supported<T>() -> Result<T, IsmError> {
    Err(IsmError::Local(ErrorKind::NotSupported))
}

/// The SMC-D device operations.
pub trait SmcdOps: Send + Sync {
    /// 0 iff `rgid` is reachable with (`vid_valid`, `vid`).
    ///
    /// # Errors
    /// `Unreachable` kind otherwise.
    fn query_remote_gid(&self, rgid: SmcdGid, vid_valid: bool, vid: u16) -> Result<(), IsmError>;

    /// Allocates and registers a DMB of `len` bytes writable by `rgid`, signalling `client`.
    ///
    /// # Errors
    /// `NoSpace` (table or SBA indices full), `NoMemory`, `InvalidArgument`, `Io`.
    fn register_dmb(
        &self,
        len: usize,
        rgid: SmcdGid,
        vlan_id: u16,
        client: u8,
    ) -> Result<Dmb, IsmError>;

    /// Unregisters (and frees) a DMB.
    ///
    /// # Errors
    /// The device's error; the DMB then stays registered.
    fn unregister_dmb(&self, dmb: &Dmb) -> Result<(), IsmError>;

    /// Writes `data` at `offset` of the remote DMB `token`; signals DMBE `idx` if `sf`.
    ///
    /// # Errors
    /// `MoveRefused` (bad token, not the writer, out of range), `NoDevice`.
    fn move_data(
        &self,
        token: DmbToken,
        idx: u8,
        sf: bool,
        offset: u32,
        data: &[u8],
    ) -> Result<(), IsmError>;

    /// Writes `data` at `offset` into the remote DMB `token` without a signal, here and
    /// now, if the device can (a loopback device moving on the caller's CPU): `Ok(true)`
    /// when the bytes are in the target as this returns, so that the caller may tell the
    /// receiver itself (as Linux's `net/smc/smc_loopback.c` `smc_lo_move_data` runs the
    /// receiving connection's handler from the sender's move); `Ok(false)` if it cannot now
    /// (nothing written). Optional: `Ok(false)` by default.
    ///
    /// # Errors
    /// As [`SmcdOps::move_data`].
    fn move_data_now(
        &self,
        _token: DmbToken,
        _idx: u8,
        _offset: u32,
        _data: &[u8],
    ) -> Result<bool, IsmError> {
        Ok(false)
    }

    /// Sends a software event to `rgid` (optional).
    ///
    /// # Errors
    /// `NotSupported` if the device has no such operation; the device's error.
    fn signal_event(
        &self,
        _rgid: SmcdGid,
        _trigger_irq: bool,
        _code: u32,
        _info: u64,
    ) -> Result<(), IsmError> {
        not_supported()
    }

    /// Adds a VLAN id (optional).
    ///
    /// # Errors
    /// `NotSupported`; the device's error.
    fn add_vlan_id(&self, _vlan_id: u64) -> Result<(), IsmError> {
        not_supported()
    }

    /// Removes a VLAN id (optional).
    ///
    /// # Errors
    /// `NotSupported`; the device's error.
    fn del_vlan_id(&self, _vlan_id: u64) -> Result<(), IsmError> {
        not_supported()
    }

    /// The device's CHID.
    fn get_chid(&self) -> u16;

    /// The local GID.
    fn get_local_gid(&self) -> SmcdGid;

    /// Whether the device is ISMv2-capable.
    fn supports_v2(&self) -> bool;

    /// Whether [`SmcdOps::attach_dmb`] / [`SmcdOps::detach_dmb`] work (no-copy).
    fn support_dmb_nocopy(&self) -> bool {
        false
    }

    /// Maps the peer's DMB `token` (no-copy); its memory is reachable through
    /// [`SmcdOps::memory`] at the returned address.
    ///
    /// # Errors
    /// `NotSupported` unless [`SmcdOps::support_dmb_nocopy`]; the device's error.
    fn attach_dmb(&self, _token: DmbToken) -> Result<Dmb, IsmError> {
        not_supported()
    }

    /// Undoes [`SmcdOps::attach_dmb`].
    ///
    /// # Errors
    /// `NotSupported`; the device's error.
    fn detach_dmb(&self, _token: DmbToken) -> Result<(), IsmError> {
        not_supported()
    }

    /// Registers a receiver of DMB signals and events; returns the id for `register_dmb`.
    ///
    /// # Errors
    /// `NoSpace` when the device has no room for another client.
    fn add_client(&self, client: Arc<dyn IsmClient>) -> Result<u8, IsmError>;

    /// The memory DMBs live in (own DMBs, and attached ones).
    fn memory(&self) -> &dyn DmaMemory;

    /// The host's thread polls the device itself from now on (`true`) or no longer
    /// (`false`): see [`Bus::set_polling`]. Calls nest; the default ignores them.
    fn set_polling(&self, on: bool) {
        let _ = on;
    }

    /// Runs the interrupt handler if work is pending (busy-poll mode); returns whether it ran.
    fn poll_irq(&self) -> bool {
        false
    }

    /// The poll a thread makes once more after it stopped polling (`set_polling(false)`):
    /// as [`SmcdOps::poll_irq`], but whatever other pollers do (see
    /// [`IsmDriver::poll_sba_last`]); the default is `poll_irq`.
    fn poll_irq_last(&self) -> bool {
        self.poll_irq()
    }

    /// Whether the device shows work for its interrupt handler besides a signal of our DMB
    /// `sba_idx` (an event, another DMB's signal). A waiter that saw its connection's news
    /// in the CDC itself asks this after it stopped polling and took the interrupt
    /// ([`SmcdOps::ack_irq`]), to know whether it may leave that signal pending instead of
    /// running the handler ([`crate::smcd::conn`]); the default, `true`, always runs it.
    /// Must only load: nothing may be taken.
    fn pending_besides(&self, sba_idx: u32) -> bool {
        let _ = sba_idx;
        true
    }

    /// Acknowledges the interrupt without running the handler, so that no interrupt
    /// thread runs it for a signal whose news a waiter has already taken
    /// ([`crate::ism::Bus::ack_interrupt`]); the SBA's bits stay. The default does nothing.
    fn ack_irq(&self) {}

    /// Whether the device's interrupt is raised and not yet taken
    /// ([`crate::ism::Bus::interrupt_raised`]); `None` if the device cannot tell (the
    /// default), and then spinning waiters do not watch the CDC. Whether it answers
    /// `None` must not change over the device's life (a connection asks once, when it is
    /// made).
    fn irq_raised(&self) -> Option<bool> {
        None
    }

    /// Whether only polling threads take the device's interrupts (no interrupt thread:
    /// see [`Bus::polled_only`]); the default says no.
    fn polled_only(&self) -> bool {
        false
    }

    /// Handles what the device has already reported (the events it queued, the signals in
    /// the SBA), waiting for a run of the interrupt handler that is under way, so that what
    /// it reported before now (a peer's GID going down, a peer's shutdown, a signal left
    /// by a waiter that took the interrupt) has been acted on when this returns, whoever
    /// polls the device.
    fn sync_events(&self) {
        self.poll_irq();
    }
}

/// The calling thread's poller token for [`IsmDriver::claim_polling`] (non-zero, distinct
/// per live thread: the address of a thread-local).
#[cfg(feature = "std")]
fn poller_token() -> usize {
    std::thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| t as *const u8 as usize)
}

/// Without `std` there are no threads to tell apart: one token for every poller, so that
/// each of them polls the SBA (as before claims existed).
#[cfg(not(feature = "std"))]
fn poller_token() -> usize {
    1
}

impl<H: HostMemory, B: Bus> SmcdOps for IsmDriver<H, B> {
    fn query_remote_gid(&self, rgid: SmcdGid, vid_valid: bool, vid: u16) -> Result<(), IsmError> {
        // Native ISM GIDs are 64 bits; an extension can only match an emulated device's.
        if rgid.gid_ext != 0 && !is_emulated_chid(self.chid()) {
            return Err(IsmError::Local(ErrorKind::Unreachable));
        }
        IsmDriver::query_remote_gid(self, Gid(rgid.gid), vid_valid.then_some(vid))
    }

    fn register_dmb(
        &self,
        len: usize,
        rgid: SmcdGid,
        vlan_id: u16,
        client: u8,
    ) -> Result<Dmb, IsmError> {
        // SMC passes vlan_valid = 0 and only fills vlan_id (`net/smc/smc_ism.c`
        // `smc_ism_register_dmb`).
        let _ = vlan_id;
        IsmDriver::register_dmb(self, len, Gid(rgid.gid), None, client)
    }

    fn unregister_dmb(&self, dmb: &Dmb) -> Result<(), IsmError> {
        IsmDriver::unregister_dmb(self, dmb)
    }

    fn move_data(
        &self,
        token: DmbToken,
        idx: u8,
        sf: bool,
        offset: u32,
        data: &[u8],
    ) -> Result<(), IsmError> {
        IsmDriver::move_data(self, token, idx, sf, offset, data)
    }

    fn move_data_now(
        &self,
        token: DmbToken,
        idx: u8,
        offset: u32,
        data: &[u8],
    ) -> Result<bool, IsmError> {
        IsmDriver::move_data_now(self, token, idx, offset, data)
    }

    fn signal_event(
        &self,
        rgid: SmcdGid,
        trigger_irq: bool,
        code: u32,
        info: u64,
    ) -> Result<(), IsmError> {
        IsmDriver::signal_event(self, Gid(rgid.gid), trigger_irq, code, info)
    }

    fn add_vlan_id(&self, vlan_id: u64) -> Result<(), IsmError> {
        IsmDriver::add_vlan_id(self, vlan_id)
    }

    fn del_vlan_id(&self, vlan_id: u64) -> Result<(), IsmError> {
        IsmDriver::del_vlan_id(self, vlan_id)
    }

    fn get_chid(&self) -> u16 {
        self.chid()
    }

    fn get_local_gid(&self) -> SmcdGid {
        SmcdGid {
            gid: self.gid().0,
            gid_ext: 0,
        }
    }

    fn supports_v2(&self) -> bool {
        IsmDriver::supports_v2(self)
    }

    fn support_dmb_nocopy(&self) -> bool {
        self.supports_attach()
    }

    fn attach_dmb(&self, token: DmbToken) -> Result<Dmb, IsmError> {
        IsmDriver::attach_dmb(self, token)
    }

    fn detach_dmb(&self, token: DmbToken) -> Result<(), IsmError> {
        IsmDriver::detach_dmb(self, token)
    }

    fn add_client(&self, client: Arc<dyn IsmClient>) -> Result<u8, IsmError> {
        IsmDriver::add_client(self, client)
    }

    fn memory(&self) -> &dyn DmaMemory {
        IsmDriver::memory(self)
    }

    fn set_polling(&self, on: bool) {
        IsmDriver::set_polling(self, on);
        self.claim_polling(poller_token(), on);
    }

    fn poll_irq(&self) -> bool {
        self.poll_sba(poller_token())
    }

    fn poll_irq_last(&self) -> bool {
        self.poll_sba_last()
    }

    fn polled_only(&self) -> bool {
        IsmDriver::polled_only(self)
    }

    fn pending_besides(&self, sba_idx: u32) -> bool {
        IsmDriver::pending_besides(self, sba_idx)
    }

    fn ack_irq(&self) {
        IsmDriver::ack_interrupt(self);
    }

    fn irq_raised(&self) -> Option<bool> {
        IsmDriver::interrupt_raised(self)
    }

    fn sync_events(&self) {
        // Runs of the handler are serialised: this one waits for a run already under way
        // (which took the SBA's flags, so `irq_pending` no longer shows its work).
        self.handle_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ism::fake::{fake_device, FakeFunction};

    struct Nobody;
    impl IsmClient for Nobody {
        fn handle_irq(&self, _: u32, _: u16) {}
        fn handle_event(&self, _: &crate::ism::IsmEvent) {}
    }

    #[test]
    fn ops_on_lpar_functions() {
        let dev = fake_device(2, false);
        let (fa, fb) = (FakeFunction::new(dev.clone(), 0), FakeFunction::new(dev, 1));
        let a: Arc<dyn SmcdOps> = Arc::new(IsmDriver::probe(fa.clone(), fa, 0x0123).unwrap());
        let b: Arc<dyn SmcdOps> = Arc::new(IsmDriver::probe(fb.clone(), fb, 0x0123).unwrap());
        assert_eq!(a.get_chid(), 0x0123);
        assert!(a.supports_v2() && !a.support_dmb_nocopy());
        a.query_remote_gid(b.get_local_gid(), true, 0x1FFF).unwrap();
        let forged = SmcdGid {
            gid: b.get_local_gid().gid,
            gid_ext: 5,
        };
        assert_eq!(
            a.query_remote_gid(forged, false, 0).unwrap_err().kind(),
            ErrorKind::Unreachable
        );
        let c = a.add_client(Arc::new(Nobody)).unwrap();
        let dmb = a.register_dmb(16384, b.get_local_gid(), 0, c).unwrap();
        b.move_data(dmb.token, 0, true, 32, b"hello").unwrap();
        let mut back = [0u8; 5];
        a.memory()
            .read(ism_hal::DevAddr(dmb.addr.0 + 32), &mut back)
            .unwrap();
        assert_eq!(&back, b"hello");
        assert!(a.poll_irq());
        assert!(!a.poll_irq());
        assert_eq!(
            b.attach_dmb(dmb.token).unwrap_err().kind(),
            ErrorKind::NotSupported
        );
        b.signal_event(a.get_local_gid(), true, 0x83, 1).unwrap();
        a.unregister_dmb(&dmb).unwrap();
    }

    #[test]
    fn full_table_is_enospc() {
        let dev = fake_device(2, false);
        let (fa, fb) = (FakeFunction::new(dev.clone(), 0), FakeFunction::new(dev, 1));
        let a = IsmDriver::probe(fa.clone(), fa, 1).unwrap();
        let b = IsmDriver::probe(fb.clone(), fb, 1).unwrap();
        let c = SmcdOps::add_client(&a, Arc::new(Nobody)).unwrap();
        let mut n = 0;
        let err = loop {
            match SmcdOps::register_dmb(&a, 4096, SmcdOps::get_local_gid(&b), 0, c) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(n, 64, "the fake device's table holds 64 DMBs");
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert_eq!(err.kind().errno(), 28);
    }
}
