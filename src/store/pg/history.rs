//! The audit history's queries on the shared PostgreSQL store: the same rows as SQLite's, each
//! naming the node that wrote it, so `passknock log` at any node shows the whole cluster's.

use postgres::types::ToSql;

use super::conn::{prep, Conn, Target};
use super::schema;
use crate::store::history::{EventRow, Written};
use crate::store::{StoreError, UnixMs};

const EVENT_COLUMNS: &str = "time_ms, kind, address, who, source, detail, count, node";

/// The history's connection to the shared store; rows it writes carry its node.
pub(crate) struct HistoryConn {
    conn: Conn,
}

fn event_row(r: &postgres::Row) -> EventRow {
    EventRow {
        time: r.get(0),
        kind: r.get(1),
        address: r.get(2),
        who: r.get(3),
        source: r.get(4),
        detail: r.get(5),
        count: r.get(6),
        node: r.get(7),
    }
}

impl HistoryConn {
    pub(crate) fn open(target: &Target) -> Result<HistoryConn, StoreError> {
        let conn = Conn::open(target)?;
        schema::ensure(&conn)?;
        Ok(HistoryConn { conn })
    }

    pub(crate) fn node(&self) -> &str {
        &self.conn.target.node
    }

    /// Writes `rows` in one transaction; flood rows count into their minute's row, whichever node
    /// made it.
    pub(crate) fn append(&self, rows: &[Written]) -> Result<(), StoreError> {
        let node = self.node().to_string();
        self.conn.with(|s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let st = prep(
                stmts,
                &mut tx,
                "INSERT INTO events (time_ms, kind, address, who, source, detail, count, minute, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (kind, address, who, minute)
                 DO UPDATE SET count = events.count + EXCLUDED.count",
            )?;
            for w in rows {
                tx.execute(
                    &st,
                    &[
                        &w.time, &w.kind, &w.address, &w.who, &w.source, &w.detail, &w.count, &w.minute,
                        &node,
                    ],
                )?;
            }
            tx.commit()
        })
    }

    pub(crate) fn prune(&self, before: UnixMs) -> Result<usize, StoreError> {
        self.conn.with(|s| {
            let st = s.prep("DELETE FROM events WHERE time_ms < $1")?;
            Ok(s.client.execute(&st, &[&before])? as usize)
        })
    }

    /// Rows since `since`, newest first, at most `limit`.
    pub(crate) fn query(
        &self,
        since: UnixMs,
        address: Option<String>,
        account: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.conn.with(|s| {
            let st = s.prep(
                "SELECT time_ms, kind, address, who, source, detail, count, node FROM events
                 WHERE time_ms >= $1
                   AND ($2::TEXT IS NULL OR address = $2)
                   AND ($3::TEXT IS NULL OR who = $3 OR who LIKE '%:' || $3)
                 ORDER BY time_ms DESC, id DESC LIMIT $4",
            )?;
            Ok(s.client
                .query(&st, &[&since, &address, &account, &limit])?
                .iter()
                .map(event_row)
                .collect())
        })
    }

    /// (kind, source, count) since `since`.
    pub(crate) fn tally(&self, since: UnixMs) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.conn.with(|s| {
            let st = s.prep(
                "SELECT kind, source, SUM(count)::BIGINT FROM events WHERE time_ms >= $1
                 GROUP BY kind, source",
            )?;
            Ok(s.client
                .query(&st, &[&since])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    /// (name, count) rows of a report's query: `$1` is since, `$2` the limit.
    pub(crate) fn counted(
        &self,
        sql: &str,
        since: UnixMs,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn.with(|s| {
            Ok(s.client
                .query(sql, &[&since as &(dyn ToSql + Sync), &limit])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// The newest rows of `kinds` (a quoted list) since `since`, newest first.
    pub(crate) fn newest(&self, kinds: &str, since: UnixMs, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE time_ms >= $1 AND kind IN ({kinds})
             ORDER BY time_ms DESC, id DESC LIMIT $2"
        );
        self.conn.with(|s| {
            Ok(s.client
                .query(&sql, &[&since as &(dyn ToSql + Sync), &limit])?
                .iter()
                .map(event_row)
                .collect())
        })
    }
}
