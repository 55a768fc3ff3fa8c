//! Standing entries in the table: per service and family an interval set (`stand_sip_v4`) whose
//! networks the service's ports accept, never timing out. They change rarely, so a change is one
//! batch that empties each set and fills it again; a rebuild writes them with the rest.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nftables::expr::{Expression, NamedExpression, Prefix};
use nftables::schema::{FlushObject, NfCmd, NfListObject, NfObject, Nftables, SetFlag};
use nftables::stmt::Statement;

use super::render::{add, Layout};
use crate::base::addr::{Family, Net};
use crate::config::Proto;
use crate::model::{NameState, StandingEntry, Target};

/// Set name → the networks it holds (outermost only, sorted). Every service's two sets are keys,
/// empty ones too, so a change empties what no entry wants any more.
pub type StandingNets = BTreeMap<String, Vec<Net>>;

/// Where `firewall.trusted`'s DNS names put their addresses: no service's set can be named so.
pub fn trusted_names_set(family: Family) -> String {
    format!("trusted_names_{}", family.suffix())
}

pub fn standing_set(service: &str, family: Family) -> String {
    format!("stand_{service}_{}", family.suffix())
}

/// What the standing entries put in the table: each entry's networks, and the addresses its
/// names stand for now, in the sets of its services this layout has.
pub fn standing_nets(layout: &Layout, entries: &[StandingEntry], names: &[NameState]) -> StandingNets {
    let by_name: BTreeMap<&str, &[IpAddr]> = names
        .iter()
        .map(|n| (n.name.as_str(), n.addresses.as_slice()))
        .collect();
    let mut out: StandingNets = BTreeMap::new();
    for (set, _) in layout.standing_sets() {
        out.insert(set, Vec::new());
    }
    for name in &layout.trusted_names {
        for a in by_name.get(name.as_str()).into_iter().flat_map(|a| a.iter()) {
            if let Some(set) = out.get_mut(&trusted_names_set(Family::of(a))) {
                set.push(host(*a));
            }
        }
    }
    for e in entries {
        let mut nets: Vec<Net> = Vec::new();
        for t in &e.targets {
            match t {
                Target::Net(n) => nets.push(*n),
                Target::Name(name) => nets.extend(
                    by_name
                        .get(name.as_str())
                        .into_iter()
                        .flat_map(|a| a.iter())
                        .map(|a| host(*a)),
                ),
            }
        }
        for svc in e.services.iter().filter(|s| layout.has_service(s)) {
            for n in &nets {
                if let Some(set) = out.get_mut(&standing_set(svc, n.family())) {
                    set.push(*n);
                }
            }
        }
    }
    for nets in out.values_mut() {
        *nets = outermost(nets);
    }
    out
}

/// An address as the network of just itself.
pub fn host(a: IpAddr) -> Net {
    Net {
        addr: a,
        prefix: if a.is_ipv4() { 32 } else { 128 },
    }
}

/// Sorted, each once, nested ones dropped: an interval set refuses overlapping elements, and
/// CIDRs either nest or are apart.
pub fn outermost(nets: &[Net]) -> Vec<Net> {
    let mut v = nets.to_vec();
    v.sort();
    v.dedup();
    v.iter()
        .filter(|n| {
            !v.iter()
                .any(|m| m != *n && m.prefix < n.prefix && m.contains(n.addr))
        })
        .copied()
        .collect()
}

pub(super) fn prefix_expr(n: &Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(n.addr.to_string().into())),
        len: n.prefix as u32,
    }))
}

impl Layout {
    /// Every standing set (and the trusted names' two), with its family.
    pub fn standing_sets(&self) -> Vec<(String, Family)> {
        let mut out = vec![
            (trusted_names_set(Family::V4), Family::V4),
            (trusted_names_set(Family::V6), Family::V6),
        ];
        for (svc, _) in &self.services {
            for f in [Family::V4, Family::V6] {
                out.push((standing_set(svc, f), f));
            }
        }
        out
    }

    /// The standing sets, as created in a whole-table batch, holding `self.standing`.
    pub(super) fn standing_set_objects(&self) -> Vec<NfObject<'static>> {
        self.standing_sets()
            .into_iter()
            .map(|(name, f)| {
                add(NfListObject::Set(Box::new(self.interval_set(
                    &name,
                    f,
                    self.elems(&name),
                ))))
            })
            .collect()
    }

    fn elems(&self, set: &str) -> Vec<Expression<'static>> {
        self.standing
            .get(set)
            .map(|nets| nets.iter().map(prefix_expr).collect())
            .unwrap_or_default()
    }

    fn interval_set(
        &self,
        name: &str,
        f: Family,
        elems: Vec<Expression<'static>>,
    ) -> nftables::schema::Set<'static> {
        self.set(name, f, SetFlag::Interval, elems)
    }

    /// One batch putting `self.standing` in the table: each standing set emptied and filled
    /// again, in one transaction, so no packet sees it empty.
    pub fn render_standing(&self) -> Nftables<'static> {
        let mut cmds = Vec::new();
        for (name, f) in self.standing_sets() {
            cmds.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(Box::new(
                self.interval_set(&name, f, Vec::new()),
            )))));
            let elems = self.elems(&name);
            if !elems.is_empty() {
                cmds.push(add(self.element(&name, elems)));
            }
        }
        Nftables { objects: cmds.into() }
    }

    /// Each service's standing sets accept its ports. They come before the bans: a standing
    /// entry is the admin's word, and a trunk that fails a few registrations must not lose its
    /// service for it (as Travelin' Man 3's whitelist is not banned by fail2ban).
    pub(super) fn standing_rules(&self) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        for (svc, ports) in &self.services {
            for f in [Family::V4, Family::V6] {
                for proto in [Proto::Udp, Proto::Tcp] {
                    let p = super::render::merge(ports.iter().filter(|p| p.proto == proto));
                    if !p.is_empty() {
                        rules.push(vec![
                            super::render::saddr_in(f, &standing_set(svc, f)),
                            super::render::dport_in(proto, &p),
                            Statement::Accept(None),
                        ]);
                    }
                }
            }
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_networks_and_names_fold_into_each_services_sets() {
        let p = |s: &str| s.parse().unwrap();
        let layout = Layout::new(
            "passknock",
            vec![
                ("iax".into(), vec![p("udp/4569")]),
                ("sip".into(), vec![p("udp/5060")]),
            ],
            &[],
        )
        .with_trusted_names(&["sip.example.net".into()]);
        let entry = StandingEntry {
            name: "office".into(),
            targets: vec![
                "198.51.100.0/24".parse().unwrap(),
                "198.51.100.7".parse().unwrap(),
                "pbx.example.com".parse().unwrap(),
                "2001:db8:5::/48".parse().unwrap(),
            ],
            services: vec!["sip".into(), "gone".into()],
            note: String::new(),
            who: "uid 0".into(),
            created: 0,
        };
        let names = [
            NameState {
                name: "pbx.example.com".into(),
                addresses: vec!["203.0.113.9".parse().unwrap()],
                ..Default::default()
            },
            NameState {
                name: "sip.example.net".into(),
                addresses: vec!["2001:db8:9::1".parse().unwrap()],
                ..Default::default()
            },
        ];
        let nets = standing_nets(&layout, &[entry], &names);
        assert_eq!(nets.len(), 6);
        assert_eq!(nets["trusted_names_v6"][0].to_string(), "2001:db8:9::1/128");
        assert!(nets["trusted_names_v4"].is_empty());
        let v4: Vec<String> = nets["stand_sip_v4"].iter().map(|n| n.to_string()).collect();
        assert_eq!(v4, ["198.51.100.0/24", "203.0.113.9/32"]);
        assert_eq!(nets["stand_sip_v6"].len(), 1);
        assert!(nets["stand_iax_v4"].is_empty());
    }
}
