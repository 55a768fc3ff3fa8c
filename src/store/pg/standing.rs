//! Standing entries and their DNS names' state on PostgreSQL; a change that moves the table is
//! announced as `*`.

use std::collections::HashMap;

use postgres::{Row, Statement, Transaction};

use super::{conn, PgStore};
use crate::base::addr;
use crate::model::{NameState, StandingEntry, Target};
use crate::store::StoreError;

impl PgStore {
    /// Adds a standing entry; false when one of that name exists (nothing changes then).
    pub fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError> {
        self.standing_write(|tx, stmts| {
            let st = conn::prep(
                stmts,
                tx,
                "INSERT INTO standing (name, targets, services, note, who, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            )?;
            let n = tx.execute(
                &st,
                &[
                    &e.name,
                    &join(e.targets.iter()),
                    &e.services.join(","),
                    &e.note,
                    &e.who,
                    &e.created,
                ],
            )?;
            Ok((n == 1, n == 1))
        })
    }

    /// Every standing entry, by name.
    pub fn standing(&self) -> Result<Vec<StandingEntry>, StoreError> {
        let found = self.conn.with(|s| {
            let st =
                s.prep("SELECT name, targets, services, note, who, created_ms FROM standing ORDER BY name")?;
            s.client.query(&st, &[])
        })?;
        found.iter().map(entry_row).collect()
    }

    /// Removes the entry `name`; returns it.
    pub fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError> {
        let found = self.standing_write(|tx, stmts| {
            let st = conn::prep(
                stmts,
                tx,
                "DELETE FROM standing WHERE name = $1 RETURNING name, targets, services, note, who, created_ms",
            )?;
            let found = tx.query_opt(&st, &[&name])?;
            let changed = found.is_some();
            Ok((found, changed))
        })?;
        found.as_ref().map(entry_row).transpose()
    }

    /// What the resolver last learnt of every name, by name.
    pub fn names(&self) -> Result<Vec<NameState>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT name, addresses, checked_ms, resolved_ms, changed_ms, failing_ms, error
                 FROM standing_names ORDER BY name",
            )?;
            s.client.query(&st, &[])
        })?;
        found.iter().map(name_row).collect()
    }

    /// Writes one name's state, replacing the last. Announced only when its addresses changed:
    /// every node's resolver writes each check, and a check that finds the same answer changes
    /// no table.
    pub fn put_name(&mut self, n: &NameState) -> Result<(), StoreError> {
        let addresses = join(n.addresses.iter());
        self.standing_write(|tx, stmts| {
            let before = conn::prep(
                stmts,
                tx,
                "SELECT addresses FROM standing_names WHERE name = $1 FOR UPDATE",
            )?;
            let was: Option<String> = tx.query_opt(&before, &[&n.name])?.map(|r| r.get(0));
            let st = conn::prep(
                stmts,
                tx,
                "INSERT INTO standing_names (name, addresses, checked_ms, resolved_ms, changed_ms, failing_ms, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET addresses = $2, checked_ms = $3, resolved_ms = $4,
                     changed_ms = $5, failing_ms = $6, error = $7",
            )?;
            tx.execute(
                &st,
                &[&n.name, &addresses, &n.checked, &n.resolved, &n.changed, &n.failing_since, &n.error],
            )?;
            let changed = was.as_deref().unwrap_or("") != addresses;
            Ok(((), changed))
        })
    }

    /// Forgets the names not in `keep`.
    pub fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError> {
        let keep = keep.to_vec();
        self.standing_write(move |tx, stmts| {
            let st = conn::prep(stmts, tx, "DELETE FROM standing_names WHERE NOT (name = ANY($1))")?;
            let n = tx.execute(&st, &[&keep])? as usize;
            Ok((n, n > 0))
        })
    }

    /// How many standing entries there are.
    pub fn standing_count(&self) -> Result<u64, StoreError> {
        self.conn.with(|s| {
            let st = s.prep("SELECT COUNT(*) FROM standing")?;
            Ok(s.client.query_one(&st, &[])?.get::<_, i64>(0) as u64)
        })
    }

    /// One change to the standing entries or names: every node hears `*` when `f` says it
    /// changed what the table holds.
    fn standing_write<T: Send>(
        &mut self,
        f: impl FnOnce(
                &mut Transaction<'_>,
                &mut HashMap<&'static str, Statement>,
            ) -> Result<(T, bool), postgres::Error>
            + Send,
    ) -> Result<T, StoreError> {
        self.write_all(None, f)
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn entry_row(r: &Row) -> Result<StandingEntry, StoreError> {
    let name: String = r.get(0);
    let targets: Result<Vec<Target>, String> = split(r.get(1)).map(str::parse).collect();
    match targets {
        Ok(targets) => Ok(StandingEntry {
            name,
            targets,
            services: split(r.get(2)).map(str::to_string).collect(),
            note: r.get(3),
            who: r.get(4),
            created: r.get(5),
        }),
        Err(e) => Err(StoreError::BadRow(format!("standing entry {name}: {e}"))),
    }
}

fn name_row(r: &Row) -> Result<NameState, StoreError> {
    let name: String = r.get(0);
    let addresses: Result<Vec<_>, _> = split(r.get(1)).map(addr::parse_host).collect();
    match addresses {
        Ok(addresses) => Ok(NameState {
            name,
            addresses,
            checked: r.get(2),
            resolved: r.get(3),
            changed: r.get(4),
            failing_since: r.get(5),
            error: r.get(6),
        }),
        Err(e) => Err(StoreError::BadRow(format!("name {name}: {e}"))),
    }
}
