//! The rules that must hold across the nodes of a cluster, on a real PostgreSQL server (a
//! throwaway cluster): a knock's nonce used at one node is refused at another, wrong passcodes
//! counted at one node are seen by another's check, AMI failures from two nodes add up, and the
//! history shows which node wrote each row. Each node is a connection of its own, as each
//! daemon's listeners have.

mod support;

use std::net::IpAddr;

use passknock::base::clock::now_ms;
use passknock::model::{Event, Kind, Source};
use passknock::rules::limiter::{Caller, GuessLimits, Key, Limiter, Record};
use passknock::store::history::EventLog;
use passknock::store::pg::Target;
use passknock::store::{LimitLog, Location, OffenderLog, ReplayLog};
use support::pg::Pg;

fn node(pg: &Pg, db: &str, name: &str) -> Location {
    Location::Postgres(Target {
        url: pg.url(db),
        password: None,
        node: name.into(),
    })
}

fn cluster(db: &str) -> (Pg, Location, Location) {
    let pg = Pg::start();
    pg.create_db(db);
    let (a, b) = (node(&pg, db, "pbx-a"), node(&pg, db, "pbx-b"));
    (pg, a, b)
}

#[test]
fn a_knock_used_at_one_node_is_refused_at_another_and_the_store_going_away_grants_nothing() {
    let (mut pg, a, b) = cluster("replay");
    let (at_a, at_b) = (ReplayLog::open(&a).unwrap(), ReplayLog::open(&b).unwrap());
    let until = now_ms() + 120_000;
    assert!(at_a.remember("spa:1:00ff", until).unwrap(), "first use, at A");
    assert!(!at_b.remember("spa:1:00ff", until).unwrap(), "replayed at B");
    assert!(!at_a.remember("spa:1:00ff", until).unwrap(), "replayed at A");
    assert!(
        at_b.remember("rot:phone:42", until).unwrap(),
        "another step, at B"
    );
    // A node starting later loads what every node used.
    let keys: Vec<String> = ReplayLog::open(&b)
        .unwrap()
        .load(now_ms())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // An entry past its time is taken over, as on SQLite.
    assert!(at_a.remember("spa:1:old", now_ms() - 1).unwrap());
    assert!(at_b.remember("spa:1:old", until).unwrap());

    // The server goes away: an error, never a "fresh" answer; back, and the same key is still used.
    pg.stop();
    assert!(at_a.remember("spa:1:beef", until).is_err());
    pg.start_again();
    // B's connection was cut while idle: it logs in again at once.
    assert!(!at_b.remember("spa:1:00ff", until).unwrap());
    assert!(
        at_a.remember("spa:1:beef", until).unwrap(),
        "the connection is made again"
    );
}

#[test]
fn wrong_passcodes_at_two_nodes_lock_the_caller_out_at_the_shared_limit() {
    let (mut pg, a, b) = cluster("limits");
    let policy = GuessLimits::default();
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let me = Caller {
        number: "5551234",
        address: Some(ip),
        owner: false,
    };
    let keys = Limiter::keys(&me);
    let mut nodes = [
        (Limiter::new(policy), LimitLog::open(&a).unwrap()),
        (Limiter::new(policy), LimitLog::open(&b).unwrap()),
    ];
    assert!(nodes[0].1.is_shared());
    let t0 = now_ms();
    // As the DISA check does it: refresh the caller's keys, count the wrong passcode, save.
    // Alternating nodes, the fifth guess locks out although neither node saw five.
    let mut locked = None;
    for i in 0..policy.failures as i64 {
        let now = t0 + i * 1_000;
        let (limiter, log) = &mut nodes[(i % 2) as usize];
        let records = log.refresh(&keys).unwrap();
        limiter.refresh(&keys, records, now);
        assert!(limiter.gate(&me, now).checks(), "guess {i} is checked");
        let f = limiter.failure(&me, now);
        let changed: Vec<(Key, Record)> = keys.iter().map(|k| (k.clone(), limiter.record(k))).collect();
        log.save(&changed, now).unwrap();
        if f.number_locked {
            locked = Some(i);
        }
    }
    assert_eq!(
        locked,
        Some(policy.failures as i64 - 1),
        "locked at the shared limit"
    );
    // The other node sees the lockout at its next check.
    let now = t0 + 10_000;
    let (limiter, log) = &mut nodes[1];
    let records = log.refresh(&keys).unwrap();
    limiter.refresh(&keys, records, now);
    assert!(!limiter.gate(&me, now).checks(), "locked out at B too");
    // The server restarts; the next check still reads the lockout, on a fresh connection.
    pg.stop();
    assert!(log.refresh(&keys).is_err(), "no answer is no answer");
    pg.start_again();
    assert!(!log.refresh(&keys).unwrap().is_empty());
    // The global count adds up across nodes too, and a new node starts from it.
    let kept = LimitLog::open(&b).unwrap().load(now, now - 3_600_000).unwrap();
    let global = kept.iter().find(|(k, _)| *k == Key::Global).unwrap();
    assert_eq!(global.1.failures.len(), policy.failures as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_can_be_read_from_async_code_as_the_disa_check_does() {
    let (_pg, a, _) = cluster("asyncsafe");
    // In a task on a runtime worker, as a FastAGI session runs: where the blocking client would
    // panic if it were called bare.
    let read = tokio::spawn(async move {
        let log = LimitLog::open(&a).unwrap();
        log.refresh(&[Key::Global]).map(|r| r.len())
    });
    assert_eq!(read.await.unwrap().unwrap(), 0);
}

#[test]
fn ami_failures_seen_at_two_nodes_add_up() {
    let (_pg, a, b) = cluster("offenders");
    let (at_a, at_b) = (
        OffenderLog::open(&a).unwrap().expect("shared"),
        OffenderLog::open(&b).unwrap().expect("shared"),
    );
    let ip: IpAddr = "198.51.100.66".parse().unwrap();
    let other: IpAddr = "2001:db8::66".parse().unwrap();
    let t = now_ms();
    assert_eq!(at_a.count(ip, t, t - 60_000).unwrap(), vec![t]);
    assert_eq!(at_b.count(ip, t + 1, t - 60_000).unwrap(), vec![t, t + 1]);
    assert_eq!(
        at_b.count(other, t + 1, t - 60_000).unwrap().len(),
        1,
        "counted apart"
    );
    // Failures before the window are dropped as a new one is counted.
    assert_eq!(at_a.count(ip, t + 2, t).unwrap(), vec![t + 1, t + 2]);
    // A ban decided on them clears them for every node.
    at_a.clear(ip).unwrap();
    assert_eq!(at_b.count(ip, t + 3, t - 60_000).unwrap(), vec![t + 3]);
    assert_eq!(
        at_a.prune(t + 3).unwrap(),
        1,
        "the other address had nothing since"
    );
    // A single box keeps its counts in memory only.
    let dir = tempfile::tempdir().unwrap();
    assert!(OffenderLog::open(&Location::File(dir.path().join("s.db")))
        .unwrap()
        .is_none());
}

#[test]
fn history_rows_from_two_nodes_name_their_node() {
    let (_pg, a, b) = cluster("history");
    let (mut at_a, mut at_b) = (EventLog::open(&a).unwrap(), EventLog::open(&b).unwrap());
    let t = now_ms();
    let grant = |time| {
        Event::new(Kind::Grant, time)
            .address("203.0.113.7".parse().unwrap())
            .who("disa:ann")
            .source(Source::Disa)
            .detail("services=sip")
    };
    at_a.append(&[grant(t)]).unwrap();
    at_b.append(&[grant(t + 1)]).unwrap();
    at_b.append(&[Event::new(Kind::LockoutNumber, t + 2)
        .who("5551234")
        .source(Source::Disa)])
        .unwrap();
    // Refused knocks from one source in one minute share a row, whichever node counted them.
    let refused = |time| {
        Event::new(Kind::KnockRefused, time)
            .address("198.51.100.7".parse().unwrap())
            .who("laptop")
            .source(Source::Knock)
    };
    at_a.append(&[refused(t), refused(t)]).unwrap();
    at_b.append(&[refused(t)]).unwrap();

    let (rows, more) = at_b.query(t - 1, None, Some("ann"), 10).unwrap();
    assert!(!more);
    let nodes: Vec<&str> = rows.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(nodes, ["pbx-a", "pbx-b"]);
    let (rows, _) = at_a
        .query(t - 1, Some("198.51.100.7".parse().unwrap()), None, 10)
        .unwrap();
    let minute_rows = rows.iter().filter(|e| e.kind == Kind::KnockRefused).count();
    let counted: u64 = rows.iter().map(|e| e.count).sum();
    assert!(minute_rows <= 2 && counted == 3, "{rows:?}");

    let c = at_a.tally(t - 1).unwrap();
    assert_eq!((c.grants.disa, c.knocks_refused), (2, 3));
    let r = at_a.report(t - 1, t + 60_000).unwrap();
    assert_eq!(r.total(&[Kind::Grant]), 2);
    assert_eq!(r.grants_by_who[0].count, 2);
    assert_eq!(r.top_refused[0].count, 3);
    assert_eq!(r.lockouts.len(), 1);
    assert_eq!(r.lockouts[0].node, "pbx-b");
    assert_eq!(at_b.prune(t + 2).unwrap(), 3, "rows before t+2 from both nodes");
}
