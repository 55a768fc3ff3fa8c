//! A node whose shared store goes away: it says so in `status`, refuses new grants in words,
//! keeps banning from AMI in its own table, and writes those bans up once the store is back, so
//! the other nodes ban them too.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterConfig};
use support::daemon::eventually;
use support::env::WAIT;
use support::sipp::Registration;

/// Generous waits, never measures.
const FOLLOW: Duration = Duration::from_secs(20);

/// The doctor's store check: (verdict, detail).
fn doctor_store(d: &support::daemon::Daemon) -> (String, String) {
    let config = d.config.display().to_string();
    let out = d.cli(&["--config", &config, "doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .expect("a store check with a shared store")
        .clone();
    (
        c["verdict"].as_str().unwrap().to_string(),
        c["detail"].as_str().unwrap().to_string(),
    )
}

fn status(d: &support::daemon::Daemon) -> String {
    let out = d.cli(&["status"]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn while_the_store_is_away_a_node_says_so_and_its_ami_bans_are_written_up_after() {
    let mut c = Cluster::start(ClusterConfig {
        nodes: 2,
        asterisk: vec![0],
        ami: "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"".into(),
        ..ClusterConfig::default()
    });
    assert!(
        eventually(WAIT, || c.node(0).d().json(&["contacts"])["ami"]["connected"]
            == true),
        "A never logged in to its AMI:\n{}",
        c.logs()
    );
    // Connected: the node, the database (no password) and both nodes' signs of life.
    assert!(
        eventually(FOLLOW, || {
            let s = status(c.node(0).d());
            s.contains("as node a: connected") && s.contains("a (seen") && s.contains("b (seen")
        }),
        "{}",
        status(c.node(0).d())
    );
    let (verdict, detail) = doctor_store(c.node(0).d());
    assert_eq!(verdict, "ok", "{detail}");
    assert!(
        detail.contains("node a is connected to postgresql://"),
        "{detail}"
    );
    c.pg.stop();
    let (a, b) = (c.node(0), c.node(1));
    assert!(
        eventually(FOLLOW, || status(a.d()).contains("NOT connected")),
        "A does not say its store is away:\n{}",
        status(a.d())
    );
    let (verdict, detail) = doctor_store(a.d());
    assert_eq!(verdict, "fail", "{detail}");
    assert!(
        detail.contains("node a has NOT reached postgresql://"),
        "{detail}"
    );
    // A new grant is refused in words; nothing is invented.
    let out = a.d().cli(&["grant", "192.0.2.9", "--ttl", "1h"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "granted with the store away");
    assert!(said.contains("not granted"), "{said}");
    assert!(!a.in_set(support::cluster::ALLOW_SET, "192.0.2.9"));
    // A guesser seen by A's AMI is banned at A at once.
    let bad = "203.0.113.10";
    for _ in 0..3 {
        assert!(matches!(
            a.register_with(c.road(1), "701", "wrong-password"),
            Registration::Rejected(_)
        ));
    }
    assert!(
        eventually(FOLLOW, || a.in_set("ban_v4", bad)),
        "{bad} is not banned at A while the store is away:\n{}",
        c.logs()
    );
    assert!(
        status(a.d()).contains("ban(s) made here wait to be written up"),
        "{}",
        status(a.d())
    );
    assert!(!b.in_set("ban_v4", bad), "B cannot know yet");
    c.pg.start_again();
    let (a, b) = (c.node(0), c.node(1));
    for n in [a, b] {
        assert!(
            eventually(FOLLOW, || n.in_set("ban_v4", bad)),
            "{bad} is not banned at {} after the store is back:\n{}",
            n.name,
            c.logs()
        );
    }
    assert!(
        eventually(FOLLOW, || {
            let s = status(a.d());
            s.contains("as node a: connected") && !s.contains("wait to be written up")
        }),
        "{}",
        status(a.d())
    );
    let banned: Vec<String> = b.d().json(&["list"])["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(banned, [bad], "the store has the ban A made while it was away");
}
