//! Addresses as Asterisk writes them, read in both families: the one SIP host parser that the
//! AMI events here and the FastAGI DISA call flow (`agi`) share.
//!
//! The forms: a bare address (`203.0.113.7`, `2001:db8::7`, `[2001:db8::7]`), a host and port
//! (`203.0.113.7:5060`, `[2001:db8::7]:5060`: `CHANNEL(pjsip,remote_addr)`, `via_addr`), and a
//! SIP URI (`sip:701@203.0.113.7:5060;ob`, `<sips:701@[2001:db8::7]:5061>`: contact URIs). Only
//! literal addresses are taken; a host name is `None`, never looked up. And the security events'
//! `RemoteAddress: IPV4/UDP/203.0.113.7/5060`.

use std::net::{IpAddr, SocketAddr};

/// An IP address, with or without brackets.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let t = s.trim();
    let t = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(t);
    t.parse().ok()
}

/// The address part of `203.0.113.10:5108`, `[2001:db8::7]:5060`, or a bare address.
pub fn host_port(s: &str) -> Option<IpAddr> {
    let t = s.trim();
    t.parse::<SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| parse_ip(t))
}

/// The host of a `sip:` or `sips:` URI when it is an IP address: `sip:701@203.0.113.10:5100;ob`,
/// `sips:701@[2001:db8::7]:5061`, `<sip:203.0.113.10>`.
pub fn uri_host(uri: &str) -> Option<IpAddr> {
    let u = uri.trim().trim_start_matches('<');
    let (scheme, rest) = u.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '>', '?']).unwrap_or(rest.len());
    host_port(&rest[..end])
}

/// `RemoteAddress: IPV4/UDP/203.0.113.7/5060`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteAddress {
    /// `UDP`, `TCP`, `TLS`, `WS`, `WSS`.
    pub transport: String,
    pub addr: SocketAddr,
}

impl RemoteAddress {
    /// Parses `IPV4/UDP/203.0.113.7/5060` and `IPV6/UDP/2001:db8::7/5060` (brackets around the
    /// IPv6 address accepted). The family must match the address.
    pub fn parse(s: &str) -> Option<RemoteAddress> {
        let (family, rest) = s.trim().split_once('/')?;
        let (transport, rest) = rest.split_once('/')?;
        let (host, port) = rest.rsplit_once('/')?;
        let ip = parse_ip(host)?;
        let ok = match ip {
            IpAddr::V4(_) => family.eq_ignore_ascii_case("IPV4"),
            IpAddr::V6(_) => family.eq_ignore_ascii_case("IPV6"),
        };
        if !ok || transport.is_empty() {
            return None;
        }
        Some(RemoteAddress {
            transport: transport.to_string(),
            addr: SocketAddr::new(ip, port.parse().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts_of_addresses_and_uris() {
        let v4: IpAddr = "203.0.113.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(uri_host("sip:701@203.0.113.10:5100"), Some(v4));
        assert_eq!(uri_host("sip:701@203.0.113.10;ob"), Some(v4));
        assert_eq!(uri_host("sip:701@203.0.113.10:5060;transport=udp"), Some(v4));
        assert_eq!(uri_host("<sip:203.0.113.10:5060>"), Some(v4));
        assert_eq!(uri_host("sip:203.0.113.10"), Some(v4));
        assert_eq!(uri_host("sips:701@[2001:db8::7]:5061;transport=tls"), Some(v6));
        assert_eq!(uri_host("<sip:701@[2001:db8::7]:5060>"), Some(v6));
        assert_eq!(uri_host("sip:701@phone.example.com:5060"), None);
        assert_eq!(uri_host("tel:203.0.113.10"), None);
        assert_eq!(uri_host("nonsense"), None);
        assert_eq!(host_port("203.0.113.10:5108"), Some(v4));
        assert_eq!(host_port("[2001:db8::7]:5060"), Some(v6));
        assert_eq!(host_port("[2001:db8::7]"), Some(v6));
        assert_eq!(host_port("2001:db8::7"), Some(v6));
        assert_eq!(host_port("203.0.113.10:99999"), None);
        assert_eq!(host_port("nonsense"), None);
        assert_eq!(host_port(""), None);
    }

    #[test]
    fn remote_address_both_families() {
        let a = RemoteAddress::parse("IPV4/UDP/203.0.113.7/5060").unwrap();
        assert_eq!(a.addr, "203.0.113.7:5060".parse().unwrap());
        assert_eq!(a.transport, "UDP");
        let b = RemoteAddress::parse("IPV6/TCP/2001:db8::7/5061").unwrap();
        assert_eq!(b.addr, "[2001:db8::7]:5061".parse().unwrap());
        let c = RemoteAddress::parse("IPV6/UDP/[2001:db8::7]/5060").unwrap();
        assert_eq!(c.addr.ip(), "2001:db8::7".parse::<IpAddr>().unwrap());
        let mapped = RemoteAddress::parse("IPV6/UDP/::ffff:203.0.113.7/5060").unwrap();
        assert_eq!(mapped.addr.ip(), "::ffff:203.0.113.7".parse::<IpAddr>().unwrap());
        for bad in [
            "",
            "IPV4/UDP/203.0.113.7",
            "IPV4/UDP/2001:db8::7/5060",
            "IPV6/UDP/203.0.113.7/5060",
            "IPV4//203.0.113.7/5060",
            "IPV4/UDP/example.com/5060",
            "IPV4/UDP/203.0.113.7/99999",
            "garbage",
        ] {
            assert_eq!(RemoteAddress::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn take_any_text(s in ".{0,40}") {
            let _ = parse_ip(&s);
            let _ = host_port(&s);
            let _ = uri_host(&s);
            let _ = RemoteAddress::parse(&s);
        }
    }
}
