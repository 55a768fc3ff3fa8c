//! Following a store other nodes share: their changes put in this node's table, and the bans
//! this node made while the database was away, written up once it is back.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{info, warn};

use super::ports::{Records, Table};
use super::Engine;
use crate::base::clock::Now;
use crate::model::Ban;

impl<R: Records, T: Table> Engine<R, T> {
    /// Another node changed `addresses` (`None`: anything may have, or this node was away): the
    /// bans held back are written first, then those addresses, or the whole table, are put in
    /// line with the store.
    pub(super) fn remote(&mut self, addresses: Option<Vec<IpAddr>>, now: Now) {
        self.write_up_bans(now);
        match addresses {
            Some(a) => {
                let addrs: BTreeSet<IpAddr> = a.into_iter().collect();
                self.refresh_whole(&addrs, now);
            }
            None => self.kick_repair(now),
        }
        self.counts_stale = true;
    }

    /// Keeps bans the shared store could not take: they are in this node's table already.
    pub(super) fn hold_back_bans(&mut self, bans: &[Ban]) {
        for b in bans {
            self.held_bans.retain(|h| h.address != b.address);
            self.held_bans.push(b.clone());
        }
    }

    /// Writes the held-back bans to the store, when it takes them; the rest wait for the next try.
    fn write_up_bans(&mut self, now: Now) {
        if self.held_bans.is_empty() {
            return;
        }
        let rows: Vec<_> = self
            .held_bans
            .iter()
            .filter(|b| b.expires > now.wall)
            .map(|b| (b.address, b.reason.clone(), b.expires))
            .collect();
        match self.store.ban_many(&rows, now.wall) {
            Ok(written) => {
                info!(
                    "{} ban(s) made while the shared store was away are written up",
                    written.len()
                );
                self.held_bans.clear();
            }
            Err(e) => warn!(
                "{} ban(s) made while the shared store was away still wait: {e}",
                self.held_bans.len()
            ),
        }
    }

    /// How many bans wait to be written up, for `status`.
    pub(super) fn held_ban_count(&self) -> usize {
        self.held_bans.len()
    }
}
