//! [`RecordingClient`]: an [`IsmClient`] that records every DMB signal and event the
//! interrupt handler delivers and lets a thread wait for them (bounded). The one recording
//! client of the workspace: the driver's tests, the conformance suite, the integration tests
//! and the simulator's demo use it.

use std::sync::{Condvar, Mutex};
use std::time::Duration;
use std::vec::Vec;

use super::irq::{IsmClient, IsmEvent};

type Seen = (Vec<(u32, u16)>, Vec<IsmEvent>);

/// A client that records what the handler delivers and lets a thread wait for it.
#[derive(Default)]
pub struct RecordingClient {
    seen: Mutex<Seen>,
    cond: Condvar,
}

impl RecordingClient {
    /// The `(sba_idx, dmbe_mask)` signals delivered so far.
    pub fn signals(&self) -> Vec<(u32, u16)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// The events delivered so far.
    pub fn events(&self) -> Vec<IsmEvent> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Waits until at least `n` signals were delivered; returns them.
    pub fn wait_signals(&self, n: usize, timeout: Duration) -> Vec<(u32, u16)> {
        let g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cond
            .wait_timeout_while(g, timeout, |s| s.0.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        g.0.clone()
    }

    /// Waits until at least `n` events were delivered; returns them.
    pub fn wait_events(&self, n: usize, timeout: Duration) -> Vec<IsmEvent> {
        self.wait_events_until(timeout, |e| e.len() >= n)
    }

    /// Waits until the events delivered so far satisfy `done`; returns them.
    pub fn wait_events_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[IsmEvent]) -> bool,
    ) -> Vec<IsmEvent> {
        let g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cond
            .wait_timeout_while(g, timeout, |s| !done(&s.1))
            .unwrap_or_else(|e| e.into_inner());
        g.1.clone()
    }
}

impl IsmClient for RecordingClient {
    fn handle_irq(&self, sba_idx: u32, dmbe_mask: u16) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push((sba_idx, dmbe_mask));
        self.cond.notify_all();
    }
    fn handle_event(&self, event: &IsmEvent) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .push(*event);
        self.cond.notify_all();
    }
}
