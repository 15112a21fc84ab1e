//! [`DeviceUnderTest`] for a **process board**: a board reached by name through its control
//! socket (`ism-sim board`, or any board that implements `docs/host-interface.md`), with
//! this test process attached as each of the functions the checks use.
//!
//! Store-blocks without the signal flag are posted on a process board (their errors show at
//! the next signalling store-block or flush); the checks expect each store-block's verdict
//! at once, so this DUT's bus flushes after every store-block.

use std::path::Path;
use std::time::Duration;

use ism_hal::regs::COMMAND_AREA_SIZE;
use ism_host_driver::ism::{Bus, BusError};
use ism_sim::process::host::{ProcBus, ProcHal};
use ism_sim::process::{self, AttachError, RawAttachment};

use crate::conformance::DeviceUnderTest;

/// Environment variable naming a running board to test (`cargo test -p ism-tests --test
/// process_conformance`); the socket directory comes from `ISM_SIM_DIR` as for any host.
pub const BOARD_ENV: &str = "ISM_CONFORMANCE_BOARD";

/// A function's bus with each store-block completed before it returns.
pub struct SyncBus(ProcBus);

impl Bus for SyncBus {
    fn command(
        &self,
        request: &[u8],
        response: &mut [u8; COMMAND_AREA_SIZE],
    ) -> Result<(), BusError> {
        self.0.command(request, response)
    }

    fn store_block(&self, request: u64, data: &[u8]) -> Result<(), BusError> {
        self.0.store_block(request, data)?;
        self.0.flush()
    }
}

/// A process board under test: `n` functions attached by this process.
pub struct ProcessDut {
    functions: Vec<RawAttachment>,
    buses: Vec<SyncBus>,
    /// The board, when this DUT runs one itself (dropped last: the functions detach first).
    local: Option<process::LocalBoard>,
}

impl ProcessDut {
    /// Attaches `n` functions of board `name` whose socket is in `dir`.
    ///
    /// # Errors
    /// The attach error.
    pub fn attach(dir: &Path, name: &str, n: usize) -> Result<Self, AttachError> {
        let functions: Vec<RawAttachment> = (0..n)
            .map(|_| process::attach_raw_in(dir, name))
            .collect::<Result<_, _>>()?;
        let buses = functions.iter().map(|f| SyncBus(f.bus().clone())).collect();
        Ok(Self {
            functions,
            buses,
            local: None,
        })
    }

    /// Starts a process board of `kind` on a thread of this process ([`local_board`]) and
    /// attaches `n` functions; the board stops when the DUT is dropped.
    ///
    /// # Panics
    /// If the board does not start or the attach fails (this is for tests).
    pub fn on_local_board(kind: ism_sim::BoardKind, n: usize) -> Self {
        let board = local_board(kind, n);
        let mut dut = Self::attach(board.dir(), board.name(), n).expect("attach");
        dut.local = Some(board);
        dut
    }

    /// The attached functions.
    pub fn attachments(&self) -> &[RawAttachment] {
        &self.functions
    }
}

impl DeviceUnderTest for ProcessDut {
    type HostMemory = ProcHal;
    type Bus = SyncBus;

    fn functions(&self) -> usize {
        self.functions.len()
    }

    fn bus(&self, f: usize) -> &SyncBus {
        &self.buses[f]
    }

    fn host_memory(&self, f: usize) -> &ProcHal {
        self.functions[f].hal()
    }

    fn wait_irq(&self, f: usize, timeout: Duration) -> bool {
        if timeout.is_zero() {
            self.functions[f].take_irq()
        } else {
            self.functions[f].wait_irq(timeout)
        }
    }

    fn chid(&self) -> u16 {
        self.functions.first().map_or(0, |f| f.chid())
    }

    fn shares_memory(&self) -> bool {
        self.functions
            .first()
            .is_some_and(|f| f.kind() == ism_sim::BoardKind::Loopback)
    }

    /// A process board raises an interrupt before it completes the command or store-block
    /// that caused it, so "no interrupt" can be concluded at once.
    fn quiet_period(&self) -> Duration {
        Duration::ZERO
    }
}

/// A process board run by a thread of this process (the same socket, memory objects and
/// register objects as `ism-sim board`): lets `cargo test` run the suite over the process
/// interface without starting a board first.
pub fn local_board(kind: ism_sim::BoardKind, max_functions: usize) -> process::LocalBoard {
    process::LocalBoard::start(kind, max_functions, 16 << 20, Box::new(std::io::sink()))
        .expect("start a process board")
}
