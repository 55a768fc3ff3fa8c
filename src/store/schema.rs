//! Opening the store: its file and directory made private, the schema, and upgrades of older stores.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::{Store, StoreError};

/// 2: accounts' owner numbers and passcode length; DISA limits kept across restarts.
/// 3: the audit history (`events`), written by [`crate::store::history::EventLog`]. A version 2 store
/// gets the table at open (`CREATE TABLE IF NOT EXISTS`); nothing else changes.
/// 4: standing entries (`standing`) and what their DNS names last resolved to (`standing_names`);
/// new tables, made at open the same way.
/// 5: node on grants and events: which node of a cluster granted, or saw, what (empty on one box
/// and in rows written before). Added to older stores at open; the PostgreSQL store
/// (src/store/pg/schema.rs) has the same tables and version.
/// 6: `live_counts`, the grants and bans held, kept by triggers on every insert and delete, so the
/// live gauges and `status` read a row or two rather than counting every grant and ban. Made and
/// filled at open in an older store.
pub(crate) const SCHEMA_VERSION: i64 = 6;

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
    end_ms      BIGINT  NOT NULL,
    node        TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS grants_address ON grants (address);
CREATE INDEX IF NOT EXISTS grants_end ON grants (end_ms);
CREATE INDEX IF NOT EXISTS grants_who ON grants (who);
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
    passcode_digits INTEGER,
    keep_several  INTEGER NOT NULL DEFAULT 0
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
    minute      BIGINT,
    node        TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_time ON events (time_ms);
-- A flood's events share their minute's row; every other row has no minute, and NULLs never
-- collide in a unique index, so it holds one row per event.
CREATE UNIQUE INDEX IF NOT EXISTS events_flood ON events (kind, address, who, minute);
-- Standing entries: targets and services are comma-separated, as grants' services are.
CREATE TABLE IF NOT EXISTS standing (
    name        TEXT    PRIMARY KEY,
    targets     TEXT    NOT NULL,
    services    TEXT    NOT NULL,
    note        TEXT    NOT NULL DEFAULT '',
    who         TEXT    NOT NULL DEFAULT '',
    created_ms  BIGINT  NOT NULL
);
-- One row per DNS name followed: the addresses in force (comma-separated) and when it answered.
CREATE TABLE IF NOT EXISTS standing_names (
    name            TEXT    PRIMARY KEY,
    addresses       TEXT    NOT NULL DEFAULT '',
    checked_ms      BIGINT,
    resolved_ms     BIGINT,
    changed_ms      BIGINT,
    failing_ms      BIGINT,
    error           TEXT
);
";

/// The triggers that keep `live_counts`: SQLite's store has one writer at a time, so one row per
/// table (writer ''). An upsert that updates fires no insert trigger, and the store never uses
/// `INSERT OR REPLACE` on these tables (its delete would not be counted).
const COUNT_TRIGGERS: [&str; 4] = ["grants_added", "grants_removed", "bans_added", "bans_removed"];

/// Makes `live_counts` and its triggers, filled from the rows there: run in one transaction,
/// so no write falls between the count and the triggers.
const MAKE_LIVE_COUNTS: &str = "
CREATE TABLE IF NOT EXISTS live_counts (
    name    TEXT    NOT NULL,
    writer  TEXT    NOT NULL DEFAULT '',
    value   BIGINT  NOT NULL,
    PRIMARY KEY (name, writer)
);
DELETE FROM live_counts;
INSERT INTO live_counts (name, value) SELECT 'grants', COUNT(*) FROM grants;
INSERT INTO live_counts (name, value) SELECT 'bans', COUNT(*) FROM bans;
CREATE TRIGGER grants_added AFTER INSERT ON grants
    BEGIN UPDATE live_counts SET value = value + 1 WHERE name = 'grants'; END;
CREATE TRIGGER grants_removed AFTER DELETE ON grants
    BEGIN UPDATE live_counts SET value = value - 1 WHERE name = 'grants'; END;
CREATE TRIGGER bans_added AFTER INSERT ON bans
    BEGIN UPDATE live_counts SET value = value + 1 WHERE name = 'bans'; END;
CREATE TRIGGER bans_removed AFTER DELETE ON bans
    BEGIN UPDATE live_counts SET value = value - 1 WHERE name = 'bans'; END;
";

/// The grants and bans held, summed over `live_counts`' writers: the same query on both backends
/// (PostgreSQL's store keeps a row per writing connection).
pub(crate) const READ_LIVE_COUNTS: &str = "SELECT
    CAST(COALESCE((SELECT SUM(value) FROM live_counts WHERE name = 'grants'), 0) AS BIGINT),
    CAST(COALESCE((SELECT SUM(value) FROM live_counts WHERE name = 'bans'), 0) AS BIGINT)";

/// Columns added to a table after version 1, for stores made before them.
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("accounts", "callers", "TEXT NOT NULL DEFAULT ''"),
    ("accounts", "passcode_digits", "INTEGER"),
    ("accounts", "keep_several", "INTEGER NOT NULL DEFAULT 0"),
    ("grants", "node", "TEXT NOT NULL DEFAULT ''"),
    ("events", "node", "TEXT NOT NULL DEFAULT ''"),
];

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
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL with FULL sync: a commit is on disk before it returns, and a crash at any instant
        // leaves either the old or the new state, never a torn one.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        wait_when_busy(&mut conn).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
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
        keep_live_counts(&mut conn).map_err(open_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A second, read-only connection to the same file, for a thread of its own (the table's
    /// read-back): WAL lets it read a consistent snapshot while the engine writes.
    pub fn reader(&self) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: self.path.clone(),
            source,
        };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&self.path, flags).map_err(open_err)?;
        wait_when_busy(&mut conn).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
        Ok(Store {
            conn,
            path: self.path.clone(),
        })
    }

    /// SQLite's own consistency check; "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// Statements a store connection keeps compiled. Every statement on the paths a request takes
/// is prepared through the cache: parsing and planning it again cost more than running it,
/// and SQLite's default of 16 is fewer than the engine and the DISA listener use between them.
const STATEMENTS_KEPT: usize = 64;

/// How long a connection waits for another's write before its own fails as busy.
pub(super) const BUSY_LIMIT: Duration = Duration::from_secs(5);

/// Makes `conn` wait, not fail, while another connection of this process writes: the engine,
/// the history writer and the listeners' own tables share one file. SQLite's own wait sleeps
/// 1, 2, 5, 10 ms and more between tries, so an engine commit that met a history batch would
/// sleep far longer than the batch held the lock (no figure measured so far showed it). Here
/// the tries come every 50 µs at first, growing to 1 ms, for [`BUSY_LIMIT`] in all.
pub(crate) fn wait_when_busy(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(try_again))
}

/// SQLite's busy handler: `tries` is how many times it has been called for this wait.
fn try_again(tries: i32) -> bool {
    let pause = busy_pause(tries);
    if busy_waited(tries) >= BUSY_LIMIT {
        return false;
    }
    std::thread::sleep(pause);
    true
}

/// The pause before try `tries + 1`: 50 µs for the first 20, 250 µs up to 100, then 1 ms.
pub(super) fn busy_pause(tries: i32) -> Duration {
    match tries {
        ..20 => Duration::from_micros(50),
        20..100 => Duration::from_micros(250),
        _ => Duration::from_millis(1),
    }
}

/// The time slept over the first `tries` pauses.
pub(super) fn busy_waited(tries: i32) -> Duration {
    let t = tries.max(0) as u32;
    let fine = t.min(20);
    let mid = t.clamp(20, 100) - 20;
    let coarse = t.saturating_sub(100);
    Duration::from_micros(50) * fine + Duration::from_micros(250) * mid + Duration::from_millis(1) * coarse
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

/// Makes [`MAKE_LIVE_COUNTS`] unless all its triggers are there (a store from before version 6, or
/// one whose triggers were dropped by hand: the counts are taken again from the rows).
fn keep_live_counts(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut there = 0;
    for name in COUNT_TRIGGERS {
        let mut stmt = tx.prepare("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?1")?;
        there += usize::from(stmt.exists(params![name])?);
    }
    if there < COUNT_TRIGGERS.len() {
        for name in COUNT_TRIGGERS {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {name}"))?;
        }
        tx.execute_batch(MAKE_LIVE_COUNTS)?;
    }
    tx.commit()
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
