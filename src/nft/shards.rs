//! Grant and ban sets split into shards by the low bits of the address. The kernel lists a set
//! in pieces and walks it from its start for each piece, so a listing's time grows with the
//! square of the set's size: one set of 100,000 takes it most of a second, 16 of 6,250 a tenth.
//!
//! Above this file every set has its logical name (`allow_sip_v4`); here a logical set and an
//! address give the set the element lives in (`allow_sip_v4_5`), and the input chain sends each
//! packet by the same bits, through one verdict map, to the shard's chain of set lookups. With
//! one shard (a small store) the names and rules are those of an unsplit table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nftables::expr::{BinaryOperation, Expression, NamedExpression, Payload, PayloadField, SetItem, Verdict};
use nftables::stmt::{JumpTarget, Statement, VerdictMap};

use super::render::{ElemKey, Elements, Layout};
use super::Changes;
use crate::base::addr::Family;

/// A timeout set as the kernel holds it: its logical set, its own name, its family, its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSet {
    pub logical: String,
    pub name: String,
    pub family: Family,
    pub shard: usize,
}

impl Layout {
    /// The shard an address's elements live in: the low bits of its last byte.
    pub fn shard_of(&self, addr: IpAddr) -> usize {
        let last = match addr {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        usize::from(last) & (usize::from(self.shards.max(1)) - 1)
    }

    /// The name of one shard of a logical set (the logical name itself when unsplit).
    pub fn shard_set(&self, logical: &str, shard: usize) -> String {
        if self.shards <= 1 {
            logical.to_string()
        } else {
            format!("{logical}_{shard}")
        }
    }

    /// The set an element lives in.
    pub fn kernel_set<'a>(&self, k: &'a ElemKey) -> Cow<'a, str> {
        if self.shards <= 1 {
            Cow::Borrowed(&k.set)
        } else {
            Cow::Owned(self.shard_set(&k.set, self.shard_of(k.addr)))
        }
    }

    /// Every timeout set the kernel holds, shard by shard.
    pub fn kernel_sets(&self) -> Vec<KernelSet> {
        let mut out = Vec::new();
        for (logical, family) in self.dynamic_sets() {
            for shard in 0..usize::from(self.shards.max(1)) {
                out.push(KernelSet {
                    name: self.shard_set(&logical, shard),
                    logical: logical.clone(),
                    family,
                    shard,
                });
            }
        }
        out
    }

    /// The elements under their kernel sets' names, in set order (what a batch writes).
    pub fn kernel_elements<'a>(&self, elements: &'a Elements) -> Cow<'a, Elements> {
        if self.shards <= 1 {
            return Cow::Borrowed(elements);
        }
        // One name per shard of each logical set, cloned per element from here.
        let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut out = Elements::new();
        for (k, end) in elements {
            let shards = names.entry(&k.set).or_insert_with(|| {
                (0..usize::from(self.shards))
                    .map(|i| self.shard_set(&k.set, i))
                    .collect()
            });
            let key = ElemKey {
                set: shards[self.shard_of(k.addr)].clone(),
                addr: k.addr,
            };
            out.insert(key, *end);
        }
        Cow::Owned(out)
    }

    /// The changes under their kernel sets' names.
    pub fn kernel_changes<'a>(&self, changes: &'a Changes) -> Cow<'a, Changes> {
        if self.shards <= 1 {
            return Cow::Borrowed(changes);
        }
        let key = |k: &ElemKey| ElemKey {
            set: self.kernel_set(k).into_owned(),
            addr: k.addr,
        };
        Cow::Owned(Changes {
            set: changes.set.iter().map(|(k, end)| (key(k), *end)).collect(),
            remove: changes.remove.iter().map(key).collect(),
        })
    }

    /// The input chain's rule that sends a packet of family `f` to its shard's chain
    /// (`{prefix}_v4_N`), by the same bits as [`Layout::shard_of`].
    pub(super) fn dispatch(&self, f: Family, prefix: &str) -> Vec<Statement<'static>> {
        let mask = shard_value(f, usize::from(self.shards) - 1);
        let key = Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                protocol: match f {
                    Family::V4 => "ip",
                    Family::V6 => "ip6",
                }
                .into(),
                field: "saddr".into(),
            }))),
            Expression::String(mask.into()),
        )));
        let data = (0..usize::from(self.shards))
            .map(|i| {
                SetItem::Mapping(
                    Expression::String(shard_value(f, i).into()),
                    Expression::Verdict(Verdict::Jump(JumpTarget {
                        target: shard_chain(prefix, f, i).into(),
                    })),
                )
            })
            .collect();
        vec![Statement::VerdictMap(VerdictMap {
            key,
            data: Expression::Named(NamedExpression::Set(data)),
        })]
    }
}

/// The name of shard `i`'s chain of one kind (`bans`, `grants`) and family.
pub fn shard_chain(prefix: &str, f: Family, i: usize) -> String {
    format!("{prefix}_{}_{i}", f.suffix())
}

/// An address whose last byte is `i`: a shard's key in the verdict map, or (for the highest
/// shard) the mask.
fn shard_value(f: Family, i: usize) -> String {
    match f {
        Family::V4 => Ipv4Addr::from(i as u32).to_string(),
        Family::V6 => Ipv6Addr::from(i as u128).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shards: u8) -> Layout {
        let mut l = Layout::new("t", vec![("sip".into(), vec!["udp/5060".parse().unwrap()])], &[]);
        l.shards = shards;
        l
    }

    #[test]
    fn an_address_s_shard_is_the_low_bits_of_its_last_byte() {
        let l = layout(16);
        assert_eq!(l.shard_of("203.0.113.37".parse().unwrap()), 37 & 15);
        assert_eq!(l.shard_of("2001:db8::1:ff".parse().unwrap()), 15);
        assert_eq!(layout(1).shard_of("203.0.113.37".parse().unwrap()), 0);
        let k = ElemKey {
            set: "allow_sip_v4".into(),
            addr: "203.0.113.37".parse().unwrap(),
        };
        assert_eq!(l.kernel_set(&k), "allow_sip_v4_5");
        assert_eq!(layout(1).kernel_set(&k), "allow_sip_v4");
    }

    #[test]
    fn every_logical_set_has_each_shard_once() {
        let l = layout(4);
        let sets = l.kernel_sets();
        // ban_v4, ban_v6, allow_sip_v4, allow_sip_v6, four shards each.
        assert_eq!(sets.len(), 16);
        assert!(sets
            .iter()
            .any(|s| s.name == "ban_v6_3" && s.logical == "ban_v6" && s.shard == 3));
        assert_eq!(layout(1).kernel_sets().len(), 4);
    }

    #[test]
    fn elements_and_changes_take_their_shard_s_name() {
        let l = layout(2);
        let k = |a: &str| ElemKey {
            set: "ban_v4".into(),
            addr: a.parse().unwrap(),
        };
        let e: Elements = [(k("192.0.2.1"), 5), (k("192.0.2.2"), 6)].into_iter().collect();
        let named: Vec<_> = l.kernel_elements(&e).keys().map(|k| k.set.clone()).collect();
        assert_eq!(named, ["ban_v4_0", "ban_v4_1"]);
        let c = Changes {
            set: vec![(k("192.0.2.3"), 7)],
            remove: vec![k("192.0.2.4")],
        };
        let c = l.kernel_changes(&c);
        assert_eq!(c.set[0].0.set, "ban_v4_1");
        assert_eq!(c.remove[0].set, "ban_v4_0");
    }

    #[test]
    fn the_verdict_map_keys_by_the_same_bits() {
        assert_eq!(shard_value(Family::V4, 15), "0.0.0.15");
        assert_eq!(shard_value(Family::V6, 3), "::3");
        let rule = serde_json::to_value(layout(4).dispatch(Family::V4, "grants")).unwrap();
        let text = rule.to_string();
        assert!(text.contains("\"0.0.0.3\""), "{text}");
        assert!(text.contains("grants_v4_3"), "{text}");
    }
}
