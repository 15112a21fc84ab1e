//! Boards: the device plus the partitions it connects.
//!
//! * [`SimBoard::lpar`]: `n` partitions, each its own memory domain and ISM function (distinct
//!   GIDs, one CHID): the device copies between domains, as between LPARs.
//! * [`SimBoard::loopback`]: one memory domain and one function with the reserved CHID 0xFFFF,
//!   where the device offers ATTACH_DMB (Linux's loopback-ism with no-copy).
//!
//! A board can crash or deactivate a partition ([`SimBoard::crash`], [`SimBoard::disable`]): the
//! device drops that function's DMBs (moves in flight finish first, none follows), its
//! peers get device events, and its commands and moves fail until [`SimBoard::restart`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ism_firmware::{Device, DownReason, FunctionConfig, StatsSnapshot};
use ism_hal::regs::{FunctionRegisters, COMMAND_AREA_SIZE};
use ism_hal::{Clock, DevAddr, DmaMemory, DomainId, FunctionId, Gid};
use ism_host_driver::ism::{Bus, BusError, HostMemory, IsmDriver, IsmError};

use crate::fault::{FaultConfig, FaultCounts, FaultInjector};
use crate::irq::{InlineScope, IrqLine};
use crate::memory::{DmaPool, MemoryDomain};
use crate::trace::Tracer;

/// Stack of the thread that builds a device ([`device_on_heap`]); reserved address space,
/// only the pages used are backed.
const DEVICE_BUILD_STACK: usize = 16 << 20;

/// Builds a device (`new`, which calls `Device::new`) and puts it into an `Arc`, on a thread
/// of its own with a large stack. `Device::new` returns the device by value, its tables take
/// a few hundred KiB (a cache line per DMB slot: `ism_firmware::line`), and the copies on the
/// way into the `Arc` are several: inlined into the callers of a board's constructor they
/// took all of a test thread's 2 MiB stack. Where no thread can be started, it builds on
/// the caller's.
pub(crate) fn device_on_heap<T: Send + Sync, E: Send>(
    new: impl FnOnce() -> Result<T, E> + Send,
) -> Result<Arc<T>, E> {
    let mut new = Some(new);
    let built = std::thread::scope(|s| {
        let builder = std::thread::Builder::new()
            .name("ism-device".into())
            .stack_size(DEVICE_BUILD_STACK);
        let new = &mut new;
        let job = builder.spawn_scoped(s, move || new.take().map(build));
        match job.map(|h| h.join()) {
            Ok(Ok(built)) => built,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => None, // not started: `new` is still here
        }
    });
    match (built, new.take()) {
        (Some(r), _) => r,
        (None, Some(f)) => build(f),
        (None, None) => unreachable!("a job that ran returns what it built"),
    }
}

/// Runs `new` and moves the result into an `Arc`; never inlined, so that a caller's frame
/// holds no room for the device's copies (see [`device_on_heap`]).
#[inline(never)]
fn build<T, E>(new: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
    new().map(Arc::new)
}

/// Most functions a simulated device has.
pub const MAX_FUNCTIONS: usize = 8;
/// DMB table size of a simulated device.
pub const MAX_DMBS: usize = 4096;
/// CHID of LPAR boards.
pub const LPAR_CHID: u16 = 0x0D10;
/// CHID of the loopback board (Linux's loopback-ism).
pub use ism_abi::chid::LOOPBACK_CHID;
/// Default memory of one partition.
pub const DEFAULT_PARTITION_MEMORY: usize = 256 << 20;

/// The device type the simulator runs.
pub type SimDevice = Device<SimHw, MAX_FUNCTIONS, MAX_DMBS>;

/// The HAL the firmware sees on this board.
pub struct SimHw {
    memories: Vec<Arc<MemoryDomain>>,
    irqs: Vec<Arc<IrqLine>>,
    clock: SimClock,
    shared: bool,
}

/// Nanoseconds since the board was built.
pub struct SimClock(Instant);

impl Clock for SimClock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

impl ism_hal::Board for SimHw {
    type Memory = MemoryDomain;
    type Irq = IrqLine;
    type Clock = SimClock;

    fn memory(&self, domain: DomainId) -> Option<&MemoryDomain> {
        self.memories.get(domain.0 as usize).map(|m| &**m)
    }
    fn irq(&self, function: FunctionId) -> Option<&IrqLine> {
        self.irqs.get(function.index()).map(|l| &**l)
    }
    fn clock(&self) -> &SimClock {
        &self.clock
    }
    fn may_map(&self, a: DomainId, b: DomainId) -> bool {
        self.shared && a == b
    }
}

/// Which kind of board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardKind {
    /// Separate partitions.
    Lpar,
    /// One shared memory, no-copy offered.
    Loopback,
}

/// Board construction options.
#[derive(Clone, Debug)]
pub struct BoardConfig {
    /// Memory per partition (domain) in bytes.
    pub partition_memory: usize,
    /// How long an interrupt waiter spins before sleeping.
    pub irq_spin: Duration,
    /// Record a trace.
    pub trace: bool,
    /// Token salt (`None`: from the clock).
    pub token_salt: Option<u32>,
    /// Faults to inject.
    pub faults: FaultConfig,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            partition_memory: DEFAULT_PARTITION_MEMORY,
            irq_spin: Duration::from_micros(5),
            trace: false,
            token_salt: None,
            faults: FaultConfig::default(),
        }
    }
}

/// The partition OS's view of its memory: the domain and its DMA allocator.
#[derive(Clone)]
pub struct SimHostMemory {
    memory: Arc<MemoryDomain>,
    pool: Arc<DmaPool>,
    epoch: u64,
}

impl HostMemory for SimHostMemory {
    type Memory = MemoryDomain;

    fn memory(&self) -> &MemoryDomain {
        &self.memory
    }

    fn dma_alloc(&self, size: usize, align: usize) -> Option<DevAddr> {
        self.pool.alloc_zeroed(&self.memory, size, align)
    }

    fn dma_free(&self, addr: DevAddr, size: usize) {
        self.pool.free_in(self.epoch, addr, size as u64);
    }
}

impl SimHostMemory {
    /// Bytes still free in the partition.
    pub fn free_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }
}

/// The host-visible interface of one function: its register block (commands) and the
/// store-block path (moves).
#[derive(Clone)]
pub struct SimPort {
    device: Arc<SimDevice>,
    function: FunctionId,
    irq: Arc<IrqLine>,
    regs: Arc<std::sync::Mutex<FunctionRegisters>>,
    trace: Option<(Arc<Tracer>, u32)>,
    faults: Option<Arc<FaultInjector>>,
}

impl SimPort {
    /// The function this port reaches.
    pub fn function(&self) -> FunctionId {
        self.function
    }
}

impl Bus for SimPort {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        // First, so that it ends last: after the register lock below is released.
        let _irqs = InlineScope::enter();
        let t0 = self.trace.as_ref().map(|(t, _)| t.now_us());
        let cmd = u32::from_be_bytes(
            request
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        );
        if self.faults.as_ref().is_some_and(|f| f.fail_command(cmd)) {
            // No response: the header the host preset (ret 0xFFFF) stays as it is.
            response[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
            return Ok(());
        }
        let regs = self.regs.lock().unwrap_or_else(|e| e.into_inner());
        regs.post_request(request);
        self.device.doorbell(self.function, &regs);
        // Header first; the body only on success, in 8-byte loads up to `len` (Linux).
        regs.read_bytes(&mut response[..8]);
        let ret = u16::from_be_bytes([response[4], response[5]]);
        let len = (u16::from_be_bytes([response[6], response[7]]) as usize).min(COMMAND_AREA_SIZE);
        if ret == 0 && len > 8 {
            let mut all = [0u8; COMMAND_AREA_SIZE];
            regs.read_bytes(&mut all[..len.div_ceil(8) * 8]);
            response[8..len].copy_from_slice(&all[8..len]);
        }
        if let (Some((t, pid)), Some(t0)) = (&self.trace, t0) {
            let name = ism_firmware::wire::Opcode::from_raw(cmd).map_or("UNKNOWN", |o| o.name());
            t.complete(*pid, name, "command", t0, &[("ret", format!("{ret:#06x}"))]);
        }
        Ok(())
    }

    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        let _irqs = InlineScope::enter();
        if self.faults.as_ref().is_some_and(|f| f.fail_store()) {
            return Err(BusError::StoreRefused(
                ism_firmware::MoveError::MemoryFault as u8,
            ));
        }
        let t0 = self.trace.as_ref().map(|(t, _)| t.now_us());
        let r = self
            .device
            .store_block(self.function, request, data)
            .map_err(|e| BusError::StoreRefused(e as u8));
        if let (Some((t, pid)), Some(t0)) = (&self.trace, t0) {
            let sf = request & ism_firmware::wire::move_request::SIGNAL_FLAG != 0;
            let mut args = vec![
                ("bytes", data.len().to_string()),
                ("signal", sf.to_string()),
            ];
            if let Err(e) = r {
                args.push(("error", format!("{e:?}")));
            }
            t.complete(
                *pid,
                if sf { "move+signal" } else { "move" },
                "move",
                t0,
                &args,
            );
        }
        r
    }

    fn set_polling(&self, on: bool) {
        self.irq.set_polling(on);
    }

    fn ack_interrupt(&self) {
        self.irq.take();
    }

    fn interrupt_raised(&self) -> Option<bool> {
        Some(self.irq.is_pending())
    }

    fn polled_only(&self) -> bool {
        !self.irq.is_threaded()
    }
}

/// The driver of a simulated function.
pub type SimDriver = IsmDriver<SimHostMemory, SimPort>;

/// One partition: its memory, its function, its interrupt line.
pub struct Partition {
    index: usize,
    hal: SimHostMemory,
    port: SimPort,
    irq: Arc<IrqLine>,
    gid: Gid,
    /// How many times the function went down (the platform's availability events).
    downs: Arc<AtomicU64>,
}

impl Partition {
    /// How many times the function went down so far; an OS compares it with the count at
    /// its boot to learn that its function is gone.
    pub fn downs(&self) -> &Arc<AtomicU64> {
        &self.downs
    }

    /// Position on the board.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The function's GID.
    pub fn gid(&self) -> Gid {
        self.gid
    }

    /// The partition's memory and allocator.
    pub fn host_memory(&self) -> &SimHostMemory {
        &self.hal
    }

    /// The function's host-visible interface.
    pub fn port(&self) -> &SimPort {
        &self.port
    }

    /// The function's interrupt line.
    pub fn irq(&self) -> &Arc<IrqLine> {
        &self.irq
    }

    /// Probes the function with the ISM driver (as the partition's OS does at boot).
    ///
    /// # Errors
    /// The driver's error.
    pub fn probe(&self, chid: u16) -> Result<Arc<SimDriver>, IsmError> {
        // The OS of the current boot: its frees count only until the partition reboots.
        let hal = SimHostMemory {
            epoch: self.hal.pool.epoch(),
            ..self.hal.clone()
        };
        IsmDriver::probe(hal, self.port.clone(), chid).map(Arc::new)
    }
}

/// A board: the device and its partitions.
pub struct SimBoard {
    kind: BoardKind,
    device: Arc<SimDevice>,
    partitions: Vec<Partition>,
    tracer: Option<Arc<Tracer>>,
    chid: u16,
    faults: Option<Arc<FaultInjector>>,
}

fn clock_salt() -> u32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (n as u32) ^ ((n >> 32) as u32).rotate_left(13) ^ std::process::id()
}

impl SimBoard {
    /// An LPAR board with `n` partitions (1..=8) and default options.
    ///
    /// # Panics
    /// If `n` is 0 or more than [`MAX_FUNCTIONS`].
    pub fn lpar(n: usize) -> Self {
        Self::build(BoardKind::Lpar, n, BoardConfig::default())
    }

    /// The loopback board: one partition, one function (CHID 0xFFFF), no-copy offered.
    pub fn loopback() -> Self {
        Self::build(BoardKind::Loopback, 1, BoardConfig::default())
    }

    /// A board of `kind` with `n` partitions (loopback: always 1) and options `cfg`.
    ///
    /// # Panics
    /// If `n` is 0 or more than [`MAX_FUNCTIONS`].
    pub fn build(kind: BoardKind, n: usize, cfg: BoardConfig) -> Self {
        let n = if kind == BoardKind::Loopback { 1 } else { n };
        assert!((1..=MAX_FUNCTIONS).contains(&n), "1..=8 partitions");
        let tracer = cfg.trace.then(|| Arc::new(Tracer::new()));
        let faults = cfg
            .faults
            .is_active()
            .then(|| Arc::new(FaultInjector::new(cfg.faults.clone())));
        let memories: Vec<Arc<MemoryDomain>> = (0..n)
            .map(|i| {
                Arc::new(MemoryDomain::new(
                    ((i as u64) + 1) << 40,
                    cfg.partition_memory,
                ))
            })
            .collect();
        let irqs: Vec<Arc<IrqLine>> = (0..n)
            .map(|i| {
                let trace = tracer.clone().map(|t| (t, i as u32));
                Arc::new(IrqLine::new(cfg.irq_spin, trace).with_faults(faults.clone()))
            })
            .collect();
        let gids: Vec<Gid> = (0..n)
            .map(|i| match kind {
                BoardKind::Lpar => Gid(0x4953_4D00_0000_0001 + ((i as u64) << 16)),
                BoardKind::Loopback => Gid(0x4C4F_4F50_4241_434B),
            })
            .collect();
        let cfgs: Vec<FunctionConfig> = gids
            .iter()
            .enumerate()
            .map(|(i, &gid)| FunctionConfig {
                gid,
                domain: DomainId(i as u16),
            })
            .collect();
        let hw = SimHw {
            memories: memories.clone(),
            irqs: irqs.clone(),
            clock: SimClock(Instant::now()),
            shared: kind == BoardKind::Loopback,
        };
        let chid = match kind {
            BoardKind::Lpar => LPAR_CHID,
            BoardKind::Loopback => LOOPBACK_CHID,
        };
        let salt = cfg.token_salt.unwrap_or_else(clock_salt);
        let device = device_on_heap(|| Device::new(hw, chid, &cfgs, salt))
            .expect("valid board configuration");
        let partitions = (0..n)
            .map(|i| {
                let mem = memories[i].clone();
                let pool = Arc::new(DmaPool::new(mem.base().0, mem.size()));
                if let Some(t) = &tracer {
                    let name = match kind {
                        BoardKind::Lpar => format!("LPAR {i} (gid {:#x})", gids[i].0),
                        BoardKind::Loopback => format!("loopback (gid {:#x})", gids[i].0),
                    };
                    t.name_partition(i as u32, &name);
                }
                Partition {
                    index: i,
                    hal: SimHostMemory {
                        memory: mem,
                        pool,
                        epoch: 0,
                    },
                    port: SimPort {
                        device: device.clone(),
                        function: FunctionId(i as u16),
                        irq: irqs[i].clone(),
                        regs: Arc::new(std::sync::Mutex::new(FunctionRegisters::new())),
                        trace: tracer.clone().map(|t| (t, i as u32)),
                        faults: faults.clone(),
                    },
                    irq: irqs[i].clone(),
                    gid: gids[i],
                    downs: Arc::new(AtomicU64::new(0)),
                }
            })
            .collect();
        Self {
            kind,
            device,
            partitions,
            tracer,
            chid,
            faults,
        }
    }

    /// What the fault injector did so far (all zero without faults).
    pub fn fault_counts(&self) -> FaultCounts {
        self.faults
            .as_ref()
            .map_or_else(FaultCounts::default, |f| f.counts())
    }

    /// Extra interrupt latency the board injects.
    pub fn irq_delay(&self) -> Option<std::time::Duration> {
        self.faults.as_ref().and_then(|f| f.config().delay_irq)
    }

    /// The kind of board.
    pub fn kind(&self) -> BoardKind {
        self.kind
    }

    /// The device's CHID.
    pub fn chid(&self) -> u16 {
        self.chid
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Partition `i`.
    ///
    /// # Panics
    /// If there is no partition `i`.
    pub fn partition(&self, i: usize) -> &Partition {
        &self.partitions[i]
    }

    /// The device.
    pub fn device(&self) -> &Arc<SimDevice> {
        &self.device
    }

    /// The device's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.device.stats()
    }

    /// The tracer, if the board records a trace.
    pub fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    /// Partition `i` crashed: its function goes down (peers get `DEV_GID_ERR_STATE`).
    pub fn crash(&self, i: usize) {
        self.down(i, DownReason::Crash);
    }

    /// Partition `i` is deactivated: its function goes down (peers get `DEV_GID_DISABLED`).
    pub fn disable(&self, i: usize) {
        self.down(i, DownReason::Disabled);
    }

    fn down(&self, i: usize, reason: DownReason) {
        if let Some(t) = &self.tracer {
            t.instant(
                i as u32,
                "function down",
                "event",
                &[("reason", format!("{reason:?}"))],
            );
        }
        self.device.function_down(FunctionId(i as u16), reason);
        // The platform tells the partition's OS (on s390 a zPCI availability event), whose
        // driver then ends everything on the function.
        if let Some(p) = self.partitions.get(i) {
            p.downs.fetch_add(1, Ordering::AcqRel);
            p.irq.platform_event();
        }
    }

    /// Partition `i` rebooted: its function is back with nothing registered, and its memory
    /// allocator starts afresh: what the old OS allocated is gone with it, and frees by the
    /// old OS's drivers are ignored. Probe it again to use it.
    pub fn restart(&self, i: usize) {
        if let Some(p) = self.partitions.get(i) {
            p.hal.pool.reset();
        }
        self.device.function_up(FunctionId(i as u16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpar_partitions_have_distinct_gids_and_domains() {
        let b = SimBoard::lpar(3);
        assert_eq!(b.partitions().len(), 3);
        let g: Vec<_> = b.partitions().iter().map(|p| p.gid()).collect();
        assert!(g[0] != g[1] && g[1] != g[2]);
        assert_ne!(
            b.partition(0).host_memory().memory().base(),
            b.partition(1).host_memory().memory().base()
        );
        let d = b.partition(0).probe(b.chid()).unwrap();
        assert!(!d.supports_attach());
        assert_eq!(d.gid(), g[0]);
    }

    #[test]
    fn a_board_is_built_from_a_thread_with_a_small_stack() {
        // The device alone is larger than this stack.
        const STACK: usize = 256 << 10;
        assert!(core::mem::size_of::<SimDevice>() > STACK);
        let h = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(|| SimBoard::lpar(2).partitions().len())
            .unwrap();
        assert_eq!(h.join().unwrap(), 2);
    }

    #[test]
    fn loopback_offers_attach() {
        let b = SimBoard::loopback();
        let d = b.partition(0).probe(b.chid()).unwrap();
        assert!(d.supports_attach());
        assert_eq!(d.chid(), 0xFFFF);
    }
}
