//! The host side: attach to a board by name and get an ISM function: its memory, its bus
//! (command area and store-block ring in the shared register object) and its interrupt;
//! with [`attach`], also the ISM driver probed on it and an interrupt thread.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ism_firmware::wire::move_request::MoveRequest;
use ism_firmware::wire::opcode::Opcode;
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{DevAddr, DmaMemory, Gid};
use ism_host_driver::ism::{Bus, BusError, HostMemory, IsmDriver, IsmError};
use ism_host_driver::smcd::device::SmcdOps;
use ism_host_driver::smcd::wait::SpinPhase;
use ism_host_driver::smcd::{SmcStack, StackConfig};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};
use zerocopy::{FromBytes, IntoBytes};

use super::layout::{
    self, dmb_table, peers, regs, Hello, Welcome, ATTACHMENT_WORDS, NO_ATTACH_SLOT, REGS_SIZE,
    RING_SLOTS, SLOT_DATA,
};
use super::page::{futex_wait, futex_wake, IrqWords, PeerTable, RegPage};
use crate::board::BoardKind;
use crate::kit::hash::IntMap;
use crate::memory::{DmaPool, MemoryDomain, SharedMapping};

/// How long a command may take before the host gives up on the board.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a host spins on a shared word before it sleeps on it.
const HOST_SPIN: Duration = Duration::from_micros(50);

/// Why an attach (or a status query) failed.
#[derive(Debug)]
pub enum AttachError {
    /// No board of that name: no socket.
    NoBoard {
        /// The name.
        name: String,
        /// Where its socket would be.
        path: std::path::PathBuf,
    },
    /// The socket exists but nobody listens: the board was killed.
    BoardGone {
        /// The name.
        name: String,
        /// The stale socket.
        path: std::path::PathBuf,
    },
    /// The board refused (version, full, ...): `status` and its message.
    Refused {
        /// `WELCOME.status`.
        status: u32,
        /// The board's reason.
        message: String,
    },
    /// The board answered something this host does not understand.
    Protocol(String),
    /// A system call failed.
    Io(String, std::io::Error),
    /// The ISM driver's probe failed.
    Probe(IsmError),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::NoBoard { name, path } => write!(
                f,
                "no board named {name} (no socket at {}); start one with `ism-sim board --name {name}`",
                path.display()
            ),
            AttachError::BoardGone { name, path } => write!(
                f,
                "board {name} is not running (its socket {} is stale: the board was killed)",
                path.display()
            ),
            AttachError::Refused { message, .. } => write!(f, "the board refused: {message}"),
            AttachError::Protocol(s) => write!(f, "protocol error: {s}"),
            AttachError::Io(what, e) => write!(f, "{what}: {e}"),
            AttachError::Probe(e) => write!(f, "ISM driver probe failed: {e}"),
        }
    }
}

impl std::error::Error for AttachError {}

/// Connects to board `name`'s control socket (with 5 s send and receive timeouts).
pub(crate) fn connect(dir: &Path, name: &str) -> Result<OwnedFd, AttachError> {
    if !super::valid_name(name) {
        return Err(AttachError::Protocol(format!("bad board name {name:?}")));
    }
    let path = super::socket_path(dir, name);
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| AttachError::Io("socket".into(), e.into()))?;
    let addr = SocketAddrUnix::new(&path)
        .map_err(|e| AttachError::Io(format!("socket path {}", path.display()), e.into()))?;
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT) => {
            return Err(AttachError::NoBoard {
                name: name.to_owned(),
                path,
            })
        }
        Err(rustix::io::Errno::CONNREFUSED) => {
            return Err(AttachError::BoardGone {
                name: name.to_owned(),
                path,
            })
        }
        Err(e) => {
            return Err(AttachError::Io(
                format!("connect {}", path.display()),
                e.into(),
            ))
        }
    }
    let sock = super::lifted(sock);
    for t in [
        rustix::net::sockopt::Timeout::Recv,
        rustix::net::sockopt::Timeout::Send,
    ] {
        let _ = rustix::net::sockopt::set_socket_timeout(&sock, t, Some(Duration::from_secs(5)));
    }
    Ok(sock)
}

/// Asks board `name` for its status (functions, counters): the JSON `ism-sim board
/// status` prints.
///
/// # Errors
/// [`AttachError`] if the board cannot be reached or answers nonsense.
pub fn board_status(name: &str) -> Result<serde_json::Value, AttachError> {
    board_status_in(&super::board_dir(), name)
}

/// [`board_status`] of a board whose socket is in `dir`.
///
/// # Errors
/// As [`board_status`].
pub fn board_status_in(dir: &Path, name: &str) -> Result<serde_json::Value, AttachError> {
    let sock = connect(dir, name)?;
    rustix::net::send(&sock, &layout::STATUS_MAGIC, SendFlags::NOSIGNAL)
        .map_err(|e| AttachError::Io("send".into(), e.into()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (n, _) = rustix::net::recv(&sock, &mut buf, RecvFlags::empty())
        .map_err(|e| AttachError::Io("recv".into(), e.into()))?;
    serde_json::from_slice(&buf[..n]).map_err(|e| AttachError::Protocol(format!("status: {e}")))
}

/// What runs when the board is lost.
type LostHooks = Mutex<Vec<Box<dyn Fn() + Send>>>;

/// The partition memory of an attached function and its DMA allocator.
#[derive(Clone)]
pub struct ProcHal {
    memory: Arc<MemoryDomain>,
    pool: Arc<DmaPool>,
}

impl HostMemory for ProcHal {
    type Memory = MemoryDomain;

    fn memory(&self) -> &MemoryDomain {
        &self.memory
    }

    fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr> {
        self.pool.alloc_zeroed(&self.memory, size, align)
    }

    fn dma_free(&self, addr: DevAddr, size: usize) {
        self.pool.free(addr, size as u64);
    }
}

impl ProcHal {
    /// Bytes still free in the function's allocation range.
    pub fn free_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }
}

/// The bus of an attached function: the command area and the store-block ring of its
/// register object.
#[derive(Clone)]
pub struct ProcBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    page: Arc<RegPage>,
    /// Where this function's interrupt words are (register object or peer table).
    irq: IrqWords,
    /// Direct moves into attached DMBs (loopback boards only, spec section 5.5).
    direct: Option<Direct>,
    /// One command at a time.
    cmd: Mutex<()>,
    /// The ring's producer (host side): the next `SQ_HEAD`.
    sq: Mutex<u32>,
    /// The control socket hung up, or the board said it stopped.
    dead: Arc<AtomicBool>,
}

impl BusInner {
    fn alive(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
            && self.page.word(regs::BOARD_STATE).load(Ordering::Acquire) == layout::BOARD_RUNNING
    }

    fn ring_doorbell(&self) {
        let p = &self.page;
        p.word(regs::DOORBELL).fetch_add(1, Ordering::SeqCst);
        if p.word(regs::BOARD_SLEEPING).load(Ordering::SeqCst) != 0 {
            futex_wake(p.word(regs::DOORBELL));
        }
    }

    /// Waits until `done()` (spinning, then sleeping on `PROGRESS`), the board dies, or
    /// `timeout` passes.
    fn wait_progress(&self, timeout: Duration, done: impl Fn() -> bool) -> Result<(), BusError> {
        let start = Instant::now();
        let mut phase = SpinPhase::new(HOST_SPIN);
        loop {
            if done() {
                return Ok(());
            }
            if !phase.spin() {
                break;
            }
        }
        let p = &self.page;
        loop {
            if done() {
                return Ok(());
            }
            if !self.alive() || start.elapsed() >= timeout {
                return Err(BusError::NoDevice);
            }
            let seen = p.word(regs::PROGRESS).load(Ordering::SeqCst);
            p.word(regs::PROGRESS_WAITERS)
                .fetch_add(1, Ordering::SeqCst);
            if !done() {
                futex_wait(p.word(regs::PROGRESS), seen, Duration::from_millis(50));
            }
            p.word(regs::PROGRESS_WAITERS)
                .fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until the board consumed every entry before `head`.
    fn wait_consumed(&self, head: u32) -> Result<(), BusError> {
        let tail = self.page.word(regs::SQ_TAIL);
        self.wait_progress(COMMAND_TIMEOUT, || {
            head.wrapping_sub(tail.load(Ordering::Acquire)) as i32 <= 0
        })
    }
}

/// A DMB this function attached on a loopback board, as its ATTACH_DMB answered.
#[derive(Clone, Copy, Debug)]
struct DirectTarget {
    /// The attachment word the board keeps for it (`ATTACHMENTS + 8 slot`).
    slot: usize,
    /// Device address of the DMB.
    addr: u64,
    /// Its length.
    len: u64,
    /// Its SBA index at the owner.
    sba_idx: usize,
    /// The owner's function index (its peer-table entry).
    owner: usize,
}

/// Direct moves (spec section 5.5): on a loopback board every function maps the one
/// partition memory, so a store-block into a DMB that the board published (copy mode) or
/// that this function attached (no-copy) is done here, by the same rules as the device's
/// (the writer's GID, bounds, the signal bits in the owner's SBA, the owner's interrupt),
/// with no round trip to the board; as Linux's loopback device moves data on the sender's
/// CPU (`net/smc/smc_loopback.c` `smc_lo_move_data`). The board withdraws a DMB's entry
/// and attachment words when it is unregistered (or detached) or its owner goes down, and
/// waits for moves in flight (the moving words); everything else goes through the ring.
struct Direct {
    peers: Arc<PeerTable>,
    me: usize,
    /// This function's GID (a published DMB may be moved into by its `rgid` only).
    gid: u64,
    memory: Arc<MemoryDomain>,
    attached: RwLock<IntMap<u64, DirectTarget>>,
    /// Tokens found in the DMB table: their entries (at most as many as the table has).
    found: RwLock<IntMap<u64, usize>>,
    /// Tokens not found, with the table's `PUBLISHED` count when they were looked for.
    missed: Mutex<IntMap<u64, u64>>,
    /// This instance among all (a thread's [`RECENT_TARGETS`] names it).
    id: u64,
    /// +1 after every change to `attached` or `found`: a thread's remembered target of an
    /// older epoch is looked up again.
    epoch: AtomicU64,
}

/// The entries of [`RECENT_TARGETS`], each a cell of its own.
fn slots(r: &Cell<[Option<Recent>; RECENT]>) -> &[Cell<Option<Recent>>] {
    let r: &Cell<[Option<Recent>]> = r;
    r.as_slice_of_cells()
}

/// Where [`Direct::id`]s come from (never reused, unlike an address).
static NEXT_DIRECT_ID: AtomicU64 = AtomicU64::new(1);

/// Targets a thread remembers.
const RECENT: usize = 4;

/// A target a thread moved into directly.
#[derive(Clone, Copy)]
struct Recent {
    direct: u64,
    epoch: u64,
    token: u64,
    source: Source,
}

std::thread_local! {
    /// The targets of this thread's last direct moves, one per token hash: a move into the
    /// same DMB again finds its target without the maps' read locks (two locked
    /// instructions each, and each a wait for the stores of the copy before). Only a hint,
    /// as the maps are: the move checks its target against the board's words after its
    /// claim (spec 5.5 step 3) however it found it.
    static RECENT_TARGETS: Cell<[Option<Recent>; RECENT]> = const { Cell::new([None; RECENT]) };
}

/// Most tokens [`Direct`] remembers as not published (a host moving into many DMBs of
/// VLANs looks them up again after this many).
const MAX_MISSED: usize = 1024;

/// What a direct move's target comes from.
#[derive(Clone, Copy)]
enum Source {
    /// This function's attachment of the DMB.
    Attached(DirectTarget),
    /// The board's DMB-table entry of that index.
    Published(usize),
}

/// Where a direct move goes (from an attachment or a DMB-table entry).
#[derive(Clone, Copy)]
struct Target {
    addr: u64,
    len: u64,
    sba_idx: usize,
    owner: usize,
}

impl Direct {
    /// Executes store-block `request` with `data` directly if it may be; `None` if it must
    /// go through the ring (neither attached nor published, withdrawn, entries already in
    /// the ring that must land first, this function stopped, or anything the device should
    /// judge: another writer's DMB, out of range).
    fn try_move(&self, page: &RegPage, request: u64, data: &[u8]) -> Option<Result<(), BusError>> {
        let m = MoveRequest::parse(request);
        let token = m.token.0;
        let source = self.source(token)?;
        // Claim a moving word: from here until it is released, the board does not reuse
        // what the token names (it waits for the word after withdrawing the token).
        let moving = self.peers.moving(self.me).find(|w| {
            w.compare_exchange(0, token, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        })?;
        let r = (|| {
            let t = match source {
                Source::Attached(t) => {
                    let word = page.word64(regs::ATTACHMENTS + 8 * t.slot);
                    if word.load(Ordering::SeqCst) != token {
                        // Withdrawn by the board: the device gives its verdict from now on.
                        if let Ok(mut a) = self.attached.write() {
                            a.remove(&token);
                            self.changed();
                        }
                        return None;
                    }
                    Target {
                        addr: t.addr,
                        len: t.len,
                        sba_idx: t.sba_idx,
                        owner: t.owner,
                    }
                }
                Source::Published(i) => self.published_target(i, token)?,
            };
            if page.word(regs::BOARD_STATE).load(Ordering::Acquire) != layout::BOARD_RUNNING {
                return None;
            }
            // Store-blocks already posted to the ring land first (the ring is in order).
            if page.word(regs::SQ_HEAD).load(Ordering::Acquire)
                != page.word(regs::SQ_TAIL).load(Ordering::Acquire)
            {
                return None;
            }
            if u64::from(m.offset) + data.len() as u64 > t.len {
                return None;
            }
            // Checked: a DMB-table entry is memory every host of the board can write.
            let at = t.addr.checked_add(u64::from(m.offset))?;
            self.memory.write(DevAddr(at), data).ok()?;
            let count = |off: usize, n: u64| {
                if let Some(w) = self.peers.word64(self.me, off) {
                    w.fetch_add(n, Ordering::Relaxed);
                }
            };
            count(peers::DIRECT_MOVES, 1);
            count(peers::DIRECT_BYTES, data.len() as u64);
            if m.signal {
                let sba = self
                    .peers
                    .word64(t.owner, peers::SBA)
                    .map_or(0, |w| w.load(Ordering::Acquire));
                if sba != 0
                    && ism_firmware::set_dmb_signal(
                        &*self.memory,
                        DevAddr(sba),
                        t.sba_idx,
                        m.dmbe_idx,
                    )
                    .is_ok()
                {
                    count(peers::DIRECT_SIGNALS, 1);
                    self.peers.raise(t.owner);
                }
            }
            Some(Ok(()))
        })();
        moving.store(0, Ordering::Release);
        r
    }

    /// Where a move into `token` goes: this thread's last target for it if nothing changed
    /// since, else the attachment, else the DMB-table entry; `None`: through the ring.
    fn source(&self, token: u64) -> Option<Source> {
        let epoch = self.epoch.load(Ordering::Acquire);
        // A token's low 32 bits are zero (they carry the request's other fields).
        let i = (token >> 32) as usize % RECENT;
        let hit = RECENT_TARGETS.with(|r| slots(r)[i].get());
        if let Some(r) = hit.filter(|r| r.direct == self.id && r.epoch == epoch && r.token == token)
        {
            return Some(r.source);
        }
        let attached = self.attached.read().ok()?.get(&token).copied();
        let source = match attached {
            Some(t) => Source::Attached(t),
            None => Source::Published(self.lookup(token)?),
        };
        let recent = Recent {
            direct: self.id,
            epoch,
            token,
            source,
        };
        RECENT_TARGETS.with(|r| slots(r)[i].set(Some(recent)));
        Some(source)
    }

    /// Marks the maps changed (see [`Direct::epoch`]).
    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// The DMB-table entry of `token`, if the board published it: from what was found
    /// before, else by a search of the table (not repeated for a token until the board
    /// published something new).
    fn lookup(&self, token: u64) -> Option<usize> {
        if let Some(&i) = self.found.read().ok()?.get(&token) {
            return Some(i);
        }
        let published = self.peers.published().load(Ordering::Acquire);
        let mut missed = self.missed.lock().ok()?;
        if missed.get(&token) == Some(&published) {
            return None;
        }
        let hit = (0..dmb_table::ENTRIES).find(|&i| {
            self.peers
                .dmb_word64(i, dmb_table::TOKEN)
                .is_some_and(|w| w.load(Ordering::Acquire) == token)
        });
        match hit {
            Some(i) => {
                missed.remove(&token);
                let mut found = self.found.write().ok()?;
                // Tokens of DMBs long gone stay here until a move finds their entry
                // changed: bound the map by the table's size (what is still in use is
                // found again by a search).
                if found.len() >= dmb_table::ENTRIES {
                    found.clear();
                }
                found.insert(token, i);
                self.changed();
            }
            None => {
                if missed.len() >= MAX_MISSED {
                    missed.clear();
                }
                missed.insert(token, published);
            }
        }
        hit
    }

    /// Entry `i` as a move target, if it still holds `token` (read while this thread holds
    /// a moving word for `token`, so the board does not rewrite it meanwhile) and this
    /// function may write the DMB.
    fn published_target(&self, i: usize, token: u64) -> Option<Target> {
        let t = &self.peers;
        let holds = t
            .dmb_word64(i, dmb_table::TOKEN)
            .is_some_and(|w| w.load(Ordering::SeqCst) == token);
        if !holds {
            if let Ok(mut f) = self.found.write() {
                f.remove(&token);
                self.changed();
            }
            return None;
        }
        let w64 = |off| t.dmb_word64(i, off).map(|w| w.load(Ordering::Acquire));
        let w32 = |off| t.dmb_word(i, off).map(|w| w.load(Ordering::Acquire));
        if w64(dmb_table::RGID)? != self.gid {
            return None; // the device refuses it (another function's DMB to write)
        }
        let owner = w32(dmb_table::OWNER)? as usize;
        (owner < t.entries()).then_some(Target {
            addr: w64(dmb_table::ADDR)?,
            len: u64::from(w32(dmb_table::LEN)?),
            sba_idx: w32(dmb_table::SBA_IDX)? as usize,
            owner,
        })
    }

    /// Keeps the attached DMBs in step with a command this function's device answered.
    fn observe(&self, page: &RegPage, request: &[u8], response: &[u8]) {
        use super::dmbs::{be32, be64};
        if response.get(4..6) != Some(&[0, 0][..]) {
            return;
        }
        let op = Opcode::from_raw(be32(request, 0));
        let Ok(mut a) = self.attached.write() else {
            return;
        };
        match op {
            Some(Opcode::AttachDmb) => {
                let slot = page.word(regs::ATTACH_SLOT).load(Ordering::Acquire);
                let owner = page.word(regs::ATTACH_OWNER).load(Ordering::Acquire) as usize;
                let token = be64(response, 16);
                if token != 0
                    && slot != NO_ATTACH_SLOT
                    && (slot as usize) < ATTACHMENT_WORDS
                    && owner < self.peers.entries()
                {
                    a.insert(
                        token,
                        DirectTarget {
                            slot: slot as usize,
                            addr: be64(response, 8),
                            len: u64::from(be32(response, 24)),
                            sba_idx: be32(response, 28) as usize,
                            owner,
                        },
                    );
                    self.changed();
                }
            }
            Some(Opcode::DetachDmb) => {
                a.remove(&be64(request, 8));
                self.changed();
            }
            _ => {}
        }
    }
}

/// The bus error of a ring entry status.
fn status_error(status: u32) -> Result<(), BusError> {
    match status {
        0 => Ok(()),
        s if s & layout::SQ_ERR_REFUSED != 0 => Err(BusError::StoreRefused(s as u8)),
        _ => Err(BusError::StoreRefused(
            ism_firmware::MoveError::TooLong as u8,
        )),
    }
}

impl ProcBus {
    /// Waits until every store-block posted so far was executed and reports the first
    /// refused posted one since the last flush. Store-blocks without the signal flag are
    /// posted (they return before the board ran them); a refusal among them is reported
    /// here, and by the next signalling store-block to the same DMB (which the board then
    /// refuses too, so a batch never signals data that did not land).
    ///
    /// # Errors
    /// [`BusError::StoreRefused`] for a refused store-block, [`BusError::NoDevice`] if the
    /// board is gone.
    pub fn flush(&self) -> Result<(), BusError> {
        let head = self.inner.sq.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.wait_consumed(*head)?;
        status_error(
            self.inner
                .page
                .word(regs::SQ_ERROR)
                .swap(0, Ordering::AcqRel),
        )
    }

    /// Whether the board still serves this function.
    pub fn is_alive(&self) -> bool {
        self.inner.alive()
    }
}

impl Bus for ProcBus {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        let inner = &self.inner;
        let _g = inner.cmd.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.alive() {
            return Err(BusError::NoDevice);
        }
        let p = &inner.page;
        let regs_ = p.command();
        regs_.post_request(&request[..request.len().min(COMMAND_AREA_SIZE)]);
        let seq = p
            .word(regs::CMD_SEQ)
            .load(Ordering::Relaxed)
            .wrapping_add(1);
        p.word(regs::CMD_SEQ).store(seq, Ordering::SeqCst);
        inner.ring_doorbell();
        let done = p.word(regs::CMD_DONE);
        inner.wait_progress(COMMAND_TIMEOUT, || done.load(Ordering::Acquire) == seq)?;
        // Header first; the body only on success, up to `len` (Linux's `ism_cmd`).
        regs_.read_bytes(&mut response[..8]);
        let ret = u16::from_be_bytes([response[4], response[5]]);
        let len = (u16::from_be_bytes([response[6], response[7]]) as usize).min(COMMAND_AREA_SIZE);
        if ret == 0 && len > 8 {
            let mut all = [0u8; COMMAND_AREA_SIZE];
            regs_.read_bytes(&mut all[..len.div_ceil(8) * 8]);
            response[8..len].copy_from_slice(&all[8..len]);
        }
        if let Some(d) = &inner.direct {
            d.observe(p, request, &response[..]);
        }
        Ok(())
    }

    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        if data.len() > SLOT_DATA {
            return Err(BusError::StoreRefused(
                ism_firmware::MoveError::TooLong as u8,
            ));
        }
        let inner = &self.inner;
        if let Some(d) = &inner.direct {
            if let Some(r) = d.try_move(&inner.page, request, data) {
                return r;
            }
        }
        let mut head = inner.sq.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.alive() {
            return Err(BusError::NoDevice);
        }
        let p = &inner.page;
        let tail = p.word(regs::SQ_TAIL);
        if head.wrapping_sub(tail.load(Ordering::Acquire)) >= RING_SLOTS {
            let h = *head;
            inner.wait_progress(COMMAND_TIMEOUT, || {
                h.wrapping_sub(tail.load(Ordering::Acquire)) < RING_SLOTS
            })?;
        }
        let slot = *head;
        p.write_slot(slot, data)
            .map_err(|_| BusError::StoreRefused(ism_firmware::MoveError::TooLong as u8))?;
        p.desc_request(slot).store(request, Ordering::Relaxed);
        p.desc_len(slot).store(data.len() as u32, Ordering::Relaxed);
        *head = slot.wrapping_add(1);
        p.word(regs::SQ_HEAD).store(*head, Ordering::SeqCst);
        inner.ring_doorbell();
        if request & ism_firmware::wire::move_request::SIGNAL_FLAG != 0 {
            // A signalling store-block completes the batch: wait for it and report.
            inner.wait_consumed(*head)?;
            return status_error(p.desc_status(slot).load(Ordering::Acquire));
        }
        Ok(())
    }

    /// A direct move (spec section 5.5) where one may be done now; `None` where the
    /// store-block must go through the ring (which would land it later), and for a
    /// signalled one (the caller wants no signal).
    fn store_block_now(&self, request: u64, data: &[u8]) -> Option<Result<(), BusError>> {
        if data.len() > SLOT_DATA || request & ism_firmware::wire::move_request::SIGNAL_FLAG != 0 {
            return None;
        }
        let inner = &self.inner;
        inner.direct.as_ref()?.try_move(&inner.page, request, data)
    }

    fn set_polling(&self, on: bool) {
        let pollers = self.inner.irq.pollers();
        if on {
            pollers.fetch_add(1, Ordering::SeqCst);
        } else {
            // Saturating: the word is shared with the board; a stray `false` must not wrap it.
            let _ = pollers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            // Pairs with the board's fence in its raise (host-interface.md 5.4): either the
            // board sees the count drop and wakes the interrupt thread, or the poller's last
            // poll sees the SBA bits set before the raise.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
    }

    fn ack_interrupt(&self) {
        self.inner.irq.irq().swap(0, Ordering::AcqRel);
    }

    fn interrupt_raised(&self) -> Option<bool> {
        Some(self.inner.irq.irq().load(Ordering::Acquire) != 0)
    }
}

/// A function attached to a board, without a driver: its memory, bus and interrupt (what
/// a conformance suite drives directly).
pub struct RawAttachment {
    name: String,
    kind: BoardKind,
    function: u32,
    gid: Gid,
    chid: u16,
    max_functions: u32,
    hal: ProcHal,
    bus: ProcBus,
    page: Arc<RegPage>,
    irq: IrqWords,
    peers: Option<Arc<PeerTable>>,
    sock: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    kicked: AtomicBool,
    /// How long [`RawAttachment::wait_irq`] spins before it sleeps, in µs.
    irq_spin_us: AtomicU32,
    monitor: Option<JoinHandle<()>>,
    on_lost: Arc<LostHooks>,
}

/// Attaches to board `name` (in [`super::board_dir`]) and returns the raw function.
///
/// # Errors
/// [`AttachError`]: no such board, a killed board, a refusal (version, full), or a
/// malformed answer.
pub fn attach_raw(name: &str) -> Result<RawAttachment, AttachError> {
    attach_raw_in(&super::board_dir(), name)
}

/// [`attach_raw`] to a board whose socket is in `dir`.
///
/// # Errors
/// As [`attach_raw`].
pub fn attach_raw_in(dir: &Path, name: &str) -> Result<RawAttachment, AttachError> {
    attach_raw_version(dir, name, layout::SPEC_VERSION)
}

/// [`attach_raw_in`] announcing spec version `version` (to test a board's refusal).
#[doc(hidden)]
pub fn attach_raw_version(
    dir: &Path,
    name: &str,
    version: u32,
) -> Result<RawAttachment, AttachError> {
    let sock = Arc::new(connect(dir, name)?);
    let hello = Hello {
        magic: layout::HELLO_MAGIC,
        version: version.into(),
        flags: 0.into(),
        pid: std::process::id().into(),
        reserved: 0.into(),
    };
    rustix::net::send(&sock, hello.as_bytes(), SendFlags::NOSIGNAL)
        .map_err(|e| AttachError::Io("send HELLO".into(), e.into()))?;
    let (bytes, fds, truncated) = recv_with_fds(&sock)?;
    let w = Welcome::read_from_bytes(&bytes[..])
        .map_err(|_| AttachError::Protocol(format!("WELCOME of {} bytes", bytes.len())))?;
    if w.magic != layout::WELCOME_MAGIC {
        return Err(AttachError::Protocol("WELCOME without its magic".into()));
    }
    if w.status.get() != layout::STATUS_OK {
        return Err(AttachError::Refused {
            status: w.status.get(),
            message: layout::message_text(&w.message),
        });
    }
    if w.version.get() != layout::SPEC_VERSION {
        return Err(AttachError::Protocol(format!(
            "the board speaks spec version {}, this host {}",
            w.version.get(),
            layout::SPEC_VERSION
        )));
    }
    // The board attached us: from here an attach that fails says BYE as it gives up.
    let mut bye = ByeUnlessKept(Some(sock.clone()));
    // The kernel drops the descriptors it cannot install and says so with MSG_CTRUNC
    // (`scm_detach_fds` in `net/core/scm.c`): this process is at its limit of open files.
    if truncated {
        return Err(AttachError::Io(
            "receive WELCOME's memory objects".into(),
            rustix::io::Errno::MFILE.into(),
        ));
    }
    let kind = match w.kind.get() {
        layout::KIND_LPAR => BoardKind::Lpar,
        layout::KIND_LOOPBACK => BoardKind::Loopback,
        k => return Err(AttachError::Protocol(format!("unknown board kind {k}"))),
    };
    // LPAR: memory and register object; loopback: and the peer table.
    let want = if kind == BoardKind::Loopback { 3 } else { 2 };
    if fds.len() != want {
        return Err(AttachError::Protocol(format!(
            "WELCOME with {} memory objects instead of {want}",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let (mem_fd, regs_fd) = (fds.next().expect("counted"), fds.next().expect("counted"));
    let peers_fd = fds.next();
    let (mem_base, mem_size) = (w.mem_base.get(), w.mem_size.get());
    let (pool_base, pool_size) = (w.pool_base.get(), w.pool_size.get());
    if pool_base < mem_base
        || pool_base.checked_add(pool_size).is_none()
        || pool_base + pool_size > mem_base.saturating_add(mem_size)
        || w.regs_size.get() < REGS_SIZE as u64
        || w.ring_slots.get() != RING_SLOTS
    {
        return Err(AttachError::Protocol(
            "inconsistent WELCOME geometry".into(),
        ));
    }
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| AttachError::Io(what, e)
    };
    // A board that could shrink an object under us would make our accesses fault.
    for fd in [Some(&mem_fd), Some(&regs_fd), peers_fd.as_ref()]
        .into_iter()
        .flatten()
    {
        let seals = rustix::fs::fcntl_get_seals(fd).map_err(|e| io("seals")(e.into()))?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(AttachError::Protocol(
                "the board's memory objects are not sealed against shrinking".into(),
            ));
        }
    }
    let map = SharedMapping::map_shared(&mem_fd, mem_size as usize).map_err(io("map memory"))?;
    let memory = Arc::new(MemoryDomain::from_mapping(mem_base, map).map_err(io("memory"))?);
    let page = Arc::new(
        RegPage::new(SharedMapping::map_shared(&regs_fd, REGS_SIZE).map_err(io("map registers"))?)
            .map_err(io("registers"))?,
    );
    let peers = match &peers_fd {
        Some(fd) => {
            let n = w.max_functions.get() as usize;
            if !(1..=64).contains(&n) || w.function.get() as usize >= n {
                return Err(AttachError::Protocol(
                    "inconsistent WELCOME geometry".into(),
                ));
            }
            let size = PeerTable::size(n).next_multiple_of(crate::memory::PAGE);
            let have = rustix::fs::fstat(fd).map_err(|e| io("fstat")(e.into()))?;
            if (have.st_size as u64) < size as u64 {
                return Err(AttachError::Protocol(format!(
                    "peer table of {} bytes, {size} expected",
                    have.st_size
                )));
            }
            let map = SharedMapping::map_shared(fd, size).map_err(io("map peer table"))?;
            Some(Arc::new(PeerTable::new(map, n).map_err(io("peer table"))?))
        }
        None => None,
    };
    drop((mem_fd, regs_fd, peers_fd));
    let me = w.function.get() as usize;
    let irq = peers
        .as_ref()
        .and_then(|t| IrqWords::peer(t, me))
        .unwrap_or_else(|| IrqWords::Page(page.clone()));
    if !page.is_valid() {
        return Err(AttachError::Protocol(
            "register object without magic/version".into(),
        ));
    }
    let dead = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let on_lost: Arc<LostHooks> = Arc::default();
    let monitor = {
        let (sock, dead, stop, page, irq, on_lost) = (
            sock.clone(),
            dead.clone(),
            stop.clone(),
            page.clone(),
            irq.clone(),
            on_lost.clone(),
        );
        std::thread::Builder::new()
            .name("ism-board-watch".into())
            .spawn(move || watch(&sock, &dead, &stop, &page, &irq, &on_lost))
            .map_err(io("spawn"))?
    };
    let bus = ProcBus {
        inner: Arc::new(BusInner {
            page: page.clone(),
            irq: irq.clone(),
            direct: peers.as_ref().map(|t| Direct {
                peers: t.clone(),
                me,
                gid: w.gid.get(),
                memory: memory.clone(),
                attached: RwLock::default(),
                found: RwLock::default(),
                missed: Mutex::default(),
                id: NEXT_DIRECT_ID.fetch_add(1, Ordering::Relaxed),
                epoch: AtomicU64::new(0),
            }),
            cmd: Mutex::new(()),
            sq: Mutex::new(page.word(regs::SQ_HEAD).load(Ordering::Acquire)),
            dead: dead.clone(),
        }),
    };
    bye.0 = None;
    Ok(RawAttachment {
        name: name.to_owned(),
        kind,
        function: w.function.get(),
        gid: Gid(w.gid.get()),
        chid: w.chid.get(),
        max_functions: w.max_functions.get(),
        hal: ProcHal {
            memory,
            pool: Arc::new(DmaPool::new(pool_base, pool_size)),
        },
        bus,
        page,
        irq,
        peers,
        sock,
        stop,
        kicked: AtomicBool::new(false),
        irq_spin_us: AtomicU32::new(RawAttachment::DEFAULT_IRQ_SPIN.as_micros() as u32),
        monitor: Some(monitor),
        on_lost,
    })
}

/// Watches the control socket: a hang-up means the board is gone. Marks the attachment
/// dead, wakes every waiter on the register object, runs the `on_lost` hooks.
fn watch(
    sock: &OwnedFd,
    dead: &AtomicBool,
    stop: &AtomicBool,
    page: &RegPage,
    irq: &IrqWords,
    on_lost: &LostHooks,
) {
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(sock, PollFlags::IN)];
        // No timeout: a hang-up, or `stop_monitor`'s shutdown of the socket, ends the wait.
        match rustix::event::poll(&mut fds, None) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let mut buf = [0u8; 16];
        match rustix::net::recv(sock, &mut buf, RecvFlags::DONTWAIT) {
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Ok((n, _)) if n > 0 => continue,
            _ => break,
        }
    }
    if stop.load(Ordering::Acquire) {
        return;
    }
    dead.store(true, Ordering::Release);
    for w in [irq.irq(), page.word(regs::PROGRESS)] {
        w.fetch_add(1, Ordering::SeqCst);
        futex_wake(w);
    }
    for hook in on_lost.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        hook();
    }
}

/// Says BYE on the control socket as it drops, unless emptied first: an attach that fails
/// after the board welcomed the host (this process out of descriptors, a malformed
/// object) ends as a detach, not as a partition crash.
struct ByeUnlessKept(Option<Arc<OwnedFd>>);

impl Drop for ByeUnlessKept {
    fn drop(&mut self) {
        if let Some(sock) = self.0.take() {
            let _ = rustix::net::send(&*sock, &layout::BYE_MAGIC, SendFlags::NOSIGNAL);
        }
    }
}

/// The WELCOME's bytes, its descriptors, and whether the kernel had to drop some
/// (`MSG_CTRUNC`).
fn recv_with_fds(sock: &OwnedFd) -> Result<(Vec<u8>, Vec<OwnedFd>, bool), AttachError> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    let mut buf = vec![0u8; 512];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
        .map_err(|e| AttachError::Io("receive WELCOME".into(), e.into()))?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            fds.extend(it.map(super::lifted));
        }
    }
    if r.bytes == 0 {
        return Err(AttachError::Protocol(
            "the board hung up without a WELCOME".into(),
        ));
    }
    buf.truncate(r.bytes);
    let truncated = r.flags.contains(rustix::net::ReturnFlags::CTRUNC);
    Ok((buf, fds, truncated))
}

impl RawAttachment {
    /// How long [`RawAttachment::wait_irq`] spins before it sleeps, unless
    /// [`RawAttachment::set_irq_spin`] said otherwise.
    pub const DEFAULT_IRQ_SPIN: Duration = HOST_SPIN;

    /// The board's name.
    pub fn board_name(&self) -> &str {
        &self.name
    }
    /// LPAR or loopback.
    pub fn kind(&self) -> BoardKind {
        self.kind
    }
    /// The function's index on the board.
    pub fn function(&self) -> u32 {
        self.function
    }
    /// The function's GID.
    pub fn gid(&self) -> Gid {
        self.gid
    }
    /// The device's CHID.
    pub fn chid(&self) -> u16 {
        self.chid
    }
    /// Most functions the board serves.
    pub fn max_functions(&self) -> u32 {
        self.max_functions
    }
    /// The partition memory and allocator.
    pub fn hal(&self) -> &ProcHal {
        &self.hal
    }
    /// The bus.
    pub fn bus(&self) -> &ProcBus {
        &self.bus
    }
    /// Whether the board still serves this function.
    pub fn is_alive(&self) -> bool {
        self.bus.is_alive()
    }

    /// The register object as this host maps it: everything a (hostile) host can write
    /// directly.
    pub fn register_object(&self) -> &RegPage {
        &self.page
    }

    /// The peer table of a loopback board as this host maps it (host-interface.md 5.5):
    /// like [`RawAttachment::register_object`], what a (hostile) host can write directly.
    pub fn peer_table(&self) -> Option<&PeerTable> {
        self.peers.as_deref()
    }

    /// Runs `hook` once when the board is lost (at once if it already is).
    pub fn on_board_lost(&self, hook: Box<dyn Fn() + Send>) {
        let mut hooks = self.on_lost.lock().unwrap_or_else(|e| e.into_inner());
        if self.bus.inner.dead.load(Ordering::Acquire) {
            drop(hooks);
            hook();
        } else {
            hooks.push(hook);
        }
    }

    /// Takes a pending interrupt without waiting; returns whether one was pending.
    pub fn take_irq(&self) -> bool {
        self.irq.irq().swap(0, Ordering::AcqRel) != 0 && self.is_alive()
    }

    /// Sets how long [`RawAttachment::wait_irq`] spins before it sleeps on the `IRQ` futex
    /// ([`RawAttachment::DEFAULT_IRQ_SPIN`] until set; at most 10 ms; 0: it sleeps at once). A spinning interrupt thread
    /// takes the next signal without a futex wake-up, which pays where the signals bring
    /// the data; a process whose readers learn of data another way (`ism-run`'s peer bells:
    /// the signals only tell writers of room) sets 0, and the spin no longer takes a core
    /// from the program on a 2-core machine. Takes effect at the next wait.
    pub fn set_irq_spin(&self, spin: Duration) {
        let us = spin.min(Duration::from_millis(10)).as_micros() as u32;
        self.irq_spin_us.store(us, Ordering::Relaxed);
    }

    /// How long [`RawAttachment::wait_irq`] spins before it sleeps.
    pub fn irq_spin(&self) -> Duration {
        Duration::from_micros(self.irq_spin_us.load(Ordering::Relaxed).into())
    }

    /// Waits up to `timeout` for the function's interrupt and takes it; returns whether
    /// one was taken. Spins for [`RawAttachment::irq_spin`], then sleeps on the `IRQ`
    /// futex; returns `false` at once if the board is gone.
    pub fn wait_irq(&self, timeout: Duration) -> bool {
        let irq: &AtomicU32 = self.irq.irq();
        let start = Instant::now();
        let mut phase = SpinPhase::new(self.irq_spin().min(timeout));
        loop {
            if self.take_irq() {
                return true;
            }
            // While a host thread polls the SBA it runs the handler itself (5.4): spinning
            // here as well would only take a core from it.
            if self.irq.pollers().load(Ordering::Relaxed) > 0 || !phase.spin() {
                break;
            }
        }
        loop {
            if self.take_irq() {
                return true;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() || !self.is_alive() || self.kicked.load(Ordering::Acquire) {
                return false;
            }
            let waiters = self.irq.waiters();
            waiters.fetch_add(1, Ordering::SeqCst);
            if irq.load(Ordering::SeqCst) == 0 {
                futex_wait(irq, 0, left.min(Duration::from_secs(1)));
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The control socket's descriptor (close-on-exec; its hang-up without BYE is a
    /// partition crash for the board). A forked child of the attaching process closes its
    /// inherited copy, so that the board still sees the parent's death.
    pub fn control_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Ends every [`RawAttachment::wait_irq`], now and later, without an interrupt (the
    /// attachment is closing).
    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        futex_wake(self.irq.irq());
    }

    /// Detaches in an orderly way (as dropping does): the board brings the function down
    /// with `DEV_GID_DISABLED` for the peers. Only a process that dies without detaching
    /// (its socket hangs up without BYE) is a partition crash.
    pub fn detach(self) {}

    fn stop_monitor(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::net::shutdown(&*self.sock, rustix::net::Shutdown::Read);
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
    }
}

impl Drop for RawAttachment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = rustix::net::send(&*self.sock, &layout::BYE_MAGIC, SendFlags::NOSIGNAL);
        self.stop_monitor();
    }
}

/// The driver of an attached function.
pub type ProcDriver = IsmDriver<ProcHal, ProcBus>;

/// A function attached to a board with the ISM driver probed on it and an interrupt thread
/// running its handler: what a program uses ([`Attachment::smc_stack`] for SMC-D).
pub struct Attachment {
    raw: Arc<RawAttachment>,
    driver: Arc<ProcDriver>,
    stop: Arc<AtomicBool>,
    irq_thread: Option<JoinHandle<()>>,
    stacks: Arc<Mutex<Vec<Weak<SmcStack>>>>,
}

/// Attaches to board `name`, probes the ISM driver and starts its interrupt thread.
///
/// # Errors
/// [`AttachError`] as [`attach_raw`], or the driver's probe error.
pub fn attach(name: &str) -> Result<Attachment, AttachError> {
    attach_in(&super::board_dir(), name)
}

/// [`attach`] to a board whose socket is in `dir`.
///
/// # Errors
/// As [`attach`].
pub fn attach_in(dir: &Path, name: &str) -> Result<Attachment, AttachError> {
    let raw = Arc::new(attach_raw_in(dir, name)?);
    let driver = Arc::new(
        IsmDriver::probe(raw.hal.clone(), raw.bus.clone(), raw.chid).map_err(AttachError::Probe)?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stacks: Arc<Mutex<Vec<Weak<SmcStack>>>> = Arc::default();
    {
        // The board is gone: every connection of this process's stacks ends now with an
        // error, instead of waiting for data that cannot come.
        let stacks = stacks.clone();
        raw.on_board_lost(Box::new(move || {
            for s in stacks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                if let Some(s) = s.upgrade() {
                    s.shutdown();
                }
            }
        }));
    }
    let irq_thread = {
        let (raw, driver, stop) = (raw.clone(), driver.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("ism-irq-fn{}", raw.function))
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if raw.wait_irq(Duration::from_secs(1)) || driver.irq_pending() {
                        driver.handle_irq();
                    } else if !raw.is_alive() {
                        // Nothing will come any more; do not spin.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| AttachError::Io("spawn".into(), e))?
    };
    Ok(Attachment {
        raw,
        driver,
        stop,
        irq_thread: Some(irq_thread),
        stacks,
    })
}

impl Attachment {
    /// The driver.
    pub fn driver(&self) -> &Arc<ProcDriver> {
        &self.driver
    }

    /// The raw function (memory, bus, interrupt).
    pub fn raw(&self) -> &RawAttachment {
        &self.raw
    }

    /// The function's GID.
    pub fn gid(&self) -> Gid {
        self.raw.gid
    }

    /// Whether the board still serves this function.
    pub fn is_alive(&self) -> bool {
        self.raw.is_alive()
    }

    /// An SMC-D stack of this process over the function (connections end with an error
    /// if the board goes away).
    ///
    /// # Errors
    /// The driver's error if it has no room for another client.
    pub fn smc_stack(&self, cfg: StackConfig) -> Result<Arc<SmcStack>, IsmError> {
        let ops: Arc<dyn SmcdOps> = self.driver.clone();
        let s = SmcStack::new(cfg, vec![ops])?;
        self.stacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&s));
        if !self.is_alive() {
            s.shutdown();
        }
        Ok(s)
    }

    fn stop_irq(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.raw.kick();
        if let Some(t) = self.irq_thread.take() {
            let _ = t.join();
        }
    }

    /// Detaches in an orderly way: stops the interrupt thread, removes the driver
    /// (UNREG_IEQ, UNREG_SBA), says BYE (peers get `DEV_GID_DISABLED`). Dropping says BYE
    /// too, without removing the driver first.
    pub fn detach(mut self) {
        self.stop_irq();
        self.driver.remove();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.stop_irq();
    }
}
