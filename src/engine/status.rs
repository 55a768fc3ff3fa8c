//! What the engine reports: the live grants and bans, and the table's state against the store.

use super::command::{Listing, Refused, Reply, TableStatus};
use super::ports::{Records, Table};
use super::{refused, Engine};
use crate::base::clock::Now;

impl<R: Records, T: Table> Engine<R, T> {
    pub(super) fn list(&self, limit: Option<usize>, now: Now) -> Result<Listing, Refused> {
        let grants = self.store.first_live_grants(now.wall, limit).map_err(refused)?;
        let bans = self.store.first_live_bans(now.wall, limit).map_err(refused)?;
        Ok(Listing {
            now: now.wall,
            grants,
            bans,
        })
    }

    /// What the engine knows at once (counts, the last reconcile, the last error); the
    /// read-back's thread then compares the table with the store and answers the asker, so the
    /// engine never lists the table itself.
    pub(super) fn status(&mut self, reply: Reply<TableStatus>, now: Now) {
        let (grants, bans) = match self.store.counts() {
            Ok(c) => c,
            // A shared store that is away: the rest of the status still says what this node has.
            Err(_) if self.store.shared() => (0, 0),
            Err(e) => {
                let _ = reply.send(Err(refused(e)));
                return;
            }
        };
        let (standing, names) = match self.store.standing() {
            Ok((entries, names)) => (entries.len() as u64, names),
            Err(_) => (0, Vec::new()),
        };
        let layout = self.firewall.layout();
        let status = TableStatus {
            table: format!("inet {}", layout.table),
            table_present: false,
            in_sync: false,
            sync_detail: String::new(),
            grants,
            bans,
            elements: 0,
            services: layout.services.iter().map(|(n, _)| n.clone()).collect(),
            store: self.store.path().to_path_buf(),
            last_reconcile: self.last_reconcile,
            firewall_error: self.firewall_error.clone(),
            firewall_path: self.firewall.path(),
            now: now.wall,
            standing,
            names,
            sip_door: layout.sip_door_summary(),
            sip_rate_drops: None,
            cluster: self.store.cluster().map(|mut c| {
                c.pending_bans = self.held_ban_count();
                c
            }),
        };
        self.kick_check(status, reply, now);
    }
}
