//! The expiry store: grants, bans, accounts, DISA limits and the audit history's table in SQLite,
//! durable before any call returns.
//!
//! Times are Unix milliseconds so entries survive restarts with their remaining life. The schema
//! sticks to plain types (integers, text) so the same tables can live in PostgreSQL for a cluster.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::model::{Ban, Grant};
use bans::ban_row;
use grants::query_grants;

pub use crate::base::clock::{now_ms, UnixMs};
pub use db::Db;
pub use grants::{GrantWrite, GrantsWritten};
pub use side::{LimitLog, OffenderLog, ReplayLog};

mod accounts;
mod bans;
mod db;
mod grants;
pub mod history;
pub mod pg;
pub(crate) mod schema;
mod side;
mod standing;

/// Where the store is: a SQLite file on one box, or a PostgreSQL database a cluster shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres(pg::Target),
}

impl std::fmt::Display for Location {
    /// The file, or the URL without any password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(t) => f.write_str(&t.shown()),
        }
    }
}

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
    #[error("the store URL {url} cannot be used: {reason}")]
    PgUrl { url: String, reason: String },
    #[error("cannot reach the store's PostgreSQL server at {server}: {reason}")]
    PgUnreachable { server: String, reason: String },
    #[error(
        "the PostgreSQL server at {server} refused the login of {user} to database {database}: {reason}"
    )]
    PgLogin {
        server: String,
        user: String,
        database: String,
        reason: String,
    },
    #[error(
        "the store database {database} has schema version {found}; this passknock knows version {known} \
         only, so it leaves the database alone (every node must run the same passknock)"
    )]
    PgSchema {
        database: String,
        found: i64,
        known: i64,
    },
    #[error("lost the connection to the store's PostgreSQL server at {server}: {reason}")]
    PgLost { server: String, reason: String },
    /// The connection went in the middle of a call: a write in it may have taken or not. Every
    /// node follows what the store holds either way.
    #[error("lost the connection to the store's PostgreSQL server at {server} during the call, so whether it was written is not known (`passknock list` says): {reason}")]
    PgInDoubt { server: String, reason: String },
    #[error("store (PostgreSQL): {0}")]
    Pg(String),
}

/// The store. One connection; the daemon's engine thread is its only user.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

// What spans grants and bans lives here; each table's own methods are in its file (grants.rs,
// bans.rs, accounts.rs), opening and the schema in schema.rs.
impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes what has ended by `now`; returns it, for the firewall and the audit log.
    pub fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        let tx = self.conn.transaction()?;
        let grants = query_grants(&tx, "WHERE end_ms <= ?1", params![now])?;
        tx.prepare_cached("DELETE FROM grants WHERE end_ms <= ?1")?
            .execute(params![now])?;
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
        tx.prepare_cached("DELETE FROM bans WHERE expires_ms <= ?1")?
            .execute(params![now])?;
        tx.commit()?;
        Ok((grants, bans))
    }

    /// The next instant anything ends.
    pub fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        let g: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(end_ms) FROM grants")?
            .query_row([], |r| r.get(0))?;
        let b: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(expires_ms) FROM bans")?
            .query_row([], |r| r.get(0))?;
        Ok(match (g, b) {
            (Some(g), Some(b)) => Some(g.min(b)),
            (g, b) => g.or(b),
        })
    }

    /// (grants, bans) rows held, live or not yet pruned: read from `live_counts`, which the
    /// store's triggers keep, so it costs the same at any size.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let (g, b): (i64, i64) = self
            .conn
            .prepare_cached(schema::READ_LIVE_COUNTS)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((g.max(0) as u64, b.max(0) as u64))
    }
}

/// SQLite's LIMIT: -1 is none.
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64)
}

#[cfg(test)]
mod tests;
