//! The fuzzed board's shape, shared by the device harness and the operation decoder (so
//! neither imports the other for it): functions, domain size and layout, GIDs, table size.

use ism_hal::Gid;

/// Functions (and domains) on the board.
pub const FUNCTIONS: usize = 3;
/// Bytes per memory domain.
pub const DOMAIN_SIZE: usize = 32 << 10;
/// DMB table size (small, so "table full" is reached).
pub const TABLE: usize = 8;

/// The GID of function `f`.
pub fn gid(f: usize) -> Gid {
    Gid(0x4953_4D00_0000_0100 + 0x100 * f as u64)
}

/// Device address of the first byte of domain `d` (as `FakeBoard` lays them out).
pub fn domain_base(d: usize) -> u64 {
    ((d as u64) + 1) << 32
}
