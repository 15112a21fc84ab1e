//! A probed partition: the ISM driver of its function plus interrupt delivery.
//!
//! Two ways to run the interrupt handler, as a real OS offers:
//! * [`IrqMode::Thread`]: a thread per function waits on the interrupt line and runs the
//!   handler (blocking: each wake-up of a sleeping thread costs a cross-core wake). While
//!   that thread sleeps, an interrupt raised by a bus operation (a signalled store-block of
//!   a peer) runs the handler on the raising thread when the operation ends instead
//!   (`IrqLine::set_inline_handler`, `InlineScope`), as a CPU takes an interrupt: the reader
//!   is woken directly, one wake-up instead of two;
//! * [`IrqMode::Poll`]: no thread; consumers call [`Host::poll`] (the handler runs when the
//!   SBA shows work), which is how busy-poll latency is measured. An SMC-D connection on
//!   such a function busy-polls in every wait, whatever it was made to do (a waiter that
//!   slept would hear of nothing until its 20 ms recheck), so a waiting connection keeps
//!   a core busy: use [`IrqMode::Thread`] for connections that mostly wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ism_host_driver::ism::{EventType, IsmClient, IsmError, IsmEvent};

use crate::board::{Partition, SimDriver};
use crate::irq::IrqLine;
use crate::trace::Tracer;

/// How interrupts reach the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqMode {
    /// An interrupt thread runs the handler.
    Thread,
    /// Consumers poll (SMC-D waits on the function busy-poll).
    Poll,
}

/// Records every event the driver delivers into the trace (category "event").
struct TraceEvents {
    tracer: Arc<Tracer>,
    pid: u32,
}

impl IsmClient for TraceEvents {
    fn handle_irq(&self, _sba_idx: u32, _dmbe_mask: u16) {}

    fn handle_event(&self, e: &IsmEvent) {
        let name = match e.event_type() {
            Some(EventType::Buffer) => "buffer event",
            Some(EventType::Device) => "device event",
            Some(EventType::Software) => "software event",
            _ => "event",
        };
        let args = [
            ("code", format!("{:#x}", e.code)),
            ("tok", format!("{:#x}", e.tok)),
            ("info", format!("{:#x}", e.info)),
        ];
        self.tracer.instant(self.pid, name, "event", &args);
    }
}

/// Counters of the handler runs.
#[derive(Debug, Default)]
pub struct HostStats {
    /// Handler runs.
    pub handler_runs: AtomicU64,
    /// DMB signals delivered.
    pub signals: AtomicU64,
    /// Events delivered.
    pub events: AtomicU64,
}

/// A partition's OS view of its ISM function.
pub struct Host {
    driver: Arc<SimDriver>,
    irq: Arc<IrqLine>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<HostStats>,
    mode: IrqMode,
    /// The partition's count of function-down events, and its value at this boot.
    downs: (Arc<AtomicU64>, u64),
}

/// Tells the driver its function is gone if the board took it down since `at_boot`.
fn check_function(driver: &SimDriver, downs: &AtomicU64, at_boot: u64) {
    if downs.load(Ordering::Acquire) != at_boot && !driver.is_gone() {
        driver.function_gone();
    }
}

fn run_handler(driver: &SimDriver, stats: &HostStats, trace: Option<&(Arc<Tracer>, u32)>) {
    let t0 = trace.map(|(t, _)| t.now_us());
    let r = driver.handle_irq();
    record(r, t0, stats, trace);
}

/// [`run_handler`] unless a handler run is in progress; returns whether it ran.
fn try_run_handler(
    driver: &SimDriver,
    stats: &HostStats,
    trace: Option<&(Arc<Tracer>, u32)>,
) -> bool {
    let t0 = trace.map(|(t, _)| t.now_us());
    match driver.try_handle_irq() {
        Some(r) => {
            record(r, t0, stats, trace);
            true
        }
        None => false,
    }
}

fn record(
    r: ism_host_driver::ism::irq::IrqReport,
    t0: Option<f64>,
    stats: &HostStats,
    trace: Option<&(Arc<Tracer>, u32)>,
) {
    stats.handler_runs.fetch_add(1, Ordering::Relaxed);
    stats.signals.fetch_add(r.signals.into(), Ordering::Relaxed);
    stats.events.fetch_add(r.events.into(), Ordering::Relaxed);
    if let (Some((t, pid)), Some(t0)) = (trace, t0) {
        if r.signals + r.events > 0 {
            let args = [
                ("signals", r.signals.to_string()),
                ("events", r.events.to_string()),
            ];
            t.complete(*pid, "irq handler", "interrupt", t0, &args);
        }
    }
}

impl Host {
    /// Probes partition `p`'s function (CHID `chid`) and starts interrupt delivery.
    ///
    /// # Errors
    /// The driver's probe error.
    pub fn start(
        p: &Partition,
        chid: u16,
        mode: IrqMode,
        tracer: Option<Arc<Tracer>>,
    ) -> Result<Self, IsmError> {
        let driver = p.probe(chid)?;
        if let Some(t) = &tracer {
            driver.add_client(Arc::new(TraceEvents {
                tracer: t.clone(),
                pid: p.index() as u32,
            }))?;
        }
        let irq = p.irq().clone();
        let downs = p.downs().clone();
        // Counted after the probe: a function that went down before it failed the probe.
        let at_boot = downs.load(Ordering::Acquire);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HostStats::default());
        let trace = tracer.map(|t| (t, p.index() as u32));
        if mode == IrqMode::Thread {
            // The handler may also run where a bus operation raised the interrupt
            // (`IrqLine::set_inline_handler`); never after `stop_thread`.
            let (d, s, st, tr) = (
                Arc::downgrade(&driver),
                stop.clone(),
                stats.clone(),
                trace.clone(),
            );
            irq.set_inline_handler(Some(Box::new(move || {
                let Some(d) = d.upgrade().filter(|_| !s.load(Ordering::Acquire)) else {
                    return true; // stopped: nothing to deliver to
                };
                try_run_handler(&d, &st, tr.as_ref())
            })));
        }
        if mode == IrqMode::Thread {
            irq.set_threaded(true);
        }
        let thread = (mode == IrqMode::Thread).then(|| {
            let (d, l, s, st) = (driver.clone(), irq.clone(), stop.clone(), stats.clone());
            let dn = downs.clone();
            std::thread::Builder::new()
                .name(format!("ism-irq-{}", p.index()))
                .spawn(move || {
                    while !s.load(Ordering::Acquire) {
                        if l.wait(Duration::from_millis(100)) {
                            if let Some(delay) = l.injected_delay() {
                                std::thread::sleep(delay);
                            }
                            run_handler(&d, &st, trace.as_ref());
                        }
                        check_function(&d, &dn, at_boot);
                    }
                })
                .expect("spawn interrupt thread")
        });
        Ok(Self {
            driver,
            irq,
            stop,
            thread,
            stats,
            mode,
            downs: (downs, at_boot),
        })
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<SimDriver> {
        &self.driver
    }

    /// The interrupt mode.
    pub fn mode(&self) -> IrqMode {
        self.mode
    }

    /// Handler counters.
    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Runs the handler if the line is pending or the SBA shows work; returns whether it ran.
    pub fn poll(&self) -> bool {
        check_function(&self.driver, &self.downs.0, self.downs.1);
        let pending = self.irq.take();
        if pending || self.driver.irq_pending() {
            run_handler(&self.driver, &self.stats, None);
            true
        } else {
            false
        }
    }

    /// Stops interrupt delivery and removes the driver (UNREG_IEQ, UNREG_SBA).
    pub fn shutdown(mut self) {
        self.stop_thread();
        self.driver.remove();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.irq.set_inline_handler(None);
        self.irq.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            self.irq.set_threaded(false);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
