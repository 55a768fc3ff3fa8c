//! Grants: written, held, released, revoked and listed.

use std::net::IpAddr;

use rusqlite::{params, Connection, Row};

use super::{sql_limit, Store, StoreError, UnixMs};
use crate::base::addr;
use crate::model::{Grant, NewGrant, Source};

/// One batch of grant changes, written in one transaction: rows ended (an owner's grant replaced
/// by one from a new address), rows extended in place (a re-knock or re-call from the same
/// address), and new rows.
#[derive(Clone, Debug, Default)]
pub struct GrantWrite {
    /// Ids of grants that end now.
    pub remove: Vec<i64>,
    /// `(id, expires, services)`: the grant ends no sooner than `expires` and opens `services`.
    pub extend: Vec<(i64, UnixMs, Vec<String>)>,
    pub insert: Vec<NewGrant>,
}

impl GrantWrite {
    /// `live`, the live grants the store has at `address`, as they are once this write lands at
    /// `now`: the engine opens the table to this before the write's commit, so an element waits
    /// on nothing but the kernel. Mirrors [`Store::write_grants`]: ended rows go, an extension
    /// keeps the later expiry and takes the new services (a hold still counts), new rows join.
    /// A new row's id is 0 until the store gives it one.
    pub fn applied_to(&self, address: IpAddr, live: &[Grant], now: UnixMs) -> Vec<Grant> {
        let mut out: Vec<Grant> = live
            .iter()
            .filter(|g| !self.remove.contains(&g.id))
            .cloned()
            .collect();
        for (id, expires, services) in &self.extend {
            if let Some(g) = out.iter_mut().find(|g| g.id == *id) {
                g.expires = g.expires.max(*expires);
                g.services = services.clone();
            }
        }
        out.extend(
            self.insert
                .iter()
                .filter(|g| g.address == address)
                .map(|g| g.stored(0, now, String::new())),
        );
        out
    }
}

/// What a [`GrantWrite`] did, each list in the order it was asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantsWritten {
    pub removed: Vec<Grant>,
    /// The extended grants as they are now.
    pub extended: Vec<Grant>,
    pub inserted: Vec<Grant>,
}

const GRANT_COLUMNS: &str = "id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node";

impl Store {
    /// Writes grants in one transaction; they are durable when this returns.
    pub fn insert_grants(&mut self, new: &[NewGrant], now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let w = GrantWrite {
            insert: new.to_vec(),
            ..GrantWrite::default()
        };
        Ok(self.write_grants(&w, now)?.inserted)
    }

    /// Ends, extends and inserts grants in one transaction; durable when this returns.
    pub fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = GrantsWritten::default();
        for id in &w.remove {
            out.removed
                .extend(query_grants(&tx, "WHERE id = ?1", params![id])?);
            tx.prepare_cached("DELETE FROM grants WHERE id = ?1")?
                .execute(params![id])?;
        }
        for (id, expires, services) in &w.extend {
            // Every right-hand side reads the row as it was: a hold still counts towards the end.
            tx.prepare_cached(
                "UPDATE grants SET expires_ms = MAX(expires_ms, ?2), services = ?3,
                                   end_ms = MAX(expires_ms, ?2, COALESCE(hold_ms, 0))
                 WHERE id = ?1",
            )?
            .execute(params![id, expires, services.join(",")])?;
            out.extended
                .extend(query_grants(&tx, "WHERE id = ?1", params![id])?);
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO grants (address, services, source, who, note, created_ms, expires_ms, hold_ms, end_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?7)",
            )?;
            for g in &w.insert {
                stmt.execute(params![
                    g.address.to_string(),
                    g.services.join(","),
                    g.source.as_str(),
                    g.who,
                    g.note,
                    now,
                    g.expires
                ])?;
                out.inserted
                    .push(g.stored(tx.last_insert_rowid(), now, String::new()));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Live grants `who` was given through `source` (one account's or one knock profile's),
    /// oldest first.
    pub fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        // Sorted here, not by ORDER BY: with it, SQLite compiles the statement again for every
        // new holder bound to it, and this runs for each owned grant in a batch.
        let mut out = query_grants(
            &self.conn,
            "WHERE who = ?1 AND source = ?2 AND end_ms > ?3",
            params![who, source.as_str(), now],
        )?;
        out.sort_unstable_by_key(|g| g.id);
        Ok(out)
    }

    /// Removes every grant for `address`; returns what was removed.
    pub fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        let tx = self.conn.transaction()?;
        let removed = query_grants(&tx, "WHERE address = ?1", params![address.to_string()])?;
        tx.prepare_cached("DELETE FROM grants WHERE address = ?1")?
            .execute(params![address.to_string()])?;
        tx.commit()?;
        Ok(removed)
    }

    /// Holds every live grant for `address` open until at least `until` (a call is up).
    pub fn hold(&mut self, address: IpAddr, until: UnixMs, now: UnixMs) -> Result<usize, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE grants SET hold_ms = ?2, end_ms = MAX(expires_ms, ?2)
             WHERE address = ?1 AND end_ms > ?3",
            )?
            .execute(params![address.to_string(), until, now])?;
        Ok(n)
    }

    /// Holds every live grant for `address` until `until` (a call is up), but never more than
    /// `max_past` ms past the grant's own expiry. Replaces any earlier hold.
    pub fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE grants SET hold_ms = MIN(?2, expires_ms + ?4),
                               end_ms = MAX(expires_ms, MIN(?2, expires_ms + ?4))
             WHERE address = ?1 AND end_ms > ?3",
            )?
            .execute(params![address.to_string(), until, now, max_past])?;
        Ok(n)
    }

    /// Drops the holds on `address`'s grants (its calls ended): each ends at its own expiry again,
    /// which may be past — the next prune removes those.
    pub fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE grants SET hold_ms = NULL, end_ms = expires_ms
             WHERE address = ?1 AND hold_ms IS NOT NULL",
            )?
            .execute(params![address.to_string()])?;
        Ok(n)
    }

    /// Live grants for one address.
    pub fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        query_grants(
            &self.conn,
            "WHERE address = ?1 AND end_ms > ?2",
            params![address.to_string(), now],
        )
    }

    /// Every live grant, soonest end first.
    pub fn live_grants(&self, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        self.first_live_grants(now, None)
    }

    /// The `limit` live grants that end first (all, without one).
    pub fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError> {
        query_grants(
            &self.conn,
            "WHERE end_ms > ?1 ORDER BY end_ms, id LIMIT ?2",
            params![now, sql_limit(limit)],
        )
    }

    /// Calls `f(address, services, end)` for every live grant without building them all at once:
    /// a reconcile with 100,000 grants needs only these three columns.
    ///
    /// Read [`LIVE_CHUNK`] rows at a time, each chunk a read of its own: one read of 100,000 rows
    /// held a snapshot for a fifth of a second, and while it was held the writer's log could not
    /// be copied back, so every commit tried again and grants waited on the extra syncs. A grant
    /// changed between chunks is the engine's to set right (the read-back's fixes leave out the
    /// addresses it changed meanwhile).
    pub fn for_each_live(
        &self,
        now: UnixMs,
        mut f: impl FnMut(IpAddr, &str, UnixMs),
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, address, services, end_ms FROM grants WHERE end_ms > ?1 AND id > ?2
             ORDER BY id LIMIT ?3",
        )?;
        let mut after = i64::MIN;
        loop {
            let mut rows = stmt.query(params![now, after, LIVE_CHUNK])?;
            let mut seen = 0;
            while let Some(r) = rows.next()? {
                seen += 1;
                after = r.get(0)?;
                let a = r
                    .get_ref(1)?
                    .as_str()
                    .map_err(|e| StoreError::BadRow(e.to_string()))?;
                let ip = addr::parse_host(a).map_err(|e| StoreError::BadRow(e.to_string()))?;
                let services = r
                    .get_ref(2)?
                    .as_str()
                    .map_err(|e| StoreError::BadRow(e.to_string()))?;
                f(ip, services, r.get(3)?);
            }
            if seen < LIVE_CHUNK {
                return Ok(());
            }
        }
    }
}

/// Live grants read at a time by [`Store::for_each_live`].
const LIVE_CHUNK: i64 = 4096;

pub(super) fn query_grants(
    conn: &Connection,
    filter: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Grant>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants {filter}"))?;
    let rows = stmt.query_map(p, grant_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn grant_row(r: &Row<'_>) -> rusqlite::Result<Result<Grant, StoreError>> {
    let address: String = r.get(1)?;
    let services: String = r.get(2)?;
    let source: String = r.get(3)?;
    let (Ok(ip), Some(source)) = (addr::parse_host(&address), Source::parse(&source)) else {
        return Ok(Err(StoreError::BadRow(format!("grant {address} from {source}"))));
    };
    Ok(Ok(Grant {
        id: r.get(0)?,
        address: ip,
        services: services
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        source,
        who: r.get(4)?,
        note: r.get(5)?,
        created: r.get(6)?,
        expires: r.get(7)?,
        hold_until: r.get(8)?,
        node: r.get(9)?,
    }))
}
