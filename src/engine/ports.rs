//! What the engine needs from the store and from the firewall, as two traits: the daemon plugs
//! in the store (SQLite or PostgreSQL, one `Db`) and nft, the engine's unit tests plug in the
//! in-memory fakes of `fakes.rs`.

use std::net::IpAddr;
use std::path::Path;

use crate::base::clock::UnixMs;
use crate::config::Config;
use crate::model::{Account, Ban, ClusterView, Grant, NameState, Source, StandingEntry};
use crate::nft::{Changes, Elements, Firewall, Layout, NftError, StandingNets, TableState};
use crate::store::{Db, GrantWrite, GrantsWritten, StoreError};

/// What the table's read-back needs from the store: every live grant and ban. A second
/// connection implements it on the read-back's own thread.
pub trait LiveRead {
    /// `f(address, services joined by commas, end)` for every live grant, without building them.
    fn for_each_live(&self, now: UnixMs, f: &mut dyn FnMut(IpAddr, &str, UnixMs)) -> Result<(), StoreError>;
    fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError>;
    /// Every standing entry and the state of every name they hold.
    fn standing(&self) -> Result<(Vec<StandingEntry>, Vec<NameState>), StoreError> {
        Ok((Vec::new(), Vec::new()))
    }
}

/// The expiry store as the engine uses it: grants, bans and accounts, each write durable when it
/// returns.
pub trait Records: LiveRead {
    /// Where it lives, for `status`.
    fn path(&self) -> &Path;
    /// Ends, extends and inserts grants in one transaction.
    fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError>;
    /// Live grants `who` was given through `source`, oldest first.
    fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError>;
    /// Removes every grant of `address`; returns them.
    fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError>;
    /// Holds `address`'s live grants until `until`, never more than `max_past` ms past their expiry.
    fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError>;
    /// Drops `address`'s holds; returns how many grants had one.
    fn release(&mut self, address: IpAddr) -> Result<usize, StoreError>;
    fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError>;
    fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError>;
    /// Sets or replaces every ban (address, reason, expiry) in one transaction.
    fn ban_many(&mut self, bans: &[(IpAddr, String, UnixMs)], now: UnixMs) -> Result<Vec<Ban>, StoreError>;
    /// `address`'s ban row, live or not yet pruned: one lookup, never a scan.
    fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError>;
    fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError>;
    fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError>;
    /// Deletes what has ended by `now`; returns it.
    fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError>;
    /// The next instant anything ends.
    fn next_end(&self) -> Result<Option<UnixMs>, StoreError>;
    /// Grants and bans held (live or not yet pruned).
    fn counts(&self) -> Result<(u64, u64), StoreError>;
    fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError>;
    fn account(&self, name: &str) -> Result<Option<Account>, StoreError>;
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError>;
    fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError>;
    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError>;
    fn remove_account(&mut self, name: &str) -> Result<bool, StoreError>;
    /// Adds a standing entry; false when the name is taken.
    fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError>;
    fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError>;
    /// Writes one name's state.
    fn put_name(&mut self, n: &NameState) -> Result<(), StoreError>;
    /// Forgets the state of the names not in `keep`.
    fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError>;
    /// Whether other nodes share this store. Then a ban it cannot take (the database is away)
    /// is still enforced here, and written up once it is back.
    fn shared(&self) -> bool {
        false
    }
    /// The shared store's nodes and this node's link to it; `None` for a store of one's own.
    fn cluster(&self) -> Option<ClusterView> {
        None
    }
}

/// What a read-back of the table found, changing nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Comparison {
    pub present: bool,
    pub elements: usize,
    pub verdict: TableState,
}

/// The table as the engine uses it: element changes, one batch per engine batch. The read-back
/// runs elsewhere ([`Readback`]), so a change never waits behind it.
pub trait Table {
    fn layout(&self) -> &Layout;
    /// Takes a reloaded config's layout and `nft` program; the next reconcile rebuilds to match.
    fn reconfigure(&mut self, config: &Config);
    fn change(&mut self, changes: &Changes, now: UnixMs) -> Result<(), NftError>;
    /// How changes reach the kernel, in words for `status` and `doctor`.
    fn path(&self) -> String;
    /// Puts the standing entries' networks in the table (and in the layout, for later rebuilds).
    fn put_standing(&mut self, _nets: StandingNets) -> Result<(), NftError> {
        Ok(())
    }
}

/// The table's read-back, on a thread of its own: compares the kernel's table with what the
/// store wants, and builds it whole when it is missing or not ours.
pub trait Readback {
    /// Takes a (reloaded) config's layout and `nft` program.
    fn reconfigure(&mut self, config: &Config);
    fn layout(&self) -> &Layout;
    fn compare(&mut self, desired: &Elements, now: UnixMs) -> Result<Comparison, NftError>;
    fn rebuild(&mut self, desired: &Elements, now: UnixMs) -> Result<(), NftError>;
    /// Takes the standing entries' networks the store wants, for the compare and the rebuild.
    fn take_standing(&mut self, _nets: StandingNets) {}
    /// Packets responsive SIP dropped over its rate, when it is on and the kernel says.
    fn sip_rate_drops(&mut self) -> Option<u64> {
        None
    }
}

impl Table for Firewall {
    fn layout(&self) -> &Layout {
        Firewall::layout(self)
    }

    fn reconfigure(&mut self, config: &Config) {
        Firewall::reconfigure(self, config)
    }

    fn change(&mut self, changes: &Changes, now: UnixMs) -> Result<(), NftError> {
        Firewall::change(self, changes, now)
    }

    fn path(&self) -> String {
        Firewall::path(self)
    }

    fn put_standing(&mut self, nets: StandingNets) -> Result<(), NftError> {
        Firewall::put_standing(self, nets)
    }
}

impl Readback for Firewall {
    fn reconfigure(&mut self, config: &Config) {
        Firewall::reconfigure(self, config)
    }

    fn layout(&self) -> &Layout {
        Firewall::layout(self)
    }

    fn compare(&mut self, desired: &Elements, now: UnixMs) -> Result<Comparison, NftError> {
        let (observed, verdict) = Firewall::compare(self, desired, now)?;
        Ok(Comparison {
            present: observed.is_some(),
            elements: observed.as_ref().map(|o| o.element_count()).unwrap_or(0),
            verdict,
        })
    }

    fn rebuild(&mut self, desired: &Elements, now: UnixMs) -> Result<(), NftError> {
        Firewall::rebuild(self, desired, now)
    }

    fn take_standing(&mut self, nets: StandingNets) {
        Firewall::take_standing(self, nets)
    }

    fn sip_rate_drops(&mut self) -> Option<u64> {
        Firewall::sip_rate_drops(self)
    }
}

impl LiveRead for Db {
    fn for_each_live(&self, now: UnixMs, f: &mut dyn FnMut(IpAddr, &str, UnixMs)) -> Result<(), StoreError> {
        Db::for_each_live(self, now, f)
    }
    fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        Db::live_bans(self, now)
    }
    fn standing(&self) -> Result<(Vec<StandingEntry>, Vec<NameState>), StoreError> {
        Ok((Db::standing(self)?, Db::names(self)?))
    }
}

impl Records for Db {
    fn path(&self) -> &Path {
        Db::path(self)
    }
    fn shared(&self) -> bool {
        matches!(self, Db::Pg(_))
    }
    fn cluster(&self) -> Option<ClusterView> {
        Db::cluster(self)
    }
    fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError> {
        Db::write_grants(self, w, now)
    }
    fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        Db::grants_of(self, who, source, now)
    }
    fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        Db::revoke(self, address)
    }
    fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        Db::hold_capped(self, address, until, max_past, now)
    }
    fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        Db::release(self, address)
    }
    fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        Db::grants_for(self, address, now)
    }
    fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError> {
        Db::first_live_grants(self, now, limit)
    }
    fn ban_many(&mut self, bans: &[(IpAddr, String, UnixMs)], now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        Db::ban_many(self, bans, now)
    }
    fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        Db::ban_of(self, address)
    }
    fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        Db::unban(self, address)
    }
    fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        Db::first_live_bans(self, now, limit)
    }
    fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        Db::prune(self, now)
    }
    fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        Db::next_end(self)
    }
    fn counts(&self) -> Result<(u64, u64), StoreError> {
        Db::counts(self)
    }
    fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        Db::add_account(self, a, tag)
    }
    fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Db::account(self, name)
    }
    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Db::accounts(self)
    }
    fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        Db::set_passcode(self, name, tag, digits, now)
    }
    fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        Db::set_callers(self, name, callers)
    }
    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        Db::set_disabled(self, name, disabled)
    }
    fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        Db::remove_account(self, name)
    }
    fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError> {
        Db::add_standing(self, e)
    }
    fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError> {
        Db::remove_standing(self, name)
    }
    fn put_name(&mut self, n: &NameState) -> Result<(), StoreError> {
        Db::put_name(self, n)
    }
    fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError> {
        Db::forget_names(self, keep)
    }
}
