//! Waiting for a connection's peer: a sequence counter that the interrupt path bumps, and
//! two ways to wait for it to move.
//!
//! * [`WaitMode::Blocking`]: spin briefly while polling the device (adaptive busy-polling;
//!   a sleeping thread woken from another core costs ~20 µs on the machines this runs on),
//!   then sleep on a condition variable until the interrupt path wakes it;
//! * [`WaitMode::BusyPoll`]: never sleep; run a poll function (the device's interrupt
//!   handler) in the loop, as a busy-polling socket does.
//!
//! Waiters read [`Notify::seq`] *before* checking their condition and wait only while it is
//! unchanged, so a notification between the check and the wait is never lost.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Spin iterations between two `yield_now`s while spinning before a sleep.
const SPINS_PER_YIELD: u32 = 16;

/// A `yield_now` that takes longer than this ran another thread on our core for that long:
/// the core is wanted by others, and a spinning waiter should sleep instead.
pub const CONTENDED_YIELD: Duration = Duration::from_millis(1);

/// Contended yields in a row (process-wide) that make spin phases stop: one alone may be
/// the hypervisor taking the vCPU for a moment, not another thread wanting the core.
pub const CONTENDED_STRIKES: u32 = 2;

/// How long no [`SpinPhase`] spins after one saw the core contended.
pub const CONTENDED_BACKOFF: Duration = Duration::from_millis(100);

/// What spin phases learned about the cores: contended yields seen in a row (a quick yield
/// resets it), and until when (µs since [`epoch`]; 0: no back-off) no phase spins.
#[derive(Debug)]
struct Contention {
    strikes: AtomicU32,
    no_spin_until: AtomicU64,
}

impl Contention {
    const fn new() -> Self {
        Self {
            strikes: AtomicU32::new(0),
            no_spin_until: AtomicU64::new(0),
        }
    }
}

/// The state every spin phase of this process shares.
#[cfg(not(test))]
fn contention() -> &'static Contention {
    static PROCESS: Contention = Contention::new();
    &PROCESS
}

/// In this crate's unit tests, one state per thread: tests run side by side, and one
/// test's slow yields must not stop the spinning another test checks.
#[cfg(test)]
fn contention() -> &'static Contention {
    std::thread_local! {
        static STATE: &'static Contention = std::boxed::Box::leak(std::boxed::Box::new(Contention::new()));
    }
    STATE.with(|s| *s)
}

/// The time base of the back-off ([`Contention`]).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

/// The spin phase of a spin-then-sleep wait, shared by every such wait in the workspace.
///
/// It spins (`spin_loop`), yields every few iterations (more spinners than cores: let the
/// thread we wait for run), and ends when its time is up **or as soon as a yield shows that
/// another thread wanted this core** ([`CONTENDED_YIELD`]). That is Linux's rule for busy
/// polling (`net/core/dev.c` `napi_busy_loop` stops when `need_resched()`), which user
/// space can only observe this way: a waiter that kept spinning and yielding beside a busy
/// thread got the core back only after that thread's time slice (milliseconds per message),
/// while a sleeper is woken with priority. A yield that long also pushes the yielding
/// thread back in the scheduler's order, so few such yields are all the phases risk: after
/// [`CONTENDED_STRIKES`] in a row, no phase in this process spins for [`CONTENDED_BACKOFF`]
/// (every wait sleeps at once, as a TCP socket's does), and the first phase after that
/// probes again.
#[derive(Debug)]
pub struct SpinPhase {
    start: Instant,
    limit: Duration,
    spins: u32,
    contended: bool,
}

impl SpinPhase {
    /// A phase of at most `limit`; none at all while the cores are known to be contended.
    pub fn new(limit: Duration) -> Self {
        let start = Instant::now();
        let until = contention().no_spin_until.load(Ordering::Relaxed);
        let contended = until != 0 && micros_since_epoch(start) < until;
        Self {
            start,
            limit,
            spins: 0,
            contended,
        }
    }

    /// Spins once; `false` when the phase is over (time up or the core contended): check
    /// the condition once more, then sleep.
    pub fn spin(&mut self) -> bool {
        if self.contended || self.start.elapsed() >= self.limit {
            return false;
        }
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(SPINS_PER_YIELD) {
            return self.yield_now();
        }
        std::hint::spin_loop();
        true
    }

    /// Yields the core once, now (as [`SpinPhase::spin`] does every few turns); `false`
    /// when the phase is over (the core contended, or known to be). A waiter whose own
    /// write has just woken its peer yields first: if that peer runs on this core, it
    /// answers now instead of after the spin.
    pub fn yield_now(&mut self) -> bool {
        if self.contended {
            return false;
        }
        let before = Instant::now();
        std::thread::yield_now();
        let after = Instant::now();
        self.yielded(after - before, after)
    }

    /// Accounts a yield that took `took` and ended at `now`; `false` if the phase ends
    /// (the core is contended: see [`CONTENDED_STRIKES`]).
    fn yielded(&mut self, took: Duration, now: Instant) -> bool {
        let state = contention();
        if took <= CONTENDED_YIELD {
            if state.strikes.load(Ordering::Relaxed) != 0 {
                state.strikes.store(0, Ordering::Relaxed);
            }
            return true;
        }
        if state.strikes.fetch_add(1, Ordering::Relaxed) + 1 < CONTENDED_STRIKES {
            return true;
        }
        state.strikes.store(0, Ordering::Relaxed);
        self.contended = true;
        state.no_spin_until.store(
            micros_since_epoch(now + CONTENDED_BACKOFF).max(1),
            Ordering::Relaxed,
        );
        false
    }

    /// Whether the phase ended because another thread wanted the core.
    pub fn contended(&self) -> bool {
        self.contended
    }
}

/// How a reader or writer waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Spin for the given time, then sleep until notified.
    Blocking(Duration),
    /// Spin without sleeping, polling the device.
    BusyPoll,
}

impl Default for WaitMode {
    fn default() -> Self {
        WaitMode::Blocking(Duration::from_micros(30))
    }
}

/// A wake-up counter with sleeping waiters.
#[derive(Debug, Default)]
pub struct Notify {
    seq: AtomicU64,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Notify {
    /// A fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current sequence number; read it before checking the awaited condition.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Whether a thread sleeps (or is about to) in [`Notify::wait`], past its spin phase.
    pub fn has_sleepers(&self) -> bool {
        self.sleepers.load(Ordering::SeqCst) > 0
    }

    /// Bumps the sequence and wakes sleepers.
    pub fn notify(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cond.notify_all();
        }
    }

    /// Waits until the sequence differs from `seen` or `deadline` passes; `poll` (the
    /// device's interrupt handler, if work is pending) runs in busy-poll loops and during the
    /// spin phase of blocking waits. Returns `false` on timeout.
    pub fn wait(
        &self,
        seen: u64,
        mode: WaitMode,
        deadline: Option<Instant>,
        poll: impl FnMut() -> bool,
    ) -> bool {
        self.wait_polling(seen, mode, deadline, poll, |_| {})
    }

    /// [`Notify::wait`], telling `polling` when this thread starts (`true`) and stops
    /// (`false`) running `poll` in a loop: around a busy-poll wait, and around the spin
    /// phase of a blocking wait, which then runs `poll` once more before it sleeps (see
    /// [`SmcdOps::set_polling`](super::device::SmcdOps::set_polling): an interrupt whose
    /// wake-up was held back while we polled is found by that last poll).
    pub fn wait_polling(
        &self,
        seen: u64,
        mode: WaitMode,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> bool,
        mut polling: impl FnMut(bool),
    ) -> bool {
        let moved = || self.seq.load(Ordering::SeqCst) != seen;
        let expired = |now: Instant| deadline.is_some_and(|d| now >= d);
        match mode {
            WaitMode::BusyPoll => {
                polling(true);
                let mut spins = 0u32;
                let ok = loop {
                    if moved() {
                        break true;
                    }
                    if !poll() {
                        std::hint::spin_loop();
                    }
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(256) {
                        if expired(Instant::now()) {
                            break false;
                        }
                        // Two cores, possibly more runnable threads than cores: let them run.
                        if spins.is_multiple_of(4096) {
                            std::thread::yield_now();
                        }
                    }
                };
                polling(false);
                ok
            }
            WaitMode::Blocking(spin) => {
                if !spin.is_zero() {
                    polling(true);
                }
                let mut woken = false;
                let mut phase = SpinPhase::new(spin);
                while !spin.is_zero() {
                    // Poll the device while spinning (adaptive busy-polling): a reader that
                    // is about to get its data need not wait for the interrupt thread, a
                    // third thread on two cores.
                    if moved() || (poll() && moved()) {
                        woken = true;
                        break;
                    }
                    if !phase.spin() {
                        break;
                    }
                }
                if !spin.is_zero() {
                    polling(false);
                    // An interrupt raised while we polled may not have woken the interrupt
                    // thread: handle it here before sleeping.
                    woken = woken || moved() || (poll() && moved());
                }
                if woken {
                    return true;
                }
                let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let ok = loop {
                    if moved() {
                        break true;
                    }
                    let now = Instant::now();
                    if expired(now) {
                        break false;
                    }
                    // Sleep in bounded slices so that a missed wake-up can only delay, never
                    // hang, a waiter.
                    let slice = deadline.map_or(Duration::from_millis(50), |d| {
                        (d - now).min(Duration::from_millis(50))
                    });
                    g = self
                        .cond
                        .wait_timeout(g, slice)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                };
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spin_phases_stop_after_contended_yields_and_probe_again_later() {
        let slow = CONTENDED_YIELD * 2;
        let fast = Duration::from_micros(1);
        let mut p = SpinPhase::new(Duration::from_secs(10));
        // Fewer slow yields in a row than the strikes (a hypervisor hiccup) change
        // nothing; a quick one starts the count again.
        for _ in 1..CONTENDED_STRIKES {
            assert!(p.yielded(slow, Instant::now()));
        }
        assert!(p.yielded(fast, Instant::now()));
        for _ in 1..CONTENDED_STRIKES {
            assert!(p.yielded(slow, Instant::now()));
        }
        assert!(!p.contended());
        // The last strike: this phase ends, and new ones do not spin for the back-off.
        let now = Instant::now();
        assert!(!p.yielded(slow, now));
        assert!(p.contended() && !p.spin());
        let mut q = SpinPhase::new(Duration::from_secs(10));
        assert!(
            q.contended() && !q.spin() && !q.yield_now(),
            "no spinning (and no first yield) during the back-off"
        );
        // After the back-off a phase spins (probes) again.
        std::thread::sleep(Duration::from_millis(1));
        contention()
            .no_spin_until
            .store(micros_since_epoch(now).max(1), Ordering::Relaxed);
        let mut r = SpinPhase::new(Duration::from_secs(10));
        assert!(!r.contended() && r.spin() && r.yield_now());
    }

    #[test]
    fn a_spin_phase_ends_at_its_limit() {
        assert!(!SpinPhase::new(Duration::ZERO).spin());
        // A phase with time left spins (its first spin does not yield, so nothing else on
        // the core can end it).
        assert!(SpinPhase::new(Duration::from_secs(10)).spin());
        // It ends, and not before its limit unless the core was contended. (This thread may
        // be preempted anywhere on a loaded machine, even before the first spin: how many
        // spins ran is no part of the contract.)
        let start = Instant::now();
        let mut p = SpinPhase::new(Duration::from_millis(2));
        while p.spin() {}
        assert!(
            p.contended() || start.elapsed() >= Duration::from_millis(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn notify_wakes_blocking_and_polling_waiters() {
        for mode in [WaitMode::Blocking(Duration::ZERO), WaitMode::BusyPoll] {
            let n = Arc::new(Notify::new());
            let seen = n.seq();
            let n2 = n.clone();
            let t = std::thread::spawn(move || {
                n2.wait(
                    seen,
                    mode,
                    Some(Instant::now() + Duration::from_secs(10)),
                    || false,
                )
            });
            std::thread::sleep(Duration::from_millis(10));
            n.notify();
            assert!(t.join().unwrap(), "{mode:?}");
        }
    }

    #[test]
    fn a_notification_before_the_wait_is_not_lost() {
        let n = Notify::new();
        let seen = n.seq();
        n.notify();
        assert!(n.wait(seen, WaitMode::Blocking(Duration::ZERO), None, || false));
    }

    #[test]
    fn polling_is_announced_around_the_spin_and_a_last_poll_follows_it() {
        use std::cell::RefCell;
        for (mode, expect_last_poll) in [
            (WaitMode::Blocking(Duration::from_millis(2)), true),
            (WaitMode::BusyPoll, false),
        ] {
            let n = Notify::new();
            // Each event in order: P = a poll, + / - = polling on / off.
            let log = RefCell::new(std::string::String::new());
            let d = Some(Instant::now() + Duration::from_millis(5));
            let woke = n.wait_polling(
                n.seq(),
                mode,
                d,
                || {
                    log.borrow_mut().push('P');
                    false
                },
                |on| log.borrow_mut().push(if on { '+' } else { '-' }),
            );
            assert!(!woke, "{mode:?}: nothing notified");
            let log = log.into_inner();
            assert!(log.starts_with("+P"), "{mode:?}: {log}");
            assert_eq!(log.matches('+').count(), 1, "{mode:?}: {log}");
            assert_eq!(log.matches('-').count(), 1, "{mode:?}: {log}");
            assert_eq!(log.ends_with("-P"), expect_last_poll, "{mode:?}: {log}");
        }
        // Without a spin phase nothing is announced and nothing polled.
        let n = Notify::new();
        let events = std::cell::Cell::new(0);
        let d = Some(Instant::now() + Duration::from_millis(1));
        n.wait_polling(
            n.seq(),
            WaitMode::Blocking(Duration::ZERO),
            d,
            || {
                events.set(events.get() + 1);
                false
            },
            |_| events.set(events.get() + 1),
        );
        assert_eq!(events.get(), 0);
    }

    #[test]
    fn the_last_poll_after_the_spin_can_end_the_wait() {
        // A poll that finds work only once polling is off (an interrupt whose wake-up was
        // held back): the wait ends without sleeping.
        let n = Notify::new();
        let seen = n.seq();
        let off = std::cell::Cell::new(false);
        let start = Instant::now();
        let woke = n.wait_polling(
            seen,
            WaitMode::Blocking(Duration::from_micros(200)),
            Some(Instant::now() + Duration::from_secs(10)),
            || {
                if off.get() {
                    n.notify();
                    true
                } else {
                    false
                }
            },
            |on| off.set(!on),
        );
        assert!(woke);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn waits_time_out() {
        let n = Notify::new();
        let d = Some(Instant::now() + Duration::from_millis(5));
        assert!(!n.wait(n.seq(), WaitMode::Blocking(Duration::ZERO), d, || false));
        let d = Some(Instant::now() + Duration::from_millis(5));
        assert!(!n.wait(n.seq(), WaitMode::BusyPoll, d, || false));
    }
}
