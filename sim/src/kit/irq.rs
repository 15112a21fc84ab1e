//! Interrupt delivery: one line per ISM function that wakes a waiting host thread.
//!
//! `raise` sets the line pending and, only if a thread is asleep on it, wakes it. A waiter
//! first spins briefly (an idle vCPU on this kind of machine takes ~20 µs to wake, so a short
//! spin keeps back-to-back interrupts cheap), then sleeps on a condition variable.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ism_hal::InterruptLine;

use crate::fault::FaultInjector;
use crate::trace::Tracer;

/// One function's interrupt line.
pub struct IrqLine {
    pending: AtomicBool,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    cond: Condvar,
    raised: AtomicU64,
    spin: Duration,
    trace: Option<(Arc<Tracer>, u32)>,
    faults: Option<Arc<FaultInjector>>,
}

impl IrqLine {
    /// A quiet line whose waiters spin for `spin` before sleeping; raises are traced as
    /// partition `pid` if `trace` is given.
    pub fn new(spin: Duration, trace: Option<(Arc<Tracer>, u32)>) -> Self {
        Self {
            pending: AtomicBool::new(false),
            sleepers: AtomicU32::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            raised: AtomicU64::new(0),
            spin,
            trace,
            faults: None,
        }
    }

    /// The same line, losing interrupts as `faults` decides.
    pub fn with_faults(mut self, faults: Option<Arc<FaultInjector>>) -> Self {
        self.faults = faults;
        self
    }

    /// Takes the pending state (acknowledges the interrupt); returns whether it was pending.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Whether an interrupt is pending.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// How many times the line was raised.
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// Waits until the line is pending (and takes it) or `timeout` passes; returns whether
    /// an interrupt was taken.
    pub fn wait(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        while start.elapsed() < self.spin.min(timeout) {
            if self.take() {
                return true;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(16) {
                // Yield now and then: on a machine with fewer cores than spinning threads
                // the thread that will raise this line may need this core.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let deadline = start + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            if self.take() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self
                .cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        taken
    }

    /// Extra latency the board injects before the handler runs.
    pub fn injected_delay(&self) -> Option<Duration> {
        self.faults.as_ref().and_then(|f| f.config().delay_irq)
    }

    /// Wakes the interrupt thread for a platform event (the function went down), as if
    /// the line were raised, but without fault injection, tracing or counting: it is not
    /// the device's interrupt (on s390 such events arrive as machine checks).
    pub fn platform_event(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cond.notify_all();
        }
    }

    /// Wakes every waiter without raising (used to stop interrupt threads).
    pub fn kick(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cond.notify_all();
    }
}

impl InterruptLine for IrqLine {
    fn raise(&self) {
        if self.faults.as_ref().is_some_and(|f| f.drop_irq()) {
            return;
        }
        self.raised.fetch_add(1, Ordering::Relaxed);
        if let Some((t, pid)) = &self.trace {
            t.instant(*pid, "irq", "interrupt", &[]);
        }
        let was = self.pending.swap(true, Ordering::AcqRel);
        // SeqCst pairs with the sleeper's increment: either the waiter sees `pending` before
        // sleeping, or we see it counted and notify under the lock.
        if !was && self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cond.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_wakes_a_sleeping_waiter() {
        let line = Arc::new(IrqLine::new(Duration::ZERO, None));
        let l2 = line.clone();
        let t = std::thread::spawn(move || l2.wait(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        line.raise();
        assert!(t.join().unwrap());
        assert!(!line.is_pending(), "the waiter took the interrupt");
        assert_eq!(line.raised(), 1);
    }

    #[test]
    fn wait_times_out_and_pending_is_kept_until_taken() {
        let line = IrqLine::new(Duration::from_micros(10), None);
        assert!(!line.wait(Duration::from_millis(5)));
        line.raise();
        line.raise();
        assert!(line.is_pending());
        assert!(line.wait(Duration::from_millis(5)));
        assert!(!line.take());
    }
}
