//! The store the daemon opens, on either backend: SQLite on one box, PostgreSQL shared by a
//! cluster; each method does the same on both.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use super::pg::PgStore;
use super::{GrantWrite, GrantsWritten, Location, Store, StoreError, UnixMs};
use crate::model::{Account, Ban, Grant, NameState, NewGrant, Source, StandingEntry};

/// The store on its backend, chosen by `[daemon] store`.
pub enum Db {
    Lite(Store),
    Pg(PgStore),
}

/// The same call on whichever backend this is.
macro_rules! each {
    ($db:expr, $s:ident => $call:expr) => {
        match $db {
            Db::Lite($s) => $call,
            Db::Pg($s) => $call,
        }
    };
}

impl Db {
    /// Opens (creating if needed) the store at `location`. On PostgreSQL this also moves the
    /// clock onto the database server's and registers this node.
    pub fn open(location: &Location) -> Result<Db, StoreError> {
        Ok(match location {
            Location::File(path) => Db::Lite(Store::open(path)?),
            Location::Postgres(target) => Db::Pg(PgStore::open(target)?),
        })
    }

    /// A second connection, for a thread of its own (the table's read-back).
    pub fn reader(&self) -> Result<Db, StoreError> {
        Ok(match self {
            Db::Lite(s) => Db::Lite(s.reader()?),
            Db::Pg(s) => Db::Pg(s.reader()?),
        })
    }

    /// Where it is, to open more connections to it (side tables, history).
    pub fn location(&self) -> Location {
        match self {
            Db::Lite(s) => Location::File(s.path().to_path_buf()),
            Db::Pg(s) => Location::Postgres(s.target().clone()),
        }
    }

    /// Where it is, for `status`: the file, or the URL without any password.
    pub fn path(&self) -> &Path {
        each!(self, s => s.path())
    }

    /// "SQLite" or "PostgreSQL", for `status` and `doctor`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Lite(_) => "SQLite",
            Db::Pg(_) => "PostgreSQL",
        }
    }

    /// This node's name in a cluster; `None` on one box.
    pub fn node(&self) -> Option<&str> {
        match self {
            Db::Lite(_) => None,
            Db::Pg(s) => Some(s.node()),
        }
    }

    /// The shared store's clock minus ours in ms, as measured at open; 0 on one box.
    pub fn clock_offset(&self) -> i64 {
        match self {
            Db::Lite(_) => 0,
            Db::Pg(s) => s.clock_offset(),
        }
    }

    /// Marks this node alive (a cluster's `status` lists the last sign of life); nothing on one box.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        match self {
            Db::Lite(_) => Ok(()),
            Db::Pg(s) => s.heartbeat(),
        }
    }

    /// Whether the store is reachable as of its last call: always on one box.
    pub fn connected(&self) -> bool {
        match self {
            Db::Lite(_) => true,
            Db::Pg(s) => s.connected(),
        }
    }

    /// The link the follower keeps up to date; `None` on one box.
    pub fn link(&self) -> Option<std::sync::Arc<super::pg::Link>> {
        match self {
            Db::Lite(_) => None,
            Db::Pg(s) => Some(s.link()),
        }
    }

    /// This node, the database, the link and every node; `None` on one box.
    pub fn cluster(&self) -> Option<crate::model::ClusterView> {
        match self {
            Db::Lite(_) => None,
            Db::Pg(s) => Some(s.cluster()),
        }
    }

    /// The cluster's nodes and their last sign of life, by name; none on one box.
    pub fn nodes(&self) -> Result<Vec<(String, UnixMs)>, StoreError> {
        match self {
            Db::Lite(_) => Ok(Vec::new()),
            Db::Pg(s) => s.nodes(),
        }
    }

    /// "ok" when the store is sound, else what is wrong.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        each!(self, s => s.integrity_check())
    }

    pub fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        each!(self, s => s.prune(now))
    }

    pub fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        each!(self, s => s.next_end())
    }

    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        each!(self, s => s.counts())
    }

    // Grants.

    pub fn insert_grants(&mut self, new: &[NewGrant], now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.insert_grants(new, now))
    }

    pub fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError> {
        each!(self, s => s.write_grants(w, now))
    }

    pub fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.grants_of(who, source, now))
    }

    pub fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.revoke(address))
    }

    pub fn hold(&mut self, address: IpAddr, until: UnixMs, now: UnixMs) -> Result<usize, StoreError> {
        each!(self, s => s.hold(address, until, now))
    }

    pub fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        each!(self, s => s.hold_capped(address, until, max_past, now))
    }

    pub fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        each!(self, s => s.release(address))
    }

    pub fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.grants_for(address, now))
    }

    pub fn live_grants(&self, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.live_grants(now))
    }

    pub fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError> {
        each!(self, s => s.first_live_grants(now, limit))
    }

    pub fn for_each_live(&self, now: UnixMs, f: impl FnMut(IpAddr, &str, UnixMs)) -> Result<(), StoreError> {
        each!(self, s => s.for_each_live(now, f))
    }

    // Bans.

    pub fn ban(
        &mut self,
        address: IpAddr,
        reason: &str,
        expires: UnixMs,
        now: UnixMs,
    ) -> Result<Ban, StoreError> {
        each!(self, s => s.ban(address, reason, expires, now))
    }

    pub fn ban_many(
        &mut self,
        bans: &[(IpAddr, String, UnixMs)],
        now: UnixMs,
    ) -> Result<Vec<Ban>, StoreError> {
        each!(self, s => s.ban_many(bans, now))
    }

    pub fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        each!(self, s => s.unban(address))
    }

    pub fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        each!(self, s => s.ban_of(address))
    }

    pub fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        each!(self, s => s.live_bans(now))
    }

    pub fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        each!(self, s => s.first_live_bans(now, limit))
    }

    // Accounts.

    pub fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        each!(self, s => s.add_account(a, tag))
    }

    pub fn account_by_tag(&self, tag: &[u8; 32]) -> Result<Option<(Account, [u8; 32])>, StoreError> {
        each!(self, s => s.account_by_tag(tag))
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        each!(self, s => s.account(name))
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        each!(self, s => s.accounts())
    }

    pub fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.set_passcode(name, tag, digits, now))
    }

    pub fn passcode_lengths(&self) -> Result<Vec<Option<usize>>, StoreError> {
        each!(self, s => s.passcode_lengths())
    }

    pub fn data_version(&self) -> Result<i64, StoreError> {
        each!(self, s => s.data_version())
    }

    pub fn owner_numbers(&self) -> Result<HashSet<String>, StoreError> {
        each!(self, s => s.owner_numbers())
    }

    pub fn is_owner_number(&self, number: &str) -> Result<bool, StoreError> {
        each!(self, s => s.is_owner_number(number))
    }

    pub fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        each!(self, s => s.set_callers(name, callers))
    }

    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        each!(self, s => s.set_disabled(name, disabled))
    }

    pub fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        each!(self, s => s.remove_account(name))
    }

    // Standing entries.

    pub fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError> {
        each!(self, s => s.add_standing(e))
    }

    pub fn standing(&self) -> Result<Vec<StandingEntry>, StoreError> {
        each!(self, s => s.standing())
    }

    pub fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError> {
        each!(self, s => s.remove_standing(name))
    }

    pub fn names(&self) -> Result<Vec<NameState>, StoreError> {
        each!(self, s => s.names())
    }

    pub fn put_name(&mut self, n: &NameState) -> Result<(), StoreError> {
        each!(self, s => s.put_name(n))
    }

    pub fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError> {
        each!(self, s => s.forget_names(keep))
    }

    pub fn standing_count(&self) -> Result<u64, StoreError> {
        each!(self, s => s.standing_count())
    }
}
