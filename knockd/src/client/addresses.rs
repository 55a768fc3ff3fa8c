//! The laptop's own addresses: the source the OS would use towards the PBX (nothing is sent to
//! learn it), whether an address is global, and what an SPA knock asks to open with dual stack.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use super::{resolve, ClientError, ClientProfile};
use crate::spa::Requested;

/// What an SPA knock asks to open: its source, and with the profile's `dual-stack` this
/// laptop's global address of the other family too (found by asking the OS which source it
/// would use towards the PBX's other address; nothing is sent for that).
pub(super) fn requested_for(
    profile: &ClientProfile,
    target: IpAddr,
    out: &mut impl Write,
) -> Result<Requested, ClientError> {
    if !profile.dual_stack {
        return Ok(Requested::Source);
    }
    match other_family_source(profile, target) {
        Some(a) => Ok(Requested::Also(a)),
        None => {
            writeln!(
                out,
                "dual-stack: this laptop has no global IPv{} address towards the PBX; opening the \
                 knock's own address only",
                if target.is_ipv4() { 6 } else { 4 }
            )?;
            Ok(Requested::Source)
        }
    }
}

/// The laptop's global address of the other family than `target`'s, as the OS would pick it
/// towards the PBX's other address (`other-host`, or HOST's other address).
pub fn other_family_source(profile: &ClientProfile, target: IpAddr) -> Option<IpAddr> {
    let family = if target.is_ipv4() { 6 } else { 4 };
    let other = match &profile.other_host {
        Some(h) => resolve(h, Some(family)).ok()?,
        None => return None,
    };
    source_towards(other).filter(|a| is_global(*a))
}

/// The source address the OS would use towards `to`: a UDP socket connected, nothing sent.
pub fn source_towards(to: IpAddr) -> Option<IpAddr> {
    let local: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).ok()?;
    sock.connect(SocketAddr::new(to, 9)).ok()?;
    sock.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|a| !a.is_unspecified())
}

/// Whether another host could reach this address: not loopback, link-local, private (RFC 1918,
/// ULA) or unspecified. Documentation ranges count as global (tests use them).
pub fn is_global(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_private()
                || v.is_multicast())
        }
        IpAddr::V6(v) => {
            let s0 = v.segments()[0];
            !(v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || s0 & 0xffc0 == 0xfe80
                || s0 & 0xfe00 == 0xfc00
                || v.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_addresses_are_carried() {
        for a in ["203.0.113.10", "2001:db8:113::10", "8.8.4.4"] {
            assert!(is_global(a.parse().unwrap()), "{a}");
        }
        for a in [
            "10.0.0.1",
            "192.168.1.2",
            "127.0.0.1",
            "fe80::1",
            "fd00::1",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(!is_global(a.parse().unwrap()), "{a}");
        }
    }
}
