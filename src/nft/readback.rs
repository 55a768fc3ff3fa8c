//! Reads the table back from `nft -j list` and says how it differs from what the store wants.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::render::{rule_comment, trusted_set, Changes, ElemKey, Elements, Layout, CHAIN};
use crate::base::addr::{self, Family, Net};
use crate::base::clock::UnixMs;
use crate::base::defaults;

/// How far (seconds) a kernel timeout may stray from the store before it is set again.
const DRIFT_SECS: i64 = 2;

/// A set as nft reports it.
#[derive(Debug, Default)]
pub struct ObservedSet {
    pub type_name: String,
    pub flags: Vec<String>,
    /// Address → seconds until the kernel drops it (None: no timeout).
    pub elems: BTreeMap<IpAddr, Option<i64>>,
    pub prefixes: Vec<Net>,
}

impl ObservedSet {
    /// An interval set's networks, sorted.
    pub fn nets(&self) -> Vec<Net> {
        let mut have = self.prefixes.clone();
        // nft lists a /32 or /128 interval element as a plain address.
        have.extend(self.elems.keys().map(|ip| super::standing::host(*ip)));
        have.sort();
        have
    }
}

/// The table as nft reports it.
#[derive(Debug, Default)]
pub struct Observed {
    pub sets: BTreeMap<String, ObservedSet>,
    pub chain: Option<ObservedChain>,
    pub rule_comments: Vec<Option<String>>,
    /// The table's other chains (the shards', `shards.rs`) and their rules' comments.
    pub other_chains: BTreeMap<String, Vec<Option<String>>>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ObservedChain {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub prio: Option<i64>,
    pub policy: Option<String>,
}

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Obj>,
}

#[derive(Deserialize)]
struct Obj {
    set: Option<RawSet>,
    chain: Option<ObservedChain>,
    rule: Option<RawRule>,
}

#[derive(Deserialize)]
struct RawSet {
    name: String,
    #[serde(rename = "type")]
    kind: serde_json::Value,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    elem: Vec<RawElem>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawElem {
    Plain(String),
    Timed { elem: RawTimed },
    Prefix { prefix: RawPrefix },
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct RawTimed {
    val: serde_json::Value,
    expires: Option<i64>,
}

#[derive(Deserialize)]
struct RawPrefix {
    addr: String,
    len: u8,
}

#[derive(Deserialize)]
struct RawRule {
    chain: String,
    comment: Option<String>,
}

impl Observed {
    pub fn parse(json: &[u8]) -> Result<Observed, String> {
        let listing: Listing = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut out = Observed::default();
        for obj in listing.nftables {
            if let Some(set) = obj.set {
                // A meter's set (the SIP capture's, responsive SIP's) is the kernel's to fill: its
                // elements are not ours to compare or count. nft 1.0 leaves meters out of a table
                // listing; this keeps a version that lists them from seeing drift.
                if set.flags.iter().any(|f| f == "dynamic") {
                    continue;
                }
                let mut o = ObservedSet {
                    type_name: set.kind.as_str().unwrap_or("concatenated").to_string(),
                    flags: set.flags,
                    ..Default::default()
                };
                for e in set.elem {
                    match e {
                        RawElem::Plain(a) => {
                            if let Ok(ip) = addr::parse_host(&a) {
                                o.elems.insert(ip, None);
                            }
                        }
                        RawElem::Timed { elem } => match elem.val {
                            serde_json::Value::String(a) => {
                                if let Ok(ip) = addr::parse_host(&a) {
                                    o.elems.insert(ip, elem.expires);
                                }
                            }
                            v => {
                                if let Ok(p) = serde_json::from_value::<PrefixWrap>(v) {
                                    if let Ok(n) = format!("{}/{}", p.prefix.addr, p.prefix.len).parse() {
                                        o.prefixes.push(n);
                                    }
                                }
                            }
                        },
                        RawElem::Prefix { prefix } => {
                            if let Ok(n) = format!("{}/{}", prefix.addr, prefix.len).parse() {
                                o.prefixes.push(n);
                            }
                        }
                        RawElem::Other(_) => {}
                    }
                }
                out.sets.insert(set.name, o);
            } else if let Some(chain) = obj.chain {
                if chain.name == CHAIN {
                    out.chain = Some(chain);
                } else {
                    out.other_chains.entry(chain.name).or_default();
                }
            } else if let Some(rule) = obj.rule {
                if rule.chain == CHAIN {
                    out.rule_comments.push(rule.comment);
                } else {
                    out.other_chains.entry(rule.chain).or_default().push(rule.comment);
                }
            }
        }
        Ok(out)
    }

    /// The table as netlink dumps read it: its sets without their elements, its chains and
    /// their rules' comments.
    pub fn from_structure(found: super::netlink::structure::Structure) -> Observed {
        let mut out = Observed {
            sets: found
                .sets
                .into_iter()
                .map(|(name, shape)| {
                    let set = ObservedSet {
                        type_name: shape.type_name,
                        flags: shape.flags,
                        ..Default::default()
                    };
                    (name, set)
                })
                .collect(),
            ..Default::default()
        };
        for (name, c) in found.chains {
            if name == CHAIN {
                out.rule_comments = c.rules;
                out.chain = Some(ObservedChain {
                    name,
                    kind: c.kind,
                    hook: c.hook,
                    prio: c.prio,
                    policy: c.policy,
                });
            } else {
                out.other_chains.insert(name, c.rules);
            }
        }
        out
    }

    /// Element count across the timeout sets.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elems.len()).sum()
    }
}

#[derive(Deserialize)]
struct PrefixWrap {
    prefix: RawPrefix,
}

/// What a reconcile must do.
#[derive(Debug, PartialEq, Eq)]
pub enum TableState {
    /// The table is what the store wants.
    InSync,
    /// Some elements are missing, stale or unknown: fix them in one batch.
    Fix(Changes),
    /// The table is missing or not the one we built: build it whole.
    Rebuild(String),
}

/// Compares the observed table with the layout and the desired elements.
pub fn compare(layout: &Layout, desired: &Elements, observed: Option<&Observed>, now: UnixMs) -> TableState {
    let Some(obs) = observed else {
        return TableState::Rebuild(format!("table inet {} is missing", layout.table));
    };
    if let Some(why) = structure_differs(layout, obs) {
        return TableState::Rebuild(why);
    }
    let mut changes = Changes::default();
    for (set, _) in layout.dynamic_sets() {
        let want = desired.range(
            ElemKey {
                set: set.clone(),
                addr: IpAddr::from([0u8; 4]),
            }..=ElemKey {
                set: set.clone(),
                addr: IpAddr::from([0xffu8; 16]),
            },
        );
        let shards = usize::from(layout.shards.max(1));
        // Each shard's wanted elements, in address order as the store's are: each shard is
        // then walked beside its own listing, with no sort or merge of the whole set.
        let mut wanted: Vec<Vec<(&ElemKey, UnixMs)>> = vec![Vec::new(); shards];
        for (k, end) in want {
            crate::base::pace::breathe();
            wanted[layout.shard_of(k.addr)].push((k, *end));
        }
        for (i, want) in wanted.into_iter().enumerate() {
            if let Err(why) = walk(layout, obs, &set, i, want, now, &mut changes) {
                return TableState::Rebuild(why);
            }
        }
    }
    if changes.is_empty() {
        TableState::InSync
    } else {
        TableState::Fix(changes)
    }
}

/// Walks shard `shard` of set `logical` as listed beside what the store wants in it (both in
/// address order, no lookups), adding what differs to `changes`. An address in a shard not its
/// own is in no packet's path (the verdict map sends it elsewhere) and no change reaches it:
/// only a rebuild.
fn walk(
    layout: &Layout,
    obs: &Observed,
    logical: &str,
    shard: usize,
    want: Vec<(&ElemKey, UnixMs)>,
    now: UnixMs,
    changes: &mut Changes,
) -> Result<(), String> {
    let name = layout.shard_set(logical, shard);
    let have = &obs.sets[&name].elems;
    if layout.shards > 1 {
        for ip in have.keys() {
            crate::base::pace::breathe();
            if layout.shard_of(*ip) != shard {
                return Err(format!("set {name} holds {ip}, which belongs to another shard"));
            }
        }
    }
    let mut have = have.iter().map(|(ip, left)| (*ip, *left)).peekable();
    let unknown = |ip: IpAddr| ElemKey {
        set: logical.into(),
        addr: ip,
    };
    for (k, end) in want {
        crate::base::pace::breathe();
        while let Some((ip, _)) = have.next_if(|(ip, _)| *ip < k.addr) {
            changes.remove.push(unknown(ip));
        }
        let remaining = (end - now + 999) / 1000;
        match have.next_if(|(ip, _)| *ip == k.addr) {
            Some((_, Some(expires))) if (expires - remaining).abs() <= DRIFT_SECS => {}
            _ => changes.set.push((k.clone(), end)),
        }
    }
    changes.remove.extend(have.map(|(ip, _)| unknown(ip)));
    Ok(())
}

fn structure_differs(layout: &Layout, obs: &Observed) -> Option<String> {
    for f in [Family::V4, Family::V6] {
        let name = trusted_set(f);
        let Some(set) = obs.sets.get(&name) else {
            return Some(format!("set {name} is missing"));
        };
        let mut want: Vec<Net> = layout
            .trusted
            .iter()
            .filter(|n| n.family() == f)
            .copied()
            .collect();
        let have = set.nets();
        want.sort();
        if want != have {
            return Some(format!("set {name} does not hold the trusted networks"));
        }
    }
    for (name, _) in layout.standing_sets() {
        let Some(set) = obs.sets.get(&name) else {
            return Some(format!("set {name} is missing"));
        };
        let want = layout.standing.get(&name).cloned().unwrap_or_default();
        if want != set.nets() {
            return Some(format!("set {name} does not hold the standing entries"));
        }
    }
    for ks in layout.kernel_sets() {
        let (name, f) = (ks.name, ks.family);
        let Some(set) = obs.sets.get(&name) else {
            return Some(format!("set {name} is missing"));
        };
        let ty = match f {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        if set.type_name != ty || !set.flags.iter().any(|f| f == "timeout") {
            return Some(format!("set {name} is not a {ty} set with timeouts"));
        }
    }
    let want_chain = ObservedChain {
        name: CHAIN.into(),
        kind: Some("filter".into()),
        hook: Some("input".into()),
        prio: Some(defaults::CHAIN_PRIORITY as i64),
        policy: Some("accept".into()),
    };
    if obs.chain.as_ref() != Some(&want_chain) {
        return Some(format!("chain {CHAIN} is missing or changed"));
    }
    let fp = layout.fingerprint();
    let n = obs.rule_comments.len();
    let expected = layout.rules().len();
    if n != expected {
        return Some(format!("chain {CHAIN} has {n} rules, not {expected}"));
    }
    for (i, c) in obs.rule_comments.iter().enumerate() {
        if c.as_deref() != Some(rule_comment(&fp, i, n).as_str()) {
            return Some(format!("rule {} of chain {CHAIN} is not ours", i + 1));
        }
    }
    for (chain, rules) in layout.shard_chains() {
        let Some(have) = obs.other_chains.get(&chain) else {
            return Some(format!("chain {chain} is missing"));
        };
        let n = rules.len();
        if have.len() != n {
            return Some(format!("chain {chain} has {} rules, not {n}", have.len()));
        }
        for (i, c) in have.iter().enumerate() {
            if c.as_deref() != Some(rule_comment(&fp, i, n).as_str()) {
                return Some(format!("rule {} of chain {chain} is not ours", i + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter's set, listed as some nft versions do, is neither compared nor counted.
    #[test]
    fn a_meters_set_is_the_kernels_not_drift() {
        let json = br#"{"nftables":[
            {"set":{"family":"inet","name":"ban_v4","table":"passknock","type":"ipv4_addr","flags":["timeout"],
              "elem":[{"elem":{"val":"203.0.113.9","timeout":60,"expires":59}}]}},
            {"set":{"family":"inet","name":"sip_rate_udp_v4","table":"passknock","type":"ipv4_addr","size":65535,
              "flags":["dynamic","timeout"],"elem":[{"elem":{"val":"203.0.113.66","timeout":60,"expires":58}}]}}
        ]}"#;
        let obs = Observed::parse(json).unwrap();
        assert_eq!(obs.sets.keys().collect::<Vec<_>>(), ["ban_v4"]);
        assert_eq!(obs.element_count(), 1);
    }
}
