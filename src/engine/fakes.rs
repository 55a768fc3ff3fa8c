//! In-memory stand-ins for the store and the table, for the engine's unit tests: they keep rows
//! and elements in plain collections, count transactions and nft batches, and the table can be
//! told to fail.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::ports::{Comparison, LiveRead, Readback, Records, Table};
use crate::base::clock::UnixMs;
use crate::config::Config;
use crate::model::{Account, Ban, Grant, NameState, Source, StandingEntry};
use crate::nft::{Changes, Elements, Layout, NftError, TableState};
use crate::store::{GrantWrite, GrantsWritten, StoreError};

/// The store's rules over vectors: a grant ends at `max(expires, hold)`, writes are counted.
#[derive(Debug, Default)]
pub struct FakeStore {
    pub grants: Vec<Grant>,
    pub bans: Vec<Ban>,
    pub accounts: Vec<(Account, [u8; 32])>,
    /// Standing entries by name, and their names' states.
    pub standing: std::collections::BTreeMap<String, StandingEntry>,
    pub names: std::collections::BTreeMap<String, NameState>,
    /// Write transactions committed, as SQLite would count them.
    pub transactions: usize,
    /// Shared with other nodes, as a PostgreSQL store is; and, while `down`, unreachable.
    pub shared: bool,
    pub down: bool,
    next_id: i64,
    path: PathBuf,
}

impl FakeStore {
    fn live(&self, now: UnixMs) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(move |g| g.end() > now)
    }

    fn write(&mut self) {
        self.transactions += 1;
    }
}

impl LiveRead for FakeStore {
    fn for_each_live(&self, now: UnixMs, f: &mut dyn FnMut(IpAddr, &str, UnixMs)) -> Result<(), StoreError> {
        for g in self.live(now) {
            f(g.address, &g.services.join(","), g.end());
        }
        Ok(())
    }

    fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        self.first_live_bans(now, None)
    }

    fn standing(&self) -> Result<(Vec<StandingEntry>, Vec<NameState>), StoreError> {
        Ok((
            self.standing.values().cloned().collect(),
            self.names.values().cloned().collect(),
        ))
    }
}

impl Records for FakeStore {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError> {
        if self.down {
            return Err(StoreError::BadRow("the store is away (told to be)".into()));
        }
        self.write();
        let mut out = GrantsWritten::default();
        for id in &w.remove {
            if let Some(i) = self.grants.iter().position(|g| g.id == *id) {
                out.removed.push(self.grants.remove(i));
            }
        }
        for (id, expires, services) in &w.extend {
            if let Some(g) = self.grants.iter_mut().find(|g| g.id == *id) {
                g.expires = g.expires.max(*expires);
                g.services = services.clone();
                out.extended.push(g.clone());
            }
        }
        for g in &w.insert {
            self.next_id += 1;
            let grant = g.stored(self.next_id, now, String::new());
            self.grants.push(grant.clone());
            out.inserted.push(grant);
        }
        Ok(out)
    }

    fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .live(now)
            .filter(|g| g.who == who && g.source == source)
            .cloned()
            .collect())
    }

    fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        self.write();
        let (gone, kept) = std::mem::take(&mut self.grants)
            .into_iter()
            .partition(|g| g.address == address);
        self.grants = kept;
        Ok(gone)
    }

    fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        self.write();
        let mut n = 0;
        for g in self
            .grants
            .iter_mut()
            .filter(|g| g.address == address && g.end() > now)
        {
            g.hold_until = Some(until.min(g.expires + max_past));
            n += 1;
        }
        Ok(n)
    }

    fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        self.write();
        let mut n = 0;
        for g in self
            .grants
            .iter_mut()
            .filter(|g| g.address == address && g.hold_until.is_some())
        {
            g.hold_until = None;
            n += 1;
        }
        Ok(n)
    }

    fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        Ok(self.live(now).filter(|g| g.address == address).cloned().collect())
    }

    fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError> {
        let mut out: Vec<Grant> = self.live(now).cloned().collect();
        out.sort_by_key(|g| (g.end(), g.id));
        out.truncate(limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    fn ban_many(&mut self, bans: &[(IpAddr, String, UnixMs)], now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        if self.down {
            return Err(StoreError::BadRow("the shared store is away (told to be)".into()));
        }
        self.write();
        let mut out = Vec::new();
        for (address, reason, expires) in bans {
            let b = match self.bans.iter_mut().find(|b| b.address == *address) {
                Some(b) => {
                    b.reason = reason.clone();
                    b.expires = *expires;
                    b.clone()
                }
                None => {
                    let b = Ban {
                        address: *address,
                        reason: reason.clone(),
                        created: now,
                        expires: *expires,
                    };
                    self.bans.push(b.clone());
                    b
                }
            };
            out.push(b);
        }
        Ok(out)
    }

    fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        Ok(self.bans.iter().find(|b| b.address == address).cloned())
    }

    fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        self.write();
        let i = self.bans.iter().position(|b| b.address == address);
        Ok(i.map(|i| self.bans.remove(i)))
    }

    fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        let mut out: Vec<Ban> = self.bans.iter().filter(|b| b.expires > now).cloned().collect();
        out.sort_by_key(|b| b.expires);
        out.truncate(limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        self.write();
        let (gone, kept) = std::mem::take(&mut self.grants)
            .into_iter()
            .partition(|g| g.end() <= now);
        self.grants = kept;
        let (ended, bans) = std::mem::take(&mut self.bans)
            .into_iter()
            .partition(|b| b.expires <= now);
        self.bans = bans;
        Ok((gone, ended))
    }

    fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        let g = self.grants.iter().map(Grant::end);
        let b = self.bans.iter().map(|b| b.expires);
        Ok(g.chain(b).min())
    }

    fn counts(&self) -> Result<(u64, u64), StoreError> {
        Ok((self.grants.len() as u64, self.bans.len() as u64))
    }

    fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        if self.accounts.iter().any(|(b, t)| b.name == a.name || t == tag) {
            return Err(StoreError::BadRow("taken".into()));
        }
        self.write();
        self.accounts.push((a.clone(), *tag));
        Ok(())
    }

    fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .accounts
            .iter()
            .find(|(a, _)| a.name == name)
            .map(|(a, _)| a.clone()))
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(self.accounts.iter().map(|(a, _)| a.clone()).collect())
    }

    fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        self.write();
        let Some((a, t)) = self.accounts.iter_mut().find(|(a, _)| a.name == name) else {
            return Ok(false);
        };
        *t = *tag;
        a.passcode_digits = Some(digits);
        a.passcode_set = now;
        Ok(true)
    }

    fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        self.write();
        let Some((a, _)) = self.accounts.iter_mut().find(|(a, _)| a.name == name) else {
            return Ok(false);
        };
        a.callers = callers.to_vec();
        Ok(true)
    }

    fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        self.write();
        let Some((a, _)) = self.accounts.iter_mut().find(|(a, _)| a.name == name) else {
            return Ok(false);
        };
        a.disabled = disabled;
        Ok(true)
    }

    fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        self.write();
        let before = self.accounts.len();
        self.accounts.retain(|(a, _)| a.name != name);
        Ok(self.accounts.len() < before)
    }

    fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError> {
        Ok(self.add_standing_row(e))
    }

    fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError> {
        self.write();
        Ok(self.standing.remove(name))
    }

    fn put_name(&mut self, n: &NameState) -> Result<(), StoreError> {
        self.write();
        self.names.insert(n.name.clone(), n.clone());
        Ok(())
    }

    fn shared(&self) -> bool {
        self.shared
    }

    fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError> {
        let before = self.names.len();
        self.names.retain(|n, _| keep.contains(n));
        Ok(before - self.names.len())
    }
}

/// The kernel's table as a map of elements to their ends; `None` while there is no table.
#[derive(Debug)]
pub struct FakeTable {
    layout: Layout,
    pub elements: Option<Elements>,
    /// While set, every nft run fails as a refused batch would.
    pub fail: bool,
    /// Element batches applied (an empty batch runs no nft and is not counted).
    pub batches: usize,
    pub rebuilds: usize,
}

impl FakeTable {
    pub fn new(config: &Config) -> FakeTable {
        FakeTable {
            layout: Layout::from_config(config),
            elements: None,
            fail: false,
            batches: 0,
            rebuilds: 0,
        }
    }

    /// Whether the table holds any element of `addr`.
    pub fn has(&self, addr: IpAddr) -> bool {
        self.elements
            .as_ref()
            .is_some_and(|e| e.keys().any(|k| k.addr == addr))
    }

    /// Elements of `addr` in the table.
    pub fn count(&self, addr: IpAddr) -> usize {
        self.elements
            .as_ref()
            .map_or(0, |e| e.keys().filter(|k| k.addr == addr).count())
    }

    fn refused(&self) -> Result<(), NftError> {
        if self.fail {
            return Err(NftError::Rejected {
                message: "told to fail".into(),
            });
        }
        Ok(())
    }
}

impl Table for FakeTable {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn reconfigure(&mut self, config: &Config) {
        self.layout = Layout::from_config(config);
    }

    fn change(&mut self, changes: &Changes, _now: UnixMs) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.refused()?;
        let Some(elements) = &mut self.elements else {
            return Err(NftError::Rejected {
                message: "no such table".into(),
            });
        };
        for k in &changes.remove {
            elements.remove(k);
        }
        for (k, end) in &changes.set {
            elements.insert(k.clone(), *end);
        }
        self.batches += 1;
        Ok(())
    }

    fn path(&self) -> String {
        "memory".into()
    }
}

impl Readback for FakeTable {
    fn reconfigure(&mut self, config: &Config) {
        self.layout = Layout::from_config(config);
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn compare(&mut self, want: &Elements, _now: UnixMs) -> Result<Comparison, NftError> {
        self.refused()?;
        let Some(have) = &self.elements else {
            return Ok(Comparison {
                present: false,
                elements: 0,
                verdict: TableState::Rebuild("the table is missing".into()),
            });
        };
        let changes = Changes {
            set: want
                .iter()
                .filter(|(k, end)| have.get(*k) != Some(*end))
                .map(|(k, end)| (k.clone(), *end))
                .collect(),
            remove: have.keys().filter(|k| !want.contains_key(*k)).cloned().collect(),
        };
        Ok(Comparison {
            present: true,
            elements: have.len(),
            verdict: if changes.is_empty() {
                TableState::InSync
            } else {
                TableState::Fix(changes)
            },
        })
    }

    fn rebuild(&mut self, want: &Elements, _now: UnixMs) -> Result<(), NftError> {
        self.refused()?;
        self.elements = Some(want.clone());
        self.rebuilds += 1;
        Ok(())
    }
}

/// Standing entries over maps (kept apart so the store's main fake reads as it did).
impl FakeStore {
    pub(super) fn add_standing_row(&mut self, e: &StandingEntry) -> bool {
        if self.standing.contains_key(&e.name) {
            return false;
        }
        self.write();
        self.standing.insert(e.name.clone(), e.clone());
        true
    }
}
