//! The CLC handshake over a TCP connection: the client proposes its SMC-D devices, the
//! server picks one and accepts (or declines), the client confirms. Afterwards data flows
//! through DMBs; a decline on either side means plain TCP on the same connection.
//!
//! Device choice follows Linux (`net/smc/af_smc.c` `smc_listen_find_device`): the server tries the
//! SMC-Dv2 candidates in
//! the proposal's order (a native V1 device first), taking the first local device with the
//! same CHID that reaches the candidate's GID (`query_remote_gid(gid, 1, 0x1FFF)`), then
//! requires a common EID; failing that, SMC-Dv1 with the native device; failing that, it
//! declines with the first reason it met.
//!
//! One deviation, documented: Linux signals SMC capability with a TCP option in the SYN,
//! which user space cannot set. Here both ends run this stack, and a client without any
//! usable device sends a DECLINE as its first CLC message, so the server falls back too.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

use alloc::vec;
use alloc::vec::Vec;

use super::clc::accept_confirm::{hostname_field, OS_TYPE_LINUX};
use super::clc::header::{SMC_RELEASE_1, SMC_V1, SMC_V2};
use super::clc::proposal::{select_v2_devices, SMC_FEATURE_MASK};
use super::clc::{
    compress_dmbe_size, read_message_len, uncompress_dmbe_size, AcceptConfirm, AcceptConfirmV2,
    ClcError, ClcMessage, Decline, DeclineReason, Eid, FceV2x, FirstContactExt, IpPrefix, Proposal,
    ProposalV2, SmcType, SmcdDevice, SmcdV2Ext, HEADER_LEN, SEID_NON_S390,
};
use super::conn::{Conn, PeerInfo, RING_OFFSET};
use super::device::{is_emulated_chid, SmcdGid};
use super::stack::{LinkGroup, Role, SmcStack};
use crate::ism::{Dmb, ErrorKind};

/// VLAN id SMC-Dv2 device matching queries with (`ISM_RESERVED_VLANID`).
const V2_VLAN: u16 = 0x1FFF;

/// The result of a handshake.
pub enum Outcome {
    /// SMC-D is up.
    Smc(Established),
    /// Plain TCP, for this reason.
    Fallback(DeclineReason),
}

/// An established SMC-D connection.
pub struct Established {
    /// The data path.
    pub conn: Arc<Conn>,
    /// Device index in the stack.
    pub device: usize,
    /// The link group.
    pub lgr: Arc<LinkGroup>,
    /// Whether this connection opened its link group.
    pub first_contact: bool,
    /// SMC-D version used (1 or 2).
    pub version: u8,
}

fn proto(e: ClcError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The CLC error inside an `InvalidData` error from [`read_clc`], if any.
pub fn clc_error(e: &io::Error) -> Option<ClcError> {
    e.get_ref()?.downcast_ref::<ClcError>().copied()
}

/// Reads one CLC message: the 8-byte header, then the rest of its length.
///
/// # Errors
/// I/O errors (a timeout is `WouldBlock`/`TimedOut`), `InvalidData` for a malformed message.
pub fn read_clc(tcp: &mut TcpStream) -> io::Result<ClcMessage> {
    let mut hdr = [0u8; HEADER_LEN];
    tcp.read_exact(&mut hdr)?;
    let len = read_message_len(&hdr).map_err(proto)?;
    let mut buf = vec![0u8; len];
    buf[..HEADER_LEN].copy_from_slice(&hdr);
    tcp.read_exact(&mut buf[HEADER_LEN..])?;
    ClcMessage::parse(&buf).map_err(proto)
}

fn write_clc(tcp: &mut TcpStream, msg: &ClcMessage) -> io::Result<()> {
    tcp.write_all(&msg.emit())
}

fn decline(tcp: &mut TcpStream, reason: DeclineReason, version: u8) -> io::Result<Outcome> {
    write_clc(tcp, &ClcMessage::Decline(Decline::linux(reason, version)))?;
    Ok(Outcome::Fallback(reason))
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

fn eid_of(stack: &SmcStack) -> (Vec<Eid>, bool) {
    let c = stack.config();
    (c.ueid.into_iter().collect(), c.seid)
}

fn v1_device_index(stack: &SmcStack) -> Option<usize> {
    if !stack.config().offer_v1 {
        return None;
    }
    (0..stack.devices().len()).find(|&i| !is_emulated_chid(stack.devices()[i].ops().get_chid()))
}

/// Registers our RMB, walking down from the configured size as Linux does: `NoMemory`
/// aborts, other errors try the next smaller size; the last error decides the reason.
fn create_rmb(stack: &SmcStack, device: usize, peer: SmcdGid) -> Result<(Dmb, u8), DeclineReason> {
    let dev = &stack.devices()[device];
    let mut c = compress_dmbe_size(stack.config().buffer_size);
    loop {
        let size = uncompress_dmbe_size(c);
        match dev.ops().register_dmb(size, peer, 0, dev.client_id()) {
            Ok(dmb) => return Ok((dmb, c)),
            Err(e) if e.kind() == ErrorKind::NoMemory => return Err(DeclineReason::MEM),
            Err(e) if c == 0 && e.kind() == ErrorKind::NoSpace => {
                return Err(DeclineReason::MAX_DMB)
            }
            Err(_) if c == 0 => return Err(DeclineReason::MEM),
            Err(_) => {}
        }
        c -= 1;
    }
}

/// Builds the connection after the peer's RMB is known: no-copy attach if configured and
/// offered, then the routing of our RMB's signals.
fn establish(
    stack: &Arc<SmcStack>,
    device: usize,
    lgr: Arc<LinkGroup>,
    first_contact: bool,
    rmb: Dmb,
    peer: PeerInfo,
    version: u8,
) -> Result<Established, DeclineReason> {
    let ops = stack.devices()[device].ops().clone();
    let attached = if stack.config().nocopy && ops.support_dmb_nocopy() {
        match ops.attach_dmb(peer.token) {
            Ok(d) if d.len >= RING_OFFSET + peer.ring_len => Some(d),
            Ok(d) => {
                let _ = ops.detach_dmb(d.token);
                return Err(DeclineReason::MEM);
            }
            // The peer's RMB is already gone (a client that wrote its data and closed
            // before the server got here) or cannot be attached: send by copy instead. A
            // server declining after the client's CONFIRM would go unheard, and the data the
            // client already wrote into our RMB would be lost without an error.
            Err(_) => None,
        }
    } else {
        None
    };
    let cfg = stack.config();
    let conn = Arc::new(Conn::new(
        ops,
        rmb,
        peer,
        attached,
        peer.ring_len as usize,
        cfg.wait,
    ));
    conn.set_busy_poll(cfg.busy_poll);
    stack.attach_conn(&lgr, &conn);
    Ok(Established {
        conn,
        device,
        lgr,
        first_contact,
        version,
    })
}

fn fce(stack: &SmcStack, release: u8) -> FirstContactExt {
    FirstContactExt {
        v2_direct: false,
        os_type: OS_TYPE_LINUX,
        release,
        hostname: hostname_field(&stack.config().hostname),
        v2x: (release >= SMC_RELEASE_1).then_some(FceV2x {
            max_conns: 0,
            max_links: 0,
            feature_mask: SMC_FEATURE_MASK,
            vendor_exp_options: 0,
        }),
    }
}

fn peer_ring(dmbe_size: u8) -> u32 {
    (uncompress_dmbe_size(dmbe_size) as u32).saturating_sub(RING_OFFSET)
}

/// The client side: proposes, handles the answer, confirms.
///
/// # Errors
/// I/O errors of the TCP connection (including the CLC timeout) and malformed answers;
/// every SMC-level refusal is an `Ok(Outcome::Fallback)`.
pub fn client(stack: &Arc<SmcStack>, tcp: &mut TcpStream) -> io::Result<Outcome> {
    tcp.set_read_timeout(Some(stack.config().clc_timeout))?;
    let v1 = v1_device_index(stack);
    let (eids, seid) = eid_of(stack);
    let v2_idx: Vec<usize> = (0..stack.devices().len())
        .filter(|&i| Some(i) != v1 && stack.devices()[i].ops().supports_v2())
        .collect();
    let mut seen_chids = Vec::new();
    let candidates: Vec<(usize, SmcdDevice)> = v2_idx
        .iter()
        .map(|&i| (i, local_device(stack, i)))
        .filter(|(_, d)| {
            let dup = seen_chids.contains(&d.chid);
            seen_chids.push(d.chid);
            !dup
        })
        .collect();
    let offered = select_v2_devices(candidates.iter().map(|c| c.1));
    let offered_idx: Vec<usize> = offered
        .iter()
        .filter_map(|d| candidates.iter().find(|c| c.1 == *d).map(|c| c.0))
        .collect();
    // The V1 device is a V2 candidate too: the server tries `smcd.ism` first (`net/smc/af_smc.c`
    // `smc_find_ism_v2_device_serv`).
    let v1_v2 = v1.filter(|&i| stack.devices()[i].ops().supports_v2());
    let mut v2_choices: Vec<(usize, SmcdDevice)> = v1_v2
        .map(|i| (i, local_device(stack, i)))
        .into_iter()
        .collect();
    v2_choices.extend(offered_idx.iter().copied().zip(offered.iter().copied()));
    let offer_v2 = !v2_choices.is_empty() && (!eids.is_empty() || seid);
    if v1.is_none() && !offer_v2 {
        return decline(tcp, DeclineReason::NOSMCDDEV, SMC_V2);
    }
    let v1dev = v1.map(|i| local_device(stack, i));
    let local_ip = tcp.local_addr()?.ip();
    let prefix = match (v1dev, local_ip) {
        (Some(_), IpAddr::V4(a)) => Some(IpPrefix {
            outgoing_subnet: u32::from(a) & 0xFFFF_FF00,
            prefix_len: 24,
            ipv6: Vec::new(),
        }),
        (Some(_), IpAddr::V6(_)) => Some(IpPrefix {
            outgoing_subnet: 0,
            prefix_len: 0,
            ipv6: Vec::new(),
        }),
        _ => None,
    };
    let proposal = Proposal {
        version: SMC_V2,
        typev1: if v1dev.is_some() {
            SmcType::D
        } else {
            SmcType::N
        },
        typev2: if offer_v2 { SmcType::D } else { SmcType::N },
        smcr: Default::default(),
        ism_gid: v1dev.map_or(0, |d| d.gid),
        ism_chid: v1dev.map_or(0, |d| d.chid),
        prefix,
        v2: offer_v2.then(|| ProposalV2 {
            seid,
            eids: eids.clone(),
            smcd: Some(SmcdV2Ext {
                system_eid: SEID_NON_S390,
                devices: offered.clone(),
            }),
            ..ProposalV2::default()
        }),
    };
    write_clc(tcp, &ClcMessage::Proposal(proposal))?;
    let accept = match read_clc(tcp)? {
        ClcMessage::Decline(d) => return Ok(Outcome::Fallback(d.peer_diagnosis)),
        ClcMessage::Accept(a) => a,
        _ => return decline(tcp, DeclineReason::SYNCERR, SMC_V2),
    };
    let version = if accept.v2.is_some() { SMC_V2 } else { SMC_V1 };
    let device = match (&accept.v2, v1) {
        (Some(v2), _) => match v2_choices.iter().find(|(_, d)| d.chid == v2.chid) {
            Some((i, _)) => *i,
            None => return decline(tcp, DeclineReason::MODEUNSUPP, version),
        },
        (None, Some(i)) => i,
        (None, None) => return decline(tcp, DeclineReason::MODEUNSUPP, version),
    };
    let chid = stack.devices()[device].ops().get_chid();
    let peer_gid = SmcdGid {
        gid: accept.gid,
        gid_ext: match &accept.v2 {
            Some(v2) if is_emulated_chid(chid) => v2.gid_ext,
            _ => 0,
        },
    };
    let (mut lgr, mut first_contact) = stack.link_group(device, peer_gid, Role::Client);
    // The server decides about first contact (Linux's `smc_conn_create`): if it opened a
    // new link group, its old one with us is gone, so is ours (dropped if idle) and we open
    // a new one too; if it reuses one and we have none, we are out of sync.
    if accept.first_contact && !first_contact {
        stack.forget_link_group(&lgr);
        lgr = stack.new_link_group(device, peer_gid, Role::Client);
        first_contact = true;
    }
    // A link group this handshake opened is dropped again if the handshake fails, so that
    // both sides agree on "first contact" next time.
    let forget = |stack: &SmcStack| {
        if first_contact {
            stack.forget_link_group(&lgr);
        }
    };
    if !accept.first_contact && first_contact {
        forget(stack);
        return decline(tcp, DeclineReason::SYNCERR, version);
    }
    let (rmb, c) = match create_rmb(stack, device, peer_gid) {
        Ok(x) => x,
        Err(reason) => {
            forget(stack);
            return decline(tcp, reason, version);
        }
    };
    let peer = PeerInfo {
        gid: peer_gid,
        token: ism_hal::DmbToken(accept.token),
        dmbe_idx: accept.dmbe_idx,
        ring_len: peer_ring(accept.dmbe_size),
    };
    let token = rmb.token;
    let est = match establish(
        stack,
        device,
        lgr.clone(),
        first_contact,
        rmb,
        peer,
        version,
    ) {
        Ok(e) => e,
        Err(reason) => {
            let _ = stack.devices()[device].ops().unregister_dmb(&rmb);
            forget(stack);
            return decline(tcp, reason, version);
        }
    };
    let own = stack.devices()[device].ops().get_local_gid();
    let confirm = AcceptConfirm {
        first_contact,
        gid: own.gid,
        token: token.0,
        dmbe_idx: 0,
        dmbe_size: c,
        link_id: lgr.id,
        v2: accept.v2.as_ref().map(|a| AcceptConfirmV2 {
            chid,
            eid: a.eid,
            gid_ext: own.gid_ext,
            fce: a
                .fce
                .as_ref()
                .map(|f| fce(stack, f.release.min(SMC_RELEASE_1))),
        }),
    };
    if let Err(e) = write_clc(tcp, &ClcMessage::Confirm(confirm)) {
        stack.release_conn(device, &est.conn);
        drop(est);
        forget(stack);
        return Err(e);
    }
    tcp.set_read_timeout(None)?;
    Ok(Outcome::Smc(est))
}

/// Server-side device choice; returns (device, peer GID, version, EID) or the reason.
fn choose_device(
    stack: &SmcStack,
    p: &Proposal,
) -> Result<(usize, SmcdGid, u8, Eid), DeclineReason> {
    let mut reason = DeclineReason::NOSMCDDEV;
    if let (SmcType::D | SmcType::B, Some(v2)) = (p.typev2, &p.v2) {
        let (eids, seid) = eid_of(stack);
        let mut cands: Vec<SmcdDevice> = p.v1_device().into_iter().collect();
        cands.extend_from_slice(p.v2_devices());
        let found = cands.iter().find_map(|cand| {
            let rgid = SmcdGid {
                gid: cand.gid,
                gid_ext: cand.gid_ext,
            };
            (0..stack.devices().len())
                .find(|&i| {
                    let ops = stack.devices()[i].ops();
                    ops.supports_v2()
                        && ops.get_chid() == cand.chid
                        && ops.query_remote_gid(rgid, true, V2_VLAN).is_ok()
                })
                .map(|i| (i, rgid))
        });
        match found {
            None if v2.smcd.is_none() => reason = DeclineReason::NOV2DEXT,
            None => reason = DeclineReason::NOSMCD2DEV,
            Some((i, rgid)) => {
                let seid_ok = seid
                    && v2.seid
                    && v2
                        .smcd
                        .as_ref()
                        .is_some_and(|d| d.system_eid == SEID_NON_S390);
                let common = v2.eids.iter().find(|e| eids.contains(e));
                match (common, seid_ok) {
                    (Some(e), _) => return Ok((i, rgid, SMC_V2, *e)),
                    (None, true) => return Ok((i, rgid, SMC_V2, SEID_NON_S390)),
                    (None, false) => reason = DeclineReason::NOUEID,
                }
            }
        }
    }
    if let Some(dev) = p.v1_device() {
        let rgid = SmcdGid {
            gid: dev.gid,
            gid_ext: 0,
        };
        let found = (0..stack.devices().len()).find(|&i| {
            let ops = stack.devices()[i].ops();
            !is_emulated_chid(ops.get_chid()) && ops.query_remote_gid(rgid, false, 0).is_ok()
        });
        if let Some(i) = found {
            return Ok((i, rgid, SMC_V1, [0; 32]));
        }
    }
    Err(reason)
}

/// The server side: reads the proposal, chooses a device, accepts, waits for the confirm.
///
/// # Errors
/// I/O errors of the TCP connection (including the CLC timeout); every SMC-level refusal
/// is an `Ok(Outcome::Fallback)`.
pub fn server(stack: &Arc<SmcStack>, tcp: &mut TcpStream) -> io::Result<Outcome> {
    tcp.set_read_timeout(Some(stack.config().clc_timeout))?;
    let proposal = match read_clc(tcp) {
        Ok(ClcMessage::Proposal(p)) => p,
        Ok(ClcMessage::Decline(d)) => return Ok(Outcome::Fallback(d.peer_diagnosis)),
        Ok(_) => return decline(tcp, DeclineReason::SYNCERR, SMC_V2),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let reason = match clc_error(&e) {
                Some(ClcError::BadVersion(_)) => DeclineReason::VERSMISMAT,
                _ => DeclineReason::SYNCERR,
            };
            return decline(tcp, reason, SMC_V2);
        }
        Err(e) => return Err(e),
    };
    let (device, peer_gid, version, eid) = match choose_device(stack, &proposal) {
        Ok(x) => x,
        Err(reason) => return decline(tcp, reason, proposal.version),
    };
    let (lgr, first_contact) = stack.link_group(device, peer_gid, Role::Server);
    // A link group this handshake opened is dropped again if the handshake fails, so that
    // both sides agree on "first contact" next time.
    let forget = |stack: &SmcStack| {
        if first_contact {
            stack.forget_link_group(&lgr);
        }
    };
    let (rmb, c) = match create_rmb(stack, device, peer_gid) {
        Ok(x) => x,
        Err(reason) => {
            forget(stack);
            return decline(tcp, reason, version);
        }
    };
    let dev = &stack.devices()[device];
    let own = dev.ops().get_local_gid();
    let release = proposal
        .v2
        .as_ref()
        .map_or(0, |v| v.release.min(SMC_RELEASE_1));
    let accept = AcceptConfirm {
        first_contact,
        gid: own.gid,
        token: rmb.token.0,
        dmbe_idx: 0,
        dmbe_size: c,
        link_id: lgr.id,
        v2: (version == SMC_V2).then(|| AcceptConfirmV2 {
            chid: dev.ops().get_chid(),
            eid,
            gid_ext: own.gid_ext,
            fce: first_contact.then(|| fce(stack, release)),
        }),
    };
    let undo = |stack: &SmcStack| {
        let _ = stack.devices()[device].ops().unregister_dmb(&rmb);
        forget(stack);
    };
    if let Err(e) = write_clc(tcp, &ClcMessage::Accept(accept)) {
        undo(stack);
        return Err(e);
    }
    let confirm = match read_clc(tcp) {
        Ok(ClcMessage::Confirm(cf)) => cf,
        Ok(ClcMessage::Decline(d)) => {
            undo(stack);
            return Ok(Outcome::Fallback(d.peer_diagnosis));
        }
        Ok(_) => {
            undo(stack);
            return decline(tcp, DeclineReason::SYNCERR, version);
        }
        Err(e) => {
            undo(stack);
            return Err(e);
        }
    };
    if confirm.gid != peer_gid.gid
        || confirm.v2.is_some() != (version == SMC_V2)
        || confirm.first_contact != first_contact
    {
        undo(stack);
        return decline(tcp, DeclineReason::SYNCERR, version);
    }
    if let Some(f) = confirm.v2.as_ref().and_then(|v| v.fce.as_ref()) {
        if first_contact && f.release != release {
            undo(stack);
            return decline(tcp, DeclineReason::RELEASEERR, version);
        }
    }
    let peer = PeerInfo {
        gid: peer_gid,
        token: ism_hal::DmbToken(confirm.token),
        dmbe_idx: confirm.dmbe_idx,
        ring_len: peer_ring(confirm.dmbe_size),
    };
    match establish(
        stack,
        device,
        lgr.clone(),
        first_contact,
        rmb,
        peer,
        version,
    ) {
        Ok(est) => {
            tcp.set_read_timeout(None)?;
            Ok(Outcome::Smc(est))
        }
        Err(reason) => {
            undo(stack);
            decline(tcp, reason, version)
        }
    }
}
