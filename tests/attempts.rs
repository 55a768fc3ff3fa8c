//! Attempted registrations, captured: a real SIPp phone in a road namespace sends REGISTERs to
//! the PBX's SIP port, the real table drops them and logs them to the SIP NFLOG group, and the
//! real daemon remembers the attempt for the account's endpoint — and not for a user that is no
//! account. Junk on the SIP port is counted, never logged line by line.

mod support;

use std::net::{IpAddr, SocketAddr};

use support::daemon::{eventually, Daemon};
use support::disa_daemon;
use support::env::{Env, WAIT};
use support::netns::udp_socket;
use support::sipp::{self, Peer};

/// The SIP service is udp/5060, dropped for the road hosts (not trusted, not granted). Limits
/// high enough that the test's own few packets are never over them.
const SIP: &str = r#"
[services.sip]
ports = ["udp/5060"]

[sip-attempts]
per-source-rate = 100
per-source-burst = 200
"#;

/// A marker in the junk, to be sure no log line carries it.
const JUNK_MARK: &str = "junk-7f3a";

fn start(env: &mut Env) -> &Daemon {
    let dir = env.daemon_dir();
    let config = disa_daemon::config(&dir, SIP);
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config));
    env.daemon.as_ref().unwrap()
}

/// A REGISTER from `road` as `user` on a thread; the table drops it, so SIPp retransmits until
/// its timeout and ends without an outcome. The thread's result is not looked at.
fn register_in_background(env: &Env, road: usize, user: &str, v6: bool) -> std::thread::JoinHandle<()> {
    let dir = env.dir.inside.clone();
    let peer = Peer::from(env.road(road));
    let pbx = env.topo.pbx_addr(v6);
    let user = user.to_string();
    std::thread::spawn(move || {
        let _ = sipp::register(&dir, &peer, pbx, &user, "wrong", 300);
    })
}

fn attempts(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["attempts"])["attempts"].as_array().unwrap().clone()
}

fn status(d: &Daemon) -> serde_json::Value {
    d.json(&["status"])["sip_attempts"].clone()
}

#[test]
fn a_dropped_register_is_remembered_for_the_accounts_endpoint_only() {
    let mut env = Env::new();
    let d = start(&mut env);
    // The table loaded with the capture rules in it.
    let table = String::from_utf8_lossy(&d.nft(&["list", "table", "inet", "passknock"]).stdout).into_owned();
    assert!(
        table.contains("meter sip_attempt_v4") && table.contains("log group 7448 snaplen 1500"),
        "{table}"
    );
    disa_daemon::add_account(d, &["road", "--endpoint", "701"]);
    let road1: IpAddr = env.road(1).v4.into();
    let road2: IpAddr = env.road(2).v4.into();

    let road1_v6: IpAddr = env.road(1).v6.into();
    let real = register_in_background(&env, 1, "701", false);
    let real_v6 = register_in_background(&env, 1, "701", true);
    let stranger = register_in_background(&env, 2, "999", false);
    let d = env.daemon.as_ref().unwrap();
    // The endpoints are read within a few seconds of the account's making; SIPp retransmits
    // for longer than that.
    assert!(
        eventually(WAIT * 2, || attempts(d)
            .iter()
            .any(|a| a["endpoint"] == "701" && a["address"] == road1.to_string())),
        "no attempt recorded for 701 from {road1}: {:?}\n{}",
        attempts(d),
        d.log_text()
    );
    // Both families: the v6 rule logs too.
    assert!(
        eventually(WAIT, || attempts(d)
            .iter()
            .any(|a| a["endpoint"] == "701" && a["address"] == road1_v6.to_string())),
        "no attempt recorded for 701 from {road1_v6}: {:?}",
        attempts(d)
    );
    assert!(
        eventually(WAIT, || status(d)["not_account"].as_u64().unwrap_or(0) > 0),
        "{}",
        status(d)
    );
    let all = attempts(d);
    let from_road1 =
        |a: &serde_json::Value| a["address"] == road1.to_string() || a["address"] == road1_v6.to_string();
    assert!(
        all.iter().all(|a| a["endpoint"] == "701" && from_road1(a)),
        "only 701 from road 1: {all:?}"
    );
    assert_eq!(all[0]["user_agent"], "passknock-test-sipp");
    let text = d.ok(&["attempts"]);
    assert!(
        text.contains("701") && text.contains(&road1.to_string()),
        "{text}"
    );
    let screen = d.ok(&["status"]);
    assert!(screen.contains("SIP attempts since start:"), "{screen}");
    real.join().unwrap();
    real_v6.join().unwrap();
    stranger.join().unwrap();

    // Junk from road 2: not SIP, oversized (fragments the kernel reassembles before the table),
    // and SIP-shaped but malformed. Each is counted; none is a log line.
    let before = status(d)["malformed"].as_u64().unwrap();
    let log_lines = d.log_text().lines().count();
    let sock = udp_socket(&env.road(2).ns, SocketAddr::new(road2, 0));
    let pbx = SocketAddr::new(env.topo.pbx_addr(false), 5060);
    let junk: Vec<Vec<u8>> = vec![
        format!("\x16\x03\x01 {JUNK_MARK} not sip at all").into_bytes(),
        [JUNK_MARK.as_bytes(), &[b'A'; 6000][..]].concat(),
        format!("REGISTER sip:x SIP/2.0\r\nFrom: <sip:701@x>\r\nX-{JUNK_MARK}: 1\r\n\r\n").into_bytes(),
        format!("REGISTER sip:x SIP/3.0\r\nTo: <sip:701@x>\r\n\r\n{JUNK_MARK}").into_bytes(),
        vec![0u8; 40],
    ];
    let rounds = 10;
    for _ in 0..rounds {
        for j in &junk {
            sock.send_to(j, pbx).unwrap();
        }
    }
    let sent = (rounds * junk.len()) as u64;
    assert!(
        eventually(WAIT, || status(d)["malformed"].as_u64().unwrap() >= before + sent),
        "junk counted: {} (was {before}, sent {sent})",
        status(d)
    );
    let log = d.log_text();
    assert!(!log.contains(JUNK_MARK), "junk reached the log:\n{log}");
    // The table's reconcile logs a line a second on its own; everything else counts.
    let added = log
        .lines()
        .skip(log_lines)
        .filter(|l| !l.contains("reconcile:"))
        .count();
    assert!(
        added < rounds,
        "{added} log lines for {sent} junk packets:\n{log}"
    );
    // Nothing of the junk was remembered, and 701's attempt is still the only one.
    let all = attempts(d);
    assert!(all.iter().all(from_road1), "{all:?}");
}
