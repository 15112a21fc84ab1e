//! A process board run by a thread of the calling process: the same control socket, memory
//! objects and register objects as `ism-sim board`, in a fresh directory of its own. For
//! tests, the bench and the demo, whose hosts are other processes (or this one).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::board::{BoardOptions, ProcessBoard};
use crate::board::BoardKind;

/// A board served by a thread of this process; stopped (hosts detached, socket and
/// directory removed) on drop.
pub struct LocalBoard {
    dir: PathBuf,
    name: String,
    stop: std::os::unix::net::UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalBoard {
    /// Starts a board of `kind` with `max_functions` functions of `memory` bytes, writing
    /// its log lines to `log`.
    ///
    /// # Errors
    /// The board's start error, as text.
    pub fn start(
        kind: BoardKind,
        max_functions: usize,
        memory: usize,
        log: Box<dyn Write + Send>,
    ) -> Result<Self, String> {
        Self::start_with(kind, max_functions, memory, log, |_| {})
    }

    /// As [`LocalBoard::start`], with `configure` changing the board's options last (the
    /// directory and name are this board's own; leave them).
    ///
    /// # Errors
    /// The board's start error, as text.
    pub fn start_with(
        kind: BoardKind,
        max_functions: usize,
        memory: usize,
        log: Box<dyn Write + Send>,
        configure: impl FnOnce(&mut BoardOptions),
    ) -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ism-local-{}-{n}", std::process::id()));
        let name = format!("local{n}");
        let mut opts = BoardOptions::new(&name, kind);
        opts.dir = dir.clone();
        opts.max_functions = max_functions;
        opts.memory = memory;
        configure(&mut opts);
        let board = ProcessBoard::start_with_log(opts, log).map_err(|e| format!("board: {e}"))?;
        let (rx, stop) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let _ = board.run(rx.as_fd());
        });
        Ok(Self {
            dir,
            name,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket directory (give it to hosts as `ISM_SIM_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The board's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LocalBoard {
    fn drop(&mut self) {
        let _ = (&self.stop).write_all(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
