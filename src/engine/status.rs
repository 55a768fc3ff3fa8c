//! What the engine reports: the live grants and bans, and the table's state against the store.

use super::command::{Listing, Refused, TableStatus};
use super::ports::{Records, Table};
use super::upkeep::give_back_memory;
use super::{refused, Engine};
use crate::base::clock::Now;
use crate::nft::TableState;

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

    /// Reads the table back and compares it with what the store wants, changing nothing.
    pub(super) fn status(&mut self, now: Now) -> Result<TableStatus, Refused> {
        let desired = self.desired_now(now).map_err(refused)?;
        let (present, in_sync, detail, elements) = match self.firewall.compare(&desired, now.wall) {
            Ok(c) => {
                let detail = match &c.verdict {
                    TableState::InSync => String::new(),
                    TableState::Fix(changes) => format!(
                        "{} element(s) to set, {} to remove",
                        changes.set.len(),
                        changes.remove.len()
                    ),
                    TableState::Rebuild(why) => why.clone(),
                };
                (c.present, c.verdict == TableState::InSync, detail, c.elements)
            }
            Err(e) => (false, false, e.to_string(), 0),
        };
        drop(desired);
        give_back_memory();
        let (grants, bans) = self.store.counts().unwrap_or((0, 0));
        let layout = self.firewall.layout();
        Ok(TableStatus {
            table: format!("inet {}", layout.table),
            table_present: present,
            in_sync,
            sync_detail: detail,
            grants,
            bans,
            elements,
            services: layout.services.iter().map(|(n, _)| n.clone()).collect(),
            store: self.store.path().to_path_buf(),
            last_reconcile: self.last_reconcile,
            firewall_error: self.firewall_error.clone(),
            now: now.wall,
        })
    }
}
