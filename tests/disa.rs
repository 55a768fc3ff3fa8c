//! The DISA call end to end: real Asterisk 22 runs `dialplan/passknock.conf`, real SIPp phones
//! (or a `Local` channel) key passcodes as RFC 4733 DTMF, the real daemon answers over FastAGI,
//! and real packets prove what was granted.

mod support;

use std::time::Duration;

use support::daemon::{eventually, short_socket, Daemon};
use support::env::{Env, WAIT};
use support::sipp::{Call, Hangup};

/// The port the grants open in these tests. SIP and RTP stay open so the calls themselves work;
/// a real PBX reaches the DISA number through a trusted trunk.
const PROBE: u16 = 7070;
const DISA: &str = "3472";

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"
[daemon]
store = "{dir}/store.db"
control-socket = "{sock}"
reconcile-interval = "1s"

[grants]
ttl-default = "2h"
ttl-max = "24h"
default-services = ["probe"]

[firewall]
trusted = ["127.0.0.0/8", "::1/128"]

[services.probe]
ports = ["udp/{PROBE}", "tcp/{PROBE}"]

[services.iax]
ports = ["udp/4569"]

[disa]
enabled = true
key-file = "{dir}/disa.key"
tries-per-call = 3
lockout-failures = 4
digit-timeout = "5s"
"#,
        dir = dir.display(),
        sock = short_socket().display()
    )
}

fn start(env: &mut Env) -> &Daemon {
    let dir = env.daemon_dir();
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config(&dir)));
    env.daemon.as_ref().unwrap()
}

/// `account add` and the passcode it prints once.
fn add_account(d: &Daemon, args: &[&str]) -> String {
    let mut a = vec!["account", "add"];
    a.extend_from_slice(args);
    let out = d.ok(&a);
    let line = out
        .lines()
        .find(|l| l.starts_with("passcode: "))
        .expect("passcode printed");
    let p = line.trim_start_matches("passcode: ").to_string();
    assert_eq!(p.len(), 12, "{out}");
    assert!(p.bytes().all(|b| b.is_ascii_digit()));
    p
}

fn grants(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["list"])["grants"].as_array().unwrap().clone()
}

#[test]
fn a_phone_calls_in_with_its_passcode_and_its_address_is_granted() {
    let mut env = Env::new();
    let d = start(&mut env);
    let passcode = add_account(
        d,
        &[
            "ann",
            "--services",
            "probe",
            "--ttl",
            "2h",
            "--address-modes",
            "source",
        ],
    );
    assert!(!env.udp_reaches(1, PROBE, false), "closed before the call");
    assert!(!env.udp_reaches(2, PROBE, false));

    let d = env.daemon.as_ref().unwrap();
    let hangup = env.call(
        1,
        &Call::to(DISA)
            .dtmf(&format!("{passcode}#"))
            .hold(Duration::from_secs(20)),
    );
    assert_eq!(
        hangup,
        Hangup::Remote,
        "the PBX ends the call after saying access is granted"
    );
    let g = grants(d);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["address"], "203.0.113.10");
    assert_eq!(g[0]["source"], "disa");
    assert_eq!(g[0]["who"], "disa:ann");
    assert!(
        g[0]["note"].as_str().unwrap().contains("channel=PJSIP/701-"),
        "{g:?}"
    );
    assert!(
        env.udp_reaches(1, PROBE, false),
        "the caller's address is open now"
    );
    assert!(!env.udp_reaches(2, PROBE, false), "nobody else's");

    let log = d.log_text();
    assert!(log.contains("passcode accepted account=\"ann\""), "{log}");
    assert!(
        log.contains("grant address=203.0.113.10 services=probe source=disa who=\"disa:ann\""),
        "{log}"
    );
    assert!(!log.contains(&passcode), "the passcode never reaches a log");
    assert!(!env.asterisk_log().contains(&passcode), "nor Asterisk's");
}

#[test]
fn registered_mode_grants_where_the_linked_endpoint_registered_from() {
    let mut env = Env::new();
    let d = start(&mut env);
    let passcode = add_account(d, &["bob", "--endpoint", "702", "--address-modes", "registered"]);
    // 702 is registered from road 2; the call comes from road 1.
    assert_eq!(env.register(2, "702"), support::sipp::Registration::Registered);
    env.call(
        1,
        &Call::to(DISA)
            .dtmf(&format!("{passcode}#"))
            .hold(Duration::from_secs(20)),
    );
    let d = env.daemon.as_ref().unwrap();
    let g = grants(d);
    assert_eq!(g.len(), 1, "{g:?}\n{}", d.log_text());
    assert_eq!(g[0]["address"], "203.0.113.20");
    assert!(env.udp_reaches(2, PROBE, false));
}

#[test]
fn a_keyed_address_over_a_local_channel_is_read_back_and_granted() {
    let mut env = Env::new();
    let d = start(&mut env);
    let passcode = add_account(d, &["cat", "--address-modes", "keyed", "--ttl", "90m"]);
    // Passcode, then the address with * for dots; then 1s until the read-back asks for one.
    let ones = "w1".repeat(40);
    env.originate_local_dtmf(
        "s",
        "passknock-disa",
        &format!("wwww{passcode}#wwww203*0*113*20#{ones}"),
    );
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(40), || !grants(d).is_empty()),
        "no grant:\n{}",
        d.log_text()
    );
    let g = grants(d);
    assert_eq!(g[0]["address"], "203.0.113.20");
    assert_eq!(g[0]["who"], "disa:cat");
    assert!(env.udp_reaches(2, PROBE, false));
    assert!(!env.udp_reaches(1, PROBE, false));
}

#[test]
fn wrong_passcodes_grant_nothing_and_lock_out_at_the_limit() {
    let mut env = Env::new();
    let d = start(&mut env);
    let passcode = add_account(d, &["dan", "--address-modes", "source"]);
    // Three wrong tries in one call: the call ends, nothing granted.
    let hangup = env.call(
        1,
        &Call::to(DISA)
            .dtmf("111111111111#ww222222222222#ww333333333333#")
            .hold(Duration::from_secs(30)),
    );
    assert_eq!(hangup, Hangup::Remote);
    let d = env.daemon.as_ref().unwrap();
    assert!(grants(d).is_empty());
    assert_eq!(
        d.log_text().matches("passcode refused (wrong passcode)").count(),
        3
    );
    // The fourth failure locks number and address out: the right passcode is then refused too,
    // and the caller hears nothing different.
    env.call(
        1,
        &Call::to(DISA)
            .dtmf(&format!("444444444444#ww{passcode}#"))
            .hold(Duration::from_secs(30)),
    );
    let d = env.daemon.as_ref().unwrap();
    assert!(
        grants(d).is_empty(),
        "a locked-out caller gets nothing:\n{}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(log.contains("lockout number=\"701\""), "{log}");
    assert!(log.contains("lockout address=203.0.113.10"), "{log}");
    assert!(
        log.contains("passcode refused (locked out or suspended)"),
        "{log}"
    );
    assert!(
        eventually(WAIT, || d.nft_set("ban_v4").contains("203.0.113.10")),
        "the SIP source is banned"
    );
    // Another phone with the right passcode still gets in.
    env.call(
        2,
        &Call::to(DISA)
            .caller("702")
            .dtmf(&format!("{passcode}#"))
            .hold(Duration::from_secs(20)),
    );
    let d = env.daemon.as_ref().unwrap();
    assert_eq!(grants(d).len(), 1);
    // `passknock status`'s last hour: three calls; six passcodes refused (three wrong; a fourth
    // wrong, the right one while locked out, and the silence of the second call's third try);
    // the lockout's ban; the one grant.
    let h = &d.json(&["status"])["last_hour"];
    assert_eq!(
        [
            &h["disa_calls"],
            &h["failed_passcodes"],
            &h["bans"],
            &h["grants"]["disa"]
        ],
        [3, 6, 1, 1],
        "{h}"
    );
}

#[test]
fn a_caller_who_hangs_up_mid_entry_gets_nothing_and_leaves_no_session() {
    let mut env = Env::new();
    let d = start(&mut env);
    add_account(d, &["eve", "--address-modes", "source"]);
    let hangup = env.call(1, &Call::to(DISA).dtmf("12").hold(Duration::from_millis(500)));
    assert_eq!(hangup, Hangup::Local, "we hung up first");
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(WAIT, || d.log_text().contains("caller hung up")),
        "{}",
        d.log_text()
    );
    assert!(grants(d).is_empty());
    let open = || {
        let out = env
            .pbx()
            .exec("ss", &["-Htn", "state", "established", "( sport = :4573 )"]);
        String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    assert!(eventually(WAIT, open), "a FastAGI session is still open");
}

#[test]
fn with_the_daemon_down_the_caller_hears_a_prompt_and_the_call_ends() {
    let mut env = Env::new();
    start(&mut env);
    env.daemon.as_mut().unwrap().term();
    // The admin manager user reads dialplan events too.
    let mut ami = env.ami_admin();
    let hangup = env.call(1, &Call::to(DISA).dtmf("1234#").hold(Duration::from_secs(20)));
    assert_eq!(hangup, Hangup::Remote);
    ami.expect_event("Playback(ss-noservice)", WAIT, |e| {
        e.is("Newexten") && e.has("Application", "Playback") && e.has("AppData", "ss-noservice")
    });
    ami.expect_event("AGI failure noted", WAIT, |e| {
        e.is("VarSet") && e.has("Variable", "AGISTATUS") && e.has("Value", "FAILURE")
    });
}
