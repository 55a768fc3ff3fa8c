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
use std::path::{Path, PathBuf};
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
use crate::store::StoreError;

const EVENT_COLUMNS: &str = "time_ms, kind, address, who, source, detail, count";

/// What a flood row says in place of the sources past the cap.
const OTHER_SOURCES: &str = "from sources past the per-minute cap";

/// The `events` table on a connection of its own.
pub struct EventLog {
    conn: Connection,
    floods: FloodCap,
}

impl EventLog {
    /// Opens the store at `path` (which `Store::open` has created, with the `events` table).
    pub fn open(path: &Path) -> Result<EventLog, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        // History is not an access decision: a power cut may lose the last batch, never a grant
        // (that connection syncs every commit). A crash of the daemon alone loses nothing
        // committed, WAL or not.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(open_err)?;
        Ok(EventLog {
            conn,
            floods: FloodCap::default(),
        })
    }

    /// Writes `events` in one transaction. Flood kinds are counted into their minute's row.
    pub fn append(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (time_ms, kind, address, who, source, detail, count, minute)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, address, who, minute)
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for e in events {
                let mut e = e.clone();
                let minute = e.kind.floods().then(|| e.time.div_euclid(60_000));
                if let Some(m) = minute {
                    self.floods.admit(&mut e, m);
                }
                stmt.execute(params![
                    e.time,
                    e.kind.as_str(),
                    e.address.map(|a| a.to_string()).unwrap_or_default(),
                    e.who,
                    e.source.map(Source::as_str).unwrap_or_default(),
                    e.detail,
                    e.count.min(i64::MAX as u64) as i64,
                    minute
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes rows older than `before`; returns how many.
    pub fn prune(&self, before: UnixMs) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM events WHERE time_ms < ?1", params![before])?)
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
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE time_ms >= ?1
               AND (?2 IS NULL OR address = ?2)
               AND (?3 IS NULL OR who = ?3 OR who LIKE '%:' || ?3)
             ORDER BY time_ms DESC, id DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                since,
                address.map(|a| a.to_string()),
                account,
                (limit.min(i64::MAX as usize - 1) + 1) as i64
            ],
            event_row,
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        let more = out.len() > limit;
        out.truncate(limit);
        out.reverse();
        Ok((out, more))
    }

    /// What `passknock status` counts, from `since` on.
    pub fn tally(&self, since: UnixMs) -> Result<Counts, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, source, SUM(count) FROM events WHERE time_ms >= ?1 GROUP BY kind, source",
        )?;
        let mut rows = stmt.query(params![since])?;
        let mut c = Counts::default();
        while let Some(r) = rows.next()? {
            let kind: String = r.get(0)?;
            let source: String = r.get(1)?;
            let n = r.get::<_, i64>(2)?.max(0) as u64;
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
        let mut totals = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT kind, SUM(count) FROM events WHERE time_ms >= ?1 GROUP BY kind")?;
            let mut rows = stmt.query(params![since])?;
            while let Some(r) = rows.next()? {
                if let Some(k) = Kind::parse(&r.get::<_, String>(0)?) {
                    totals.push((k, r.get::<_, i64>(1)?.max(0) as u64));
                }
            }
            totals.sort();
        }
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
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE time_ms >= ?1 AND kind IN ({})
                 ORDER BY time_ms DESC, id DESC LIMIT ?2",
                list.join(",")
            ))?;
            let rows = stmt.query_map(params![since, defaults::REPORT_ROWS as i64], event_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
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

    fn counted(&self, sql: &str, since: UnixMs, limit: usize) -> Result<Vec<Counted>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![since, limit as i64], |r| {
            Ok(Counted {
                name: r.get(0)?,
                count: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let kind: String = r.get(1)?;
    let address: String = r.get(2)?;
    let source: String = r.get(4)?;
    let Some(kind) = Kind::parse(&kind) else {
        return Ok(Err(StoreError::BadRow(format!("event of kind {kind}"))));
    };
    let address = if address.is_empty() {
        None
    } else {
        match addr::parse_host(&address) {
            Ok(a) => Some(a),
            Err(_) => return Ok(Err(StoreError::BadRow(format!("event address {address}")))),
        }
    };
    Ok(Ok(Event {
        time: r.get(0)?,
        kind,
        address,
        who: r.get(3)?,
        source: Source::parse(&source),
        detail: r.get(5)?,
        count: r.get::<_, i64>(6)?.max(0) as u64,
        node: String::new(),
    }))
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
    path: PathBuf,
    tx: SyncSender<Msg>,
}

fn send(tx: &SyncSender<Msg>, event: Event) {
    if tx.try_send(Msg::Event(event)).is_err() {
        crate::observe::metrics::METRICS.history_dropped(1);
    }
}

impl History {
    /// Prunes rows past `retention`, then starts the writer thread on the store at `path`.
    pub fn start(path: &Path, retention: Duration) -> Result<History, StoreError> {
        let log = EventLog::open(path)?;
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
        Ok(History {
            path: path.to_path_buf(),
            tx,
        })
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
        EventLog::open(&self.path)
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
mod tests {
    use super::*;
    use crate::store::Store;

    const DAY: i64 = 86_400_000;
    const T0: UnixMs = 1_795_248_000_000;

    fn log() -> (tempfile::TempDir, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap();
        let log = EventLog::open(&path).unwrap();
        (dir, log)
    }

    fn ev(kind: Kind, time: UnixMs, addr: &str) -> Event {
        Event::new(kind, time).address(addr.parse().unwrap())
    }

    #[test]
    fn rows_older_than_the_retention_are_pruned_by_the_time_given() {
        let (_d, mut log) = log();
        log.append(&[
            ev(Kind::Grant, T0, "203.0.113.1"),
            ev(Kind::Ban, T0 + 10 * DAY, "203.0.113.2"),
            ev(Kind::KnockRefused, T0 + 89 * DAY, "203.0.113.3"),
        ])
        .unwrap();
        let retention = 90 * DAY;
        // 90 days after the first: all three are within the retention.
        assert_eq!(log.prune(T0 + 90 * DAY - retention).unwrap(), 0);
        // A day later the first goes; 100 days after the second, the second.
        assert_eq!(log.prune(T0 + 91 * DAY - retention).unwrap(), 1);
        assert_eq!(log.prune(T0 + 100 * DAY + 1 - retention).unwrap(), 1);
        let (left, more) = log.query(0, None, None, 10).unwrap();
        assert!(!more);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].kind, Kind::KnockRefused);
    }

    #[test]
    fn a_flood_from_one_source_is_one_row_a_minute_and_a_spoofed_one_is_capped() {
        let (_d, mut log) = log();
        let one: Vec<Event> = (0..5_000)
            .map(|i| {
                ev(Kind::KnockRefused, T0 + i * 10, "203.0.113.9")
                    .who("laptop")
                    .detail("a replay")
            })
            .collect();
        // 50 s of one source, sent in several batches: one row, counting all of them.
        for chunk in one.chunks(700) {
            log.append(chunk).unwrap();
        }
        let (rows, _) = log.query(0, None, None, 100).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 5_000);
        assert_eq!(rows[0].detail, "a replay");

        // A spoofed flood: every packet from another address, in the next minute.
        let spoofed: Vec<Event> = (0..10_000u32)
            .map(|i| {
                let a = IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
                Event::new(Kind::KnockRefused, T0 + 60_000 + i as i64).address(a)
            })
            .collect();
        log.append(&spoofed).unwrap();
        let (rows, _) = log.query(T0 + 60_000, None, None, 100_000).unwrap();
        assert_eq!(rows.len(), defaults::HISTORY_FLOOD_KEYS + 1);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 10_000);
        let other = rows.iter().find(|r| r.address.is_none()).unwrap();
        assert_eq!(other.count, 10_000 - defaults::HISTORY_FLOOD_KEYS as u64);
        // Kinds that are not floods keep a row each.
        log.append(&[
            ev(Kind::Grant, T0, "203.0.113.1"),
            ev(Kind::Grant, T0, "203.0.113.1"),
        ])
        .unwrap();
        let (g, _) = log.query(0, None, Some("nobody"), 10).unwrap();
        assert!(g.is_empty());
        let (g, _) = log
            .query(0, Some("203.0.113.1".parse().unwrap()), None, 10)
            .unwrap();
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_query_is_newest_last_filtered_and_says_when_it_left_rows_out() {
        let (_d, mut log) = log();
        let events: Vec<Event> = (0..10)
            .map(|i| {
                ev(Kind::Grant, T0 + i * 1000, &format!("203.0.113.{}", i % 2 + 1))
                    .who(if i % 2 == 0 { "disa:ann" } else { "uid 0" })
                    .source(if i % 2 == 0 { Source::Disa } else { Source::Admin })
            })
            .collect();
        log.append(&events).unwrap();
        let (rows, more) = log.query(T0 + 3000, None, None, 4).unwrap();
        assert!(more);
        let times: Vec<i64> = rows.iter().map(|e| e.time - T0).collect();
        assert_eq!(times, [6000, 7000, 8000, 9000]);
        let (ann, more) = log.query(0, None, Some("ann"), 100).unwrap();
        assert!(!more);
        assert_eq!(ann.len(), 5);
        assert!(ann.iter().all(|e| e.who == "disa:ann"));
        let (uid, _) = log.query(0, None, Some("uid 0"), 100).unwrap();
        assert_eq!(uid.len(), 5);
    }

    #[test]
    fn tally_and_report_count_by_kind_source_and_address() {
        let (_d, mut log) = log();
        let mut events = vec![
            ev(Kind::Grant, T0, "203.0.113.1")
                .who("disa:ann")
                .source(Source::Disa),
            ev(Kind::Grant, T0 + 1, "203.0.113.2")
                .who("disa:ann")
                .source(Source::Disa),
            ev(Kind::Grant, T0 + 2, "203.0.113.3")
                .who("uid 0")
                .source(Source::Admin),
            ev(Kind::Ban, T0 + 3, "198.51.100.6")
                .who("ami")
                .detail("reason=\"x\""),
            Event::new(Kind::LockoutNumber, T0 + 4).who("701"),
            Event::new(Kind::Suspension, T0 + 5),
            ev(Kind::KnockAccepted, T0 + 6, "203.0.113.3"),
            ev(Kind::DisaCall, T0 + 7, "192.0.2.1"),
            ev(Kind::GrantAttempted, T0 + 8, "203.0.113.2").who("ann"),
            ev(Kind::GrantReplaced, T0 + 8, "203.0.113.1").who("disa:ann"),
            ev(Kind::GrantExtended, T0 + 9, "203.0.113.3").who("knock:laptop"),
            ev(Kind::GrantExtended, T0 + 9, "203.0.113.3").who("knock:laptop"),
        ];
        for i in 0..7 {
            events.push(ev(Kind::KnockRefused, T0 + 10 + i, "198.51.100.7"));
        }
        for i in 0..3 {
            events.push(ev(Kind::PasscodeRefused, T0 + 20 + i, "198.51.100.8").who("5551234"));
        }
        log.append(&events).unwrap();
        let c = log.tally(T0).unwrap();
        assert_eq!((c.grants.disa, c.grants.admin, c.grants.total()), (2, 1, 3));
        assert_eq!(
            (
                c.bans,
                c.knocks_accepted,
                c.knocks_refused,
                c.failed_passcodes,
                c.disa_calls
            ),
            (1, 1, 7, 3, 1)
        );
        assert_eq!(
            (c.attempted_grants, c.grants_replaced, c.grants_extended),
            (1, 1, 2),
            "grants from attempts, replaced and extended are not grants again"
        );
        assert_eq!(log.tally(T0 + 10).unwrap().grants.total(), 0, "since counts");
        let r = log.report(T0, T0 + 60_000).unwrap();
        assert_eq!(r.total(&[Kind::Grant]), 3);
        assert_eq!(r.total(&[Kind::KnockRefused, Kind::PasscodeRefused]), 10);
        assert_eq!(
            r.top_refused,
            vec![
                Counted {
                    name: "198.51.100.7".into(),
                    count: 7
                },
                Counted {
                    name: "198.51.100.8".into(),
                    count: 3
                }
            ]
        );
        assert_eq!(r.grants_by_who[0].name, "disa:ann");
        assert_eq!(r.grants_by_who[0].count, 2);
        assert_eq!(r.bans.len(), 1);
        assert_eq!(r.lockouts[0].who, "701");
        assert_eq!(r.suspensions.len(), 1);
    }

    #[test]
    fn the_writer_commits_what_was_queued_before_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap();
        let h = History::start(&path, Duration::from_secs(90 * 86_400)).unwrap();
        let now = now_ms();
        for i in 0..100 {
            h.send(ev(Kind::Grant, now + i, "203.0.113.1"));
        }
        assert!(h.flush(Duration::from_secs(5)));
        let (rows, _) = h.reader().unwrap().query(0, None, None, 1000).unwrap();
        assert_eq!(rows.len(), 100);
    }
}
