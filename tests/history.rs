//! The history survives a restart: the real daemon in a network namespace makes grants, a ban, a
//! refused grant, and refuses wrong passcodes on a DISA call (this test speaks FastAGI as
//! Asterisk would); after SIGTERM and after `kill -9`, `passknock log`, `passknock report` and
//! `status --json` still show and count every one of them.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::daemon::{short_socket, Daemon};
use support::netns::Netns;

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[daemon]
store = "{dir}/store.db"
control-socket = "{sock}"
reconcile-interval = "1s"
history-retention = "7d"

[grants]
default-services = ["sip"]

[firewall]
trusted = ["127.0.0.0/8", "::1/128"]

[services.sip]
ports = ["udp/5060", "tcp/5060"]

[disa]
enabled = true
key-file = "{dir}/disa.key"
tries-per-call = 3
lockout-failures = 3
"#,
        dir = dir.display(),
        sock = short_socket().display()
    )
}

/// One DISA call as Asterisk places it over FastAGI: a `Local` channel from 5551234, keying
/// twelve wrong digits at every passcode prompt. Returns the commands the daemon sent.
fn wrong_passcode_call(ns: &Netns) -> Vec<String> {
    ns.within(|| {
        let s = TcpStream::connect(("127.0.0.1", 4573)).expect("FastAGI listener");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(
            b"agi_network: yes\nagi_network_script: disa\nagi_request: agi://127.0.0.1:4573/disa\n\
              agi_channel: Local/3472@passknock-00000001;2\nagi_callerid: 5551234\n\
              agi_uniqueid: 1700000000.1\n\n",
        )
        .unwrap();
        let mut seen = Vec::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            let reply = if line.starts_with("GET DATA") {
                "200 result=000000000000"
            } else if line == "HANGUP" {
                "200 result=1"
            } else {
                "200 result=0"
            };
            seen.push(line.clone());
            if w.write_all(format!("{reply}\n").as_bytes()).is_err() || line == "HANGUP" {
                break;
            }
        }
        seen
    })
}

/// (kind, address, who, count) of every event `passknock log --json ARGS` shows.
fn logged(d: &Daemon, args: &[&str]) -> Vec<(String, String, String, u64)> {
    let mut a = vec!["log"];
    a.extend_from_slice(args);
    let v = d.json(&a);
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["address"].as_str().unwrap_or("-").to_string(),
                e["who"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn total(events: &[(String, String, String, u64)], kind: &str) -> u64 {
    events.iter().filter(|e| e.0 == kind).map(|e| e.3).sum()
}

/// The words of the first line of `text` that starts with `label`.
fn row(text: &str, label: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_everything_is_there(d: &Daemon, when: &str) {
    let all = logged(d, &[]);
    assert_eq!(total(&all, "grant"), 2, "{when}: {all:?}");
    assert_eq!(total(&all, "ban"), 1, "{when}: {all:?}");
    assert_eq!(total(&all, "grant-refused"), 1, "{when}: {all:?}");
    assert_eq!(total(&all, "passcode-refused"), 3, "{when}: {all:?}");
    assert_eq!(total(&all, "lockout-number"), 1, "{when}: {all:?}");
    assert_eq!(total(&all, "disa-call"), 1, "{when}: {all:?}");
    assert_eq!(total(&all, "account"), 1, "{when}: {all:?}");

    // One address, one account.
    let one = logged(d, &["--address", "203.0.113.7"]);
    assert_eq!(
        one,
        [(
            "grant".to_string(),
            "203.0.113.7".to_string(),
            "uid 0".to_string(),
            1
        )],
        "{when}"
    );
    let caller = logged(d, &["--account", "5551234"]);
    assert!(
        caller
            .iter()
            .all(|e| ["disa-call", "passcode-refused", "lockout-number"].contains(&e.0.as_str())),
        "{when}: {caller:?}"
    );
    assert_eq!(total(&caller, "passcode-refused"), 3, "{when}");

    // The table, newest last: the lockout came after the grants.
    let text = d.ok(&["log", "--since", "1h"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)"), "{when}:\n{text}");
    let grant = lines.iter().position(|l| l.contains("203.0.113.7")).unwrap();
    let lockout = lines.iter().position(|l| l.contains("lockout-number")).unwrap();
    assert!(grant < lockout, "{when}: newest last:\n{text}");
    let words = lines[grant].split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("grant 203.0.113.7 uid 0 admin services=sip"),
        "{when}:\n{text}"
    );

    // The report an admin mails.
    let report = d.ok(&["report", "--since", "24h"]);
    assert_eq!(row(&report, "grants"), "grants 2", "{when}:\n{report}");
    assert_eq!(row(&report, "bans"), "bans 1", "{when}:\n{report}");
    assert_eq!(
        row(&report, "refusals"),
        "refusals 4 (knocks 0, passcodes 3, grant requests 1)",
        "{when}:\n{report}"
    );
    assert_eq!(
        row(&report, "lockouts"),
        "lockouts 1 (numbers 1, addresses 0)",
        "{when}:\n{report}"
    );
    assert!(
        report.contains("Top refused sources\n  203.0.113.9  "),
        "{when}:\n{report}"
    );
    assert!(
        report.contains("Grants per account\n  uid 0        2\n"),
        "{when}:\n{report}"
    );
    assert!(
        report.contains("198.51.100.66"),
        "{when}: the ban is listed:\n{report}"
    );

    // And status counts them from the store, for the last hour and the last day alike.
    let v = d.json(&["status"]);
    for window in ["last_hour", "last_24h"] {
        let h = &v[window];
        assert_eq!(h["grants"]["admin"], 2, "{when} {window}: {v}");
        assert_eq!(h["bans"], 1, "{when} {window}: {v}");
        assert_eq!(h["failed_passcodes"], 3, "{when} {window}: {v}");
        assert_eq!(h["disa_calls"], 1, "{when} {window}: {v}");
    }
}

#[test]
fn log_report_and_status_counts_survive_a_restart_and_a_kill_9() {
    let ns = Netns::new("history");
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&ns, dir.path(), &config(dir.path()));
    d.ok(&["grant", "203.0.113.7", "--ttl", "1h"]);
    d.ok(&["grant", "203.0.113.8", "--ttl", "1h", "--note", "hotel"]);
    d.ok(&["ban", "198.51.100.66", "--ttl", "1h", "--reason", "scanner"]);
    d.refused(&["grant", "203.0.113.9", "--services", "nosuch"]);
    // An account, so twelve digits are passcode-shaped and count as guesses.
    d.ok(&["account", "add", "ann", "--services", "sip"]);
    let seen = wrong_passcode_call(&ns);
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("GET DATA")).count(),
        3,
        "three tries: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("HANGUP"), "{seen:?}");
    check_everything_is_there(&d, "before the restart");

    assert!(d.term().success());
    d.spawn();
    check_everything_is_there(&d, "after SIGTERM and a start");

    d.kill9();
    d.spawn();
    check_everything_is_there(&d, "after kill -9 and a start");
}
