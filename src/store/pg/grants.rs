//! Grants on PostgreSQL: written, held, released, revoked and listed, each write announced.

use std::net::IpAddr;

use postgres::Row;

use super::notify::{self, Touched};
use super::{conn, PgStore};
use crate::base::addr;
use crate::model::{Grant, NewGrant, Source};
use crate::store::{GrantWrite, GrantsWritten, StoreError, UnixMs};

impl PgStore {
    /// Writes grants in one transaction; they are durable when this returns.
    pub fn insert_grants(&mut self, new: &[NewGrant], now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let w = GrantWrite {
            insert: new.to_vec(),
            ..GrantWrite::default()
        };
        Ok(self.write_grants(&w, now)?.inserted)
    }

    /// Ends, extends and inserts grants in one transaction; durable (and announced) when this
    /// returns. Each new grant carries this node's name.
    pub fn write_grants(&mut self, w: &GrantWrite, now: UnixMs) -> Result<GrantsWritten, StoreError> {
        let node = self.node().to_string();
        let (removed, extended, ids) = self.conn.with(|s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let mut touched = Vec::new();
            let mut removed = Vec::new();
            let mut extended = Vec::new();
            let mut ids = Vec::with_capacity(w.insert.len());
            if !w.remove.is_empty() {
                let st = conn::prep(
                    stmts,
                    &mut tx,
                    "DELETE FROM grants WHERE id = $1 RETURNING id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node",
                )?;
                for id in &w.remove {
                    removed.extend(tx.query(&st, &[id])?);
                }
            }
            if !w.extend.is_empty() {
                // Every right-hand side reads the row as it was: a hold still counts towards the end.
                let st = conn::prep(
                    stmts,
                    &mut tx,
                    "UPDATE grants SET expires_ms = GREATEST(expires_ms, $2), services = $3,
                                       end_ms = GREATEST(expires_ms, $2, COALESCE(hold_ms, 0))
                     WHERE id = $1
                     RETURNING id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node",
                )?;
                for (id, expires, services) in &w.extend {
                    extended.extend(tx.query(&st, &[id, expires, &services.join(",")])?);
                }
            }
            if !w.insert.is_empty() {
                // All in one statement, one round trip however many: the rows are inserted in the
                // order asked, so their ids, sorted, are theirs in that order.
                let st = conn::prep(
                    stmts,
                    &mut tx,
                    "INSERT INTO grants (address, services, source, who, note, created_ms, expires_ms, hold_ms, end_ms, node)
                     SELECT a, s, src, w, n, $6, e, NULL, e, $8
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::bigint[])
                          WITH ORDINALITY AS u (a, s, src, w, n, e, ord)
                     ORDER BY ord
                     RETURNING id",
                )?;
                let addresses: Vec<String> = w.insert.iter().map(|g| g.address.to_string()).collect();
                let services: Vec<String> = w.insert.iter().map(|g| g.services.join(",")).collect();
                let sources: Vec<&str> = w.insert.iter().map(|g| g.source.as_str()).collect();
                let whos: Vec<&str> = w.insert.iter().map(|g| g.who.as_str()).collect();
                let notes: Vec<&str> = w.insert.iter().map(|g| g.note.as_str()).collect();
                let expires: Vec<i64> = w.insert.iter().map(|g| g.expires).collect();
                let rows = tx.query(
                    &st,
                    &[&addresses, &services, &sources, &whos, &notes, &now, &expires, &node],
                )?;
                ids.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
                ids.sort_unstable();
                touched.extend(addresses);
            }
            touched.extend(removed.iter().chain(&extended).map(|r| r.get::<_, String>(1)));
            notify::send(&mut tx, stmts, &node, &Touched::Texts(touched))?;
            tx.commit()?;
            Ok((removed, extended, ids))
        })?;
        Ok(GrantsWritten {
            removed: rows(&removed)?,
            extended: rows(&extended)?,
            inserted: w
                .insert
                .iter()
                .zip(ids)
                .map(|(g, id)| g.stored(id, now, node.clone()))
                .collect(),
        })
    }

    /// Live grants `who` was given through `source`, oldest first.
    pub fn grants_of(&self, who: &str, source: Source, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node FROM grants
                 WHERE who = $1 AND source = $2 AND end_ms > $3 ORDER BY id",
            )?;
            s.client.query(&st, &[&who, &source.as_str(), &now])
        })?;
        rows(&found)
    }

    /// Removes every grant for `address`; returns what was removed.
    pub fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        let found = self.changing(address, |tx, stmts, a| {
            let st = conn::prep(
                stmts,
                tx,
                "DELETE FROM grants WHERE address = $1 RETURNING id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node",
            )?;
            let found = tx.query(&st, &[&a])?;
            let any = !found.is_empty();
            Ok((found, any))
        })?;
        rows(&found)
    }

    /// Holds every live grant for `address` open until at least `until` (a call is up).
    pub fn hold(&mut self, address: IpAddr, until: UnixMs, now: UnixMs) -> Result<usize, StoreError> {
        self.changing(address, |tx, stmts, a| {
            let st = conn::prep(
                stmts,
                tx,
                "UPDATE grants SET hold_ms = $2, end_ms = GREATEST(expires_ms, $2)
                 WHERE address = $1 AND end_ms > $3",
            )?;
            let n = tx.execute(&st, &[&a, &until, &now])? as usize;
            Ok((n, n > 0))
        })
    }

    /// Holds every live grant for `address` until `until`, never more than `max_past` ms past
    /// the grant's own expiry. Replaces any earlier hold.
    pub fn hold_capped(
        &mut self,
        address: IpAddr,
        until: UnixMs,
        max_past: i64,
        now: UnixMs,
    ) -> Result<usize, StoreError> {
        self.changing(address, |tx, stmts, a| {
            let st = conn::prep(
                stmts,
                tx,
                "UPDATE grants SET hold_ms = LEAST($2, expires_ms + $4),
                                   end_ms = GREATEST(expires_ms, LEAST($2, expires_ms + $4))
                 WHERE address = $1 AND end_ms > $3",
            )?;
            let n = tx.execute(&st, &[&a, &until, &now, &max_past])? as usize;
            Ok((n, n > 0))
        })
    }

    /// Drops the holds on `address`'s grants: each ends at its own expiry again.
    pub fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        self.changing(address, |tx, stmts, a| {
            let st = conn::prep(
                stmts,
                tx,
                "UPDATE grants SET hold_ms = NULL, end_ms = expires_ms
                 WHERE address = $1 AND hold_ms IS NOT NULL",
            )?;
            let n = tx.execute(&st, &[&a])? as usize;
            Ok((n, n > 0))
        })
    }

    /// Live grants for one address.
    pub fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let a = address.to_string();
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node FROM grants
                 WHERE address = $1 AND end_ms > $2",
            )?;
            s.client.query(&st, &[&a, &now])
        })?;
        rows(&found)
    }

    /// Every live grant, soonest end first.
    pub fn live_grants(&self, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        self.first_live_grants(now, None)
    }

    /// The `limit` live grants that end first (all, without one).
    pub fn first_live_grants(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Grant>, StoreError> {
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64);
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node FROM grants
                 WHERE end_ms > $1 ORDER BY end_ms, id LIMIT $2",
            )?;
            s.client.query(&st, &[&now, &limit])
        })?;
        rows(&found)
    }

    /// Calls `f(address, services, end)` for every live grant, reading only those three columns.
    pub fn for_each_live(
        &self,
        now: UnixMs,
        mut f: impl FnMut(IpAddr, &str, UnixMs),
    ) -> Result<(), StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep("SELECT address, services, end_ms FROM grants WHERE end_ms > $1")?;
            s.client.query(&st, &[&now])
        })?;
        for r in &found {
            let a: &str = r.get(0);
            let ip = addr::parse_host(a).map_err(|e| StoreError::BadRow(e.to_string()))?;
            f(ip, r.get(1), r.get(2));
        }
        Ok(())
    }

    /// Runs one change to `address`'s grants in a transaction that also announces it, when `f`
    /// says it changed anything.
    fn changing<T: Send>(
        &mut self,
        address: IpAddr,
        f: impl FnOnce(
                &mut postgres::Transaction<'_>,
                &mut std::collections::HashMap<&'static str, postgres::Statement>,
                &String,
            ) -> Result<(T, bool), postgres::Error>
            + Send,
    ) -> Result<T, StoreError> {
        let node = self.node().to_string();
        let a = address.to_string();
        self.conn.with(move |s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let (out, changed) = f(&mut tx, stmts, &a)?;
            if changed {
                notify::send(&mut tx, stmts, &node, &Touched::Texts(vec![a]))?;
            }
            tx.commit()?;
            Ok(out)
        })
    }
}

fn rows(found: &[Row]) -> Result<Vec<Grant>, StoreError> {
    found.iter().map(grant_row).collect()
}

/// A grant from a row of `id, address, services, source, who, note, created_ms, expires_ms,
/// hold_ms, node`.
pub(super) fn grant_row(r: &Row) -> Result<Grant, StoreError> {
    let address: String = r.get(1);
    let services: String = r.get(2);
    let source: String = r.get(3);
    let (Ok(ip), Some(source)) = (addr::parse_host(&address), Source::parse(&source)) else {
        return Err(StoreError::BadRow(format!("grant {address} from {source}")));
    };
    Ok(Grant {
        id: r.get(0),
        address: ip,
        services: services
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        source,
        who: r.get(4),
        note: r.get(5),
        created: r.get(6),
        expires: r.get(7),
        hold_until: r.get(8),
        node: r.get(9),
    })
}
