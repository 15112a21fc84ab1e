//! The DMB table: where DMB tokens are issued and checked, and where the access rules of a
//! buffer (owner, authorized writer, VLAN, bounds) live.
//!
//! Two halves with different rules:
//! * [`DmbSlot`] is read by the **move path** without a lock: the fields are atomics published
//!   by a [`Lease`], so a mover sees either a complete, live entry or none.
//! * [`SlotControl`] is the control path's bookkeeping (state, attachers), kept under the
//!   device's control lock.
//!
//! Token format (high 32 bits; the low 32 are always zero):
//! `((generation << 14) | slot) ^ salt`. The slot finds the entry in O(1); the 18-bit
//! generation changes on every registration of that slot, so a stale token is rejected, not
//! aliased to the slot's next owner; the per-device salt makes tokens unguessable in
//! practice. A forged token that happens to name a live DMB still passes the writer-GID check
//! only if the forger is that DMB's authorized writer.
//! Slots are handed out round-robin, so one slot's generation wraps only after 2^18
//! registrations *of that slot*.

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use portable_atomic::AtomicU64;

use ism_hal::{DevAddr, DmbToken, FunctionId, Gid};

use crate::lease::{Lease, LeaseGuard};
use crate::line::CacheLine;

pub use ism_abi::wire::reg_dmb::MAX_DMB_LEN;
/// Bits of the token that select the slot.
pub const SLOT_BITS: u32 = 14;
/// Largest table a device can have.
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Generations run 1..=MAX_GENERATION.
pub const MAX_GENERATION: u32 = (1 << (32 - SLOT_BITS)) - 1;

const VLAN_VALID: u32 = 1 << 31;

/// What a move needs to know about a DMB, read under a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmbInfo {
    /// The function that registered the DMB.
    pub owner: FunctionId,
    /// Its device address in the owner's domain.
    pub addr: DevAddr,
    /// Its length.
    pub len: u32,
    /// Its bit in the owner's SBA.
    pub sba_idx: u16,
    /// The only GID allowed to write it.
    pub rgid: Gid,
    /// The VLAN it is tagged with, if any.
    pub vlan: Option<u16>,
}

/// The lock-free half of one table entry.
#[derive(Debug)]
pub struct DmbSlot {
    lease: Lease,
    owner: AtomicU16,
    sba_idx: AtomicU16,
    len: AtomicU32,
    vlan: AtomicU32,
    addr: AtomicU64,
    rgid: AtomicU64,
}

impl DmbSlot {
    const fn new() -> Self {
        Self {
            lease: Lease::new(),
            owner: AtomicU16::new(0),
            sba_idx: AtomicU16::new(0),
            len: AtomicU32::new(0),
            vlan: AtomicU32::new(0),
            addr: AtomicU64::new(0),
            rgid: AtomicU64::new(0),
        }
    }

    fn info(&self) -> DmbInfo {
        let vlan = self.vlan.load(Ordering::Relaxed);
        DmbInfo {
            owner: FunctionId(self.owner.load(Ordering::Relaxed)),
            addr: DevAddr(self.addr.load(Ordering::Relaxed)),
            len: self.len.load(Ordering::Relaxed),
            sba_idx: self.sba_idx.load(Ordering::Relaxed),
            rgid: Gid(self.rgid.load(Ordering::Relaxed)),
            vlan: (vlan & VLAN_VALID != 0).then_some(vlan as u16),
        }
    }
}

/// Life cycle of a slot, as the control path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlotState {
    /// Unused.
    #[default]
    Free,
    /// Registered and live: moves and attaches succeed.
    Registered,
    /// Unregistered by its owner while still attached elsewhere: no moves, no new attaches;
    /// freed at the last detach.
    Orphaned,
}

/// The control half of one table entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotControl {
    /// Life cycle state.
    pub state: SlotState,
    /// Generation of the current (or last) registration.
    pub generation: u32,
    /// Owner (valid unless `Free`).
    pub owner: FunctionId,
    /// SBA index at the owner (valid unless `Free`).
    pub sba_idx: u16,
    /// Authorized writer (valid unless `Free`).
    pub rgid: Gid,
    /// Bit `f` set: function `f` has the DMB attached.
    pub attachers: u64,
}

/// A lease on a live DMB plus a snapshot of its rules; the DMB stays registered (and its
/// memory valid) while this exists.
pub struct LiveDmb<'a> {
    _guard: LeaseGuard<'a>,
    /// The DMB's rules.
    pub info: DmbInfo,
}

/// The lock-free table of `N` slots.
pub struct DmbTable<const N: usize> {
    /// One line each: a move into one DMB writes its slot's lease count, and the moves
    /// into a neighbouring slot come from another partition's core.
    slots: [CacheLine<DmbSlot>; N],
    salt: u32,
}

impl<const N: usize> DmbTable<N> {
    const CAPACITY_OK: () = assert!(N > 0 && N <= MAX_SLOTS, "DMB table size out of range");

    /// An empty table whose tokens are scrambled with `salt`.
    pub const fn new(salt: u32) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        Self {
            slots: [const { CacheLine::new(DmbSlot::new()) }; N],
            salt,
        }
    }

    /// Encodes the token of `slot` at `generation`.
    pub fn token(&self, slot: usize, generation: u32) -> DmbToken {
        let hi = ((generation << SLOT_BITS) | slot as u32) ^ self.salt;
        DmbToken((hi as u64) << 32)
    }

    /// Decodes a token (its low 32 bits are ignored) into `(slot, generation)`, or `None` if
    /// the slot is outside the table.
    pub fn decode(&self, token: DmbToken) -> Option<(usize, u32)> {
        let x = ((token.0 >> 32) as u32) ^ self.salt;
        let slot = (x & ((1 << SLOT_BITS) - 1)) as usize;
        (slot < N).then_some((slot, x >> SLOT_BITS))
    }

    /// Move path: leases the DMB named by `token` if it is live. Lock-free.
    pub fn lease(&self, token: DmbToken) -> Option<LiveDmb<'_>> {
        let (slot, generation) = self.decode(token)?;
        let s = &self.slots[slot];
        let guard = s.lease.acquire(Some(generation))?;
        Some(LiveDmb {
            _guard: guard,
            info: s.info(),
        })
    }

    /// Control path: fills `slot` and makes it live; returns its token.
    pub fn publish(&self, slot: usize, info: &DmbInfo) -> (DmbToken, u32) {
        let s = &self.slots[slot];
        s.owner.store(info.owner.0, Ordering::Relaxed);
        s.addr.store(info.addr.0, Ordering::Relaxed);
        s.len.store(info.len, Ordering::Relaxed);
        s.sba_idx.store(info.sba_idx, Ordering::Relaxed);
        s.rgid.store(info.rgid.0, Ordering::Relaxed);
        let vlan = info.vlan.map_or(0, |v| VLAN_VALID | v as u32);
        s.vlan.store(vlan, Ordering::Relaxed);
        let generation = s.lease.publish(MAX_GENERATION);
        (self.token(slot, generation), generation)
    }

    /// Control path: stops moves into `slot` and waits for those in flight to finish.
    pub fn revoke(&self, slot: usize) {
        self.slots[slot].lease.revoke();
    }

    /// Control path: a snapshot of `slot`'s rules (meaningful while it is not free).
    pub fn info(&self, slot: usize) -> DmbInfo {
        self.slots[slot].info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DmbInfo {
        DmbInfo {
            owner: FunctionId(1),
            addr: DevAddr(0x1000),
            len: 4096,
            sba_idx: 40,
            rgid: Gid(7),
            vlan: Some(5),
        }
    }

    #[test]
    fn tokens_round_trip_and_have_zero_low_half() {
        let t = DmbTable::<64>::new(0xA5A5_5A5A);
        for slot in [0, 1, 63] {
            for gen in [1, 2, MAX_GENERATION] {
                let tok = t.token(slot, gen);
                assert!(tok.is_well_formed());
                assert_eq!(t.decode(tok), Some((slot, gen)));
                assert_eq!(t.decode(DmbToken(tok.0 | 0x00FF_FFFF)), Some((slot, gen)));
            }
        }
    }

    #[test]
    fn stale_and_forged_tokens_are_rejected() {
        let t = DmbTable::<4>::new(0x1234);
        let (tok, _) = t.publish(2, &info());
        assert_eq!(t.lease(tok).unwrap().info, info());
        t.revoke(2);
        assert!(t.lease(tok).is_none(), "unregistered");
        let (tok2, _) = t.publish(2, &info());
        assert_ne!(tok, tok2);
        assert!(t.lease(tok).is_none(), "stale generation");
        assert!(t.lease(tok2).is_some());
        assert!(t.lease(DmbToken(0)).is_none());
        assert!(t.lease(DmbToken(u64::MAX)).is_none());
    }

    #[test]
    fn a_slot_reregistered_many_times_never_repeats_a_token() {
        // Generations use every token bit above the slot: 2^18 - 1 of them before a token
        // comes back (a smaller field would let a stale token name a later DMB sooner).
        assert_eq!(MAX_GENERATION, u32::MAX >> SLOT_BITS);
        let t = DmbTable::<2>::new(0x77);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let (tok, _) = t.publish(1, &info());
            assert!(seen.insert(tok.0), "token {tok:?} issued twice");
            t.revoke(1);
        }
    }

    #[test]
    fn a_token_naming_a_slot_past_the_table_is_refused() {
        let t = DmbTable::<4>::new(0x1234);
        // The last slot is fine; the one just past the table (and any further) is not.
        assert_eq!(t.decode(t.token(3, 9)), Some((3, 9)));
        for slot in [4, 5, 63, (1 << SLOT_BITS) - 1] {
            assert_eq!(t.decode(t.token(slot, 9)), None, "slot {slot}");
            assert!(t.lease(t.token(slot, 9)).is_none(), "slot {slot}");
        }
    }
}
