//! Standing entries and the state of the DNS names they hold: added, listed, removed.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};
use crate::base::addr;
use crate::model::{NameState, StandingEntry, Target};

const COLUMNS: &str = "name, targets, services, note, who, created_ms";
const NAME_COLUMNS: &str = "name, addresses, checked_ms, resolved_ms, changed_ms, failing_ms, error";

impl Store {
    /// Adds a standing entry; false when one of that name exists (nothing changes then).
    pub fn add_standing(&mut self, e: &StandingEntry) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO standing (name, targets, services, note, who, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
            params![
                e.name,
                join(e.targets.iter()),
                e.services.join(","),
                e.note,
                e.who,
                e.created
            ],
        )?;
        Ok(n == 1)
    }

    /// Every standing entry, by name.
    pub fn standing(&self) -> Result<Vec<StandingEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM standing ORDER BY name"))?;
        let rows = stmt.query_map([], entry_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Removes the entry `name`; returns it. The engine forgets the names nothing holds any more.
    pub fn remove_standing(&mut self, name: &str) -> Result<Option<StandingEntry>, StoreError> {
        let tx = self.conn.transaction()?;
        let found = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM standing WHERE name = ?1"),
                params![name],
                entry_row,
            )
            .optional()?
            .transpose()?;
        tx.execute("DELETE FROM standing WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(found)
    }

    /// What the resolver last learnt of every name, by name.
    pub fn names(&self) -> Result<Vec<NameState>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {NAME_COLUMNS} FROM standing_names ORDER BY name"
        ))?;
        let rows = stmt.query_map([], name_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Writes one name's state, replacing the last.
    pub fn put_name(&mut self, n: &NameState) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO standing_names (name, addresses, checked_ms, resolved_ms, changed_ms, failing_ms, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET addresses = ?2, checked_ms = ?3, resolved_ms = ?4,
                 changed_ms = ?5, failing_ms = ?6, error = ?7",
            params![
                n.name,
                join(n.addresses.iter()),
                n.checked,
                n.resolved,
                n.changed,
                n.failing_since,
                n.error
            ],
        )?;
        Ok(())
    }

    /// Forgets the names not in `keep`.
    pub fn forget_names(&mut self, keep: &[String]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut gone = 0;
        let all: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM standing_names")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for n in all.iter().filter(|n| !keep.contains(n)) {
            gone += tx.execute("DELETE FROM standing_names WHERE name = ?1", params![n])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// How many standing entries there are.
    pub fn standing_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM standing", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn entry_row(r: &Row) -> rusqlite::Result<Result<StandingEntry, StoreError>> {
    let name: String = r.get(0)?;
    let targets: String = r.get(1)?;
    let services: String = r.get(2)?;
    let targets: Result<Vec<Target>, String> = split(&targets).map(str::parse).collect();
    Ok(match targets {
        Ok(targets) => Ok(StandingEntry {
            name,
            targets,
            services: split(&services).map(str::to_string).collect(),
            note: r.get(3)?,
            who: r.get(4)?,
            created: r.get(5)?,
        }),
        Err(e) => Err(StoreError::BadRow(format!("standing entry {name}: {e}"))),
    })
}

fn name_row(r: &Row) -> rusqlite::Result<Result<NameState, StoreError>> {
    let name: String = r.get(0)?;
    let addresses: String = r.get(1)?;
    let addresses: Result<Vec<_>, _> = split(&addresses).map(addr::parse_host).collect();
    Ok(match addresses {
        Ok(addresses) => Ok(NameState {
            name,
            addresses,
            checked: r.get(2)?,
            resolved: r.get(3)?,
            changed: r.get(4)?,
            failing_since: r.get(5)?,
            error: r.get(6)?,
        }),
        Err(e) => Err(StoreError::BadRow(format!("name {name}: {e}"))),
    })
}
