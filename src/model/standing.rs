//! Standing entries: named allowances per service with no end (Travelin' Man 3's accounts), and
//! what the resolver last learnt of each name they hold.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::base::addr::Net;
use crate::base::clock::UnixMs;

/// What a standing entry lets in: a network (an address is a /32 or /128) or a DNS name whose
/// A and AAAA answers are followed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Net(Net),
    Name(String),
}

impl Target {
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::Name(n) => Some(n),
            Target::Net(_) => None,
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<Net>() {
            return Ok(Target::Net(n));
        }
        if t.contains('/') || t.parse::<std::net::Ipv6Addr>().is_ok() || t.contains(':') {
            return Err(format!(
                "`{s}` is not an address, a network (ADDRESS/PREFIX) or a DNS name"
            ));
        }
        check_fqdn(t).map(Target::Name)
    }
}

/// A DNS name as a standing entry may hold one: letters, digits and `-` in dot-separated labels
/// of 1–63, at least two labels, at most 253 in all; lowercased, a trailing dot dropped.
pub fn check_fqdn(s: &str) -> Result<String, String> {
    let n = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = || {
        format!(
            "`{s}` is not an address, a network (ADDRESS/PREFIX) or a fully qualified DNS name \
             (e.g. office.example.com)"
        )
    };
    if n.is_empty() || n.len() > 253 || !n.contains('.') {
        return Err(bad());
    }
    for label in n.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad());
        }
    }
    // An all-digit last label is a mistyped address, not a name.
    if n.rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(n)
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A host is written as the address it is.
            Target::Net(n) if n.prefix == if n.addr.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{}", n.addr)
            }
            Target::Net(n) => write!(f, "{n}"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A standing entry: its name, what it lets in, to which services, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingEntry {
    pub name: String,
    pub targets: Vec<Target>,
    pub services: Vec<String>,
    pub note: String,
    /// Who added it (`uid 0`).
    pub who: String,
    pub created: UnixMs,
}

/// What the resolver last learnt of one DNS name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    pub name: String,
    /// The addresses in force: the last answer's usable ones, kept through failures for the grace
    /// period.
    pub addresses: Vec<IpAddr>,
    /// The last answer, failed or not.
    pub checked: Option<UnixMs>,
    /// The last answer that resolved.
    pub resolved: Option<UnixMs>,
    /// When `addresses` last changed.
    pub changed: Option<UnixMs>,
    /// Since when it has not resolved, while it does not.
    pub failing_since: Option<UnixMs>,
    /// Why the last answer failed, or which addresses it refused.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_networks_or_names() {
        assert_eq!(
            "203.0.113.7".parse::<Target>().unwrap().to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            "198.51.100.9/24".parse::<Target>().unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            "Office.Example.COM.".parse::<Target>().unwrap(),
            Target::Name("office.example.com".into())
        );
        for bad in [
            "203.0.113",
            "host",
            "a..b",
            "-a.b",
            "2001:db8::/200",
            "x_y.com",
            "",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
