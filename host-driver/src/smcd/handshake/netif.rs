//! The IP prefixes of SMC-Dv1: what the client puts into its proposal and what the server
//! checks them against (`net/smc/smc_clc.c` `smc_clc_prfx_set` and `smc_clc_prfx_match`).
//!
//! Linux looks at the network device of the connection's route. This model takes the
//! interface that holds the connection's local address (from `getifaddrs`), which is the
//! same device for the connections it makes (loopback and directly attached networks). It
//! has no VLAN devices, so the VLAN part of Linux's check (`smc_vlan_by_tcpsk`) is not
//! modelled.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use alloc::vec::Vec;

use super::super::clc::proposal::MAX_IPV6_PREFIXES;
use super::super::clc::{IpPrefix, Ipv6Prefix};

/// The addresses of the network interface that carries a CLC connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNet {
    /// The interface's IPv4 addresses with their prefix lengths, in interface order.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// The interface's IPv6 addresses with their prefix lengths, in interface order.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask6(addr: Ipv6Addr, len: u8) -> [u8; 16] {
    let bits = u128::from(addr);
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    (bits & m).to_be_bytes()
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xFFC0 == 0xFE80
}

impl LocalNet {
    /// The addresses of the interface that holds `local`, from `getifaddrs`. Empty if no
    /// interface holds it or the interfaces cannot be listed (Linux: no prefix, `-ENOENT`).
    pub fn of(local: IpAddr) -> Self {
        let local = match local {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            a => a,
        };
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Self::default();
        };
        let all: Vec<_> = addrs.collect();
        let ip_of = |a: &nix::ifaddrs::InterfaceAddress| -> Option<(IpAddr, u8)> {
            let addr = a.address.as_ref()?;
            let mask = a.netmask.as_ref();
            if let Some(v4) = addr.as_sockaddr_in() {
                let m = mask
                    .and_then(|m| m.as_sockaddr_in())
                    .map_or(32, |m| m.ip().to_bits().count_ones() as u8);
                Some((IpAddr::V4(v4.ip()), m))
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let m = mask
                    .and_then(|m| m.as_sockaddr_in6())
                    .map_or(128, |m| u128::from(m.ip()).count_ones() as u8);
                Some((IpAddr::V6(v6.ip()), m))
            } else {
                None
            }
        };
        let Some(name) = all
            .iter()
            .find(|a| ip_of(a).is_some_and(|(ip, _)| ip == local))
            .map(|a| a.interface_name.clone())
        else {
            return Self::default();
        };
        let mut net = Self::default();
        for a in all.iter().filter(|a| a.interface_name == name) {
            match ip_of(a) {
                Some((IpAddr::V4(ip), len)) => net.ipv4.push((ip, len)),
                Some((IpAddr::V6(ip), len)) => net.ipv6.push((ip, len)),
                None => {}
            }
        }
        net
    }

    /// [`LocalNet::of`], looked up at most once per [`LocalNet::CACHED_FOR`] for each local
    /// address: listing the interfaces is a netlink dump of every link and address (a
    /// dozen system calls), which each side of every handshake needed. Linux reads the
    /// route's device per connection (`smc_clc_prfx_set`); here an address added to or
    /// removed from an interface counts for the handshakes that start up to
    /// `CACHED_FOR` later.
    pub fn of_cached(local: IpAddr) -> Self {
        use std::sync::Mutex;
        use std::time::Instant;
        /// The last few lookups: (local address, when, result). A host uses a handful
        /// of local addresses; the oldest entry goes when a new address comes.
        static CACHE: Mutex<Vec<(IpAddr, Instant, LocalNet)>> = Mutex::new(Vec::new());
        const KEPT: usize = 8;
        let now = Instant::now();
        {
            let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, net)) = cache
                .iter()
                .find(|(a, at, _)| *a == local && now.duration_since(*at) < Self::CACHED_FOR)
            {
                return net.clone();
            }
        }
        let net = Self::of(local);
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(a, _, _)| *a != local);
        if cache.len() >= KEPT {
            cache.remove(0);
        }
        cache.push((local, now, net.clone()));
        net
    }

    /// How long [`LocalNet::of_cached`] keeps a lookup.
    pub const CACHED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

    /// The prefix area a client sends for a connection from `local`
    /// (`smc_clc_prfx_set4_rcu` / `smc_clc_prfx_set6_rcu`): for IPv4 (and IPv4-mapped
    /// IPv6), the subnet and mask length of the first interface address whose subnet holds
    /// `local`; for IPv6, the prefixes of up to 8 of the interface's addresses that are not
    /// link-local. `None` if there is none (Linux then offers no SMC-Dv1).
    pub fn prefix_for(&self, local: IpAddr) -> Option<IpPrefix> {
        let v4 = match local {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        if let Some(a) = v4 {
            let a = u32::from(a);
            return self.ipv4.iter().find_map(|&(ifa, len)| {
                let m = mask4(len);
                ((a ^ u32::from(ifa)) & m == 0).then_some(IpPrefix {
                    outgoing_subnet: u32::from(ifa) & m,
                    prefix_len: len,
                    ipv6: Vec::new(),
                })
            });
        }
        let ipv6: Vec<Ipv6Prefix> = self
            .ipv6
            .iter()
            .filter(|(a, _)| !is_link_local(a))
            .take(MAX_IPV6_PREFIXES)
            .map(|&(a, len)| Ipv6Prefix {
                prefix: mask6(a, len),
                prefix_len: len,
            })
            .collect();
        (!ipv6.is_empty()).then_some(IpPrefix {
            outgoing_subnet: 0,
            prefix_len: 0,
            ipv6,
        })
    }

    /// Whether a client's prefix area matches this interface (`smc_clc_prfx_match4_rcu` /
    /// `smc_clc_prfx_match6_rcu`): without IPv6 prefixes, an IPv4 address of the same mask
    /// length in the announced subnet; with them, an IPv6 address that one of them (same
    /// length) covers.
    pub fn matches(&self, p: &IpPrefix) -> bool {
        if p.ipv6.is_empty() {
            return self.ipv4.iter().any(|&(ifa, len)| {
                len == p.prefix_len && (p.outgoing_subnet ^ u32::from(ifa)) & mask4(len) == 0
            });
        }
        p.ipv6.iter().any(|pp| {
            self.ipv6.iter().any(|&(a, len)| {
                len == pp.prefix_len && mask6(a, len) == mask6(Ipv6Addr::from(pp.prefix), len)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn net() -> LocalNet {
        LocalNet {
            ipv4: vec![
                (Ipv4Addr::new(10, 1, 2, 3), 16),
                (Ipv4Addr::new(192, 168, 7, 9), 24),
            ],
            ipv6: vec![
                ("fe80::1".parse().unwrap(), 64),
                ("2001:db8:1:2::5".parse().unwrap(), 64),
                ("fd00::7".parse().unwrap(), 48),
            ],
        }
    }

    #[test]
    fn ipv4_prefix_is_the_interface_mask() {
        let p = net()
            .prefix_for(IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9)))
            .unwrap();
        assert_eq!((p.outgoing_subnet, p.prefix_len), (0xC0A8_0700, 24));
        let p = net().prefix_for("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!((p.outgoing_subnet, p.prefix_len), (0x0A01_0000, 16));
        // IPv4-mapped: as IPv4.
        let p = net()
            .prefix_for("::ffff:10.1.9.9".parse().unwrap())
            .unwrap();
        assert_eq!(p.prefix_len, 16);
        assert!(net().prefix_for("172.16.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv6_prefixes_skip_link_local_and_stop_at_eight() {
        let p = net()
            .prefix_for("2001:db8:1:2::5".parse().unwrap())
            .unwrap();
        assert_eq!(p.ipv6.len(), 2);
        assert_eq!(p.ipv6[0].prefix_len, 64);
        assert_eq!(
            Ipv6Addr::from(p.ipv6[0].prefix),
            "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()
        );
        let many = LocalNet {
            ipv4: Vec::new(),
            ipv6: (1..=12u16)
                .map(|i| (Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1), 64))
                .collect(),
        };
        assert_eq!(
            many.prefix_for("2001:db8:1::1".parse().unwrap())
                .unwrap()
                .ipv6
                .len(),
            8
        );
        let only_ll = LocalNet {
            ipv4: Vec::new(),
            ipv6: vec![("fe80::1".parse().unwrap(), 64)],
        };
        assert!(only_ll.prefix_for("fe80::1".parse().unwrap()).is_none());
    }

    #[test]
    fn server_matches_same_subnet_and_length_only() {
        let n = net();
        let p = |s: u32, l: u8| IpPrefix {
            outgoing_subnet: s,
            prefix_len: l,
            ipv6: Vec::new(),
        };
        assert!(n.matches(&p(0xC0A8_0700, 24)));
        assert!(!n.matches(&p(0xC0A8_0700, 16)), "same subnet, other length");
        assert!(!n.matches(&p(0xC0A8_0800, 24)));
        assert!(n.matches(&p(0x0A01_0000, 16)));
        let v6 = |s: &str, l: u8| IpPrefix {
            outgoing_subnet: 0,
            prefix_len: 0,
            ipv6: vec![Ipv6Prefix {
                prefix: s.parse::<Ipv6Addr>().unwrap().octets(),
                prefix_len: l,
            }],
        };
        assert!(n.matches(&v6("fd00::", 48)));
        assert!(!n.matches(&v6("fd00:1::", 48)));
        assert!(!n.matches(&v6("fd00::", 64)));
    }

    #[test]
    fn loopback_interface_is_found() {
        let n = LocalNet::of("127.0.0.1".parse().unwrap());
        let p = n
            .prefix_for("127.0.0.1".parse().unwrap())
            .expect("lo has 127.0.0.1");
        assert_eq!((p.outgoing_subnet, p.prefix_len), (0x7F00_0000, 8));
        assert!(n.matches(&p));
    }

    #[test]
    fn a_cached_lookup_is_the_lookup_and_each_address_has_its_own() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "198.51.100.77".parse().unwrap(); // TEST-NET-2
        assert!(!LocalNet::of(lo).ipv4.is_empty());
        assert_eq!(LocalNet::of_cached(lo), LocalNet::of(lo));
        assert_eq!(LocalNet::of_cached(other), LocalNet::of(other));
        // Asked again within the window: the same answers, neither taken for the other.
        assert_eq!(LocalNet::of_cached(lo), LocalNet::of(lo));
        assert_eq!(LocalNet::of_cached(other), LocalNet::of(other));
        // More addresses than the cache keeps: still right for each.
        for i in 1..=12u8 {
            let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            assert_eq!(LocalNet::of_cached(a), LocalNet::of(a));
        }
        assert_eq!(LocalNet::of_cached(lo), LocalNet::of(lo));
    }
}
