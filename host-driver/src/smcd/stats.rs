//! Statistics of a stack, as Linux's `smcd stats` and `smcss` show them: per stack, the
//! connections that came up over SMC-D and the ones that fell back to TCP (with the decline
//! reasons), handshake errors, and the data path's totals (bytes, store-blocks, CDCs,
//! signals, waits, full buffers); per connection, its link group, peer, tokens and
//! counters.
//!
//! The per-stack figures follow Linux's `net/smc/smc_stats.h`: successful handshakes per
//! side (`clnt_v1_succ_cnt`/`srv_v1_succ_cnt` and the v2 ones), fallbacks per side with a
//! count per reason (`struct smc_stats_fback`, counted in `net/smc/af_smc.c`
//! `smc_stat_fallback`), handshake errors per side (`clnt_hshake_err_cnt`,
//! `srv_hshake_err_cnt`), bytes and full-buffer counts (`struct smc_stats_rmbcnt`). The
//! counters are atomics updated on the way; a snapshot reads them without stopping
//! anything.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloc::vec::Vec;

use ism_hal::DmbToken;

use super::clc::DeclineReason;
use super::conn::{ConnCounters, ConnStats};
use super::device::SmcdGid;
use super::handshake::Outcome;
use super::stack::{Role, SmcStack};

/// Handshake outcomes of one side (client or server).
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    smcd_v1: AtomicU64,
    smcd_v2: AtomicU64,
    errors: AtomicU64,
    fallbacks: Mutex<BTreeMap<u32, u64>>,
}

impl HandshakeCounters {
    /// Counts the result of one handshake.
    pub fn count(&self, r: &io::Result<Outcome>) {
        match r {
            Ok(Outcome::Smc(est)) if est.version >= 2 => {
                self.smcd_v2.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Smc(_)) => {
                self.smcd_v1.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Fallback(reason)) => {
                *self
                    .fallbacks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(reason.0)
                    .or_default() += 1;
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A snapshot.
    pub fn snapshot(&self) -> HandshakeStats {
        let fallback_reasons: Vec<(DeclineReason, u64)> = self
            .fallbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&r, &n)| (DeclineReason(r), n))
            .collect();
        HandshakeStats {
            smcd_v1: self.smcd_v1.load(Ordering::Relaxed),
            smcd_v2: self.smcd_v2.load(Ordering::Relaxed),
            fallbacks: fallback_reasons.iter().map(|(_, n)| n).sum(),
            fallback_reasons,
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Handshake outcomes of one side, a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Connections that came up over SMC-D v1.
    pub smcd_v1: u64,
    /// Connections that came up over SMC-D v2.
    pub smcd_v2: u64,
    /// Connections that fell back to TCP.
    pub fallbacks: u64,
    /// The fallbacks per decline reason, by reason code.
    pub fallback_reasons: Vec<(DeclineReason, u64)>,
    /// Handshakes that failed (the connection was aborted, not continued over TCP).
    pub errors: u64,
}

impl HandshakeStats {
    /// Connections over SMC-D (v1 and v2).
    pub fn smcd(&self) -> u64 {
        self.smcd_v1 + self.smcd_v2
    }
}

/// The counters a stack keeps for [`SmcStack::stats`].
#[derive(Debug, Default)]
pub struct StatsCounters {
    /// Our side connected.
    pub client: HandshakeCounters,
    /// Our side accepted.
    pub server: HandshakeCounters,
    /// The data path of every connection of the stack, added up (each connection counts
    /// into these from [`SmcStack::attach_conn`] on).
    pub traffic: Arc<TrafficCounters>,
}

/// Stripes of [`TrafficCounters`]: stripe [`SHARED`] and one for each of up to
/// `STRIPES - 1` threads counting at once (a thread keeps its stripe until it ends, also
/// one that counted once, such as an interrupt or accept thread), few enough that a
/// snapshot stays cheap (a stack's stripes take 8 KiB).
const STRIPES: usize = 64;
/// The stripe of threads that own none (counted with locked adds).
const SHARED: usize = 0;

/// Which stripes threads own now: bit `i` for stripe `i` (never [`SHARED`]'s). The index
/// is the same in every [`TrafficCounters`]: a thread that owns stripe 3 is the only
/// writer of stripe 3 of every stack.
static OWNED: AtomicU64 = AtomicU64::new(0);

/// The calling thread's stripe, given back when the thread ends.
struct Owned(usize);

impl Owned {
    /// Takes a free stripe, or [`SHARED`] if every other is owned.
    fn claim() -> Self {
        let all = !(1u64 << SHARED);
        let mut now = OWNED.load(Ordering::Relaxed);
        loop {
            let free = all & !now;
            if free == 0 {
                return Self(SHARED);
            }
            let i = free.trailing_zeros();
            // Acquire: this thread's first count of a stripe sees the last count of the
            // thread that gave it back.
            match OWNED.compare_exchange_weak(
                now,
                now | 1 << i,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Self(i as usize),
                Err(n) => now = n,
            }
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.0 != SHARED {
            // Release: after this thread's counts (see `claim`).
            OWNED.fetch_and(!(1 << self.0), Ordering::Release);
        }
    }
}

std::thread_local! {
    static MINE: Owned = Owned::claim();
}

/// Adds `n` to a counter that one thread at a time writes (its owner, or whoever holds
/// the lock that orders its writers): a load and a store instead of a locked add, which
/// costs about as much as the rest of a small message's bookkeeping and, after a copy into
/// a line another core holds, waits for that copy's stores.
pub(crate) fn add_owned(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The data-path totals of a stack: [`ConnCounters`] in stripes, each on cache lines of its
/// own, added up by [`TrafficCounters::snapshot`] (Linux keeps its SMC statistics per CPU
/// for the same reason: `net/smc/smc_stats.h` `SMC_STAT_INC`). With one set of counters per
/// stack, every message of two threads talking through one stack (the loopback device)
/// pulled the counters' lines from the other core: about 6 % of the busy-poll round trip
/// (`ism-sim bench`, loopback rows). A thread owns a stripe from its first count to its end
/// (then the next thread takes it over), so it counts with plain loads and stores; threads
/// beyond the stripes, and counts made while a thread ends, share one stripe with locked
/// adds. (In a child after `fork`, the stripes of the parent's other threads stay owned:
/// the child's threads then share sooner. A count made by a signal handler that
/// interrupted its own thread's count of the same counter can be lost: statistics only.)
#[derive(Debug)]
pub struct TrafficCounters {
    stripes: [Stripe; STRIPES],
}

impl Default for TrafficCounters {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Stripe::default()),
        }
    }
}

/// One stripe, alone on its cache lines (128 bytes: x86 fetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(ConnCounters);

impl TrafficCounters {
    /// Adds `n` to the counter `which` picks, in the calling thread's stripe.
    pub fn add(&self, which: fn(&ConnCounters) -> &AtomicU64, n: u64) {
        match MINE.try_with(|m| m.0) {
            Ok(i) if i != SHARED => add_owned(which(&self.stripes[i].0), n),
            _ => {
                which(&self.stripes[SHARED].0).fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The totals now: every stripe added up.
    pub fn snapshot(&self) -> ConnStats {
        let mut total = ConnStats::default();
        for s in &self.stripes {
            total += s.0.snapshot();
        }
        total
    }
}

/// A stack's statistics (Linux: `smcd stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Handshakes where we connected.
    pub client: HandshakeStats,
    /// Handshakes where we accepted.
    pub server: HandshakeStats,
    /// Data path totals of all connections, past and present.
    pub traffic: ConnStats,
    /// Live SMC-D connections.
    pub connections: usize,
    /// Link groups.
    pub link_groups: usize,
}

/// One live SMC-D connection (Linux: a line of `smcss`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Link group id.
    pub link_group: u32,
    /// Device index in the stack.
    pub device: usize,
    /// Who opened the link group.
    pub role: Role,
    /// Peer GID.
    pub peer_gid: SmcdGid,
    /// Token of our RMB.
    pub local_token: DmbToken,
    /// Token of the peer's RMB.
    pub peer_token: DmbToken,
    /// Our RMB's length in bytes.
    pub rmb_len: u32,
    /// Whether we write into the peer's DMB without copying.
    pub nocopy: bool,
    /// Whether the connection is broken (a failed move or CDC).
    pub broken: bool,
    /// Its counters.
    pub stats: ConnStats,
}

impl SmcStack {
    /// Counts the result of one handshake of `role`'s side.
    pub fn count_handshake(&self, role: Role, r: &io::Result<Outcome>) {
        let c = self.stats_counters();
        match role {
            Role::Client => c.client.count(r),
            Role::Server => c.server.count(r),
        }
    }

    /// The stack's statistics now.
    pub fn stats(&self) -> StackStats {
        let c = self.stats_counters();
        let lgrs = self.link_groups();
        StackStats {
            client: c.client.snapshot(),
            server: c.server.snapshot(),
            traffic: c.traffic.snapshot(),
            connections: lgrs.iter().map(|l| l.connections().len()).sum(),
            link_groups: lgrs.len(),
        }
    }

    /// Every live connection with its counters.
    pub fn connection_stats(&self) -> Vec<ConnInfo> {
        let mut v = Vec::new();
        for l in self.link_groups() {
            for c in l.connections() {
                v.push(ConnInfo {
                    link_group: l.id,
                    device: l.device,
                    role: l.role,
                    peer_gid: l.peer_gid,
                    local_token: c.rmb().token,
                    peer_token: c.peer().token,
                    rmb_len: c.rmb().len,
                    nocopy: c.is_nocopy(),
                    broken: c.is_broken(),
                    stats: c.stats(),
                });
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_totals_add_up_every_threads_counts() {
        let t = Arc::new(TrafficCounters::default());
        let threads: Vec<_> = (0..20u64)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.add(|c| &c.bytes_sent, i);
                        t.add(|c| &c.waits, 1);
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        let s = t.snapshot();
        assert_eq!(s.bytes_sent, 1000 * (0..20).sum::<u64>());
        assert_eq!(s.waits, 20_000);
        assert_eq!(s.signals, 0);
    }

    #[test]
    fn threads_owning_stripes_at_once_and_in_turn_lose_no_count() {
        let t = Arc::new(TrafficCounters::default());
        // More threads at once than stripes (some share), then waves of short-lived
        // threads that take over the stripes given back.
        for wave in 0..4 {
            let n = if wave == 0 { 3 * STRIPES } else { 5 };
            let barrier = Arc::new(std::sync::Barrier::new(n));
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let (t, barrier) = (t.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        t.add(|c| &c.cdc_sent, 1);
                        barrier.wait();
                        for _ in 0..500 {
                            t.add(|c| &c.cdc_sent, 1);
                        }
                    })
                })
                .collect();
            for h in threads {
                h.join().unwrap();
            }
        }
        assert_eq!(t.snapshot().cdc_sent, 501 * (3 * STRIPES as u64 + 15));
    }

    #[test]
    fn a_count_made_while_its_thread_ends_is_kept() {
        // A connection dropped by a thread-local's destructor counts after the thread gave
        // its stripe back (or while it does): it goes to the shared stripe.
        struct CountsOnDrop(Arc<TrafficCounters>);
        impl Drop for CountsOnDrop {
            fn drop(&mut self) {
                self.0.add(|c| &c.bytes_received, 7);
            }
        }
        std::thread_local! {
            static LATE: std::cell::RefCell<Option<CountsOnDrop>> =
                const { std::cell::RefCell::new(None) };
        }
        let t = Arc::new(TrafficCounters::default());
        let t2 = t.clone();
        std::thread::spawn(move || {
            // Registered before the stripe, so dropped after it (glibc runs thread-local
            // destructors in reverse order of registration).
            LATE.with(|l| *l.borrow_mut() = Some(CountsOnDrop(t2.clone())));
            t2.add(|c| &c.bytes_received, 1);
        })
        .join()
        .unwrap();
        assert_eq!(t.snapshot().bytes_received, 8);
    }
}
