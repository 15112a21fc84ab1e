//! CHIDs: the channel id every function of one ISM device reports (QUERY_INFO, the driver's
//! `get_chid`), and what its value says about the device.

/// The CHID of a loopback device (Linux's loopback-ism, `SMC_LO_RESERVED_CHID` in
/// `net/smc/smc_loopback.h`); this model's loopback board reports it too.
pub const LOOPBACK_CHID: u16 = 0xFFFF;

/// Whether a CHID is in the Emulated-ISM range 0xFF00..=0xFFFF (`net/smc/smc_ism.h`
/// `__smc_ism_is_emulated`): an Emulated-ISM device also has a GID extension.
pub const fn is_emulated_chid(chid: u16) -> bool {
    chid & 0xFF00 == 0xFF00
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_emulated_and_native_chids_are_not() {
        assert!(is_emulated_chid(LOOPBACK_CHID));
        assert!(is_emulated_chid(0xFF00));
        assert!(!is_emulated_chid(0xFEFF));
        assert!(!is_emulated_chid(0x0D10));
    }
}
