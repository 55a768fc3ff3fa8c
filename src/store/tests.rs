//! The store's rules: durability across reopening, privacy, holds, prune, accounts and upgrades.

use std::net::IpAddr;

use super::schema::SCHEMA_VERSION;
use super::*;
use crate::model::{Account, Grant, NewGrant, Source};
use crate::rules::limiter::{Key, Record};

/// The SQLite store at `path`, as the side tables open it.
fn at(path: &std::path::Path) -> Location {
    Location::File(path.to_path_buf())
}

fn grant(addr: &str, svcs: &[&str], expires: UnixMs) -> NewGrant {
    NewGrant {
        address: addr.parse().unwrap(),
        services: svcs.iter().map(|s| s.to_string()).collect(),
        source: Source::Admin,
        who: "test".into(),
        note: "".into(),
        expires,
    }
}

#[test]
fn a_listing_can_stop_at_the_first_few_ending() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("store.db")).unwrap();
    let new: Vec<NewGrant> = (1..=5)
        .rev()
        .map(|i| grant(&format!("203.0.113.{i}"), &["sip"], 1_000 + i * 100))
        .collect();
    s.insert_grants(&new, 1_000).unwrap();
    for i in 1..=3 {
        s.ban(format!("198.51.100.{i}").parse().unwrap(), "t", 5_000 - i, 1_000)
            .unwrap();
    }
    let first = s.first_live_grants(1_000, Some(2)).unwrap();
    let addrs: Vec<String> = first.iter().map(|g| g.address.to_string()).collect();
    assert_eq!(addrs, ["203.0.113.1", "203.0.113.2"]);
    assert_eq!(s.first_live_grants(1_000, None).unwrap().len(), 5);
    let bans = s.first_live_bans(1_000, Some(1)).unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].address.to_string(), "198.51.100.3");
}

#[test]
fn the_store_is_private_and_a_loose_one_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut s = Store::open(&path).unwrap();
    s.ban("198.51.100.66".parse().unwrap(), "test", 3_000, 1_000)
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("store.db-wal")), 0o600);
    drop(s);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(s.counts().unwrap(), (0, 1), "nothing lost");
}

#[test]
fn grants_survive_reopen_and_prune_by_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/store.db");
    let mut s = Store::open(&path).unwrap();
    s.insert_grants(
        &[
            grant("203.0.113.7", &["sip", "rtp"], 2_000),
            grant("2001:db8::7", &["sip"], 5_000),
        ],
        1_000,
    )
    .unwrap();
    s.ban("198.51.100.66".parse().unwrap(), "test", 3_000, 1_000)
        .unwrap();
    drop(s);
    let mut s = Store::open(&path).unwrap();
    let live = s.live_grants(1_500).unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].services, vec!["sip", "rtp"]);
    assert_eq!(s.next_end().unwrap(), Some(2_000));
    let (g, b) = s.prune(2_000).unwrap();
    assert_eq!((g.len(), b.len()), (1, 0));
    let (g, b) = s.prune(3_000).unwrap();
    assert_eq!((g.len(), b.len()), (0, 1));
    assert_eq!(s.counts().unwrap(), (1, 0));
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn hold_extends_end_and_revoke_removes_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let a: IpAddr = "203.0.113.7".parse().unwrap();
    s.insert_grants(
        &[
            grant("203.0.113.7", &["sip"], 2_000),
            grant("203.0.113.7", &["rtp"], 3_000),
        ],
        1_000,
    )
    .unwrap();
    assert_eq!(s.hold(a, 10_000, 1_500).unwrap(), 2);
    assert!(s.grants_for(a, 5_000).unwrap().iter().all(|g| g.end() == 10_000));
    assert_eq!(s.revoke(a).unwrap().len(), 2);
    assert!(s.grants_for(a, 0).unwrap().is_empty());
}

#[test]
fn hold_is_capped_past_expiry_and_release_restores_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let a: IpAddr = "203.0.113.7".parse().unwrap();
    s.insert_grants(
        &[
            grant("203.0.113.7", &["sip"], 2_000),
            grant("203.0.113.7", &["rtp"], 50_000),
        ],
        1_000,
    )
    .unwrap();
    // Held to 9,000 but at most 5,000 past each expiry: 7,000 and (not shortened) 50,000.
    assert_eq!(s.hold_capped(a, 9_000, 5_000, 1_500).unwrap(), 2);
    let ends: Vec<i64> = s.grants_for(a, 1_500).unwrap().iter().map(|g| g.end()).collect();
    assert_eq!(ends, vec![7_000, 50_000]);
    assert_eq!(s.release(a).unwrap(), 2);
    assert_eq!(s.next_end().unwrap(), Some(2_000));
    let (gone, _) = s.prune(3_000).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(s.release(a).unwrap(), 0);
    assert_eq!(Source::parse("ami"), Some(Source::Ami));
}

#[test]
fn replay_log_survives_reopen_and_forgets_aged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    let log = ReplayLog::open(&at(&path)).unwrap();
    log.remember("spa:1:aa", 5_000).unwrap();
    log.remember("rot:phone:7", 2_000).unwrap();
    log.remember("spa:1:aa", 4_000).unwrap();
    drop(log);
    let _store = Store::open(&path).unwrap();
    let log = ReplayLog::open(&at(&path)).unwrap();
    assert_eq!(log.load(3_000).unwrap(), vec![("spa:1:aa".to_string(), 5_000)]);
    assert!(log.load(5_000).unwrap().is_empty());
}

#[test]
fn a_replay_key_is_fresh_once_until_it_ages_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::open(&path).unwrap());
    let (first, second) = (
        ReplayLog::open(&at(&path)).unwrap(),
        ReplayLog::open(&at(&path)).unwrap(),
    );
    let until = now_ms() + 60_000;
    assert!(first.remember("spa:1:bb", until).unwrap());
    assert!(!first.remember("spa:1:bb", until).unwrap(), "used here");
    assert!(
        !second.remember("spa:1:bb", until).unwrap(),
        "used through another connection"
    );
    assert!(second.remember("rot:phone:9", until).unwrap(), "another key");
    // An entry past its time (a row not yet pruned) does not stand in the way.
    assert!(first.remember("spa:1:cc", now_ms() - 1).unwrap());
    assert!(second.remember("spa:1:cc", until).unwrap());
    assert_eq!(
        second.load(now_ms()).unwrap().len(),
        3,
        "the taken-over entry lives on to its new time"
    );
}

#[test]
fn accounts_by_tag_never_by_passcode() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
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
    s.add_account(&a, &[7u8; 32]).unwrap();
    assert!(s.add_account(&a, &[8u8; 32]).is_err(), "names are unique");
    let mut b = a.clone();
    b.name = "bob".into();
    assert!(s.add_account(&b, &[7u8; 32]).is_err(), "tags are unique");
    assert_eq!(s.account_by_tag(&[7u8; 32]).unwrap().unwrap().0, a);
    assert!(s.account_by_tag(&[9u8; 32]).unwrap().is_none());
    // A reader's view: the owners' numbers at once, and a version another connection's commit
    // moves (the DISA check keeps both while it stays).
    let reader = Store::open(&dir.path().join("s.db")).unwrap();
    let seen = reader.data_version().unwrap();
    assert_eq!(
        reader.owner_numbers().unwrap(),
        ["15550100100".to_string()].into()
    );
    assert_eq!(reader.data_version().unwrap(), seen, "nothing committed since");
    assert!(s.is_owner_number("15550100100").unwrap());
    assert!(!s.is_owner_number("5550100100").unwrap(), "whole numbers only");
    assert!(!s.is_owner_number("").unwrap());
    assert!(s.set_callers("ann", &[]).unwrap());
    assert!(!s.is_owner_number("15550100100").unwrap());
    assert_ne!(reader.data_version().unwrap(), seen, "the writer committed");
    assert!(reader.owner_numbers().unwrap().is_empty());
    assert_eq!(s.passcode_lengths().unwrap(), vec![Some(12)]);
    assert!(s.set_passcode("ann", &[9u8; 32], 14, 5).unwrap());
    assert_eq!(s.passcode_lengths().unwrap(), vec![Some(14)]);
    assert!(s.account_by_tag(&[7u8; 32]).unwrap().is_none());
    assert!(s.set_disabled("ann", true).unwrap());
    assert!(s.account("ann").unwrap().unwrap().disabled);
    assert_eq!(s.accounts().unwrap().len(), 1);
    assert!(s.remove_account("ann").unwrap());
    assert!(!s.remove_account("ann").unwrap());
}

#[test]
fn disa_limits_survive_reopening_and_old_ones_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap();
    let mut log = LimitLog::open(&at(&path)).unwrap();
    let locked = Record {
        failures: vec![],
        locked_until: 10_000,
    };
    let old = Record {
        failures: vec![100],
        locked_until: 0,
    };
    let global = Record {
        failures: vec![100, 4_000],
        locked_until: 0,
    };
    log.save(
        &[
            (Key::Number("111".into()), locked.clone()),
            (Key::Address("203.0.113.9".parse().unwrap()), old),
            (Key::Global, global.clone()),
            (Key::Number("222".into()), Record::default()),
        ],
        5_000,
    )
    .unwrap();
    drop(log);
    let log = LimitLog::open(&at(&path)).unwrap();
    let mut kept = log.load(5_000, 1_000).unwrap();
    kept.sort_by_key(|(k, _)| k.parts());
    assert_eq!(
        kept,
        vec![(Key::Global, global), (Key::Number("111".into()), locked)],
        "the lockout and the recent global count stay; a stale failure goes"
    );
}

#[test]
fn a_refresh_reads_the_keys_another_connection_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    Store::open(&path).unwrap();
    let (mut writer, reader) = (
        LimitLog::open(&at(&path)).unwrap(),
        LimitLog::open(&at(&path)).unwrap(),
    );
    let number = Key::Number("5551234".into());
    let r = Record {
        failures: vec![1_000, 2_000],
        locked_until: 0,
    };
    writer.save(&[(number.clone(), r.clone())], 2_000).unwrap();
    let keys = [number.clone(), Key::Global];
    assert_eq!(reader.refresh(&keys).unwrap(), vec![(number.clone(), r)]);
    writer.save(&[(number, Record::default())], 3_000).unwrap();
    assert!(
        reader.refresh(&keys).unwrap().is_empty(),
        "cleared by a right passcode"
    );
}

/// A store made before owner numbers and passcode lengths gets the new columns at open.
#[test]
fn a_version_1_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY, tag BLOB NOT NULL UNIQUE,
                 services TEXT NOT NULL, ttl_secs BIGINT NOT NULL, endpoint TEXT,
                 address_modes TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
                 created_ms BIGINT NOT NULL, passcode_ms BIGINT NOT NULL);
                 INSERT INTO accounts VALUES ('old', x'07', 'sip', 60, NULL, 'source', 0, 1, 1);
                 PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let a = s.account("old").unwrap().unwrap();
    assert!(a.callers.is_empty());
    assert_eq!(s.passcode_lengths().unwrap(), vec![None], "length unknown");
}

/// A store from before the history gets the `events` table at open, and keeps what it had.
#[test]
fn a_version_2_store_gets_the_history_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let mut s = Store::open(&path).unwrap();
        s.ban("198.51.100.66".parse().unwrap(), "old", 9_000, 1_000)
            .unwrap();
        s.conn
            .execute_batch("DROP TABLE events; PRAGMA user_version = 2;")
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let version: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(s.counts().unwrap(), (0, 1));
    let mut log = crate::store::history::EventLog::open(&at(&path)).unwrap();
    log.append(&[crate::model::Event::new(crate::model::Kind::Reload, 1_000)])
        .unwrap();
    assert_eq!(log.query(0, None, None, 10).unwrap().0.len(), 1);
}

/// The rows the store holds, counted one by one: what `counts` must agree with.
fn counted(s: &Store) -> (u64, u64) {
    let n = |t: &str| -> u64 {
        s.conn
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    };
    (n("grants"), n("bans"))
}

/// The kept counts follow every way a grant or a ban comes and goes: new rows, extensions,
/// revokes, a ban renewed in place (an upsert that updates), unbans and prunes.
#[test]
fn the_counts_follow_every_write_without_counting_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    assert_eq!(s.counts().unwrap(), (0, 0));
    let new: Vec<NewGrant> = (1..=4)
        .map(|i| grant(&format!("203.0.113.{i}"), &["sip"], 2_000 + i))
        .collect();
    let written = s.insert_grants(&new, 1_000).unwrap();
    assert_eq!(s.counts().unwrap(), (4, 0));
    let w = GrantWrite {
        remove: vec![written[0].id],
        extend: vec![(written[1].id, 9_000, vec!["sip".into()])],
        insert: vec![grant("203.0.113.9", &["rtp"], 3_000)],
    };
    s.write_grants(&w, 1_000).unwrap();
    assert_eq!(s.counts().unwrap(), (4, 0));
    s.revoke("203.0.113.3".parse().unwrap()).unwrap();
    assert_eq!(s.counts().unwrap(), (3, 0));
    let ip = |i: u8| -> IpAddr { format!("198.51.100.{i}").parse().unwrap() };
    s.ban(ip(1), "t", 5_000, 1_000).unwrap();
    s.ban(ip(1), "again", 6_000, 1_000).unwrap();
    s.ban_many(&[(ip(1), "t".into(), 7_000), (ip(2), "t".into(), 4_000)], 1_000)
        .unwrap();
    assert_eq!(s.counts().unwrap(), (3, 2), "a renewed ban is one ban");
    s.unban(ip(2)).unwrap();
    s.unban(ip(2)).unwrap();
    assert_eq!(s.counts().unwrap(), (3, 1));
    s.prune(3_500).unwrap();
    assert_eq!(s.counts().unwrap(), counted(&s));
    assert_eq!(s.counts().unwrap(), (1, 1));
    s.prune(10_000).unwrap();
    assert_eq!(s.counts().unwrap(), (0, 0));
    assert_eq!(s.reader().unwrap().counts().unwrap(), (0, 0), "read-only too");
}

/// Reading the counts reads `live_counts` by its key and never walks the grants or the bans: the
/// gauges, read after every batch, cost the same at a hundred thousand grants as at one.
#[test]
fn reading_the_counts_scans_no_grant_and_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("s.db")).unwrap();
    let mut stmt = s
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", schema::READ_LIVE_COUNTS))
        .unwrap();
    let plan: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter().all(|p| !p.contains("grants") && !p.contains("bans")),
        "{plan:?}"
    );
    assert!(
        plan.iter().any(|p| p.starts_with("SEARCH live_counts")),
        "{plan:?}"
    );
}

/// A store at `path` holding one grant, then made as an older passknock left it by `sql`.
fn older_store(path: &Path, sql: &str) -> Store {
    let mut s = Store::open(path).unwrap();
    s.insert_grants(&[grant("203.0.113.4", &["sip"], 9_000)], 1_000)
        .unwrap();
    s.conn.execute_batch(sql).unwrap();
    s
}

/// A store from before the kept counts (version 5) gets them at open, taken from its rows; so
/// does one whose triggers were dropped by hand. Writes after are counted.
#[test]
fn a_version_5_store_gets_its_counts_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let mut s = older_store(
            &path,
            "DROP TRIGGER grants_added; DROP TRIGGER grants_removed; DROP TRIGGER bans_added;
             DROP TRIGGER bans_removed; DROP TABLE live_counts; PRAGMA user_version = 5;",
        );
        s.ban("198.51.100.5".parse().unwrap(), "t", 9_000, 1_000).unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.counts().unwrap(), (1, 1));
    s.insert_grants(&[grant("203.0.113.5", &["sip"], 9_000)], 1_000)
        .unwrap();
    assert_eq!(s.counts().unwrap(), (2, 1));
    s.conn.execute_batch("DROP TRIGGER bans_removed").unwrap();
    s.conn.execute_batch("DELETE FROM bans").unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.counts().unwrap(), (2, 0), "taken again from the rows");
    assert_eq!(s.counts().unwrap(), counted(&s));
}

/// A store from before clusters gets the node columns at open; its grants keep an empty node.
#[test]
fn a_version_4_store_gets_the_node_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(older_store(
        &path,
        "ALTER TABLE grants DROP COLUMN node; ALTER TABLE events DROP COLUMN node;
         PRAGMA user_version = 4;",
    ));
    let s = Store::open(&path).unwrap();
    let version: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let g = s.live_grants(1_000).unwrap();
    assert_eq!((g.len(), g[0].node.as_str()), (1, ""));
    let n: i64 = s
        .conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'node'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn ban_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("s.db")).unwrap();
    let a: IpAddr = "203.0.113.9".parse().unwrap();
    s.ban(a, "first", 2_000, 1_000).unwrap();
    let b = s.ban(a, "again", 9_000, 1_500).unwrap();
    assert_eq!((b.reason.as_str(), b.expires), ("again", 9_000));
    assert_eq!(s.live_bans(0).unwrap().len(), 1);
    assert!(s.unban(a).unwrap().is_some());
    assert!(s.unban(a).unwrap().is_none());
}

#[test]
fn one_write_ends_extends_and_inserts_an_owner_s_grants() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("store.db")).unwrap();
    let mine = |addr: &str, expires| NewGrant {
        source: Source::Knock,
        who: "knock:laptop".into(),
        ..grant(addr, &["sip"], expires)
    };
    let old = s
        .insert_grants(
            &[
                mine("203.0.113.1", 5_000),
                mine("203.0.113.2", 5_000),
                grant("203.0.113.1", &["sip"], 5_000),
            ],
            1_000,
        )
        .unwrap();
    assert_eq!(
        s.grants_of("knock:laptop", Source::Knock, 1_000).unwrap(),
        old[..2]
    );
    assert!(s
        .grants_of("knock:laptop", Source::Disa, 1_000)
        .unwrap()
        .is_empty());
    s.hold(old[1].address, 9_000, 1_000).unwrap();
    let w = GrantWrite {
        remove: vec![old[0].id],
        extend: vec![(old[1].id, 7_000, vec!["sip".into(), "rtp".into()])],
        insert: vec![mine("203.0.113.3", 6_000)],
    };
    let done = s.write_grants(&w, 2_000).unwrap();
    assert_eq!(done.removed, old[..1]);
    let ext = &done.extended[0];
    assert_eq!(
        (ext.id, ext.expires, ext.end()),
        (old[1].id, 7_000, 9_000),
        "a hold still counts"
    );
    assert_eq!(ext.services, ["sip", "rtp"]);
    assert_eq!(done.inserted[0].created, 2_000);
    let left: Vec<String> = s
        .grants_of("knock:laptop", Source::Knock, 2_000)
        .unwrap()
        .iter()
        .map(|g| g.address.to_string())
        .collect();
    assert_eq!(left, ["203.0.113.2", "203.0.113.3"]);
    // A shorter expiry never shortens a grant; the admin's grant was never touched.
    let w = GrantWrite {
        extend: vec![(old[1].id, 3_000, vec!["sip".into()])],
        ..GrantWrite::default()
    };
    assert_eq!(s.write_grants(&w, 2_500).unwrap().extended[0].expires, 7_000);
    assert_eq!(
        s.grants_for("203.0.113.1".parse().unwrap(), 2_500).unwrap().len(),
        1
    );
}

/// The live grants are read in chunks: every live one exactly once, however many chunks, and
/// none that has ended.
#[test]
fn every_live_grant_is_read_once_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("store.db")).unwrap();
    let new: Vec<NewGrant> = (0..10_000u32)
        .map(|i| {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            // Every seventh has ended by the time of the read.
            grant(&ip.to_string(), &["sip"], if i % 7 == 0 { 1_500 } else { 9_000 })
        })
        .collect();
    s.insert_grants(&new, 1_000).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = 0;
    s.for_each_live(2_000, |ip, services, end| {
        assert_eq!((services, end), ("sip", 9_000));
        seen.insert(ip);
        rows += 1;
    })
    .unwrap();
    let live = (0..10_000u32).filter(|i| i % 7 != 0).count();
    assert_eq!((rows, seen.len()), (live, live));
}

/// A commit that meets another connection's write waits for it and then goes through: the
/// history writer and the listeners share the file with the engine.
#[test]
fn a_write_waits_for_another_connection_s_write_then_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut s = Store::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        other.execute_batch("COMMIT").unwrap();
    });
    tx.send(()).unwrap();
    let written = s.insert_grants(&[grant("203.0.113.9", &["sip"], 5_000)], 1_000);
    holder.join().unwrap();
    assert_eq!(written.unwrap().len(), 1, "waited, not refused as busy");
    assert_eq!(s.counts().unwrap(), (1, 0));
}

/// The busy wait tries often at first and gives up after its limit, not sooner or never.
#[test]
fn the_busy_wait_is_fine_at_first_and_bounded() {
    use super::schema::{busy_pause, busy_waited, BUSY_LIMIT};
    assert_eq!(busy_pause(0), std::time::Duration::from_micros(50));
    assert!((1..6_000).all(|t| busy_waited(t) > busy_waited(t - 1)));
    assert_eq!(busy_waited(3), std::time::Duration::from_micros(150));
    let last = (0..i32::MAX).find(|&t| busy_waited(t) >= BUSY_LIMIT).unwrap();
    assert!((5_000..5_200).contains(&last), "gives up after {last} tries");
}

/// What the engine opens before a write's commit is what the write leaves: `applied_to` of the
/// rows before equals the rows after, address by address (a new row's id aside).
#[test]
fn a_write_applied_in_memory_matches_the_store_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("store.db")).unwrap();
    let mine = |addr: &str, expires| NewGrant {
        source: Source::Disa,
        who: "account:alice".into(),
        ..grant(addr, &["sip"], expires)
    };
    let old = s
        .insert_grants(
            &[
                mine("203.0.113.1", 5_000),
                mine("203.0.113.2", 9_000),
                grant("203.0.113.1", &["rtp"], 4_000),
            ],
            1_000,
        )
        .unwrap();
    s.hold(old[1].address, 12_000, 1_000).unwrap();
    let w = GrantWrite {
        remove: vec![old[0].id],
        // A shorter expiry than the row's: the row keeps its own; the services are the new ones.
        extend: vec![(old[1].id, 7_000, vec!["sip".into(), "rtp".into()])],
        insert: vec![mine("203.0.113.3", 6_000), grant("203.0.113.1", &["sip"], 8_000)],
    };
    let addrs: Vec<IpAddr> = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let before: Vec<Vec<Grant>> = addrs.iter().map(|a| s.grants_for(*a, 2_000).unwrap()).collect();
    s.write_grants(&w, 2_000).unwrap();
    for (a, before) in addrs.iter().zip(before) {
        let key = |g: &Grant| (g.who.clone(), g.services.clone(), g.expires, g.end(), g.created);
        let mut want: Vec<_> = w.applied_to(*a, &before, 2_000).iter().map(key).collect();
        let mut got: Vec<_> = s.grants_for(*a, 2_000).unwrap().iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(want, got, "at {a}");
    }
}
