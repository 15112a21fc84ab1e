//! Byte formats the device shares with its hosts, one file per format.
//!
//! Every device-visible layout is **big-endian**, as on s390 (zerocopy `big_endian` types), and
//! every struct here is `Unaligned`, so a view can be taken of any byte slice after a length
//! check and never panics. Offsets and sizes follow Linux's `drivers/s390/net/ism.h`; each file
//! carries golden-byte tests built from those offsets.
//!
//! * [`header`]: the 8-byte request and response headers of every command;
//! * [`opcode`]: the command codes;
//! * one file per command body ([`reg_sba`] … [`attach_dmb`]);
//! * [`move_request`]: the 64-bit store-block request word that addresses a DMB;
//! * [`sba`]: the status block (summary/event bits, DMB bits, DMBE masks);
//! * [`ieq`]: the interrupt event queue and its events.

pub mod attach_dmb;
pub mod header;
pub mod ieq;
pub mod move_request;
pub mod opcode;
pub mod query_info;
pub mod query_rgid;
pub mod read_gid;
pub mod reg_dmb;
pub mod reg_ieq;
pub mod reg_sba;
pub mod sba;
pub mod signal_ieq;
pub mod unreg_dmb;
pub mod vlan_id;

pub use header::{RequestHeader, ResponseHeader, HEADER_LEN};
pub use opcode::Opcode;

/// Big-endian integer types used by all layouts.
pub use zerocopy::byteorder::big_endian::{U16, U32, U64};

/// Takes a typed view of the first `size_of::<T>()` bytes of `bytes`, or `None` if too short.
pub fn view<T>(bytes: &[u8]) -> Option<&T>
where
    T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned,
{
    T::ref_from_prefix(bytes).ok().map(|(v, _)| v)
}
