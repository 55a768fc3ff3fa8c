//! The nftables backend: the table is declared (`Layout` + elements), rendered by pure functions,
//! applied as one atomic batch, and read back to reconcile.

pub mod readback;
pub mod render;
pub mod runner;

use std::collections::BTreeMap;

pub use readback::{Observed, Verdict};
pub use render::{allow_set, ban_set, Changes, ElemKey, Elements, Layout};
pub use runner::{Nft, NftError};

use crate::addr::Family;
use crate::store::{Ban, Grant, UnixMs};

/// The elements the store wants: every live grant's services, every live ban; an element ends at
/// the latest end among the grants that ask for it.
pub fn desired<'a>(layout: &Layout, grants: impl IntoIterator<Item = &'a Grant>, bans: &[Ban]) -> Elements {
    let mut out: Elements = BTreeMap::new();
    for g in grants {
        for svc in &g.services {
            // A grant can name a service the config has since dropped; it opens nothing.
            if layout.has_service(svc) {
                let k = ElemKey {
                    set: allow_set(svc, Family::of(&g.address)),
                    addr: g.address,
                };
                let e = out.entry(k).or_insert(0);
                *e = (*e).max(g.end());
            }
        }
    }
    for b in bans {
        let k = ElemKey {
            set: ban_set(Family::of(&b.address)),
            addr: b.address,
        };
        out.insert(k, b.expires);
    }
    out
}

/// Adds one grant's elements (address, comma-separated services, end) to `out`.
pub fn add_grant(
    layout: &Layout,
    out: &mut Elements,
    address: std::net::IpAddr,
    services: &str,
    end: UnixMs,
) {
    for svc in services.split(',') {
        if layout.has_service(svc) {
            let k = ElemKey {
                set: allow_set(svc, Family::of(&address)),
                addr: address,
            };
            let e = out.entry(k).or_insert(0);
            *e = (*e).max(end);
        }
    }
}

/// Runs one nft apply and records how long it took.
fn timed(apply: impl FnOnce() -> Result<(), NftError>) -> Result<(), NftError> {
    let t = std::time::Instant::now();
    let r = apply();
    crate::metrics::METRICS.nft_apply(t.elapsed(), r.is_ok());
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

/// The daemon's table: a layout and the `nft` program that applies it.
pub struct Firewall {
    nft: Nft,
    layout: Layout,
}

impl Firewall {
    pub fn new(nft: Nft, layout: Layout) -> Firewall {
        Firewall { nft, layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A new layout (after a config reload); the next reconcile rebuilds the table to match.
    pub fn set_layout(&mut self, layout: Layout, nft: Nft) {
        self.layout = layout;
        self.nft = nft;
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

    /// Reads the table back; `None` when it is gone.
    pub fn observe(&self) -> Result<Option<Observed>, NftError> {
        match self.nft.list_table(&self.layout.table)? {
            None => Ok(None),
            Some(json) => Observed::parse(&json).map(Some).map_err(NftError::Listing),
        }
    }

    /// Compares the table with `desired` without changing anything.
    pub fn compare(&self, desired: &Elements, now: UnixMs) -> Result<(Option<Observed>, Verdict), NftError> {
        let obs = self.observe()?;
        let v = readback::compare(&self.layout, desired, obs.as_ref(), now);
        Ok((obs, v))
    }

    /// Brings the table in line with `desired`: re-creates it if gone or altered, re-adds missing
    /// elements, removes ones the store does not know.
    pub fn reconcile(&self, desired: &Elements, now: UnixMs) -> Result<Reconciled, NftError> {
        match self.compare(desired, now)?.1 {
            Verdict::InSync => Ok(Reconciled::InSync),
            Verdict::Fix(c) => {
                self.change(&c, now)?;
                Ok(Reconciled::Fixed {
                    set: c.set.len(),
                    removed: c.remove.len(),
                })
            }
            Verdict::Rebuild(reason) => {
                self.rebuild(desired, now)?;
                Ok(Reconciled::Rebuilt {
                    reason,
                    elements: desired.len(),
                })
            }
        }
    }
}
