//! The store on PostgreSQL, shared by the nodes of a cluster: the same methods as SQLite's `Store`,
//! every write also announced to the other nodes.
//!
//! Times: the engine passes `now` from [`crate::base::clock::now_ms`], which [`PgStore::open`]
//! moves onto the database server's clock, so nodes whose own clocks disagree still agree on
//! when a grant ends. Each write transaction ends with a `NOTIFY passknock` naming the addresses
//! it changed (see [`notify`]); a [`Follower`] on every other node hears it on commit.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::base::clock::UnixMs;
use crate::model::{Ban, Grant};

pub use conn::Target;
pub use follow::{Change, Follower};
pub use link::{Link, LinkState};

use super::StoreError;
use conn::Conn;
use notify::Touched;

mod accounts;
mod bans;
mod conn;
mod follow;
mod grants;
mod link;
mod notify;
mod schema;
mod standing;
// The side tables' and the history's queries.
pub(crate) mod history;
pub(crate) mod side;

/// Marks node `$1` alive now, on the database's clock.
const HEARTBEAT: &str = "INSERT INTO nodes (name, last_seen_ms)
     VALUES ($1, (extract(epoch from clock_timestamp()) * 1000)::bigint)
     ON CONFLICT (name) DO UPDATE SET last_seen_ms = excluded.last_seen_ms";

/// The shared store, through one connection of its own (made again after it is lost).
pub struct PgStore {
    conn: Conn,
    /// The follower's view of the link, shared with it and with the reader.
    link: std::sync::Arc<Link>,
    /// The server's clock minus ours, in ms, as measured at open.
    offset: i64,
}

impl PgStore {
    /// Logs in, makes or checks the schema, measures the server's clock against ours (and moves
    /// [`crate::base::clock::now_ms`] onto it), and registers this node.
    pub fn open(target: &Target) -> Result<PgStore, StoreError> {
        let conn = Conn::open(target)?;
        schema::ensure(&conn)?;
        let offset = measure_offset(&conn)?;
        crate::base::clock::set_offset(offset);
        let link: std::sync::Arc<Link> = Default::default();
        let mut conn = conn;
        conn.gate = Some(link.clone());
        let store = PgStore { conn, offset, link };
        store.heartbeat()?;
        Ok(store)
    }

    /// A second connection to the same database, for a thread of its own (the table's
    /// read-back). The clock offset is the one measured at open.
    pub fn reader(&self) -> Result<PgStore, StoreError> {
        let mut conn = self.conn.again()?;
        conn.gate = Some(self.link.clone());
        Ok(PgStore {
            conn,
            offset: self.offset,
            link: self.link.clone(),
        })
    }

    /// Where it lives, for `status`: the URL without any password.
    pub fn path(&self) -> &Path {
        Path::new(&self.conn.shown)
    }

    /// The target it was opened with.
    pub fn target(&self) -> &Target {
        &self.conn.target
    }

    /// The link as the follower sees it, shared with the follower.
    pub fn link(&self) -> std::sync::Arc<Link> {
        self.link.clone()
    }

    /// This node, the database, the link and every node, for `status`. The nodes are read now;
    /// when that fails the link is down, whatever the follower last saw.
    pub fn cluster(&self) -> crate::model::ClusterView {
        let state = self.link.state();
        let (nodes, error) = match self.nodes() {
            Ok(n) => (n, state.error.clone()),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        crate::model::ClusterView {
            node: self.node().to_string(),
            database: self.conn.shown.clone(),
            connected: state.connected && self.connected() && !nodes.is_empty(),
            error,
            lost_since: state.lost_since,
            resynced: state.resynced,
            followed: state.followed,
            pending_bans: 0,
            nodes,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.conn.target.node
    }

    /// The server's clock minus ours, in ms, as measured at open.
    pub fn clock_offset(&self) -> i64 {
        self.offset
    }

    /// Whether the connection was up at its last call; the next call tries to log in again if
    /// not ([`PgStore::heartbeat`] is the cheapest such call).
    pub fn connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Marks this node alive now, on the database's clock.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        let node = self.node().to_string();
        self.conn.with(move |s| {
            let st = s.prep(HEARTBEAT)?;
            s.client.execute(&st, &[&node])?;
            Ok(())
        })
    }

    /// One transaction of `f`; when `f` says it changed anything, `bump` (a counter's update)
    /// runs and every node hears `*`, all in the same transaction.
    fn write_all<T: Send>(
        &mut self,
        bump: Option<&'static str>,
        f: impl FnOnce(
                &mut postgres::Transaction<'_>,
                &mut std::collections::HashMap<&'static str, postgres::Statement>,
            ) -> Result<(T, bool), postgres::Error>
            + Send,
    ) -> Result<T, StoreError> {
        let node = self.node().to_string();
        self.conn.with(move |s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let (out, changed) = f(&mut tx, stmts)?;
            if changed {
                if let Some(sql) = bump {
                    let st = conn::prep(stmts, &mut tx, sql)?;
                    tx.execute(&st, &[])?;
                }
                notify::send(&mut tx, stmts, &node, &Touched::All)?;
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// The cluster's nodes and their last sign of life (database time), by name.
    pub fn nodes(&self) -> Result<Vec<(String, UnixMs)>, StoreError> {
        self.conn.with(|s| {
            let st = s.prep("SELECT name, COALESCE(last_seen_ms, 0) FROM nodes ORDER BY name")?;
            Ok(s.client
                .query(&st, &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// Deletes what has ended by `now`; returns it, for the firewall and the audit log. With
    /// several nodes the first to prune gets the rows; the others' kernel timeouts close the same
    /// access at the same instant.
    pub fn prune(&mut self, now: UnixMs) -> Result<(Vec<Grant>, Vec<Ban>), StoreError> {
        let node = self.node().to_string();
        let (grants, bans) = self.conn.with(move |s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let g = conn::prep(
                stmts,
                &mut tx,
                "DELETE FROM grants WHERE end_ms <= $1 RETURNING id, address, services, source, who, note, created_ms, expires_ms, hold_ms, node",
            )?;
            let grants = tx.query(&g, &[&now])?;
            let b = conn::prep(
                stmts,
                &mut tx,
                "DELETE FROM bans WHERE expires_ms <= $1 RETURNING address, reason, created_ms, expires_ms",
            )?;
            let bans = tx.query(&b, &[&now])?;
            let addrs = grants
                .iter()
                .chain(bans.iter())
                .map(|r| r.get::<_, String>("address"))
                .collect::<Vec<_>>();
            notify::send(&mut tx, stmts, &node, &Touched::Texts(addrs))?;
            tx.commit()?;
            Ok((grants, bans))
        })?;
        let grants = grants.iter().map(grants::grant_row).collect::<Result<_, _>>()?;
        let bans = bans.iter().map(bans::ban_row).collect::<Result<_, _>>()?;
        Ok((grants, bans))
    }

    /// The next instant anything ends.
    pub fn next_end(&self) -> Result<Option<UnixMs>, StoreError> {
        self.conn.with(|s| {
            let st =
                s.prep("SELECT LEAST((SELECT MIN(end_ms) FROM grants), (SELECT MIN(expires_ms) FROM bans))")?;
            Ok(s.client.query_one(&st, &[])?.get(0))
        })
    }

    /// (grants, bans) rows held, live or not yet pruned: summed over `live_counts`, which the
    /// schema's triggers keep, a row per writing connection.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        self.conn.with(|s| {
            let st = s.prep(crate::store::schema::READ_LIVE_COUNTS)?;
            let r = s.client.query_one(&st, &[])?;
            Ok((r.get::<_, i64>(0).max(0) as u64, r.get::<_, i64>(1).max(0) as u64))
        })
    }

    /// What PostgreSQL can say of the store's soundness: "ok" when every table is there and the
    /// schema version is this passknock's (the server checks its own pages itself).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let (missing, version) = self.conn.with(|s| schema::check(&mut s.client))?;
        let known = super::schema::SCHEMA_VERSION;
        Ok(match (missing.is_empty(), version) {
            (true, Some(v)) if v == known => "ok".into(),
            (true, v) => format!("schema version {v:?}, expected {known}"),
            (false, _) => format!("missing tables: {}", missing.join(", ")),
        })
    }
}

/// The server's clock minus ours in ms: the reading with the shortest round trip of a few, taken
/// against the middle of that round trip.
fn measure_offset(conn: &Conn) -> Result<i64, StoreError> {
    fn ours_us() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    }
    conn.with(|s| {
        let st = s.prep("SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint")?;
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..5 {
            let before = ours_us();
            let theirs: i64 = s.client.query_one(&st, &[])?.get(0);
            let after = ours_us();
            let round_trip = after - before;
            let offset = theirs - (before + after) / 2;
            if best.is_none_or(|(rt, _)| round_trip < rt) {
                best = Some((round_trip, offset));
            }
        }
        Ok(best.map_or(0, |(_, o)| (o as f64 / 1000.0).round() as i64))
    })
}
