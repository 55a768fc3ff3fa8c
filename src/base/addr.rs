//! Addresses and networks: parsing, normalising (IPv4-mapped IPv6 is IPv4), and what may be granted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The address family, which picks the `_v4` or `_v6` set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The suffix of set names: `v4` or `v6`.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address it carries, so one host
/// lands in one set whichever way Asterisk or the admin wrote it.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    NotAnAddress(String),
    #[error("`{0}` is not a network; write an address or ADDRESS/PREFIX, e.g. 192.168.0.0/16")]
    NotANetwork(String),
    #[error("{0} is {1}; it cannot be granted or banned")]
    Unusable(IpAddr, &'static str),
}

/// Parses a single host address (brackets around IPv6 are accepted) and normalises it.
pub fn parse_host(s: &str) -> Result<IpAddr, AddrError> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    t.parse::<IpAddr>()
        .map(normalize)
        .map_err(|_| AddrError::NotAnAddress(s.to_string()))
}

/// Refuses addresses that can never be a road warrior's: unspecified, loopback, multicast,
/// broadcast, documentation-reserved ranges are allowed (tests use them), link-local is refused.
pub fn check_grantable(ip: IpAddr) -> Result<IpAddr, AddrError> {
    let why = match ip {
        IpAddr::V4(v4) => v4_unusable(v4),
        IpAddr::V6(v6) => v6_unusable(v6),
    };
    match why {
        Some(w) => Err(AddrError::Unusable(ip, w)),
        None => Ok(ip),
    }
}

/// Why a DNS answer's address may not stand for a name: unusable for a grant, or private (RFC
/// 1918, shared 100.64/10, IPv6 unique-local). An address the admin types is theirs to choose;
/// one a DNS answer brings is not, and a private one there is a stale dynamic-DNS update or a
/// name pointed inside on purpose.
pub fn answer_unusable(ip: IpAddr) -> Option<&'static str> {
    if let Err(AddrError::Unusable(_, why)) = check_grantable(ip) {
        return Some(why);
    }
    match ip {
        IpAddr::V4(v4) if v4.is_private() => Some("a private address"),
        IpAddr::V4(v4) if v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64 => {
            Some("a shared (carrier-grade NAT) address")
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xfe00 == 0xfc00 => Some("a unique-local address"),
        _ => None,
    }
}

fn v4_unusable(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if a.octets()[0] >= 240 || a.octets()[0] == 0 {
        Some("a reserved address")
    } else {
        None
    }
}

fn v6_unusable(a: Ipv6Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.segments()[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else {
        None
    }
}

/// A network: an address and a prefix length, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Net {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddrError::NotANetwork(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = normalize(a.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        // Clear host bits so `10.1.2.3/8` means `10.0.0.0/8`, as nft would store it.
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Ok(Net { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v6_is_v4() {
        assert_eq!(
            parse_host("::ffff:203.0.113.7").unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_host("[2001:db8::1]").unwrap(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert!(parse_host("203.0.113").is_err());
        assert!(parse_host("example.com").is_err());
    }

    #[test]
    fn refuses_unusable() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
            "240.0.0.1",
        ] {
            assert!(check_grantable(parse_host(bad).unwrap()).is_err(), "{bad}");
        }
        for good in ["203.0.113.7", "192.168.1.20", "2001:db8::7"] {
            assert!(check_grantable(parse_host(good).unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn networks_clear_host_bits_and_contain() {
        let n: Net = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let h: Net = "2001:db8::1".parse().unwrap();
        assert_eq!(h.prefix, 128);
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("fc00::/7"
            .parse::<Net>()
            .unwrap()
            .contains("fd00::1".parse().unwrap()));
    }
}
