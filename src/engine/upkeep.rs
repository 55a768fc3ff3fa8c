//! Keeping the table in line with the store: element changes after each write, expiry of what
//! ended, the periodic repair pass (run by the read-back's thread) and what the engine does with
//! its outcome, and the retry after the kernel refused a change.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{debug, info, warn};

use super::checker::{Checked, PassKind, PassOutcome, PassRequest};
use super::command::{Reloaded, TableChange};
use super::ports::{Records, Table};
use super::Engine;
use crate::base::clock::Now;
use crate::base::defaults;
use crate::base::duration::human;
use crate::base::lock::lock;
use crate::model::{Event, Grant, Kind};
use crate::nft::{self, Changes, Desired, Reconciled};
use crate::observe::audit;

impl<R: Records, T: Table> Engine<R, T> {
    /// The whole table the store wants at `now`.
    #[cfg(test)]
    pub(super) fn desired_now(&mut self, now: Now) -> Result<Desired, crate::store::StoreError> {
        super::checker::desired(&self.store, self.firewall.layout(), &self.clock, now)
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
            let want = Desired::build(layout, &live, &[], &mut lock(&self.clock), now);
            changes = nft::desired::merge(changes, want.changes_for(layout, *ip, gone));
        }
        self.apply(changes, now)
    }

    /// Puts each address's every element (its services' and its ban) in line with the store:
    /// after a rebuild from a snapshot those addresses may have changed since.
    pub(super) fn refresh_whole(&mut self, addrs: &BTreeSet<IpAddr>, now: Now) -> TableChange {
        let mut changes = Changes::default();
        for ip in addrs {
            let (live, ban) = match (self.store.grants_for(*ip, now.wall), self.store.ban_of(*ip)) {
                (Ok(l), Ok(b)) => (l, b.filter(|b| b.expires > now.wall)),
                (Err(e), _) | (_, Err(e)) => return self.note_firewall(Err(e.to_string()), now),
            };
            let layout = self.firewall.layout();
            let want = Desired::build(layout, &live, ban.as_slice(), &mut lock(&self.clock), now);
            changes = nft::desired::merge(changes, want.whole_changes_for(layout, *ip));
        }
        self.apply(changes, now)
    }

    /// Applies element changes; a failure is recorded and retried (see `note_firewall`).
    pub(super) fn apply(&mut self, changes: Changes, now: Now) -> TableChange {
        if let Some(t) = &mut self.touched {
            t.extend(changes.set.iter().map(|(k, _)| k.addr));
            t.extend(changes.remove.iter().map(|k| k.addr));
        }
        let r = self
            .firewall
            .change(&changes, now.wall)
            .map_err(|e| e.to_string());
        self.note_firewall(r, now)
    }

    /// Records an nft failure and schedules a retry: the store has the change, the table will.
    pub(super) fn note_firewall(&mut self, r: Result<(), String>, now: Now) -> TableChange {
        match r {
            Ok(()) => TableChange::default(),
            Err(e) => {
                warn!(
                    "firewall not updated, retrying in {}: {e}",
                    human(self.retry_delay)
                );
                self.firewall_error = Some(e.clone());
                self.next_reconcile = self.next_reconcile.min(now.mono + self.retry_delay);
                // A repair pass running now leaves this address alone: have another follow it.
                if self.touched.is_some() {
                    self.repair_again = true;
                }
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
        self.counts_stale = true;
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

    /// Asks the read-back's thread for a repair pass, unless one is running (then one more
    /// follows it). Until it comes back, the engine notes the addresses it changes.
    pub(super) fn kick_repair(&mut self, now: Now) {
        if self.touched.is_some() {
            self.repair_again = true;
            return;
        }
        lock(&self.clock).forget_ended(now);
        self.touched = Some(BTreeSet::new());
        self.pass_started = Some(now.mono);
        self.repair_again = false;
        self.reloads_running.append(&mut self.reloads_next);
        // No second repair is due while this one runs; its outcome sets the next.
        self.next_reconcile = now.mono + self.config.daemon.reconcile_interval.0;
        self.passes.push(PassRequest {
            config: self.config.clone(),
            now,
            kind: PassKind::Repair,
        });
    }

    /// Asks the read-back's thread to look (for `status`), which answers the asker itself.
    pub(super) fn kick_check(
        &mut self,
        status: super::TableStatus,
        reply: super::command::Reply<super::TableStatus>,
        now: Now,
    ) {
        self.passes.push(PassRequest {
            config: self.config.clone(),
            now,
            kind: PassKind::Check(Box::new(status), reply),
        });
    }

    /// A repair pass came back: applies its fixes (leaving alone what the engine changed while it
    /// ran), or after its rebuild puts those addresses right again. On failure, retries with a
    /// growing delay.
    pub(super) fn checked(&mut self, outcome: PassOutcome, now: Now) -> Result<Reconciled, String> {
        let touched = self.touched.take().unwrap_or_default();
        self.pass_started = None;
        let interval = self.config.daemon.reconcile_interval.0;
        let result = match outcome.result {
            Ok(Checked::InSync) => Ok(Reconciled::InSync),
            Ok(Checked::Fix(mut changes)) => {
                changes.set.retain(|(k, _)| !touched.contains(&k.addr));
                changes.remove.retain(|k| !touched.contains(&k.addr));
                let (set, removed) = (changes.set.len(), changes.remove.len());
                match self.apply(changes, now).error {
                    None => Ok(Reconciled::Fixed { set, removed }),
                    Some(e) => Err(e),
                }
            }
            // The rebuild came from the store as it was when the pass began: the addresses
            // changed since, and the standing entries (added or removed meanwhile), are put right.
            Ok(Checked::Rebuilt { reason, elements }) => {
                let standing = self.refresh_standing(now).error;
                match self.refresh_whole(&touched, now).error.or(standing) {
                    None => Ok(Reconciled::Rebuilt { reason, elements }),
                    Some(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(r) => {
                match r {
                    Reconciled::InSync => debug!("reconcile: table in sync"),
                    Reconciled::Fixed { set: 0, removed: 0 } => {
                        debug!("reconcile: what differed was changed meanwhile")
                    }
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
        for reply in self.reloads_running.drain(..) {
            let _ = reply.send(Ok(Reloaded {
                table: result.clone(),
            }));
        }
        if self.repair_again {
            self.kick_repair(now);
        }
        result
    }
}
