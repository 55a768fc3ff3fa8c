//! The DISA call end to end: real Asterisk 22 runs `dialplan/passknock.conf`, real SIPp phones
//! (or a `Local` channel) key passcodes as RFC 4733 DTMF, the real daemon answers over FastAGI,
//! and real packets prove what was granted.

mod support;

use std::time::Duration;

use support::daemon::{eventually, Daemon};
use support::disa_daemon::{self, grants, PROBE};
use support::env::{Env, WAIT};
use support::sipp::{Call, Hangup};

const DISA: &str = "3472";

fn config(dir: &std::path::Path) -> String {
    config_with(dir, "", "lockout-failures = 4")
}

/// The shared DISA test config with more trusted networks (`, "…"` each) and more `[disa]` lines.
fn config_with(dir: &std::path::Path, trusted: &str, disa: &str) -> String {
    disa_daemon::config(dir, disa).replace(r#""::1/128"]"#, &format!(r#""::1/128"{trusted}]"#))
}

fn start(env: &mut Env) -> &Daemon {
    let dir = env.daemon_dir();
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config(&dir)));
    env.daemon.as_ref().unwrap()
}

/// `account add` and the passcode it prints once: twelve digits by default.
fn add_account(d: &Daemon, args: &[&str]) -> String {
    let p = disa_daemon::add_account(d, args);
    assert_eq!(p.len(), 12, "{p}");
    assert!(p.bytes().all(|b| b.is_ascii_digit()));
    p
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
    assert!(
        log.contains("passcode accepted address=203.0.113.10 account=\"ann\" source=disa"),
        "{log}"
    );
    assert!(
        log.contains("grant address=203.0.113.10 who=\"disa:ann\" source=disa services=probe"),
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

/// Calls in over a `Local` channel with `passcode`, keys `address`, confirms it, and waits until
/// `done` holds of the listed grants.
fn keyed_call(env: &Env, passcode: &str, address: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let ones = "w1".repeat(40);
    let keyed = address.replace('.', "*");
    env.originate_local_dtmf(
        "s",
        "passknock-disa",
        &format!("wwww{passcode}#wwww{keyed}#{ones}"),
    );
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(40), || done(&grants(d))),
        "after a call keying {address}: {:?}\n{}",
        grants(d),
        d.log_text()
    );
}

/// The addresses `who` has grants at, and how many rows.
fn held_by(g: &[serde_json::Value], who: &str) -> Vec<String> {
    let mut v: Vec<String> = g
        .iter()
        .filter(|g| g["who"] == who)
        .map(|g| g["address"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_call_from_a_new_address_replaces_the_account_s_grant_unless_it_keeps_several() {
    let mut env = Env::new();
    let d = start(&mut env);
    let cat = add_account(d, &["cat", "--address-modes", "keyed"]);
    let dog = add_account(d, &["dog", "--address-modes", "keyed", "--keep-several"]);
    keyed_call(&env, &cat, "203.0.113.20", |g| {
        held_by(g, "disa:cat") == ["203.0.113.20"]
    });
    assert!(env.udp_reaches(2, PROBE, false));
    keyed_call(&env, &cat, "203.0.113.21", |g| {
        held_by(g, "disa:cat") == ["203.0.113.21"]
    });
    assert!(!env.udp_reaches(2, PROBE, false), "the old address is closed");
    // Again from the same address: still one row, ending later.
    let d = env.daemon.as_ref().unwrap();
    let before = grants(d)[0]["expires"].as_i64().unwrap();
    keyed_call(&env, &cat, "203.0.113.21", |g| {
        held_by(g, "disa:cat") == ["203.0.113.21"] && g[0]["expires"].as_i64().unwrap() > before
    });
    // An account that keeps several: both addresses stay.
    keyed_call(&env, &dog, "203.0.113.20", |g| {
        held_by(g, "disa:dog") == ["203.0.113.20"]
    });
    keyed_call(&env, &dog, "203.0.113.22", |g| {
        held_by(g, "disa:dog") == ["203.0.113.20", "203.0.113.22"]
    });
    assert!(
        env.udp_reaches(2, PROBE, false),
        "the first address is still open"
    );
    let d = env.daemon.as_ref().unwrap();
    assert_eq!(held_by(&grants(d), "disa:cat"), ["203.0.113.21"]);
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
    assert_eq!(d.log_text().matches("source=disa (wrong passcode)").count(), 3);
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
    assert!(log.contains("source=disa (locked out)"), "{log}");
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

/// The carrier trunk's address (road 3), trusted as an admin trusts their trunk.
const TRUNK: &str = "203.0.113.30";

/// Three road hosts (the third is the trunk) and the daemon, with `disa` lines added.
fn trunk_env(disa: &str) -> Env {
    let mut env = Env::with(support::env::EnvConfig {
        roads: 3,
        ..Default::default()
    });
    let dir = env.daemon_dir();
    let config = config_with(&dir, &format!(r#", "{TRUNK}/32""#), disa);
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config));
    // The grants in these tests go where 702 registered from (road 2): the trunk's own address
    // is trusted already, so it is never what a PSTN caller gets.
    assert_eq!(env.register(2, "702"), support::sipp::Registration::Registered);
    env
}

fn trunk_call(env: &Env, number: &str, dtmf: &str) -> Hangup {
    env.call(
        3,
        &Call::to(DISA)
            .via_trunk(number)
            .dtmf(dtmf)
            .hold(Duration::from_secs(40)),
    )
}

#[test]
fn a_caller_through_the_trunk_is_locked_out_by_number_and_the_lockout_survives_a_restart() {
    let mut env = trunk_env("lockout-failures = 4");
    let d = env.daemon.as_ref().unwrap();
    let passcode = add_account(d, &["fay", "--endpoint", "702", "--address-modes", "registered"]);
    // Caller 111 keys four wrong passcodes (the limit) over two calls; then the right one.
    trunk_call(&env, "111", "111111111111#ww222222222222#ww333333333333#");
    trunk_call(&env, "111", &format!("444444444444#ww{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    let log = d.log_text();
    assert!(grants(d).is_empty(), "{log}");
    assert!(log.contains("lockout number=\"111\""), "{log}");
    assert!(log.contains("source=disa (locked out)"), "{log}");
    assert!(
        !log.contains("lockout address="),
        "the trunk is never locked out: {log}"
    );
    assert!(!d.nft_set("ban_v4").contains(TRUNK), "nor banned");

    // Another caller through the same trunk gets in.
    trunk_call(&env, "222", &format!("{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    let g = grants(d);
    assert_eq!(g.len(), 1, "{}", d.log_text());
    assert_eq!(g[0]["address"], "203.0.113.20");
    assert!(d.log_text().contains("number=\"222\""));

    // A restart forgets nothing: 111 is still locked out with the right passcode.
    let d = env.daemon.as_mut().unwrap();
    d.term();
    d.spawn();
    d.ok(&["revoke", "203.0.113.20"]);
    trunk_call(&env, "111", &format!("{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    let log = d.log_text();
    assert!(grants(d).is_empty(), "still locked out after a restart:\n{log}");
    assert!(
        log.contains("lockout and failure records kept from before"),
        "{log}"
    );
    assert_eq!(log.matches("passcode accepted").count(), 1, "only 222's: {log}");
    let refused = log.split("records kept from before").nth(1).unwrap();
    assert!(refused.contains("source=disa (locked out)"), "{log}");
}

#[test]
fn silent_and_short_entries_cost_no_lockout_and_no_suspension() {
    // Limits so tight that the old rules (every empty try a failure) would lock the number
    // out and suspend entry for everyone within the first call.
    let env = trunk_env("lockout-failures = 2\nglobal-failures-per-hour = 2");
    let d = env.daemon.as_ref().unwrap();
    let passcode = add_account(d, &["gus", "--endpoint", "702", "--address-modes", "registered"]);
    // A misdial and an empty entry, then silence; then a call that says nothing at all.
    trunk_call(&env, "333", "12#ww#");
    trunk_call(&env, "333", "");
    let d = env.daemon.as_ref().unwrap();
    let log = d.log_text();
    assert_eq!(log.matches("source=disa (not a passcode)").count(), 6, "{log}");
    assert!(!log.contains("lockout"), "{log}");
    assert!(!log.contains("suspended"), "{log}");
    trunk_call(&env, "333", &format!("{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    assert_eq!(grants(d).len(), 1, "{}", d.log_text());
}

#[test]
fn the_owner_gets_in_while_a_flood_from_rotating_numbers_suspends_entry() {
    let env = trunk_env("lockout-failures = 4\nglobal-failures-per-hour = 3");
    let d = env.daemon.as_ref().unwrap();
    let passcode = add_account(
        d,
        &[
            "hal",
            "--endpoint",
            "702",
            "--address-modes",
            "registered",
            "--callers",
            "+1 555 0100",
        ],
    );
    // Wrong passcodes from two numbers at once reach the global cap.
    let flood: Vec<_> = [
        ("9001", "111111111111#ww222222222222#"),
        ("9002", "333333333333#"),
    ]
    .into_iter()
    .map(|(n, dtmf)| {
        env.call_in_background(
            3,
            Call::to(DISA)
                .via_trunk(n)
                .dtmf(dtmf)
                .hold(Duration::from_secs(15)),
        )
    })
    .collect();
    for call in flood {
        call.join().unwrap().unwrap();
    }
    let d = env.daemon.as_ref().unwrap();
    assert!(
        d.log_text().contains("passcode entry suspended"),
        "{}",
        d.log_text()
    );
    // Anyone else, even with the right passcode, is refused while suspended ...
    trunk_call(&env, "9003", &format!("{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    assert!(grants(d).is_empty());
    assert!(d.log_text().contains("source=disa (suspended)"));
    // ... but the owner, calling from a number the account lists, gets in.
    trunk_call(&env, "15550100", &format!("{passcode}#"));
    let d = env.daemon.as_ref().unwrap();
    let g = grants(d);
    assert_eq!(g.len(), 1, "{}", d.log_text());
    assert_eq!(g[0]["who"], "disa:hal");
    assert!(d.log_text().contains("account=\"hal\" source=disa channel="));
    assert!(d.log_text().contains("(owner's number during a suspension)"));
    let accounts = d.ok(&["account", "list"]);
    assert!(accounts.contains("15550100"), "{accounts}");
}
