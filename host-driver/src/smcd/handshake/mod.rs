//! The CLC handshake over a TCP connection: the client proposes its SMC-D devices, the
//! server picks one and accepts (or declines), the client confirms. Afterwards data flows
//! through DMBs; a decline on either side means plain TCP on the same connection.
//!
//! Split along its seams:
//! * [`core`]: the handshake without sockets ([`core::ClientCore`], [`core::ServerCore`]):
//!   CLC messages in, [`core::Step`]s out. Device choice, reason codes and the
//!   decline-vs-abort rule follow Linux (`net/smc/af_smc.c`; see `docs/linux-interop.md`).
//! * `guard`: what a half-open handshake holds (link group, RMB, connection), given back
//!   on drop unless the handshake completes.
//! * [`netif`]: the SMC-Dv1 IP prefixes from the connection's interface.
//! * this module: the socket side, [`client`] and [`server`].
//!
//! One deviation, documented: Linux signals SMC capability with a TCP option in the SYN,
//! which user space cannot set. Here both ends run this stack; a client without any usable
//! device sends a DECLINE as its first CLC message (as Linux's client does when it finds no
//! device: `smc_connect_decline_fallback`), so the server falls back too.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use alloc::vec;

use super::clc::{
    read_message_len, ClcError, ClcMessage, DeclineReason, Eyecatcher, HEADER_LEN, MAX_MESSAGE_LEN,
    TRAILER_LEN,
};
use super::conn::Conn;
use super::stack::{LinkGroup, Role, SmcStack};

pub mod core;
mod guard;
pub mod netif;

pub use self::core::{Abort, ClientCore, ServerCore, Step};
pub use guard::Pending;
pub use netif::LocalNet;

/// The result of a handshake.
#[derive(Debug)]
pub enum Outcome {
    /// SMC-D is up.
    Smc(Established),
    /// Plain TCP, for this reason.
    Fallback(DeclineReason),
}

/// An established SMC-D connection.
#[derive(Debug)]
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

/// The abort reason inside an error from [`client`] or [`server`], if the handshake was
/// aborted (no DECLINE, as Linux on `-EPROTO`).
pub fn abort_reason(e: &io::Error) -> Option<Abort> {
    e.get_ref()?.downcast_ref::<Abort>().copied()
}

/// Reads one CLC message: the 8-byte header, then the rest of its length.
///
/// A message longer than [`MAX_MESSAGE_LEN`] is read up to that bound and the rest is read
/// and discarded, so the stream stays in step; what was kept is parsed without its trailer
/// (Linux's `net/smc/smc_clc.c` `smc_clc_wait_msg` does the same at its buffer size).
///
/// # Errors
/// I/O errors (a timeout is `WouldBlock`/`TimedOut`), `InvalidData` for a malformed message.
pub fn read_clc(tcp: &mut TcpStream) -> io::Result<ClcMessage> {
    let mut hdr = [0u8; HEADER_LEN];
    tcp.read_exact(&mut hdr)?;
    let declared = usize::from(u16::from_be_bytes([hdr[5], hdr[6]]));
    let excess = declared.saturating_sub(MAX_MESSAGE_LEN);
    if excess > 0 {
        hdr[5..7].copy_from_slice(&(MAX_MESSAGE_LEN as u16).to_be_bytes());
    }
    let len = read_message_len(&hdr).map_err(proto)?;
    let mut buf = vec![0u8; len];
    buf[..HEADER_LEN].copy_from_slice(&hdr);
    tcp.read_exact(&mut buf[HEADER_LEN..])?;
    if excess > 0 {
        let drained = io::copy(&mut Read::by_ref(tcp).take(excess as u64), &mut io::sink())?;
        if drained < excess as u64 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // No trailer check on a message cut at the buffer: put one where the cut is.
        buf[len - TRAILER_LEN..].copy_from_slice(&Eyecatcher::Smcr.bytes());
    }
    ClcMessage::parse(&buf).map_err(proto)
}

fn write_clc(tcp: &mut TcpStream, msg: &ClcMessage) -> io::Result<()> {
    tcp.write_all(&msg.emit())
}

/// The peer's next message for a core: parse errors go to the core (which aborts), other
/// I/O errors (timeout, reset, end of stream) end the handshake here.
fn next(tcp: &mut TcpStream) -> io::Result<Result<ClcMessage, ClcError>> {
    match read_clc(tcp) {
        Ok(m) => Ok(Ok(m)),
        Err(e) => match clc_error(&e) {
            Some(c) => Ok(Err(c)),
            None => Err(e),
        },
    }
}

/// Runs the socket side of a core until it finishes.
fn drive(
    tcp: &mut TcpStream,
    mut step: Step,
    mut on_message: impl FnMut(Result<ClcMessage, ClcError>) -> Step,
) -> io::Result<Outcome> {
    loop {
        step = match step {
            Step::Send(m) => {
                write_clc(tcp, &m)?;
                on_message(next(tcp)?)
            }
            Step::Fallback { decline, reason } => {
                if let Some(d) = decline {
                    write_clc(tcp, &ClcMessage::Decline(d))?;
                }
                return Ok(Outcome::Fallback(reason));
            }
            Step::Confirm(m, pending) => {
                // A failed write drops `pending`, which undoes the connection.
                write_clc(tcp, &m)?;
                tcp.set_read_timeout(None)?;
                return Ok(Outcome::Smc(pending.commit()));
            }
            Step::Done(est) => {
                tcp.set_read_timeout(None)?;
                return Ok(Outcome::Smc(est));
            }
            Step::Abort(a) => {
                log::debug!("smc: {a}");
                let _ = tcp.shutdown(std::net::Shutdown::Both);
                return Err(io::Error::new(io::ErrorKind::InvalidData, a));
            }
        };
    }
}

/// The client side: proposes, handles the answer, confirms.
///
/// # Errors
/// I/O errors of the TCP connection (including the CLC timeout), and an `InvalidData`
/// error carrying an [`Abort`] where Linux aborts the connection (a malformed or
/// unexpected answer, an accepted CHID never offered); every SMC-level refusal is an
/// `Ok(Outcome::Fallback)`.
/// The outcome is counted in the stack's statistics ([`SmcStack::stats`]).
pub fn client(stack: &Arc<SmcStack>, tcp: &mut TcpStream) -> io::Result<Outcome> {
    let r = client_handshake(stack, tcp);
    stack.count_handshake(Role::Client, &r);
    r
}

fn client_handshake(stack: &Arc<SmcStack>, tcp: &mut TcpStream) -> io::Result<Outcome> {
    tcp.set_read_timeout(Some(stack.config().clc_timeout))?;
    let local = tcp.local_addr()?.ip();
    let (mut core, step) = ClientCore::start(stack, local, &LocalNet::of_cached(local));
    drive(tcp, step, |m| core.on_message(m))
}

/// The server side: reads the proposal, chooses a device, accepts, waits for the confirm.
///
/// # Errors
/// I/O errors of the TCP connection (including the CLC timeout), and an `InvalidData`
/// error carrying an [`Abort`] where Linux aborts the connection (a malformed or
/// unexpected message); every SMC-level refusal is an `Ok(Outcome::Fallback)`.
/// The outcome is counted in the stack's statistics ([`SmcStack::stats`]).
pub fn server(stack: &Arc<SmcStack>, tcp: &mut TcpStream) -> io::Result<Outcome> {
    server_gated(stack, tcp, || None)
}

/// [`server`] with a gate between the client's proposal and the server's answer: once the
/// proposal is read, `gate` is asked whether the connection may go on; `Some(reason)`
/// declines it with that reason (a DECLINE, then TCP) before a device is chosen or a
/// buffer taken, as Linux's server declines a proposal it cannot serve
/// (`net/smc/af_smc.c` `smc_listen_decline`). For a program's own reasons to keep a
/// connection on TCP that only show after `accept` (`ism-run`: the program forks while
/// the set-up runs).
///
/// # Errors
/// As [`server`].
pub fn server_gated(
    stack: &Arc<SmcStack>,
    tcp: &mut TcpStream,
    gate: impl FnOnce() -> Option<DeclineReason>,
) -> io::Result<Outcome> {
    let r = server_handshake(stack, tcp, gate);
    stack.count_handshake(Role::Server, &r);
    r
}

fn server_handshake(
    stack: &Arc<SmcStack>,
    tcp: &mut TcpStream,
    gate: impl FnOnce() -> Option<DeclineReason>,
) -> io::Result<Outcome> {
    tcp.set_read_timeout(Some(stack.config().clc_timeout))?;
    let local = tcp.local_addr()?.ip();
    let mut core = ServerCore::new(stack, LocalNet::of_cached(local));
    let proposal = next(tcp)?;
    if let Some(reason) = gate() {
        core.refuse(reason);
    }
    let first = core.on_message(proposal);
    drive(tcp, first, |m| core.on_message(m))
}

#[cfg(test)]
mod tests;
