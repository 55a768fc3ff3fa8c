//! The history's unit tests: pruning, flood rows, queries, counts and the writer.

use super::*;
use crate::store::Store;

const DAY: i64 = 86_400_000;
const T0: UnixMs = 1_795_248_000_000;

fn log() -> (tempfile::TempDir, EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap();
    let log = EventLog::open(&Location::File(path.clone())).unwrap();
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
    let h = History::start(&Location::File(path.clone()), Duration::from_secs(90 * 86_400)).unwrap();
    let now = now_ms();
    for i in 0..100 {
        h.send(ev(Kind::Grant, now + i, "203.0.113.1"));
    }
    assert!(h.flush(Duration::from_secs(5)));
    let (rows, _) = h.reader().unwrap().query(0, None, None, 1000).unwrap();
    assert_eq!(rows.len(), 100);
}
