//! One SMC-D connection's data path: the ring in our RMB (a DMB the peer writes), the ring
//! in the peer's RMB (we write), and the CDC messages that carry the cursors.
//!
//! Layout (`net/smc/smc_core.c` `smc_conn_create` sets `rx_off`; `net/smc/smc_cdc.c`
//! `smcd_cdc_msg_send`): the first 32 bytes of each RMB hold the CDC message the *peer*
//! wrote; the ring follows at offset 32. Sending is: data into the peer's ring at the
//! producer position (store-blocks without signal), then our CDC at offset 0 with the
//! signal; the peer's interrupt path re-reads its CDC area and wakes its reader.
//!
//! * Copy mode: user data is staged in a send buffer and moved into the peer's ring
//!   (three copies end to end, as Linux's SMC-D: user → send buffer → peer RMB → user).
//! * No-copy mode (loopback board): the peer's DMB is attached, so the "send buffer" *is*
//!   the peer's ring: user data is written there directly and only the CDC is moved (two
//!   copies). Send space is freed only when the peer's consumer cursor advances
//!   (`net/smc/smc_cdc.c` `smc_cdc_msg_recv_action`).
//!
//! Whatever the peer writes into its CDC, space and data counts are derived with
//! [`Cursor::diff`], which clamps to `0 ..= ring`, and all positions used for memory access
//! are our own: a forged cursor can make us send garbage or stall, never read or write
//! outside the two rings, and never push send space past the buffer.
//!
//! Reader, writer and interrupt path share the connection without a common lock: each
//! cursor has one writer (the reader owns `cons`, the writer owns `prod`), the peer's view
//! is re-read from memory, and CDC sends are serialised so a later CDC never carries older
//! cursors than an earlier one.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ism_hal::{DevAddr, DmbToken};

use super::cdc::{
    CdcMessage, ConnStateFlags, Cursor, ProdFlags, CDC_MSG_LEN, CONS_OFFSET, PROD_OFFSET,
};
use super::device::{SmcdGid, SmcdOps};
use super::stats::{add_owned, TrafficCounters};
use super::wait::{Notify, WaitMode};
use crate::ism::{Dmb, IsmError};
use ism_abi::MoveError;

/// Offset of the ring in an RMB (the CDC area comes first).
pub const RING_OFFSET: u32 = CDC_MSG_LEN as u32;

/// Longest a waiting reader or writer goes without re-reading the peer's cursors: a lost
/// interrupt delays data by at most this much instead of stalling the connection.
pub const RECHECK: Duration = Duration::from_millis(20);

/// How long a polling waiter that watches the peer's CDC (in a read or write) leaves a
/// signal pending on its device before it runs the interrupt handler: while messages come
/// sooner than this, the signals their CDCs already announced are not taken one by one.
pub const SIGNAL_DEFER: Duration = Duration::from_micros(5);

/// Longest a spinning waiter that saw the peer's CDC change waits for the device's
/// interrupt for it before it leaves (in a read or write): the device raises right after it
/// wrote the CDC and the SBA bits, and a CDC moved without a signal never brings one.
pub const RAISE_WAIT: Duration = Duration::from_micros(2);

/// A writer that waits for room in the peer's ring this many [`RECHECK`]s in a row without
/// a signal sends its CDC again (signalled, the cursors unchanged): if the peer's RMB is
/// gone (its side ended without a CDC that reached us), the device refuses the move and
/// the writer gets an error instead of waiting forever. Linux needs no such probe (its
/// close and abort CDCs are not lost); this model's devices can refuse any move.
pub const PROBE_EVERY: u32 = 10;

/// Half of Linux's `SOCK_MIN_SNDBUF` on 64-bit, the cap of the consumer-update limit.
pub const UPDATE_LIMIT_CAP: u32 = 2304;

/// Bytes from `behind` to `ahead` in a ring of `size`, if `ahead` is where a peer that
/// follows the protocol can be: inside the ring and at most one ring ahead of `behind`
/// (same wrap and not before it, or the next wrap and not past it); `None` otherwise.
///
/// [`Cursor::diff`] alone clamps each answer to a ring, but a stale forged cursor (count
/// past the ring, a far-away wrap) would then grant that ring of room or data on every
/// call, without end. Refusing it instead makes a forged cursor stall the connection.
fn checked_diff(size: u32, behind: Cursor, ahead: Cursor) -> Option<u32> {
    let sane = behind.count < size
        && ahead.count < size
        && ((ahead.wrap == behind.wrap && ahead.count >= behind.count)
            || (ahead.wrap == behind.wrap.wrapping_add(1) && ahead.count <= behind.count));
    sane.then(|| Cursor::diff(size, behind, ahead))
}

/// What the CLC handshake learned about the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Peer GID.
    pub gid: SmcdGid,
    /// Token of the peer's RMB.
    pub token: DmbToken,
    /// DMBE index to signal (Linux peers: 0).
    pub dmbe_idx: u8,
    /// Length of the peer's ring (its DMB minus the CDC area).
    pub ring_len: u32,
}

/// Counters of one connection.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Store-blocks of payload (copy mode).
    pub data_moves: AtomicU64,
    /// CDC messages sent (each one move with signal).
    pub cdc_sent: AtomicU64,
    /// Signals received through the interrupt path.
    pub signals: AtomicU64,
    /// Times a reader or writer had to wait.
    pub waits: AtomicU64,
    /// Waits that ended without a signal (cursors re-read after [`RECHECK`]).
    pub rechecks: AtomicU64,
    /// Times a writer found the peer's RMB full (Linux counts these as
    /// `buf_full_peer_cnt` of `struct smc_stats_rmbcnt`, `net/smc/smc_stats.h`).
    pub peer_buffer_full: AtomicU64,
    /// Times a reader found our own RMB full, so the peer was blocked on us (Linux:
    /// `buf_full_cnt` of the receive side's `struct smc_stats_rmbcnt`).
    pub rmb_full: AtomicU64,
}

impl ConnCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> ConnStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnStats {
            bytes_sent: l(&self.bytes_sent),
            bytes_received: l(&self.bytes_received),
            data_moves: l(&self.data_moves),
            cdc_sent: l(&self.cdc_sent),
            signals: l(&self.signals),
            waits: l(&self.waits),
            rechecks: l(&self.rechecks),
            peer_buffer_full: l(&self.peer_buffer_full),
            rmb_full: l(&self.rmb_full),
        }
    }
}

/// A snapshot of [`ConnCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Payload store-blocks.
    pub data_moves: u64,
    /// CDC messages sent.
    pub cdc_sent: u64,
    /// Signals received.
    pub signals: u64,
    /// Waits.
    pub waits: u64,
    /// Waits that ended without a signal.
    pub rechecks: u64,
    /// Times a writer found the peer's RMB full.
    pub peer_buffer_full: u64,
    /// Times a reader found our RMB full.
    pub rmb_full: u64,
}

impl std::ops::AddAssign for ConnStats {
    fn add_assign(&mut self, o: Self) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.data_moves += o.data_moves;
        self.cdc_sent += o.cdc_sent;
        self.signals += o.signals;
        self.waits += o.waits;
        self.rechecks += o.rechecks;
        self.peer_buffer_full += o.peer_buffer_full;
        self.rmb_full += o.rmb_full;
    }
}

const ST_WRITE_SHUT: u8 = 1;
const ST_READ_SHUT: u8 = 2;
const ST_CLOSED: u8 = 4;
const ST_ABORTED: u8 = 8;
const ST_BROKEN: u8 = 16;
/// A move of ours was refused: the peer has not been told (see [`Conn::fail`]).
const ST_FAILED: u8 = 32;
/// The abort after [`ST_FAILED`] was tried once (at close or abort).
const ST_FAILED_TOLD: u8 = 64;
/// The peer's function went away after it had read everything we sent, and the
/// connection ends as a TCP peer's exit ends it (see [`Conn::set_peer_exit_like_tcp`]):
/// reads return what came, then end of stream; writes fail with `ConnectionReset` (as after its close).
const ST_PEER_EXITED: u8 = 128;

/// One connection's data path.
pub struct Conn {
    ops: Arc<dyn SmcdOps>,
    rmb: Dmb,
    ring: u32,
    peer: PeerInfo,
    attached: Option<Dmb>,
    /// Serialises writers (one write's bytes stay together in the stream).
    tx_lock: Mutex<()>,
    /// Bytes we put into the peer's ring in all (written under `tx_lock` only).
    prod: AtomicU64,
    /// The producer count (`prod`) the last CDC that reached the peer carried: what the
    /// peer can see of our data. The peer bell tells of no more than this (`prod` runs
    /// ahead of it while a writer has put bytes into the peer's ring whose CDC is still to
    /// go: a ring paid on another thread then would announce bytes the peer cannot read
    /// yet, and its reader, told "readable", would find nothing). Written under
    /// `cdc_lock` only.
    prod_told: AtomicU64,
    /// Bytes we took from our ring in all (written under `rx_lock` only).
    cons: AtomicU64,
    confirmed: AtomicU64,
    rx_lock: Mutex<()>,
    cdc_lock: Mutex<()>,
    local_prod_flags: AtomicU8,
    local_conn_state: AtomicU8,
    status: AtomicU8,
    busy_poll: AtomicBool,
    blocking: WaitMode,
    notify: Notify,
    counters: ConnCounters,
    /// The stack's totals, also counted into once the connection is attached to a stack.
    totals: std::sync::OnceLock<Arc<TrafficCounters>>,
    /// Time limits of one read and one write in milliseconds (0: none).
    read_timeout_ms: AtomicU64,
    write_timeout_ms: AtomicU64,
    /// A wait fails at once with `WouldBlock` (see `Conn::set_nonblocking`).
    nonblocking: AtomicBool,
    /// Runs after every wake-up of this connection's waiters (see [`Conn::set_watcher`]).
    watcher: std::sync::OnceLock<Watcher>,
    /// Tells the peer of new data without the device's signal (see [`Conn::set_peer_bell`]).
    peer_bell: std::sync::OnceLock<PeerBell>,
    /// Tells the peer's waiting writer of room without the device's signal (see
    /// [`Conn::set_room_bell`]).
    room_bell: std::sync::OnceLock<RoomBell>,
    /// Serialises the peer bell's calls; holds the total the last successful one told of.
    /// A call tells of more than that or is not made: the peer's reader is never told of
    /// the same bytes twice (the second telling could come after it read them).
    bell_lock: Mutex<u64>,
    /// A peer whose function goes away ends the connection as a TCP peer's exit would
    /// ([`Conn::set_peer_exit_like_tcp`]).
    exit_like_tcp: AtomicBool,
    /// The peer bell could not ring for data sent: it rings again at the next chance
    /// (see [`Conn::ring_peer_bell`]).
    bell_owed: AtomicBool,
    /// Whether the device tells whether its interrupt is raised ([`SmcdOps::irq_raised`]
    /// answers `Some`), asked once here: a spinning waiter watches the CDC only then.
    tells_raise: bool,
    /// Writes into the attached peer DMB under way (see [`Conn::detach_peer_dmb`]).
    attached_writes: std::sync::atomic::AtomicU32,
    /// The attached peer DMB was detached: no write goes into it any more.
    detached: AtomicBool,
}

/// A function the interrupt path calls when something may have changed for a connection
/// (see [`Conn::set_watcher`]).
pub type Watcher = alloc::boxed::Box<dyn Fn() + Send + Sync>;

/// A function that tells the peer of new data by a way of its own, given how many bytes we
/// have sent in all; `false` if it could not (see [`Conn::set_peer_bell`]).
pub type PeerBell = alloc::boxed::Box<dyn Fn(u64) -> bool + Send + Sync>;

/// A function that tells the peer's waiting writer that its ring has room again, by a way
/// of its own (see [`Conn::set_room_bell`]).
pub type RoomBell = alloc::boxed::Box<dyn Fn() + Send + Sync>;

/// The room in a ring of `ring` bytes below which a socket over it should not poll
/// writable (see [`Conn::write_lowat`]).
fn lowat_of(ring: u32) -> usize {
    (ring as usize / 2).clamp(1, 64 << 10)
}

/// The CDC message the peer last wrote into the RMB at `rmb` (its CDC area, read as the
/// two atomic words it writes); all zero if the memory cannot be read.
pub fn peer_cdc_at(mem: &dyn ism_hal::DmaMemory, rmb: DevAddr) -> CdcMessage {
    let word = |off: usize| {
        mem.load_u64(DevAddr(rmb.0 + off as u64))
            .map(u64::from_ne_bytes)
    };
    let Ok(cons) = word(CONS_OFFSET) else {
        return CdcMessage::default();
    };
    let Ok(prod) = word(PROD_OFFSET) else {
        return CdcMessage::default();
    };
    CdcMessage::from_words(prod, cons)
}

fn cursor(total: u64, ring: u32) -> Cursor {
    Cursor::new((total / ring as u64) as u16, (total % ring as u64) as u32)
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "SMC-D connection aborted")
}

impl Conn {
    /// A connection over our registered RMB `rmb` to `peer`; with `attached` (the peer's DMB
    /// mapped through ATTACH_DMB) it writes into the peer's ring itself, otherwise the
    /// device moves the caller's bytes there (store-blocks straight from the caller's
    /// buffer: Linux's `smc_tx_sendmsg` stages them in a send buffer because its device
    /// reads that buffer by address; a store-block here carries the bytes, so a staging
    /// copy would only cost a copy).
    pub fn new(
        ops: Arc<dyn SmcdOps>,
        rmb: Dmb,
        peer: PeerInfo,
        attached: Option<Dmb>,
        wait: WaitMode,
    ) -> Self {
        let ring = rmb.len.saturating_sub(RING_OFFSET).max(1);
        let tells_raise = ops.irq_raised().is_some();
        Self {
            ops,
            rmb,
            ring,
            peer,
            attached,
            tx_lock: Mutex::new(()),
            prod: AtomicU64::new(0),
            prod_told: AtomicU64::new(0),
            cons: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            rx_lock: Mutex::new(()),
            cdc_lock: Mutex::new(()),
            local_prod_flags: AtomicU8::new(0),
            local_conn_state: AtomicU8::new(0),
            status: AtomicU8::new(0),
            busy_poll: AtomicBool::new(false),
            blocking: wait,
            notify: Notify::new(),
            counters: ConnCounters::default(),
            totals: std::sync::OnceLock::new(),
            read_timeout_ms: AtomicU64::new(0),
            write_timeout_ms: AtomicU64::new(0),
            nonblocking: AtomicBool::new(false),
            watcher: std::sync::OnceLock::new(),
            peer_bell: std::sync::OnceLock::new(),
            room_bell: std::sync::OnceLock::new(),
            bell_lock: Mutex::new(0),
            bell_owed: AtomicBool::new(false),
            exit_like_tcp: AtomicBool::new(false),
            tells_raise,
            attached_writes: std::sync::atomic::AtomicU32::new(0),
            detached: AtomicBool::new(false),
        }
    }

    /// How the connection ends when the peer's function goes away (the device's event
    /// for the peer's GID, or a move refused because its DMB is gone while the device no
    /// longer knows the peer's GID). Off (the default, and Linux's SMC-D): that is a
    /// crash of the peer's system, and the connection fails with `ConnectionReset`
    /// (`net/smc/smc_core.c` `smc_smcd_terminate`). On (`ism-run`, where a function is
    /// one process and a process that ends is not a crash): as the kernel closes a
    /// dead process's TCP sockets, if the peer had read everything we sent (as its last
    /// CDC tells), reads return what came and then end of stream, and writes fail as
    /// after its close (`ConnectionReset`); if it had not, `ConnectionReset`, as TCP's
    /// reset for data that a
    /// closed socket had not read (`net/ipv4/tcp.c` `__tcp_close`). A peer that read
    /// everything but did not tell us yet (its cursor updates are lazy) counts as one
    /// that had not.
    pub fn set_peer_exit_like_tcp(&self, on: bool) {
        self.exit_like_tcp.store(on, Ordering::Release);
    }

    /// The peer's function is gone (the device's event for its GID): as
    /// [`Conn::terminate`], or, with [`Conn::set_peer_exit_like_tcp`], as a TCP peer's
    /// exit.
    pub fn peer_function_gone(&self) {
        if self.exit_like_tcp.load(Ordering::Acquire) {
            self.end_as_peer_exit();
        } else {
            self.terminate();
        }
    }

    /// Whether the peer exited after reading everything we sent ([`ST_PEER_EXITED`]).
    fn peer_exited(&self) -> bool {
        self.status() & ST_PEER_EXITED != 0
    }

    /// The peer exited (with [`Conn::set_peer_exit_like_tcp`]): end of stream if it had
    /// read everything we sent and nothing broke before, a reset otherwise.
    fn end_as_peer_exit(&self) {
        if self.peer_exited() {
            return;
        }
        let peer = self.peer_cdc();
        let prod = cursor(self.prod.load(Ordering::Acquire), self.peer.ring_len);
        let read_all = checked_diff(self.peer.ring_len, peer.cons, prod) == Some(0);
        let clean = read_all
            && !peer.conn_state.contains(ConnStateFlags::PEER_CONN_ABORT)
            && self.status() & (ST_ABORTED | ST_BROKEN) == 0;
        self.status.fetch_or(
            if clean { ST_PEER_EXITED } else { ST_BROKEN },
            Ordering::AcqRel,
        );
        self.wake();
    }

    /// A move of ours was refused with `e`: with [`Conn::set_peer_exit_like_tcp`], a
    /// refusal for a DMB token the device no longer knows, while it no longer knows the
    /// peer's GID either, is the peer's exit (its function went away with its DMBs, and
    /// the device's event for it may not have come yet); every other refusal fails the
    /// connection ([`Conn::fail`]).
    fn refused(&self, e: &IsmError) {
        if self.peer_exited() {
            return;
        }
        // The query is one device command, on this error path only (the caller may hold
        // the CDC lock; the device answers it without this connection).
        if self.exit_like_tcp.load(Ordering::Acquire)
            && matches!(e, IsmError::Move(MoveError::InvalidToken))
            && self.ops.query_remote_gid(self.peer.gid, false, 0).is_err()
        {
            self.end_as_peer_exit();
        } else {
            self.fail();
        }
    }

    /// Installs `f`, called after every wake-up of this connection's readers and writers:
    /// a signal from the peer (data, a consumer cursor update, end of stream), a local
    /// shutdown, close or abort, a termination by the stack. It runs on the thread that
    /// caused the wake-up (usually the interrupt thread), must be quick, and must not call
    /// back into this connection's `read` or `write`. It is how code outside the stack
    /// learns of readiness without a thread per connection (`ism-run` rings the doorbell of
    /// a socket the application polls with it; as Linux's `sk_data_ready` callback is
    /// called from `smcd_cdc_rx_handler` in `net/smc/smc_cdc.c`). Only the first call has
    /// an effect; returns whether this one did.
    pub fn set_watcher(&self, f: Watcher) -> bool {
        self.watcher.set(f).is_ok()
    }

    /// Installs `f`, which tells the peer's reader of new data by a way of its own (`ism-run`:
    /// a record into the peer's doorbell socket, which wakes the peer's `epoll_wait` with no
    /// interrupt thread in between). From then on `f` is the **only** way the peer's reader
    /// hears of data: it runs after every data CDC is in place, with the total of bytes
    /// sent so far ([`Conn::sent_total`]; never less than a total it was given before).
    /// Where the device can move at once ([`SmcdOps::move_data_now`]) a CDC that only
    /// announces data or consumed room goes unsignalled; a CDC the peer's writer waits for
    /// (it said `WRITE_BLOCKED` or `CONS_CURS_UPD_REQ`) and every CDC of a shutdown, close
    /// or abort still go signalled, for the peer's writer and its end of stream, not for
    /// its reader's data (so that a reader is never told of the same bytes twice, once
    /// late). If `f` returns `false` (it could not tell the peer now), the connection owes
    /// the peer a ring: it asks for the peer's next consumer-cursor update
    /// (`CONS_CURS_UPD_REQ` in a signalled CDC) and rings on that update's signal, or with
    /// its next data, whichever comes first. As Linux's loopback device runs the
    /// receiving connection's handler from the sender's move (`net/smc/smc_loopback.c`
    /// `smc_lo_move_data`) instead of raising an interrupt. The peer must read its CDC area
    /// without waiting for a signal (this stack's reads do) and be woken by `f`. Only the
    /// first call has an effect; returns whether this one did.
    pub fn set_peer_bell(&self, f: PeerBell) -> bool {
        self.peer_bell.set(f).is_ok()
    }

    /// Installs `f`, which tells the peer's writer that it has room again by a way of its
    /// own (`ism-run`: drains the peer's doorbell socket, whose fullness its waits for
    /// writability sleep on), for a connection whose peer installed one too (both ends or
    /// neither: `ism-run` installs it with the peer bell, [`Conn::set_peer_bell`]). Then
    /// neither end's writer needs the device's signal to learn of room: our `WRITE_BLOCKED`
    /// goes unsignalled where the device can move at once (the peer looks at our flags
    /// with each consumer-cursor update it makes, and a full ring means it has data to
    /// read), and a consumer-cursor update for a peer that said `WRITE_BLOCKED` goes
    /// unsignalled too and runs `f` once the peer's ring has its low-water mark free
    /// ([`Conn::write_lowat`] as the peer reckons it). `CONS_CURS_UPD_REQ` is still
    /// answered signalled (the peer's owed bell rings on that signal). Without it the
    /// peer's waiting writer learns of room from the signal, as Linux's `net/smc/smc_cdc.c`
    /// `smcd_cdc_msg_recv` wakes it (`smc_tx_consumer_update` sends the update). Only the
    /// first call has an effect; returns whether this one did.
    pub fn set_room_bell(&self, f: RoomBell) -> bool {
        self.room_bell.set(f).is_ok()
    }

    /// Wakes waiting readers and writers, then runs the watcher.
    fn wake(&self) {
        self.notify.notify();
        if let Some(w) = self.watcher.get() {
            w();
        }
    }

    /// Our RMB.
    pub fn rmb(&self) -> &Dmb {
        &self.rmb
    }

    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The attached peer DMB (no-copy mode).
    pub fn attached(&self) -> Option<&Dmb> {
        self.attached.as_ref()
    }

    /// Whether this connection sends without copying.
    pub fn is_nocopy(&self) -> bool {
        self.attached.is_some()
    }

    /// Length of our receive ring.
    pub fn ring_len(&self) -> u32 {
        self.ring
    }

    /// Counters.
    pub fn stats(&self) -> ConnStats {
        self.counters.snapshot()
    }

    /// Also counts everything from now on into `totals` (a stack's, see
    /// [`SmcStack::attach_conn`](super::stack::SmcStack::attach_conn)); only the first call
    /// has an effect.
    pub fn count_into(&self, totals: Arc<TrafficCounters>) {
        let _ = self.totals.set(totals);
    }

    /// Adds `n` to one counter of this connection and of the stack's totals.
    fn count(&self, which: fn(&ConnCounters) -> &AtomicU64, n: u64) {
        which(&self.counters).fetch_add(n, Ordering::Relaxed);
        if let Some(t) = self.totals.get() {
            t.add(which, n);
        }
    }

    /// [`Conn::count`] for a counter whose every writer holds one lock (`tx_lock`,
    /// `rx_lock` or `cdc_lock`), which the caller holds: no locked add on a message's path.
    fn count_held(&self, which: fn(&ConnCounters) -> &AtomicU64, n: u64) {
        add_owned(which(&self.counters), n);
        if let Some(t) = self.totals.get() {
            t.add(which, n);
        }
    }

    /// Busy-poll (spin on the device) instead of blocking when waiting. (On a device that
    /// only pollers serve, waits busy-poll whatever this says: see `Conn::wait_mode`.)
    pub fn set_busy_poll(&self, on: bool) {
        self.busy_poll.store(on, Ordering::Relaxed);
    }

    /// Time limit for one read and for one write in milliseconds (0: none).
    pub fn set_timeout_ms(&self, ms: u64) {
        self.set_read_timeout_ms(ms);
        self.set_write_timeout_ms(ms);
    }

    /// Time limit for one read in milliseconds (0: none).
    pub fn set_read_timeout_ms(&self, ms: u64) {
        self.read_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Time limit for one write in milliseconds (0: none).
    pub fn set_write_timeout_ms(&self, ms: u64) {
        self.write_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The time limits of one read and one write in milliseconds (0: none).
    pub fn timeouts_ms(&self) -> (u64, u64) {
        (
            self.read_timeout_ms.load(Ordering::Relaxed),
            self.write_timeout_ms.load(Ordering::Relaxed),
        )
    }

    /// Non-blocking mode: a read or write that would wait for the peer fails at once with
    /// `WouldBlock` instead (a write that sent a part returns that count), as a
    /// non-blocking socket's. Also the fuzz harness's way to drive one connection from a
    /// single thread, without timing.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// Whether non-blocking mode is on.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// How a wait of this connection waits: busy-polling when asked to
    /// ([`Conn::set_busy_poll`]), and on a device that only pollers serve (no interrupt
    /// thread: `sim`'s `IrqMode::Poll`), where a waiter that slept would hear of nothing
    /// until its `RECHECK` slice ran out (a stress trial of blocking reads there saw 20 ms
    /// stalls, ~40 a second); otherwise as the connection was made to wait.
    fn wait_mode(&self) -> WaitMode {
        if self.busy_poll.load(Ordering::Relaxed) || self.ops.polled_only() {
            WaitMode::BusyPoll
        } else {
            self.blocking
        }
    }

    fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    /// The interrupt path: our DMB was signalled (the peer wrote a CDC). Wakes readers and
    /// writers, which re-read the CDC area.
    pub fn on_signal(&self) {
        self.count(|c| &c.signals, 1);
        if self.bell_owed.load(Ordering::Acquire) {
            // Most likely the consumer-cursor update asked for when the bell could not
            // ring: the peer has read, so its doorbell has room again.
            let _ = self.ring_peer_bell();
        }
        self.wake();
    }

    /// The connection is gone without a goodbye (link group terminated, peer function
    /// down): readers and writers fail with `ConnectionReset`.
    pub fn terminate(&self) {
        self.status.fetch_or(ST_BROKEN, Ordering::AcqRel);
        self.wake();
    }

    /// The device refused one of our moves (data or CDC): the connection is broken, and
    /// every CDC we send from now on carries the abort flag, as Linux's
    /// `net/smc/smc_tx.c` `smcd_tx_ism_write` sets `peer_conn_abort` when `smc_ism_write`
    /// fails. The peer may not know yet (the CDC that failed may have been the one that
    /// would tell it, a consumer update its writer waits for): [`Conn::close`] and
    /// [`Conn::abort`] try once more to tell it, so that its reader or writer does not
    /// wait for us forever. (Linux's `net/smc/smc_tx.c` `smc_tx_consumer_update` instead
    /// retries a failed consumer update later while the connection is healthy; the devices
    /// here refuse a move for a reason that lasts, such as a token gone or a function
    /// offline, or as an injected fault, so the connection ends.)
    fn fail(&self) {
        self.local_conn_state
            .fetch_or(ConnStateFlags::PEER_CONN_ABORT.bits(), Ordering::AcqRel);
        self.status
            .fetch_or(ST_BROKEN | ST_FAILED, Ordering::AcqRel);
        self.wake();
    }

    /// After a refused move ([`Conn::fail`]), tries once to send the abort the peer has
    /// not seen (the device may take this move: the refusal may have been transient, or
    /// for that one move).
    fn tell_failure_once(&self) {
        let st = self.status.fetch_or(ST_FAILED_TOLD, Ordering::AcqRel);
        if st & ST_FAILED != 0 && st & ST_FAILED_TOLD == 0 {
            let _ = self.send_cdc();
        }
    }

    /// Whether the connection was terminated, aborted or broken.
    pub fn is_broken(&self) -> bool {
        self.status() & (ST_BROKEN | ST_ABORTED) != 0
    }

    /// The peer's last CDC, read from our RMB's CDC area (zero cursors before the first).
    ///
    /// The two cursor words are loaded atomically, the consumer word (which carries the
    /// flags) **first**: the device stores a CDC's words in ascending order (release), so
    /// the producer cursor loaded after the flags is at least as new as the one sent with
    /// them. In the other order (Linux's `net/smc/smc_cdc.c` `smcd_cdc_rx_tasklet` copies
    /// `prod`, then `cons`), a CDC arriving between the two loads could show the peer's new
    /// close flag with its old producer cursor: an end of stream before the last bytes.
    pub fn peer_cdc(&self) -> CdcMessage {
        peer_cdc_at(self.ops.memory(), self.rmb.addr)
    }

    /// The end of the time limit (`limit_ms`, 0: none) for one read or write starting now.
    fn deadline(limit_ms: &AtomicU64) -> Option<Instant> {
        let ms = limit_ms.load(Ordering::Relaxed);
        // A limit too far away to represent is no limit (`Instant + Duration` would panic).
        (ms > 0)
            .then(|| Instant::now().checked_add(Duration::from_millis(ms)))
            .flatten()
    }

    /// Waits for a signal, but never longer than [`RECHECK`], so that the caller re-reads
    /// the peer's cursors even if an interrupt was lost on the way. `Ok(true)`: signalled;
    /// `Ok(false)`: the slice passed without one.
    fn wait(&self, seen: u64, deadline: Option<Instant>, nonblocking: bool) -> io::Result<bool> {
        if nonblocking {
            // A simple error (no message): this is every non-blocking look that finds
            // nothing, and a message would cost an allocation each time.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.count(|c| &c.waits, 1);
        let now = Instant::now();
        let slice = now + RECHECK;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let ops = &self.ops;
        let mode = self.wait_mode();
        // A polling waiter also watches the peer's CDC in our RMB: the device writes the CDC
        // before it sets the SBA bits, so data or room is there as soon as the CDC changes,
        // and the waiter can leave without running the interrupt handler (SBA flags, DMB
        // bits, DMBE mask: lines the device has just written, and writes again on its next
        // signal, so that taking them costs line transfers on the message's path). The
        // signal stays the guarantee: a CDC that changed before `before` was loaded (after
        // the caller looked) ends the wait through the handler as before (after the
        // deferral below).
        // * Busy-polling, on a device that only pollers serve: a waiter that leaves on its
        //   watch gives up the SBA's poll claim (`IsmDriver::claim_polling`), so the next
        //   poll of any other waiter takes a signal that came meanwhile; one that waits
        //   without such a poller learns of it at its RECHECK slice at the latest (a
        //   consumer of a polled-only device polls: `sim::host::IrqMode::Poll`).
        // * Spinning before it sleeps, where the device tells whether its interrupt is
        //   raised (`SmcdOps::irq_raised`) and the connection has no watcher (whose
        //   readiness the handler reports): raises do not wake the interrupt thread while
        //   we poll (`Bus::set_polling`), and a signal left to it would run the handler on
        //   a third thread beside every message (on 2 vCPUs the message rate fell from
        //   ~500k to ~150-300k round trips/s). So the waiter stays a poller until the
        //   raise of the CDC it saw has come (the device raises after the CDC and the SBA
        //   bits; a raise that found no poller would wake that thread: a system call on
        //   the sender's path), for at most RAISE_WAIT, and once it stopped polling it
        //   takes the interrupt and runs the handler itself (whoever holds the poll
        //   claim) unless the device shows nothing but this connection's own signal
        //   (`Conn::may_leave_signal`); the signal then waits for the next poll or
        //   handler run, which finds the news already taken.
        // Either way the waiter leaves signals pending for its first SIGNAL_DEFER of
        // polling: at the start of a wait that is mostly the signal of the CDC the last
        // wait saw (busy-poll RTT/2 5-18 % lower in two A/Bs: docs/benchmarks.md,
        // optimisation 13). The handler runs when the waiter has polled that long, at
        // the look before a sleep, and, for a waiter woken by someone else, once after it
        // stopped polling; a spinning waiter's signals for others wait no longer than
        // that, a busy poller's as the first point says.
        let spun = matches!(mode, WaitMode::Blocking(spin) if !spin.is_zero());
        let spins = spun && self.watcher.get().is_none() && self.tells_raise;
        let watch = spins || (mode == WaitMode::BusyPoll && ops.polled_only());
        let before = watch.then(|| self.peer_cdc());
        let mut deferring = watch;
        let mut idle = 0u32;
        let (stopped, saw_cdc) = (Cell::new(false), Cell::new(false));
        let poll = || {
            if before.is_some_and(|b| self.peer_cdc() != b) {
                // (After the stop, the raise wakes the interrupt thread anyway.)
                if spins && !stopped.get() {
                    let since = Instant::now();
                    while ops.irq_raised() == Some(false) && since.elapsed() < RAISE_WAIT {
                        std::hint::spin_loop();
                    }
                }
                // The waiter wakes itself (and any other waiter of this connection, which
                // looks again): the seq moves as if the signal had been handled.
                saw_cdc.set(true);
                self.notify.notify();
                return true;
            }
            if deferring && !stopped.get() {
                // The clock only every 16th look: a look is a few nanoseconds, a clock
                // read tens.
                idle = idle.wrapping_add(1);
                if !idle.is_multiple_of(16) || Instant::now() < now + SIGNAL_DEFER {
                    return false;
                }
                deferring = false;
            }
            if stopped.get() {
                // The look before a sleep: whoever holds the poll claim.
                ops.poll_irq_last()
            } else {
                ops.poll_irq()
            }
        };
        let polling = |on: bool| {
            ops.set_polling(on);
            stopped.set(!on);
        };
        let woken = self
            .notify
            .wait_polling(seen, mode, Some(until), poll, polling);
        if woken && spins && saw_cdc.get() {
            if !self.may_leave_signal() {
                // The interrupt is taken: the handler runs here, poll claim or not.
                ops.sync_events();
            }
        } else if (watch && !saw_cdc.get())
            || (!watch && (mode == WaitMode::BusyPoll || (spun && woken)))
        {
            // A last poll, as every poller makes after it stops (`Bus::set_polling`):
            // a raise while it polled woke no interrupt thread (a watching waiter was
            // woken by someone else while it deferred the signals, or ran out its slice;
            // a spinning one woken by someone else: its spin ended before it polled
            // again, and the raise may be for another connection).
            ops.poll_irq_last();
        }
        if woken {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "SMC-D wait timed out",
            ));
        }
        self.count(|c| &c.rechecks, 1);
        Ok(false)
    }

    /// Whether a waiter that saw the peer's CDC change itself, and stopped polling, may
    /// leave the device's signal pending ([`Conn::wait`]): nothing but this connection's
    /// own signal is there, and none of [`Conn::on_signal`]'s work besides the wake-up
    /// waits on it.
    fn may_leave_signal(&self) -> bool {
        if self.bell_owed.load(Ordering::Acquire) {
            return false;
        }
        // The interrupt first, so that no interrupt thread runs the handler for the signal
        // (a third thread beside the message): a raise after this wakes it again, and one
        // before set its SBA bits before, which the look below sees.
        self.ops.ack_irq();
        !self.ops.pending_besides(self.rmb.sba_idx)
    }

    /// Sends our CDC (current cursors and flags) with the signal.
    fn send_cdc(&self) -> io::Result<()> {
        self.move_cdc(false).map(drop)
    }

    /// Sends our CDC: signalled, or, if `quietly`, unsignalled where the device can move it
    /// at once (`Ok(false)`: it cannot, nothing sent).
    ///
    /// Every CDC carries our consumer cursor, whatever it was sent for (data, a cursor
    /// update, our own `WRITE_BLOCKED`, a shutdown): after one is in place, a peer that
    /// waits for room hears of it from the room bell ([`Conn::ring_room_if_waited`]). A
    /// writer blocked on the other side of this connection sent the cursor a reader had
    /// just advanced, and the reader's own update then had nothing left to confirm, so
    /// it rang nothing: the peer's writer waited for good (a new-user trial: an
    /// edge-triggered echo server, 16 KiB no-copy rings, about 1 run in 8).
    fn move_cdc(&self, quietly: bool) -> io::Result<bool> {
        let moved = self.move_cdc_locked(quietly)?;
        if moved {
            self.ring_room_if_waited();
        }
        Ok(moved)
    }

    /// [`Conn::move_cdc`] under the CDC lock, without the room bell.
    fn move_cdc_locked(&self, quietly: bool) -> io::Result<bool> {
        let _g = self.cdc_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cons = self.cons.load(Ordering::Acquire);
        let prod = self.prod.load(Ordering::Acquire);
        let msg = CdcMessage {
            prod: cursor(prod, self.peer.ring_len),
            cons: cursor(cons, self.ring),
            prod_flags: ProdFlags::from_bits_truncate(
                self.local_prod_flags.load(Ordering::Acquire),
            ),
            conn_state: ConnStateFlags::from_bits_truncate(
                self.local_conn_state.load(Ordering::Acquire),
            ),
        };
        let (token, idx, bytes) = (self.peer.token, self.peer.dmbe_idx, msg.emit());
        let r = if quietly {
            self.ops.move_data_now(token, idx, 0, &bytes)
        } else {
            self.ops
                .move_data(token, idx, true, 0, &bytes)
                .map(|()| true)
        };
        match r {
            Ok(false) => Ok(false),
            Ok(true) => {
                self.confirmed.store(cons, Ordering::Release);
                // Written under the CDC lock only: no locked instruction needed.
                if prod > self.prod_told.load(Ordering::Relaxed) {
                    self.prod_told.store(prod, Ordering::Release);
                }
                self.count_held(|c| &c.cdc_sent, 1);
                Ok(true)
            }
            Err(e) => {
                self.refused(&e);
                Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
            }
        }
    }

    /// Whether the peer's writer waits for our consumer cursor: it said so in its CDC.
    fn peer_waits_for_room(peer: &CdcMessage) -> bool {
        peer.prod_flags
            .intersects(ProdFlags::WRITE_BLOCKED | ProdFlags::CONS_CURS_UPD_REQ)
    }

    /// Sends our CDC after new data (`data`) or consumed room: without the signal where a
    /// peer bell is set ([`Conn::set_peer_bell`]) and the device can move at once, signalled
    /// otherwise; then, with a peer bell, rings it for the data (or a ring owed).
    ///
    /// The peer's writer may start waiting for room while this CDC is on its way (it sets
    /// `WRITE_BLOCKED` in its CDC, then looks at our consumer cursor once more before it
    /// sleeps): after the unsignalled CDC is in place, a full fence, then the peer's flags
    /// are read again, and if it now waits the CDC goes once more, signalled. Either the
    /// peer's last look sees our cursor, or this read sees its flag.
    fn announce(&self, data: bool) -> io::Result<()> {
        if self.peer_bell.get().is_none() {
            return self.send_cdc();
        }
        // With a room bell only the owed bell's request wants the signal.
        let room_bell = self.room_bell.get();
        let signal_for = |peer: &CdcMessage| match room_bell {
            Some(_) => peer.prod_flags.contains(ProdFlags::CONS_CURS_UPD_REQ),
            None => Self::peer_waits_for_room(peer),
        };
        if signal_for(&self.peer_cdc()) || !self.move_cdc(true)? {
            self.send_cdc()?;
        } else {
            // The CDC is in place before the peer's flags are looked at again and before
            // the bell rings.
            std::sync::atomic::fence(Ordering::SeqCst);
            if signal_for(&self.peer_cdc()) {
                self.send_cdc()?;
            }
        }
        if data || self.bell_owed.load(Ordering::Acquire) {
            self.ring_peer_bell()?;
        }
        Ok(())
    }

    /// With a room bell ([`Conn::set_room_bell`]), after a CDC of ours is in place: rings
    /// it if the peer says `WRITE_BLOCKED` and the cursor we told it leaves it its
    /// low-water mark free. The peer set its flag before it looked at our cursor a last
    /// time, and we look at its flag after our cursor is in place and a full fence: one of
    /// the two sees the other's store.
    fn ring_room_if_waited(&self) {
        let Some(room) = self.room_bell.get() else {
            return;
        };
        std::sync::atomic::fence(Ordering::SeqCst);
        let peer = self.peer_cdc();
        if peer.prod_flags.contains(ProdFlags::WRITE_BLOCKED)
            && self.room_for_peer(&peer) as usize >= lowat_of(self.ring)
        {
            room();
        }
    }

    /// Room the peer's writer sees in our ring (its `peer_space`): our ring less what it
    /// has put (`peer.prod`) beyond the consumer cursor it was last told of.
    fn room_for_peer(&self, peer: &CdcMessage) -> u32 {
        self.room_for_peer_at(self.confirmed.load(Ordering::Acquire), peer)
    }

    /// [`Conn::room_for_peer`] had it been told of `confirmed` bytes read in all.
    fn room_for_peer_at(&self, confirmed: u64, peer: &CdcMessage) -> u32 {
        self.ring - Cursor::diff_large(self.ring, cursor(confirmed, self.ring), peer.prod)
    }

    /// Tells the peer that our writer waits for room (`WRITE_BLOCKED` is set): signalled,
    /// or unsignalled where both ends have room bells ([`Conn::set_room_bell`]) and the
    /// device can move at once.
    fn tell_write_blocked(&self) -> io::Result<()> {
        if self.room_bell.get().is_some() && self.move_cdc(true)? {
            return Ok(());
        }
        self.send_cdc()
    }

    /// Rings the peer bell with the total our CDC in place told of (`prod_told`: never
    /// bytes whose CDC is still to go). If it cannot ring, the ring is owed
    /// (`bell_owed`): `CONS_CURS_UPD_REQ` goes into our CDC, sent signalled, so that the
    /// peer's next consumer-cursor update is signalled and [`Conn::on_signal`] rings again
    /// (the bell fails while the peer's doorbell holds too many unread records: its reader
    /// reads them, then updates its cursor). The bell is tried once more after that CDC is
    /// in place: a reader that updated its cursor before it saw the request has made room.
    /// Once a ring succeeds, the request is cleared (it goes with our next CDC).
    fn ring_peer_bell(&self) -> io::Result<()> {
        let Some(bell) = self.peer_bell.get() else {
            return Ok(());
        };
        // Tells of everything sent that no ring told of yet; whether nothing is left untold.
        let ring = || {
            let mut told = self.bell_lock.lock().unwrap_or_else(|e| e.into_inner());
            let total = self.prod_told.load(Ordering::Acquire);
            if total <= *told {
                return true;
            }
            let rung = bell(total);
            if rung {
                *told = total;
            }
            rung
        };
        let rung = |c: &Self| {
            if c.bell_owed.swap(false, Ordering::AcqRel) {
                c.local_prod_flags
                    .fetch_and(!ProdFlags::CONS_CURS_UPD_REQ.bits(), Ordering::AcqRel);
            }
        };
        if ring() {
            rung(self);
            return Ok(());
        }
        if !self.bell_owed.swap(true, Ordering::AcqRel) {
            self.local_prod_flags
                .fetch_or(ProdFlags::CONS_CURS_UPD_REQ.bits(), Ordering::AcqRel);
        }
        self.send_cdc()?;
        std::sync::atomic::fence(Ordering::SeqCst);
        if ring() {
            rung(self);
        }
        Ok(())
    }

    /// Free space in the peer's ring as our producer cursor and its consumer cursor say,
    /// always in `0 ..= peer ring`.
    fn peer_space(&self, peer: &CdcMessage) -> u32 {
        let ring = self.peer.ring_len;
        let prod = cursor(self.prod.load(Ordering::Acquire), ring);
        // A consumer cursor the peer cannot have written frees nothing.
        checked_diff(ring, peer.cons, prod).map_or(0, |in_flight| ring - in_flight)
    }

    /// Copies `data` into the peer's ring at our producer position.
    fn put_into_peer_ring(&self, data: &[u8]) -> io::Result<()> {
        let ring = self.peer.ring_len as u64;
        let pos = self.prod.load(Ordering::Acquire) % ring;
        let first = data.len().min((ring - pos) as usize);
        for (at, chunk) in [(pos, &data[..first]), (0, &data[first..])] {
            if chunk.is_empty() {
                continue;
            }
            let off = RING_OFFSET as u64 + at;
            match &self.attached {
                Some(att) => {
                    // Counted before the check, so that `detach_peer_dmb` (which sets the
                    // flag, then waits for the count) and this write never overlap.
                    self.attached_writes.fetch_add(1, Ordering::SeqCst);
                    let r = if self.detached.load(Ordering::SeqCst) {
                        Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "SMC-D connection closed",
                        ))
                    } else {
                        self.ops
                            .memory()
                            .write(DevAddr(att.addr.0 + off), chunk)
                            .map_err(|e| {
                                self.fail();
                                io::Error::new(io::ErrorKind::BrokenPipe, e.as_str())
                            })
                    };
                    self.attached_writes.fetch_sub(1, Ordering::SeqCst);
                    r?;
                }
                None => {
                    self.count_held(|c| &c.data_moves, chunk.len().div_ceil(4096) as u64);
                    if let Err(e) = self.ops.move_data(
                        self.peer.token,
                        self.peer.dmbe_idx,
                        false,
                        off as u32,
                        chunk,
                    ) {
                        self.refused(&e);
                        return Err(io::Error::new(io::ErrorKind::BrokenPipe, e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether writes fail because the peer closed the connection in an orderly way (its
    /// close, or with [`Conn::set_peer_exit_like_tcp`] its process's end after it had read
    /// everything), not because of an abort, a breakage or our own close: the
    /// `ConnectionReset` of [`Conn::write`] that a TCP socket would have turned into a
    /// first write that succeeds (the peer's kernel then answers with a reset) and an
    /// `EPIPE` after it.
    pub fn closed_by_peer(&self) -> bool {
        let (st, peer) = (self.status(), self.peer_cdc());
        let peer_closed =
            peer.conn_state.contains(ConnStateFlags::PEER_CONN_CLOSED) || st & ST_PEER_EXITED != 0;
        let aborted = st & ST_ABORTED != 0
            || (st & ST_BROKEN != 0 && !peer_closed)
            || peer.conn_state.contains(ConnStateFlags::PEER_CONN_ABORT);
        peer_closed && !aborted && st & (ST_WRITE_SHUT | ST_CLOSED) == 0
    }

    fn check_writable(&self, peer: &CdcMessage) -> io::Result<()> {
        let st = self.status();
        let peer_closed =
            peer.conn_state.contains(ConnStateFlags::PEER_CONN_CLOSED) || st & ST_PEER_EXITED != 0;
        // A breakage after the peer's close (our move into the RMB it gave back was
        // refused) is still the peer's close, as for the writer that saw the
        // close first.
        if st & ST_ABORTED != 0
            || (st & ST_BROKEN != 0 && !peer_closed)
            || peer.conn_state.contains(ConnStateFlags::PEER_CONN_ABORT)
        {
            return Err(reset());
        }
        if st & (ST_WRITE_SHUT | ST_CLOSED) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SMC-D connection closed for writing",
            ));
        }
        // The peer closed: Linux fails the write with ECONNRESET (`smc_tx_sendmsg` in
        // `net/smc/smc_tx.c` returns it when `smc_cdc_rxed_any_close`), and raises no
        // SIGPIPE, which only our own shutdown's EPIPE does (`sk_stream_error`).
        if peer_closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SMC-D connection closed by the peer",
            ));
        }
        Ok(())
    }

    /// Sends `buf`, waiting for the peer to make room as needed; returns how many bytes
    /// went into the peer's ring: `buf.len()`, or fewer if a wait timed out or the
    /// connection failed after a part was sent (as TCP's `send` returns a short count).
    ///
    /// # Errors
    /// Only if nothing was sent (`std::io::Write`: an error means no byte was written):
    /// `BrokenPipe` after a local close or `shutdown(Write)`, `ConnectionReset` after the
    /// peer's close (as Linux's `smc_tx_sendmsg`), an abort or termination, `TimedOut` if a
    /// wait exceeds the time limit.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(buf, self.is_nonblocking())
    }

    /// [`Conn::write`], non-blocking for this call alone if `nonblocking` (as `send` with
    /// `MSG_DONTWAIT`), blocking otherwise, whatever [`Conn::set_nonblocking`] says.
    ///
    /// # Errors
    /// As [`Conn::write`]; `WouldBlock` if `nonblocking` and nothing could be sent.
    pub fn write_with(&self, buf: &[u8], nonblocking: bool) -> io::Result<usize> {
        let _tx = self.tx_lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Self::deadline(&self.write_timeout_ms);
        let mut done = 0;
        // Slices in a row that passed without a signal while the peer's ring was full.
        let mut quiet = 0u32;
        // Linux's `smc_tx_sendmsg` likewise returns the bytes copied so far when a wait
        // ends in an error after some were sent.
        let short = |done: usize, e: io::Error| if done > 0 { Ok(done) } else { Err(e) };
        while done < buf.len() {
            let seen = self.notify.seq();
            let peer = self.peer_cdc();
            if let Err(e) = self.check_writable(&peer) {
                return short(done, e);
            }
            let space = self.peer_space(&peer) as usize;
            if space == 0 {
                let r = if self.mark_write_blocked() {
                    // Once per time the writer is blocked, not per wake-up.
                    self.tell_write_blocked()
                } else if quiet > 0 && quiet.is_multiple_of(PROBE_EVERY) {
                    // Is the peer still there? (See `PROBE_EVERY`.)
                    self.send_cdc()
                } else {
                    Ok(())
                };
                match r.and_then(|()| self.wait(seen, deadline, nonblocking)) {
                    Err(e) => return short(done, e),
                    Ok(true) => quiet = 0,
                    Ok(false) => quiet += 1,
                }
                continue;
            }
            let n = space.min(buf.len() - done);
            let put = self.put_into_peer_ring(&buf[done..done + n]);
            // Data that did not reach the peer's ring was not sent: the producer cursor
            // stays, and the count is what was sent before.
            if let Err(e) = put {
                return short(done, e);
            }
            // The producer cursor and `WRITE_BLOCKED` change under the writers' lock only,
            // held here: a store, and a locked instruction only to clear a flag that is set.
            let prod = self.prod.load(Ordering::Relaxed) + n as u64;
            self.prod.store(prod, Ordering::Release);
            let blocked = ProdFlags::WRITE_BLOCKED.bits();
            if self.local_prod_flags.load(Ordering::Relaxed) & blocked != 0 {
                self.local_prod_flags.fetch_and(!blocked, Ordering::AcqRel);
            }
            // Without the CDC the peer never learns of these bytes: they count as sent only
            // if it goes out (a failed CDC marks the connection broken).
            if let Err(e) = self.announce(true) {
                return short(done, e);
            }
            self.count_held(|c| &c.bytes_sent, n as u64);
            done += n;
        }
        Ok(done)
    }

    /// Receives into `buf`, waiting for data; `Ok(0)` at end of stream (the peer shut down
    /// its writing side or closed) or after a local read shutdown.
    ///
    /// # Errors
    /// `ConnectionReset` after an abort or termination, `TimedOut` on the time limit.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(buf, self.is_nonblocking())
    }

    /// [`Conn::read`], non-blocking for this call alone if `nonblocking` (as `recv` with
    /// `MSG_DONTWAIT`), blocking otherwise, whatever [`Conn::set_nonblocking`] says.
    ///
    /// # Errors
    /// As [`Conn::read`]; `WouldBlock` if `nonblocking` and no data is there.
    pub fn read_with(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let _g = self.rx_lock.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Self::deadline(&self.read_timeout_ms);
        loop {
            let seen = self.notify.seq();
            let peer = self.peer_cdc();
            let cons = self.cons.load(Ordering::Acquire);
            let avail =
                checked_diff(self.ring, cursor(cons, self.ring), peer.prod).unwrap_or(0) as usize;
            if avail > 0 {
                if avail >= self.ring as usize {
                    self.count_held(|c| &c.rmb_full, 1);
                }
                let n = avail.min(buf.len());
                self.take_from_ring(cons, &mut buf[..n])?;
                // Written under the readers' lock only, held here.
                self.cons.store(cons + n as u64, Ordering::Release);
                self.count_held(|c| &c.bytes_received, n as u64);
                // The bytes are ours now: a failed cursor update (the peer closed and
                // unregistered its RMB; `send_cdc` marks the connection broken) must not
                // turn this read into an error and lose them.
                // Nobody to tell once the peer closed (its RMB may be gone already).
                let gone = ConnStateFlags::PEER_CONN_CLOSED | ConnStateFlags::PEER_CONN_ABORT;
                if !peer.conn_state.intersects(gone) {
                    let _ = self.consumer_update(&peer);
                }
                return Ok(n);
            }
            // An abort by the peer wins; a graceful end by the peer is end-of-stream even if
            // the link group is torn down afterwards; a local breakage is an error.
            if peer.conn_state.contains(ConnStateFlags::PEER_CONN_ABORT) {
                return Err(reset());
            }
            let eof = ConnStateFlags::PEER_DONE_WRITING | ConnStateFlags::PEER_CONN_CLOSED;
            if peer.conn_state.intersects(eof)
                || self.status() & (ST_READ_SHUT | ST_CLOSED | ST_PEER_EXITED) != 0
            {
                return Ok(0);
            }
            if self.status() & (ST_BROKEN | ST_ABORTED) != 0 {
                return Err(reset());
            }
            self.wait(seen, deadline, nonblocking)?;
        }
    }

    /// Bytes we have sent in all (our producer cursor as a count).
    pub fn sent_total(&self) -> u64 {
        self.prod.load(Ordering::Acquire)
    }

    /// Bytes we have read in all (our consumer cursor as a count).
    pub fn consumed_total(&self) -> u64 {
        self.cons.load(Ordering::Acquire)
    }

    /// Bytes the peer has put into our ring in all, as its CDC says now (what we read plus
    /// what waits): the peer's [`Conn::sent_total`] as far as it reached us.
    pub fn received_total(&self) -> u64 {
        let cons = self.cons.load(Ordering::Acquire);
        let peer = self.peer_cdc();
        cons + checked_diff(self.ring, cursor(cons, self.ring), peer.prod).unwrap_or(0) as u64
    }

    /// Bytes waiting in our ring.
    pub fn available(&self) -> usize {
        let peer = self.peer_cdc();
        let cons = cursor(self.cons.load(Ordering::Acquire), self.ring);
        checked_diff(self.ring, cons, peer.prod).unwrap_or(0) as usize
    }

    /// Whether a read would return without waiting: data is there, the peer ended or
    /// aborted the stream, reading was shut down locally, or the connection is broken
    /// (what `poll` would report as readable on a socket).
    pub fn read_ready(&self) -> bool {
        let peer = self.peer_cdc();
        let cons = cursor(self.cons.load(Ordering::Acquire), self.ring);
        checked_diff(self.ring, cons, peer.prod).unwrap_or(0) > 0 || self.reads_end(&peer)
    }

    /// [`Conn::read_would_end`] with the peer's CDC `peer` as loaded.
    fn reads_end(&self, peer: &CdcMessage) -> bool {
        let ended = ConnStateFlags::PEER_DONE_WRITING
            | ConnStateFlags::PEER_CONN_CLOSED
            | ConnStateFlags::PEER_CONN_ABORT;
        peer.conn_state.intersects(ended)
            || self.status() & (ST_READ_SHUT | ST_CLOSED | ST_BROKEN | ST_ABORTED | ST_PEER_EXITED)
                != 0
    }

    /// Whether a read would end or fail at once whatever the ring holds: the peer ended or
    /// aborted the stream, reading was shut down locally, or the connection is closed or
    /// broken ([`Conn::read_ready`] but for waiting data).
    pub fn read_would_end(&self) -> bool {
        self.reads_end(&self.peer_cdc())
    }

    /// Whether a write would return without waiting: the peer's ring has room, or a write
    /// would fail at once (closed, aborted, broken): what `poll` would report as writable
    /// on a socket (a TCP socket polls `POLLOUT` with `POLLERR`/`POLLHUP` after a reset).
    pub fn write_ready(&self) -> bool {
        self.write_ready_for(1)
    }

    /// [`Conn::write_ready`] with at least `room` bytes of room (or all of the ring if it
    /// is smaller): see [`Conn::write_lowat`].
    pub fn write_ready_for(&self, room: usize) -> bool {
        // A writer that just said `WRITE_BLOCKED` looks here before it sleeps: the fence
        // pairs with the one in `Conn::announce` (the peer's unsignalled cursor update).
        std::sync::atomic::fence(Ordering::SeqCst);
        let peer = self.peer_cdc();
        let want = room.clamp(1, self.peer.ring_len as usize);
        self.check_writable(&peer).is_err() || self.peer_space(&peer) as usize >= want
    }

    /// The room in the peer's ring below which a socket over this connection should not
    /// poll writable: half of the ring, at most 64 KiB. TCP reports a socket writable
    /// only while its free send space is at least half of what is queued
    /// (`sk_stream_min_wspace` in `include/net/sock.h`), so a program that waits for
    /// writability and then makes one blocking write of a few kilobytes (socat) never
    /// blocks in it; writable on any room, two such programs echoing to each other both
    /// blocked in their writes and waited for each other for good.
    pub fn write_lowat(&self) -> usize {
        lowat_of(self.peer.ring_len)
    }

    /// For a writer about to wait for room outside [`Conn::write`] (`ism-run`'s
    /// `sendfile` waits for `EPOLLOUT` before it reads the file): if the peer's ring is
    /// full, tells the peer that we wait (`WRITE_BLOCKED` in our CDC, signalled, once per
    /// blocked spell, as a blocked [`Conn::write`] does), so that its cursor updates come
    /// signalled (see [`Conn::set_peer_bell`]); the flag is cleared by the next write
    /// that puts data. Returns whether the ring is full (false: room, or a write would
    /// fail at once).
    ///
    /// # Errors
    /// `BrokenPipe` if the CDC cannot be delivered.
    pub fn say_waiting_for_room(&self) -> io::Result<bool> {
        self.say_waiting_for_room_below(1)
    }

    /// [`Conn::say_waiting_for_room`] for a writer that waits until the ring has at least
    /// `room` bytes free (or all of it if smaller): the peer is told while there are fewer.
    ///
    /// # Errors
    /// `BrokenPipe` if the CDC cannot be delivered.
    pub fn say_waiting_for_room_below(&self, room: usize) -> io::Result<bool> {
        let _tx = self.tx_lock.lock().unwrap_or_else(|e| e.into_inner());
        let peer = self.peer_cdc();
        let want = room.clamp(1, self.peer.ring_len as usize);
        if self.check_writable(&peer).is_err() || self.peer_space(&peer) as usize >= want {
            return Ok(false);
        }
        if self.mark_write_blocked() {
            self.tell_write_blocked()?;
        }
        Ok(true)
    }

    /// Sets `WRITE_BLOCKED` in our CDC's flags (sent with the next CDC); whether it was not
    /// set yet (a new blocked spell, counted).
    fn mark_write_blocked(&self) -> bool {
        let was = self
            .local_prod_flags
            .fetch_or(ProdFlags::WRITE_BLOCKED.bits(), Ordering::AcqRel);
        let new = was & ProdFlags::WRITE_BLOCKED.bits() == 0;
        if new {
            self.count_held(|c| &c.peer_buffer_full, 1);
        }
        new
    }

    /// Bytes a write would put into the peer's ring now without waiting (0 while it is
    /// full, and when a write would fail).
    pub fn write_space(&self) -> usize {
        let peer = self.peer_cdc();
        if self.check_writable(&peer).is_err() {
            return 0;
        }
        self.peer_space(&peer) as usize
    }

    /// Whether the peer will send nothing more (it shut down writing, closed or aborted),
    /// or the connection is broken: reads return what is left, then end of stream or an
    /// error.
    pub fn peer_done(&self) -> bool {
        let ended = ConnStateFlags::PEER_DONE_WRITING
            | ConnStateFlags::PEER_CONN_CLOSED
            | ConnStateFlags::PEER_CONN_ABORT;
        self.peer_cdc().conn_state.intersects(ended) || self.is_broken() || self.peer_exited()
    }

    fn take_from_ring(&self, cons: u64, out: &mut [u8]) -> io::Result<()> {
        let ring = self.ring as u64;
        let pos = cons % ring;
        let first = out.len().min((ring - pos) as usize);
        let (a, b) = out.split_at_mut(first);
        let mem = self.ops.memory();
        let base = self.rmb.addr.0 + RING_OFFSET as u64;
        mem.read(DevAddr(base + pos), a)
            .and_then(|_| {
                if b.is_empty() {
                    Ok(())
                } else {
                    mem.read(DevAddr(base), b)
                }
            })
            .map_err(|e| io::Error::other(e.as_str()))
    }

    /// Linux's `smc_tx_consumer_update`: tell the peer how far we consumed when it asked,
    /// or when enough was consumed and the peer is short of space or blocked.
    fn consumer_update(&self, peer: &CdcMessage) -> io::Result<()> {
        let cons = self.cons.load(Ordering::Acquire);
        let confirmed = self.confirmed.load(Ordering::Acquire);
        let to_confirm = cons.saturating_sub(confirmed);
        let limit = (self.ring / 10).min(UPDATE_LIMIT_CAP) as u64;
        let sender_free = self.room_for_peer_at(confirmed, peer);
        let asked = peer.prod_flags.contains(ProdFlags::CONS_CURS_UPD_REQ);
        let needy =
            sender_free <= self.ring / 2 || peer.prod_flags.contains(ProdFlags::WRITE_BLOCKED);
        if asked || (to_confirm > limit && needy) {
            self.announce(false)?;
        }
        Ok(())
    }

    /// Shuts down our writing side: the peer reads end-of-stream after the data sent.
    ///
    /// # Errors
    /// `BrokenPipe` if the CDC cannot be delivered.
    pub fn shutdown_write(&self) -> io::Result<()> {
        if self.status.fetch_or(ST_WRITE_SHUT, Ordering::AcqRel) & ST_WRITE_SHUT != 0 {
            return Ok(());
        }
        self.local_conn_state
            .fetch_or(ConnStateFlags::PEER_DONE_WRITING.bits(), Ordering::AcqRel);
        if self.is_broken() || self.peer_exited() {
            return Ok(());
        }
        match self.send_cdc() {
            Ok(()) => Ok(()),
            // The peer closed (and gave its RMB back) already: it may have learned of the
            // end from another CDC that carried the flag set above (a reader's cursor
            // update). As a TCP socket's `shutdown` after the peer's FIN, not an error.
            Err(_)
                if self
                    .peer_cdc()
                    .conn_state
                    .contains(ConnStateFlags::PEER_CONN_CLOSED) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Shuts down our reading side: reads return end-of-stream.
    pub fn shutdown_read(&self) {
        self.status.fetch_or(ST_READ_SHUT, Ordering::AcqRel);
        self.wake();
    }

    /// Closes: tells the peer (connection closed) unless the connection is already broken;
    /// broken by a refused move of ours, it tries once to tell the peer of the abort.
    /// With data the peer sent still unread in our RMB, the close is an abort, as Linux's
    /// `smc_close_final` (`net/smc/smc_close.c`) sends `peer_conn_abort` when
    /// `bytes_to_rcv` is not zero, and as TCP resets a connection closed with unread data
    /// (`__tcp_close` in `net/ipv4/tcp.c`): the peer learns that data was lost
    /// (`ConnectionReset`), never a clean end of stream.
    pub fn close(&self) {
        if self.status.fetch_or(ST_CLOSED, Ordering::AcqRel) & ST_CLOSED != 0 {
            return;
        }
        if self.available() > 0 && !self.peer_exited() && !self.is_broken() {
            self.abort();
            return;
        }
        self.detach_peer_dmb();
        self.local_conn_state
            .fetch_or(ConnStateFlags::PEER_CONN_CLOSED.bits(), Ordering::AcqRel);
        if self.peer_exited() {
            // Nobody to tell.
        } else if !self.is_broken() {
            let _ = self.send_cdc();
        } else {
            self.tell_failure_once();
        }
        self.wake();
    }

    /// Aborts: tells the peer (connection abort) and fails local readers and writers.
    pub fn abort(&self) {
        self.detach_peer_dmb();
        self.local_conn_state
            .fetch_or(ConnStateFlags::PEER_CONN_ABORT.bits(), Ordering::AcqRel);
        if self.status.fetch_or(ST_ABORTED, Ordering::AcqRel) & (ST_ABORTED | ST_BROKEN) == 0 {
            let _ = self.send_cdc();
        } else {
            self.tell_failure_once();
        }
        self.wake();
    }

    /// Detaches the peer's DMB (no-copy mode), once: after writes into it under way
    /// ended; later writes fail with `BrokenPipe`. [`Conn::close`] and [`Conn::abort`]
    /// detach before their CDC goes out, so a peer that sees our close or abort knows we
    /// hold no attachment of its RMB any more and may give it to its next connection
    /// (the link group's kept RMBs, `SmcStack::release_conn`): the device lets a function
    /// attach a DMB once at a time, so an attachment of ours left over from this
    /// connection would make the next connection's attach fail, and its late detach would
    /// take the next connection's away.
    pub fn detach_peer_dmb(&self) {
        let Some(att) = &self.attached else {
            return;
        };
        if self.detached.swap(true, Ordering::SeqCst) {
            return;
        }
        while self.attached_writes.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        let _ = self.ops.detach_dmb(att.token);
    }

    /// Releases the device resources: detaches the peer's DMB and unregisters our RMB.
    /// Call once, after [`Conn::close`] or [`Conn::abort`].
    pub fn release(&self) {
        if let Some(rmb) = self.release_keeping_rmb() {
            let _ = self.ops.unregister_dmb(&rmb);
        }
    }

    /// As [`Conn::release`], but returns our RMB still registered if it may serve another
    /// connection with the same peer: we closed the connection (our closing CDC is the
    /// last thing we told the peer) and nothing aborted or broke it, so the peer writes
    /// into it only until its own close, which the caller waits for (the link group's
    /// kept RMBs: `SmcStack::release_conn`). Otherwise unregisters it and returns `None`.
    /// Call once, after [`Conn::close`] or [`Conn::abort`].
    pub fn release_keeping_rmb(&self) -> Option<Dmb> {
        self.detach_peer_dmb();
        let st = self.status();
        let clean = st & ST_CLOSED != 0
            && st & (ST_ABORTED | ST_BROKEN | ST_FAILED | ST_PEER_EXITED) == 0
            && !self
                .peer_cdc()
                .conn_state
                .contains(ConnStateFlags::PEER_CONN_ABORT);
        if clean {
            return Some(self.rmb);
        }
        let _ = self.ops.unregister_dmb(&self.rmb);
        None
    }
}

impl core::fmt::Debug for Conn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Conn")
            .field("rmb", &self.rmb)
            .field("peer", &self.peer)
            .field("nocopy", &self.attached.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! One connection against a scripted peer, on one thread where possible: the test writes
    //! the peer's CDCs (and data) into our RMB and reads what we moved into the peer's RMB,
    //! both in one in-memory `DmaMemory` behind a fake device. Non-blocking unless a test
    //! says otherwise; every test body runs on a helper thread with a time limit, so a
    //! connection that spins or hangs fails the test instead of stalling it.
    use super::*;
    use crate::ism::{ErrorKind, IsmClient, IsmError};
    use alloc::vec;
    use alloc::vec::Vec;
    use ism_abi::MoveError;
    use ism_hal::fakes::FakeMemory;
    use ism_hal::{DmaMemory, Gid, MemError};
    use std::io::ErrorKind as Io;
    use std::sync::mpsc;

    const OUR_RMB: u64 = 0x1_0000;
    const PEER_RMB: u64 = 0x2_0000;
    const OUR_TOKEN: DmbToken = DmbToken(0x0E);
    const PEER_TOKEN: DmbToken = DmbToken(0x5EE2);
    /// DMBE index of the peer (not 0, so that passing it on is checked).
    const PEER_DMBE: u8 = 3;
    /// Limit of one test body.
    const LIMIT: Duration = Duration::from_secs(10);

    /// Runs `f` on a helper thread; fails if it does not finish within [`LIMIT`].
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        match rx.recv_timeout(LIMIT) {
            Ok(Ok(v)) => v,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(_) => panic!("the test body did not finish within {LIMIT:?}"),
        }
    }

    /// A move as the device saw it: offset, signal flag, length.
    type Move = (u32, bool, usize);

    /// The fake memory with a concurrent writer of our CDC area: a CDC can be set to land
    /// (its four words stored in ascending order, as the device does) just before the
    /// n-th 8-byte access to that area, so a test can put it between any two of a reader's
    /// loads. A plain `read` of the area counts as one access per word.
    struct Mem {
        inner: FakeMemory,
        /// The CDC that lands, and how many more accesses to the area come before it.
        pending: Mutex<Option<([u8; CDC_MSG_LEN], usize)>>,
    }

    impl Mem {
        /// One access to the words of our CDC area in `[addr, addr + len)`, if any: the
        /// pending CDC lands if its turn has come.
        fn access(&self, addr: DevAddr, len: usize) {
            let cdc = OUR_RMB..OUR_RMB + CDC_MSG_LEN as u64;
            if addr.0 >= cdc.end || addr.0 + len as u64 <= cdc.start {
                return;
            }
            let mut p = self.pending.lock().unwrap();
            if let Some((msg, before)) = p.as_mut() {
                if *before == 0 {
                    for (i, w) in msg.chunks_exact(8).enumerate() {
                        let at = DevAddr(OUR_RMB + 8 * i as u64);
                        self.inner.store_u64(at, w.try_into().unwrap()).unwrap();
                    }
                    *p = None;
                } else {
                    *before -= 1;
                }
            }
        }
    }

    impl DmaMemory for Mem {
        fn base(&self) -> DevAddr {
            self.inner.base()
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read(&self, addr: DevAddr, buf: &mut [u8]) -> Result<(), MemError> {
            // Word by word, each one access (as `MemoryDomain` copies).
            for (i, chunk) in buf.chunks_mut(8).enumerate() {
                let at = DevAddr(addr.0 + 8 * i as u64);
                self.access(at, chunk.len());
                self.inner.read(at, chunk)?;
            }
            Ok(())
        }
        fn write(&self, addr: DevAddr, data: &[u8]) -> Result<(), MemError> {
            self.inner.write(addr, data)
        }
        fn zero(&self, addr: DevAddr, len: u64) -> Result<(), MemError> {
            self.inner.zero(addr, len)
        }
        fn load_u64(&self, addr: DevAddr) -> Result<[u8; 8], MemError> {
            self.access(addr, 8);
            self.inner.load_u64(addr)
        }
        fn store_u64(&self, addr: DevAddr, bytes: [u8; 8]) -> Result<(), MemError> {
            self.inner.store_u64(addr, bytes)
        }
        fn fetch_or_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
            self.inner.fetch_or_u8(addr, mask)
        }
        fn fetch_and_u8(&self, addr: DevAddr, mask: u8) -> Result<u8, MemError> {
            self.inner.fetch_and_u8(addr, mask)
        }
        fn swap_u8(&self, addr: DevAddr, value: u8) -> Result<u8, MemError> {
            self.inner.swap_u8(addr, value)
        }
        fn fetch_or_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
            self.inner.fetch_or_u64(addr, mask)
        }
        fn fetch_and_u64(&self, addr: DevAddr, mask: [u8; 8]) -> Result<[u8; 8], MemError> {
            self.inner.fetch_and_u64(addr, mask)
        }
    }

    struct Ops {
        mem: Mem,
        refuse: AtomicBool,
        /// The device no longer knows the peer's GID (its function went away).
        gone: AtomicBool,
        /// `move_data_now` moves (a loopback device); without it, it cannot.
        now: AtomicBool,
        /// Runs after each CDC move, given whether it was signalled (a peer that acts
        /// while our CDC is on its way).
        after_cdc: Mutex<Option<AfterCdc>>,
        moves: Mutex<Vec<Move>>,
        polls: AtomicU64,
        /// Whether `irq_raised` tells (always raised, then); `None` without.
        raised_known: AtomicBool,
        /// Whether no interrupt thread serves the device (only pollers): set for a
        /// connection made to busy-poll, as `sim`'s bench pairs `IrqMode::Poll` with it.
        polled_only: AtomicBool,
        /// What `pending_besides` says.
        besides: AtomicBool,
        /// `ack_irq` calls.
        acks: AtomicU64,
        /// `set_polling(true)` calls.
        polling_starts: AtomicU64,
        /// The polling hints, acknowledgements, looks and polls, in order.
        log: Mutex<Vec<&'static str>>,
        released: Mutex<Vec<(&'static str, DmbToken)>>,
    }

    /// See `Ops::after_cdc`.
    type AfterCdc = alloc::boxed::Box<dyn Fn(bool) + Send + Sync>;

    impl SmcdOps for Ops {
        fn query_remote_gid(&self, gid: SmcdGid, _: bool, _: u16) -> Result<(), IsmError> {
            assert_eq!(gid.gid, 2, "asked of the peer");
            if self.gone.load(Ordering::Relaxed) {
                return Err(IsmError::Device(ism_abi::ReturnCode::RemoteGidUnreachable));
            }
            Ok(())
        }
        fn register_dmb(&self, _: usize, _: SmcdGid, _: u16, _: u8) -> Result<Dmb, IsmError> {
            unreachable!("a connection registers no DMB")
        }
        fn unregister_dmb(&self, dmb: &Dmb) -> Result<(), IsmError> {
            self.released
                .lock()
                .unwrap()
                .push(("unregister", dmb.token));
            Ok(())
        }
        fn move_data(
            &self,
            token: DmbToken,
            idx: u8,
            sf: bool,
            offset: u32,
            data: &[u8],
        ) -> Result<(), IsmError> {
            assert_eq!(
                (token, idx),
                (PEER_TOKEN, PEER_DMBE),
                "moved to the peer's DMBE"
            );
            self.moves.lock().unwrap().push((offset, sf, data.len()));
            if self.refuse.load(Ordering::Relaxed) {
                return Err(IsmError::Move(MoveError::InvalidToken));
            }
            self.mem
                .write(DevAddr(PEER_RMB + u64::from(offset)), data)
                .map_err(|_| IsmError::Local(ErrorKind::InvalidArgument))?;
            if offset == 0 {
                if let Some(f) = &*self.after_cdc.lock().unwrap() {
                    f(sf);
                }
            }
            Ok(())
        }
        fn move_data_now(
            &self,
            token: DmbToken,
            idx: u8,
            offset: u32,
            data: &[u8],
        ) -> Result<bool, IsmError> {
            if !self.now.load(Ordering::Relaxed) {
                return Ok(false);
            }
            self.move_data(token, idx, false, offset, data)
                .map(|()| true)
        }
        fn get_chid(&self) -> u16 {
            0xFFFF
        }
        fn get_local_gid(&self) -> SmcdGid {
            SmcdGid { gid: 1, gid_ext: 0 }
        }
        fn supports_v2(&self) -> bool {
            true
        }
        fn detach_dmb(&self, token: DmbToken) -> Result<(), IsmError> {
            self.released.lock().unwrap().push(("detach", token));
            Ok(())
        }
        fn add_client(&self, _: Arc<dyn IsmClient>) -> Result<u8, IsmError> {
            Ok(0)
        }
        fn memory(&self) -> &dyn DmaMemory {
            &self.mem
        }
        fn poll_irq(&self) -> bool {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.log.lock().unwrap().push("poll");
            false
        }

        fn poll_irq_last(&self) -> bool {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.log.lock().unwrap().push("last");
            false
        }

        fn set_polling(&self, on: bool) {
            if on {
                self.polling_starts.fetch_add(1, Ordering::SeqCst);
            }
            self.log.lock().unwrap().push(if on { "on" } else { "off" });
        }

        fn polled_only(&self) -> bool {
            self.polled_only.load(Ordering::Relaxed)
        }

        fn pending_besides(&self, sba_idx: u32) -> bool {
            assert_eq!(sba_idx, 7, "our RMB's SBA index");
            self.log.lock().unwrap().push("besides");
            self.besides.load(Ordering::Relaxed)
        }

        fn ack_irq(&self) {
            self.acks.fetch_add(1, Ordering::Relaxed);
            self.log.lock().unwrap().push("ack");
        }

        fn irq_raised(&self) -> Option<bool> {
            self.raised_known.load(Ordering::Relaxed).then_some(true)
        }
    }

    impl Ops {
        /// The peer writes its CDC into our RMB (and signals us).
        fn peer_says(
            &self,
            c: &Conn,
            prod: Cursor,
            cons: Cursor,
            pf: ProdFlags,
            st: ConnStateFlags,
        ) {
            let m = CdcMessage {
                prod,
                cons,
                prod_flags: pf,
                conn_state: st,
            };
            self.mem.write(DevAddr(OUR_RMB), &m.emit()).unwrap();
            c.on_signal();
        }

        /// The peer writes `data` into our ring at offset `at`.
        fn peer_data(&self, at: u32, data: &[u8]) {
            let a = OUR_RMB + u64::from(RING_OFFSET + at);
            self.mem.write(DevAddr(a), data).unwrap();
        }

        /// Our last CDC, as the peer reads it from its RMB.
        fn our_cdc(&self) -> CdcMessage {
            let mut raw = [0u8; CDC_MSG_LEN];
            self.mem.read(DevAddr(PEER_RMB), &mut raw).unwrap();
            CdcMessage::parse(&raw).unwrap()
        }

        /// `n` bytes of the peer's ring from offset `at`.
        fn peer_ring(&self, at: u32, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            let a = PEER_RMB + u64::from(RING_OFFSET + at);
            self.mem.read(DevAddr(a), &mut v).unwrap();
            v
        }

        /// How many CDCs (moves to offset 0, with the signal) we sent.
        fn cdcs(&self) -> usize {
            self.cdcs_signalled(true)
        }

        /// How many CDCs with (`sf`) or without the signal we sent.
        fn cdcs_signalled(&self, sf: bool) -> usize {
            let m = self.moves.lock().unwrap();
            m.iter()
                .filter(|&&(off, s, len)| off == 0 && s == sf && len == CDC_MSG_LEN)
                .count()
        }
    }

    /// A connection with our ring of `ring` bytes and the peer's of `peer_ring`; no-copy
    /// (the peer's DMB attached) or copy mode; non-blocking.
    fn setup(ring: u32, peer_ring: u32, nocopy: bool, wait: WaitMode) -> (Arc<Ops>, Conn) {
        setup_telling(false, ring, peer_ring, nocopy, wait)
    }

    /// As [`setup`], over a device that tells whether its interrupt is raised if `tells`.
    fn setup_telling(
        tells: bool,
        ring: u32,
        peer_ring: u32,
        nocopy: bool,
        wait: WaitMode,
    ) -> (Arc<Ops>, Conn) {
        let ops = Arc::new(Ops {
            mem: Mem {
                inner: FakeMemory::new(OUR_RMB, 0x2_0000),
                pending: Mutex::new(None),
            },
            refuse: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            now: AtomicBool::new(false),
            after_cdc: Mutex::new(None),
            moves: Mutex::new(Vec::new()),
            polls: AtomicU64::new(0),
            raised_known: AtomicBool::new(tells),
            polled_only: AtomicBool::new(wait == WaitMode::BusyPoll),
            besides: AtomicBool::new(true),
            acks: AtomicU64::new(0),
            polling_starts: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            released: Mutex::new(Vec::new()),
        });
        let rmb = Dmb {
            token: OUR_TOKEN,
            sba_idx: 7,
            len: RING_OFFSET + ring,
            addr: DevAddr(OUR_RMB),
            rgid: Gid(2),
            attached: false,
        };
        let peer = PeerInfo {
            gid: SmcdGid { gid: 2, gid_ext: 0 },
            token: PEER_TOKEN,
            dmbe_idx: PEER_DMBE,
            ring_len: peer_ring,
        };
        let attached = nocopy.then_some(Dmb {
            token: PEER_TOKEN,
            sba_idx: 9,
            len: RING_OFFSET + peer_ring,
            addr: DevAddr(PEER_RMB),
            rgid: Gid(1),
            attached: true,
        });
        let c = Conn::new(ops.clone(), rmb, peer, attached, wait);
        c.set_nonblocking(true);
        (ops, c)
    }

    /// Non-blocking, our ring 100 bytes, the peer's 60, copy mode with a 1 KiB send buffer.
    fn small() -> (Arc<Ops>, Conn) {
        setup(100, 60, false, WaitMode::BusyPoll)
    }

    fn none() -> ProdFlags {
        ProdFlags::empty()
    }

    fn open() -> ConnStateFlags {
        ConnStateFlags::empty()
    }

    fn kind<T: core::fmt::Debug>(r: io::Result<T>) -> Io {
        r.expect_err("an error").kind()
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn checked_diff_accepts_only_where_a_peer_can_be() {
        let c = Cursor::new;
        let d = |b, a| checked_diff(100, b, a);
        // Same wrap, not before; the next wrap, not past.
        assert_eq!(d(c(0, 10), c(0, 10)), Some(0));
        assert_eq!(d(c(0, 10), c(0, 30)), Some(20));
        assert_eq!(d(c(0, 30), c(1, 10)), Some(80));
        assert_eq!(d(c(0, 30), c(1, 30)), Some(100));
        assert_eq!(d(c(0, 99), c(0, 99)), Some(0));
        assert_eq!(d(c(u16::MAX, 50), c(0, 20)), Some(70));
        // Before, past a ring, a far wrap.
        assert_eq!(d(c(0, 30), c(0, 10)), None);
        assert_eq!(d(c(0, 30), c(1, 31)), None);
        assert_eq!(d(c(0, 30), c(2, 40)), None);
        assert_eq!(d(c(1, 30), c(0, 40)), None);
        // Counts at or past the ring's end, on either side.
        assert_eq!(d(c(0, 10), c(0, 100)), None);
        assert_eq!(d(c(0, 100), c(1, 50)), None);
        assert_eq!(d(c(0, 100), c(0, 100)), None);
    }

    #[test]
    fn stats_add_up_field_by_field() {
        let a = |k: u64| ConnStats {
            bytes_sent: k,
            bytes_received: k + 1,
            data_moves: k + 2,
            cdc_sent: k + 3,
            signals: k + 4,
            waits: k + 5,
            rechecks: k + 6,
            peer_buffer_full: k + 7,
            rmb_full: k + 8,
        };
        let mut s = a(3);
        s += a(10);
        assert_eq!(
            s,
            ConnStats {
                bytes_sent: 13,
                bytes_received: 15,
                data_moves: 17,
                cdc_sent: 19,
                signals: 21,
                waits: 23,
                rechecks: 25,
                peer_buffer_full: 27,
                rmb_full: 29,
            }
        );
    }

    #[test]
    fn accessors_and_settings() {
        within(|| {
            let (ops, c) = small();
            assert_eq!(c.rmb().token, OUR_TOKEN);
            assert_eq!(c.peer().token, PEER_TOKEN);
            assert_eq!(c.peer().ring_len, 60);
            assert_eq!(c.ring_len(), 100);
            assert!(!c.is_nocopy() && c.attached().is_none());
            assert!(c.is_nonblocking());
            c.set_nonblocking(false);
            assert!(!c.is_nonblocking());
            assert_eq!(c.timeouts_ms(), (0, 0));
            c.set_timeout_ms(7);
            assert_eq!(c.timeouts_ms(), (7, 7));
            c.set_read_timeout_ms(3);
            assert_eq!(c.timeouts_ms(), (3, 7));
            c.set_write_timeout_ms(5);
            assert_eq!(c.timeouts_ms(), (3, 5));
            let dbg = alloc::format!("{c:?}");
            assert!(
                dbg.starts_with("Conn {") && dbg.contains("nocopy: false"),
                "{dbg}"
            );
            assert!(!c.is_broken());
            c.release();
            assert_eq!(*ops.released.lock().unwrap(), [("unregister", OUR_TOKEN)]);

            let (ops, c) = setup(100, 60, true, WaitMode::BusyPoll);
            assert!(c.is_nocopy());
            assert_eq!(c.attached().map(|d| d.token), Some(PEER_TOKEN));
            assert!(alloc::format!("{c:?}").contains("nocopy: true"));
            c.release();
            assert_eq!(
                *ops.released.lock().unwrap(),
                [("detach", PEER_TOKEN), ("unregister", OUR_TOKEN)]
            );
        })
    }

    /// No-copy: `close` detaches the peer's DMB before its closing CDC goes out (a peer
    /// that sees the close may give that RMB to its next connection, whose attach must
    /// not find ours), once; a write after it fails without touching the peer's ring.
    /// The RMB of a connection closed cleanly is kept registered (for the link group);
    /// that of an aborted one, or one whose peer aborted, is unregistered.
    #[test]
    fn close_detaches_before_its_cdc_and_a_clean_close_keeps_the_rmb() {
        within(|| {
            let (ops, c) = setup(100, 60, true, WaitMode::BusyPoll);
            let at_cdc = Arc::new(Mutex::new(Vec::new()));
            let (o, seen) = (Arc::downgrade(&ops), at_cdc.clone());
            *ops.after_cdc.lock().unwrap() = Some(alloc::boxed::Box::new(move |_| {
                if let Some(o) = o.upgrade() {
                    seen.lock()
                        .unwrap()
                        .push(o.released.lock().unwrap().clone());
                }
            }));
            assert_eq!(c.write(&pattern(5, 1)).unwrap(), 5);
            c.close();
            let at_cdc = at_cdc.lock().unwrap().clone();
            assert_eq!(at_cdc.len(), 2, "the data CDC, then the closing one");
            assert!(at_cdc[0].is_empty(), "attached while sending");
            assert_eq!(
                at_cdc[1],
                [("detach", PEER_TOKEN)],
                "detached before the close"
            );
            assert_eq!(ops.our_cdc().prod, Cursor::new(0, 5));
            let before = ops.peer_ring(0, 10);
            assert!(c.write(&pattern(5, 2)).is_err());
            assert_eq!(
                ops.peer_ring(0, 10),
                before,
                "nothing written after the detach"
            );
            // The peer closes too: the RMB is kept, the peer's DMB not detached twice.
            ops.peer_says(
                &c,
                Cursor::new(0, 0),
                Cursor::new(0, 5),
                none(),
                ConnStateFlags::PEER_CONN_CLOSED,
            );
            assert_eq!(c.release_keeping_rmb().map(|d| d.token), Some(OUR_TOKEN));
            assert_eq!(*ops.released.lock().unwrap(), [("detach", PEER_TOKEN)]);

            // Aborted by us: given back.
            let (ops, c) = setup(100, 60, true, WaitMode::BusyPoll);
            c.abort();
            assert_eq!(c.release_keeping_rmb(), None);
            assert_eq!(
                *ops.released.lock().unwrap(),
                [("detach", PEER_TOKEN), ("unregister", OUR_TOKEN)]
            );
            // Closed by us after the peer's abort: given back too.
            let (ops, c) = small();
            ops.peer_says(
                &c,
                Cursor::new(0, 0),
                Cursor::new(0, 0),
                none(),
                ConnStateFlags::PEER_CONN_ABORT,
            );
            c.close();
            assert_eq!(c.release_keeping_rmb(), None);
            assert_eq!(*ops.released.lock().unwrap(), [("unregister", OUR_TOKEN)]);
        })
    }

    /// Writes in copy mode (`nocopy` false) or no-copy mode, through the peer's 60-byte ring:
    /// where the bytes land, what the CDCs say, when the writer is blocked.
    fn writes(nocopy: bool) {
        let (ops, c) = setup(100, 60, nocopy, WaitMode::BusyPoll);
        let totals = Arc::new(TrafficCounters::default());
        c.count_into(totals.clone());
        let other = Arc::new(TrafficCounters::default());
        c.count_into(other.clone());
        let c0 = Cursor::new(0, 0);
        let (a, b, d, e) = (
            pattern(25, 1),
            pattern(50, 2),
            pattern(30, 3),
            pattern(10, 4),
        );
        assert_eq!(c.write(&a).unwrap(), 25);
        assert_eq!(ops.peer_ring(0, 25), a);
        assert_eq!(ops.our_cdc().prod, Cursor::new(0, 25));
        assert_eq!(ops.our_cdc().prod_flags, none());
        if !nocopy {
            assert_eq!(*ops.moves.lock().unwrap(), [(32, false, 25), (0, true, 32)]);
        }
        // The peer consumed 20: 55 free, the write wraps at the ring's end.
        ops.peer_says(&c, c0, Cursor::new(0, 20), none(), open());
        assert_eq!(c.write(&b).unwrap(), 50);
        assert_eq!(ops.peer_ring(25, 35), b[..35]);
        assert_eq!(ops.peer_ring(0, 15), b[35..]);
        assert_eq!(ops.our_cdc().prod, Cursor::new(1, 15));
        if !nocopy {
            assert_eq!(
                ops.moves.lock().unwrap()[2..],
                [(57, false, 35), (32, false, 15), (0, true, 32)]
            );
        }
        // 5 free: a short count, and the peer is told once that we are blocked.
        assert_eq!(c.write(&d).unwrap(), 5);
        assert_eq!(ops.peer_ring(15, 5), d[..5]);
        let cdc = ops.our_cdc();
        assert_eq!(
            (cdc.prod, cdc.prod_flags),
            (Cursor::new(1, 20), ProdFlags::WRITE_BLOCKED)
        );
        assert_eq!(c.stats().peer_buffer_full, 1);
        let sent = ops.cdcs();
        assert_eq!(kind(c.write(&d)), Io::WouldBlock);
        assert_eq!((ops.cdcs(), c.stats().peer_buffer_full), (sent, 1));
        // The peer consumed everything: the next CDC no longer says blocked.
        ops.peer_says(&c, c0, Cursor::new(1, 20), none(), open());
        assert_eq!(c.write(&e).unwrap(), 10);
        assert_eq!(ops.peer_ring(20, 10), e);
        let cdc = ops.our_cdc();
        assert_eq!((cdc.prod, cdc.prod_flags), (Cursor::new(1, 30), none()));
        // Blocked again: counted again.
        assert_eq!(c.write(&pattern(60, 5)).unwrap(), 50);
        assert_eq!(ops.our_cdc().prod, Cursor::new(2, 20));
        let s = c.stats();
        assert_eq!(s.peer_buffer_full, 2);
        assert_eq!(s.bytes_sent, 25 + 50 + 5 + 10 + 50);
        assert_eq!(s.cdc_sent, ops.cdcs() as u64);
        assert_eq!(s.cdc_sent, 7);
        assert_eq!(s.data_moves, if nocopy { 0 } else { 7 });
        assert_eq!(s.signals, 2);
        assert_eq!(totals.snapshot(), s);
        assert_eq!(other.snapshot(), ConnStats::default());
    }

    #[test]
    fn writes_land_in_the_peers_ring_and_the_cdcs_announce_them() {
        within(|| writes(false));
    }

    #[test]
    fn nocopy_writes_land_in_the_peers_ring_and_the_cdcs_announce_them() {
        within(|| writes(true));
    }

    #[test]
    fn a_copy_mode_write_moves_the_callers_bytes_without_staging() {
        within(|| {
            // One data move per stretch of room (no send buffer cuts it), then the CDC.
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            let a = pattern(50, 9);
            assert_eq!(c.write(&a).unwrap(), 50);
            assert_eq!(ops.peer_ring(0, 50), a);
            assert_eq!(*ops.moves.lock().unwrap(), [(32, false, 50), (0, true, 32)]);
            assert_eq!(ops.our_cdc().prod, Cursor::new(0, 50));
        })
    }

    #[test]
    fn reads_take_what_the_peer_announced_across_the_ring_end() {
        within(|| {
            let (ops, c) = small();
            let c0 = Cursor::new(0, 0);
            let mut buf = [0u8; 100];
            assert_eq!(kind(c.read(&mut buf)), Io::WouldBlock);
            assert_eq!(c.available(), 0);
            assert_eq!(c.read(&mut []).unwrap(), 0);
            let x = pattern(70, 1);
            ops.peer_data(0, &x);
            ops.peer_says(&c, Cursor::new(0, 70), c0, none(), open());
            assert_eq!(c.available(), 70);
            assert_eq!(c.read(&mut buf[..50]).unwrap(), 50);
            assert_eq!(buf[..50], x[..50]);
            assert_eq!(c.available(), 20);
            assert_eq!(c.read(&mut buf).unwrap(), 20);
            assert_eq!(buf[..20], x[50..]);
            // 80 bytes from offset 70: wrapping at the ring's end.
            let y = pattern(80, 2);
            ops.peer_data(70, &y[..30]);
            ops.peer_data(0, &y[30..]);
            ops.peer_says(&c, Cursor::new(1, 50), c0, none(), open());
            assert_eq!(c.read(&mut buf).unwrap(), 80);
            assert_eq!(buf[..80], y[..]);
            assert_eq!(c.stats().rmb_full, 0);
            // A full ring: counted.
            let z = pattern(100, 3);
            ops.peer_data(50, &z[..50]);
            ops.peer_data(0, &z[50..]);
            ops.peer_says(&c, Cursor::new(2, 50), c0, none(), open());
            assert_eq!(c.available(), 100);
            assert_eq!(c.read(&mut buf).unwrap(), 100);
            assert_eq!(buf[..], z[..]);
            let s = c.stats();
            assert_eq!((s.rmb_full, s.bytes_received, s.signals), (1, 250, 3));
            assert_eq!(kind(c.read(&mut buf)), Io::WouldBlock);
            // A forged producer cursor (past a ring ahead) gives nothing.
            ops.peer_says(&c, Cursor::new(3, 60), c0, none(), open());
            assert_eq!(c.available(), 0);
            assert_eq!(kind(c.read(&mut buf)), Io::WouldBlock);
        })
    }

    /// A fresh connection (ring 100: update limit 10, half a ring 50) that has `prod` bytes
    /// from the peer, with the peer's flags; returns it after reading `first` bytes.
    fn after_reading(
        prod: u32,
        pf: ProdFlags,
        st: ConnStateFlags,
        first: usize,
    ) -> (Arc<Ops>, Conn) {
        let (ops, c) = small();
        ops.peer_data(0, &pattern(prod as usize, 7));
        ops.peer_says(&c, Cursor::new(0, prod), Cursor::new(0, 0), pf, st);
        let mut buf = vec![0u8; first];
        assert_eq!(c.read(&mut buf).unwrap(), first);
        (ops, c)
    }

    /// A connection whose device moves at once, with a peer bell that counts its rings
    /// (and keeps the last total it was given in `LAST_TOTAL`).
    fn with_peer_bell(nocopy: bool) -> (Arc<Ops>, Arc<Conn>, Arc<AtomicU64>) {
        let (ops, c) = setup(100, 60, nocopy, WaitMode::BusyPoll);
        ops.now.store(true, Ordering::Relaxed);
        let c = Arc::new(c);
        let rings = Arc::new(AtomicU64::new(0));
        let r = rings.clone();
        let w = Arc::downgrade(&c);
        let last = AtomicU64::new(0);
        assert!(c.set_peer_bell(alloc::boxed::Box::new(move |total| {
            r.fetch_add(1, Ordering::Relaxed);
            let c = w.upgrade().unwrap();
            assert_eq!(total, c.sent_total(), "the bell gets the total sent");
            assert!(
                total > last.swap(total, Ordering::Relaxed),
                "never told of the same bytes twice"
            );
            assert_eq!(
                ops_cdc_total(&c),
                total,
                "the CDC announcing it is in place first"
            );
            true
        })));
        assert!(
            !c.set_peer_bell(alloc::boxed::Box::new(|_| true)),
            "only once"
        );
        (ops, c, rings)
    }

    /// The producer count our CDC in the peer's RMB announces (the peer's ring is 60).
    fn ops_cdc_total(c: &Conn) -> u64 {
        let mut raw = [0u8; CDC_MSG_LEN];
        c.ops.memory().read(DevAddr(PEER_RMB), &mut raw).unwrap();
        let p = CdcMessage::parse(&raw).unwrap().prod;
        u64::from(p.wrap) * 60 + u64::from(p.count)
    }

    #[test]
    fn with_a_peer_bell_data_cdcs_go_unsignalled_and_ring_it() {
        within(|| {
            for nocopy in [false, true] {
                let (ops, c, rings) = with_peer_bell(nocopy);
                assert_eq!(c.write(&pattern(10, 1)).unwrap(), 10);
                assert_eq!(ops.our_cdc().prod, Cursor::new(0, 10), "the CDC is there");
                assert_eq!(ops.cdcs_signalled(false), 1);
                assert_eq!(ops.cdcs(), 0, "no signal");
                assert_eq!(rings.load(Ordering::Relaxed), 1, "the bell instead");
                // A device that cannot move now: the signal, and the bell all the same
                // (the peer's reader hears of data from the bell only).
                ops.now.store(false, Ordering::Relaxed);
                assert_eq!(c.write(&pattern(10, 2)).unwrap(), 10);
                assert_eq!((ops.cdcs(), rings.load(Ordering::Relaxed)), (1, 2));
                // Shutdown and close always go signalled, and ring nothing.
                ops.now.store(true, Ordering::Relaxed);
                c.shutdown_write().unwrap();
                c.close();
                assert_eq!((ops.cdcs(), rings.load(Ordering::Relaxed)), (3, 2));
                assert_eq!(ops.cdcs_signalled(false), 1);
            }
        })
    }

    #[test]
    fn a_peer_waiting_for_room_gets_its_cursor_update_signalled() {
        within(|| {
            // The peer said WRITE_BLOCKED: our data CDC (which carries our consumer cursor)
            // goes signalled, so that its interrupt path wakes its writer; its reader hears
            // of the data from the bell, as always.
            let (ops, c, rings) = with_peer_bell(false);
            let blocked = ProdFlags::WRITE_BLOCKED;
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 0), blocked, open());
            assert_eq!(c.write(&pattern(5, 1)).unwrap(), 5);
            assert_eq!((ops.cdcs(), ops.cdcs_signalled(false)), (1, 0));
            assert_eq!(rings.load(Ordering::Relaxed), 1);

            // The peer starts waiting while our unsignalled CDC is on its way (here: as the
            // device moves it): the look after it sees the flag, the CDC goes again,
            // signalled (for its writer), and the bell rings once (for its reader).
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            ops.now.store(true, Ordering::Relaxed);
            let c = Arc::new(c);
            let rings = Arc::new(AtomicU64::new(0));
            let r = rings.clone();
            assert!(c.set_peer_bell(alloc::boxed::Box::new(move |_| {
                r.fetch_add(1, Ordering::Relaxed);
                true
            })));
            let (o, w) = (Arc::downgrade(&ops), Arc::downgrade(&c));
            *ops.after_cdc.lock().unwrap() = Some(alloc::boxed::Box::new(move |signalled| {
                if let (false, Some(o), Some(c)) = (signalled, o.upgrade(), w.upgrade()) {
                    o.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 0), blocked, open());
                }
            }));
            assert_eq!(c.write(&pattern(5, 1)).unwrap(), 5);
            assert_eq!((ops.cdcs_signalled(false), ops.cdcs()), (1, 1));
            assert_eq!(rings.load(Ordering::Relaxed), 1, "told once, by the bell");
            assert_eq!(ops.our_cdc().prod, Cursor::new(0, 5));
        })
    }

    /// A connection whose device moves at once, with a peer bell that always rings and a
    /// room bell that counts its rings (the count).
    fn with_room_bells() -> (Arc<Ops>, Arc<Conn>, Arc<AtomicU64>) {
        let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
        ops.now.store(true, Ordering::Relaxed);
        let c = Arc::new(c);
        assert!(c.set_peer_bell(alloc::boxed::Box::new(|_| true)));
        let rooms = Arc::new(AtomicU64::new(0));
        let r = rooms.clone();
        assert!(c.set_room_bell(alloc::boxed::Box::new(move || {
            r.fetch_add(1, Ordering::Relaxed);
        })));
        (ops, c, rooms)
    }

    #[test]
    fn with_room_bells_room_and_the_wait_for_it_go_unsignalled() {
        within(|| {
            let (ops, c, rooms) = with_room_bells();
            assert!(!c.set_room_bell(alloc::boxed::Box::new(|| {})), "only once");
            let rooms = || rooms.load(Ordering::Relaxed);
            // The peer filled our ring of 100 and waits for room (its low-water mark: 50).
            ops.peer_data(0, &pattern(100, 7));
            let blocked = ProdFlags::WRITE_BLOCKED;
            ops.peer_says(&c, Cursor::new(1, 0), Cursor::new(0, 0), blocked, open());
            let mut buf = [0u8; 40];
            assert_eq!(c.read(&mut buf[..20]).unwrap(), 20);
            assert_eq!(
                (ops.cdcs(), ops.cdcs_signalled(false)),
                (0, 1),
                "unsignalled"
            );
            assert_eq!(ops.our_cdc().cons, Cursor::new(0, 20));
            assert_eq!(rooms(), 0, "20 free: below the peer's low-water mark");
            assert_eq!(c.read(&mut buf).unwrap(), 40);
            assert_eq!((ops.cdcs(), ops.cdcs_signalled(false)), (0, 2));
            assert_eq!(rooms(), 1, "60 free: the room bell, after the update");
            // A peer that asks for the update (its bell is owed) gets it signalled.
            let ask = ProdFlags::CONS_CURS_UPD_REQ;
            ops.peer_says(&c, Cursor::new(1, 0), Cursor::new(0, 0), ask, open());
            assert_eq!(c.read(&mut buf[..1]).unwrap(), 1);
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(rooms(), 1, "it did not say it waits for room");

            // Our writer fills the peer's ring of 60: it says it waits, unsignalled.
            ops.peer_says(&c, Cursor::new(1, 0), Cursor::new(0, 0), none(), open());
            assert_eq!(c.write(&pattern(60, 1)).unwrap(), 60);
            let quiet = ops.cdcs_signalled(false);
            assert!(c.say_waiting_for_room().unwrap());
            assert!(ops.our_cdc().prod_flags.contains(blocked));
            assert_eq!((ops.cdcs(), ops.cdcs_signalled(false)), (1, quiet + 1));
            assert_eq!(
                c.write_with(&[1], true).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            assert_eq!(ops.cdcs(), 1, "a full ring costs the peer no interrupt");
        })
    }

    #[test]
    fn every_cdc_of_ours_rings_the_room_bell_of_a_peer_that_waits() {
        within(|| {
            let (ops, c, rooms) = with_room_bells();
            // The peer filled our ring; we read 60 and update our cursor: it does not wait
            // yet, so nothing rings.
            ops.peer_data(0, &pattern(100, 7));
            ops.peer_says(&c, Cursor::new(1, 0), Cursor::new(0, 0), none(), open());
            assert_eq!(c.read(&mut [0u8; 60]).unwrap(), 60);
            // Our writer fills the peer's ring (its data CDC: the peer still does not wait).
            assert_eq!(c.write(&pattern(60, 1)).unwrap(), 60);
            assert_eq!(rooms.load(Ordering::Relaxed), 0);
            // Now the peer waits for room (60 free from its side, its mark is 50), and the
            // next CDC of ours is our writer's own WRITE_BLOCKED, not a cursor update: it
            // rings all the same (the cursor it carries may be the one the peer lacks).
            let blocked = ProdFlags::WRITE_BLOCKED;
            ops.peer_says(&c, Cursor::new(1, 0), Cursor::new(0, 0), blocked, open());
            assert!(c.say_waiting_for_room().unwrap());
            assert_eq!(rooms.load(Ordering::Relaxed), 1);
        })
    }

    #[test]
    fn totals_count_what_was_sent_received_and_read() {
        within(|| {
            let (ops, c) = small();
            assert_eq!(c.write(&pattern(7, 1)).unwrap(), 7);
            assert_eq!(c.sent_total(), 7);
            ops.peer_data(0, &pattern(20, 7));
            ops.peer_says(&c, Cursor::new(0, 20), Cursor::new(0, 0), none(), open());
            assert_eq!((c.received_total(), c.consumed_total()), (20, 0));
            assert_eq!(c.read(&mut [0u8; 5]).unwrap(), 5);
            assert_eq!((c.received_total(), c.consumed_total()), (20, 5));
        })
    }

    #[test]
    fn a_writer_about_to_wait_for_room_says_so_once() {
        within(|| {
            let (ops, c) = small();
            assert!(!c.say_waiting_for_room().unwrap(), "room in the ring");
            assert_eq!(c.write(&pattern(60, 1)).unwrap(), 60);
            let sent = ops.cdcs();
            assert!(c.say_waiting_for_room().unwrap());
            assert_eq!(ops.cdcs(), sent + 1, "signalled");
            assert!(ops.our_cdc().prod_flags.contains(ProdFlags::WRITE_BLOCKED));
            assert!(c.say_waiting_for_room().unwrap());
            assert_eq!(ops.cdcs(), sent + 1, "once per blocked spell");
            // The peer made room: no longer full; the next write clears the flag.
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(1, 0), none(), open());
            assert!(!c.say_waiting_for_room().unwrap());
            assert_eq!(c.write(&pattern(1, 2)).unwrap(), 1);
            assert!(!ops.our_cdc().prod_flags.contains(ProdFlags::WRITE_BLOCKED));
        })
    }

    /// A peer bell on `c` that fails while the returned flag is set (it starts set) and
    /// records the totals it was given.
    #[allow(clippy::type_complexity)]
    fn full_bell(c: &Arc<Conn>) -> (Arc<AtomicBool>, Arc<Mutex<Vec<u64>>>) {
        let full = Arc::new(AtomicBool::new(true));
        let told = Arc::new(Mutex::new(Vec::new()));
        let (f, t) = (full.clone(), told.clone());
        assert!(c.set_peer_bell(alloc::boxed::Box::new(move |total| {
            if f.load(Ordering::Relaxed) {
                return false;
            }
            t.lock().unwrap().push(total);
            true
        })));
        (full, told)
    }

    #[test]
    fn a_bell_that_cannot_ring_is_owed_until_the_peers_cursor_update_or_the_next_data() {
        within(|| {
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            ops.now.store(true, Ordering::Relaxed);
            let c = Arc::new(c);
            let (full, told) = full_bell(&c);
            let ask = ProdFlags::CONS_CURS_UPD_REQ;
            assert_eq!(c.write(&pattern(10, 1)).unwrap(), 10);
            // Unsignalled first; then, owed, a signalled CDC asking for the peer's
            // consumer-cursor update.
            assert_eq!((ops.cdcs_signalled(false), ops.cdcs()), (1, 1));
            assert!(ops.our_cdc().prod_flags.contains(ask));
            assert_eq!(ops.our_cdc().prod, Cursor::new(0, 10));
            // Still owed at the next data: asked once, not per write.
            assert_eq!(c.write(&pattern(5, 2)).unwrap(), 5);
            assert_eq!(ops.cdcs(), 2, "the retry's signalled CDC");
            assert!(told.lock().unwrap().is_empty());
            // The peer read and updated its cursor (signalled, as asked): the bell rings
            // with everything sent, and the request goes with our next CDC.
            full.store(false, Ordering::Relaxed);
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 15), none(), open());
            assert_eq!(*told.lock().unwrap(), vec![15]);
            assert_eq!(c.write(&pattern(1, 3)).unwrap(), 1);
            assert!(!ops.our_cdc().prod_flags.contains(ask));
            assert_eq!(*told.lock().unwrap(), vec![15, 16]);
            // Owed again, then paid by the next data (no cursor update needed).
            full.store(true, Ordering::Relaxed);
            assert_eq!(c.write(&pattern(1, 4)).unwrap(), 1);
            assert!(ops.our_cdc().prod_flags.contains(ask));
            full.store(false, Ordering::Relaxed);
            assert_eq!(c.write(&pattern(1, 5)).unwrap(), 1);
            assert_eq!(*told.lock().unwrap(), vec![15, 16, 18]);
            assert_eq!(c.write(&pattern(1, 6)).unwrap(), 1);
            assert!(!ops.our_cdc().prod_flags.contains(ask));
        })
    }

    #[test]
    fn an_owed_ring_tells_only_of_bytes_whose_cdc_is_in_place() {
        within(|| {
            // A ring owed, paid on the interrupt path while a writer has put bytes into
            // the peer's ring whose CDC is still to go (the producer count ran ahead):
            // the ring tells of what the CDC in place says, not of those bytes, which
            // the peer's reader could not see yet ("readable", then `EAGAIN`).
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            ops.now.store(true, Ordering::Relaxed);
            let c = Arc::new(c);
            let (full, told) = full_bell(&c);
            assert_eq!(c.write(&pattern(10, 1)).unwrap(), 10);
            assert_eq!(ops.our_cdc().prod, Cursor::new(0, 10));
            // A writer between its copy into the peer's ring and its CDC.
            c.prod.fetch_add(5, Ordering::AcqRel);
            full.store(false, Ordering::Relaxed);
            // The peer's cursor update (signalled, as asked) pays the ring: its own CDC
            // goes first, carrying the 15, so 15 may be told; without that CDC only 10.
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 10), none(), open());
            let said = ops.our_cdc().prod;
            let rung = told.lock().unwrap().clone();
            assert_eq!(rung.len(), 1, "{rung:?}");
            assert!(
                rung[0] <= u64::from(said.count),
                "rang {} with a CDC in place of {said:?}",
                rung[0]
            );
        })
    }

    #[test]
    fn a_ring_paid_on_one_path_is_not_rung_again_on_another() {
        within(|| {
            // The bell fails once; as the connection asks the peer for its cursor update
            // (the signalled CDC), the peer's signal comes in and the interrupt path pays
            // the ring: the writer's own retry then has nothing left to tell.
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            ops.now.store(true, Ordering::Relaxed);
            let c = Arc::new(c);
            let told = Arc::new(Mutex::new(Vec::new()));
            let fail_once = Arc::new(AtomicBool::new(true));
            let (t, f) = (told.clone(), fail_once.clone());
            assert!(c.set_peer_bell(alloc::boxed::Box::new(move |total| {
                if f.swap(false, Ordering::Relaxed) {
                    return false;
                }
                t.lock().unwrap().push(total);
                true
            })));
            let seen = Arc::new(AtomicU64::new(0));
            let (w, k) = (Arc::downgrade(&c), seen.clone());
            *ops.after_cdc.lock().unwrap() = Some(alloc::boxed::Box::new(move |signalled| {
                if signalled && k.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Some(c) = w.upgrade() {
                        c.on_signal();
                    }
                }
            }));
            assert_eq!(c.write(&pattern(10, 1)).unwrap(), 10);
            assert_eq!(*told.lock().unwrap(), vec![10], "told once");
            // The request went with the signalled CDC; the next CDC clears it.
            let ask = ProdFlags::CONS_CURS_UPD_REQ;
            assert!(ops.our_cdc().prod_flags.contains(ask));
            assert_eq!(c.write(&pattern(1, 2)).unwrap(), 1);
            assert!(!ops.our_cdc().prod_flags.contains(ask));
            assert_eq!(*told.lock().unwrap(), vec![10, 11]);
        })
    }

    #[test]
    fn a_consumer_update_nobody_waits_for_goes_unsignalled_without_the_bell() {
        within(|| {
            // As `consumer_updates_as_linux_smc_tx_consumer_update`'s first case: the peer
            // has 40 free and is not blocked.
            let (ops, c, rings) = with_peer_bell(false);
            ops.peer_data(0, &pattern(60, 7));
            ops.peer_says(&c, Cursor::new(0, 60), Cursor::new(0, 0), none(), open());
            assert_eq!(c.read(&mut [0u8; 11]).unwrap(), 11);
            assert_eq!((ops.cdcs(), ops.cdcs_signalled(false)), (0, 1));
            assert_eq!(ops.our_cdc().cons, Cursor::new(0, 11));
            assert_eq!(rings.load(Ordering::Relaxed), 0, "no new data for the peer");
            // Asked for: signalled.
            let ask = ProdFlags::CONS_CURS_UPD_REQ;
            ops.peer_says(&c, Cursor::new(0, 60), Cursor::new(0, 0), ask, open());
            assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 1);
            assert_eq!(ops.cdcs(), 1);
        })
    }

    #[test]
    fn consumer_updates_as_linux_smc_tx_consumer_update() {
        within(|| {
            // The peer has 40 free (at most half a ring): an update once more than 10 bytes
            // (a tenth of the ring) were consumed since the last one.
            let (ops, c) = after_reading(60, none(), open(), 10);
            assert_eq!(ops.cdcs(), 0);
            assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 1);
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(ops.our_cdc().cons, Cursor::new(0, 11));
            assert_eq!(c.read(&mut [0u8; 10]).unwrap(), 10);
            assert_eq!(ops.cdcs(), 1);
            // The peer has 80 free and is not blocked: no update.
            let (ops, _c) = after_reading(20, none(), open(), 11);
            assert_eq!(ops.cdcs(), 0);
            let (ops, _c) = after_reading(20, none(), open(), 20);
            assert_eq!(ops.cdcs(), 0);
            // ... unless it is blocked.
            let (ops, _c) = after_reading(20, ProdFlags::WRITE_BLOCKED, open(), 11);
            assert_eq!((ops.cdcs(), ops.our_cdc().cons), (1, Cursor::new(0, 11)));
            let (ops, _c) = after_reading(20, ProdFlags::WRITE_BLOCKED, open(), 10);
            assert_eq!(ops.cdcs(), 0);
            // Asked for: after every read.
            let (ops, _c) = after_reading(5, ProdFlags::CONS_CURS_UPD_REQ, open(), 1);
            assert_eq!((ops.cdcs(), ops.our_cdc().cons), (1, Cursor::new(0, 1)));
            // Nobody to tell once the peer closed (asked or not); the data is still read.
            let gone = [
                ConnStateFlags::PEER_CONN_CLOSED,
                ConnStateFlags::PEER_CONN_ABORT,
            ];
            for st in gone {
                let (ops, _c) = after_reading(60, ProdFlags::CONS_CURS_UPD_REQ, st, 60);
                assert_eq!(ops.cdcs(), 0);
            }
        })
    }

    #[test]
    fn a_close_with_unread_data_is_an_abort_as_linux_smc_close_final() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let (closed, abort) = (
                ConnStateFlags::PEER_CONN_CLOSED,
                ConnStateFlags::PEER_CONN_ABORT,
            );
            // Data left unread: the peer is told of an abort.
            let (ops, c) = small();
            ops.peer_data(0, &[1, 2, 3]);
            ops.peer_says(&c, Cursor::new(0, 3), c0, none(), open());
            c.close();
            let st = ops.our_cdc().conn_state;
            assert!(st.contains(abort) && !st.contains(closed), "{st:?}");
            // Everything read: a clean close.
            let (ops, c) = small();
            ops.peer_data(0, &[1, 2, 3]);
            ops.peer_says(&c, Cursor::new(0, 3), c0, none(), open());
            assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 3);
            c.close();
            let st = ops.our_cdc().conn_state;
            assert!(st.contains(closed) && !st.contains(abort), "{st:?}");
        })
    }

    #[test]
    fn the_peers_end_of_writing_or_close_is_end_of_stream_after_the_data() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let mut buf = [0u8; 10];
            for st in [
                ConnStateFlags::PEER_DONE_WRITING,
                ConnStateFlags::PEER_CONN_CLOSED,
            ] {
                let (ops, c) = small();
                ops.peer_data(0, &[1, 2, 3, 4, 5]);
                ops.peer_says(&c, Cursor::new(0, 5), c0, none(), st);
                assert_eq!(c.read(&mut buf).unwrap(), 5);
                assert_eq!(buf[..5], [1, 2, 3, 4, 5]);
                assert_eq!(c.read(&mut buf).unwrap(), 0);
                assert!(!c.is_broken());
                // Our writing side is shut by the peer's close only.
                let w = c.write(b"x");
                if st == ConnStateFlags::PEER_CONN_CLOSED {
                    assert_eq!(kind(w), Io::ConnectionReset);
                } else {
                    assert_eq!(w.unwrap(), 1);
                }
            }
        })
    }

    /// The peer's last bytes and its close arrive in one CDC while we read: wherever it
    /// lands between our loads of the CDC area, we read every byte before the end of
    /// stream. (Loading the producer word before the flags word lost the last bytes when
    /// the CDC landed between the two: the soak's one silent loss.)
    #[test]
    fn a_close_landing_while_the_cdc_is_read_never_hides_the_last_bytes() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let data = pattern(20, 7);
            let last = CdcMessage {
                prod: Cursor::new(0, 20),
                cons: c0,
                prod_flags: none(),
                conn_state: ConnStateFlags::PEER_CONN_CLOSED,
            };
            for before in 0..16 {
                let (ops, c) = small();
                ops.peer_data(0, &data);
                ops.peer_says(&c, Cursor::new(0, 10), c0, none(), open());
                *ops.mem.pending.lock().unwrap() = Some((last.emit(), before));
                let mut got = Vec::new();
                let mut buf = [0u8; 8];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == Io::WouldBlock => {}
                        Err(e) => panic!("landing before access {before}: {e}"),
                    }
                }
                assert_eq!(got, data, "the CDC landed before access {before}");
            }
        })
    }

    #[test]
    fn shutdowns_and_close_end_their_side_and_tell_the_peer_once() {
        within(|| {
            let mut buf = [0u8; 10];
            // Reading side: end of stream at once; writing still works, the peer is not told.
            let (ops, c) = small();
            c.shutdown_read();
            assert_eq!(c.read(&mut buf).unwrap(), 0);
            assert_eq!(c.write(b"abc").unwrap(), 3);
            assert_eq!(ops.our_cdc().conn_state, open());
            // Writing side: the peer is told once; reading still works.
            let (ops, c) = small();
            c.shutdown_write().unwrap();
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(ops.our_cdc().conn_state, ConnStateFlags::PEER_DONE_WRITING);
            assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe);
            c.shutdown_write().unwrap();
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(kind(c.read(&mut buf)), Io::WouldBlock);
            ops.peer_data(0, b"hi");
            ops.peer_says(&c, Cursor::new(0, 2), Cursor::new(0, 0), none(), open());
            assert_eq!(c.read(&mut buf).unwrap(), 2);
            // Close: both sides, the peer told once.
            let (ops, c) = small();
            c.close();
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(ops.our_cdc().conn_state, ConnStateFlags::PEER_CONN_CLOSED);
            assert_eq!(c.read(&mut buf).unwrap(), 0);
            assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe);
            c.close();
            assert_eq!(ops.cdcs(), 1);
            assert!(!c.is_broken());
            // A shutdown CDC the device refuses: an error, and the connection is broken.
            let (ops, c) = small();
            ops.refuse.store(true, Ordering::Relaxed);
            assert_eq!(kind(c.shutdown_write()), Io::BrokenPipe);
            assert!(c.is_broken());
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
        })
    }

    #[test]
    fn a_peer_that_exits_ends_the_connection_as_tcp_would_if_asked() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let mut buf = [0u8; 10];
            // The peer sent 4 bytes and read all we sent (nothing), then its function went
            // away: as its TCP socket closed by the kernel, the bytes, then end of stream;
            // writes fail with ConnectionReset (as Linux's SMC after a close); nothing is sent.
            let (ops, c) = small();
            c.set_peer_exit_like_tcp(true);
            ops.peer_data(0, b"last");
            ops.peer_says(&c, Cursor::new(0, 4), c0, none(), open());
            ops.gone.store(true, Ordering::Relaxed);
            c.peer_function_gone();
            assert!(c.peer_done() && c.read_ready() && c.write_ready());
            assert!(!c.is_broken());
            assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            assert_eq!(c.read(&mut buf).unwrap(), 4);
            assert_eq!(c.read(&mut buf).unwrap(), 0);
            assert_eq!(c.read(&mut buf).unwrap(), 0, "for good");
            c.close();
            assert_eq!(ops.cdcs(), 0, "nobody to tell");
            // Without the option (Linux's SMC-D: the loss of a system): a reset after
            // the bytes.
            let (ops, c) = small();
            ops.peer_data(0, b"last");
            ops.peer_says(&c, Cursor::new(0, 4), c0, none(), open());
            c.peer_function_gone();
            assert_eq!(c.read(&mut buf).unwrap(), 4);
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            // With the option, but the peer had not read all we sent: a reset, as TCP's
            // for data a closed socket had not read.
            let (ops, c) = small();
            c.set_peer_exit_like_tcp(true);
            assert_eq!(c.write(b"unread").unwrap(), 6);
            ops.gone.store(true, Ordering::Relaxed);
            c.peer_function_gone();
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            // It had read them and said so (its cursor update): end of stream.
            let (ops, c) = small();
            c.set_peer_exit_like_tcp(true);
            assert_eq!(c.write(b"read").unwrap(), 4);
            ops.peer_says(&c, c0, Cursor::new(0, 4), none(), open());
            c.peer_function_gone();
            assert_eq!(c.read(&mut buf).unwrap(), 0);
        });
    }

    #[test]
    fn a_move_refused_because_the_peer_exited_ends_as_its_event_would() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let mut buf = [0u8; 10];
            // The peer's DMB and GID are gone before the device's event came: our write's
            // move is refused, the device no longer knows the peer: its exit (BrokenPipe,
            // then its bytes and end of stream), not a failure of ours.
            let (ops, c) = small();
            c.set_peer_exit_like_tcp(true);
            ops.peer_data(0, b"bye");
            ops.peer_says(&c, Cursor::new(0, 3), c0, none(), open());
            ops.refuse.store(true, Ordering::Relaxed);
            ops.gone.store(true, Ordering::Relaxed);
            assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe);
            assert!(!c.is_broken());
            assert_eq!(c.read(&mut buf).unwrap(), 3);
            assert_eq!(c.read(&mut buf).unwrap(), 0);
            // The event that follows changes nothing.
            c.peer_function_gone();
            assert_eq!(c.read(&mut buf).unwrap(), 0);
            // The same refusal while the device still knows the peer (it unregistered the
            // DMB, or a forged token): the connection fails, as without the option.
            let (ops, c) = small();
            c.set_peer_exit_like_tcp(true);
            ops.refuse.store(true, Ordering::Relaxed);
            assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe);
            assert!(c.is_broken());
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            // Without the option, the refusal fails the connection whatever the device
            // knows.
            let (ops, c) = small();
            ops.refuse.store(true, Ordering::Relaxed);
            ops.gone.store(true, Ordering::Relaxed);
            assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe);
            assert!(c.is_broken());
        });
    }

    #[test]
    fn aborts_and_terminations_are_resets() {
        within(|| {
            let c0 = Cursor::new(0, 0);
            let mut buf = [0u8; 10];
            // The peer aborts: pending data first, then a reset; writes fail at once.
            let (ops, c) = small();
            ops.peer_data(0, b"last");
            ops.peer_says(
                &c,
                Cursor::new(0, 4),
                c0,
                none(),
                ConnStateFlags::PEER_CONN_ABORT,
            );
            assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            assert_eq!(c.read(&mut buf).unwrap(), 4);
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            // A peer abort also wins over its end of writing.
            let st = ConnStateFlags::PEER_CONN_ABORT | ConnStateFlags::PEER_DONE_WRITING;
            ops.peer_says(&c, Cursor::new(0, 4), c0, none(), st);
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            assert_eq!(ops.cdcs(), 0);
            // We abort: the peer is told once; our readers and writers fail.
            let (ops, c) = small();
            c.abort();
            assert!(c.is_broken());
            assert_eq!(ops.cdcs(), 1);
            assert_eq!(ops.our_cdc().conn_state, ConnStateFlags::PEER_CONN_ABORT);
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            c.abort();
            c.close();
            assert_eq!(ops.cdcs(), 1);
            // Terminated (link group gone): data already there is still read, then resets;
            // nothing is sent any more.
            let (ops, c) = small();
            ops.peer_data(0, b"ab");
            ops.peer_says(
                &c,
                Cursor::new(0, 2),
                c0,
                ProdFlags::CONS_CURS_UPD_REQ,
                open(),
            );
            c.terminate();
            assert!(c.is_broken());
            assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            assert_eq!(c.read(&mut buf).unwrap(), 2);
            assert_eq!(kind(c.read(&mut buf)), Io::ConnectionReset);
            let sent = ops.cdcs();
            c.shutdown_write().unwrap();
            c.close();
            c.abort();
            assert_eq!(ops.cdcs(), sent);
            assert_eq!(ops.our_cdc().conn_state, open());
        })
    }

    #[test]
    fn a_refused_move_sends_nothing_and_breaks_the_connection() {
        within(|| {
            for nocopy in [false, true] {
                let (ops, c) = setup(100, 60, nocopy, WaitMode::BusyPoll);
                ops.refuse.store(true, Ordering::Relaxed);
                assert_eq!(kind(c.write(b"abc")), Io::BrokenPipe, "nocopy {nocopy}");
                assert!(c.is_broken());
                assert_eq!(c.stats().bytes_sent, 0);
                assert_eq!(kind(c.write(b"abc")), Io::ConnectionReset);
            }
        })
    }

    #[test]
    fn after_a_refused_move_close_and_abort_try_once_to_tell_the_peer() {
        within(|| {
            let flags = |ops: &Ops| ops.our_cdc().conn_state;
            for how in ["close", "abort", "both"] {
                // A reader's consumer update the device refuses: the peer's writer would
                // wait for it forever unless our close tells it of the abort.
                let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
                ops.refuse.store(true, Ordering::Relaxed);
                assert_eq!(kind(c.shutdown_write()), Io::BrokenPipe);
                assert!(c.is_broken());
                assert_eq!(ops.cdcs(), 1, "{how}: the refused one");
                ops.refuse.store(false, Ordering::Relaxed);
                match how {
                    "close" => c.close(),
                    "abort" => c.abort(),
                    _ => {
                        c.close();
                        c.abort();
                        c.close();
                    }
                }
                assert_eq!(ops.cdcs(), 2, "{how}: told once");
                assert!(
                    flags(&ops).contains(ConnStateFlags::PEER_CONN_ABORT),
                    "{how}: {:?}",
                    flags(&ops)
                );
            }
            // Terminated by the stack (link group gone, peer function down): nothing to tell.
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            c.terminate();
            c.close();
            c.abort();
            assert_eq!(ops.cdcs(), 0);
        })
    }

    #[test]
    fn a_writer_blocked_on_a_peer_that_is_gone_gets_an_error() {
        within(|| {
            // The peer's ring is full and the peer says nothing more; then its RMB goes away
            // (the device refuses moves to it) without a CDC that reached us.
            let (ops, c) = setup(100, 60, false, WaitMode::Blocking(Duration::ZERO));
            c.set_nonblocking(false);
            assert_eq!(c.write(&[0u8; 60]).unwrap(), 60);
            c.set_write_timeout_ms(30);
            assert_eq!(kind(c.write(b"x")), Io::TimedOut);
            let cdcs = ops.cdcs();
            ops.refuse.store(true, Ordering::Relaxed);
            // No time limit: only the probe can end this wait.
            c.set_write_timeout_ms(0);
            let start = Instant::now();
            assert_eq!(kind(c.write(b"x")), Io::BrokenPipe);
            let took = start.elapsed();
            assert!(took >= RECHECK * PROBE_EVERY, "{took:?}");
            assert!(c.is_broken());
            assert_eq!(ops.cdcs(), cdcs + 1, "one probe");
        })
    }

    #[test]
    fn a_write_after_the_peers_close_is_a_reset_even_if_its_rmb_is_gone() {
        within(|| {
            // The peer closed; then our connection broke (a move into the RMB the peer gave
            // back was refused, or the link group went down): the close still decides.
            let closed = ConnStateFlags::PEER_CONN_CLOSED;
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 0), none(), closed);
            c.terminate();
            assert_eq!(kind(c.write(b"x")), Io::ConnectionReset);
            // Our own abort, or the peer's, is a reset whatever else happened.
            c.abort();
            assert_eq!(kind(c.write(b"x")), Io::ConnectionReset);
        })
    }

    #[test]
    fn blocking_waits_end_at_their_time_limit_and_re_read_the_cursors_meanwhile() {
        within(|| {
            // Blocking without a spin phase: the device is never polled.
            let (ops, c) = setup(100, 60, false, WaitMode::Blocking(Duration::ZERO));
            c.set_nonblocking(false);
            c.set_read_timeout_ms(200);
            let start = Instant::now();
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(200), "{took:?}");
            let s = c.stats();
            // One re-read per RECHECK (20 ms) at most, the last wait ends at the limit.
            assert!(s.waits >= 1 && s.waits == s.rechecks + 1, "{s:?}");
            assert!(s.rechecks <= 10, "{s:?}");
            assert_eq!(ops.polls.load(Ordering::Relaxed), 0);
            // A full peer ring: the writer waits until its own limit.
            assert_eq!(c.write(&[0u8; 60]).unwrap(), 60);
            c.set_write_timeout_ms(50);
            let start = Instant::now();
            assert_eq!(kind(c.write(b"x")), Io::TimedOut);
            assert!(start.elapsed() >= Duration::from_millis(50));
            // Busy-polling waits poll the device.
            c.set_busy_poll(true);
            c.set_read_timeout_ms(30);
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            assert!(ops.polls.load(Ordering::Relaxed) > 0);
        })
    }

    #[test]
    fn a_blocked_reader_without_a_time_limit_gets_the_data_when_it_comes() {
        within(|| {
            let (ops, c) = setup(100, 60, false, WaitMode::Blocking(Duration::ZERO));
            let c = Arc::new(c);
            c.set_nonblocking(false);
            let peer = {
                let (ops, c) = (ops.clone(), c.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(30));
                    ops.peer_data(0, b"late");
                    ops.peer_says(&c, Cursor::new(0, 4), Cursor::new(0, 0), none(), open());
                })
            };
            let mut buf = [0u8; 10];
            assert_eq!(c.read(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"late");
            peer.join().unwrap();
        })
    }

    #[test]
    fn a_polling_waiter_ends_when_the_peers_cdc_lands_before_its_signal() {
        within(|| {
            // The fake device never runs a handler from `poll_irq`: only the CDC in our RMB
            // can end the wait before its RECHECK slice.
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            let c = Arc::new(c);
            c.set_nonblocking(false);
            // The peer writes each CDC once a wait of ours polls: it started polling after
            // it loaded the CDC it watches (a CDC written before that load is for the
            // signal to tell, and this device gives none). A peer that does not run for a
            // whole slice (a loaded machine) costs re-waits, counted as rechecks.
            let polls_from = |ops: &Ops, n: u64| {
                while ops.polling_starts.load(Ordering::SeqCst) < n {
                    std::thread::yield_now();
                }
            };
            // The polling starts of the read's waits, set once the read is over.
            let read_starts = Arc::new(AtomicU64::new(u64::MAX));
            let peer = {
                let (ops, c, read_starts) = (ops.clone(), c.clone(), read_starts.clone());
                std::thread::spawn(move || {
                    polls_from(&ops, 1);
                    ops.peer_data(0, b"early");
                    let m = CdcMessage {
                        prod: Cursor::new(0, 5),
                        ..CdcMessage::default()
                    };
                    ops.mem.write(DevAddr(OUR_RMB), &m.emit()).unwrap();
                    // Then room, once our writer found the peer's ring of 60 full and waits
                    // for it (room any earlier would tell of bytes not yet written).
                    while c.stats().peer_buffer_full == 0 {
                        std::thread::yield_now();
                    }
                    polls_from(&ops, read_starts.load(Ordering::SeqCst) + 1);
                    let m = CdcMessage {
                        prod: Cursor::new(0, 5),
                        cons: Cursor::new(1, 0),
                        ..CdcMessage::default()
                    };
                    ops.mem.write(DevAddr(OUR_RMB), &m.emit()).unwrap();
                })
            };
            let mut buf = [0u8; 10];
            assert_eq!(c.read(&mut buf).unwrap(), 5);
            assert_eq!(&buf[..5], b"early");
            read_starts.store(ops.polling_starts.load(Ordering::SeqCst), Ordering::SeqCst);
            assert_eq!(c.write(&[1u8; 60]).unwrap(), 60);
            assert_eq!(c.write(b"more").unwrap(), 4);
            peer.join().unwrap();
            let s = c.stats();
            assert_eq!(s.signals, 0, "{s:?}");
            // The wait during which each CDC landed ended on it, not on its slice (a watch
            // that missed them would end every wait on its slice: waits == rechecks).
            assert_eq!(s.waits, s.rechecks + 2, "a wait ran out its slice: {s:?}");
        })
    }

    /// A watching waiter whose peer's CDC lands soon leaves its device's signals alone
    /// (the one of that CDC is for it, and taking it writes lines the peer's device
    /// writes next); one whose CDC stays still takes them after [`SIGNAL_DEFER`].
    #[test]
    fn a_polling_waiter_leaves_the_signal_of_a_cdc_it_saw_for_later() {
        within(|| {
            let cdc = CdcMessage {
                prod: Cursor::new(0, 5),
                ..CdcMessage::default()
            };
            // Wherever in the read's looks the CDC lands: the read's own check, the
            // wait's first look, or some looks into the wait (two loads a look; before,
            // the device was polled at every look that found the CDC still).
            for before in 0..24 {
                let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
                c.set_nonblocking(false);
                c.set_read_timeout_ms(1000);
                ops.peer_data(0, b"early");
                *ops.mem.pending.lock().unwrap() = Some((cdc.emit(), before));
                let mut buf = [0u8; 10];
                assert_eq!(
                    c.read(&mut buf).unwrap(),
                    5,
                    "landing before access {before}"
                );
                assert_eq!(&buf[..5], b"early");
                // A CDC that landed before the wait's own first look is not the watch's to
                // see: its signal ends the wait (this fake never gives one: the slice does).
                let unseen = c.stats().rechecks > 0;
                let polls = ops.polls.load(Ordering::Relaxed);
                assert!(
                    unseen || polls == 0,
                    "polled {polls} times: landing before access {before}"
                );
            }
            // Nothing lands: the waiter polls the device once its deferral is over.
            let (ops, c) = setup(100, 60, false, WaitMode::BusyPoll);
            c.set_nonblocking(false);
            c.set_read_timeout_ms(5);
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            assert!(ops.polls.load(Ordering::Relaxed) > 0);
        })
    }

    /// A waiter that spins before it sleeps, on a device that tells whether its
    /// interrupt is raised, ends on the peer's CDC too; after it stopped polling it takes
    /// the interrupt and leaves the signal when nothing else is pending, and runs the
    /// handler itself when something is. On a device that cannot tell, it polls as before.
    #[test]
    fn a_spinning_waiter_leaves_only_its_own_signal_pending() {
        within(|| {
            let cdc = CdcMessage {
                prod: Cursor::new(0, 5),
                ..CdcMessage::default()
            };
            // (tells, something else pending) -> (acks, the handler run after leaving)
            for (tells, besides) in [(true, false), (true, true), (false, false)] {
                let spin = WaitMode::Blocking(Duration::from_millis(50));
                let (ops, c) = setup_telling(tells, 100, 60, false, spin);
                ops.besides.store(besides, Ordering::Relaxed);
                c.set_nonblocking(false);
                c.set_read_timeout_ms(1000);
                ops.peer_data(0, b"early");
                // Some looks into the wait (the read's check and the wait's own first
                // look take two loads each).
                *ops.mem.pending.lock().unwrap() = Some((cdc.emit(), 8));
                let mut buf = [0u8; 10];
                assert_eq!(c.read(&mut buf).unwrap(), 5, "{tells} {besides}");
                assert_eq!(&buf[..5], b"early");
                let (acks, polls) = (
                    ops.acks.load(Ordering::Relaxed),
                    ops.polls.load(Ordering::Relaxed),
                );
                let s = c.stats();
                // In this order: stop polling (its fence), take the interrupt, look.
                let log = ops.log.lock().unwrap().clone();
                let tail = &log[log.iter().rposition(|&e| e == "on").unwrap() + 1..];
                match (tells, besides) {
                    (true, false) => {
                        assert_eq!((acks, polls), (1, 0), "left pending");
                        assert_eq!(tail, ["off", "ack", "besides"]);
                    }
                    (true, true) => {
                        assert_eq!((acks, polls), (1, 1), "the handler ran");
                        assert_eq!(tail, ["off", "ack", "besides", "poll"]);
                    }
                    // Only the signal (never given here) or the slice ends its wait.
                    _ => assert!(acks == 0 && polls > 0, "as before: {acks} {polls}"),
                }
                if tells {
                    assert_eq!(s.rechecks, 0, "the wait ran out its slice: {s:?}");
                }
            }
        })
    }

    /// A poller's last look, after it stopped polling, is the one that runs whoever holds
    /// the poll claim (`SmcdOps::poll_irq_last`): before a sleep, and at the end of a
    /// busy-poll wait on a device with an interrupt thread (a raise while it polled woke
    /// no one). On a device only pollers serve, a connection made to block busy-polls.
    #[test]
    fn a_poller_that_stops_takes_the_work_whoever_holds_the_claim() {
        within(|| {
            let tail = |ops: &Ops| {
                let log = ops.log.lock().unwrap().clone();
                let off = log.iter().rposition(|&e| e == "off").expect("stopped");
                log[off..].to_vec()
            };
            // Spinning before a sleep; nothing comes.
            let spin = WaitMode::Blocking(Duration::from_millis(2));
            let (ops, c) = setup(100, 60, false, spin);
            c.set_nonblocking(false);
            c.set_read_timeout_ms(30);
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            assert_eq!(tail(&ops)[..2], ["off", "last"]);
            // Busy-polling, an interrupt thread there.
            let (ops, c) = setup(100, 60, false, spin);
            c.set_busy_poll(true);
            c.set_nonblocking(false);
            c.set_read_timeout_ms(5);
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            assert_eq!(tail(&ops)[..2], ["off", "last"]);
            // Spinning with a watcher (whose readiness the handler reports), woken by
            // someone else's notice while it spins: it stopped before it polled again.
            let (ops, c) = setup(100, 60, false, spin);
            let c = Arc::new(c);
            assert!(c.set_watcher(alloc::boxed::Box::new(|| {})));
            c.set_nonblocking(false);
            c.set_read_timeout_ms(1000);
            let peer = {
                let (ops, c) = (ops.clone(), c.clone());
                std::thread::spawn(move || {
                    while ops.polling_starts.load(Ordering::SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    ops.peer_data(0, b"news");
                    ops.peer_says(&c, Cursor::new(0, 4), Cursor::new(0, 0), none(), open());
                })
            };
            assert_eq!(c.read(&mut [0u8; 10]).unwrap(), 4);
            peer.join().unwrap();
            assert_eq!(tail(&ops)[..2], ["off", "last"]);
            // Made to block without a spin, on a device with no interrupt thread: it
            // polls all the same (it never would have: nothing else would tell it).
            let (ops, c) = setup(100, 60, false, WaitMode::Blocking(Duration::ZERO));
            ops.polled_only.store(true, Ordering::Relaxed);
            c.set_nonblocking(false);
            c.set_read_timeout_ms(5);
            assert_eq!(kind(c.read(&mut [0u8; 10])), Io::TimedOut);
            assert!(ops.polls.load(Ordering::Relaxed) > 0);
            assert_eq!(ops.log.lock().unwrap()[0], "on");
        })
    }

    #[test]
    fn write_ready_follows_the_peers_ring_and_errors() {
        within(|| {
            let (ops, c) = small();
            assert!(c.write_ready(), "an empty peer ring has room");
            assert_eq!(c.write_space(), 60);
            assert_eq!(c.write(&pattern(50, 1)).unwrap(), 50);
            assert_eq!(c.write_space(), 10);
            assert_eq!(c.write(&pattern(10, 1)).unwrap(), 10);
            assert!(!c.write_ready(), "the peer's 60-byte ring is full");
            assert_eq!(c.write_space(), 0);
            // The peer consumed 20: room again.
            ops.peer_says(&c, Cursor::new(0, 0), Cursor::new(0, 20), none(), open());
            assert!(c.write_ready());
            assert_eq!(c.write(&pattern(20, 2)).unwrap(), 20);
            assert!(!c.write_ready());
            // A closed peer: a write fails at once, so it does not wait: ready.
            ops.peer_says(
                &c,
                Cursor::new(0, 0),
                Cursor::new(0, 20),
                none(),
                ConnStateFlags::PEER_CONN_CLOSED,
            );
            assert!(c.write_ready());
            assert_eq!(c.write_space(), 0, "nothing can be written");
            assert_eq!(kind(c.write(b"x")), Io::ConnectionReset);
        })
    }
}
