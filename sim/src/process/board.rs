//! The board process: the firmware over shared memory objects, a control socket, and one
//! worker thread per attached function that serves its command area and store-block ring.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ism_firmware::{Device, DownReason, FunctionConfig};
use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_hal::{Clock, DomainId, FunctionId, Gid, InterruptLine};
use ism_host_driver::smcd::wait::SpinPhase;
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};
use zerocopy::{FromBytes, IntoBytes};

use super::dmbs::DmbShadow;
use super::layout::{
    self, dmb_table, peers, regs, Hello, Welcome, ATTACHMENT_WORDS, NO_ATTACH_SLOT, REGS_SIZE,
    RING_SLOTS, SLOT_DATA,
};
use super::names::NameTable;
use super::page::{futex_wait, futex_wake, IrqWords, PeerTable, RegPage};
use crate::board::{BoardKind, LOOPBACK_CHID, LPAR_CHID, MAX_DMBS};
use crate::memory::{MemoryDomain, SharedMapping, PAGE};

/// How long a new connection may take to send its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most functions a process board can have.
pub const MAX_PROCESS_FUNCTIONS: usize = 32;

/// The device a process board runs.
pub type ProcDevice = Device<ProcHw, MAX_PROCESS_FUNCTIONS, MAX_DMBS>;

/// Options of a process board.
#[derive(Clone, Debug)]
pub struct BoardOptions {
    /// The board's name (see [`super::valid_name`]).
    pub name: String,
    /// LPAR or loopback.
    pub kind: BoardKind,
    /// Most functions attached at once (1..=32).
    pub max_functions: usize,
    /// Partition memory per function in bytes (a multiple of 4096).
    pub memory: usize,
    /// Directory of the control socket ([`super::board_dir`] by default).
    pub dir: PathBuf,
    /// How long a worker spins for more work before it sleeps.
    pub spin: Duration,
    /// Permission bits of the control socket (`None`: as the umask leaves them, so only
    /// the board's user may connect). Connecting needs write permission: `0o660` lets the
    /// socket's group attach (the group of the directory if it has the set-group-ID bit,
    /// else the board's), `0o666` every local user.
    pub socket_mode: Option<u32>,
}

impl BoardOptions {
    /// Defaults for a board `name` of `kind`: 16 functions, 64 MiB each, the default
    /// directory, 50 µs spin.
    pub fn new(name: &str, kind: BoardKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            max_functions: 16,
            memory: 64 << 20,
            dir: super::board_dir(),
            spin: Duration::from_micros(50),
            socket_mode: None,
        }
    }
}

/// Why a board could not start.
#[derive(Debug)]
pub enum BoardError {
    /// Bad options (name, sizes).
    Invalid(String),
    /// A live board already has this name.
    AlreadyRunning {
        /// The name.
        name: String,
        /// The live board's pid, if its lock file says.
        pid: Option<u32>,
    },
    /// A system call failed.
    Io(String, std::io::Error),
}

impl std::fmt::Display for BoardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardError::Invalid(s) => write!(f, "{s}"),
            BoardError::AlreadyRunning { name, pid } => match pid {
                Some(p) => write!(f, "a board named {name} is already running (pid {p})"),
                None => write!(f, "a board named {name} is already running"),
            },
            BoardError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for BoardError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BoardError {
    let what = what.into();
    move |e| BoardError::Io(what, e)
}

/// Nanoseconds since the board started.
pub struct BoardClock(Instant);

impl Clock for BoardClock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A function's interrupt: the `IRQ` word of its register object (LPAR) or of its
/// peer-table entry (loopback).
pub struct ProcIrq {
    words: IrqWords,
}

impl InterruptLine for ProcIrq {
    fn raise(&self) {
        self.words.raise();
    }
}

/// The HAL the firmware sees on a process board.
pub struct ProcHw {
    memories: Vec<MemoryDomain>,
    irqs: Vec<ProcIrq>,
    clock: BoardClock,
    shared: bool,
}

impl ism_hal::Board for ProcHw {
    type Memory = MemoryDomain;
    type Irq = ProcIrq;
    type Clock = BoardClock;

    fn memory(&self, domain: DomainId) -> Option<&MemoryDomain> {
        self.memories.get(domain.0 as usize)
    }
    fn irq(&self, function: FunctionId) -> Option<&ProcIrq> {
        self.irqs.get(function.index())
    }
    fn clock(&self) -> &BoardClock {
        &self.clock
    }
    fn may_map(&self, a: DomainId, b: DomainId) -> bool {
        self.shared && a == b
    }
}

/// Function `i`'s interrupt words: its peer-table entry on a loopback board (`peers`),
/// else its register object.
fn irq_words(peers: Option<&Arc<PeerTable>>, pages: &[Arc<RegPage>], i: usize) -> IrqWords {
    peers
        .and_then(|t| IrqWords::peer(t, i))
        .unwrap_or_else(|| IrqWords::Page(pages[i].clone()))
}

/// A sealed memfd of `size` bytes (it can neither shrink nor grow, so no host can make the
/// board's accesses fault).
fn memfd(name: &str, size: u64) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

fn gid_of(kind: BoardKind, i: usize) -> Gid {
    match kind {
        BoardKind::Lpar => Gid(0x4953_4D00_0000_0001 + ((i as u64) << 16)),
        BoardKind::Loopback => Gid(0x4C4F_4F50_0000_0001 + ((i as u64) << 16)),
    }
}

/// Device address of the memory of function `i` (LPAR) or of the shared memory (loopback).
fn mem_base(kind: BoardKind, i: usize) -> u64 {
    match kind {
        BoardKind::Lpar => (i as u64 + 1) << 40,
        BoardKind::Loopback => 1 << 40,
    }
}

/// Counters of the board itself (attaches, crashes, refusals).
#[derive(Debug, Default)]
pub struct BoardCounters {
    /// Functions attached.
    pub attaches: AtomicU64,
    /// Orderly detaches (BYE).
    pub detaches: AtomicU64,
    /// Hosts that hung up without BYE (partition crashes).
    pub crashes: AtomicU64,
    /// Attaches refused (version, full, malformed).
    pub refusals: AtomicU64,
    /// Direct moves (spec section 5.5) of hosts that have left: `[moves, bytes, signals]`
    /// (those of attached hosts are in their peer-table entries).
    pub direct_gone: [AtomicU64; 3],
}

/// The direct-move counters of a peer-table entry: moves, bytes, signals.
const DIRECT_COUNTERS: [usize; 3] = [
    peers::DIRECT_MOVES,
    peers::DIRECT_BYTES,
    peers::DIRECT_SIGNALS,
];

/// One attached host.
struct Attached {
    conn: OwnedFd,
    pid: u32,
    since: SystemTime,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

/// A process board, bound to its socket and ready to [`ProcessBoard::run`].
pub struct ProcessBoard {
    opts: BoardOptions,
    socket: PathBuf,
    lock_file: PathBuf,
    _lock: File,
    listener: OwnedFd,
    device: Arc<ProcDevice>,
    pages: Arc<Vec<Arc<RegPage>>>,
    /// The shared memory object of a loopback board.
    shared_mem: Option<OwnedFd>,
    /// The peer table of a loopback board (spec section 5.5) and its memory object.
    peers: Option<(Arc<PeerTable>, OwnedFd)>,
    /// Which entries of the peer table's DMB table hold which tokens.
    published: Arc<Published>,
    slots: Vec<Option<Attached>>,
    dmbs: Arc<DmbShadow>,
    counters: Arc<BoardCounters>,
    started: SystemTime,
    log: Mutex<Box<dyn std::io::Write + Send>>,
    /// Name-service connections (section 3.5) and their ids in `names`.
    name_conns: Vec<(OwnedFd, u64)>,
    names: NameTable,
    next_name_conn: u64,
}

impl ProcessBoard {
    /// Creates the board's memory objects and device, takes its name (refusing a live
    /// board of the same name, reclaiming what a killed one left) and binds its socket.
    ///
    /// # Errors
    /// [`BoardError`].
    pub fn start(opts: BoardOptions) -> Result<Self, BoardError> {
        Self::start_with_log(opts, Box::new(std::io::stderr()))
    }

    /// As [`ProcessBoard::start`], writing the board's log lines to `log`.
    ///
    /// # Errors
    /// [`BoardError`].
    pub fn start_with_log(
        opts: BoardOptions,
        log: Box<dyn std::io::Write + Send>,
    ) -> Result<Self, BoardError> {
        if !super::valid_name(&opts.name) {
            return Err(BoardError::Invalid(format!(
                "bad board name {:?}: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'",
                opts.name
            )));
        }
        if !(1..=MAX_PROCESS_FUNCTIONS).contains(&opts.max_functions) {
            return Err(BoardError::Invalid(format!(
                "--max-functions must be 1..={MAX_PROCESS_FUNCTIONS}"
            )));
        }
        if opts.memory < 1 << 20 || !opts.memory.is_multiple_of(PAGE) || opts.memory > 1 << 36 {
            return Err(BoardError::Invalid(
                "partition memory must be 1 MiB..=64 GiB, a multiple of 4096".into(),
            ));
        }
        if opts.socket_mode.is_some_and(|m| m > 0o777) {
            return Err(BoardError::Invalid(
                "the socket mode takes permission bits only (0..=777, octal)".into(),
            ));
        }
        std::fs::create_dir_all(&opts.dir).map_err(io(format!("create {}", opts.dir.display())))?;
        let socket = super::socket_path(&opts.dir, &opts.name);
        let lock_file = super::lock_path(&opts.dir, &opts.name);
        let mut log = log;
        let lock = take_name(&opts.name, &socket, &lock_file, &mut log)?;

        let n = opts.max_functions;
        let kind = opts.kind;
        let mut memories = Vec::new();
        let mut shared_mem = None;
        match kind {
            BoardKind::Lpar => {
                for i in 0..n {
                    let fd = memfd(&format!("ism-{}-mem{i}", opts.name), opts.memory as u64)
                        .map_err(io("memfd"))?;
                    let map = SharedMapping::map_shared(&fd, opts.memory).map_err(io("mmap"))?;
                    memories.push(
                        MemoryDomain::from_mapping(mem_base(kind, i), map).map_err(io("domain"))?,
                    );
                }
            }
            BoardKind::Loopback => {
                let size = opts.memory * n;
                let fd =
                    memfd(&format!("ism-{}-mem", opts.name), size as u64).map_err(io("memfd"))?;
                let map = SharedMapping::map_shared(&fd, size).map_err(io("mmap"))?;
                memories.push(
                    MemoryDomain::from_mapping(mem_base(kind, 0), map).map_err(io("domain"))?,
                );
                shared_mem = Some(fd);
            }
        }
        let mut pages = Vec::new();
        for i in 0..n {
            let fd = memfd(&format!("ism-{}-regs{i}", opts.name), REGS_SIZE as u64)
                .map_err(io("memfd"))?;
            let map = SharedMapping::map_shared(&fd, REGS_SIZE).map_err(io("mmap"))?;
            pages.push(Arc::new(RegPage::new(map).map_err(io("register object"))?));
        }
        let peers = match kind {
            BoardKind::Lpar => None,
            BoardKind::Loopback => {
                let size = PeerTable::size(n).next_multiple_of(PAGE);
                let fd =
                    memfd(&format!("ism-{}-peers", opts.name), size as u64).map_err(io("memfd"))?;
                let map = SharedMapping::map_shared(&fd, size).map_err(io("mmap"))?;
                Some((
                    Arc::new(PeerTable::new(map, n).map_err(io("peer table"))?),
                    fd,
                ))
            }
        };
        let irqs = (0..n)
            .map(|i| ProcIrq {
                words: irq_words(peers.as_ref().map(|(t, _)| t), &pages, i),
            })
            .collect();
        let cfgs: Vec<FunctionConfig> = (0..n)
            .map(|i| FunctionConfig {
                gid: gid_of(kind, i),
                domain: DomainId(if kind == BoardKind::Lpar { i as u16 } else { 0 }),
            })
            .collect();
        let hw = ProcHw {
            memories,
            irqs,
            clock: BoardClock(Instant::now()),
            shared: kind == BoardKind::Loopback,
        };
        let chid = match kind {
            BoardKind::Lpar => LPAR_CHID,
            BoardKind::Loopback => LOOPBACK_CHID,
        };
        let salt = {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (t as u32) ^ ((t >> 32) as u32).rotate_left(7) ^ std::process::id()
        };
        let device = crate::board::device_on_heap(|| Device::new(hw, chid, &cfgs, salt))
            .map_err(|e| BoardError::Invalid(format!("device: {e:?}")))?;
        // No function is attached yet.
        for i in 0..n {
            device.function_down(FunctionId(i as u16), DownReason::Disabled);
        }

        let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)
            .map_err(|e| BoardError::Io("socket".into(), e.into()))?;
        set_cloexec(&listener);
        let addr = SocketAddrUnix::new(&socket)
            .map_err(|e| BoardError::Io(format!("socket path {}", socket.display()), e.into()))?;
        rustix::net::bind(&listener, &addr)
            .map_err(|e| BoardError::Io(format!("bind {}", socket.display()), e.into()))?;
        if let Some(mode) = opts.socket_mode {
            rustix::fs::chmod(&socket, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(|e| BoardError::Io(format!("chmod {}", socket.display()), e.into()))?;
        }
        rustix::net::listen(&listener, 64)
            .map_err(|e| BoardError::Io("listen".into(), e.into()))?;
        // Keep other users' processes out of the board (and its memory objects).
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);

        let board = Self {
            slots: (0..n).map(|_| None).collect(),
            dmbs: Arc::default(),
            opts,
            socket,
            lock_file,
            _lock: lock,
            listener,
            device,
            pages: Arc::new(pages),
            shared_mem,
            peers,
            published: Arc::new(Published::new()),
            counters: Arc::new(BoardCounters::default()),
            started: SystemTime::now(),
            log: Mutex::new(log),
            name_conns: Vec::new(),
            names: NameTable::new(),
            next_name_conn: 0,
        };
        board.log(&format!(
            "board {} ({}, {} functions of {} MiB, CHID {:#06x}, spec version {}) listening on {}",
            board.opts.name,
            kind_name(kind),
            n,
            board.opts.memory >> 20,
            chid,
            layout::SPEC_VERSION,
            board.socket.display()
        ));
        if let Some(mode) = board.opts.socket_mode {
            board.log(&format!(
                "socket mode {mode:03o}: {}",
                // Connecting to a UNIX socket needs write permission on it (unix(7)); root
                // needs none.
                if mode & 0o002 != 0 && board.opts.kind == BoardKind::Loopback {
                    "every local user may attach (and sees the memory of all: a loopback board)"
                } else if mode & 0o002 != 0 {
                    "every local user may attach"
                } else if mode & 0o020 != 0 {
                    "the socket's group may attach"
                } else if mode & 0o200 != 0 {
                    "only the board's user may attach"
                } else {
                    "only root may attach (nobody has write permission on the socket)"
                }
            ));
        }
        Ok(board)
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The device.
    pub fn device(&self) -> &Arc<ProcDevice> {
        &self.device
    }

    fn log(&self, line: &str) {
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(l, "ism-sim board {}: {line}", self.opts.name);
        let _ = l.flush();
    }

    /// Serves hosts until `stop` becomes readable (a signal handler writes to it), then
    /// detaches every host (their waits end, their commands fail with "no device") and
    /// removes the socket.
    ///
    /// # Errors
    /// A failing `poll` or `accept`.
    pub fn run(mut self, stop: BorrowedFd<'_>) -> Result<(), BoardError> {
        let r = self.serve(stop);
        self.shutdown();
        r
    }

    fn serve(&mut self, stop: BorrowedFd<'_>) -> Result<(), BoardError> {
        // New connections wait here for their first message, so a client that connects and
        // says nothing delays no one (and is dropped after `FIRST_MESSAGE_TIMEOUT`).
        let mut pending: Vec<(OwnedFd, Instant)> = Vec::new();
        loop {
            let attached: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].is_some())
                .collect();
            let mut fds = Vec::with_capacity(attached.len() + pending.len() + 2);
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            fds.push(PollFd::new(&stop, PollFlags::IN));
            for &i in &attached {
                let a = self.slots[i].as_ref().expect("attached");
                fds.push(PollFd::new(&a.conn, PollFlags::IN));
            }
            for (c, _) in &pending {
                fds.push(PollFd::new(c, PollFlags::IN));
            }
            for (c, _) in &self.name_conns {
                fds.push(PollFd::new(c, PollFlags::IN));
            }
            let tick = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            let timeout = (!pending.is_empty()).then_some(&tick);
            match rustix::event::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(BoardError::Io("poll".into(), e.into())),
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            if !ready[1].is_empty() {
                return Ok(());
            }
            for (k, &i) in attached.iter().enumerate() {
                if !ready[k + 2].is_empty() {
                    self.on_host_message(i);
                }
            }
            let first_pending = attached.len() + 2;
            let first_names = first_pending + pending.len();
            let names_ready: Vec<bool> = (0..self.name_conns.len())
                .map(|k| !ready[first_names + k].is_empty())
                .collect();
            self.on_name_requests(&names_ready);
            let mut still = Vec::new();
            for (k, (c, since)) in std::mem::take(&mut pending).into_iter().enumerate() {
                if !ready[first_pending + k].is_empty() {
                    self.on_connection(c);
                } else if since.elapsed() < FIRST_MESSAGE_TIMEOUT {
                    still.push((c, since));
                }
            }
            pending = still;
            if !ready[0].is_empty() {
                match rustix::net::accept_with(&self.listener, rustix::net::SocketFlags::CLOEXEC) {
                    Ok(conn) => pending.push((conn, Instant::now())),
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(BoardError::Io("accept".into(), e.into())),
                }
            }
        }
    }

    /// A message or hang-up on function `i`'s connection.
    fn on_host_message(&mut self, i: usize) {
        let Some(a) = self.slots[i].as_ref() else {
            return;
        };
        let mut buf = [0u8; 64];
        let r = rustix::net::recv(&a.conn, &mut buf, RecvFlags::DONTWAIT);
        match r {
            Ok((n, _)) if n == layout::CONTROL_MSG_LEN && buf[..8] == layout::BYE_MAGIC => {
                self.detach(i, DownReason::Disabled);
            }
            // A hang-up (end of file) without BYE: the host process is gone.
            Ok((0, _)) => self.detach(i, DownReason::Crash),
            Ok(_) => {
                let pid = a.pid;
                self.log(&format!(
                    "function {i} (pid {pid}) sent an unknown control message; ignored"
                ));
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(_) => self.detach(i, DownReason::Crash),
        }
    }

    /// Requests (or hang-ups) on the name-service connections marked in `ready`.
    fn on_name_requests(&mut self, ready: &[bool]) {
        let mut gone = Vec::new();
        for (k, &r) in ready.iter().enumerate() {
            if !r {
                continue;
            }
            let (conn, id) = &self.name_conns[k];
            let mut buf = [0u8; 64];
            match recv_name_request(conn, &mut buf) {
                Ok((0, _)) => gone.push(k),
                Ok((n, fd)) => {
                    let (reply, out) = self.names.handle_with(*id, &buf[..n], fd);
                    let fds: Vec<BorrowedFd<'_>> = out.iter().map(|f| f.as_fd()).collect();
                    if send_with_fds(conn, reply.as_bytes(), &fds).is_err() {
                        gone.push(k);
                    }
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(_) => gone.push(k),
            }
        }
        for k in gone.into_iter().rev() {
            let (_, id) = self.name_conns.swap_remove(k);
            self.names.drop_connection(id);
        }
    }

    /// Takes function `i` away from its host: stops its worker, brings the function down
    /// (its DMBs freed, its peers told), tells the host's waits to end.
    fn detach(&mut self, i: usize, reason: DownReason) {
        let Some(mut a) = self.slots[i].take() else {
            return;
        };
        a.stop.store(true, Ordering::Release);
        let page = &self.pages[i];
        page.word(regs::DOORBELL).fetch_add(1, Ordering::SeqCst);
        futex_wake(page.word(regs::DOORBELL));
        if let Some(w) = a.worker.take() {
            let _ = w.join();
        }
        let owned: Vec<_> = self
            .dmbs
            .records()
            .into_iter()
            .filter(|r| usize::from(r.owner) == i)
            .collect();
        let freed = owned.len();
        if let Some((t, _)) = &self.peers {
            // Moves this host left unfinished (it died) end nothing; nobody waits for them.
            for w in t.moving(i) {
                w.store(0, Ordering::SeqCst);
            }
        }
        // Its DMBs go: nobody moves into them directly any more (spec 5.5), and moves in
        // flight end before the device frees them.
        let peers = self.peers.as_ref().map(|(t, _)| &**t);
        // One time limit for all of them: a host that holds moving words on purpose
        // delays this detach by at most MOVE_WAIT, however many DMBs there are.
        let deadline = Instant::now() + MOVE_WAIT;
        for r in &owned {
            withdraw_attachments(&self.pages, r.attached, r.token);
            if let Some(t) = peers {
                self.published.withdraw(t, r.token, deadline);
            }
        }
        self.device.function_down(FunctionId(i as u16), reason);
        self.dmbs.function_down(i as u16);
        page.word(regs::BOARD_STATE)
            .store(layout::BOARD_STOPPED, Ordering::SeqCst);
        let irq = irq_words(self.peers.as_ref().map(|(t, _)| t), &self.pages, i);
        if let Some((t, _)) = &self.peers {
            if let Some(w) = t.word64(i, peers::SBA) {
                w.store(0, Ordering::SeqCst);
            }
        }
        irq.irq().store(1, Ordering::SeqCst);
        futex_wake(irq.irq());
        page.word(regs::PROGRESS).fetch_add(1, Ordering::SeqCst);
        futex_wake(page.word(regs::PROGRESS));
        let gid = gid_of(self.opts.kind, i).0;
        match reason {
            DownReason::Crash => {
                self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                self.log(&format!(
                    "crash: function {i} (gid {gid:#018x}, pid {}) hung up without BYE: partition crash, {freed} DMB(s) freed, peers told (DEV_GID_ERR_STATE)",
                    a.pid
                ));
            }
            DownReason::Disabled => {
                self.counters.detaches.fetch_add(1, Ordering::Relaxed);
                self.log(&format!(
                    "detach: function {i} (gid {gid:#018x}, pid {}), {freed} DMB(s) freed, peers told (DEV_GID_DISABLED)",
                    a.pid
                ));
            }
        }
        drop(a.conn);
    }

    /// A new connection: a HELLO (attach) or a STATUS query.
    fn on_connection(&mut self, conn: OwnedFd) {
        let _ = rustix::net::sockopt::set_socket_timeout(
            &conn,
            rustix::net::sockopt::Timeout::Send,
            Some(Duration::from_secs(2)),
        );
        let mut buf = [0u8; 64];
        let n = match rustix::net::recv(&conn, &mut buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(_) => return,
        };
        if n == 8 && buf[..8] == layout::NAMES_MAGIC {
            if rustix::net::send(&conn, &layout::NAMES_MAGIC, SendFlags::NOSIGNAL).is_ok() {
                let id = self.next_name_conn;
                self.next_name_conn += 1;
                self.name_conns.push((conn, id));
            }
            return;
        }
        if n == 8 && buf[..8] == layout::STATUS_MAGIC {
            let json = self.status_json().to_string();
            let _ = rustix::net::send(&conn, json.as_bytes(), SendFlags::NOSIGNAL);
            return;
        }
        let hello = (n == core::mem::size_of::<Hello>())
            .then(|| Hello::read_from_bytes(&buf[..n]).ok())
            .flatten()
            .filter(|h| h.magic == layout::HELLO_MAGIC);
        let Some(hello) = hello else {
            self.refuse(
                &conn,
                layout::STATUS_BAD_HELLO,
                "the first message was not a HELLO",
            );
            return;
        };
        if hello.version.get() != layout::SPEC_VERSION {
            let msg = format!(
                "spec version mismatch: the board speaks version {}, the host version {}",
                layout::SPEC_VERSION,
                hello.version.get()
            );
            self.refuse(&conn, layout::STATUS_VERSION, &msg);
            return;
        }
        let Some(i) = self.slots.iter().position(Option::is_none) else {
            let msg = format!(
                "board {} is full: all {} functions are attached (--max-functions {})",
                self.opts.name,
                self.slots.len(),
                self.slots.len()
            );
            self.refuse(&conn, layout::STATUS_FULL, &msg);
            return;
        };
        let pid = hello.pid.get();
        match self.attach(i, conn, pid) {
            Ok(()) => {
                self.counters.attaches.fetch_add(1, Ordering::Relaxed);
                self.log(&format!(
                    "attach: function {i} (gid {:#018x}) to pid {pid}",
                    gid_of(self.opts.kind, i).0
                ));
            }
            Err(e) => self.log(&format!("attach of pid {pid} failed: {e}")),
        }
    }

    fn refuse(&self, conn: &OwnedFd, status: u32, message: &str) {
        self.counters.refusals.fetch_add(1, Ordering::Relaxed);
        self.log(&format!("refused an attach: {message}"));
        let mut w = Welcome::new_zeroed_welcome();
        w.status = status.into();
        w.message = layout::message_field(message);
        let _ = rustix::net::send(conn, w.as_bytes(), SendFlags::NOSIGNAL);
    }

    /// Sets function `i` up for a new host and sends it the WELCOME with its objects.
    fn attach(&mut self, i: usize, conn: OwnedFd, pid: u32) -> std::io::Result<()> {
        let kind = self.opts.kind;
        let mem_size = self.opts.memory;
        // A new partition boots: fresh memory (LPAR: a new object, so a former host that
        // kept its mapping sees nothing of the new one; loopback: its range zeroed).
        let mem_fd = match kind {
            BoardKind::Lpar => {
                let fd = memfd(&format!("ism-{}-mem{i}", self.opts.name), mem_size as u64)?;
                self.device.board().memories[i]
                    .mapping()
                    .replace_backing(&fd)?;
                fd
            }
            BoardKind::Loopback => {
                let shared = self.shared_mem.as_ref().expect("loopback memory");
                rustix::fs::fallocate(
                    shared,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    (i * mem_size) as u64,
                    mem_size as u64,
                )?;
                shared.try_clone()?
            }
        };
        let regs_fd = memfd(&format!("ism-{}-regs{i}", self.opts.name), REGS_SIZE as u64)?;
        let page = self.pages[i].clone();
        page.mapping().replace_backing(&regs_fd)?;
        let gid = gid_of(kind, i);
        page.initialise(i as u32, gid.0);
        if let Some((t, _)) = &self.peers {
            // Whatever a former host of `i` left (pollers, sleepers, its SBA) is gone; its
            // direct moves still count.
            for (gone, off) in self.counters.direct_gone.iter().zip(DIRECT_COUNTERS) {
                let n = t.word64(i, off).map_or(0, |w| w.load(Ordering::Relaxed));
                gone.fetch_add(n, Ordering::Relaxed);
            }
            t.reset(i);
        }

        let (map_size, pool_base) = match kind {
            BoardKind::Lpar => (mem_size, mem_base(kind, i)),
            BoardKind::Loopback => (
                mem_size * self.slots.len(),
                mem_base(kind, 0) + (i * mem_size) as u64,
            ),
        };
        let mut w = Welcome::new_zeroed_welcome();
        w.kind = match kind {
            BoardKind::Lpar => layout::KIND_LPAR,
            BoardKind::Loopback => layout::KIND_LOOPBACK,
        }
        .into();
        w.function = (i as u32).into();
        w.gid = gid.0.into();
        w.chid = self.device.chid().into();
        w.mem_base = mem_base(kind, i).into();
        w.mem_size = (map_size as u64).into();
        w.pool_base = pool_base.into();
        w.pool_size = (mem_size as u64).into();
        w.regs_size = (REGS_SIZE as u64).into();
        w.ring_slots = RING_SLOTS.into();
        w.max_functions = (self.slots.len() as u32).into();

        self.device.function_up(FunctionId(i as u16));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let ctx = WorkerCtx {
                dev: self.device.clone(),
                f: FunctionId(i as u16),
                pages: self.pages.clone(),
                peers: self.peers.as_ref().map(|(t, _)| t.clone()),
                published: self.published.clone(),
                stop: stop.clone(),
                spin: self.opts.spin,
                dmbs: self.dmbs.clone(),
            };
            std::thread::Builder::new()
                .name(format!("ism-fn{i}"))
                .spawn(move || worker(&ctx))?
        };
        let mut fds = vec![mem_fd.as_fd(), regs_fd.as_fd()];
        if let Some((_, fd)) = &self.peers {
            fds.push(fd.as_fd());
        }
        let sent = send_with_fds(&conn, w.as_bytes(), &fds);
        self.slots[i] = Some(Attached {
            conn,
            pid,
            since: SystemTime::now(),
            stop,
            worker: Some(worker),
        });
        if let Err(e) = sent {
            self.detach(i, DownReason::Disabled);
            return Err(e);
        }
        Ok(())
    }

    /// What `ism-sim board status` prints.
    pub fn status_json(&self) -> serde_json::Value {
        use serde_json::json;
        let s = self.device.stats();
        let c = &self.counters;
        // Direct moves (loopback, spec section 5.5): of hosts gone, plus those of attached
        // hosts (a host's entry is reset only when the next host attaches). Hosts write
        // these words: any value may be there, so the sums saturate.
        let mut direct = [0u64; 3];
        for (k, off) in DIRECT_COUNTERS.into_iter().enumerate() {
            direct[k] = c.direct_gone[k].load(Ordering::Relaxed);
            if let Some((t, _)) = &self.peers {
                for i in 0..t.entries() {
                    let n = t.word64(i, off).map_or(0, |w| w.load(Ordering::Relaxed));
                    direct[k] = direct[k].saturating_add(n);
                }
            }
        }
        let functions: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let a = a.as_ref()?;
                Some(json!({
                    "function": i,
                    "gid": format!("{:#018x}", gid_of(self.opts.kind, i).0),
                    "pid": a.pid,
                    "online": self.device.is_online(FunctionId(i as u16)),
                    "attached_secs": a.since.elapsed().map_or(0, |d| d.as_secs()),
                }))
            })
            .collect();
        json!({
            "name": self.opts.name,
            "kind": kind_name(self.opts.kind),
            "pid": std::process::id(),
            "spec_version": layout::SPEC_VERSION,
            "chid": format!("{:#06x}", self.device.chid()),
            "max_functions": self.slots.len(),
            "memory_per_function": self.opts.memory,
            "uptime_secs": self.started.elapsed().map_or(0, |d| d.as_secs()),
            "functions": functions,
            "dmbs_in_use": self.device.dmbs_in_use(),
            "dmbs": self.dmbs.records().iter().map(|r| json!({
                "token": format!("{:#018x}", r.token),
                "owner": r.owner,
                "len": r.len,
                "sba_idx": r.sba_idx,
                "writer": format!("{:#018x}", r.writer),
                "vlan": r.vlan,
                "attached_by": (0..64).filter(|b| r.attached & (1u64 << b) != 0).collect::<Vec<_>>(),
                "unregistered": r.unregistered,
                "direct": self.published.contains(r.token),
            })).collect::<Vec<_>>(),
            "counters": {
                "commands": s.commands,
                "moves": s.moves.saturating_add(direct[0]),
                "bytes_moved": s.bytes_moved.saturating_add(direct[1]),
                "moves_refused": s.moves_refused,
                "signals": s.signals.saturating_add(direct[2]),
                "direct_moves": direct[0],
                "direct_bytes": direct[1],
                "direct_signals": direct[2],
                "events": s.events,
                "interrupts": s.interrupts,
                "attaches": c.attaches.load(Ordering::Relaxed),
                "detaches": c.detaches.load(Ordering::Relaxed),
                "crashes": c.crashes.load(Ordering::Relaxed),
                "refusals": c.refusals.load(Ordering::Relaxed),
            },
            "names": {
                "connections": self.name_conns.len(),
                "listeners": self.names.sizes().0,
                "clients": self.names.sizes().1,
                "requests": self.names.counters().requests,
                "lookups": self.names.counters().lookups,
                "lookups_found": self.names.counters().lookups_found,
                "clients_taken": self.names.counters().clients_taken,
                "clients_not_found": self.names.counters().clients_not_found,
                "bells": self.names.bells_held(),
                "bells_passed": self.names.counters().bells_passed,
            },
        })
    }

    fn shutdown(&mut self) {
        for i in 0..self.slots.len() {
            self.detach(i, DownReason::Disabled);
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.lock_file);
        self.log("stopped; socket removed");
    }
}

impl Welcome {
    fn new_zeroed_welcome() -> Self {
        let mut w = <Welcome as zerocopy::FromZeros>::new_zeroed();
        w.magic = layout::WELCOME_MAGIC;
        w.version = layout::SPEC_VERSION.into();
        w
    }
}

fn kind_name(kind: BoardKind) -> &'static str {
    match kind {
        BoardKind::Lpar => "lpar",
        BoardKind::Loopback => "loopback",
    }
}

fn set_cloexec(fd: &OwnedFd) {
    let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
}

/// Takes the board name: the lock file must not be locked by a live board; a socket left
/// by a killed board is removed.
fn take_name(
    name: &str,
    socket: &Path,
    lock_file: &Path,
    log: &mut Box<dyn std::io::Write + Send>,
) -> Result<File, BoardError> {
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_file)
        .map_err(io(format!("open {}", lock_file.display())))?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = std::fs::read_to_string(lock_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        return Err(BoardError::AlreadyRunning {
            name: name.to_owned(),
            pid,
        });
    }
    if socket.exists() {
        let old = std::fs::read_to_string(lock_file).unwrap_or_default();
        let _ =
            writeln!(
            log,
            "ism-sim board {name}: removing the stale socket {} of a board that is gone (pid {})",
            socket.display(),
            if old.trim().is_empty() { "unknown" } else { old.trim() }
        );
        std::fs::remove_file(socket).map_err(io(format!("remove stale {}", socket.display())))?;
    }
    lock.set_len(0).map_err(io("truncate lock file"))?;
    write!(lock, "{}", std::process::id()).map_err(io("write lock file"))?;
    Ok(lock)
}

/// One name-service request (section 3.5) into `buf`, without waiting: its length (0: the
/// host hung up) and the descriptor that came with it (the first; any others are closed).
fn recv_name_request(
    conn: &OwnedFd,
    buf: &mut [u8],
) -> rustix::io::Result<(usize, Option<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let r = rustix::net::recvmsg(
        conn,
        &mut iov,
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            for f in it {
                fd.get_or_insert(f);
            }
        }
    }
    Ok((r.bytes.min(iov[0].len()), fd))
}

fn send_with_fds(conn: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("ancillary buffer too small"));
    }
    let iov = [std::io::IoSlice::new(bytes)];
    let n = rustix::net::sendmsg(conn, &iov, &mut control, SendFlags::NOSIGNAL)?;
    if n != bytes.len() {
        return Err(std::io::Error::other("short send"));
    }
    Ok(())
}

// ------------------------------------------------------------------ the worker

/// What a function's worker serves with.
struct WorkerCtx {
    dev: Arc<ProcDevice>,
    f: FunctionId,
    /// Every function's register object (a DMB's unregistration withdraws its attachers'
    /// attachment words).
    pages: Arc<Vec<Arc<RegPage>>>,
    /// The peer table of a loopback board.
    peers: Option<Arc<PeerTable>>,
    published: Arc<Published>,
    stop: Arc<AtomicBool>,
    spin: Duration,
    dmbs: Arc<DmbShadow>,
}

/// Serves function `f`: its ring (store-blocks, in order) and its command area, until
/// `stop`. Spins for `spin` after the last work, then sleeps on the doorbell.
fn worker(ctx: &WorkerCtx) {
    let (dev, f, stop, spin, dmbs) = (&*ctx.dev, ctx.f, &*ctx.stop, ctx.spin, &*ctx.dmbs);
    let page = &*ctx.pages[f.index()];
    let mut buf = vec![0u8; SLOT_DATA];
    let mut poisoned = Poisoned::new();
    let mut phase = SpinPhase::new(spin);
    while !stop.load(Ordering::Acquire) {
        let mut did = drain_ring(dev, f, page, &mut buf, &mut poisoned);
        let seq = page.word(regs::CMD_SEQ).load(Ordering::Acquire);
        if seq != page.word(regs::CMD_DONE).load(Ordering::Relaxed) {
            // Store-blocks posted before the command come first (PCI ordering).
            drain_ring(dev, f, page, &mut buf, &mut poisoned);
            // As `Device::doorbell`: the area is read once (a host may change it meanwhile).
            let mut req = [0u8; COMMAND_AREA_SIZE];
            page.command().read_bytes(&mut req);
            let mut resp = [0u8; COMMAND_AREA_SIZE];
            let n = dev.execute(f, &req, &mut resp);
            page.command().write_bytes(0, &resp[..n]);
            if let Some(peers) = &ctx.peers {
                publish_for_direct_moves(
                    f.index(),
                    &req,
                    &resp[..n],
                    &ctx.pages,
                    peers,
                    &ctx.published,
                    dmbs,
                );
            }
            dmbs.observe(f.0, &req, &resp[..n]);
            page.word(regs::CMD_DONE).store(seq, Ordering::Release);
            did = true;
        }
        if did {
            page.word(regs::PROGRESS).fetch_add(1, Ordering::SeqCst);
            if page.word(regs::PROGRESS_WAITERS).load(Ordering::SeqCst) > 0 {
                futex_wake(page.word(regs::PROGRESS));
            }
            phase = SpinPhase::new(spin);
            continue;
        }
        if phase.spin() {
            continue;
        }
        let seen = page.word(regs::DOORBELL).load(Ordering::SeqCst);
        page.word(regs::BOARD_SLEEPING).store(1, Ordering::SeqCst);
        if !has_work(page) && !stop.load(Ordering::Acquire) {
            // The timeout is only a safety net: the host and `detach` wake this futex.
            futex_wait(page.word(regs::DOORBELL), seen, Duration::from_secs(2));
        }
        page.word(regs::BOARD_SLEEPING).store(0, Ordering::SeqCst);
        phase = SpinPhase::new(spin);
    }
}

/// Keeps what direct moves on a loopback board rely on (spec section 5.5) in step with a
/// command function `f` just executed (`req`, answered with `resp`): its SBA's address in
/// the peer table, the DMB table (a DMB it registered is published, one it unregistered
/// withdrawn once no move into it is in flight), its attachment words, and the attachment
/// words of the functions that attached a DMB it unregistered.
#[allow(clippy::too_many_arguments)]
fn publish_for_direct_moves(
    f: usize,
    req: &[u8],
    resp: &[u8],
    pages: &[Arc<RegPage>],
    peers: &PeerTable,
    published: &Published,
    dmbs: &DmbShadow,
) {
    use super::dmbs::{be32, be64};
    use ism_firmware::wire::opcode::Opcode;
    let ok = resp.get(4..6) == Some(&[0, 0][..]);
    let op = Opcode::from_raw(be32(req, 0));
    let page = &pages[f];
    match op {
        Some(Opcode::RegSba) if ok => {
            if let Some(w) = peers.word64(f, peers::SBA) {
                w.store(be64(req, 8), Ordering::SeqCst);
            }
        }
        Some(Opcode::UnregSba) if ok => {
            if let Some(w) = peers.word64(f, peers::SBA) {
                w.store(0, Ordering::SeqCst);
            }
        }
        Some(Opcode::AttachDmb) => {
            let token = be64(req, 8);
            // A DMB on a VLAN is moved into by the device only (which checks the writer's
            // VLANs on every move).
            let owner = dmbs
                .get(token)
                .filter(|r| r.vlan.is_none())
                .map(|r| u32::from(r.owner));
            let slot = match owner {
                Some(_) if ok && token != 0 => (0..ATTACHMENT_WORDS).find(|&k| {
                    page.word64(regs::ATTACHMENTS + 8 * k)
                        .compare_exchange(0, token, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                }),
                _ => None,
            };
            page.word(regs::ATTACH_OWNER)
                .store(owner.unwrap_or(u32::MAX), Ordering::Relaxed);
            page.word(regs::ATTACH_SLOT)
                .store(slot.map_or(NO_ATTACH_SLOT, |k| k as u32), Ordering::Relaxed);
        }
        // A DMB of no VLAN (the device checks the writer's VLANs on every move).
        Some(Opcode::RegDmb) if ok && be32(req, 24) == 0 => published.publish(
            peers,
            Entry {
                token: be64(resp, 8),
                addr: be64(req, 8),
                rgid: be64(req, 32),
                len: be32(req, 16),
                owner: f as u32,
                sba_idx: be32(req, 20),
            },
        ),
        Some(Opcode::DetachDmb) if ok => {
            withdraw_attachments(pages, 1 << f, be64(req, 8));
        }
        Some(Opcode::UnregDmb) if ok => {
            published.withdraw(peers, be64(req, 8), Instant::now() + MOVE_WAIT);
            if let Some(r) = dmbs.get(be64(req, 8)) {
                withdraw_attachments(pages, r.attached, r.token);
            }
        }
        _ => {}
    }
}

/// Clears the attachment words holding `token` of every function in `attachers` (bit `i`
/// = function `i`): no direct move into that DMB through an attachment starts afterwards
/// (one in flight may still land: the device keeps an attached DMB allocated until its
/// last detach).
fn withdraw_attachments(pages: &[Arc<RegPage>], attachers: u64, token: u64) {
    if token == 0 {
        return;
    }
    for (j, page) in pages.iter().enumerate() {
        if j < 64 && attachers & (1 << j) != 0 {
            for k in 0..ATTACHMENT_WORDS {
                let _ = page.word64(regs::ATTACHMENTS + 8 * k).compare_exchange(
                    token,
                    0,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// A DMB-table entry (spec section 5.5).
struct Entry {
    token: u64,
    addr: u64,
    rgid: u64,
    len: u32,
    owner: u32,
    sba_idx: u32,
}

/// Which entries of a loopback board's DMB table (spec section 5.5) hold which tokens.
struct Published(Mutex<PublishedInner>);

struct PublishedInner {
    by_token: std::collections::HashMap<u64, usize>,
    free: Vec<usize>,
}

impl Published {
    fn new() -> Self {
        Self(Mutex::new(PublishedInner {
            by_token: Default::default(),
            free: (0..dmb_table::ENTRIES).rev().collect(),
        }))
    }

    /// Publishes a DMB (after its REG_DMB succeeded, before `CMD_DONE`): its fields, then
    /// its token (release), then `PUBLISHED += 1`. A full table publishes nothing (the
    /// ring still serves every move).
    fn publish(&self, t: &PeerTable, e: Entry) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if e.token == 0 || p.by_token.contains_key(&e.token) {
            return;
        }
        let Some(i) = p.free.pop() else {
            return;
        };
        let set64 = |off, v| {
            if let Some(w) = t.dmb_word64(i, off) {
                w.store(v, Ordering::Relaxed);
            }
        };
        let set32 = |off, v| {
            if let Some(w) = t.dmb_word(i, off) {
                w.store(v, Ordering::Relaxed);
            }
        };
        set64(dmb_table::ADDR, e.addr);
        set64(dmb_table::RGID, e.rgid);
        set32(dmb_table::LEN, e.len);
        set32(dmb_table::OWNER, e.owner);
        set32(dmb_table::SBA_IDX, e.sba_idx);
        if let Some(w) = t.dmb_word64(i, dmb_table::TOKEN) {
            w.store(e.token, Ordering::SeqCst);
        }
        t.published().fetch_add(1, Ordering::SeqCst);
        p.by_token.insert(e.token, i);
    }

    /// Whether `token` is published (hosts may move into it directly).
    fn contains(&self, token: u64) -> bool {
        let p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.by_token.contains_key(&token)
    }

    /// Withdraws `token`'s entry (before UNREG_DMB is answered, and when its owner goes
    /// down): its token word to 0, then waits until no host is in a direct move into it
    /// (or `deadline`); only then may the entry be used again.
    fn withdraw(&self, t: &PeerTable, token: u64, deadline: Instant) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = p.by_token.remove(&token) else {
            return;
        };
        if let Some(w) = t.dmb_word64(i, dmb_table::TOKEN) {
            w.store(0, Ordering::SeqCst);
        }
        wait_for_moves(t, token, deadline);
        p.free.push(i);
    }
}

/// Longest wait for direct moves in flight (a move is at most 4096 bytes).
const MOVE_WAIT: Duration = Duration::from_millis(100);

/// Waits, after `token` was withdrawn (a sequentially consistent store), until no host's
/// moving word (spec section 5.5) holds it: a direct move that saw the token before the
/// withdrawal has then finished. Bounded by `deadline` ([`MOVE_WAIT`] from the withdrawal):
/// a host stopped in the middle of a move (a debugger, a process the board has not yet seen
/// die) or one that holds its words on purpose cannot stop the board.
fn wait_for_moves(t: &PeerTable, token: u64, deadline: Instant) {
    std::sync::atomic::fence(Ordering::SeqCst);
    for f in 0..t.entries() {
        for w in t.moving(f) {
            while w.load(Ordering::SeqCst) == token && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
    }
}

fn has_work(page: &RegPage) -> bool {
    page.word(regs::SQ_HEAD).load(Ordering::SeqCst)
        != page.word(regs::SQ_TAIL).load(Ordering::SeqCst)
        || page.word(regs::CMD_SEQ).load(Ordering::SeqCst)
            != page.word(regs::CMD_DONE).load(Ordering::SeqCst)
}

/// Tokens whose posted store-blocks were refused, with the status: later store-blocks
/// to the same DMB are refused with it (not executed) up to and including the next
/// signalling one, which reports it. So a batch "data, then signal" never signals data that
/// did not land, and one connection's refusal does not touch another DMB's stores.
type Poisoned = std::collections::HashMap<u64, u32>;

/// Most poisoned tokens remembered (a host that refuses itself more is only hurting itself).
const MAX_POISONED: usize = 64;

/// Executes the ring's entries in order, writing each entry's status; returns whether
/// there were any.
fn drain_ring(
    dev: &ProcDevice,
    f: FunctionId,
    page: &RegPage,
    buf: &mut [u8],
    poisoned: &mut Poisoned,
) -> bool {
    let head = page.word(regs::SQ_HEAD).load(Ordering::Acquire);
    let mut tail = page.word(regs::SQ_TAIL).load(Ordering::Relaxed);
    if head == tail {
        return false;
    }
    let err = page.word(regs::SQ_ERROR);
    let report = |status: u32| {
        let _ = err.compare_exchange(0, status, Ordering::AcqRel, Ordering::Relaxed);
    };
    if head.wrapping_sub(tail) > RING_SLOTS {
        // A host that claims more entries than slots: drop them all, each descriptor
        // saying so (a waiter for a signalled entry reads that, not a stale status).
        report(layout::SQ_ERR_MALFORMED);
        for slot in 0..RING_SLOTS {
            page.desc_status(slot)
                .store(layout::SQ_ERR_MALFORMED, Ordering::Relaxed);
        }
        page.word(regs::SQ_TAIL).store(head, Ordering::Release);
        return true;
    }
    while tail != head {
        let req = page.desc_request(tail).load(Ordering::Relaxed);
        let len = page.desc_len(tail).load(Ordering::Relaxed) as usize;
        let token = req & 0xFFFF_FFFF_0000_0000;
        let signal = req & ism_firmware::wire::move_request::SIGNAL_FLAG != 0;
        let status = if len > SLOT_DATA {
            layout::SQ_ERR_MALFORMED
        } else if let Some(&s) = poisoned.get(&token) {
            s
        } else {
            let _ = page.read_slot(tail, &mut buf[..len]);
            match dev.store_block(f, req, &buf[..len]) {
                Ok(()) => 0,
                Err(e) => layout::SQ_ERR_REFUSED | e as u32,
            }
        };
        if signal {
            poisoned.remove(&token);
        } else if status != 0 {
            if poisoned.len() >= MAX_POISONED {
                poisoned.clear();
            }
            poisoned.insert(token, status);
            report(status);
        }
        page.desc_status(tail).store(status, Ordering::Relaxed);
        tail = tail.wrapping_add(1);
        page.word(regs::SQ_TAIL).store(tail, Ordering::Release);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_objects_cannot_shrink_or_grow_but_can_be_zeroed() {
        let fd = memfd("ism-test", 8192).unwrap();
        assert!(rustix::fs::ftruncate(&fd, 0).is_err(), "shrunk");
        assert!(rustix::fs::ftruncate(&fd, 1 << 20).is_err(), "grew");
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        rustix::fs::fallocate(
            &fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            0,
            4096,
        )
        .unwrap();
    }
}
