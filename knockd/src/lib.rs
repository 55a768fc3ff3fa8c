//! Knock state machines, SPA packet format, NFLOG listener, knock client.
//!
//! The protocol half never touches the store or nftables: it turns packets into typed outcomes
//! ([`KnockOutcome`]) that the daemon submits to its engine. Every state machine takes time as an
//! argument, so timeouts, rotation and age windows are tested without sleeping.
//!
//! - [`secret`]: profile secrets — a newtype that hides its value, files refused unless 0600.
//! - [`packet`]: IPv4/IPv6 + TCP/UDP headers parsed from the bytes NFLOG hands over (and built,
//!   for tests and the flood bench).
//! - [`profile`]: what a knock profile is (static, rotating or SPA), shared by server and client.
//! - [`rotating`]: a rotating profile's ports for a time step, from HMAC-SHA256.
//! - [`spa`]: the single-packet-authorization datagram: seal and open.
//! - [`sequence`]: the per-source knock-sequence tracker, bounded.
//! - [`replay`]: the bounded cache of used SPA nonces and rotating steps.
//! - [`gate`]: all of the above for a set of profiles — packet in, outcome out.
//! - [`sip`]: a SIP request the table dropped on a SIP port (logged to NFLOG with its payload),
//!   parsed without IO or allocation into method, request URI, From/To users, Contact and
//!   User-Agent; capped at 4 KiB, 64 header lines and 1 KiB a line, anything odd refused with a
//!   typed error.
//! - [`attempts`]: the bounded memory of those requests — which addresses tried to register as
//!   which user within a window (5 minutes by default), most recent first. A user claimed from
//!   two addresses answers with two, so the DISA call asks or refuses rather than guesses; at
//!   most 65,536 users and 8 addresses each (under 50 MiB when a flood fills it, measured).
//! - [`nflog`] (Linux): the NFLOG netlink socket and the loop that feeds the gate.
//! - [`client`]: the laptop side — client config, what to send, sending it, probing.
//! - [`duration`]: `30s` / `250ms` durations for the client config.

pub mod attempts;
pub mod client;
pub mod duration;
pub mod gate;
#[cfg(target_os = "linux")]
pub mod nflog;
pub mod packet;
pub mod profile;
pub mod replay;
pub mod rotating;
pub mod secret;
pub mod sequence;
pub mod sip;
pub mod spa;

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

pub use gate::{Gate, KnockOutcome, Refusal};
pub use profile::{Mode, Profile, ProfileKind};
pub use secret::KnockSecret;

/// A transport protocol a knock can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Proto> {
        match s.trim() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// One knock: a protocol and a port, written `tcp/7000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub proto: Proto,
    pub port: u16,
}

impl Port {
    pub fn tcp(port: u16) -> Port {
        Port {
            proto: Proto::Tcp,
            port,
        }
    }

    pub fn udp(port: u16) -> Port {
        Port {
            proto: Proto::Udp,
            port,
        }
    }
}

fn parse_port_number(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

impl FromStr for Port {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("`{s}` {why}; write e.g. tcp/7000 or udp/8000");
        let (proto, port) = s.split_once('/').ok_or_else(|| bad("has no protocol"))?;
        let proto = Proto::parse(proto).ok_or_else(|| bad("is neither tcp nor udp"))?;
        let port = parse_port_number(port).ok_or_else(|| bad("is not a port from 1 to 65535"))?;
        Ok(Port { proto, port })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto.name(), self.port)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A protocol and an inclusive range of ports, written `udp/40000-40999`: where a rotating
/// profile's ports are drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, p: Port) -> bool {
        p.proto == self.proto && self.first <= p.port && p.port <= self.last
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("`{s}` {why}; write e.g. udp/40000-40999");
        let (proto, ports) = s.split_once('/').ok_or_else(|| bad("has no protocol"))?;
        let proto = Proto::parse(proto).ok_or_else(|| bad("is neither tcp nor udp"))?;
        let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
        let first = parse_port_number(a).ok_or_else(|| bad("is not a range of ports from 1 to 65535"))?;
        let last = parse_port_number(b).ok_or_else(|| bad("is not a range of ports from 1 to 65535"))?;
        if first > last {
            return Err(bad("runs backwards"));
        }
        Ok(PortRange { proto, first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.proto.name(), self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Fills `buf` from the operating system's random source (getrandom(2), `SecRandomCopyBytes`,
/// `ProcessPrng`, …), the only randomness the knock code uses.
pub fn os_random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::getrandom(buf).map_err(|e| std::io::Error::other(format!("the OS random source failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges_parse() {
        assert_eq!("tcp/7000".parse::<Port>().unwrap(), Port::tcp(7000));
        assert_eq!("udp/8000".parse::<Port>().unwrap().to_string(), "udp/8000");
        for bad in ["7000", "icmp/1", "tcp/0", "tcp/70000", "tcp/x"] {
            assert!(bad.parse::<Port>().is_err(), "{bad}");
        }
        let r: PortRange = "udp/40000-40999".parse().unwrap();
        assert_eq!(r.len(), 1000);
        assert!(r.contains(Port::udp(40500)) && !r.contains(Port::tcp(40500)));
        assert!("udp/2-1".parse::<PortRange>().is_err());
        assert_eq!("tcp/5".parse::<PortRange>().unwrap().len(), 1);
    }
}
