//! The side tables in the shared PostgreSQL store, which every node reads and writes so a rule
//! holds across the cluster: used knock nonces and steps, the DISA limits, AMI's offender counts.

use std::net::IpAddr;

use super::conn::{prep, Conn, Session, Target};
use super::schema;
use crate::rules::limiter::{Key, Record};
use crate::store::side::parse_failures;
use crate::store::{StoreError, UnixMs};

/// A `disa_limits` row's values past its key: failures, locked until, last seen.
type LimitRow = (String, i64, i64);

/// A listener's connection of its own to the shared store, for its side table.
pub(crate) struct SideConn {
    conn: Conn,
}

impl SideConn {
    /// `f` on the connection, and once more on a fresh one if the server had cut this one (a
    /// restart, a failover) so the first knock or call after it is not refused for that alone.
    /// Only for what may run twice: a read, a write that leaves the same state, or taking a
    /// replay key (if the first try took it, the second finds it taken: refused, never granted
    /// twice).
    fn once_more<T: Send>(
        &self,
        f: impl Fn(&mut Session) -> Result<T, postgres::Error> + Sync,
    ) -> Result<T, StoreError> {
        match self.conn.with(|s| f(s)) {
            Err(StoreError::PgLost { .. } | StoreError::PgInDoubt { .. }) => self.conn.with(|s| f(s)),
            done => done,
        }
    }

    /// Logs in, on a store whose schema is made and of this version.
    pub(crate) fn open(target: &Target) -> Result<SideConn, StoreError> {
        let conn = Conn::open(target)?;
        schema::ensure(&conn)?;
        Ok(SideConn { conn })
    }

    /// Forgets replay entries that aged out, and returns the rest as (key, until).
    pub(crate) fn replay_load(&self, now: UnixMs) -> Result<Vec<(String, UnixMs)>, StoreError> {
        self.once_more(|s| {
            let del = s.prep("DELETE FROM knock_replay WHERE until_ms <= $1")?;
            s.client.execute(&del, &[&now])?;
            let sel = s.prep("SELECT key, until_ms FROM knock_replay")?;
            Ok(s.client
                .query(&sel, &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// Makes one replay entry durable; whether no live entry held the key. One statement, so of two
    /// nodes taking the same key at once, one finds it taken: the row lock decides.
    pub(crate) fn replay_remember(&self, key: &str, until: UnixMs, now: UnixMs) -> Result<bool, StoreError> {
        self.once_more(|s| {
            let st = s.prep(
                "INSERT INTO knock_replay (key, until_ms) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET until_ms = GREATEST(knock_replay.until_ms, EXCLUDED.until_ms)
             WHERE knock_replay.until_ms <= $3",
            )?;
            Ok(s.client.execute(&st, &[&key, &until, &now])? == 1)
        })
    }

    /// Forgets limits neither locked nor guessed from since `forget_before`, and returns the rest.
    pub(crate) fn limits_load(
        &self,
        now: UnixMs,
        forget_before: UnixMs,
    ) -> Result<Vec<(Key, Record)>, StoreError> {
        let rows = self.once_more(|s| {
            let del = s.prep("DELETE FROM disa_limits WHERE locked_ms <= $1 AND last_ms <= $2")?;
            s.client.execute(&del, &[&now, &forget_before])?;
            let sel = s.prep("SELECT kind, key, failures, locked_ms FROM disa_limits")?;
            Ok(s.client
                .query(&sel, &[])?
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get(3),
                    )
                })
                .collect::<Vec<(String, String, String, i64)>>())
        })?;
        rows.iter()
            .map(|(kind, key, failures, locked)| record_of(kind, key, failures, *locked))
            .collect()
    }

    /// These keys' limits as the store holds them now; keys it does not hold are left out.
    pub(crate) fn limits_refresh(&self, keys: &[Key]) -> Result<Vec<(Key, Record)>, StoreError> {
        let parts: Vec<(&'static str, String)> = keys.iter().map(Key::parts).collect();
        let rows = self.once_more(|s| {
            let st = s.prep("SELECT failures, locked_ms FROM disa_limits WHERE kind = $1 AND key = $2")?;
            let mut out = Vec::new();
            for (kind, key) in &parts {
                if let Some(r) = s.client.query_opt(&st, &[kind, key])? {
                    out.push((*kind, key.clone(), r.get::<_, String>(0), r.get::<_, i64>(1)));
                }
            }
            Ok(out)
        })?;
        rows.iter()
            .map(|(kind, key, failures, locked)| record_of(kind, key, failures, *locked))
            .collect()
    }

    /// Writes these keys' limits in one transaction; an empty record deletes its key.
    pub(crate) fn limits_save(&self, records: &[(Key, Record)], now: UnixMs) -> Result<(), StoreError> {
        let rows: Vec<(&'static str, String, Option<LimitRow>)> = records
            .iter()
            .map(|(k, r)| {
                let (kind, key) = k.parts();
                if r.is_empty(now) {
                    return (kind, key, None);
                }
                let failures: Vec<String> = r.failures.iter().map(|f| f.to_string()).collect();
                let last = r
                    .failures
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(now)
                    .max(r.locked_until);
                (kind, key, Some((failures.join(","), r.locked_until, last)))
            })
            .collect();
        self.once_more(|s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            for (kind, key, row) in &rows {
                match row {
                    None => {
                        let st = prep(
                            stmts,
                            &mut tx,
                            "DELETE FROM disa_limits WHERE kind = $1 AND key = $2",
                        )?;
                        tx.execute(&st, &[kind, key])?;
                    }
                    Some((failures, locked, last)) => {
                        let st = prep(
                            stmts,
                            &mut tx,
                            "INSERT INTO disa_limits (kind, key, failures, locked_ms, last_ms)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (kind, key) DO UPDATE SET failures = EXCLUDED.failures,
                             locked_ms = EXCLUDED.locked_ms, last_ms = EXCLUDED.last_ms",
                        )?;
                        tx.execute(&st, &[kind, key, failures, locked, last])?;
                    }
                }
            }
            tx.commit()
        })
    }

    /// Counts one failure from `ip` at `now` and returns its failures since `since`, this one among
    /// them, as every node counted them. One statement: failures from two nodes at once both count.
    pub(crate) fn offender_count(
        &self,
        ip: IpAddr,
        now: UnixMs,
        since: UnixMs,
    ) -> Result<Vec<UnixMs>, StoreError> {
        let address = ip.to_string();
        let text: String = self.conn.with(|s| {
            let st = s.prep(
                "INSERT INTO offenders (address, failures, last_ms) VALUES ($1, $2::BIGINT::TEXT, $2)
             ON CONFLICT (address) DO UPDATE SET
                 failures = array_to_string(ARRAY(
                     SELECT f FROM unnest(string_to_array(offenders.failures, ',')) AS f
                     WHERE f <> '' AND f::BIGINT > $3
                 ) || EXCLUDED.failures, ','),
                 last_ms = GREATEST(offenders.last_ms, EXCLUDED.last_ms)
             RETURNING failures",
            )?;
            Ok(s.client.query_one(&st, &[&address, &now, &since])?.get(0))
        })?;
        parse_failures(&text).ok_or_else(|| StoreError::BadRow(format!("offender {address}")))
    }

    /// Forgets `ip`'s failures: a ban was decided on them.
    pub(crate) fn offender_clear(&self, ip: IpAddr) -> Result<(), StoreError> {
        let address = ip.to_string();
        self.conn.with(|s| {
            let st = s.prep("DELETE FROM offenders WHERE address = $1")?;
            s.client.execute(&st, &[&address])?;
            Ok(())
        })
    }

    /// Forgets offenders with no failure since `before`.
    pub(crate) fn offenders_prune(&self, before: UnixMs) -> Result<u64, StoreError> {
        self.conn.with(|s| {
            let st = s.prep("DELETE FROM offenders WHERE last_ms < $1")?;
            s.client.execute(&st, &[&before])
        })
    }
}

fn record_of(
    kind: &str,
    key: &str,
    failures: &str,
    locked_until: UnixMs,
) -> Result<(Key, Record), StoreError> {
    let bad = || StoreError::BadRow(format!("disa limit {kind} {key}"));
    let k = Key::from_parts(kind, key).ok_or_else(bad)?;
    let failures = parse_failures(failures).ok_or_else(bad)?;
    Ok((
        k,
        Record {
            failures,
            locked_until,
        },
    ))
}
