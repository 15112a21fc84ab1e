//! Newtypes for the identifiers that cross the device boundary.
//!
//! They exist so that a GID is never passed where a token is expected: the device's access
//! rules compare these values, and a mix-up there would be a security hole, not a typo.

/// A device (DMA) address inside one memory domain, as a host passes it in commands
/// (REG_SBA, REG_IEQ, REG_DMB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DevAddr(pub u64);

impl DevAddr {
    /// `self + offset`, or `None` on overflow.
    pub const fn checked_add(self, offset: u64) -> Option<DevAddr> {
        match self.0.checked_add(offset) {
            Some(a) => Some(DevAddr(a)),
            None => None,
        }
    }
}

/// A memory domain: the memory of one partition (LPAR), or the single memory of a loopback
/// board that all its functions share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DomainId(pub u16);

/// One ISM PCI function on the device (one per partition on an LPAR board).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FunctionId(pub u16);

impl FunctionId {
    /// The function number as an index into per-function tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// The 64-bit global identifier of an ISM function (READ_GID).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Gid(pub u64);

/// A DMB token as REG_DMB returns it. Its low 32 bits are zero, because the store-block
/// request word ORs the DMBE index, signal flag and offset into them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DmbToken(pub u64);

impl DmbToken {
    /// Whether the low 32 bits are zero, as every token the device issues is.
    pub const fn is_well_formed(self) -> bool {
        self.0 & 0xFFFF_FFFF == 0
    }
}
