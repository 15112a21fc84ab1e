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

use crate::board::{Board, BoardConfig, BoardKind};
use crate::host::{Host, IrqMode};

/// A board whose partitions run SMC-D stacks.
pub struct SmcBoard {
    board: Board,
    hosts: Vec<Host>,
    stacks: Vec<Arc<SmcStack>>,
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
        let board = Board::build(kind, partitions, board_cfg);
        let tracer = board.tracer().cloned();
        let mut hosts = Vec::new();
        let mut stacks = Vec::new();
        for p in board.partitions() {
            let host = Host::start(p, board.chid(), irq, tracer.clone())?;
            let ops: Arc<dyn SmcdOps> = host.driver().clone();
            stacks.push(SmcStack::new(stack_cfg.clone(), vec![ops])?);
            hosts.push(host);
        }
        Ok(Self {
            board,
            hosts,
            stacks,
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
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Partition `i`'s host.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
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
