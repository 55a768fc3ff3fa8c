//! Renders the `inet passknock` table (sets, chain, rules, elements) as nft JSON — pure functions.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use nftables::expr::{
    BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range,
    SetItem, CT,
};
use nftables::schema::{
    Chain, Element, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Log, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::base::addr::{Family, Net};
use crate::base::clock::UnixMs;
use crate::base::defaults;
use crate::config::{Config, PortRange, Proto, Responsive, SecretDomain, SipCapture};

// Element changes live in changes.rs; their paths stay `render::…` for the callers. An element
// with its timeout is written the same way in the table and in a change.
use super::changes::timed;
pub use super::changes::{render_changes, timeout_secs, Changes};
use super::shards::shard_chain;
use super::standing::StandingNets;
pub use sip_door::SIP_RATE_DROPS;

/// The input chain's name.
pub const CHAIN: &str = "input";
/// The prefixes of the shards' chains (`shards.rs`): `bans_v4_0`, `grants_v6_3`.
pub const BANS: &str = "bans";
pub const GRANTS: &str = "grants";
/// How often, in seconds, the kernel sweeps a grant or ban set for expired elements. Its own
/// default is every second, and a sweep walks the whole set: with 100,000 grants the shards'
/// sweeps came due together and held a core for up to 4 ms, and a grant whose threads woke there
/// waited. An expired element matches no packet and is not listed, so sweeping less often only
/// keeps its memory a while longer.
pub const GC_INTERVAL_SECS: u32 = 60;

/// What the table is made of, from config: it changes only when the config does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub table: String,
    /// Service name → its ports, in name order.
    pub services: Vec<(String, Vec<PortRange>)>,
    /// Trusted networks, nested ones dropped.
    pub trusted: Vec<Net>,
    /// Knock ports: logged to the NFLOG group `knock_group` and dropped, so they look closed.
    pub knock: Vec<PortRange>,
    pub knock_group: u16,
    /// Dropped SIP requests on these UDP ports are logged (rate-limited) before the drop.
    pub sip_capture: Option<SipCapture>,
    /// The standing entries' networks, by set (`standing.rs`): the store's, not the config's, so
    /// not in the fingerprint; a read-back compares them as it does the trusted networks.
    pub standing: StandingNets,
    /// `firewall.trusted`'s DNS names: their addresses fill `trusted_names_v4/_v6`, accepted
    /// like the trusted networks.
    pub trusted_names: Vec<String>,
    /// `REGISTER sip:<name>` for a secret name passes to these UDP ports (`sip_door.rs`).
    pub secret_domain: Option<SecretDomain>,
    /// Unknown sources reach these ports under a per-source rate limit (`sip_door.rs`).
    pub responsive: Option<Responsive>,
    /// Into how many sets each grant and ban set is split (`shards.rs`): a power of two.
    pub shards: u8,
}

/// A set element: which set, which address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElemKey {
    pub set: String,
    pub addr: IpAddr,
}

/// Desired elements and when each ends.
pub type Elements = BTreeMap<ElemKey, UnixMs>;

pub fn allow_set(service: &str, family: Family) -> String {
    format!("allow_{service}_{}", family.suffix())
}

pub fn ban_set(family: Family) -> String {
    format!("ban_{}", family.suffix())
}

pub fn trusted_set(family: Family) -> String {
    format!("trusted_{}", family.suffix())
}

impl Layout {
    pub fn from_config(config: &Config) -> Layout {
        Layout::new(
            defaults::TABLE,
            config
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.ports.clone()))
                .collect(),
            &config.firewall.trusted,
        )
        .with_knock(config.knock.ports(), config.knock.nflog_group)
        .with_sip_capture(config.sip_capture())
        .with_trusted_names(&config.firewall.trusted_names)
        .with_sip_door(config.sip_secret_domain(), config.sip_responsive())
    }

    /// The same layout, following `names` into the trusted-names sets.
    pub fn with_trusted_names(mut self, names: &[String]) -> Layout {
        self.trusted_names = names.to_vec();
        self
    }

    /// The same layout, logging dropped SIP requests as `capture` says (or not, for `None`).
    pub fn with_sip_capture(mut self, capture: Option<SipCapture>) -> Layout {
        self.sip_capture = capture;
        self
    }

    /// The same layout, logging `ports` to NFLOG group `group`.
    pub fn with_knock(mut self, ports: Vec<PortRange>, group: u16) -> Layout {
        self.knock = ports;
        self.knock_group = group;
        self
    }

    pub fn new(table: &str, services: Vec<(String, Vec<PortRange>)>, trusted: &[Net]) -> Layout {
        let mut trusted: Vec<Net> = trusted.to_vec();
        trusted.sort();
        trusted.dedup();
        // An interval set refuses overlapping elements; CIDRs either nest or are apart, so drop
        // the nested ones.
        let outer: Vec<Net> = trusted
            .iter()
            .filter(|n| {
                !trusted
                    .iter()
                    .any(|m| m != *n && m.prefix < n.prefix && m.contains(n.addr))
            })
            .copied()
            .collect();
        Layout {
            table: table.to_string(),
            services,
            trusted: outer,
            knock: Vec::new(),
            knock_group: defaults::KNOCK_NFLOG_GROUP,
            sip_capture: None,
            standing: StandingNets::new(),
            trusted_names: Vec::new(),
            secret_domain: None,
            responsive: None,
            shards: 1,
        }
    }

    /// Every timeout set the daemon fills, with its element type.
    pub fn dynamic_sets(&self) -> Vec<(String, Family)> {
        let mut out = Vec::new();
        for f in [Family::V4, Family::V6] {
            out.push((ban_set(f), f));
        }
        for (svc, _) in &self.services {
            for f in [Family::V4, Family::V6] {
                out.push((allow_set(svc, f), f));
            }
        }
        out
    }

    pub fn has_service(&self, name: &str) -> bool {
        self.services.iter().any(|(n, _)| n == name)
    }

    /// Every protected port of one protocol, merged into disjoint ranges.
    pub fn protected(&self, proto: Proto) -> Vec<(u16, u16)> {
        merge(
            self.services
                .iter()
                .flat_map(|(_, p)| p.iter())
                .filter(|p| p.proto == proto),
        )
    }

    /// Every knock port of one protocol, merged into disjoint ranges.
    pub fn knock_ports(&self, proto: Proto) -> Vec<(u16, u16)> {
        merge(self.knock.iter().filter(|p| p.proto == proto))
    }

    /// What a ban keeps a source off: the protected ports and the knock ports (a banned
    /// source's knocks are dropped before they are logged, so they open nothing).
    pub fn banned_ports(&self, proto: Proto) -> Vec<(u16, u16)> {
        merge(
            self.services
                .iter()
                .flat_map(|(_, p)| p.iter())
                .chain(self.knock.iter())
                .filter(|p| p.proto == proto),
        )
    }

    /// A fingerprint of everything but the elements, written into the rules' comments so a
    /// readback can tell whether the table is still the one we built.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: &str| {
            for b in s.bytes().chain([0xff]) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&self.table);
        eat(&defaults::CHAIN_PRIORITY.to_string());
        for (n, ports) in &self.services {
            eat(n);
            for p in ports {
                eat(&p.to_string());
            }
        }
        for t in &self.trusted {
            eat(&t.to_string());
        }
        if !self.knock.is_empty() {
            eat("knock");
            eat(&self.knock_group.to_string());
            for p in &self.knock {
                eat(&p.to_string());
            }
        }
        if let Some(c) = &self.sip_capture {
            eat("sip-capture");
            for v in [
                c.group as u32,
                c.per_source_rate,
                c.per_source_burst,
                c.rate,
                c.burst,
            ] {
                eat(&v.to_string());
            }
            for p in &c.ports {
                eat(&p.to_string());
            }
        }
        self.sip_door_fingerprint(&mut eat);
        if self.shards > 1 {
            eat("shards");
            eat(&self.shards.to_string());
        }
        format!("{h:016x}")
    }

    /// The whole table, elements and all, as one batch: "add, delete, add" creates the table or
    /// clears an existing one, so the batch is the same on a fresh boot and on a repair.
    pub fn render_table(&self, elements: &Elements, now: UnixMs) -> Nftables<'static> {
        let mut cmds: Vec<NfObject<'static>> = Vec::new();
        let table = Table {
            family: NfFamily::INet,
            name: self.table.clone().into(),
            handle: None,
        };
        cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(
            table.clone(),
        ))));
        cmds.push(NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(
            table.clone(),
        ))));
        cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(table))));
        for f in [Family::V4, Family::V6] {
            let elems: Vec<Expression<'static>> = self
                .trusted
                .iter()
                .filter(|n| n.family() == f)
                .map(|n| {
                    Expression::Named(NamedExpression::Prefix(Prefix {
                        addr: Box::new(Expression::String(n.addr.to_string().into())),
                        len: n.prefix as u32,
                    }))
                })
                .collect();
            cmds.push(add(NfListObject::Set(Box::new(self.set(
                &trusted_set(f),
                f,
                SetFlag::Interval,
                elems,
            )))));
        }
        cmds.extend(self.standing_set_objects());
        for ks in self.kernel_sets() {
            cmds.push(add(NfListObject::Set(Box::new(self.set(
                &ks.name,
                ks.family,
                SetFlag::Timeout,
                Vec::new(),
            )))));
        }
        cmds.extend(self.sip_door_objects());
        cmds.push(add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Input),
            prio: Some(defaults::CHAIN_PRIORITY),
            policy: Some(NfChainPolicy::Accept),
            ..Default::default()
        })));
        // The shards' chains first: the input chain's verdict maps jump to them.
        let shard_chains = self.shard_chains();
        for (name, _) in &shard_chains {
            cmds.push(add(NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: self.table.clone().into(),
                name: name.clone().into(),
                ..Default::default()
            })));
        }
        let fp = self.fingerprint();
        for (chain, rules) in shard_chains
            .into_iter()
            .chain([(CHAIN.to_string(), self.rules())])
        {
            let n = rules.len();
            for (i, expr) in rules.into_iter().enumerate() {
                cmds.push(add(NfListObject::Rule(Rule {
                    family: NfFamily::INet,
                    table: self.table.clone().into(),
                    chain: chain.clone().into(),
                    expr: expr.into(),
                    handle: None,
                    index: None,
                    comment: Some(rule_comment(&fp, i, n).into()),
                })));
            }
        }
        let elements = self.kernel_elements(elements);
        let mut by_set: BTreeMap<&str, Vec<(IpAddr, UnixMs)>> = BTreeMap::new();
        for (k, end) in elements.iter() {
            by_set.entry(&k.set).or_default().push((k.addr, *end));
        }
        for (set, elems) in by_set {
            cmds.push(add(
                self.element(set, elems.iter().map(|(a, e)| timed(*a, *e, now)).collect())
            ));
        }
        Nftables { objects: cmds.into() }
    }

    /// `render_table` as JSON bytes, with the elements written straight out: at 100,000 grants a
    /// tree of schema objects per element would cost more memory than everything else together.
    pub fn render_table_json(&self, elements: &Elements, now: UnixMs) -> Result<Vec<u8>, serde_json::Error> {
        use std::io::Write as _;
        let head = serde_json::to_vec(&self.render_table(&Elements::new(), now))?;
        // `{"nftables":[ ... ]}`: reopen the array to append element commands.
        let mut out = Vec::with_capacity(head.len() + elements.len() * 48);
        out.extend_from_slice(&head[..head.len() - 2]);
        let elements = self.kernel_elements(elements);
        let mut current: Option<&str> = None;
        for (k, end) in elements.iter() {
            if current != Some(k.set.as_str()) {
                if current.is_some() {
                    out.extend_from_slice(b"]}}}");
                }
                out.extend_from_slice(b",{\"add\":{\"element\":{\"family\":\"inet\",\"table\":");
                serde_json::to_writer(&mut out, &self.table)?;
                out.extend_from_slice(b",\"name\":");
                serde_json::to_writer(&mut out, &k.set)?;
                out.extend_from_slice(b",\"elem\":[");
                current = Some(&k.set);
            } else {
                out.push(b',');
            }
            let _ = write!(
                out,
                "{{\"elem\":{{\"val\":\"{}\",\"timeout\":{}}}}}",
                k.addr,
                timeout_secs(*end, now)
            );
        }
        if current.is_some() {
            out.extend_from_slice(b"]}}}");
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    pub(super) fn set(
        &self,
        name: &str,
        family: Family,
        flag: SetFlag,
        elems: Vec<Expression<'static>>,
    ) -> Set<'static> {
        Set {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: name.to_string().into(),
            handle: None,
            set_type: SetTypeValue::Single(match family {
                Family::V4 => SetType::Ipv4Addr,
                Family::V6 => SetType::Ipv6Addr,
            }),
            policy: None,
            flags: Some(HashSet::from([flag])),
            elem: if elems.is_empty() {
                None
            } else {
                Some(elems.into())
            },
            timeout: None,
            gc_interval: (flag == SetFlag::Timeout).then_some(GC_INTERVAL_SECS),
            size: None,
            comment: None,
        }
    }

    pub(super) fn element(&self, set: &str, elem: Vec<Expression<'static>>) -> NfListObject<'static> {
        NfListObject::Element(Element {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: set.to_string().into(),
            elem: elem.into(),
        })
    }

    /// The input chain, in order: loopback and trusted accept; banned drop (protected and knock
    /// ports only); knock ports log to NFLOG and drop; replies to connections the PBX started
    /// accept; each service accepts its allow set; a secret domain's REGISTER and responsive SIP
    /// within its rate accept, over it drop (`sip_door.rs`); SIP requests on the SIP service's UDP
    /// ports log to their NFLOG group within limits (`capture.rs`); every protected port drops.
    /// Everything else falls through to the host's own firewall.
    pub(crate) fn rules(&self) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        rules.push(vec![
            matches(
                Expression::Named(NamedExpression::Meta(Meta {
                    key: MetaKey::Iifname,
                })),
                s("lo"),
            ),
            Statement::Accept(None),
        ]);
        for f in [Family::V4, Family::V6] {
            rules.push(vec![saddr_in(f, &trusted_set(f)), Statement::Accept(None)]);
        }
        for f in [Family::V4, Family::V6] {
            rules.push(vec![
                saddr_in(f, &super::standing::trusted_names_set(f)),
                Statement::Accept(None),
            ]);
        }
        rules.extend(self.standing_rules());
        for f in [Family::V4, Family::V6] {
            if self.shards > 1 {
                rules.push(self.dispatch(f, BANS));
            } else {
                rules.extend(self.ban_rules(f, &ban_set(f)));
            }
        }
        rules.extend(self.knock_rules());
        rules.push(vec![
            matches(
                Expression::Named(NamedExpression::CT(CT {
                    key: "direction".into(),
                    family: None,
                    dir: None,
                })),
                s("reply"),
            ),
            Statement::Accept(None),
        ]);
        if self.shards > 1 {
            for f in [Family::V4, Family::V6] {
                rules.push(self.dispatch(f, GRANTS));
            }
        } else {
            for (svc, _) in &self.services {
                for f in [Family::V4, Family::V6] {
                    rules.extend(self.grant_rules(svc, f, &allow_set(svc, f)));
                }
            }
        }
        rules.extend(self.sip_door_rules());
        rules.extend(self.sip_capture_rules());
        for proto in [Proto::Udp, Proto::Tcp] {
            let ports = self.protected(proto);
            if !ports.is_empty() {
                rules.push(vec![dport_in(proto, &ports), Statement::Drop(None)]);
            }
        }
        rules
    }
}

impl Layout {
    /// A banned source of family `f` (in `set`) is dropped on the banned ports.
    fn ban_rules(&self, f: Family, set: &str) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        for proto in [Proto::Udp, Proto::Tcp] {
            let ports = self.banned_ports(proto);
            if !ports.is_empty() {
                rules.push(vec![
                    saddr_in(f, set),
                    dport_in(proto, &ports),
                    Statement::Drop(None),
                ]);
            }
        }
        rules
    }

    /// A source of family `f` granted service `svc` (in `set`) is accepted on its ports.
    fn grant_rules(&self, svc: &str, f: Family, set: &str) -> Vec<Vec<Statement<'static>>> {
        let ports = self
            .services
            .iter()
            .find(|(n, _)| n == svc)
            .map(|(_, p)| p.as_slice())
            .unwrap_or_default();
        let mut rules = Vec::new();
        for proto in [Proto::Udp, Proto::Tcp] {
            let p = merge(ports.iter().filter(|p| p.proto == proto));
            if !p.is_empty() {
                rules.push(vec![
                    saddr_in(f, set),
                    dport_in(proto, &p),
                    Statement::Accept(None),
                ]);
            }
        }
        rules
    }

    /// With the sets split, each shard's chains and their rules: its bans, then its grants. None
    /// when unsplit (the input chain holds those rules itself).
    pub(crate) fn shard_chains(&self) -> Vec<(String, Vec<Vec<Statement<'static>>>)> {
        let mut out = Vec::new();
        if self.shards <= 1 {
            return out;
        }
        for f in [Family::V4, Family::V6] {
            for i in 0..usize::from(self.shards) {
                let ban = self.shard_set(&ban_set(f), i);
                out.push((shard_chain(BANS, f, i), self.ban_rules(f, &ban)));
            }
            for i in 0..usize::from(self.shards) {
                let mut rules = Vec::new();
                for (svc, _) in &self.services {
                    rules.extend(self.grant_rules(svc, f, &self.shard_set(&allow_set(svc, f), i)));
                }
                out.push((shard_chain(GRANTS, f, i), rules));
            }
        }
        out
    }
}

impl Layout {
    /// Knock ports log to NFLOG and drop — TCP only for a SYN that opens a connection (knockd's
    /// rule, and a flood of other segments never reaches the daemon); other TCP segments to a
    /// knock port just drop. Only packets in the original direction: a reply to a connection
    /// the PBX made from an ephemeral port inside a knock range passes on to the host.
    fn knock_rules(&self) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        let log = || {
            Statement::Log(Some(Log {
                prefix: None,
                group: Some(self.knock_group as u32),
                snaplen: Some(knockd::packet::CAPTURE_LEN),
                queue_threshold: None,
                level: None,
                flags: None,
            }))
        };
        let original = || {
            matches(
                Expression::Named(NamedExpression::CT(CT {
                    key: "direction".into(),
                    family: None,
                    dir: None,
                })),
                s("original"),
            )
        };
        let udp = self.knock_ports(Proto::Udp);
        if !udp.is_empty() {
            rules.push(vec![
                dport_in(Proto::Udp, &udp),
                original(),
                log(),
                Statement::Drop(None),
            ]);
        }
        let tcp = self.knock_ports(Proto::Tcp);
        if !tcp.is_empty() {
            let syn_only = matches(
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                        protocol: "tcp".into(),
                        field: "flags".into(),
                    }))),
                    Expression::List(vec![s("fin"), s("syn"), s("rst"), s("ack")]),
                ))),
                s("syn"),
            );
            rules.push(vec![
                dport_in(Proto::Tcp, &tcp),
                original(),
                syn_only,
                log(),
                Statement::Drop(None),
            ]);
            rules.push(vec![
                dport_in(Proto::Tcp, &tcp),
                original(),
                Statement::Drop(None),
            ]);
        }
        rules
    }
}

/// `passknock <fingerprint> <i>/<n>`: lets a readback check every rule is ours and in place.
pub fn rule_comment(fingerprint: &str, i: usize, n: usize) -> String {
    format!("passknock {fingerprint} {}/{n}", i + 1)
}

pub(super) fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

pub(super) fn saddr_in(f: Family, set: &str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: ip_protocol(f).into(),
            field: "saddr".into(),
        }))),
        s(&format!("@{set}")),
    )
}

/// nft's payload protocol for a family's addresses.
fn ip_protocol(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

pub(super) fn dport_in(proto: Proto, ports: &[(u16, u16)]) -> Statement<'static> {
    let items = ports
        .iter()
        .map(|&(a, b)| {
            SetItem::Element(if a == b {
                Expression::Number(a as u32)
            } else {
                Expression::Range(Box::new(Range {
                    range: [Expression::Number(a as u32), Expression::Number(b as u32)],
                }))
            })
        })
        .collect();
    matches(
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: proto.name().into(),
            field: "dport".into(),
        }))),
        Expression::Named(NamedExpression::Set(items)),
    )
}

/// Sorted, disjoint ranges: an anonymous nft set refuses overlapping intervals.
pub(super) fn merge<'a>(ports: impl Iterator<Item = &'a PortRange>) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ports.map(|p| (p.first, p.last)).collect();
    v.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

// The SIP capture's rules and the SIP doors' live beside this file.
mod capture;
mod sip_door;

#[cfg(test)]
mod tests;
