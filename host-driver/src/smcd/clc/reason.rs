//! Decline and fallback reason codes (`SMC_CLC_DECL_*` of `net/smc/smc_clc.h`).
//!
//! A reason is a 32-bit code carried BE in a DECLINE's `peer_diagnosis`. [`DeclineReason`]
//! wraps any `u32`, so codes this model does not know (newer kernels, other OSes) are kept
//! as they are; the known ones have names and descriptions.

use core::fmt;

/// A decline reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeclineReason(pub u32);

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $desc:expr; )*) => {
        impl DeclineReason {
            $( $(#[$doc])* pub const $name: Self = Self($value); )*

            /// Every code this model knows, in ascending order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The code's `SMC_CLC_DECL_` name without the prefix, if known.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// A short description, if known.
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($desc), )*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// Insufficient memory.
    MEM = 0x0101_0000, "insufficient memory";
    /// Timeout waiting for confirm link (SMC-R).
    TIMEOUT_CL = 0x0201_0000, "timeout waiting for confirm link";
    /// Timeout waiting for add link (SMC-R).
    TIMEOUT_AL = 0x0202_0000, "timeout waiting for add link";
    /// Configuration error.
    CNFERR = 0x0300_0000, "configuration error";
    /// The peer did not indicate SMC (no TCP option).
    PEERNOSMC = 0x0301_0000, "peer did not indicate SMC";
    /// IPsec is used.
    IPSEC = 0x0302_0000, "IPsec usage";
    /// No SMC device (R or D).
    NOSMCDEV = 0x0303_0000, "no SMC device found (R or D)";
    /// No SMC-D device.
    NOSMCDDEV = 0x0303_0001, "no SMC-D device found";
    /// No SMC-R device.
    NOSMCRDEV = 0x0303_0002, "no SMC-R device found";
    /// The hardware has no ISMv2 support.
    NOISM2SUPP = 0x0303_0003, "hardware has no ISMv2 support";
    /// The peer sent no v2 extension.
    NOV2EXT = 0x0303_0004, "peer sent no clc v2 extension";
    /// The peer sent no SMC-Dv2 extension.
    NOV2DEXT = 0x0303_0005, "peer sent no clc SMC-Dv2 extension";
    /// The peer sent no SEID.
    NOSEID = 0x0303_0006, "peer sent no SEID";
    /// No SMC-Dv2 device found.
    NOSMCD2DEV = 0x0303_0007, "no SMC-Dv2 device found";
    /// The peer sent no UEID.
    NOUEID = 0x0303_0008, "peer sent no UEID";
    /// Release negotiation failed.
    RELEASEERR = 0x0303_0009, "release version negotiation failed";
    /// Max-connections negotiation failed.
    MAXCONNERR = 0x0303_000a, "max connections negotiation failed";
    /// Max-links negotiation failed.
    MAXLINKERR = 0x0303_000b, "max links negotiation failed";
    /// SMC modes do not match (R or D).
    MODEUNSUPP = 0x0304_0000, "smc modes do not match (R or D)";
    /// The peer has an eyecatcher in its RMBE.
    RMBE_EC = 0x0305_0000, "peer has eyecatcher in RMBE";
    /// Fastopen sockopt not supported.
    OPTUNSUPP = 0x0306_0000, "fastopen sockopt not supported";
    /// IP prefix / subnet mismatch.
    DIFFPREFIX = 0x0307_0000, "IP prefix / subnet mismatch";
    /// Cannot get the VLAN id of the IP device.
    GETVLANERR = 0x0308_0000, "err to get vlan id of ip device";
    /// Cannot register the VLAN id on the ISM device.
    ISMVLANERR = 0x0309_0000, "err to reg vlan id on ism dev";
    /// No active SMC-R link in the link group.
    NOACTLINK = 0x030a_0000, "no active smc-r link in lgr";
    /// SMC-R link from the server not found.
    NOSRVLINK = 0x030b_0000, "SMC-R link from srv not found";
    /// SMC version mismatch.
    VERSMISMAT = 0x030c_0000, "SMC version mismatch";
    /// SMC-D DMB limit exceeded.
    MAX_DMB = 0x030d_0000, "SMC-D DMB limit exceeded";
    /// SMC-Rv2: no route to the peer.
    NOROUTE = 0x030e_0000, "SMC-Rv2 conn. no route to peer";
    /// SMC-Rv2: indirect mismatch.
    NOINDIRECT = 0x030f_0000, "SMC-Rv2 conn. indirect mismatch";
    /// Synchronization error.
    SYNCERR = 0x0400_0000, "synchronization error";
    /// The peer declined during the handshake.
    PEERDECL = 0x0500_0000, "peer declined during handshake";
    /// Internal error.
    INTERR = 0x0999_0000, "internal error";
    /// rtoken handling failed.
    ERR_RTOK = 0x0999_0001, "rtoken handling failed";
    /// IB ready link failed.
    ERR_RDYLNK = 0x0999_0002, "ib ready link failed";
    /// Buffer registration failed.
    ERR_REGBUF = 0x0999_0003, "reg rdma bufs failed";
}

impl DeclineReason {
    /// The raw code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// Whether this model knows the code.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl From<u32> for DeclineReason {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl From<DeclineReason> for u32 {
    fn from(r: DeclineReason) -> u32 {
        r.0
    }
}

impl fmt::Display for DeclineReason {
    /// `NAME (0x…): description`, or `unknown (0x…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.description()) {
            (Some(n), Some(d)) => write!(f, "{n} ({:#010x}): {d}", self.0),
            _ => write!(f, "unknown ({:#010x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    #[test]
    fn known_codes() {
        assert_eq!(DeclineReason::ALL.len(), 36);
        assert!(DeclineReason::ALL.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(DeclineReason::NOSMCD2DEV.0, 0x0303_0007);
        assert_eq!(DeclineReason::SYNCERR.code(), 0x0400_0000);
        assert_eq!(DeclineReason::MAX_DMB.name(), Some("MAX_DMB"));
        assert_eq!(DeclineReason::from(0x0303_0008), DeclineReason::NOUEID);
        assert_eq!(
            DeclineReason::SYNCERR.to_string(),
            "SYNCERR (0x04000000): synchronization error"
        );
        assert_eq!(
            DeclineReason(0x0303_00ff).to_string(),
            "unknown (0x030300ff)"
        );
        for r in DeclineReason::ALL {
            assert!(r.is_known() && r.description().is_some());
        }
    }

    proptest! {
        #[test]
        fn roundtrip(v in any::<u32>()) {
            let r = DeclineReason::from(v);
            prop_assert_eq!(u32::from(r), v);
            prop_assert_eq!(r.code(), v);
            prop_assert_eq!(r.is_known(), DeclineReason::ALL.contains(&r));
        }
    }
}
