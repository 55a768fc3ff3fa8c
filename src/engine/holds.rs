//! Holds: while a call from an address is up, its grants stay open past their expiry (at most
//! `ami.hold-max`); when its calls end, they end at their own expiry again.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::command::{Actor, Held, Refused, TableChange};
use super::ports::{Records, Table};
use super::Engine;
use crate::base::clock::{utc, Now, UnixMs};
use crate::model::{Event, Grant, Kind};
use crate::observe::audit;

impl<R: Records, T: Table> Engine<R, T> {
    /// A call is up from `ip`: each live grant of `ip` lasts until at least `until`, but at most
    /// `ami.hold-max` past its own expiry. Writes nothing while every grant outlives `until` anyway,
    /// so a renewal costs a store write and an nft run only when a TTL is near.
    pub(super) fn hold(
        &mut self,
        ip: IpAddr,
        until: UnixMs,
        actor: &Actor,
        now: Now,
    ) -> Result<Held, Refused> {
        let max = self.config.ami.hold_max.0.as_millis() as i64;
        let grants = self
            .store
            .grants_for(ip, now.wall)
            .map_err(|e| Refused(format!("not held: {e}")))?;
        let new_end = |g: &Grant| g.expires.max(until.min(g.expires + max));
        let changes = grants.iter().any(|g| new_end(g) != g.end());
        let mut applied = TableChange::default();
        if changes {
            self.store
                .hold_capped(ip, until, max, now.wall)
                .map_err(|e| Refused(format!("not held: {e}")))?;
            applied = self.refresh_addresses(&BTreeSet::from([ip]), &[], now);
            let end = grants.iter().map(new_end).max().unwrap_or(now.wall);
            audit::record(
                Event::new(Kind::Hold, now.wall)
                    .address(ip)
                    .who(actor.who.as_str())
                    .source(actor.source)
                    .detail(format!("until={} (call up)", utc(end))),
            );
        }
        Ok(Held {
            address: ip,
            grants: grants.len(),
            end: grants
                .iter()
                .map(|g| if changes { new_end(g) } else { g.end() })
                .max(),
            firewall: applied,
        })
    }

    /// `ip`'s calls ended: its grants end at their own expiry again, and those already past it end
    /// now.
    pub(super) fn release(&mut self, ip: IpAddr, actor: &Actor, now: Now) -> Result<Held, Refused> {
        let released = self
            .store
            .release(ip)
            .map_err(|e| Refused(format!("not released: {e}")))?;
        let mut applied = TableChange::default();
        if released > 0 {
            audit::record(
                Event::new(Kind::Release, now.wall)
                    .address(ip)
                    .who(actor.who.as_str())
                    .source(actor.source)
                    .detail("(calls ended)"),
            );
            // Grants whose TTL passed during the call go now; the rest get their shorter timeout.
            self.expire(now);
            if self.store.grants_for(ip, now.wall).is_ok_and(|g| !g.is_empty()) {
                applied = self.refresh_addresses(&BTreeSet::from([ip]), &[], now);
            }
        }
        let live = self.store.grants_for(ip, now.wall).unwrap_or_default();
        Ok(Held {
            address: ip,
            grants: live.len(),
            end: live.iter().map(Grant::end).max(),
            firewall: applied,
        })
    }
}
