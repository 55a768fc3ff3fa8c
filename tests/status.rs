//! `passknock status` against the real daemon in a network namespace: the one screen, plain when
//! piped and coloured on a terminal (a real pty) or when asked, and the `--json` object, each with
//! the live grants and bans and the last hour's counts.

mod support;

use std::process::{Command, Stdio};

use support::daemon::{test_config, Daemon, PASSKNOCK};
use support::netns::Netns;

/// `passknock --socket … ARGS` with NO_COLOR as the test says, stdout piped.
fn status(d: &Daemon, args: &[&str], no_color: Option<&str>) -> String {
    let mut c = Command::new(PASSKNOCK);
    c.arg("--socket").arg(&d.socket).arg("status").args(args);
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let out = c.stdin(Stdio::null()).output().expect("run passknock");
    assert!(
        out.status.success(),
        "passknock status {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `passknock status` on a pseudo-terminal, as an admin at a console sees it.
fn status_on_a_terminal(d: &Daemon, no_color: Option<&str>) -> String {
    let line = format!("{PASSKNOCK} --socket {} status", d.socket.display());
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let out = c
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux runs a command on a pty");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The words of the screen's first line that starts with `label`.
fn row(screen: &str, label: &str) -> String {
    screen
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{screen}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn status_shows_grants_bans_and_the_last_hour_plain_when_piped_coloured_on_a_terminal() {
    let ns = Netns::new("status");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    d.ok(&[
        "grant",
        "203.0.113.7",
        "--services",
        "sip",
        "--ttl",
        "1h",
        "--note",
        "hotel",
    ]);
    d.ok(&["grant", "2001:db8::7", "--services", "iax", "--ttl", "30m"]);
    d.ok(&["ban", "198.51.100.66", "--ttl", "1h", "--reason", "scanner"]);
    // A refused request counts for nothing.
    d.refused(&["grant", "203.0.113.8", "--services", "nosuch"]);

    // Piped: plain text, no escape anywhere.
    let plain = status(&d, &[], None);
    assert!(!plain.contains('\x1b'), "escapes in piped output:\n{plain}");
    assert!(
        plain.contains("inet passknock: present, in sync with the store"),
        "{plain}"
    );
    assert!(plain.contains("AMI       off"), "{plain}");
    assert_eq!(
        row(&plain, "grants "),
        "grants 2 2 2 knocks accepted 0 0",
        "{plain}"
    );
    assert_eq!(row(&plain, "bans"), "bans 1 1 1 knocks refused 0 0", "{plain}");
    assert_eq!(
        row(&plain, "contacts"),
        "contacts - - - DISA calls 0 0",
        "{plain}"
    );
    assert_eq!(
        row(&plain, "SIP calls"),
        "SIP calls - - - failed passcodes 0 0",
        "{plain}"
    );
    assert_eq!(
        row(&plain, "grants in"),
        "grants in the last hour by source: admin 2"
    );
    assert!(
        row(&plain, "203.0.113.7").starts_with("203.0.113.7 sip admin uid"),
        "{plain}"
    );
    assert!(row(&plain, "203.0.113.7").ends_with("hotel"), "{plain}");
    assert!(
        row(&plain, "2001:db8::7").starts_with("2001:db8::7 iax admin"),
        "{plain}"
    );
    assert!(row(&plain, "198.51.100.66").ends_with("scanner"), "{plain}");
    assert!(plain.lines().count() <= 24, "one screen:\n{plain}");

    // For scripts: one object, the status fields where they always were, and the rest beside.
    let v: serde_json::Value = serde_json::from_str(&status(&d, &["--json"], None)).expect("JSON");
    assert_eq!(v["in_sync"], true, "{v}");
    assert_eq!(v["grants"], 2);
    assert_eq!(v["bans"], 1);
    assert_eq!(v["last_hour"]["grants"]["admin"], 2, "{v}");
    assert_eq!(v["last_hour"]["grants"]["knock"], 0);
    assert_eq!(v["last_hour"]["bans"], 1);
    assert_eq!(v["last_24h"]["grants"]["admin"], 2, "{v}");
    assert_eq!(v["last_hour"]["knocks_accepted"], 0);
    assert_eq!(v["live_grants"].as_array().unwrap().len(), 2);
    assert_eq!(v["live_bans"][0]["address"], "198.51.100.66");
    assert_eq!(v["ami"]["enabled"], false);
    assert_eq!(v["contacts"], serde_json::json!([]));
    assert_eq!(v["calls"], serde_json::json!([]));

    // Asked for, colour comes even through a pipe; refused, it stays off on a terminal.
    let always = status(&d, &["--color", "always"], Some("1"));
    assert!(always.contains("\x1b[32mpresent, in sync"), "{always}");
    assert!(always.contains("\x1b[1m"), "bold headings: {always}");
    assert!(!status(&d, &["--color", "never"], None).contains('\x1b'));

    // On a terminal it colours by itself, unless NO_COLOR says not to.
    let tty = status_on_a_terminal(&d, None);
    assert!(tty.contains("\x1b[32m"), "a terminal gets colour:\n{tty:?}");
    assert!(tty.contains("203.0.113.7"), "{tty}");
    let tty = status_on_a_terminal(&d, Some("1"));
    assert!(!tty.contains('\x1b'), "NO_COLOR is obeyed:\n{tty:?}");
    assert!(tty.contains("203.0.113.7"), "{tty}");

    // More than fit: the screen says how many it left out.
    for i in 1..=6 {
        d.ok(&["grant", &format!("203.0.113.{}", 20 + i), "--services", "sip"]);
    }
    let many = status(&d, &[], None);
    assert!(many.contains("… and 4 more (passknock list)"), "{many}");
    assert_eq!(
        row(&many, "grants "),
        "grants 8 8 8 knocks accepted 0 0",
        "{many}"
    );
}
