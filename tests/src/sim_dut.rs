//! [`DeviceUnderTest`] for the `ism-sim` boards: the reference implementation a vendor can
//! copy. Each function's bus is the board's [`SimPort`], its memory the partition's
//! [`SimHostMemory`], its interrupt the partition's interrupt line.

use std::time::Duration;

use ism_sim::board::{SimHostMemory, SimPort};
use ism_sim::{BoardConfig, BoardKind, SimBoard};

use crate::conformance::DeviceUnderTest;

/// A simulator board under test.
pub struct SimDut {
    board: SimBoard,
}

impl SimDut {
    /// An LPAR board with `n` partitions of 16 MiB each.
    pub fn lpar(n: usize) -> Self {
        Self::new(BoardKind::Lpar, n)
    }

    /// The loopback board (one function, shared memory, CHID 0xFFFF).
    pub fn loopback() -> Self {
        Self::new(BoardKind::Loopback, 1)
    }

    fn new(kind: BoardKind, n: usize) -> Self {
        let cfg = BoardConfig {
            partition_memory: 16 << 20,
            irq_spin: Duration::ZERO,
            ..BoardConfig::default()
        };
        Self {
            board: SimBoard::build(kind, n, cfg),
        }
    }

    /// The board.
    pub fn board(&self) -> &SimBoard {
        &self.board
    }
}

impl DeviceUnderTest for SimDut {
    type HostMemory = SimHostMemory;
    type Bus = SimPort;

    fn functions(&self) -> usize {
        self.board.partitions().len()
    }

    fn bus(&self, f: usize) -> &SimPort {
        self.board.partition(f).port()
    }

    fn host_memory(&self, f: usize) -> &SimHostMemory {
        self.board.partition(f).host_memory()
    }

    fn wait_irq(&self, f: usize, timeout: Duration) -> bool {
        self.board.partition(f).irq().wait(timeout)
    }

    fn chid(&self) -> u16 {
        self.board.chid()
    }

    fn shares_memory(&self) -> bool {
        self.board.kind() == BoardKind::Loopback
    }

    /// The simulated device raises interrupts synchronously inside the store-block or
    /// command that causes them, so "no interrupt" can be concluded at once.
    fn quiet_period(&self) -> Duration {
        Duration::ZERO
    }
}
