//! SMC-D on a simulated board: each partition's OS runs an SMC-D stack over its ISM
//! function, and programs connect with the stream API.
//!
//! * LPAR board: two (or more) partitions, one stack each; connections copy through the
//!   device between the partitions' memories.
//! * Loopback board: one partition, one stack shared by both ends (as two processes of one
//!   OS with loopback-ism); no-copy attach on by default.

use std::sync::Arc;

use ism_host_driver::ism::IsmError;
use ism_host_driver::smcd::device::SmcdOps;
use ism_host_driver::smcd::{SmcStack, StackConfig};

use crate::board::{BoardConfig, BoardKind, SimBoard};
use crate::host::{Host, IrqMode};

/// A board whose partitions run SMC-D stacks.
///
/// ```
/// use std::io::{Read, Write};
/// use ism_host_driver::smcd::{Listener, Stream};
/// use ism_sim::smc::SmcBoard;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The loopback board: one partition, one stack for both ends, no-copy sends (the
/// // sender writes straight into the receiver's attached DMB).
/// let board = SmcBoard::loopback(true)?;
/// let (client, server) = board.pair();
/// let listener = Listener::bind(&server, "127.0.0.1:0")?;
/// let mut c = Stream::connect(&client, listener.local_addr()?)?;
/// let (mut s, _) = listener.accept()?;
/// assert!(c.is_smc() && c.stats().nocopy);
/// c.write_all(&[42; 100_000])?;
/// let mut got = vec![0u8; 100_000];
/// s.read_exact(&mut got)?;
/// assert!(got.iter().all(|&b| b == 42));
/// // Only the 32-byte CDC messages went through the device as store-blocks.
/// assert_eq!(c.stats().conn.data_moves, 0);
/// assert!(board.board().device().stats().bytes_moved < 100_000);
/// # Ok(())
/// # }
/// ```
pub struct SmcBoard {
    board: SimBoard,
    /// `None` only while a partition reboots (or if its reboot failed).
    hosts: Vec<Option<Host>>,
    stacks: Vec<Arc<SmcStack>>,
    irq: IrqMode,
    stack_cfg: StackConfig,
}

impl SmcBoard {
    /// Boots `kind` with `partitions` partitions (loopback: one), probes every function with
    /// interrupt delivery `irq`, and starts a stack with `stack_cfg` on each.
    ///
    /// # Errors
    /// The driver's probe error or the stack's client registration error.
    pub fn start(
        kind: BoardKind,
        partitions: usize,
        board_cfg: BoardConfig,
        irq: IrqMode,
        stack_cfg: StackConfig,
    ) -> Result<Self, IsmError> {
        let board = SimBoard::build(kind, partitions, board_cfg);
        let tracer = board.tracer().cloned();
        let mut hosts = Vec::new();
        let mut stacks = Vec::new();
        for p in board.partitions() {
            let host = Host::start(p, board.chid(), irq, tracer.clone())?;
            let ops: Arc<dyn SmcdOps> = host.driver().clone();
            stacks.push(SmcStack::new(stack_cfg.clone(), vec![ops])?);
            hosts.push(Some(host));
        }
        Ok(Self {
            board,
            hosts,
            stacks,
            irq,
            stack_cfg,
        })
    }

    /// An LPAR board with two partitions and default options.
    ///
    /// # Errors
    /// As [`SmcBoard::start`].
    pub fn lpar() -> Result<Self, IsmError> {
        Self::start(
            BoardKind::Lpar,
            2,
            BoardConfig::default(),
            IrqMode::Thread,
            StackConfig::default(),
        )
    }

    /// The loopback board with default options (`nocopy` as given).
    ///
    /// # Errors
    /// As [`SmcBoard::start`].
    pub fn loopback(nocopy: bool) -> Result<Self, IsmError> {
        let cfg = StackConfig {
            nocopy,
            ..StackConfig::default()
        };
        Self::start(
            BoardKind::Loopback,
            1,
            BoardConfig::default(),
            IrqMode::Thread,
            cfg,
        )
    }

    /// The board.
    pub fn board(&self) -> &SimBoard {
        &self.board
    }

    /// Partition `i`'s host.
    ///
    /// # Panics
    /// If a [`SmcBoard::restart_partition`] of `i` failed.
    pub fn host(&self, i: usize) -> &Host {
        self.hosts[i].as_ref().expect("partition running")
    }

    /// Partition `i` reboots: it crashes first if it is still up (its function goes down,
    /// peers get `DEV_GID_ERR_STATE`), the old OS's interrupt delivery stops (its driver's
    /// last commands fail on the downed function and change nothing), the board restarts the
    /// partition (function up, memory given back), and a new OS probes the function and
    /// starts a new stack with the board's options. Streams of the old stack keep failing;
    /// new ones use [`SmcBoard::stack`]`(i)`.
    ///
    /// # Errors
    /// The new driver's probe error or the new stack's registration error; the partition
    /// then has no host (see [`SmcBoard::host`]).
    pub fn restart_partition(&mut self, i: usize) -> Result<(), IsmError> {
        let f = ism_hal::FunctionId(i as u16);
        if self.board.device().is_online(f) {
            self.board.crash(i);
        }
        if let Some(old) = self.hosts[i].take() {
            old.shutdown();
        }
        self.board.restart(i);
        let tracer = self.board.tracer().cloned();
        let host = Host::start(self.board.partition(i), self.board.chid(), self.irq, tracer)?;
        let ops: Arc<dyn SmcdOps> = host.driver().clone();
        self.stacks[i] = SmcStack::new(self.stack_cfg.clone(), vec![ops])?;
        self.hosts[i] = Some(host);
        Ok(())
    }

    /// The stack of partition `i`.
    pub fn stack(&self, i: usize) -> &Arc<SmcStack> {
        &self.stacks[i]
    }

    /// The stacks of a client and a server: partitions 0 and 1 on an LPAR board, the one
    /// stack twice on the loopback board.
    pub fn pair(&self) -> (Arc<SmcStack>, Arc<SmcStack>) {
        let server = self.stacks.len().min(2) - 1;
        (self.stacks[0].clone(), self.stacks[server].clone())
    }
}
