//! Keeping the table in line with the store: element changes after each write, expiry of what
//! ended, the periodic reconcile, and the retry after nft refused a change.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{debug, info, warn};

use super::command::TableChange;
use super::ports::{Records, Table};
use super::Engine;
use crate::base::clock::Now;
use crate::base::defaults;
use crate::base::duration::human;
use crate::model::{Event, Grant, Kind};
use crate::nft::{self, Changes, Desired, Reconciled};
use crate::observe::audit;
use crate::store::StoreError;

impl<R: Records, T: Table> Engine<R, T> {
    /// The whole table the store wants at `now`.
    pub(super) fn desired_now(&mut self, now: Now) -> Result<Desired, StoreError> {
        let bans = self.store.live_bans(now.wall)?;
        let layout = self.firewall.layout();
        let clock = &mut self.clock;
        let mut out = Desired::build(layout, [], &bans, clock, now);
        self.store.for_each_live(now.wall, &mut |ip, services, end| {
            out.add_grant(layout, ip, services.split(','), end, clock, now)
        })?;
        Ok(out)
    }

    /// Sets each address's allow elements to what its live grants want, and removes the elements
    /// of the `gone` grants that no live grant wants any more.
    pub(super) fn refresh_addresses(
        &mut self,
        addrs: &BTreeSet<IpAddr>,
        gone: &[Grant],
        now: Now,
    ) -> TableChange {
        let mut changes = Changes::default();
        for ip in addrs {
            let live = match self.store.grants_for(*ip, now.wall) {
                Ok(l) => l,
                Err(e) => return self.note_firewall(Err(e.to_string()), now),
            };
            let layout = self.firewall.layout();
            let want = Desired::build(layout, &live, &[], &mut self.clock, now);
            changes = nft::desired::merge(changes, want.changes_for(layout, *ip, gone));
        }
        self.apply(changes, now)
    }

    /// Applies element changes; a failure is recorded and retried (see `note_firewall`).
    pub(super) fn apply(&mut self, changes: Changes, now: Now) -> TableChange {
        let r = self
            .firewall
            .change(&changes, now.wall)
            .map_err(|e| e.to_string());
        self.note_firewall(r, now)
    }

    /// Records an nft failure and schedules a retry: the store has the change, the table will.
    fn note_firewall(&mut self, r: Result<(), String>, now: Now) -> TableChange {
        match r {
            Ok(()) => TableChange::default(),
            Err(e) => {
                warn!(
                    "firewall not updated, retrying in {}: {e}",
                    human(self.retry_delay)
                );
                self.firewall_error = Some(e.clone());
                self.next_reconcile = self.next_reconcile.min(now.mono + self.retry_delay);
                TableChange { error: Some(e) }
            }
        }
    }

    /// Ends what is due: store rows go, and their elements go from the table now (the kernel's
    /// own timeout, rounded up to a second, is only the backstop).
    pub(super) fn expire(&mut self, now: Now) {
        let (grants, bans) = match self.store.prune(now.wall) {
            Ok(x) => x,
            Err(e) => {
                warn!("cannot prune the store: {e}");
                return;
            }
        };
        for g in &grants {
            audit::record(
                Event::new(Kind::GrantEnded, now.wall)
                    .address(g.address)
                    .who(g.who.as_str())
                    .source(g.source)
                    .detail(format!("services={}", g.services.join(","))),
            );
        }
        for b in &bans {
            audit::record(
                Event::new(Kind::BanEnded, now.wall)
                    .address(b.address)
                    .detail(format!("reason={:?}", b.reason)),
            );
        }
        if grants.is_empty() && bans.is_empty() {
            return;
        }
        self.publish_counts();
        let addrs: BTreeSet<IpAddr> = grants.iter().map(|g| g.address).collect();
        let mut applied = self.refresh_addresses(&addrs, &grants, now);
        if !bans.is_empty() {
            applied = self.apply(nft::lift_bans(bans.iter().map(|b| b.address)), now);
        }
        debug!(
            "expired {} grant(s), {} ban(s); firewall error: {:?}",
            grants.len(),
            bans.len(),
            applied.error
        );
    }

    /// Reads the table back and fixes it. On failure, retries with a growing delay.
    pub fn reconcile(&mut self, now: Now) -> Result<Reconciled, String> {
        self.clock.forget_ended(now);
        let interval = self.config.daemon.reconcile_interval.0;
        let result = self
            .desired_now(now)
            .map_err(|e| e.to_string())
            .and_then(|d| self.firewall.reconcile(&d, now.wall).map_err(|e| e.to_string()));
        give_back_memory();
        match &result {
            Ok(r) => {
                match r {
                    Reconciled::InSync => debug!("reconcile: table in sync"),
                    Reconciled::Fixed { .. } => warn!("reconcile: table had drifted from the store; {r}"),
                    Reconciled::Rebuilt { .. } => info!("reconcile: table {r}"),
                }
                self.last_reconcile = Some(now.wall);
                self.firewall_error = None;
                self.retry_delay = defaults::RETRY_FIRST;
                self.next_reconcile = now.mono + interval;
            }
            Err(e) => {
                warn!(
                    "reconcile failed, the previous table stays; retrying in {}: {e}",
                    human(self.retry_delay)
                );
                self.firewall_error = Some(e.clone());
                self.next_reconcile = now.mono + self.retry_delay;
                self.retry_delay = (self.retry_delay * 2).min(interval);
            }
        }
        result
    }
}

/// A reconcile of 100,000 grants builds tens of megabytes that are dropped right after; hand
/// them back to the OS rather than keep the peak as the daemon's size for good.
pub(super) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
