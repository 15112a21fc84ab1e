//! The handshake without sockets: [`ClientCore`] and [`ServerCore`] take the peer's CLC
//! messages and answer with a [`Step`] (a message to send, a fallback, an abort, or the
//! established connection). The socket side is in the parent module; tests feed these
//! directly with the messages a Linux peer sends.
//!
//! Which errors decline and which abort follows Linux's sign convention (`net/smc/af_smc.c`
//! `smc_connect_decline_fallback`, `smc_listen_decline`): a positive reason code falls back
//! to TCP and sends a DECLINE (unless the peer declined), a negative errno (a malformed or
//! unexpected CLC message, `-EPROTO` from `net/smc/smc_clc.c` `smc_clc_wait_msg`; an
//! accepted CHID that was never offered, `smc_v2_determine_accepted_chid`) ends the
//! connection without a DECLINE.

use core::fmt;
use std::sync::Arc;

use alloc::vec::Vec;

use super::super::clc::accept_confirm::{hostname_field, OS_TYPE_LINUX};
use super::super::clc::header::{SMC_RELEASE_1, SMC_V1, SMC_V2};
use super::super::clc::proposal::SMC_FEATURE_MASK;
use super::super::clc::proposal::{devices_from_entries, entries_from_devices, select_v2_devices};
use super::super::clc::{
    compress_dmbe_size, uncompress_dmbe_size, AcceptConfirm, AcceptConfirmV2, ClcError, ClcMessage,
    ClcType, Decline, DeclineReason, Eid, FceV2x, FirstContactExt, Proposal, ProposalV2, SmcType,
    SmcdDevice, SmcdV2Ext,
};
use super::super::conn::{Conn, PeerInfo, RING_OFFSET};
use super::super::device::{is_emulated_chid, SmcdGid};
use super::super::stack::{Role, SmcStack};
use super::guard::{HalfOpen, Pending};
use super::netif::LocalNet;
use super::Established;
use crate::ism::ErrorKind;

/// VLAN id SMC-Dv2 device matching queries with (`ISM_RESERVED_VLANID`).
const V2_VLAN: u16 = 0x1FFF;

/// Most devices the server tries for SMC-Dv2 (`SMCD_CLC_MAX_V2_GID_ENTRIES` + the native
/// one).
const MAX_V2_MATCHES: usize = 9;

/// Why a handshake ended without SMC-D and without a fallback (Linux: a negative errno;
/// the peer gets no DECLINE and the TCP connection is closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Abort {
    /// A CLC message that does not parse (`-EPROTO`).
    Malformed(ClcError),
    /// A well-formed CLC message of a type not expected now (`-EPROTO`).
    Unexpected(ClcType),
    /// The server accepted SMC-Dv2 on a CHID the client never offered (`-EPROTO`).
    UnknownChid(u16),
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "CLC handshake aborted: {e}"),
            Self::Unexpected(t) => write!(f, "CLC handshake aborted: unexpected {t:?}"),
            Self::UnknownChid(c) => {
                write!(
                    f,
                    "CLC handshake aborted: accepted CHID {c:#06x} was not offered"
                )
            }
        }
    }
}

impl std::error::Error for Abort {}

/// What the caller does next.
#[derive(Debug)]
pub enum Step {
    /// Send this message, then hand the peer's next message to `on_message`.
    Send(ClcMessage),
    /// Plain TCP from here: send `decline` first if there is one.
    Fallback {
        /// The DECLINE to send (none when the peer declined).
        decline: Option<Decline>,
        /// The reason.
        reason: DeclineReason,
    },
    /// Client: send this CONFIRM, then [`Pending::commit`] (dropping the pending connection
    /// instead undoes it).
    Confirm(ClcMessage, Pending),
    /// Server: SMC-D is up.
    Done(Established),
    /// End the connection without a DECLINE.
    Abort(Abort),
}

fn fall_back(reason: DeclineReason, version: u8) -> Step {
    Step::Fallback {
        decline: Some(Decline::linux(reason, version)),
        reason,
    }
}

/// A message after the handshake ended: a protocol error.
fn after_the_end(msg: Result<ClcMessage, ClcError>) -> Step {
    Step::Abort(match msg {
        Err(e) => Abort::Malformed(e),
        Ok(m) => Abort::Unexpected(m.msg_type()),
    })
}

fn peer_declined(d: &Decline) -> Step {
    Step::Fallback {
        decline: None,
        reason: d.peer_diagnosis,
    }
}

fn local_device(stack: &SmcStack, i: usize) -> SmcdDevice {
    let ops = stack.devices()[i].ops();
    let g = ops.get_local_gid();
    SmcdDevice {
        gid: g.gid,
        gid_ext: g.gid_ext,
        chid: ops.get_chid(),
    }
}

/// Registers an RMB on `device`, walking down from the configured size as Linux's
/// `net/smc/smc_core.c` `__smc_buf_create` does: every refusal of the device (no memory,
/// full table, other) tries the next smaller size (`smcd_new_buf_create` turns the
/// device's `-ENOMEM` into `-EAGAIN`); the last refusal decides the reason
/// (`net/smc/af_smc.c` `smc_listen_ism_init`/`smc_connect_ism`: `-ENOSPC` is `MAX_DMB`,
/// anything else `MEM`).
///
/// A size the link group kept from an ended connection is taken first, as Linux's
/// `smc_buf_get_slot` does before it creates a buffer: no REG_DMB then (the RMB is already
/// registered for this peer). The first refusal of the device unregisters the link
/// groups' free kept RMBs (they may hold the memory or table slots it lacks) and tries the
/// same size again.
fn create_rmb(stack: &SmcStack, g: &mut HalfOpen, peer: SmcdGid) -> Result<u8, DeclineReason> {
    let dev = &stack.devices()[g.device()];
    let mut c = compress_dmbe_size(stack.config().buffer_size);
    let mut freed_kept = false;
    loop {
        let size = uncompress_dmbe_size(c);
        if let Some(dmb) = u32::try_from(size)
            .ok()
            .and_then(|len| stack.reuse_rmb(g.lgr(), len))
        {
            g.set_rmb(dmb);
            return Ok(c);
        }
        match dev
            .ops()
            .register_dmb(size, peer, g.lgr().vlan_id, dev.client_id())
        {
            Ok(dmb) => {
                g.set_rmb(dmb);
                return Ok(c);
            }
            Err(_) if !freed_kept && stack.free_kept_rmbs(g.device()) > 0 => freed_kept = true,
            Err(e) if c == 0 && e.kind() == ErrorKind::NoSpace => {
                return Err(DeclineReason::MAX_DMB)
            }
            Err(_) if c == 0 => return Err(DeclineReason::MEM),
            Err(_) => c -= 1,
        }
    }
}

/// The connection on the RMB of `g`: no-copy attach if configured and offered, then the
/// routing of the RMB's signals. `strict_attach`: a failed attach declines `MEM` (the
/// client, as `smc_connect_ism`); otherwise (the server, after the client's CONFIRM, when
/// a DECLINE would go unheard) the connection sends by copy instead.
fn establish(
    stack: &Arc<SmcStack>,
    g: &mut HalfOpen,
    peer: PeerInfo,
    strict_attach: bool,
) -> Result<(), DeclineReason> {
    let ops = stack.devices()[g.device()].ops().clone();
    let attached = if stack.config().nocopy && ops.support_dmb_nocopy() {
        match ops.attach_dmb(peer.token) {
            Ok(d) if d.len >= RING_OFFSET + peer.ring_len => Some(d),
            Ok(d) => {
                let _ = ops.detach_dmb(d.token);
                return Err(DeclineReason::MEM);
            }
            Err(_) if strict_attach => return Err(DeclineReason::MEM),
            Err(_) => None,
        }
    } else {
        None
    };
    let Some(rmb) = g.rmb().copied() else {
        return Err(DeclineReason::INTERR);
    };
    let cfg = stack.config();
    let conn = Arc::new(Conn::new(ops, rmb, peer, attached, cfg.wait));
    conn.set_peer_exit_like_tcp(cfg.peer_exit_like_tcp);
    conn.set_busy_poll(cfg.busy_poll);
    stack.attach_conn(g.lgr(), &conn);
    g.set_conn(conn);
    Ok(())
}

fn fce(stack: &SmcStack, release: u8, feature_mask: u16) -> FirstContactExt {
    FirstContactExt {
        v2_direct: false,
        os_type: OS_TYPE_LINUX,
        release,
        hostname: hostname_field(&stack.config().hostname),
        v2x: (release >= SMC_RELEASE_1).then_some(FceV2x {
            max_conns: 0,
            max_links: 0,
            feature_mask,
            vendor_exp_options: 0,
        }),
    }
}

fn peer_ring(dmbe_size: u8) -> u32 {
    (uncompress_dmbe_size(dmbe_size) as u32).saturating_sub(RING_OFFSET)
}

fn accept_or_confirm(
    stack: &SmcStack,
    g: &HalfOpen,
    dmbe_size: u8,
    v2: Option<(Eid, Option<FirstContactExt>)>,
) -> AcceptConfirm {
    let dev = &stack.devices()[g.device()];
    let own = dev.ops().get_local_gid();
    AcceptConfirm {
        first_contact: g.first_contact(),
        gid: own.gid,
        token: g.rmb().map_or(0, |r| r.token.0),
        dmbe_idx: 0,
        dmbe_size,
        link_id: g.lgr().id,
        v2: v2.map(|(eid, fce)| AcceptConfirmV2 {
            chid: dev.ops().get_chid(),
            eid,
            gid_ext: own.gid_ext,
            fce,
        }),
    }
}

/// The client: what it offered, and where the handshake stands.
pub struct ClientCore {
    stack: Arc<SmcStack>,
    /// The V1 (native) device, if offered.
    v1: Option<usize>,
    /// SMC-Dv2 choices in offer order (the V1 device first), if V2 was offered.
    v2: Vec<(usize, SmcdDevice)>,
    done: bool,
    /// Counted in the stack's client handshakes in flight.
    in_flight: bool,
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        self.settled();
    }
}

impl ClientCore {
    /// Plans the proposal as Linux's `net/smc/af_smc.c` `smc_find_proposal_devices` and
    /// `net/smc/smc_clc.c` `smc_clc_send_proposal` build it, for a connection from
    /// `local` over the interface `net`. Returns the core and its first step: the
    /// PROPOSAL, or a DECLINE when there is nothing to offer (`NOSMCDEV`, or `CNFERR` when
    /// only SMC-Dv1 is possible and the interface has no prefix for it).
    pub fn start(stack: &Arc<SmcStack>, local: std::net::IpAddr, net: &LocalNet) -> (Self, Step) {
        let cfg = stack.config();
        let order = stack.linux_order();
        let native = if cfg.offer_v1 {
            order
                .iter()
                .copied()
                .find(|&i| !is_emulated_chid(stack.devices()[i].ops().get_chid()))
        } else {
            None
        };
        // smc_find_ism_v2_device_clnt: every other device with a CHID not offered yet (the
        // V1 device's included), within the entry capacity; no per-device V2 check, only
        // the system-wide one.
        let mut v2: Vec<(usize, SmcdDevice)> = Vec::new();
        if stack.v2_capable() {
            let mut chids: Vec<u16> = native
                .iter()
                .map(|&i| stack.devices()[i].ops().get_chid())
                .collect();
            let mut cands = Vec::new();
            for &i in order.iter().filter(|&&i| Some(i) != native) {
                let d = local_device(stack, i);
                if !chids.contains(&d.chid) {
                    chids.push(d.chid);
                    cands.push((i, d));
                }
            }
            let offered = select_v2_devices(cands.iter().map(|c| c.1));
            v2.extend(native.map(|i| (i, local_device(stack, i))));
            v2.extend(
                offered
                    .iter()
                    .filter_map(|d| cands.iter().find(|c| c.1 == *d).copied()),
            );
        }
        // smc_clc_send_proposal: without a prefix there is no SMC-Dv1 offer, but the native
        // device's GID and CHID are still sent (the server's first SMC-Dv2 candidate).
        let prefix = native.and_then(|_| net.prefix_for(local));
        let v1 = native.filter(|_| prefix.is_some());
        let reason = if native.is_some() && v1.is_none() {
            DeclineReason::CNFERR
        } else {
            DeclineReason::NOSMCDEV
        };
        let version = if stack.v2_capable() { SMC_V2 } else { SMC_V1 };
        let mut core = Self {
            stack: stack.clone(),
            v1,
            v2,
            done: false,
            in_flight: false,
        };
        if core.v1.is_none() && core.v2.is_empty() {
            core.done = true;
            return (core, fall_back(reason, version));
        }
        stack.client_begin();
        core.in_flight = true;
        let v1dev = core.v1.map(|i| local_device(stack, i));
        let native_dev = native.map(|i| local_device(stack, i));
        let offer_v2 = !core.v2.is_empty();
        let proposal = Proposal {
            version: SMC_V2,
            typev1: if v1dev.is_some() {
                SmcType::D
            } else {
                SmcType::N
            },
            typev2: if offer_v2 { SmcType::D } else { SmcType::N },
            smcr: Default::default(),
            ism_gid: native_dev.map_or(0, |d| d.gid),
            ism_chid: native_dev.map_or(0, |d| d.chid),
            prefix: v1dev.and(prefix),
            v2: offer_v2.then(|| ProposalV2 {
                seid: cfg.seid,
                eids: cfg.ueid.into_iter().collect(),
                smcd: Some(SmcdV2Ext {
                    system_eid: cfg.system_eid().unwrap_or([0; 32]),
                    devices: core
                        .v2
                        .iter()
                        .filter(|(i, _)| Some(*i) != native)
                        .map(|c| c.1)
                        .collect(),
                }),
                ..ProposalV2::default()
            }),
        };
        (core, Step::Send(ClcMessage::Proposal(proposal)))
    }

    fn settled(&mut self) {
        if core::mem::take(&mut self.in_flight) {
            self.stack.client_end();
        }
    }

    /// The server's answer to the proposal (or the error that kept it from parsing).
    pub fn on_message(&mut self, msg: Result<ClcMessage, ClcError>) -> Step {
        if self.done {
            return after_the_end(msg);
        }
        self.done = true;
        let step = match msg {
            Err(e) => Step::Abort(Abort::Malformed(e)),
            Ok(ClcMessage::Decline(d)) => peer_declined(&d),
            Ok(ClcMessage::Accept(a)) => self.on_accept(a),
            Ok(m) => Step::Abort(Abort::Unexpected(m.msg_type())),
        };
        self.settled();
        step
    }

    /// `net/smc/af_smc.c` `smc_connect_check_aclc`, then `smc_connect_ism`.
    fn on_accept(&mut self, accept: AcceptConfirm) -> Step {
        let stack = &self.stack.clone();
        let version = if accept.v2.is_some() { SMC_V2 } else { SMC_V1 };
        let device = match (&accept.v2, self.v1) {
            (Some(_), _) if self.v2.is_empty() => {
                return fall_back(DeclineReason::MODEUNSUPP, version)
            }
            (Some(v2), _) => match self.v2.iter().find(|(_, d)| d.chid == v2.chid) {
                Some((i, _)) => *i,
                None => return Step::Abort(Abort::UnknownChid(v2.chid)),
            },
            (None, Some(i)) => i,
            (None, None) => return fall_back(DeclineReason::MODEUNSUPP, version),
        };
        let chid = stack.devices()[device].ops().get_chid();
        let peer_gid = SmcdGid {
            gid: accept.gid,
            gid_ext: match &accept.v2 {
                Some(v2) if is_emulated_chid(chid) => v2.gid_ext,
                _ => 0,
            },
        };
        // The release and features of the link group, from the server's first-contact
        // extension (smc_clc_clnt_v2x_features_validate).
        let (release, features) = match accept.v2.as_ref().and_then(|v| v.fce.as_ref()) {
            Some(f) if accept.first_contact => (
                f.release.min(SMC_RELEASE_1),
                f.v2x.as_ref().map_or(0, |x| x.feature_mask) & SMC_FEATURE_MASK,
            ),
            _ => (0, 0),
        };
        // smc_conn_create: SMC-D has one link-group role; a server that reuses a link group
        // we do not have is out of sync with us.
        let (lgr, first_contact) = match stack.find_link_group(device, peer_gid) {
            Some(l) => (l, false),
            None if !accept.first_contact => {
                // Another of our handshakes may be about to open it: wait for that.
                match stack.link_group_settled(device, peer_gid, stack.config().clc_timeout) {
                    Some(l) => (l, false),
                    None => return fall_back(DeclineReason::SYNCERR, version),
                }
            }
            None => stack.link_group(device, peer_gid, Role::Client),
        };
        // Settled: later handshakes of ours now find this link group.
        self.settled();
        let mut g = HalfOpen::new(stack, device, lgr, first_contact, version);
        let c = match create_rmb(stack, &mut g, peer_gid) {
            Ok(c) => c,
            Err(reason) => return fall_back(reason, version),
        };
        let peer = PeerInfo {
            gid: peer_gid,
            token: ism_hal::DmbToken(accept.token),
            dmbe_idx: accept.dmbe_idx,
            ring_len: peer_ring(accept.dmbe_size),
        };
        if let Err(reason) = establish(stack, &mut g, peer, true) {
            return fall_back(reason, version);
        }
        let v2 = accept
            .v2
            .as_ref()
            .map(|a| (a.eid, first_contact.then(|| fce(stack, release, features))));
        let confirm = accept_or_confirm(stack, &g, c, v2);
        Step::Confirm(ClcMessage::Confirm(confirm), Pending(g))
    }
}

/// What the server agreed to in its ACCEPT.
struct Accepted {
    guard: HalfOpen,
    peer_gid: SmcdGid,
    release: u8,
}

enum ServerState {
    Proposal,
    Confirm(Accepted),
    Done,
}

/// The server: waits for the proposal, then (after its ACCEPT) for the CONFIRM.
pub struct ServerCore {
    stack: Arc<SmcStack>,
    net: LocalNet,
    state: ServerState,
    /// Decline the proposal with this reason, whatever it offers ([`ServerCore::refuse`]).
    refused: Option<DeclineReason>,
}

/// The SMC-D versions a proposal leaves to try, after `smc_listen_v2_check`.
struct Versions {
    v1: bool,
    v2: bool,
}

impl ServerCore {
    /// A server for one connection arriving over the interface `net`.
    pub fn new(stack: &Arc<SmcStack>, net: LocalNet) -> Self {
        Self {
            stack: stack.clone(),
            net,
            state: ServerState::Proposal,
            refused: None,
        }
    }

    /// Declines the proposal to come with `reason` (a DECLINE of the proposal's version,
    /// then TCP), before any device is chosen or buffer taken.
    pub fn refuse(&mut self, reason: DeclineReason) {
        self.refused = Some(reason);
    }

    /// The client's next message (or the error that kept it from parsing).
    pub fn on_message(&mut self, msg: Result<ClcMessage, ClcError>) -> Step {
        match core::mem::replace(&mut self.state, ServerState::Done) {
            ServerState::Proposal => match msg {
                Err(e) => Step::Abort(Abort::Malformed(e)),
                Ok(ClcMessage::Decline(d)) => peer_declined(&d),
                Ok(ClcMessage::Proposal(p)) => match self.refused {
                    Some(reason) => fall_back(reason, p.version),
                    None => self.on_proposal(&p),
                },
                Ok(m) => Step::Abort(Abort::Unexpected(m.msg_type())),
            },
            ServerState::Confirm(acc) => match msg {
                Err(e) => Step::Abort(Abort::Malformed(e)),
                Ok(ClcMessage::Decline(d)) => {
                    // smc_clc_wait_msg: a DECLINE with the sync flag ends the link group.
                    if d.sync_error {
                        self.stack.terminate_link_group(acc.guard.lgr());
                    }
                    peer_declined(&d)
                }
                Ok(ClcMessage::Confirm(c)) => self.on_confirm(acc, &c),
                Ok(m) => Step::Abort(Abort::Unexpected(m.msg_type())),
            },
            ServerState::Done => after_the_end(msg),
        }
    }

    /// `net/smc/af_smc.c` `smc_listen_v2_check` (SMC-D part; this model has no SMC-R).
    fn versions(&self, p: &Proposal) -> Result<Versions, DeclineReason> {
        let mut v = Versions {
            v1: p.typev1.smcd_indicated(),
            v2: p.version > SMC_V1 && p.typev2.smcd_indicated(),
        };
        let smcr_v2 = p.version > SMC_V1 && p.typev2.smcr_indicated();
        let mut rc = DeclineReason::PEERNOSMC;
        if v.v2 || smcr_v2 {
            match &p.v2 {
                None => {
                    v.v2 = false;
                    rc = DeclineReason::NOV2EXT;
                }
                Some(ext) if v.v2 => {
                    if !self.stack.v2_capable() {
                        v.v2 = false;
                        rc = DeclineReason::NOISM2SUPP;
                    } else if ext.smcd.is_none() {
                        v.v2 = false;
                        rc = DeclineReason::NOV2DEXT;
                    } else if ext.eids.is_empty() && !ext.seid {
                        v.v2 = false;
                        rc = DeclineReason::NOUEID;
                    }
                }
                Some(_) => {}
            }
        }
        if !(v.v1 || v.v2 || smcr_v2 || p.typev1.smcr_indicated()) {
            return Err(rc);
        }
        Ok(v)
    }

    /// `net/smc/smc_clc.c` `smc_clc_match_eid`: the system EID first (both enabled and
    /// equal), then the client's user EIDs in its order against ours.
    fn match_eid(&self, ext: &ProposalV2) -> Option<Eid> {
        let cfg = self.stack.config();
        if let (Some(own), Some(d)) = (cfg.system_eid(), ext.smcd.as_ref()) {
            if ext.seid && d.system_eid == own {
                return Some(own);
            }
        }
        ext.eids
            .iter()
            .copied()
            .find(|e| cfg.ueid.as_ref() == Some(e))
    }

    /// `smc_listen_ism_init`: link group, then RMB. The guard gives both back on failure.
    fn ism_init(
        &self,
        device: usize,
        peer: SmcdGid,
        version: u8,
    ) -> Result<(HalfOpen, u8), DeclineReason> {
        let (lgr, first) = self.stack.link_group(device, peer, Role::Server);
        let mut g = HalfOpen::new(&self.stack, device, lgr, first, version);
        let c = create_rmb(&self.stack, &mut g, peer)?;
        Ok((g, c))
    }

    /// `smc_find_ism_v2_device_serv`: every local device that matches a proposed one (the
    /// native device first, then the SMC-Dv2 list; same CHID, the peer's GID reachable),
    /// then a common EID, then the first matching device whose RMB can be created.
    fn find_v2(&self, p: &Proposal, rc: &mut Option<DeclineReason>) -> Option<(HalfOpen, u8, Eid)> {
        let ext = p.v2.as_ref()?;
        let devs = self.stack.devices();
        let mut cands: Vec<SmcdDevice> = Vec::new();
        if p.ism_chid != 0 {
            cands.push(SmcdDevice {
                gid: p.ism_gid,
                gid_ext: 0,
                chid: p.ism_chid,
            });
        }
        // The receiver's pairing rule again, on the entries as sent.
        cands.extend(devices_from_entries(&entries_from_devices(p.v2_devices())));
        let order = self.stack.linux_order();
        let mut matches: Vec<(usize, SmcdGid)> = Vec::new();
        for cand in cands {
            let rgid = SmcdGid {
                gid: cand.gid,
                gid_ext: if cand.is_emulated() { cand.gid_ext } else { 0 },
            };
            let hit = order.iter().copied().find(|&i| {
                let ops = devs[i].ops();
                !matches.iter().any(|m| m.0 == i)
                    && ops.get_chid() == cand.chid
                    && ops.query_remote_gid(rgid, true, V2_VLAN).is_ok()
            });
            if let Some(i) = hit {
                if matches.len() < MAX_V2_MATCHES {
                    matches.push((i, rgid));
                }
            }
        }
        if matches.is_empty() {
            rc.get_or_insert(DeclineReason::NOSMCD2DEV);
            return None;
        }
        let eid = self.match_eid(ext)?;
        for (i, rgid) in matches {
            match self.ism_init(i, rgid, SMC_V2) {
                Ok((g, c)) => return Some((g, c, eid)),
                Err(r) => {
                    rc.get_or_insert(r);
                }
            }
        }
        None
    }

    /// `smc_find_ism_v1_device_serv`: a native device that reaches the proposed GID.
    fn find_v1(&self, p: &Proposal, rc: &mut Option<DeclineReason>) -> Option<(HalfOpen, u8)> {
        let rgid = SmcdGid {
            gid: p.ism_gid,
            gid_ext: 0,
        };
        let devs = self.stack.devices();
        let found = self.stack.linux_order().into_iter().find(|&i| {
            let ops = devs[i].ops();
            !is_emulated_chid(ops.get_chid()) && ops.query_remote_gid(rgid, false, 0).is_ok()
        });
        let Some(i) = found else {
            rc.get_or_insert(DeclineReason::NOSMCDDEV);
            return None;
        };
        match self.ism_init(i, rgid, SMC_V1) {
            Ok(x) => Some(x),
            Err(r) => {
                rc.get_or_insert(r);
                None
            }
        }
    }

    /// `smc_listen_find_device`, then the ACCEPT (`smc_clc_send_accept`).
    fn on_proposal(&mut self, p: &Proposal) -> Step {
        let version = p.version;
        let v = match self.versions(p) {
            Ok(v) => v,
            Err(reason) => return fall_back(reason, version),
        };
        let mut rc: Option<DeclineReason> = None;
        let release = p.v2.as_ref().map_or(0, |e| e.release.min(SMC_RELEASE_1));
        let mut chosen = if v.v2 && p.typev2.smcd_indicated() {
            self.find_v2(p, &mut rc)
                .map(|(g, c, eid)| (g, c, Some(eid)))
        } else {
            None
        };
        if chosen.is_none() {
            // smc_listen_prfx_check, for SMC-Dv1 only.
            let prefix_ok =
                p.typev1 == SmcType::N || p.prefix.as_ref().is_some_and(|pr| self.net.matches(pr));
            if !prefix_ok {
                rc.get_or_insert(DeclineReason::DIFFPREFIX);
            } else if v.v1 {
                chosen = self.find_v1(p, &mut rc).map(|(g, c)| (g, c, None));
            }
        }
        let Some((guard, c, eid)) = chosen else {
            let smcr = p.typev1.smcr_indicated() || p.typev2.smcr_indicated();
            let reason = match rc {
                Some(r) => r,
                None if smcr => DeclineReason::NOSMCRDEV,
                None => DeclineReason::NOSMCDDEV,
            };
            return fall_back(reason, version);
        };
        // smc_clc_srv_v2x_features_validate: the features both sides have.
        let features = p.v2.as_ref().map_or(0, |e| e.feature_mask) & SMC_FEATURE_MASK;
        let v2 = eid.map(|e| {
            (
                e,
                guard
                    .first_contact()
                    .then(|| fce(&self.stack, release, features)),
            )
        });
        let accept = accept_or_confirm(&self.stack, &guard, c, v2);
        // The peer's GID as the link group holds it (with the Emulated-ISM extension).
        let peer_gid = guard.lgr().peer_gid;
        self.state = ServerState::Confirm(Accepted {
            guard,
            peer_gid,
            release,
        });
        Step::Send(ClcMessage::Accept(accept))
    }

    /// `smc_listen_work` after the CONFIRM: the release check of
    /// `smc_clc_v2x_features_confirm_check`, then the connection.
    fn on_confirm(&mut self, mut acc: Accepted, c: &AcceptConfirm) -> Step {
        let version = acc.guard.version();
        if let (Some(f), true) = (c.v2.as_ref().and_then(|v| v.fce.as_ref()), c.first_contact) {
            if f.release != acc.release {
                return fall_back(DeclineReason::RELEASEERR, version);
            }
        }
        let peer = PeerInfo {
            gid: acc.peer_gid,
            token: ism_hal::DmbToken(c.token),
            dmbe_idx: c.dmbe_idx,
            ring_len: peer_ring(c.dmbe_size),
        };
        if let Err(reason) = establish(&self.stack, &mut acc.guard, peer, false) {
            return fall_back(reason, version);
        }
        match acc.guard.commit() {
            Some(e) => Step::Done(e),
            None => fall_back(DeclineReason::INTERR, version),
        }
    }
}
