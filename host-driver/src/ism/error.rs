//! Errors of the ISM driver.

use ism_abi::{MoveError, ReturnCode};

/// What kind of failure, as an errno a Linux caller would see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `ENOSPC`: no free SBA index, or the device's DMB table is full.
    NoSpace,
    /// `ENOMEM`: no DMA memory left in the partition.
    NoMemory,
    /// `EINVAL`: an argument the driver refuses before asking the device.
    InvalidArgument,
    /// `EIO`: the device refused a command (see the return code).
    Io,
    /// `ENETUNREACH`: the remote GID is not reachable.
    Unreachable,
    /// `EOPNOTSUPP`: the device does not offer the operation (attach on an LPAR board).
    NotSupported,
    /// `ENODEV`: the function is gone or offline.
    NoDevice,
    /// `EACCES`/`EFAULT`: a move was refused (bad token, not the authorized writer, out of
    /// range).
    MoveRefused,
}

impl ErrorKind {
    /// The Linux errno value (positive).
    pub const fn errno(self) -> i32 {
        match self {
            ErrorKind::NoSpace => 28,
            ErrorKind::NoMemory => 12,
            ErrorKind::InvalidArgument => 22,
            ErrorKind::Io => 5,
            ErrorKind::Unreachable => 101,
            ErrorKind::NotSupported => 95,
            ErrorKind::NoDevice => 19,
            ErrorKind::MoveRefused => 14,
        }
    }
}

/// An ISM driver error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IsmError {
    /// The device answered with a known non-zero return code.
    Device(ReturnCode),
    /// The device answered with a return code this model does not define (another vendor's
    /// device), or `0xFFFF` (no response).
    DeviceRaw(u16),
    /// A store-block was refused by the device.
    Move(MoveError),
    /// A store-block was refused with a code this model does not define.
    MoveRaw(u8),
    /// The driver refused before asking the device.
    Local(ErrorKind),
}

impl IsmError {
    /// The errno-like kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IsmError::Device(ReturnCode::DmbTableFull) => ErrorKind::NoSpace,
            IsmError::Device(ReturnCode::RemoteGidUnreachable) => ErrorKind::Unreachable,
            IsmError::Device(ReturnCode::FunctionOffline) => ErrorKind::NoDevice,
            IsmError::Device(ReturnCode::UnknownCommand) => ErrorKind::NotSupported,
            IsmError::Device(_) | IsmError::DeviceRaw(_) => ErrorKind::Io,
            IsmError::Move(MoveError::FunctionOffline) => ErrorKind::NoDevice,
            IsmError::Move(_) | IsmError::MoveRaw(_) => ErrorKind::MoveRefused,
            IsmError::Local(k) => *k,
        }
    }

    /// The device's return code, if the device refused a command.
    pub fn return_code(&self) -> Option<u16> {
        match self {
            IsmError::Device(rc) => Some(rc.raw()),
            IsmError::DeviceRaw(r) => Some(*r),
            _ => None,
        }
    }

    pub(crate) fn from_ret(ret: u16) -> Self {
        ReturnCode::from_raw(ret).map_or(IsmError::DeviceRaw(ret), IsmError::Device)
    }

    pub(crate) fn from_bus(e: super::BusError) -> Self {
        match e {
            super::BusError::NoDevice => IsmError::Local(ErrorKind::NoDevice),
            super::BusError::StoreRefused(code) => {
                MoveError::from_raw(code).map_or(IsmError::MoveRaw(code), IsmError::Move)
            }
        }
    }
}

impl core::fmt::Display for IsmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IsmError::Device(rc) => write!(f, "device refused: {rc}"),
            IsmError::DeviceRaw(0xFFFF) => f.write_str("device did not respond (ret 0xffff)"),
            IsmError::DeviceRaw(r) => write!(f, "device refused with ret {r:#06x}"),
            IsmError::Move(m) => write!(f, "move refused: {m}"),
            IsmError::MoveRaw(c) => write!(f, "move refused with code {c}"),
            IsmError::Local(k) => write!(f, "{k:?} (errno {})", k.errno()),
        }
    }
}

impl core::error::Error for IsmError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_as_linux_callers_expect() {
        assert_eq!(
            IsmError::Device(ReturnCode::DmbTableFull).kind(),
            ErrorKind::NoSpace
        );
        assert_eq!(
            IsmError::Device(ReturnCode::DmbTableFull).kind().errno(),
            28
        );
        assert_eq!(
            IsmError::from_ret(0x000C),
            IsmError::Device(ReturnCode::DmbTableFull)
        );
        assert_eq!(IsmError::from_ret(0xFFFF), IsmError::DeviceRaw(0xFFFF));
        assert_eq!(IsmError::from_ret(0x1234).kind(), ErrorKind::Io);
        for m in [1u8, 2, 3, 4, 5, 6] {
            let e = IsmError::from_bus(crate::ism::BusError::StoreRefused(m));
            assert!(matches!(e, IsmError::Move(x) if x as u8 == m));
        }
        assert_eq!(
            IsmError::from_bus(crate::ism::BusError::StoreRefused(99)),
            IsmError::MoveRaw(99)
        );
    }
}
