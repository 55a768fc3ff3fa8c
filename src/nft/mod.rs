//! The nftables backend: the table is declared (`Layout` + elements), rendered by pure functions,
//! applied as one atomic batch, and read back to reconcile.

pub mod changes;
pub mod desired;
pub mod netlink;
pub mod readback;
pub mod render;
pub mod runner;
pub mod shards;
pub mod standing;

pub use desired::{ban_key, lift_bans, Desired};
pub use readback::{Observed, TableState};
pub use render::{allow_set, ban_set, Changes, ElemKey, Elements, Layout};
pub use runner::{Nft, NftError};
pub use standing::{standing_nets, StandingNets};

use tracing::warn;

use crate::base::addr::Family;
use crate::base::clock::UnixMs;
use crate::base::clock::{Clock, Now};
use crate::config::{Config, ElementPath, Shards};
use crate::model::{Ban, Grant};
use netlink::Netlink;

/// The elements the store wants: every live grant's services, every live ban (see [`Desired`]).
pub fn desired<'a>(
    layout: &Layout,
    grants: impl IntoIterator<Item = &'a Grant>,
    bans: &[Ban],
    clock: &mut Clock,
    now: Now,
) -> Elements {
    Desired::build(layout, grants, bans, clock, now).into()
}

/// Runs one nft apply and records how long it took.
fn timed(apply: impl FnOnce() -> Result<(), NftError>) -> Result<(), NftError> {
    let t = std::time::Instant::now();
    let r = apply();
    crate::observe::metrics::METRICS.nft_apply(t.elapsed(), r.is_ok());
    r
}

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    InSync,
    Fixed { set: usize, removed: usize },
    Rebuilt { reason: String, elements: usize },
}

impl std::fmt::Display for Reconciled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reconciled::InSync => write!(f, "in sync"),
            Reconciled::Fixed { set, removed } => {
                write!(f, "fixed {set} element(s), removed {removed} unknown")
            }
            Reconciled::Rebuilt { reason, elements } => {
                write!(f, "rebuilt ({reason}) with {elements} element(s)")
            }
        }
    }
}

/// The daemon's table: its layout, the `nft` program that creates it, and the path element
/// changes take to the kernel. The engine's thread holds one for its changes, the read-back's
/// thread another for its listings and rebuilds; each has its own netlink socket.
pub struct Firewall {
    nft: Nft,
    layout: Layout,
    path: ElementPath,
    netlink: Option<Netlink>,
    /// Why element changes go through `nft` although netlink is configured.
    fallback: Option<String>,
    /// `firewall.shards`: with `auto`, the layout keeps what [`Firewall::sized`] picked.
    shards: Shards,
}

impl Firewall {
    pub fn from_config(config: &Config) -> Firewall {
        let mut f = Firewall {
            nft: Nft::new(&config.firewall.nft),
            layout: Layout::from_config(config),
            path: config.firewall.elements,
            netlink: None,
            fallback: None,
            shards: config.firewall.shards,
        };
        f.layout.shards = f.shards.resolve(0);
        f.open_netlink();
        f
    }

    /// The same firewall with its sets split for `elements` per set (`firewall.shards = auto`;
    /// a number is kept as it is). Picked once, at start: every later change names the sets
    /// this picks, so the engine's firewall and the read-back's must be sized alike.
    pub fn sized(mut self, elements: usize) -> Firewall {
        self.layout.shards = self.shards.resolve(elements);
        self
    }

    fn open_netlink(&mut self) {
        self.netlink = None;
        self.fallback = None;
        if self.path == ElementPath::Netlink {
            match Netlink::open() {
                Ok(n) => self.netlink = Some(n),
                Err(e) => self.fall_back(e),
            }
        }
    }

    /// Netlink refused where `nft` did not: every change goes through `nft` from now on (until a
    /// reload tries netlink again), and `status` and `doctor` say why.
    fn fall_back(&mut self, why: NftError) {
        warn!("element changes go through nft from now on: the netlink path refused: {why}");
        self.netlink = None;
        self.fallback = Some(why.to_string());
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A reloaded config's layout, program and path; the next reconcile rebuilds to match. A
    /// reload also tries netlink again after a fallback.
    pub fn reconfigure(&mut self, config: &Config) {
        // The standing entries are the store's: a new config keeps them.
        let standing = std::mem::take(&mut self.layout.standing);
        let picked = self.layout.shards;
        self.layout = Layout::from_config(config);
        self.layout.standing = standing;
        self.shards = config.firewall.shards;
        self.layout.shards = match self.shards {
            Shards::Auto => picked,
            fixed => fixed.resolve(0),
        };
        self.nft = Nft::new(&config.firewall.nft);
        let path = config.firewall.elements;
        if path != self.path || self.fallback.is_some() {
            self.path = path;
            self.open_netlink();
        }
    }

    /// How element changes reach the kernel, in words.
    pub fn path(&self) -> String {
        match (self.path, &self.fallback) {
            (ElementPath::Nft, _) => "nft (firewall.elements = \"nft\")".into(),
            (ElementPath::Netlink, Some(why)) => format!("nft (netlink refused: {why})"),
            (ElementPath::Netlink, None) => "netlink".into(),
        }
    }

    /// Builds the whole table with these elements. Over netlink: the table with empty timeout
    /// sets in one `nft` run, then every element in one netlink batch (a JSON batch of 100,000
    /// elements costs `nft` seconds to parse); over `nft`, all of it in one run.
    pub fn rebuild(&mut self, elements: &Elements, now: UnixMs) -> Result<(), NftError> {
        if let Some(nl) = &mut self.netlink {
            let json = self.layout.render_table_json(&Elements::new(), now)?;
            timed(|| self.nft.apply_json(&json))?;
            let elements = self.layout.kernel_elements(elements);
            match timed(|| nl.fill(&self.layout.table, &elements, now)) {
                Ok(()) => return Ok(()),
                Err(e) => self.fall_back(e),
            }
        }
        let json = self.layout.render_table_json(elements, now)?;
        timed(|| self.nft.apply_json(&json))
    }

    /// Applies element changes as one atomic batch. If netlink refuses a change that `nft` then
    /// takes, the netlink path is what failed: it falls back. If `nft` refuses it too, the error
    /// is `nft`'s, in its words.
    pub fn change(&mut self, changes: &Changes, now: UnixMs) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(nl) = &mut self.netlink {
            let kernel = self.layout.kernel_changes(changes);
            match timed(|| nl.apply(&self.layout.table, &kernel, now)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.spawn_change(changes, now)?;
                    self.fall_back(e);
                    return Ok(());
                }
            }
        }
        self.spawn_change(changes, now)
    }

    fn spawn_change(&self, changes: &Changes, now: UnixMs) -> Result<(), NftError> {
        let batch = render::render_changes(&self.layout, changes, now);
        timed(|| self.nft.apply(&batch))
    }

    /// Takes the standing entries' networks as the layout's, for the next rebuild or read-back.
    pub fn take_standing(&mut self, nets: StandingNets) {
        self.layout.standing = nets;
    }

    /// Puts the standing entries' networks in the table now, as one batch.
    pub fn put_standing(&mut self, nets: StandingNets) -> Result<(), NftError> {
        self.layout.standing = nets;
        let batch = self.layout.render_standing();
        timed(|| self.nft.apply(&batch))
    }

    /// Reads the table back; `None` when it is gone. Over netlink: the structure and the trusted
    /// sets from `nft` (small), the timeout sets' elements by netlink dumps. The time each element
    /// has left is told as of `now`: a listing of 100,000 elements takes the kernel a while, and
    /// each set is judged by when it was listed.
    pub fn observe(&mut self, now: UnixMs) -> Result<Option<Observed>, NftError> {
        let table = self.layout.table.clone();
        let Some(nl) = &mut self.netlink else {
            return match self.nft.list_table(&table)? {
                None => Ok(None),
                Some(json) => Observed::parse(&json).map(Some).map_err(NftError::Listing),
            };
        };
        let mut obs = match nl.structure(&table) {
            Ok(None) => return Ok(None),
            Ok(Some(found)) => Observed::from_structure(found),
            // `nft` reads the structure too, only slower.
            Err(e) => {
                tracing::debug!("read-back: {e}; listing the table with nft instead");
                let Some(json) = self.nft.list_table_terse(&table)? else {
                    return Ok(None);
                };
                Observed::parse(&json).map_err(NftError::Listing)?
            }
        };
        // The interval sets (trusted networks, standing entries) are small. Listed by netlink
        // like the rest: no `nft` is run on a pass, for every netfilter socket that closes holds
        // the kernel's commit lock through an RCU grace period, and grants wait behind it.
        let intervals: Vec<String> = [Family::V4, Family::V6]
            .map(render::trusted_set)
            .into_iter()
            .chain(self.layout.standing_sets().into_iter().map(|(n, _)| n))
            .filter(|n| obs.sets.contains_key(n))
            .collect();
        for name in intervals {
            match nl.list_intervals(&table, &name)? {
                Some(nets) => {
                    if let Some(set) = obs.sets.get_mut(&name) {
                        set.prefixes = nets;
                    }
                }
                None => drop(obs.sets.remove(&name)),
            }
        }
        // The kernel lists a set in pieces, walking it from the start for each: the time grows
        // with the square of its size (hence the shards). One set at a time, on one core: a
        // listing spread over both would leave none free, and a grant's threads woken meanwhile
        // would wait for the scheduler's tick to get one back.
        for set in self.layout.kernel_sets() {
            if !obs.sets.contains_key(&set.name) {
                continue;
            }
            match nl.list_set(&table, &set.name)? {
                Some(listing) => {
                    let lag = (crate::base::clock::now_ms() - now).max(0) as u64;
                    if let Some(found) = obs.sets.get_mut(&set.name) {
                        found.elems = listing
                            .into_iter()
                            .map(|(ip, left)| (ip, left.map(|ms| ((ms + lag) / 1000) as i64)))
                            .collect();
                    }
                }
                // Gone between the two looks: the compare finds it missing and rebuilds.
                None => drop(obs.sets.remove(&set.name)),
            }
        }
        Ok(Some(obs))
    }
}

impl Firewall {
    /// Packets responsive SIP dropped over its rate since the table was built, from its named
    /// counter; `None` when responsive SIP is off or nft cannot say.
    pub fn sip_rate_drops(&mut self) -> Option<u64> {
        self.layout.responsive.as_ref()?;
        // Over netlink when it is there: no `nft` run on a pass (see `observe`).
        if let Some(nl) = &mut self.netlink {
            return nl
                .counter(&self.layout.table, render::SIP_RATE_DROPS)
                .ok()
                .flatten();
        }
        let json = self
            .nft
            .list_counter(&self.layout.table, render::SIP_RATE_DROPS)
            .ok()??;
        let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
        v["nftables"]
            .as_array()?
            .iter()
            .find_map(|o| o["counter"]["packets"].as_u64())
    }

    /// Compares the table with `desired` without changing anything.
    pub fn compare(
        &mut self,
        desired: &Elements,
        now: UnixMs,
    ) -> Result<(Option<Observed>, TableState), NftError> {
        let obs = self.observe(now)?;
        let v = readback::compare(&self.layout, desired, obs.as_ref(), now);
        Ok((obs, v))
    }
}

#[cfg(test)]
mod firewall_tests;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::readback::{ObservedChain, ObservedSet};
    use super::render::{rule_comment, timeout_secs, trusted_set, CHAIN};
    use super::*;
    use crate::base::addr::Family;
    use crate::base::defaults;
    use crate::config::PortRange;
    use crate::model::Source;
    use std::collections::BTreeMap;

    const HOUR: i64 = 3_600_000;
    const W0: UnixMs = 1_795_248_830_000;

    fn layout() -> Layout {
        let p = |s: &str| s.parse::<PortRange>().unwrap();
        Layout::new(
            "passknock",
            vec![
                ("rtp".into(), vec![p("udp/10000-20000")]),
                ("sip".into(), vec![p("udp/5060")]),
            ],
            &[],
        )
    }

    fn grant(address: &str, expires: UnixMs) -> Grant {
        Grant {
            id: 1,
            address: address.parse().unwrap(),
            services: vec!["sip".into(), "rtp".into()],
            source: Source::Admin,
            who: "uid 0".into(),
            note: String::new(),
            created: W0,
            expires,
            hold_until: None,
            node: String::new(),
        }
    }

    fn ban(address: &str, expires: UnixMs) -> Ban {
        Ban {
            address: address.parse().unwrap(),
            reason: "test".into(),
            created: W0,
            expires,
        }
    }

    /// The table as the kernel would list it: our structure, and `elems` with the seconds each
    /// has left on the kernel's own (monotonic) clock.
    fn kernel(layout: &Layout, elems: &BTreeMap<ElemKey, i64>) -> Observed {
        let mut obs = Observed::default();
        for f in [Family::V4, Family::V6] {
            obs.sets.insert(trusted_set(f), ObservedSet::default());
        }
        for (name, _) in layout.standing_sets() {
            obs.sets.insert(name, ObservedSet::default());
        }
        for (name, f) in layout.dynamic_sets() {
            let set = ObservedSet {
                type_name: if f == Family::V4 { "ipv4_addr" } else { "ipv6_addr" }.into(),
                flags: vec!["timeout".into()],
                elems: elems
                    .iter()
                    .filter(|(k, _)| k.set == name)
                    .map(|(k, left)| (k.addr, Some(*left)))
                    .collect(),
                prefixes: vec![],
            };
            obs.sets.insert(name, set);
        }
        obs.chain = Some(ObservedChain {
            name: CHAIN.into(),
            kind: Some("filter".into()),
            hook: Some("input".into()),
            prio: Some(defaults::CHAIN_PRIORITY as i64),
            policy: Some("accept".into()),
        });
        let n = layout.rules().len();
        let fp = layout.fingerprint();
        obs.rule_comments = (0..n).map(|i| Some(rule_comment(&fp, i, n))).collect();
        obs
    }

    /// Every timeout a rebuild, a change batch and a reconcile would hand the kernel at `now`.
    fn rendered_timeouts(layout: &Layout, elems: &Elements, obs: &Observed, now: Now) -> Vec<u32> {
        let mut out = Vec::new();
        let table: serde_json::Value =
            serde_json::from_slice(&layout.render_table_json(elems, now.wall).unwrap()).unwrap();
        collect_timeouts(&table, &mut out);
        let changes = Changes {
            set: elems.iter().map(|(k, e)| (k.clone(), *e)).collect(),
            remove: vec![],
        };
        collect_timeouts(
            &serde_json::to_value(render::render_changes(layout, &changes, now.wall)).unwrap(),
            &mut out,
        );
        if let TableState::Fix(c) = readback::compare(layout, elems, Some(obs), now.wall) {
            out.extend(c.set.iter().map(|(_, end)| timeout_secs(*end, now.wall)));
        }
        out
    }

    fn collect_timeouts(v: &serde_json::Value, out: &mut Vec<u32>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(t) = m.get("timeout").and_then(|t| t.as_u64()) {
                    out.push(t as u32);
                }
                m.values().for_each(|v| collect_timeouts(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_timeouts(v, out)),
            _ => {}
        }
    }

    /// A 1 h grant and a 1 h ban, then the wall clock stepped 3 h back and, separately, 3 h
    /// forward a minute later: no timeout handed to the kernel exceeds the 59 minutes truly left,
    /// and a reconcile finds the kernel's own countdown right.
    #[test]
    fn a_wall_clock_step_never_lengthens_kernel_timeouts() {
        let l = layout();
        let grants = [grant("203.0.113.7", W0 + HOUR)];
        let bans = [ban("203.0.113.66", W0 + HOUR)];
        let t = Instant::now();
        for step in [-3 * HOUR, 3 * HOUR] {
            let mut clock = Clock::default();
            let start = Now { wall: W0, mono: t };
            let granted = desired(&l, &grants, &bans, &mut clock, start);
            assert_eq!(granted.len(), 3);
            assert!(granted.values().all(|end| timeout_secs(*end, W0) == 3600));
            // A minute on, the kernel has counted each element down to 59 minutes.
            let later = Now {
                wall: W0 + 60_000 + step,
                mono: t + Duration::from_secs(60),
            };
            let truly_left = 3540;
            let kernel_view: BTreeMap<ElemKey, i64> =
                granted.keys().map(|k| (k.clone(), truly_left)).collect();
            let obs = kernel(&l, &kernel_view);
            let now_wants = desired(&l, &grants, &bans, &mut clock, later);
            let timeouts = rendered_timeouts(&l, &now_wants, &obs, later);
            assert!(
                timeouts.iter().all(|t| i64::from(*t) <= truly_left),
                "step {step} ms: timeouts {timeouts:?} exceed {truly_left} s"
            );
            if step < 0 {
                assert!(!timeouts.is_empty());
                assert_eq!(
                    readback::compare(&l, &now_wants, Some(&obs), later.wall),
                    TableState::InSync
                );
            } else {
                // Over on the wall clock: the store ends it, and the reconcile takes it out.
                assert!(now_wants.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod gather_tests {
    use std::net::IpAddr;

    use super::desired::Gather;
    use super::*;
    use crate::config::PortRange;
    use crate::model::Source;

    /// Gathering a whole store per set gives what building it grant by grant gives: each element
    /// once at its latest end, dropped services opening nothing, bans and both families.
    #[test]
    fn gathering_equals_building_grant_by_grant() {
        let p = |s: &str| s.parse::<PortRange>().unwrap();
        let layout = Layout::new(
            "t",
            vec![
                ("rtp".into(), vec![p("udp/10000-20000")]),
                ("sip".into(), vec![p("udp/5060")]),
            ],
            &[],
        );
        let now = Now::read();
        let grant = |i: u32, services: &[&str], ends_in: i64| Grant {
            id: i64::from(i),
            address: if i.is_multiple_of(3) {
                IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, (i % 50) as u16])
            } else {
                IpAddr::from([10, 0, (i % 7) as u8, (i % 50) as u8])
            },
            services: services.iter().map(|s| s.to_string()).collect(),
            source: Source::Admin,
            who: String::new(),
            note: String::new(),
            created: now.wall,
            expires: now.wall + ends_in,
            hold_until: None,
            node: String::new(),
        };
        let grants: Vec<Grant> = (0..400u32)
            .map(|i| match i % 4 {
                0 => grant(i, &["sip"], 60_000 + i64::from(i)),
                1 => grant(i, &["sip", "rtp"], 90_000 - i64::from(i)),
                2 => grant(i, &["gone", "rtp"], 30_000),
                _ => grant(i, &["rtp"], 120_000 + i64::from(i % 11)),
            })
            .collect();
        let bans: Vec<Ban> = (0..20u8)
            .map(|i| Ban {
                address: IpAddr::from([192, 0, 2, i]),
                reason: String::new(),
                created: now.wall,
                expires: now.wall + 3_600_000,
            })
            .collect();
        let built = Desired::build(&layout, &grants, &bans, &mut Clock::default(), now);
        let mut g = Gather::new(&layout);
        for b in &bans {
            g.ban(b.address, b.expires);
        }
        for gr in &grants {
            g.grant(gr.address, gr.services.iter().map(String::as_str), gr.end());
        }
        let gathered = g.finish();
        assert_eq!(gathered, built);
        assert!(built.len() > 100);
    }
}
