//! Interrupt delivery: one line per ISM function that wakes a waiting host thread.
//!
//! `raise` sets the line pending and wakes a waiter. A waiter first spins briefly (an idle
//! vCPU on this kind of machine takes ~20 µs to wake, so a short spin keeps back-to-back
//! interrupts cheap), then sleeps. The spinning and sleeping is the workspace's one
//! spin-then-sleep waiter, [`Notify`] of the SMC-D layer.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ism_hal::InterruptLine;
use ism_host_driver::smcd::wait::{Notify, WaitMode};

use crate::fault::FaultInjector;
use crate::trace::Tracer;

/// One function's interrupt line.
pub struct IrqLine {
    pending: AtomicBool,
    /// Host threads polling this function's SBA themselves ([`IrqLine::set_polling`]).
    pollers: AtomicU32,
    /// Interrupt threads that wait on the line (`Host` with `IrqMode::Thread`; a count, so
    /// that one host stopping after another started on the line leaves its thread counted).
    threads: AtomicU32,
    wake: Notify,
    raised: AtomicU64,
    spin: Duration,
    trace: Option<(Arc<Tracer>, u32)>,
    faults: Option<Arc<FaultInjector>>,
    /// The handler run in the raiser's context ([`IrqLine::set_inline_handler`]).
    inline: Mutex<Option<Arc<InlineHandler>>>,
}

/// An interrupt handler the line may run in the context that raised it, and the line.
struct InlineHandler {
    /// Runs the handler; `false` if it could not run now (a run is in progress).
    run: Box<dyn Fn() -> bool + Send + Sync>,
    line: Weak<IrqLine>,
}

thread_local! {
    /// Bus operations of this thread in progress ([`InlineScope`]).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread is running queued handlers now.
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    /// Handlers of interrupts raised by this thread's bus operations, run when the
    /// outermost one ends.
    static QUEUE: RefCell<Vec<Arc<InlineHandler>>> = const { RefCell::new(Vec::new()) };
}

/// A bus operation (command or store-block) of the calling thread: interrupts it raises
/// on lines with an inline handler run when the outermost operation's scope ends, on
/// this thread, after the board and the firmware released their locks. That is where a
/// real CPU takes an interrupt (at the end of the instruction that raised it on its own
/// CPU) and where Linux's loopback-ism runs its receive tasklet (`net/smc/smc_loopback.c`
/// `smc_lo_move_data` schedules it on the sender's CPU): the reader is woken by the
/// handler directly, not by an interrupt thread that must be woken first.
pub struct InlineScope(());

impl InlineScope {
    /// Enters a bus operation.
    pub fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        InlineScope(())
    }
}

impl Drop for InlineScope {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            d.set(d.get() - 1);
            d.get()
        });
        if depth > 0 || DRAINING.with(Cell::get) {
            return; // the outer operation (or the drain loop below) runs them
        }
        DRAINING.with(|d| d.set(true));
        // Handlers may raise more interrupts (an event answered by a command): they are
        // queued and run by this loop, not nested.
        while let Some(h) = QUEUE.with(|q| q.borrow_mut().pop()) {
            let Some(line) = h.line.upgrade() else {
                continue;
            };
            if line.take() && !(h.run)() {
                // A handler run is in progress elsewhere: leave it to the interrupt thread.
                line.pending.store(true, Ordering::SeqCst);
                line.wake.notify();
            }
        }
        DRAINING.with(|d| d.set(false));
    }
}

impl IrqLine {
    /// A quiet line whose waiters spin for `spin` before sleeping; raises are traced as
    /// partition `pid` if `trace` is given.
    pub fn new(spin: Duration, trace: Option<(Arc<Tracer>, u32)>) -> Self {
        Self {
            pending: AtomicBool::new(false),
            pollers: AtomicU32::new(0),
            threads: AtomicU32::new(0),
            wake: Notify::new(),
            raised: AtomicU64::new(0),
            spin,
            trace,
            faults: None,
            inline: Mutex::new(None),
        }
    }

    /// Runs `handler` (it returns `false` if it could not run) in the context that raised
    /// the line when that is a bus operation ([`InlineScope`]) and the interrupt thread
    /// sleeps, instead of waking the thread; `None` removes it (before the driver goes).
    /// Lines with injected delays never run handlers inline.
    pub fn set_inline_handler(
        self: &Arc<Self>,
        handler: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    ) {
        *self.inline.lock().unwrap_or_else(|e| e.into_inner()) = handler.map(|run| {
            Arc::new(InlineHandler {
                run,
                line: Arc::downgrade(self),
            })
        });
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

    /// A host thread starts (`true`) or stops (`false`) polling this function's SBA
    /// itself (`Bus::set_polling`); calls nest. While anyone polls, [`IrqLine::raise`] sets
    /// the line pending but does not wake a sleeping interrupt thread: on two cores a freshly
    /// woken third thread only takes a core from the reader and writer, and costs the raiser
    /// a system call (Linux's NAPI masks a device's interrupt while it polls for the same
    /// reason). A poller polls once more after its last `false`.
    pub fn set_polling(&self, on: bool) {
        // Saturating: a stray `false` cannot wrap the count and mask the line for good.
        nest(&self.pollers, on);
        if !on {
            // Pairs with the fence in `raise`: either that raise sees the count drop (and
            // wakes the interrupt thread), or the poller's last poll after this sees the
            // SBA bits the device set before raising.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
    }

    /// Whether a host thread polls the SBA now.
    pub fn is_polled(&self) -> bool {
        self.pollers.load(Ordering::SeqCst) > 0
    }

    /// An interrupt thread waits on this line from now on (`true`) or no longer (`false`,
    /// once per `true`).
    pub fn set_threaded(&self, on: bool) {
        nest(&self.threads, on);
    }

    /// Whether an interrupt thread waits on this line (see [`IrqLine::set_threaded`]).
    pub fn is_threaded(&self) -> bool {
        self.threads.load(Ordering::SeqCst) > 0
    }

    /// Waits until the line is pending (and takes it), [`IrqLine::kick`] is called or
    /// `timeout` passes; returns whether an interrupt was taken.
    pub fn wait(&self, timeout: Duration) -> bool {
        // Read the wake counter before looking at the line: a raise in between moves it.
        let seen = self.wake.seq();
        if self.take() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        // The short spin stays while a host thread polls: a streaming reader polls only
        // between copies, and an interrupt thread that went straight to sleep then needed a
        // wake-up (a system call for the writer) for nearly every CDC (copy bandwidth fell
        // by a third when it did).
        let mode = WaitMode::Blocking(self.spin.min(timeout));
        self.wake.wait(seen, mode, Some(deadline), || false);
        self.take()
    }

    /// Extra latency the board injects before the handler runs.
    pub fn injected_delay(&self) -> Option<Duration> {
        self.faults.as_ref().and_then(|f| f.config().delay_irq)
    }

    /// Wakes the interrupt thread for a platform event (the function went down), as if
    /// the line were raised, but without fault injection, tracing or counting: it is not
    /// the device's interrupt (on s390 such events arrive as machine checks).
    pub fn platform_event(&self) {
        self.pending.store(true, Ordering::Release);
        self.wake.notify();
    }

    /// Wakes every waiter without raising: their `wait` returns `false` (used to stop
    /// interrupt threads).
    pub fn kick(&self) {
        self.wake.notify();
    }
}

/// One more (`on`) or one fewer in a nesting count; never below 0, so a stray `false`
/// cannot wrap it. Sequentially consistent, as the interrupt hints need.
fn nest(count: &AtomicU32, on: bool) {
    if on {
        count.fetch_add(1, Ordering::SeqCst);
    } else {
        let _ = count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
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
        // Pending first, then the counter: a waiter that read the counter before this raise
        // sees it move; one that reads it after also sees the line pending. (A release
        // store: the fence below orders it before everything after; a sequentially
        // consistent store would be one more locked instruction on every signal.)
        self.pending.store(true, Ordering::Release);
        // A poller finds the work itself (and polls once more when it stops: either it
        // sees this raise's SBA bits, or this load sees its count at 0; the fences on
        // both sides rule out that each misses the other's write).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.is_polled() {
            return;
        }
        // The interrupt thread sleeps and a bus operation of this thread raised the line:
        // run the handler here when the operation ends (one wake-up, the reader's, instead
        // of two). A spinning interrupt thread takes the interrupt itself.
        if self.wake.has_sleepers() && DEPTH.with(Cell::get) > 0 && self.injected_delay().is_none()
        {
            let h = self
                .inline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(h) = h {
                QUEUE.with(|q| q.borrow_mut().push(h));
                return;
            }
        }
        self.wake.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_threaded_while_any_interrupt_thread_waits_on_it() {
        let l = IrqLine::new(Duration::ZERO, None);
        assert!(!l.is_threaded());
        l.set_threaded(true); // a host starts
        l.set_threaded(true); // a new host starts before the old one stopped
        l.set_threaded(false); // the old one stops
        assert!(l.is_threaded());
        l.set_threaded(false);
        assert!(!l.is_threaded());
        l.set_threaded(false); // a stray stop does not wrap the count
        assert!(!l.is_threaded());
    }

    /// A line whose interrupt thread sleeps (a waiter past its spin), with an inline
    /// handler that counts its runs on whichever thread and succeeds if `ok`.
    fn line_with_sleeper(
        ok: bool,
    ) -> (
        Arc<IrqLine>,
        Arc<AtomicU32>,
        std::thread::JoinHandle<(bool, Duration)>,
    ) {
        let line = Arc::new(IrqLine::new(Duration::ZERO, None));
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        line.set_inline_handler(Some(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            ok
        })));
        let l2 = line.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let taken = l2.wait(Duration::from_millis(300));
            (taken, start.elapsed())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !line.wake.has_sleepers() {
            assert!(Instant::now() < deadline, "the waiter never slept");
            std::thread::yield_now();
        }
        (line, runs, t)
    }

    #[test]
    fn a_raise_inside_a_bus_operation_runs_the_handler_when_it_ends() {
        let (line, runs, t) = line_with_sleeper(true);
        {
            let _op = InlineScope::enter();
            let _nested = InlineScope::enter();
            line.raise();
            assert_eq!(runs.load(Ordering::SeqCst), 0, "not inside the operation");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "at its end, on this thread");
        assert!(!line.is_pending(), "the interrupt was taken");
        // The interrupt thread was not woken: it slept to its limit.
        let (taken, waited) = t.join().unwrap();
        assert!(!taken && waited >= Duration::from_millis(250), "{waited:?}");
    }

    #[test]
    fn a_raise_outside_a_bus_operation_or_a_busy_handler_wakes_the_thread() {
        // Outside any operation (a board event): the thread is woken, no inline run.
        let (line, runs, t) = line_with_sleeper(true);
        line.raise();
        let (taken, waited) = t.join().unwrap();
        assert!(taken && waited < Duration::from_millis(250), "{waited:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        // The handler could not run (a run in progress elsewhere): pending, thread woken.
        let (line, runs, t) = line_with_sleeper(false);
        {
            let _op = InlineScope::enter();
            line.raise();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let (taken, waited) = t.join().unwrap();
        assert!(taken && waited < Duration::from_millis(250), "{waited:?}");
        // Removed (the host stopped): raises wake the thread again.
        let (line, runs, t) = line_with_sleeper(true);
        line.set_inline_handler(None);
        {
            let _op = InlineScope::enter();
            line.raise();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(t.join().unwrap().0);
    }

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
    fn a_polled_line_holds_back_the_wake_up_until_polling_stops() {
        let line = Arc::new(IrqLine::new(Duration::ZERO, None));
        line.set_polling(true);
        line.set_polling(true);
        let l2 = line.clone();
        // The waiter sleeps with a short limit: a wake-up would end it at once with `true`.
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let taken = l2.wait(Duration::from_millis(300));
            (taken, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        line.raise();
        let (taken, waited) = t.join().unwrap();
        // The raise did not wake it: it slept to its limit, then found the line pending.
        assert!(taken && waited >= Duration::from_millis(250), "{waited:?}");
        // Nested: one `false` leaves the line polled; the second unmasks it.
        line.set_polling(false);
        assert!(line.is_polled());
        line.set_polling(false);
        assert!(!line.is_polled());
        // A stray `false` does not wrap the count.
        line.set_polling(false);
        assert!(!line.is_polled());
        // Unpolled again: a raise wakes a sleeping waiter at once.
        let l2 = line.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            (l2.wait(Duration::from_secs(10)), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        line.raise();
        let (taken, waited) = t.join().unwrap();
        assert!(taken && waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn kick_ends_a_wait_without_an_interrupt() {
        let line = Arc::new(IrqLine::new(Duration::ZERO, None));
        let l2 = line.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            (l2.wait(Duration::from_secs(10)), start.elapsed())
        });
        // Kick until the waiter is gone (it may not be waiting yet at the first kick).
        let start = Instant::now();
        while !t.is_finished() && start.elapsed() < Duration::from_secs(5) {
            line.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
        let (taken, waited) = t.join().unwrap();
        assert!(!taken);
        assert!(waited < Duration::from_secs(5), "kick did not end the wait");
        assert_eq!(line.raised(), 0);
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
