//! The store's side tables, each written through a connection of its own by the one listener
//! that owns it: used knock nonces and steps (`knock_replay`), the DISA limits (`disa_limits`)
//! and, with a store several nodes share, AMI's offender counts (`offenders`). On SQLite or on
//! PostgreSQL alike; the PostgreSQL queries are in `pg/side.rs`.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::{params, Connection};

use super::pg::side::SideConn;
use super::{Location, StoreError, UnixMs};
use crate::base::clock::now_ms;
use crate::rules::limiter::{Key, Record};

/// A side table's connection: to the SQLite file of this box, or to the shared store.
enum Side {
    Lite(Connection),
    Pg(Box<SideConn>),
}

impl Side {
    fn open(at: &Location) -> Result<Side, StoreError> {
        Ok(match at {
            Location::File(path) => Side::Lite(side_connection(path)?),
            Location::Postgres(target) => Side::Pg(Box::new(SideConn::open(target)?)),
        })
    }
}

/// Used SPA nonces and rotating knock steps (`knock_replay`), so a knock that worked once does not
/// work again after a restart, nor, with a shared store, at another node. The knock listener's own
/// connection: it writes only this table, and only for knocks that authenticated, so the engine's
/// writes are not slowed by floods.
pub struct ReplayLog {
    side: Side,
}

impl ReplayLog {
    /// Opens the store at `at` (which `Store::open` has created) for the replay table.
    pub fn open(at: &Location) -> Result<ReplayLog, StoreError> {
        Ok(ReplayLog {
            side: Side::open(at)?,
        })
    }

    /// Forgets what aged out, and returns the rest as (key, until).
    pub fn load(&self, now: UnixMs) -> Result<Vec<(String, UnixMs)>, StoreError> {
        let conn = match &self.side {
            Side::Lite(c) => c,
            Side::Pg(c) => return c.replay_load(now),
        };
        conn.execute("DELETE FROM knock_replay WHERE until_ms <= ?1", params![now])?;
        let mut stmt = conn.prepare("SELECT key, until_ms FROM knock_replay")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Makes one entry durable; returns once it is on disk, with whether the key was fresh: false
    /// when a live entry already held it (used before, here or, with a shared store, at another
    /// node), and then the knock must not work. An entry past its time is taken over.
    pub fn remember(&self, key: &str, until: UnixMs) -> Result<bool, StoreError> {
        let now = now_ms();
        let conn = match &self.side {
            Side::Lite(c) => c,
            Side::Pg(c) => return c.replay_remember(key, until, now),
        };
        let n = conn.execute(
            "INSERT INTO knock_replay (key, until_ms) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms)
             WHERE knock_replay.until_ms <= ?3",
            params![key, until, now],
        )?;
        Ok(n == 1)
    }
}

/// A connection of its own to the store `Store::open` made, for a listener that writes one table
/// of its own: each commit on disk before it returns, and a wait (not an error) while another
/// connection writes.
fn side_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    super::schema::wait_when_busy(&mut conn).map_err(open_err)?;
    Ok(conn)
}

/// The DISA limits' state (`disa_limits`): lockouts, recent wrong passcodes, the suspension. The
/// DISA listener's own connection, like [`ReplayLog`]: it writes only this table, and only for
/// calls that reached a passcode check, so a restart keeps every lockout.
pub struct LimitLog {
    side: Side,
}

impl LimitLog {
    /// Opens the store at `at` (which `Store::open` has created) for the limits table.
    pub fn open(at: &Location) -> Result<LimitLog, StoreError> {
        Ok(LimitLog {
            side: Side::open(at)?,
        })
    }

    /// Forgets keys neither locked nor guessed from since `forget_before`, and returns the rest.
    pub fn load(&self, now: UnixMs, forget_before: UnixMs) -> Result<Vec<(Key, Record)>, StoreError> {
        let conn = match &self.side {
            Side::Lite(c) => c,
            Side::Pg(c) => return c.limits_load(now, forget_before),
        };
        conn.execute(
            "DELETE FROM disa_limits WHERE locked_ms <= ?1 AND last_ms <= ?2",
            params![now, forget_before],
        )?;
        let mut stmt = conn.prepare("SELECT kind, key, failures, locked_ms FROM disa_limits")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, key, failures, locked_until) = row?;
            let k = Key::from_parts(&kind, &key)
                .ok_or_else(|| StoreError::BadRow(format!("disa limit {kind} {key}")))?;
            let failures = parse_failures(&failures)
                .ok_or_else(|| StoreError::BadRow(format!("disa limit {kind} {key}")))?;
            out.push((
                k,
                Record {
                    failures,
                    locked_until,
                },
            ));
        }
        Ok(out)
    }

    /// Whether other nodes write these limits too: then each check reads them first.
    pub fn is_shared(&self) -> bool {
        matches!(self.side, Side::Pg(_))
    }

    /// These keys' state as the store has it now (keys it does not hold are left out): with a
    /// shared store, what other nodes' calls did to them.
    pub fn refresh(&self, keys: &[Key]) -> Result<Vec<(Key, Record)>, StoreError> {
        let conn = match &self.side {
            Side::Lite(c) => c,
            Side::Pg(c) => return c.limits_refresh(keys),
        };
        let mut stmt =
            conn.prepare_cached("SELECT failures, locked_ms FROM disa_limits WHERE kind = ?1 AND key = ?2")?;
        let mut out = Vec::new();
        for k in keys {
            let (kind, key) = k.parts();
            let mut rows = stmt.query(params![kind, key])?;
            if let Some(r) = rows.next()? {
                let failures = parse_failures(&r.get::<_, String>(0)?)
                    .ok_or_else(|| StoreError::BadRow(format!("disa limit {kind} {key}")))?;
                out.push((
                    k.clone(),
                    Record {
                        failures,
                        locked_until: r.get(1)?,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Writes these keys' state in one transaction; returns once it is on disk. An empty record
    /// deletes its key.
    pub fn save(&mut self, records: &[(Key, Record)], now: UnixMs) -> Result<(), StoreError> {
        let conn = match &mut self.side {
            Side::Lite(c) => c,
            Side::Pg(c) => return c.limits_save(records, now),
        };
        let tx = conn.transaction()?;
        for (k, r) in records {
            let (kind, key) = k.parts();
            if r.is_empty(now) {
                tx.execute(
                    "DELETE FROM disa_limits WHERE kind = ?1 AND key = ?2",
                    params![kind, key],
                )?;
                continue;
            }
            let failures: Vec<String> = r.failures.iter().map(|f| f.to_string()).collect();
            let last = r
                .failures
                .iter()
                .copied()
                .max()
                .unwrap_or(now)
                .max(r.locked_until);
            tx.execute(
                "INSERT INTO disa_limits (kind, key, failures, locked_ms, last_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, key) DO UPDATE SET failures = excluded.failures,
                     locked_ms = excluded.locked_ms, last_ms = excluded.last_ms",
                params![kind, key, failures.join(","), r.locked_until, last],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// A `disa_limits` row's failures: comma-separated Unix ms.
pub(super) fn parse_failures(text: &str) -> Option<Vec<UnixMs>> {
    text.split(',')
        .filter(|f| !f.is_empty())
        .map(|f| f.parse::<i64>().ok())
        .collect()
}

/// AMI's offender counts in a store several nodes share (`offenders`), so failures from one
/// address seen at different nodes add up to one ban. A single box has none: its own count in
/// memory is the whole count, and a disk write per failure would only slow bans down.
pub struct OffenderLog {
    conn: SideConn,
}

impl OffenderLog {
    /// The shared store's offender counts; `None` for a store of this box alone.
    pub fn open(at: &Location) -> Result<Option<OffenderLog>, StoreError> {
        match at {
            Location::File(_) => Ok(None),
            Location::Postgres(target) => Ok(Some(OffenderLog {
                conn: SideConn::open(target)?,
            })),
        }
    }

    /// Counts one failure from `ip` at `now`; returns its failures since `since` as every node
    /// counted them, this one among them.
    pub fn count(&self, ip: IpAddr, now: UnixMs, since: UnixMs) -> Result<Vec<UnixMs>, StoreError> {
        self.conn.offender_count(ip, now, since)
    }

    /// Forgets `ip`'s failures: a ban was decided on them.
    pub fn clear(&self, ip: IpAddr) -> Result<(), StoreError> {
        self.conn.offender_clear(ip)
    }

    /// Forgets addresses with no failure since `before`; how many.
    pub fn prune(&self, before: UnixMs) -> Result<u64, StoreError> {
        self.conn.offenders_prune(before)
    }
}
