//! Fault injection, in the spirit of smoltcp's `FaultInjector`: a board can drop or delay
//! interrupts, fail commands (the host reads `0xFFFF`, "no response") and refuse
//! store-blocks, at configurable rates and from a seeded generator, so a failing run can be
//! replayed. Partition crashes, IEQ overflow and DMB exhaustion need no wrapper: a test calls
//! [`crate::board::SimBoard::crash`], sends more than 15 events, or registers DMBs until the
//! device says no.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rng;

/// What to inject. Rates are in parts per million of the operations concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Interrupts that are never raised (the SBA bits stay set; the next interrupt finds them).
    pub drop_irq_ppm: u32,
    /// Extra latency before the interrupt thread runs the handler.
    pub delay_irq: Option<Duration>,
    /// Commands that get no response (`ret` 0xFFFF) and are not executed.
    pub fail_command_ppm: u32,
    /// Only these command codes fail (empty: any).
    pub fail_opcodes: Vec<u32>,
    /// Store-blocks that the bus refuses (nothing written).
    pub fail_store_ppm: u32,
    /// Seed of the generator.
    pub seed: u64,
}

impl FaultConfig {
    /// Whether anything is injected.
    pub fn is_active(&self) -> bool {
        self.drop_irq_ppm > 0
            || self.delay_irq.is_some()
            || self.fail_command_ppm > 0
            || self.fail_store_ppm > 0
    }
}

/// Counts of what was injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Interrupts dropped.
    pub dropped_irqs: u64,
    /// Commands failed.
    pub failed_commands: u64,
    /// Store-blocks refused.
    pub failed_stores: u64,
}

/// Decides, operation by operation, whether to inject a fault.
#[derive(Debug)]
pub struct FaultInjector {
    cfg: FaultConfig,
    rng: AtomicU64,
    dropped_irqs: AtomicU64,
    failed_commands: AtomicU64,
    failed_stores: AtomicU64,
}

impl FaultInjector {
    /// An injector for `cfg`.
    pub fn new(cfg: FaultConfig) -> Self {
        let seed = rng::seed_state(cfg.seed);
        Self {
            cfg,
            rng: AtomicU64::new(seed),
            dropped_irqs: AtomicU64::new(0),
            failed_commands: AtomicU64::new(0),
            failed_stores: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    fn roll(&self, ppm: u32) -> bool {
        if ppm == 0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let (n, out) = rng::step(x);
            match self
                .rng
                .compare_exchange_weak(x, n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (out % 1_000_000) < ppm as u64,
                Err(now) => x = now,
            }
        }
    }

    /// Whether this interrupt is dropped.
    pub fn drop_irq(&self) -> bool {
        let d = self.roll(self.cfg.drop_irq_ppm);
        if d {
            self.dropped_irqs.fetch_add(1, Ordering::Relaxed);
        }
        d
    }

    /// Whether this command (code `cmd`) fails.
    pub fn fail_command(&self, cmd: u32) -> bool {
        let eligible = self.cfg.fail_opcodes.is_empty() || self.cfg.fail_opcodes.contains(&cmd);
        let f = eligible && self.roll(self.cfg.fail_command_ppm);
        if f {
            self.failed_commands.fetch_add(1, Ordering::Relaxed);
        }
        f
    }

    /// Whether this store-block is refused.
    pub fn fail_store(&self) -> bool {
        let f = self.roll(self.cfg.fail_store_ppm);
        if f {
            self.failed_stores.fetch_add(1, Ordering::Relaxed);
        }
        f
    }

    /// What was injected so far.
    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            dropped_irqs: self.dropped_irqs.load(Ordering::Relaxed),
            failed_commands: self.failed_commands.load(Ordering::Relaxed),
            failed_stores: self.failed_stores.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_roughly_honoured_and_reproducible() {
        let cfg = FaultConfig {
            drop_irq_ppm: 250_000,
            seed: 42,
            ..FaultConfig::default()
        };
        let a = FaultInjector::new(cfg.clone());
        let b = FaultInjector::new(cfg);
        let da: Vec<bool> = (0..4000).map(|_| a.drop_irq()).collect();
        let db: Vec<bool> = (0..4000).map(|_| b.drop_irq()).collect();
        assert_eq!(da, db, "same seed, same faults");
        let n = a.counts().dropped_irqs;
        assert!((700..1300).contains(&n), "{n} of 4000 at 25%");
        let none = FaultInjector::new(FaultConfig::default());
        assert!(!(0..1000).any(|_| none.drop_irq() || none.fail_store() || none.fail_command(1)));
    }

    #[test]
    fn opcode_filter() {
        let f = FaultInjector::new(FaultConfig {
            fail_command_ppm: 1_000_000,
            fail_opcodes: vec![0x0A],
            ..FaultConfig::default()
        });
        assert!(f.fail_command(0x0A));
        assert!(!f.fail_command(0x01));
    }
}
