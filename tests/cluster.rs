//! Several PBXs, one truth: two or three real passknockd nodes in network namespaces of their own
//! share one real PostgreSQL store, and what is granted, banned, refused or used up at one node
//! holds at all of them; real Asterisk and SIPp make the calls, real nft tables carry the result.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knockd::client::{self, Plan, Send};
use knockd::spa::{self, Requested, Spa, SpaKey};
use knockd::Port;
use support::cluster::{Cluster, ClusterConfig, Node, ALLOW_SET, SPA_PORT, STATIC};
use support::daemon::{eventually, start_refused, test_config, Daemon};
use support::disa_daemon::add_account;
use support::env::WAIT;
use support::netns::Netns;
use support::pg::Pg;
use support::sipp::{Call, Hangup, Registration};

const DISA: &str = "3472";
/// How long a node may take to follow a change made at another: generous, never a measure.
const FOLLOW: Duration = Duration::from_secs(15);

fn calls_at(nodes: usize, asterisk: Vec<usize>) -> Cluster {
    Cluster::start(ClusterConfig {
        nodes,
        asterisk,
        ..ClusterConfig::default()
    })
}

/// Waits until every node in `nodes` lets road `road` reach it.
fn reaches_all(c: &Cluster, road: usize, nodes: &[usize]) {
    for &i in nodes {
        assert!(
            eventually(FOLLOW, || c.reaches(road, i)),
            "road {road} does not reach node {}:\n{}",
            c.node(i).name,
            c.logs()
        );
    }
}

#[test]
fn a_disa_grant_at_node_a_lets_the_caller_through_b_and_c() {
    let c = calls_at(3, vec![0]);
    let a = c.node(0);
    let passcode = add_account(a.d(), &["ann", "--address-modes", "source"]);
    for i in 0..3 {
        assert!(
            !c.reaches(1, i),
            "node {} is closed before the call",
            c.node(i).name
        );
    }
    let hangup = a.call(
        c.road(1),
        &Call::to(DISA)
            .dtmf(&format!("{passcode}#"))
            .hold(Duration::from_secs(20)),
    );
    assert_eq!(
        hangup,
        Hangup::Remote,
        "A ends the call after saying access is granted"
    );
    reaches_all(&c, 1, &[0, 1, 2]);
    for i in 1..3 {
        let g = c.node(i).grants();
        assert_eq!(g.len(), 1, "node {}: {g:?}", c.node(i).name);
        assert_eq!(g[0]["address"], "203.0.113.10");
        assert_eq!(g[0]["who"], "disa:ann");
    }
    assert!(!c.reaches(2, 1), "nobody else gets in at B");
}

#[test]
fn a_knock_at_node_b_lets_the_knocker_through_a_and_c() {
    let c = calls_at(3, vec![]);
    let b = c.node(1);
    let ports: Vec<Port> = STATIC.iter().map(|p| p.parse().unwrap()).collect();
    let to = IpAddr::V4(b.v4);
    let sends = ports
        .iter()
        .map(|p| match p.proto {
            knockd::Proto::Tcp => Send::Syn(SocketAddr::new(to, p.port)),
            knockd::Proto::Udp => Send::Datagram(SocketAddr::new(to, p.port), Vec::new()),
        })
        .collect();
    let plan = Plan {
        sends,
        delay: Duration::from_millis(50),
    };
    c.road(2).ns.within(move || client::send(&plan).unwrap());
    reaches_all(&c, 2, &[1, 0, 2]);
    let g = c.node(0).grants();
    assert_eq!(g[0]["address"], "203.0.113.20", "{g:?}");
    assert_eq!(g[0]["who"], "knock:laptop");
    assert!(!c.reaches(1, 0), "only the knocker");
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn send_datagram(ns: &Netns, from: IpAddr, to: SocketAddr, bytes: Vec<u8>) {
    ns.within(move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
        s.send_to(&bytes, to).unwrap();
    });
}

#[test]
fn an_spa_packet_used_at_a_and_replayed_at_c_opens_nothing() {
    let c = calls_at(3, vec![]);
    let key = SpaKey::derive(&c.spa_secret);
    let packet = spa::seal(&key, &Spa::new(&key, now_s(), Requested::Source).unwrap()).to_vec();
    let (r1, r2) = (c.road(1), c.road(2));
    let at = |i: usize| SocketAddr::new(IpAddr::V4(c.node(i).v4), SPA_PORT);
    send_datagram(&r2.ns, IpAddr::V4(r2.v4), at(0), packet.clone());
    reaches_all(&c, 2, &[0, 2]);
    // Captured on the way: an eavesdropper on road 1 sends it to C; then road 2 itself, once A
    // has taken the grant back.
    send_datagram(&r1.ns, IpAddr::V4(r1.v4), at(2), packet.clone());
    c.node(0).d().ok(&["revoke", "203.0.113.20"]);
    for i in 0..3 {
        assert!(
            eventually(FOLLOW, || !c.node(i).in_set(ALLOW_SET, "203.0.113.20")),
            "the revoke at A reaches node {}:\n{}",
            c.node(i).name,
            c.logs()
        );
    }
    send_datagram(&r2.ns, IpAddr::V4(r2.v4), at(2), packet);
    let cn = c.node(2);
    // C says so in its log, or at least counts two refused knocks (A's history may be shared).
    let refused = || {
        let log = cn.d().log_text();
        let lines = log
            .lines()
            .filter(|l| l.contains("replay") && !l.contains("remembered"))
            .count();
        lines >= 2 || cn.d().json(&["status"])["last_hour"]["knocks_refused"].as_u64() >= Some(2)
    };
    assert!(
        eventually(FOLLOW, refused),
        "C refuses both as replays:\n{}",
        c.logs()
    );
    for i in 0..3 {
        let g = c.node(i).grants();
        assert!(g.is_empty(), "node {} holds {g:?}", c.node(i).name);
        assert!(!c.reaches(1, i) && !c.reaches(2, i));
    }
}

#[test]
fn wrong_passcodes_spread_across_a_and_b_lock_the_caller_out_at_the_shared_limit() {
    let c = calls_at(2, vec![0, 1]);
    let (a, b) = (c.node(0), c.node(1));
    let passcode = add_account(a.d(), &["dan", "--address-modes", "source"]);
    // Three wrong tries at A; the fourth, at B, is the shared limit of four: then the right
    // passcode is refused at B, which on its own has seen one failure.
    a.call(
        c.road(1),
        &Call::to(DISA)
            .dtmf("111111111111#ww222222222222#ww333333333333#")
            .hold(Duration::from_secs(30)),
    );
    b.call(
        c.road(1),
        &Call::to(DISA)
            .dtmf(&format!("444444444444#ww{passcode}#"))
            .hold(Duration::from_secs(30)),
    );
    let log = b.d().log_text();
    assert!(log.contains("source=disa (locked out)"), "{}", c.logs());
    assert!(log.contains("lockout number=\"701\""), "{}", c.logs());
    for n in [a, b] {
        assert!(n.grants().is_empty(), "node {} granted:\n{}", n.name, c.logs());
    }
    // Another phone with the right passcode still gets in at B.
    b.call(
        c.road(2),
        &Call::to(DISA)
            .caller("702")
            .dtmf(&format!("{passcode}#"))
            .hold(Duration::from_secs(20)),
    );
    reaches_all(&c, 2, &[1, 0]);
    assert!(!c.reaches(1, 0));
}

#[test]
fn ami_failures_seen_at_a_ban_the_address_at_b() {
    let c = Cluster::start(ClusterConfig {
        nodes: 2,
        asterisk: vec![0],
        ami: "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"".into(),
        ..ClusterConfig::default()
    });
    let (a, b) = (c.node(0), c.node(1));
    assert!(
        eventually(WAIT, || a.d().json(&["contacts"])["ami"]["connected"] == true),
        "A never logged in to its AMI:\n{}",
        c.logs()
    );
    let bad = "203.0.113.10";
    assert!(!b.in_set("ban_v4", bad));
    for _ in 0..3 {
        assert!(matches!(
            a.register_with(c.road(1), "701", "wrong-password"),
            Registration::Rejected(_)
        ));
    }
    for n in [a, b] {
        assert!(
            eventually(FOLLOW, || n.in_set("ban_v4", bad)),
            "{bad} is not banned at {}:\n{}",
            n.name,
            c.logs()
        );
    }
    assert!(!b.in_set("ban_v4", "203.0.113.20"), "only the guesser");
}

/// The address of the `n`th grant a load thread makes at node `node`.
fn load_addr(node: usize, n: usize) -> String {
    format!("100.{}.{}.{}", 64 + node, n / 250, n % 250 + 1)
}

/// What a load thread saw: addresses acknowledged, and refusals with their words.
#[derive(Default)]
struct Load {
    acked: Vec<String>,
    refused: Vec<(String, String)>,
}

/// Grants at node `i` one after another until `stop`, each through the CLI as an admin would.
fn load(d: &Daemon, i: usize, stop: &AtomicBool, seen: &Mutex<Load>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let addr = load_addr(i, n);
        n += 1;
        let out = d.cli(&["grant", &addr, "--ttl", "2h"]);
        let mut s = seen.lock().unwrap();
        if out.status.success() {
            s.acked.push(addr);
        } else {
            s.refused
                .push((addr, String::from_utf8_lossy(&out.stderr).into_owned()));
            drop(s);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn postgresql_stopped_for_30_s_while_grants_run_loses_no_acknowledged_grant() {
    let mut c = calls_at(3, vec![]);
    let stop = AtomicBool::new(false);
    let seen: Vec<Mutex<Load>> = (0..2).map(|_| Mutex::default()).collect();
    let acked = |i: usize| seen[i].lock().unwrap().acked.len();
    // The load threads read the nodes while this thread stops and starts the store.
    let (nodes, pg) = (&c.nodes, &mut c.pg);
    let logs = || nodes.iter().map(Node::log).collect::<Vec<_>>().join("\n");
    let (outage_from, refused_before, acked_before, synced_in) = std::thread::scope(|s| {
        for i in 0..2 {
            let (d, stop, seen) = (nodes[i].d(), &stop, &seen[i]);
            s.spawn(move || load(d, i, stop, seen));
        }
        assert!(
            eventually(Duration::from_secs(30), || acked(0) >= 5 && acked(1) >= 5),
            "grants do not run:\n{}",
            logs()
        );
        let before: Vec<usize> = (0..2).map(acked).collect();
        let refused: Vec<usize> = (0..2).map(|i| seen[i].lock().unwrap().refused.len()).collect();
        // The outage: the nodes keep enforcing what they have.
        let held = seen[0].lock().unwrap().acked[0].clone();
        let from = Instant::now();
        pg.stop();
        std::thread::sleep(Duration::from_secs(30));
        for n in nodes {
            assert!(
                n.in_set(ALLOW_SET, &held),
                "node {} dropped {held} while the store was away:\n{}",
                n.name,
                logs()
            );
        }
        pg.start_again();
        let back = Instant::now();
        let after: Vec<usize> = (0..2).map(acked).collect();
        assert!(
            eventually(Duration::from_secs(60), || (0..2)
                .all(|i| acked(i) >= after[i] + 5)),
            "grants do not resume after the store is back:\n{}",
            logs()
        );
        stop.store(true, Ordering::Relaxed);
        (from, refused, before, back)
    });
    let loads: Vec<Load> = seen.into_iter().map(|m| m.into_inner().unwrap()).collect();
    let all: Vec<&String> = loads.iter().flat_map(|l| &l.acked).collect();
    let refused: Vec<&(String, String)> = loads.iter().flat_map(|l| &l.refused).collect();
    eprintln!(
        "grants acknowledged {}, refused {} (before the outage: acked {acked_before:?}, refused {refused_before:?}); outage began {:?} ago",
        all.len(),
        refused.len(),
        outage_from.elapsed()
    );
    assert!(
        !refused.is_empty(),
        "no grant was asked for while the store was away"
    );
    for (addr, why) in refused.iter().take(3) {
        eprintln!("refused {addr}: {}", why.trim());
    }
    for (addr, why) in &refused {
        assert!(!why.trim().is_empty(), "{addr} was refused without a word");
    }
    let clear = refused.iter().filter(|(a, _)| !why_ambiguous(&loads, a)).count();
    eprintln!("{clear} of {} refusals say the grant was not made", refused.len());
    assert!(clear > 0, "no refusal said the grant was not made: {refused:?}");
    // Every node comes back to the store's truth: every acknowledged grant, nothing refused.
    let mut in_sync = Vec::new();
    for i in 0..3 {
        let n = c.node(i);
        let ok = eventually(Duration::from_secs(60), || {
            let set = n.set_elements(ALLOW_SET);
            all.iter().all(|a| set.contains(a))
        });
        in_sync.push(synced_in.elapsed());
        let set = n.set_elements(ALLOW_SET);
        let missing: Vec<_> = all.iter().filter(|a| !set.contains(a)).collect();
        assert!(
            ok,
            "node {} lacks acknowledged grants {missing:?}:\n{}",
            n.name,
            c.logs()
        );
        let listed: Vec<String> = n
            .grants()
            .iter()
            .map(|g| g["address"].as_str().unwrap().to_string())
            .collect();
        for a in &set {
            assert!(
                listed.contains(a),
                "node {}'s table allows {a}, its store does not",
                n.name
            );
        }
        for (addr, _) in &refused {
            let clean = !why_ambiguous(&loads, addr);
            assert!(
                !clean || !set.contains(addr),
                "node {} allows {addr}, which was refused",
                n.name
            );
        }
    }
    eprintln!("each node held every acknowledged grant within {in_sync:?} of the store coming back");
}

/// A refusal whose words do not say "not granted" (the CLI lost the daemon, a timeout) may or
/// may not have been written; one that says so must not have been.
fn why_ambiguous(loads: &[Load], addr: &str) -> bool {
    loads
        .iter()
        .flat_map(|l| &l.refused)
        .any(|(a, why)| a == addr && !why.contains("not granted"))
}

#[test]
fn a_node_killed_and_restarted_catches_up() {
    let mut c = calls_at(3, vec![]);
    let a = c.node(0).d();
    a.ok(&["grant", "192.0.2.1", "--ttl", "2h"]);
    assert!(
        eventually(FOLLOW, || c.node(2).in_set(ALLOW_SET, "192.0.2.1")),
        "{}",
        c.logs()
    );
    c.node_mut(2).d_mut().kill9();
    let (a, b) = (c.node(0).d(), c.node(1).d());
    a.ok(&["grant", "192.0.2.2", "--ttl", "2h"]);
    a.ok(&["revoke", "192.0.2.1"]);
    b.ok(&["ban", "192.0.2.66", "--ttl", "1h"]);
    c.node_mut(2).d_mut().spawn();
    let cn = c.node(2);
    assert!(
        eventually(FOLLOW, || {
            let allow = cn.set_elements(ALLOW_SET);
            allow.contains(&"192.0.2.2".to_string())
                && !allow.contains(&"192.0.2.1".to_string())
                && cn.in_set("ban_v4", "192.0.2.66")
        }),
        "C did not catch up: allow {:?}, ban {:?}\n{}",
        cn.set_elements(ALLOW_SET),
        cn.set_elements("ban_v4"),
        c.logs()
    );
    let listed: Vec<String> = cn
        .grants()
        .iter()
        .map(|g| g["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["192.0.2.2"]);
}

/// Moves the schema version `db` records to one no release has made yet.
fn future_schema(pg: &Pg, db: &str) {
    pg.psql(db, "UPDATE schema_version SET version = version + 100");
    assert_ne!(pg.psql(db, "SELECT count(*) FROM schema_version"), "0");
}

#[test]
fn a_wrong_url_a_refused_login_or_another_schema_version_stop_the_daemon_with_a_clear_error() {
    let pg = Pg::start();
    let ns = Netns::new("badstore");
    let dir = tempfile::tempdir().unwrap();
    let sock = pg.socket_dir().display().to_string();
    pg.create_db("known");
    pg.psql("known", "CREATE ROLE visitor NOLOGIN");
    // A database a node made, then set to a schema version from the future.
    pg.create_db("future");
    let config = |url: &str| {
        support::cluster::with_store(&test_config(dir.path(), ""), dir.path(), url, "a").replace(
            &format!("{}/control.sock", dir.path().display()),
            &support::daemon::short_socket().display().to_string(),
        )
    };
    {
        let mut d = Daemon::start(&ns, dir.path(), &config(&pg.url("future")));
        d.term();
    }
    future_schema(&pg, "future");
    let cases = [
        (
            format!("postgresql://passknock:hunter2@/known?host={sock}"),
            "password",
        ),
        (
            format!("postgresql://passknock@/known?host={sock}&sslmode=sometimes"),
            "sslmode",
        ),
        (format!("postgresql://visitor@/known?host={sock}"), "visitor"),
        (format!("postgresql://passknock@/nowhere?host={sock}"), "nowhere"),
        (pg.url("future"), "version"),
    ];
    for (url, says) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config(&url)).unwrap();
        let out = start_refused(&ns, &path);
        let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(
            err.contains(says),
            "{url}: the refusal should say {says:?}:\n{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "a password never reaches the output:\n{err}"
        );
    }
    // Nothing was made in the refused database's place.
    assert_eq!(
        pg.psql(
            "known",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
}
