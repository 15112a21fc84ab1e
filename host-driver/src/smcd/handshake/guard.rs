//! The half-open handshake: what a handshake has taken so far (a link group it opened, an
//! RMB, a connection), given back on drop unless the handshake completes.
//!
//! Linux undoes the same things on its error paths with `smc_conn_abort` (which frees the
//! connection's buffers and, for a link group the connection opened, the link group:
//! `net/smc/af_smc.c`, `net/smc/smc_core.c` `smc_conn_free`/`smc_lgr_cleanup_early`).

use std::sync::Arc;

use super::super::conn::Conn;
use super::super::stack::{LinkGroup, SmcStack};
use super::Established;
use crate::ism::Dmb;

/// Resources of a handshake under way. Dropping it releases them: the connection (which
/// detaches the peer's DMB and unregisters the RMB), else the bare RMB, and the link group
/// if this handshake opened it and nothing else uses it.
pub(crate) struct HalfOpen {
    stack: Arc<SmcStack>,
    device: usize,
    lgr: Arc<LinkGroup>,
    first_contact: bool,
    rmb: Option<Dmb>,
    conn: Option<Arc<Conn>>,
    version: u8,
}

impl HalfOpen {
    /// Holds `lgr` (opened by this handshake iff `first_contact`) on `device`.
    pub(crate) fn new(
        stack: &Arc<SmcStack>,
        device: usize,
        lgr: Arc<LinkGroup>,
        first_contact: bool,
        version: u8,
    ) -> Self {
        Self {
            stack: stack.clone(),
            device,
            lgr,
            first_contact,
            rmb: None,
            conn: None,
            version,
        }
    }

    pub(crate) fn device(&self) -> usize {
        self.device
    }

    pub(crate) fn lgr(&self) -> &Arc<LinkGroup> {
        &self.lgr
    }

    pub(crate) fn first_contact(&self) -> bool {
        self.first_contact
    }

    pub(crate) fn version(&self) -> u8 {
        self.version
    }

    pub(crate) fn rmb(&self) -> Option<&Dmb> {
        self.rmb.as_ref()
    }

    /// Records the RMB registered for this handshake.
    pub(crate) fn set_rmb(&mut self, rmb: Dmb) {
        self.rmb = Some(rmb);
    }

    /// Records the connection built on the RMB (which now owns the RMB).
    pub(crate) fn set_conn(&mut self, conn: Arc<Conn>) {
        self.conn = Some(conn);
    }

    /// The handshake completed: nothing is given back.
    pub(crate) fn commit(mut self) -> Option<Established> {
        let conn = self.conn.take()?;
        self.rmb = None;
        let first_contact = core::mem::replace(&mut self.first_contact, false);
        Some(Established {
            conn,
            device: self.device,
            lgr: self.lgr.clone(),
            first_contact,
            version: self.version,
        })
    }
}

impl Drop for HalfOpen {
    fn drop(&mut self) {
        let ops = self.stack.devices()[self.device].ops();
        if let Some(conn) = self.conn.take() {
            self.stack.release_conn(self.device, &conn);
        } else if let Some(rmb) = self.rmb.take() {
            if let Err(e) = ops.unregister_dmb(&rmb) {
                log::warn!("smc: RMB of a failed handshake not unregistered: {e:?}");
            }
        }
        if self.first_contact {
            self.stack.forget_link_group(&self.lgr);
        }
    }
}

/// A client handshake whose CONFIRM is still to be sent: [`Pending::commit`] after the
/// CONFIRM went out; dropping it instead undoes the connection.
pub struct Pending(pub(crate) HalfOpen);

impl Pending {
    /// The CONFIRM was sent: the connection is established.
    pub fn commit(self) -> Established {
        match self.0.commit() {
            Some(e) => e,
            // A `Pending` is only made with its connection set.
            None => unreachable!("a pending handshake always holds its connection"),
        }
    }
}

impl core::fmt::Debug for Pending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pending")
            .field("device", &self.0.device)
            .field("lgr", &self.0.lgr.id)
            .field("first_contact", &self.0.first_contact)
            .finish_non_exhaustive()
    }
}
