//! The shared store's schema: SQLite's tables in PostgreSQL's types, made once under a lock, and a
//! database of another version refused.

use postgres::Client;

use super::conn::Conn;
use crate::store::schema::SCHEMA_VERSION;
use crate::store::StoreError;

/// Any fixed number: the advisory lock two nodes starting together take, so one makes the schema
/// and the other finds it made.
const SCHEMA_LOCK: i64 = 0x7061_7373_6b6e_6f63; // "passknoc"

/// The same tables and columns as SQLite's (src/store/schema.rs), plus `nodes` and `offenders`
/// (shared only in a cluster) and `counters` (the accounts' change counter SQLite gets from
/// `PRAGMA data_version`). Integers are BIGINT so both backends bind i64; flags are BOOLEAN.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS grants (
    id          BIGSERIAL PRIMARY KEY,
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
    tag           BYTEA   NOT NULL UNIQUE,
    services      TEXT    NOT NULL,
    ttl_secs      BIGINT  NOT NULL,
    endpoint      TEXT,
    address_modes TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms    BIGINT  NOT NULL,
    passcode_ms   BIGINT  NOT NULL,
    callers       TEXT    NOT NULL DEFAULT '',
    passcode_digits BIGINT,
    keep_several  BOOLEAN NOT NULL DEFAULT FALSE
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
    id          BIGSERIAL PRIMARY KEY,
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
CREATE UNIQUE INDEX IF NOT EXISTS events_flood ON events (kind, address, who, minute);
CREATE TABLE IF NOT EXISTS standing (
    name        TEXT    PRIMARY KEY,
    targets     TEXT    NOT NULL,
    services    TEXT    NOT NULL,
    note        TEXT    NOT NULL DEFAULT '',
    who         TEXT    NOT NULL DEFAULT '',
    created_ms  BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS standing_names (
    name            TEXT    PRIMARY KEY,
    addresses       TEXT    NOT NULL DEFAULT '',
    checked_ms      BIGINT,
    resolved_ms     BIGINT,
    changed_ms      BIGINT,
    failing_ms      BIGINT,
    error           TEXT
);
-- The cluster's nodes and their last sign of life, on the database's clock.
CREATE TABLE IF NOT EXISTS nodes (
    name          TEXT    PRIMARY KEY,
    last_seen_ms  BIGINT
);
-- AMI offenders' recent failures, so failures seen at several nodes add up to one ban.
CREATE TABLE IF NOT EXISTS offenders (
    address     TEXT    PRIMARY KEY,
    failures    TEXT    NOT NULL,
    last_ms     BIGINT  NOT NULL
);
-- Change counters: 'accounts' moves on every write to accounts (what DISA's caches key on).
CREATE TABLE IF NOT EXISTS counters (
    name        TEXT    PRIMARY KEY,
    value       BIGINT  NOT NULL
);
INSERT INTO counters (name, value) VALUES ('accounts', 0) ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS schema_version (
    version     BIGINT  NOT NULL
);
";

/// Version 6's `live_counts` and the triggers that keep it, filled from the rows there. A row per
/// table and writing connection (by its `application_name`, `passknock <node>` for the daemon's),
/// so nodes writing at once never wait on one another's count, nor deadlock over it; the count is
/// the sum. A trigger runs once per statement, so a prune of thousands of rows adds one to a row.
/// Run with the grants and bans locked against writes, so none falls between count and trigger.
const COUNTING: &str = "
CREATE TABLE live_counts (
    name    TEXT    NOT NULL,
    writer  TEXT    NOT NULL DEFAULT '',
    value   BIGINT  NOT NULL,
    PRIMARY KEY (name, writer)
);
INSERT INTO live_counts (name, value) SELECT 'grants', COUNT(*) FROM grants;
INSERT INTO live_counts (name, value) SELECT 'bans', COUNT(*) FROM bans;
CREATE FUNCTION passknock_counted_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_counts (name, writer, value)
        SELECT TG_TABLE_NAME, current_setting('application_name'), COUNT(*) FROM added
        HAVING COUNT(*) > 0
        ON CONFLICT (name, writer) DO UPDATE SET value = live_counts.value + excluded.value;
    RETURN NULL;
END $$;
CREATE FUNCTION passknock_counted_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_counts (name, writer, value)
        SELECT TG_TABLE_NAME, current_setting('application_name'), -COUNT(*) FROM removed
        HAVING COUNT(*) > 0
        ON CONFLICT (name, writer) DO UPDATE SET value = live_counts.value + excluded.value;
    RETURN NULL;
END $$;
CREATE TRIGGER grants_added AFTER INSERT ON grants REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION passknock_counted_in();
CREATE TRIGGER grants_removed AFTER DELETE ON grants REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION passknock_counted_out();
CREATE TRIGGER bans_added AFTER INSERT ON bans REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION passknock_counted_in();
CREATE TRIGGER bans_removed AFTER DELETE ON bans REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION passknock_counted_out();
";

/// The version before `live_counts`, which [`ensure`] upgrades in place.
const BEFORE_COUNTS: i64 = 5;

/// Every table the schema makes, for the integrity check.
pub(super) const TABLES: [&str; 13] = [
    "grants",
    "bans",
    "knock_replay",
    "accounts",
    "disa_limits",
    "events",
    "standing",
    "standing_names",
    "nodes",
    "offenders",
    "counters",
    "schema_version",
    "live_counts",
];

/// Makes the schema in an empty database, upgrades a version 5 one (adds `live_counts`), or
/// checks the version of the one there. Under a transaction-scoped advisory lock, so two nodes
/// starting on a fresh database do not both make it: the second waits, then finds it made.
pub(super) fn ensure(conn: &Conn) -> Result<(), StoreError> {
    let found = conn.with(|s| {
        let mut tx = s.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        let found = version(&mut tx)?;
        match found {
            None => {
                tx.batch_execute(SCHEMA)?;
                tx.batch_execute(COUNTING)?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )?;
            }
            Some(BEFORE_COUNTS) => {
                // Nodes of the older version may be writing: they wait here, and their writes
                // after it are counted by the triggers.
                tx.batch_execute("LOCK TABLE grants, bans IN SHARE ROW EXCLUSIVE MODE")?;
                tx.batch_execute(COUNTING)?;
                tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])?;
            }
            Some(_) => {}
        }
        tx.commit()?;
        Ok(found.map(|v| if v == BEFORE_COUNTS { SCHEMA_VERSION } else { v }))
    })?;
    match found {
        Some(v) if v != SCHEMA_VERSION => Err(StoreError::PgSchema {
            database: conn.shown.clone(),
            found: v,
            known: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// The schema's version, or `None` in a database passknock never used.
fn version(c: &mut impl postgres::GenericClient) -> Result<Option<i64>, postgres::Error> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(c.query_opt("SELECT MAX(version) FROM schema_version", &[])?
        .and_then(|r| r.get::<_, Option<i64>>(0)))
}

/// Tables the schema should have and the database lacks, and its version: what
/// `integrity_check` reports.
pub(super) fn check(c: &mut Client) -> Result<(Vec<String>, Option<i64>), postgres::Error> {
    let mut missing = Vec::new();
    for t in TABLES {
        let there: bool = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&t])?.get(0);
        if !there {
            missing.push(t.to_string());
        }
    }
    Ok((missing, version(c)?))
}
