//! Per-function state: the identity of one ISM function (GID, memory domain) and what its
//! host registered with it (SBA, IEQ, VLANs).
//!
//! [`FunctionState`] holds what the move and event paths read without the control lock
//! (online flag, SBA lease, VLAN membership bits, the IEQ behind its own small lock);
//! [`FunctionControl`] holds what only commands touch.

use core::sync::atomic::{AtomicBool, Ordering};

use portable_atomic::AtomicU64;

use ism_hal::{DevAddr, DomainId, Gid};

use crate::lease::Lease;
use crate::line::CacheLine;
use crate::wire::query_info::MAX_VLAN_IDS;
use crate::wire::sba::NR_DMBS;
use crate::wire::vlan_id::RESERVED_VLAN_ID;

/// How a board describes one function to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionConfig {
    /// The function's GID (unique on the device).
    pub gid: Gid,
    /// The memory domain of the partition the function belongs to.
    pub domain: DomainId,
}

/// Whether `id` is a VLAN id the device accepts: 0..=4095, or the reserved 0x1FFF.
pub const fn is_valid_vlan(id: u64) -> bool {
    id < 4096 || id == RESERVED_VLAN_ID
}

/// Bit index of a valid VLAN id in the membership bitmap (0x1FFF maps to bit 4096).
const fn vlan_bit(id: u16) -> usize {
    if id as u64 == RESERVED_VLAN_ID {
        4096
    } else {
        id as usize
    }
}

/// The registered IEQ and the device's producer position in it.
#[derive(Debug, Default)]
pub struct IeqState {
    /// Device address, if registered.
    pub addr: Option<DevAddr>,
    /// Registered length in bytes.
    pub len: usize,
    /// Number of entries.
    pub entries: usize,
    /// Entry the next event goes to.
    pub next: usize,
}

/// Lock-free (and IEQ-locked) state of one function.
pub struct FunctionState {
    /// The board's description.
    pub config: FunctionConfig,
    /// Offline functions refuse commands and moves.
    pub online: AtomicBool,
    /// Guards `sba_addr` for the signal path. On a line of its own: the moves of the
    /// function's peers take it, while the function's own moves read the fields around.
    pub sba_lease: CacheLine<Lease>,
    /// Registered SBA address (meaningful while the lease is live).
    pub sba_addr: AtomicU64,
    /// VLAN membership, one bit per id 0..=4095 plus bit 4096 for 0x1FFF.
    vlan_bits: [AtomicU64; 65],
    /// The IEQ; events from any thread serialise here.
    pub ieq: spin::Mutex<IeqState>,
}

impl FunctionState {
    /// A fresh, online function with nothing registered.
    pub fn new(config: FunctionConfig) -> Self {
        Self {
            config,
            online: AtomicBool::new(true),
            sba_lease: CacheLine::new(Lease::new()),
            sba_addr: AtomicU64::new(0),
            vlan_bits: [const { AtomicU64::new(0) }; 65],
            ieq: spin::Mutex::new(IeqState::default()),
        }
    }

    /// Whether the function accepts commands and moves.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Whether the function is a member of VLAN `id`.
    pub fn in_vlan(&self, id: u16) -> bool {
        let b = vlan_bit(id);
        b <= 4096 && self.vlan_bits[b / 64].load(Ordering::Acquire) & (1 << (b % 64)) != 0
    }

    /// Sets or clears membership of VLAN `id`.
    pub fn set_vlan(&self, id: u16, member: bool) {
        let b = vlan_bit(id);
        let Some(word) = self.vlan_bits.get(b / 64) else {
            return;
        };
        if member {
            word.fetch_or(1 << (b % 64), Ordering::Release);
        } else {
            word.fetch_and(!(1 << (b % 64)), Ordering::Release);
        }
    }

    /// Registered SBA address, if any (racy; for reports).
    pub fn sba(&self) -> Option<DevAddr> {
        self.sba_lease
            .live_generation()
            .map(|_| DevAddr(self.sba_addr.load(Ordering::Acquire)))
    }
}

/// Control-path state of one function, kept under the device's control lock.
#[derive(Debug)]
pub struct FunctionControl {
    /// SBA indices in use by this function's DMBs.
    pub sba_indices: [u32; NR_DMBS / 32],
    /// VLAN ids in the order they were added (QUERY_INFO lists them).
    pub vlans: heapless::Vec<u16, MAX_VLAN_IDS>,
    /// SET_VLAN / RESET_VLAN state.
    pub vlan_required: bool,
}

impl FunctionControl {
    /// Nothing registered.
    pub const fn new() -> Self {
        Self {
            sba_indices: [0; NR_DMBS / 32],
            vlans: heapless::Vec::new(),
            vlan_required: false,
        }
    }

    /// Whether SBA index `idx` is in use.
    pub fn index_in_use(&self, idx: usize) -> bool {
        self.sba_indices[idx / 32] & (1 << (idx % 32)) != 0
    }

    /// Marks SBA index `idx` used or free.
    pub fn set_index(&mut self, idx: usize, used: bool) {
        if used {
            self.sba_indices[idx / 32] |= 1 << (idx % 32);
        } else {
            self.sba_indices[idx / 32] &= !(1 << (idx % 32));
        }
    }
}

impl Default for FunctionControl {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_membership() {
        let f = FunctionState::new(FunctionConfig {
            gid: Gid(1),
            domain: DomainId(0),
        });
        assert!(!f.in_vlan(0x1FFF));
        f.set_vlan(0x1FFF, true);
        f.set_vlan(4095, true);
        f.set_vlan(0, true);
        assert!(f.in_vlan(0x1FFF) && f.in_vlan(4095) && f.in_vlan(0));
        assert!(!f.in_vlan(1));
        f.set_vlan(4095, false);
        assert!(!f.in_vlan(4095));
        assert!(
            !f.in_vlan(0x2000),
            "ids outside the valid set are never members"
        );
        assert!(is_valid_vlan(0x1FFF) && is_valid_vlan(0) && !is_valid_vlan(4096));
    }

    #[test]
    fn sba_index_bitmap() {
        let mut c = FunctionControl::new();
        c.set_index(32, true);
        c.set_index(1919, true);
        assert!(c.index_in_use(32) && c.index_in_use(1919) && !c.index_in_use(33));
        c.set_index(32, false);
        assert!(!c.index_in_use(32));
    }
}
