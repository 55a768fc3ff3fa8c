//! The PostgreSQL store against a real throwaway server: the same rules as SQLite's store, errors
//! in words, change notices between nodes, and calls from async code.

mod support;

use std::net::IpAddr;
use std::sync::{Arc, Barrier, Mutex, Weak};
use std::time::Duration;

use passknock::engine::ports::Records;
use passknock::model::{Account, NameState, NewGrant, Source, StandingEntry};
use passknock::store::pg::{Change, Follower, PgStore, Target};
use passknock::store::{Db, GrantWrite, Location, StoreError};
use support::pg::Pg;

/// One cluster for the tests that run at the same time (each in a database of its own), stopped
/// when the last of them is done.
fn cluster() -> Arc<Pg> {
    static SHARED: Mutex<Weak<Pg>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = shared.upgrade() {
        return pg;
    }
    let pg = Arc::new(Pg::start());
    *shared = Arc::downgrade(&pg);
    pg
}

/// A fresh database on the shared cluster, and a target at it for `node`.
fn fresh(pg: &Pg, db: &str) -> String {
    pg.create_db(db);
    pg.url(db)
}

fn target(url: &str, node: &str) -> Target {
    Target {
        url: url.into(),
        password: None,
        node: node.into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn grant(addr: &str, svcs: &[&str], expires: i64) -> NewGrant {
    NewGrant {
        address: ip(addr),
        services: svcs.iter().map(|s| s.to_string()).collect(),
        source: Source::Admin,
        who: "test".into(),
        note: "".into(),
        expires,
    }
}

#[test]
fn grants_are_written_extended_held_revoked_and_pruned() {
    let pg = cluster();
    let url = fresh(&pg, "grants");
    let mut s = PgStore::open(&target(&url, "a")).unwrap();
    let g = s
        .insert_grants(
            &[
                grant("203.0.113.1", &["sip"], 5_000),
                grant("2001:db8::1", &["rtp"], 6_000),
            ],
            1_000,
        )
        .unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].node, "a", "a grant carries the node that granted it");
    assert_eq!(s.counts().unwrap(), (2, 0));
    assert_eq!(s.next_end().unwrap(), Some(5_000));
    assert_eq!(
        s.grants_for(ip("203.0.113.1"), 1_000).unwrap(),
        vec![g[0].clone()]
    );
    assert_eq!(s.grants_of("test", Source::Admin, 1_000).unwrap().len(), 2);

    // One write ends one, extends one and adds one.
    let w = GrantWrite {
        remove: vec![g[1].id],
        extend: vec![(g[0].id, 9_000, vec!["sip".into(), "rtp".into()])],
        insert: vec![grant("203.0.113.2", &["sip"], 4_000)],
    };
    let done = s.write_grants(&w, 2_000).unwrap();
    assert_eq!(done.removed, vec![g[1].clone()]);
    assert_eq!(done.extended[0].expires, 9_000);
    assert_eq!(done.extended[0].services, ["sip", "rtp"]);
    assert_eq!(done.inserted[0].created, 2_000);
    let live: Vec<String> = s
        .live_grants(2_000)
        .unwrap()
        .iter()
        .map(|g| g.address.to_string())
        .collect();
    assert_eq!(live, ["203.0.113.2", "203.0.113.1"], "soonest end first");
    assert_eq!(s.first_live_grants(2_000, Some(1)).unwrap().len(), 1);
    let mut seen = Vec::new();
    s.for_each_live(2_000, |a, svcs, end| seen.push((a, svcs.to_string(), end)))
        .unwrap();
    seen.sort();
    assert_eq!(seen.len(), 2);

    // A hold keeps a grant past its expiry, capped; release gives it its own end back.
    assert_eq!(s.hold(ip("203.0.113.2"), 20_000, 2_000).unwrap(), 1);
    assert_eq!(s.next_end().unwrap(), Some(9_000));
    assert_eq!(s.hold_capped(ip("203.0.113.2"), 20_000, 1_000, 2_000).unwrap(), 1);
    assert_eq!(s.grants_for(ip("203.0.113.2"), 2_000).unwrap()[0].end(), 5_000);
    assert_eq!(s.release(ip("203.0.113.2")).unwrap(), 1);
    assert_eq!(s.release(ip("203.0.113.2")).unwrap(), 0);

    // Prune takes what ended; revoke takes an address's grants.
    let (gone, _) = s.prune(4_000).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].address, ip("203.0.113.2"));
    assert_eq!(s.revoke(ip("203.0.113.1")).unwrap().len(), 1);
    assert_eq!(s.counts().unwrap(), (0, 0));
    assert_eq!(s.next_end().unwrap(), None);
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn bans_are_set_replaced_lifted_and_pruned() {
    let pg = cluster();
    let url = fresh(&pg, "bans");
    let mut s = PgStore::open(&target(&url, "a")).unwrap();
    s.ban(ip("198.51.100.1"), "first", 5_000, 1_000).unwrap();
    let b = s.ban(ip("198.51.100.1"), "again", 7_000, 2_000).unwrap();
    assert_eq!((b.reason.as_str(), b.created, b.expires), ("again", 1_000, 7_000));
    let many = s
        .ban_many(
            &[
                (ip("198.51.100.2"), "m".into(), 3_000),
                (ip("2001:db8::9"), "m".into(), 4_000),
            ],
            2_000,
        )
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(
        s.first_live_bans(2_000, Some(1)).unwrap()[0].address,
        ip("198.51.100.2")
    );
    assert_eq!(s.live_bans(2_000).unwrap().len(), 3);
    assert_eq!(s.ban_of(ip("2001:db8::9")).unwrap().unwrap().expires, 4_000);
    assert_eq!(s.unban(ip("2001:db8::9")).unwrap().unwrap().reason, "m");
    assert!(s.unban(ip("2001:db8::9")).unwrap().is_none());
    let (_, gone) = s.prune(3_000).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(s.counts().unwrap(), (0, 1));
}

#[test]
fn accounts_are_found_by_tag_and_a_change_moves_the_version() {
    let pg = cluster();
    let url = fresh(&pg, "accounts");
    let mut s = PgStore::open(&target(&url, "a")).unwrap();
    let other = PgStore::open(&target(&url, "b")).unwrap();
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
        keep_several: true,
    };
    let seen = other.data_version().unwrap();
    s.add_account(&a, &[7u8; 32]).unwrap();
    let e = s.add_account(&a, &[8u8; 32]).unwrap_err().to_string();
    assert!(e.contains("duplicate key"), "names are unique: {e}");
    let mut b = a.clone();
    b.name = "bob".into();
    assert!(s.add_account(&b, &[7u8; 32]).is_err(), "tags are unique");
    assert_eq!(
        other.account_by_tag(&[7u8; 32]).unwrap().unwrap(),
        (a.clone(), [7u8; 32])
    );
    assert!(other.account_by_tag(&[9u8; 32]).unwrap().is_none());
    let moved = other.data_version().unwrap();
    assert_ne!(moved, seen, "another node's change moves the version");
    assert_eq!(other.owner_numbers().unwrap(), ["15550100100".to_string()].into());
    assert!(other.is_owner_number("15550100100").unwrap());
    assert!(
        !other.is_owner_number("5550100100").unwrap(),
        "whole numbers only"
    );
    assert!(!other.is_owner_number("").unwrap());
    assert_eq!(other.data_version().unwrap(), moved, "reading moves nothing");
    assert!(s.set_callers("ann", &[]).unwrap());
    assert!(!other.is_owner_number("15550100100").unwrap());
    assert_eq!(s.passcode_lengths().unwrap(), vec![Some(12)]);
    assert!(s.set_passcode("ann", &[9u8; 32], 14, 5).unwrap());
    assert_eq!(s.passcode_lengths().unwrap(), vec![Some(14)]);
    assert!(s.set_disabled("ann", true).unwrap());
    assert!(s.passcode_lengths().unwrap().is_empty());
    assert!(s.account("ann").unwrap().unwrap().disabled);
    assert_eq!(s.accounts().unwrap().len(), 1);
    assert!(!s.set_disabled("nobody", true).unwrap());
    assert!(s.remove_account("ann").unwrap());
    assert!(!s.remove_account("ann").unwrap());
}

#[test]
fn standing_entries_and_names_are_kept() {
    let pg = cluster();
    let url = fresh(&pg, "standing");
    let mut s = PgStore::open(&target(&url, "a")).unwrap();
    let e = StandingEntry {
        name: "office".into(),
        targets: vec![
            "192.0.2.0/24".parse().unwrap(),
            "sip.example.net".parse().unwrap(),
        ],
        services: vec!["sip".into()],
        note: "hq".into(),
        who: "uid 0".into(),
        created: 10,
    };
    assert!(s.add_standing(&e).unwrap());
    assert!(!s.add_standing(&e).unwrap(), "names are unique");
    assert_eq!(s.standing().unwrap(), vec![e.clone()]);
    assert_eq!(s.standing_count().unwrap(), 1);
    let n = NameState {
        name: "sip.example.net".into(),
        addresses: vec![ip("192.0.2.7")],
        checked: Some(5),
        ..NameState::default()
    };
    s.put_name(&n).unwrap();
    s.put_name(&n).unwrap();
    assert_eq!(s.names().unwrap(), vec![n.clone()]);
    assert_eq!(s.forget_names(&["sip.example.net".into()]).unwrap(), 0);
    assert_eq!(s.forget_names(&[]).unwrap(), 1);
    assert_eq!(s.remove_standing("office").unwrap(), Some(e));
    assert_eq!(s.remove_standing("office").unwrap(), None);
}

/// What `counts` must agree with: the rows, counted by the server.
fn counted(pg: &Pg, db: &str) -> (u64, u64) {
    let n = |t: &str| pg.psql(db, &format!("SELECT COUNT(*) FROM {t}")).parse().unwrap();
    (n("grants"), n("bans"))
}

/// The kept counts stay true while two nodes write at once, banning the same addresses in
/// opposite orders (each node counts on a row of its own, so neither waits on, nor deadlocks
/// with, the other's count), and a prune of many rows is one step of the count.
#[test]
fn the_counts_stay_true_while_two_nodes_write_the_same_bans_at_once() {
    let pg = cluster();
    let url = fresh(&pg, "counting");
    let gate = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = ["a", "b"]
        .into_iter()
        .enumerate()
        .map(|(n, name)| {
            let (url, gate) = (url.clone(), gate.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::open(&target(&url, name)).unwrap();
                gate.wait();
                for round in 0..20u32 {
                    let mut bans: Vec<(IpAddr, String, i64)> = (0..20)
                        .map(|i| {
                            (
                                ip(&format!("198.51.{round}.{i}")),
                                "m".into(),
                                5_000 + i64::from(round),
                            )
                        })
                        .collect();
                    if n == 1 {
                        bans.reverse();
                    }
                    s.ban_many(&bans, 1_000).unwrap();
                    let g = grant(&format!("203.0.{n}.{round}"), &["sip"], 5_000);
                    s.insert_grants(&[g], 1_000).unwrap();
                }
                s
            })
        })
        .collect();
    let stores: Vec<PgStore> = nodes.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(stores[0].counts().unwrap(), (40, 400));
    assert_eq!(stores[1].counts().unwrap(), counted(&pg, "counting"));
    let mut a = stores.into_iter().next().unwrap();
    a.unban(ip("198.51.0.0")).unwrap();
    a.revoke(ip("203.0.1.0")).unwrap();
    assert_eq!(a.counts().unwrap(), (39, 399));
    pg.psql("counting", "DELETE FROM bans WHERE address LIKE '198.51.1.%'");
    assert_eq!(a.counts().unwrap(), (39, 379), "a hand's delete is counted too");
    let (g, b) = a.prune(5_010).unwrap();
    assert_eq!((g.len(), b.len()), (39, 379 - 9 * 20));
    assert_eq!(a.counts().unwrap(), (0, 180));
    assert_eq!(a.counts().unwrap(), counted(&pg, "counting"));
}

/// A version 5 database (before the kept counts) is upgraded at open, counts taken from its rows,
/// and a node still on version 5 that goes on writing is counted too.
#[test]
fn a_version_5_database_gets_its_counts_at_open() {
    let pg = cluster();
    let url = fresh(&pg, "upgrade");
    let mut old = PgStore::open(&target(&url, "old")).unwrap();
    old.insert_grants(&[grant("203.0.113.1", &["sip"], 9_000)], 1_000)
        .unwrap();
    pg.psql(
        "upgrade",
        "DROP TABLE live_counts; DROP FUNCTION passknock_counted_in CASCADE;
         DROP FUNCTION passknock_counted_out CASCADE; UPDATE schema_version SET version = 5",
    );
    old.ban(ip("198.51.100.1"), "t", 9_000, 1_000).unwrap();
    let new = PgStore::open(&target(&url, "new")).unwrap();
    assert_eq!(new.counts().unwrap(), (1, 1));
    assert_eq!(pg.psql("upgrade", "SELECT version FROM schema_version"), "6");
    old.insert_grants(&[grant("203.0.113.2", &["sip"], 9_000)], 1_000)
        .unwrap();
    assert_eq!(new.counts().unwrap(), (2, 1));
    assert_eq!(new.integrity_check().unwrap(), "ok");
}

#[test]
fn a_database_of_another_schema_version_is_refused_in_words() {
    let pg = cluster();
    let url = fresh(&pg, "version");
    drop(PgStore::open(&target(&url, "a")).unwrap());
    pg.psql("version", "UPDATE schema_version SET version = 99");
    let e = PgStore::open(&target(&url, "a")).err().expect("refused");
    assert!(matches!(e, StoreError::PgSchema { found: 99, .. }), "{e:?}");
    let words = e.to_string();
    assert!(
        words.contains("schema version 99") && words.contains("knows version"),
        "{words}"
    );
}

#[test]
fn a_wrong_url_an_unreachable_server_and_a_refused_login_say_so() {
    let pg = cluster();
    let url = fresh(&pg, "login");
    let secret = |t: Target| Target {
        password: Some("s3cret-pw".into()),
        ..t
    };
    let e = PgStore::open(&secret(target("mysql://pk@db/x", "a")))
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::PgUrl { .. }), "{e:?}");

    let e = PgStore::open(&secret(target("postgresql://pk@/x?host=/nonexistent/dir", "a")))
        .err()
        .unwrap();
    let words = e.to_string();
    assert!(matches!(e, StoreError::PgUnreachable { .. }), "{e:?}");
    assert!(words.contains("/nonexistent/dir/.s.PGSQL.5432"), "{words}");

    let wrong_role = url.replacen("passknock@", "nobody@", 1);
    let e = PgStore::open(&secret(target(&wrong_role, "a"))).err().unwrap();
    let words = e.to_string();
    assert!(matches!(e, StoreError::PgLogin { .. }), "{e:?}");
    assert!(
        words.contains("refused the login of nobody") && words.contains("login"),
        "{words}"
    );

    let wrong_db = url.replace("/login?", "/nosuchdb?");
    let e = PgStore::open(&secret(target(&wrong_db, "a"))).err().unwrap();
    let words = e.to_string();
    assert!(
        words.contains("nosuchdb") && words.contains("does not exist"),
        "{words}"
    );

    for e in [
        words,
        format!("{e:?}"),
        format!("{:?}", secret(target(&url, "a"))),
    ] {
        assert!(!e.contains("s3cret-pw"), "the password shows: {e}");
    }
}

#[test]
fn a_change_is_heard_by_the_other_nodes_and_not_by_its_own() {
    let pg = cluster();
    let url = fresh(&pg, "notify");
    let mut a = PgStore::open(&target(&url, "a")).unwrap();
    let mut b = PgStore::open(&target(&url, "b")).unwrap();
    let mut at_a = Follower::open(&target(&url, "a")).unwrap();
    let mut at_b = Follower::open(&target(&url, "b")).unwrap();
    let wait = Duration::from_secs(30);

    a.insert_grants(&[grant("203.0.113.5", &["sip"], i64::MAX / 2)], 1_000)
        .unwrap();
    assert_eq!(
        at_b.next(wait).unwrap(),
        Some(Change {
            node: "a".into(),
            addresses: Some(vec![ip("203.0.113.5")]),
        })
    );
    b.ban(ip("198.51.100.5"), "t", i64::MAX / 2, 1_000).unwrap();
    // A's follower skipped A's own grant: the first change it hears is B's ban.
    assert_eq!(
        at_a.next(wait).unwrap(),
        Some(Change {
            node: "b".into(),
            addresses: Some(vec![ip("198.51.100.5")]),
        })
    );
    // Accounts and standing entries are everything.
    let acct = Account {
        name: "ann".into(),
        services: vec!["sip".into()],
        ttl_secs: 60,
        endpoint: None,
        address_modes: vec!["source".into()],
        disabled: false,
        created: 1,
        passcode_set: 1,
        callers: vec![],
        passcode_digits: Some(8),
        keep_several: false,
    };
    a.add_account(&acct, &[1u8; 32]).unwrap();
    assert_eq!(at_b.next(wait).unwrap().unwrap().addresses, None);
    // A write that changed nothing says nothing; the next one is heard.
    assert_eq!(a.release(ip("203.0.113.5")).unwrap(), 0);
    a.revoke(ip("203.0.113.5")).unwrap();
    assert_eq!(
        at_b.next(wait).unwrap().unwrap().addresses,
        Some(vec![ip("203.0.113.5")])
    );
    // Nothing more is pending: a short wait hears nothing.
    assert_eq!(at_b.next(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn a_lost_connection_is_an_error_in_words_and_the_next_call_connects_again() {
    let pg = cluster();
    let url = fresh(&pg, "lost");
    let s = PgStore::open(&target(&url, "lost-node")).unwrap();
    let mut f = Follower::open(&target(&url, "lost-follower")).unwrap();
    pg.psql(
        "lost",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name IN ('passknock lost-node', 'passknock lost-follower')",
    );
    assert!(s.connected(), "no call has found out yet");
    // A connection idle for a second is checked before use and made again at once; a busy one
    // finds out on its call, which fails in words.
    match s.counts() {
        Ok(counts) => assert_eq!(counts, (0, 0)),
        Err(e) => {
            assert!(matches!(e, StoreError::PgInDoubt { .. }), "{e:?}");
            assert!(!s.connected());
            assert!(e.to_string().contains("lost the connection"), "{e}");
        }
    }
    assert_eq!(s.counts().unwrap(), (0, 0), "the next call logs in again");
    // A follower cannot know what it missed: it stays failed, and its owner resyncs.
    let e = f.next(Duration::from_secs(30)).unwrap_err();
    assert!(
        matches!(e, StoreError::PgLost { .. } | StoreError::PgInDoubt { .. }),
        "{e:?}"
    );
    assert!(f.next(Duration::from_millis(10)).is_err());
}

#[test]
fn a_call_whose_session_an_administrator_ends_is_in_doubt_and_the_next_connects_again() {
    // The call is in flight, waiting on a lock another session holds, when its session is ended:
    // the server answers the call itself with a FATAL error before the socket closes.
    let pg = cluster();
    let url = fresh(&pg, "ended");
    let s = Arc::new(PgStore::open(&target(&url, "ended-node")).unwrap());
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE live_counts IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let call = {
        let s = s.clone();
        std::thread::spawn(move || s.counts())
    };
    let waiting = "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'passknock ended-node' AND wait_event_type = 'Lock'";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.psql("ended", waiting).trim() != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never waited on the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.psql(
        "ended",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'passknock ended-node'",
    );
    let e = call.join().unwrap().unwrap_err();
    assert!(matches!(e, StoreError::PgInDoubt { .. }), "{e:?}");
    assert!(e.to_string().contains("lost the connection"), "{e}");
    assert!(!s.connected());
    tx.rollback().unwrap();
    assert_eq!(s.counts().unwrap(), (0, 0), "the next call logs in again");
}

#[test]
fn calls_from_async_code_and_plain_threads_all_work() {
    let pg = cluster();
    let url = fresh(&pg, "runtime");
    let s = Arc::new(Mutex::new(PgStore::open(&target(&url, "a")).unwrap()));

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s2 = s.clone();
    let n = multi
        .block_on(async move {
            tokio::spawn(async move {
                let mut s = s2.lock().unwrap();
                s.ban(ip("198.51.100.9"), "async", i64::MAX / 2, 1).unwrap();
                s.counts().unwrap()
            })
            .await
        })
        .unwrap();
    assert_eq!(n, (0, 1));
    let s2 = s.clone();
    let n = multi
        .block_on(
            async move { tokio::task::spawn_blocking(move || s2.lock().unwrap().counts().unwrap()).await },
        )
        .unwrap();
    assert_eq!(n, (0, 1));
    drop(multi);

    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s2 = s.clone();
    let n = single.block_on(async move { s2.lock().unwrap().counts().unwrap() });
    assert_eq!(n, (0, 1));
    drop(single);

    // A store opened inside a runtime works on a plain thread after, and the other way round.
    let opened = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::spawn(async move { PgStore::open(&target(&url, "b")) }).await })
        .unwrap()
        .unwrap();
    assert_eq!(
        std::thread::spawn(move || opened.counts().unwrap())
            .join()
            .unwrap(),
        (0, 1)
    );
}

#[test]
fn two_nodes_opening_a_fresh_database_at_once_both_succeed() {
    let pg = cluster();
    let url = fresh(&pg, "race");
    for round in 0..3 {
        let db = format!("race{round}");
        let url = fresh(&pg, &db);
        let gate = Arc::new(Barrier::new(4));
        let opened: Vec<_> = (0..4)
            .map(|i| {
                let gate = gate.clone();
                let url = url.clone();
                std::thread::spawn(move || {
                    gate.wait();
                    PgStore::open(&target(&url, &format!("n{i}"))).map(|_| ())
                })
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
        assert_eq!(pg.psql(&db, "SELECT COUNT(*) FROM schema_version"), "1");
        assert_eq!(pg.psql(&db, "SELECT COUNT(*) FROM nodes"), "4");
    }
    drop(url);
}

#[test]
fn the_daemon_s_store_opens_either_backend_and_the_engine_uses_both_alike() {
    let pg = cluster();
    let url = fresh(&pg, "either");
    let dir = tempfile::tempdir().unwrap();
    for location in [
        Location::File(dir.path().join("store.db")),
        Location::Postgres(target(&url, "a")),
    ] {
        let mut db = Db::open(&location).unwrap();
        assert_eq!(db.location(), location);
        let w = GrantWrite {
            insert: vec![grant("203.0.113.7", &["sip"], 5_000)],
            ..GrantWrite::default()
        };
        let done = Records::write_grants(&mut db, &w, 1_000).unwrap();
        let reader = db.reader().unwrap();
        assert_eq!(
            reader.grants_for(ip("203.0.113.7"), 1_000).unwrap(),
            done.inserted
        );
        assert_eq!(Records::counts(&db).unwrap(), (1, 0));
        assert_eq!(db.integrity_check().unwrap(), "ok");
        match location {
            Location::File(_) => {
                assert_eq!(done.inserted[0].node, "");
                assert!(db.nodes().unwrap().is_empty());
            }
            Location::Postgres(_) => {
                assert_eq!(done.inserted[0].node, "a");
                db.heartbeat().unwrap();
                let nodes = db.nodes().unwrap();
                assert_eq!(nodes.len(), 1);
                assert_eq!(nodes[0].0, "a");
                assert!(nodes[0].1 > 0);
                assert!(!db.path().to_string_lossy().is_empty());
            }
        }
    }
}

#[test]
fn a_large_batch_of_grants_gets_each_its_own_id() {
    let pg = cluster();
    let url = fresh(&pg, "batch");
    let mut s = PgStore::open(&target(&url, "a")).unwrap();
    let new: Vec<NewGrant> = (0..500)
        .map(|i| grant(&format!("2001:db8::{i:x}"), &["sip"], 10_000 + (i * 7919) % 500))
        .collect();
    let written = s.insert_grants(&new, 1_000).unwrap();
    assert_eq!(written.len(), 500);
    for (g, asked) in written.iter().zip(&new) {
        assert_eq!(g.address, asked.address);
        assert_eq!(s.grants_for(g.address, 1_000).unwrap(), vec![g.clone()]);
    }
}
