//! The nftables backend: the table is declared (`Layout` + elements), rendered by pure functions,
//! applied as one atomic batch, and read back to reconcile.

pub mod changes;
pub mod desired;
pub mod readback;
pub mod render;
pub mod runner;
pub mod standing;

pub use desired::{ban_key, lift_bans, Desired};
pub use readback::{Observed, TableState};
pub use render::{allow_set, ban_set, Changes, ElemKey, Elements, Layout};
pub use runner::{Nft, NftError};
pub use standing::{standing_nets, StandingNets};

use crate::base::clock::UnixMs;
use crate::base::clock::{Clock, Now};
use crate::config::{Config, ElementPath};
use crate::model::{Ban, Grant};

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
/// thread another for its listings and rebuilds.
pub struct Firewall {
    nft: Nft,
    layout: Layout,
    path: ElementPath,
}

impl Firewall {
    pub fn from_config(config: &Config) -> Firewall {
        Firewall {
            nft: Nft::new(&config.firewall.nft),
            layout: Layout::from_config(config),
            path: config.firewall.elements,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A reloaded config's layout, program and path; the next reconcile rebuilds to match.
    pub fn reconfigure(&mut self, config: &Config) {
        // The standing entries are the store's: a new config keeps them.
        let standing = std::mem::take(&mut self.layout.standing);
        self.layout = Layout::from_config(config);
        self.layout.standing = standing;
        self.nft = Nft::new(&config.firewall.nft);
        self.path = config.firewall.elements;
    }

    /// How element changes reach the kernel, in words.
    pub fn path(&self) -> String {
        match self.path {
            ElementPath::Nft => "nft (firewall.elements = \"nft\")".into(),
            ElementPath::Netlink => "nft".into(),
        }
    }

    /// Builds the whole table with these elements, atomically.
    pub fn rebuild(&self, elements: &Elements, now: UnixMs) -> Result<(), NftError> {
        let json = self.layout.render_table_json(elements, now)?;
        timed(|| self.nft.apply_json(&json))
    }

    /// Applies element changes as one batch.
    pub fn change(&self, changes: &Changes, now: UnixMs) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
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

    /// Reads the table back; `None` when it is gone.
    pub fn observe(&self) -> Result<Option<Observed>, NftError> {
        match self.nft.list_table(&self.layout.table)? {
            None => Ok(None),
            Some(json) => Observed::parse(&json).map(Some).map_err(NftError::Listing),
        }
    }

    /// Compares the table with `desired` without changing anything.
    pub fn compare(
        &self,
        desired: &Elements,
        now: UnixMs,
    ) -> Result<(Option<Observed>, TableState), NftError> {
        let obs = self.observe()?;
        let v = readback::compare(&self.layout, desired, obs.as_ref(), now);
        Ok((obs, v))
    }
}

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
