//! The history: audit events kept as rows of the store's `events` table, so `passknock log`,
//! `passknock report` and the counts `passknock status` shows survive a restart.
//!
//! Rows are written by a thread of its own, on a connection of its own, like the knock replay log
//! and the DISA limits: events arrive on a bounded queue and are committed in batches, so a call,
//! a knock or the engine never waits on a history write, and a full queue drops the row (counted)
//! rather than slow anyone down. The engine stays the only writer of grants and bans.
//!
//! A flood cannot grow the table without bound between prunes: events an outsider can cause at
//! packet or call rate ([`Kind::floods`]) are counted into one row per kind, address and who per
//! minute, and past [`HISTORY_FLOOD_KEYS`](crate::base::defaults::HISTORY_FLOOD_KEYS) such rows of one
//! kind in a minute, the rest of that minute is counted into one row with no address. So a
//! spoofed flood adds at most 33 rows a minute per kind, whatever its rate.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use rusqlite::{params, Connection, Row};
use tracing::{debug, warn};

use crate::base::addr;
use crate::base::clock::{now_ms, UnixMs};
use crate::base::defaults;
use crate::model::Source;
use crate::model::{Counted, Report};
use crate::model::{Counts, GrantsBySource};
use crate::model::{Event, Kind};
use crate::store::pg::history::HistoryConn;
use crate::store::{Location, StoreError};

const EVENT_COLUMNS: &str = "time_ms, kind, address, who, source, detail, count, node";

/// What a flood row says in place of the sources past the cap.
const OTHER_SOURCES: &str = "from sources past the per-minute cap";

/// The `events` table on a connection of its own.
pub struct EventLog {
    db: Db,
    floods: FloodCap,
}

/// The history's connection: the SQLite file of this box, or the shared store.
enum Db {
    Lite(Connection),
    Pg(Box<HistoryConn>),
}

/// One row as either backend reads it, before it is checked.
pub(crate) struct EventRow {
    pub time: i64,
    pub kind: String,
    pub address: String,
    pub who: String,
    pub source: String,
    pub detail: String,
    pub count: i64,
    pub node: String,
}

/// One row as either backend writes it.
pub(crate) struct Written {
    pub time: i64,
    pub kind: &'static str,
    pub address: String,
    pub who: String,
    pub source: &'static str,
    pub detail: String,
    pub count: i64,
    pub minute: Option<i64>,
}

impl EventLog {
    /// Opens the store at `at` (which `Store::open` has created, with the `events` table).
    pub fn open(at: &Location) -> Result<EventLog, StoreError> {
        let db = match at {
            Location::File(path) => Db::Lite(lite_connection(path)?),
            Location::Postgres(target) => Db::Pg(Box::new(HistoryConn::open(target)?)),
        };
        Ok(EventLog {
            db,
            floods: FloodCap::default(),
        })
    }

    /// Writes `events` in one transaction. Flood kinds are counted into their minute's row.
    pub fn append(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let rows: Vec<Written> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                let minute = e.kind.floods().then(|| e.time.div_euclid(60_000));
                if let Some(m) = minute {
                    self.floods.admit(&mut e, m);
                }
                Written {
                    time: e.time,
                    kind: e.kind.as_str(),
                    address: e.address.map(|a| a.to_string()).unwrap_or_default(),
                    who: e.who,
                    source: e.source.map(Source::as_str).unwrap_or_default(),
                    detail: e.detail,
                    count: e.count.min(i64::MAX as u64) as i64,
                    minute,
                }
            })
            .collect();
        let conn = match &mut self.db {
            Db::Lite(c) => c,
            Db::Pg(p) => return p.append(&rows),
        };
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (time_ms, kind, address, who, source, detail, count, minute)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, address, who, minute)
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for w in rows {
                stmt.execute(params![
                    w.time, w.kind, w.address, w.who, w.source, w.detail, w.count, w.minute
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes rows older than `before`; returns how many.
    pub fn prune(&self, before: UnixMs) -> Result<usize, StoreError> {
        match &self.db {
            Db::Lite(c) => Ok(c
                .prepare_cached("DELETE FROM events WHERE time_ms < ?1")?
                .execute(params![before])?),
            Db::Pg(p) => p.prune(before),
        }
    }

    /// Rows since `since`, newest last: at most `limit`, the newest ones, and whether older ones
    /// were left out. `account` matches a who of `N` or `…:N` (`disa:ann`, `knock:laptop`).
    pub fn query(
        &self,
        since: UnixMs,
        address: Option<IpAddr>,
        account: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let address = address.map(|a| a.to_string());
        let asked = (limit.min(i64::MAX as usize - 1) + 1) as i64;
        let rows = match &self.db {
            Db::Pg(p) => p.query(since, address, account, asked)?,
            Db::Lite(c) => {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE time_ms >= ?1
                       AND (?2 IS NULL OR address = ?2)
                       AND (?3 IS NULL OR who = ?3 OR who LIKE '%:' || ?3)
                     ORDER BY time_ms DESC, id DESC LIMIT ?4"
                ))?;
                let rows = stmt.query_map(params![since, address, account, asked], lite_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        let mut out = rows.into_iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit;
        out.truncate(limit);
        out.reverse();
        Ok((out, more))
    }

    /// What `passknock status` counts, from `since` on.
    pub fn tally(&self, since: UnixMs) -> Result<Counts, StoreError> {
        let rows: Vec<(String, String, i64)> = match &self.db {
            Db::Pg(p) => p.tally(since)?,
            Db::Lite(conn) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT kind, source, SUM(count) FROM events WHERE time_ms >= ?1 GROUP BY kind, source",
                )?;
                let rows = stmt.query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            }
        };
        let mut c = Counts::default();
        for (kind, source, n) in rows {
            let n = n.max(0) as u64;
            let Some(kind) = Kind::parse(&kind) else { continue };
            let GrantsBySource {
                disa,
                knock,
                admin,
                ami,
            } = &mut c.grants;
            let slot = match (kind, Source::parse(&source)) {
                (Kind::Grant, Some(Source::Disa)) => disa,
                (Kind::Grant, Some(Source::Knock)) => knock,
                (Kind::Grant, Some(Source::Admin)) => admin,
                (Kind::Grant, Some(Source::Ami)) => ami,
                (Kind::Ban, _) => &mut c.bans,
                (Kind::PasscodeRefused, _) => &mut c.failed_passcodes,
                (Kind::KnockAccepted, _) => &mut c.knocks_accepted,
                (Kind::KnockRefused, _) => &mut c.knocks_refused,
                (Kind::DisaCall, _) => &mut c.disa_calls,
                (Kind::SipCall, _) => &mut c.sip_calls,
                (Kind::GrantAttempted, _) => &mut c.attempted_grants,
                (Kind::GrantReplaced, _) => &mut c.grants_replaced,
                (Kind::GrantExtended, _) => &mut c.grants_extended,
                _ => continue,
            };
            *slot += n;
        }
        Ok(c)
    }

    /// The report from `since` to `now`: totals, top refused sources, grants per who, and the
    /// newest bans, lockouts and suspensions.
    pub fn report(&self, since: UnixMs, now: UnixMs) -> Result<Report, StoreError> {
        let mut totals: Vec<(Kind, u64)> = self
            .counted(
                "SELECT kind, SUM(count) FROM events WHERE time_ms >= ?1 GROUP BY kind LIMIT ?2",
                since,
                i64::MAX as usize,
            )?
            .into_iter()
            .filter_map(|c| Kind::parse(&c.name).map(|k| (k, c.count)))
            .collect();
        totals.sort();
        let refusals: Vec<String> = crate::model::KINDS
            .iter()
            .filter(|k| k.is_refusal())
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        let top_refused = self.counted(
            &format!(
                "SELECT address, SUM(count) AS n FROM events WHERE time_ms >= ?1 AND address != ''
                   AND kind IN ({}) GROUP BY address ORDER BY n DESC, address LIMIT ?2",
                refusals.join(",")
            ),
            since,
            defaults::REPORT_TOP,
        )?;
        let grants_by_who = self.counted(
            "SELECT who, SUM(count) AS n FROM events WHERE time_ms >= ?1 AND kind = 'grant'
             GROUP BY who ORDER BY n DESC, who LIMIT ?2",
            since,
            defaults::REPORT_ROWS,
        )?;
        let newest = |kinds: &[Kind]| -> Result<Vec<Event>, StoreError> {
            let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect();
            let limit = defaults::REPORT_ROWS as i64;
            let rows = match &self.db {
                Db::Pg(p) => p.newest(&list.join(","), since, limit)?,
                Db::Lite(c) => {
                    let mut stmt = c.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE time_ms >= ?1 AND kind IN ({})
                         ORDER BY time_ms DESC, id DESC LIMIT ?2",
                        list.join(",")
                    ))?;
                    let rows = stmt.query_map(params![since, limit], lite_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
            };
            let mut out = rows.into_iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        };
        Ok(Report {
            since,
            now,
            totals,
            top_refused,
            grants_by_who,
            bans: newest(&[Kind::Ban])?,
            lockouts: newest(&[Kind::LockoutNumber, Kind::LockoutAddress])?,
            suspensions: newest(&[Kind::Suspension])?,
        })
    }

    /// (name, count) rows of `sql`, written for SQLite with `?1` since and `?2` the limit.
    fn counted(&self, sql: &str, since: UnixMs, limit: usize) -> Result<Vec<Counted>, StoreError> {
        let rows: Vec<(String, i64)> = match &self.db {
            Db::Pg(p) => {
                // PostgreSQL numbers its parameters with `$`, and its SUM of BIGINTs is NUMERIC.
                let sql = sql
                    .replace("?1", "$1")
                    .replace("?2", "$2")
                    .replace("SUM(count)", "SUM(count)::BIGINT");
                p.counted(&sql, since, limit as i64)?
            }
            Db::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt.query_map(params![since, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(name, n)| Counted {
                name,
                count: n.max(0) as u64,
            })
            .collect())
    }
}

/// A connection of the history's own to the SQLite file `Store::open` made.
fn lite_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    // History is not an access decision: a power cut may lose the last batch, never a grant
    // (that connection syncs every commit). A crash of the daemon alone loses nothing
    // committed, WAL or not.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    super::schema::wait_when_busy(&mut conn).map_err(open_err)?;
    Ok(conn)
}

fn lite_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        time: r.get(0)?,
        kind: r.get(1)?,
        address: r.get(2)?,
        who: r.get(3)?,
        source: r.get(4)?,
        detail: r.get(5)?,
        count: r.get(6)?,
        node: r.get(7)?,
    })
}

/// A row as an event, or why it is not one.
fn event_of(r: EventRow) -> Result<Event, StoreError> {
    let Some(kind) = Kind::parse(&r.kind) else {
        return Err(StoreError::BadRow(format!("event of kind {}", r.kind)));
    };
    let address = if r.address.is_empty() {
        None
    } else {
        match addr::parse_host(&r.address) {
            Ok(a) => Some(a),
            Err(_) => return Err(StoreError::BadRow(format!("event address {}", r.address))),
        }
    };
    Ok(Event {
        time: r.time,
        kind,
        address,
        who: r.who,
        source: Source::parse(&r.source),
        detail: r.detail,
        count: r.count.max(0) as u64,
        node: r.node,
    })
}

/// How many distinct (address, who) rows each flood kind has had this minute; past the cap, an
/// event loses its address and who and is counted into the minute's one overflow row.
#[derive(Default)]
struct FloodCap {
    minute: i64,
    seen: HashMap<Kind, HashSet<(Option<IpAddr>, String)>>,
}

impl FloodCap {
    fn admit(&mut self, e: &mut Event, minute: i64) {
        if minute > self.minute {
            self.minute = minute;
            self.seen.clear();
        }
        let seen = self.seen.entry(e.kind).or_default();
        let key = (e.address, e.who.clone());
        if seen.contains(&key) {
            return;
        }
        if seen.len() < defaults::HISTORY_FLOOD_KEYS {
            seen.insert(key);
            return;
        }
        e.address = None;
        e.who.clear();
        e.detail = OTHER_SOURCES.into();
    }
}

enum Msg {
    Event(Event),
    /// Answered once every event queued before it is committed.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The daemon's history writer; [`History::install`] makes it where [`submit`] sends.
pub struct History {
    at: Location,
    tx: SyncSender<Msg>,
}

fn send(tx: &SyncSender<Msg>, event: Event) {
    if tx.try_send(Msg::Event(event)).is_err() {
        crate::observe::metrics::METRICS.history_dropped(1);
    }
}

impl History {
    /// Prunes rows past `retention`, then starts the writer thread on the store at `at`.
    pub fn start(at: &Location, retention: Duration) -> Result<History, StoreError> {
        let log = EventLog::open(at)?;
        let retention = retention.as_millis().min(i64::MAX as u128) as i64;
        let pruned = log.prune(now_ms() - retention)?;
        if pruned > 0 {
            debug!("history: {pruned} row(s) past the retention pruned");
        }
        let (tx, rx) = sync_channel(defaults::HISTORY_QUEUE);
        std::thread::Builder::new()
            .name("history".into())
            .spawn(move || write_loop(log, rx, retention))
            .map_err(StoreError::HistoryWriter)?;
        Ok(History { at: at.clone(), tx })
    }

    /// Makes this writer the one [`crate::observe::audit::record`] sends to, for the process's life.
    pub fn install(&self) {
        let tx = self.tx.clone();
        crate::observe::audit::install(move |event| send(&tx, event));
    }

    /// Queues a row on this writer (what [`submit`] does on the installed one).
    pub fn send(&self, event: Event) {
        send(&self.tx, event);
    }

    /// Waits up to `wait` until every row queued so far is committed; false if it was not.
    /// Blocks: call it off the async threads.
    pub fn flush(&self, wait: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(wait).is_ok()
    }

    /// A connection for reading, for the control socket's `log`, `report` and `status`.
    pub fn reader(&self) -> Result<EventLog, StoreError> {
        EventLog::open(&self.at)
    }
}

/// Commits what is queued, in batches, and prunes once every
/// [`HISTORY_PRUNE_EVERY`](defaults::HISTORY_PRUNE_EVERY).
fn write_loop(mut log: EventLog, rx: Receiver<Msg>, retention: i64) {
    let every = defaults::HISTORY_PRUNE_EVERY.as_millis() as i64;
    let mut next_prune = now_ms() + every;
    loop {
        let wait = Duration::from_millis((next_prune - now_ms()).max(0) as u64);
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut events = Vec::new();
        let mut flushes = Vec::new();
        let mut next = first;
        while let Some(m) = next {
            match m {
                Msg::Event(e) => events.push(e),
                Msg::Flush(done) => flushes.push(done),
            }
            next = if events.len() < defaults::HISTORY_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !events.is_empty() {
            if let Err(e) = log.append(&events) {
                warn!("history: {} event(s) not kept: {e}", events.len());
                crate::observe::metrics::METRICS.history_dropped(events.len() as u64);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        let now = now_ms();
        if now >= next_prune {
            match log.prune(now - retention) {
                Ok(n) if n > 0 => debug!("history: {n} row(s) past the retention pruned"),
                Ok(_) => {}
                Err(e) => warn!("history: cannot prune: {e}"),
            }
            next_prune = now + every;
        }
    }
}

#[cfg(test)]
mod tests;
