//! `[firewall]` and `[services]`: trusted networks, the nft program, and services as port ranges.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::base::addr::Net;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "super::trusted::RawFirewall", rename_all = "kebab-case")]
pub struct FirewallConfig {
    /// Always allowed, never banned: the networks of `trusted` and of the `trusted-files`.
    pub trusted: Vec<Net>,
    /// The DNS names of `trusted` and of the `trusted-files`, followed like standing entries'.
    #[serde(skip_serializing)]
    pub trusted_names: Vec<String>,
    /// Files of networks and names (providers' lists), read at load; `*` in a file name matches.
    pub trusted_files: Vec<String>,
    /// The lists read from `trusted_files`, for the log and `status`.
    #[serde(skip)]
    pub trusted_lists: Vec<super::trusted::TrustedList>,
    /// The `nft` program.
    pub nft: PathBuf,
    /// How element changes and the read-back reach the kernel.
    pub elements: ElementPath,
    /// Into how many sets each timeout set is split.
    pub shards: Shards,
}

/// Into how many sets (a power of two up to [`Shards::MAX`]) each grant and ban set is split,
/// by the low bits of the address: the kernel lists a set in pieces, walking it from its start
/// for each, so a read-back of one set of 100,000 takes it seconds and 16 sets of 6,250 a tenth
/// of one. `auto` picks at start from the store's grants and bans ([`Shards::for_elements`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shards {
    #[default]
    Auto,
    Fixed(u8),
}

impl Shards {
    pub const MAX: u8 = 64;
    /// Up to this many elements a set is listed in little more than linear time.
    pub const ELEMENTS_PER_SHARD: usize = 8192;

    /// The number `auto` picks for sets of up to `elements`: the least power of two that keeps
    /// each shard within [`Shards::ELEMENTS_PER_SHARD`], at most [`Shards::MAX`].
    pub fn for_elements(elements: usize) -> u8 {
        let want = elements.div_ceil(Self::ELEMENTS_PER_SHARD).max(1);
        want.next_power_of_two().min(Self::MAX as usize) as u8
    }

    /// The number this setting gives for sets of up to `elements`.
    pub fn resolve(self, elements: usize) -> u8 {
        match self {
            Shards::Auto => Self::for_elements(elements),
            Shards::Fixed(n) => n,
        }
    }
}

impl fmt::Display for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shards::Auto => f.write_str("auto"),
            Shards::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Number(i64),
        }
        let bad = || {
            de::Error::custom(format!(
                "shards is \"auto\" or a power of two from 1 to {}",
                Shards::MAX
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(Shards::Auto),
            Raw::Word(_) => Err(bad()),
            Raw::Number(n) => u8::try_from(n)
                .ok()
                .filter(|n| n.is_power_of_two() && *n <= Shards::MAX)
                .map(Shards::Fixed)
                .ok_or_else(bad),
        }
    }
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Fixed(n) => s.serialize_u8(*n),
        }
    }
}

/// How grants and bans reach the kernel: in-process netlink (the default; falls back to spawning
/// `nft` if the kernel refuses it), or `nft` spawned for every change (the old path, kept for
/// comparison and for kernels that lack what netlink needs).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ElementPath {
    #[default]
    Netlink,
    Nft,
}

impl fmt::Display for ElementPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElementPath::Netlink => "netlink",
            ElementPath::Nft => "nft",
        })
    }
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            trusted: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            trusted_names: Vec::new(),
            trusted_files: Vec::new(),
            trusted_lists: Vec::new(),
            nft: "nft".into(),
            elements: ElementPath::Netlink,
            shards: Shards::Auto,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// `udp/5060`, `tcp/5061`, `udp/10000-20000`.
    pub ports: Vec<PortRange>,
}

/// tcp or udp: the same type the knock crate uses, so knock ports and service ports compare.
pub use knockd::Proto;

/// A protocol and an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("`{s}` {why}; write e.g. udp/5060, tcp/5061 or udp/10000-20000");
        let (proto, ports) = s.split_once('/').ok_or_else(|| bad("has no protocol"))?;
        let proto = match proto.trim() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad("is neither tcp nor udp")),
        };
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("is not a port from 1 to 65535"))
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if first > last {
            return Err(bad("runs backwards"));
        }
        Ok(PortRange { proto, first, last })
    }
}

impl PortRange {
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.proto == other.proto && self.first <= other.last && other.first <= self.last
    }

    /// The ports both ranges hold, if any.
    pub fn overlap(&self, other: &PortRange) -> Option<PortRange> {
        self.overlaps(other).then(|| PortRange {
            proto: self.proto,
            first: self.first.max(other.first),
            last: self.last.min(other.last),
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.proto.name(), self.first)
        } else {
            write!(f, "{}/{}-{}", self.proto.name(), self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
