//! The expiry store: grants, bans, accounts, DISA limits and the audit history's table in SQLite,
//! durable before any call returns.
//!
//! Times are Unix milliseconds so entries survive restarts with their remaining life. The schema
//! sticks to plain types (integers, text) so the same tables can live in PostgreSQL for a cluster.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use crate::base::addr;
use crate::model::{Account, Ban, Grant, NewGrant, Source};

pub use crate::base::clock::{now_ms, UnixMs};
pub use side::{LimitLog, ReplayLog};

pub mod history;
mod side;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store's directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the store {path} private (mode 0600): {source}")]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the store {path} has schema version {found}; this passknock knows up to {known}")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store holds a bad row: {0}")]
    BadRow(String),
    #[error("cannot start the history writer thread: {0}")]
    HistoryWriter(#[source] std::io::Error),
}

/// 2: accounts' owner numbers and passcode length; DISA limits kept across restarts.
/// 3: the audit history (`events`), written by [`crate::store::history::EventLog`]. A version 2 store
/// gets the table at open (`CREATE TABLE IF NOT EXISTS`); nothing else changes.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS grants (
    id          INTEGER PRIMARY KEY,
    address     TEXT    NOT NULL,
    services    TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    who         TEXT    NOT NULL,
    note        TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL,
    hold_ms     BIGINT,
    end_ms      BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_address ON grants (address);
CREATE INDEX IF NOT EXISTS grants_end ON grants (end_ms);
CREATE TABLE IF NOT EXISTS bans (
    address     TEXT    PRIMARY KEY,
    reason      TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_expires ON bans (expires_ms);
CREATE TABLE IF NOT EXISTS knock_replay (
    key         TEXT    PRIMARY KEY,
    until_ms    BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    name          TEXT    PRIMARY KEY,
    tag           BLOB    NOT NULL UNIQUE,
    services      TEXT    NOT NULL,
    ttl_secs      BIGINT  NOT NULL,
    endpoint      TEXT,
    address_modes TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_ms    BIGINT  NOT NULL,
    passcode_ms   BIGINT  NOT NULL,
    callers       TEXT    NOT NULL DEFAULT '',
    passcode_digits INTEGER
);
CREATE TABLE IF NOT EXISTS disa_limits (
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    failures    TEXT    NOT NULL,
    locked_ms   BIGINT  NOT NULL,
    last_ms     BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    time_ms     BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    address     TEXT    NOT NULL DEFAULT '',
    who         TEXT    NOT NULL DEFAULT '',
    source      TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT '',
    count       BIGINT  NOT NULL DEFAULT 1,
    minute      BIGINT
);
CREATE INDEX IF NOT EXISTS events_time ON events (time_ms);
-- A flood's events share their minute's row; every other row has no minute, and NULLs never
-- collide in a unique index, so it holds one row per event.
CREATE UNIQUE INDEX IF NOT EXISTS events_flood ON events (kind, address, who, minute);
";

/// Columns added to a table after version 1, for stores made before them.
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    ("accounts", "callers", "TEXT NOT NULL DEFAULT ''"),
    ("accounts", "passcode_digits", "INTEGER"),
];

const GRANT_COLUMNS: &str = "id, address, services, source, who, note, created_ms, expires_ms, hold_ms";

const ACCOUNT_COLUMNS: &str =
    "name, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits";

/// The store. One connection; the daemon's engine thread is its only user.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // Accounts' passcode tags live here: owner-only, like the key that made them. SQLite gives
        // the -wal and -shm files the database file's mode.
        make_private(path).map_err(|source| StoreError::Private {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL with FULL sync: a commit is on disk before it returns, and a crash at any instant
        // leaves either the old or the new state, never a torn one.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        add_missing_columns(&conn).map_err(open_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes grants in one transaction; they are durable when this returns.
    pub fn insert_grants(&mut self, new: &[NewGrant], now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(new.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO grants (address, services, source, who, note, created_ms, expires_ms, hold_ms, end_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?7)",
            )?;
            for g in new {
                stmt.execute(params![
                    g.address.to_string(),
                    g.services.join(","),
                    g.source.as_str(),
                    g.who,
                    g.note,
                    now,
                    g.expires
                ])?;
                out.push(Grant {
                    id: tx.last_insert_rowid(),
                    address: g.address,
                    services: g.services.clone(),
                    source: g.source,
                    who: g.who.clone(),
                    note: g.note.clone(),
                    created: now,
                    expires: g.expires,
                    hold_until: None,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Removes every grant for `address`; returns what was removed.
    pub fn revoke(&mut self, address: IpAddr) -> Result<Vec<Grant>, StoreError> {
        let tx = self.conn.transaction()?;
        let removed = query_grants(&tx, "WHERE address = ?1", params![address.to_string()])?;
        tx.execute(
            "DELETE FROM grants WHERE address = ?1",
            params![address.to_string()],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Holds every live grant for `address` open until at least `until` (a call is up).
    pub fn hold(&mut self, address: IpAddr, until: UnixMs, now: UnixMs) -> Result<usize, StoreError> {
        let n = self.conn.execute(
            "UPDATE grants SET hold_ms = ?2, end_ms = MAX(expires_ms, ?2)
             WHERE address = ?1 AND end_ms > ?3",
            params![address.to_string(), until, now],
        )?;
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
        let n = self.conn.execute(
            "UPDATE grants SET hold_ms = MIN(?2, expires_ms + ?4),
                               end_ms = MAX(expires_ms, MIN(?2, expires_ms + ?4))
             WHERE address = ?1 AND end_ms > ?3",
            params![address.to_string(), until, now, max_past],
        )?;
        Ok(n)
    }

    /// Drops the holds on `address`'s grants (its calls ended): each ends at its own expiry again,
    /// which may be past — the next prune removes those.
    pub fn release(&mut self, address: IpAddr) -> Result<usize, StoreError> {
        let n = self.conn.execute(
            "UPDATE grants SET hold_ms = NULL, end_ms = expires_ms
             WHERE address = ?1 AND hold_ms IS NOT NULL",
            params![address.to_string()],
        )?;
        Ok(n)
    }

    /// Live grants for one address.
    pub fn grants_for(&self, address: IpAddr, now: UnixMs) -> Result<Vec<Grant>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        query_grants(
            &tx,
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
        let tx = self.conn.unchecked_transaction()?;
        query_grants(
            &tx,
            "WHERE end_ms > ?1 ORDER BY end_ms, id LIMIT ?2",
            params![now, sql_limit(limit)],
        )
    }

    /// Calls `f(address, services, end)` for every live grant without building them all at once:
    /// a reconcile with 100,000 grants needs only these three columns.
    pub fn for_each_live(
        &self,
        now: UnixMs,
        mut f: impl FnMut(IpAddr, &str, UnixMs),
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT address, services, end_ms FROM grants WHERE end_ms > ?1")?;
        let mut rows = stmt.query(params![now])?;
        while let Some(r) = rows.next()? {
            let a = r
                .get_ref(0)?
                .as_str()
                .map_err(|e| StoreError::BadRow(e.to_string()))?;
            let ip = addr::parse_host(a).map_err(|e| StoreError::BadRow(e.to_string()))?;
            let services = r
                .get_ref(1)?
                .as_str()
                .map_err(|e| StoreError::BadRow(e.to_string()))?;
            f(ip, services, r.get(2)?);
        }
        Ok(())
    }

    /// Sets or replaces the ban on `address`.
    pub fn ban(
        &mut self,
        address: IpAddr,
        reason: &str,
        expires: UnixMs,
        now: UnixMs,
    ) -> Result<Ban, StoreError> {
        self.conn.execute(
            "INSERT INTO bans (address, reason, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, expires_ms = excluded.expires_ms",
            params![address.to_string(), reason, now, expires],
        )?;
        let ban = self
            .ban_of(address)?
            .ok_or_else(|| StoreError::BadRow("ban vanished after insert".into()))?;
        Ok(ban)
    }

    pub fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        let ban = self.ban_of(address)?;
        self.conn.execute(
            "DELETE FROM bans WHERE address = ?1",
            params![address.to_string()],
        )?;
        Ok(ban)
    }

    fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        self.conn
            .query_row(
                "SELECT address, reason, created_ms, expires_ms FROM bans WHERE address = ?1",
                params![address.to_string()],
                ban_row,
            )
            .optional()?
            .transpose()
    }

    /// Every live ban, soonest end first.
    pub fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        self.first_live_bans(now, None)
    }

    /// The `limit` live bans that end first (all, without one).
    pub fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT address, reason, created_ms, expires_ms FROM bans WHERE expires_ms > ?1 \
             ORDER BY expires_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, sql_limit(limit)], ban_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Deletes what has ended by `now`; returns it, for the firewall and the audit log.
    pub fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        let tx = self.conn.transaction()?;
        let grants = query_grants(&tx, "WHERE end_ms <= ?1", params![now])?;
        tx.execute("DELETE FROM grants WHERE end_ms <= ?1", params![now])?;
        let bans = {
            let mut stmt = tx.prepare_cached(
                "SELECT address, reason, created_ms, expires_ms FROM bans WHERE expires_ms <= ?1",
            )?;
            let rows = stmt.query_map(params![now], ban_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            out
        };
        tx.execute("DELETE FROM bans WHERE expires_ms <= ?1", params![now])?;
        tx.commit()?;
        Ok((grants, bans))
    }

    /// The next instant anything ends.
    pub fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        let g: Option<i64> = self
            .conn
            .query_row("SELECT MIN(end_ms) FROM grants", [], |r| r.get(0))?;
        let b: Option<i64> = self
            .conn
            .query_row("SELECT MIN(expires_ms) FROM bans", [], |r| r.get(0))?;
        Ok(match (g, b) {
            (Some(g), Some(b)) => Some(g.min(b)),
            (g, b) => g.or(b),
        })
    }

    /// Adds an account with its passcode tag. Fails if the name (or, by a one-in-10^12 chance, the
    /// tag) is taken.
    pub fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO accounts (name, tag, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                a.name,
                &tag[..],
                a.services.join(","),
                a.ttl_secs as i64,
                a.endpoint,
                a.address_modes.join(","),
                a.disabled,
                a.created,
                a.passcode_set,
                a.callers.join(","),
                a.passcode_digits.map(|d| d as i64)
            ],
        )?;
        Ok(())
    }

    /// The account whose passcode has this tag. The caller compares tags again in constant time.
    pub fn account_by_tag(&self, tag: &[u8; 32]) -> Result<Option<(Account, [u8; 32])>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS}, tag FROM accounts WHERE tag = ?1"),
                params![&tag[..]],
                |r| {
                    let stored: Vec<u8> = r.get(10)?;
                    Ok((account_row(r)?, stored))
                },
            )
            .optional()?
            .map(|(a, t)| {
                let tag: [u8; 32] = t
                    .try_into()
                    .map_err(|_| StoreError::BadRow("account tag".into()))?;
                Ok((a, tag))
            })
            .transpose()
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"),
                params![name],
                account_row,
            )
            .optional()?)
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"))?;
        let rows = stmt.query_map([], account_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a new passcode tag; false if there is no such account.
    pub fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE accounts SET tag = ?2, passcode_ms = ?3, passcode_digits = ?4 WHERE name = ?1",
            params![name, &tag[..], now, digits as i64],
        )?;
        Ok(n == 1)
    }

    /// The passcode lengths of enabled accounts; `None` for an account made before lengths were
    /// kept (its passcode may have any allowed length).
    pub fn passcode_lengths(&self) -> Result<Vec<Option<usize>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT passcode_digits FROM accounts WHERE disabled = 0")?;
        let rows = stmt.query_map([], |r| r.get::<_, Option<i64>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.map(|d| d.max(0) as usize));
        }
        Ok(out)
    }

    /// Whether any account lists `number` as its owner's.
    pub fn is_owner_number(&self, number: &str) -> Result<bool, StoreError> {
        if number.is_empty() {
            return Ok(false);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM accounts WHERE ',' || callers || ',' LIKE '%,' || ?1 || ',%'")?;
        Ok(stmt.exists(params![number])?)
    }

    /// Replaces an account's owner numbers; false if there is no such account.
    pub fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE accounts SET callers = ?2 WHERE name = ?1",
            params![name, callers.join(",")],
        )?;
        Ok(n == 1)
    }

    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE accounts SET disabled = ?2 WHERE name = ?1",
            params![name, disabled],
        )?;
        Ok(n == 1)
    }

    pub fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM accounts WHERE name = ?1", params![name])?
            == 1)
    }

    /// (grants, bans) rows held, live or not yet pruned.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let g: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM grants", [], |r| r.get(0))?;
        let b: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM bans", [], |r| r.get(0))?;
        Ok((g as u64, b as u64))
    }

    /// SQLite's own consistency check; "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

fn query_grants(
    tx: &Transaction<'_>,
    filter: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Grant>, StoreError> {
    let mut stmt = tx.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants {filter}"))?;
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
    }))
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let split = |s: String| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Account {
        name: r.get(0)?,
        services: split(r.get(1)?),
        ttl_secs: r.get::<_, i64>(2)?.max(0) as u64,
        endpoint: r.get(3)?,
        address_modes: split(r.get(4)?),
        disabled: r.get(5)?,
        created: r.get(6)?,
        passcode_set: r.get(7)?,
        callers: split(r.get(8)?),
        passcode_digits: r.get::<_, Option<i64>>(9)?.map(|d| d.max(0) as usize),
    })
}

/// Adds [`ADDED_COLUMNS`] that a store made by an older passknock lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let mut stmt = conn.prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?;
        if !stmt.exists(params![column])? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

fn ban_row(r: &Row<'_>) -> rusqlite::Result<Result<Ban, StoreError>> {
    let address: String = r.get(0)?;
    let Ok(ip) = addr::parse_host(&address) else {
        return Ok(Err(StoreError::BadRow(format!("ban {address}"))));
    };
    Ok(Ok(Ban {
        address: ip,
        reason: r.get(1)?,
        created: r.get(2)?,
        expires: r.get(3)?,
    }))
}

/// SQLite's LIMIT: -1 is none.
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64)
}

/// Creates `path` mode 0600, or takes group and other access off an existing one (and its
/// -wal and -shm files).
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(m) = std::fs::metadata(&p) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o700))?;
            }
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::limiter::{Key, Record};

    fn grant(addr: &str, svcs: &[&str], expires: UnixMs) -> NewGrant {
        NewGrant {
            address: addr.parse().unwrap(),
            services: svcs.iter().map(|s| s.to_string()).collect(),
            source: Source::Admin,
            who: "test".into(),
            note: "".into(),
            expires,
        }
    }

    #[test]
    fn a_listing_can_stop_at_the_first_few_ending() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("store.db")).unwrap();
        let new: Vec<NewGrant> = (1..=5)
            .rev()
            .map(|i| grant(&format!("203.0.113.{i}"), &["sip"], 1_000 + i * 100))
            .collect();
        s.insert_grants(&new, 1_000).unwrap();
        for i in 1..=3 {
            s.ban(format!("198.51.100.{i}").parse().unwrap(), "t", 5_000 - i, 1_000)
                .unwrap();
        }
        let first = s.first_live_grants(1_000, Some(2)).unwrap();
        let addrs: Vec<String> = first.iter().map(|g| g.address.to_string()).collect();
        assert_eq!(addrs, ["203.0.113.1", "203.0.113.2"]);
        assert_eq!(s.first_live_grants(1_000, None).unwrap().len(), 5);
        let bans = s.first_live_bans(1_000, Some(1)).unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].address.to_string(), "198.51.100.3");
    }

    #[test]
    fn the_store_is_private_and_a_loose_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut s = Store::open(&path).unwrap();
        s.ban("198.51.100.66".parse().unwrap(), "test", 3_000, 1_000)
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("store.db-wal")), 0o600);
        drop(s);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(s.counts().unwrap(), (0, 1), "nothing lost");
    }

    #[test]
    fn grants_survive_reopen_and_prune_by_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/store.db");
        let mut s = Store::open(&path).unwrap();
        s.insert_grants(
            &[
                grant("203.0.113.7", &["sip", "rtp"], 2_000),
                grant("2001:db8::7", &["sip"], 5_000),
            ],
            1_000,
        )
        .unwrap();
        s.ban("198.51.100.66".parse().unwrap(), "test", 3_000, 1_000)
            .unwrap();
        drop(s);
        let mut s = Store::open(&path).unwrap();
        let live = s.live_grants(1_500).unwrap();
        assert_eq!(live.len(), 2);
        assert_eq!(live[0].services, vec!["sip", "rtp"]);
        assert_eq!(s.next_end().unwrap(), Some(2_000));
        let (g, b) = s.prune(2_000).unwrap();
        assert_eq!((g.len(), b.len()), (1, 0));
        let (g, b) = s.prune(3_000).unwrap();
        assert_eq!((g.len(), b.len()), (0, 1));
        assert_eq!(s.counts().unwrap(), (1, 0));
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn hold_extends_end_and_revoke_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        s.insert_grants(
            &[
                grant("203.0.113.7", &["sip"], 2_000),
                grant("203.0.113.7", &["rtp"], 3_000),
            ],
            1_000,
        )
        .unwrap();
        assert_eq!(s.hold(a, 10_000, 1_500).unwrap(), 2);
        assert!(s.grants_for(a, 5_000).unwrap().iter().all(|g| g.end() == 10_000));
        assert_eq!(s.revoke(a).unwrap().len(), 2);
        assert!(s.grants_for(a, 0).unwrap().is_empty());
    }

    #[test]
    fn hold_is_capped_past_expiry_and_release_restores_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        s.insert_grants(
            &[
                grant("203.0.113.7", &["sip"], 2_000),
                grant("203.0.113.7", &["rtp"], 50_000),
            ],
            1_000,
        )
        .unwrap();
        // Held to 9,000 but at most 5,000 past each expiry: 7,000 and (not shortened) 50,000.
        assert_eq!(s.hold_capped(a, 9_000, 5_000, 1_500).unwrap(), 2);
        let ends: Vec<i64> = s.grants_for(a, 1_500).unwrap().iter().map(|g| g.end()).collect();
        assert_eq!(ends, vec![7_000, 50_000]);
        assert_eq!(s.release(a).unwrap(), 2);
        assert_eq!(s.next_end().unwrap(), Some(2_000));
        let (gone, _) = s.prune(3_000).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(s.release(a).unwrap(), 0);
        assert_eq!(Source::parse("ami"), Some(Source::Ami));
    }

    #[test]
    fn replay_log_survives_reopen_and_forgets_aged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        let log = ReplayLog::open(&path).unwrap();
        log.remember("spa:1:aa", 5_000).unwrap();
        log.remember("rot:phone:7", 2_000).unwrap();
        log.remember("spa:1:aa", 4_000).unwrap();
        drop(log);
        let _store = Store::open(&path).unwrap();
        let log = ReplayLog::open(&path).unwrap();
        assert_eq!(log.load(3_000).unwrap(), vec![("spa:1:aa".to_string(), 5_000)]);
        assert!(log.load(5_000).unwrap().is_empty());
    }

    #[test]
    fn accounts_by_tag_never_by_passcode() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let a = Account {
            name: "ann".into(),
            services: vec!["sip".into(), "rtp".into()],
            ttl_secs: 7200,
            endpoint: Some("701".into()),
            address_modes: vec!["source".into(), "keyed".into()],
            disabled: false,
            created: 1,
            passcode_set: 1,
            callers: vec!["15550100100".into()],
            passcode_digits: Some(12),
        };
        s.add_account(&a, &[7u8; 32]).unwrap();
        assert!(s.add_account(&a, &[8u8; 32]).is_err(), "names are unique");
        let mut b = a.clone();
        b.name = "bob".into();
        assert!(s.add_account(&b, &[7u8; 32]).is_err(), "tags are unique");
        assert_eq!(s.account_by_tag(&[7u8; 32]).unwrap().unwrap().0, a);
        assert!(s.account_by_tag(&[9u8; 32]).unwrap().is_none());
        assert!(s.is_owner_number("15550100100").unwrap());
        assert!(!s.is_owner_number("5550100100").unwrap(), "whole numbers only");
        assert!(!s.is_owner_number("").unwrap());
        assert!(s.set_callers("ann", &[]).unwrap());
        assert!(!s.is_owner_number("15550100100").unwrap());
        assert_eq!(s.passcode_lengths().unwrap(), vec![Some(12)]);
        assert!(s.set_passcode("ann", &[9u8; 32], 14, 5).unwrap());
        assert_eq!(s.passcode_lengths().unwrap(), vec![Some(14)]);
        assert!(s.account_by_tag(&[7u8; 32]).unwrap().is_none());
        assert!(s.set_disabled("ann", true).unwrap());
        assert!(s.account("ann").unwrap().unwrap().disabled);
        assert_eq!(s.accounts().unwrap().len(), 1);
        assert!(s.remove_account("ann").unwrap());
        assert!(!s.remove_account("ann").unwrap());
    }

    #[test]
    fn disa_limits_survive_reopening_and_old_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap();
        let mut log = LimitLog::open(&path).unwrap();
        let locked = Record {
            failures: vec![],
            locked_until: 10_000,
        };
        let old = Record {
            failures: vec![100],
            locked_until: 0,
        };
        let global = Record {
            failures: vec![100, 4_000],
            locked_until: 0,
        };
        log.save(
            &[
                (Key::Number("111".into()), locked.clone()),
                (Key::Address("203.0.113.9".parse().unwrap()), old),
                (Key::Global, global.clone()),
                (Key::Number("222".into()), Record::default()),
            ],
            5_000,
        )
        .unwrap();
        drop(log);
        let log = LimitLog::open(&path).unwrap();
        let mut kept = log.load(5_000, 1_000).unwrap();
        kept.sort_by_key(|(k, _)| k.parts());
        assert_eq!(
            kept,
            vec![(Key::Global, global), (Key::Number("111".into()), locked)],
            "the lockout and the recent global count stay; a stale failure goes"
        );
    }

    /// A store made before owner numbers and passcode lengths gets the new columns at open.
    #[test]
    fn a_version_1_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE accounts (name TEXT PRIMARY KEY, tag BLOB NOT NULL UNIQUE,
                 services TEXT NOT NULL, ttl_secs BIGINT NOT NULL, endpoint TEXT,
                 address_modes TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
                 created_ms BIGINT NOT NULL, passcode_ms BIGINT NOT NULL);
                 INSERT INTO accounts VALUES ('old', x'07', 'sip', 60, NULL, 'source', 0, 1, 1);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let a = s.account("old").unwrap().unwrap();
        assert!(a.callers.is_empty());
        assert_eq!(s.passcode_lengths().unwrap(), vec![None], "length unknown");
    }

    /// A store from before the history gets the `events` table at open, and keeps what it had.
    #[test]
    fn a_version_2_store_gets_the_history_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.ban("198.51.100.66".parse().unwrap(), "old", 9_000, 1_000)
                .unwrap();
            s.conn
                .execute_batch("DROP TABLE events; PRAGMA user_version = 2;")
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let version: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(s.counts().unwrap(), (0, 1));
        let mut log = crate::store::history::EventLog::open(&path).unwrap();
        log.append(&[crate::model::Event::new(crate::model::Kind::Reload, 1_000)])
            .unwrap();
        assert_eq!(log.query(0, None, None, 10).unwrap().0.len(), 1);
    }

    #[test]
    fn ban_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        s.ban(a, "first", 2_000, 1_000).unwrap();
        let b = s.ban(a, "again", 9_000, 1_500).unwrap();
        assert_eq!((b.reason.as_str(), b.expires), ("again", 9_000));
        assert_eq!(s.live_bans(0).unwrap().len(), 1);
        assert!(s.unban(a).unwrap().is_some());
        assert!(s.unban(a).unwrap().is_none());
    }
}
