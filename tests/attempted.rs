//! The road warrior who does not know their address, end to end: a real softphone (SIPp) in a road
//! namespace keeps trying to register while the table drops its REGISTERs; its owner calls the
//! DISA number through the carrier trunk (a cellphone over the PSTN), keys the passcode, hears the
//! address read back, presses 1, and hears the phone is connected. Real Asterisk, nft and daemon.

mod support;

use std::time::Duration;

use support::daemon::{eventually, Daemon};
use support::disa_daemon::{add_account, grants};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::{Call, Hangup, Registration};

const DISA: &str = "3472";
/// Road 3: the carrier trunk every PSTN caller arrives through; trusted, so the call itself passes.
const TRUNK: &str = "203.0.113.30";
const PHONE: &str = "203.0.113.10";
const FORGER: &str = "203.0.113.20";

/// Three roads (phone, forger, trunk), the daemon with DISA and AMI on, SIP and RTP closed to all
/// but the trunk, and AMI logged in.
fn env() -> Env {
    let mut env = Env::with(EnvConfig {
        roads: 3,
        ..Default::default()
    });
    let sections = format!(
        r#"
[firewall]
trusted = ["127.0.0.0/8", "::1/128", "{TRUNK}/32"]

[disa]
enabled = true
key-file = "{dir}/disa.key"
digit-timeout = "5s"
connected-wait = "8s"
"#,
        dir = env.daemon_dir().display()
    );
    let d = env.start_ami_daemon(&sections, "");
    assert!(
        eventually(WAIT, || d.json(&["contacts"])["ami"]["connected"] == true),
        "AMI login: {}",
        d.log_text()
    );
    env
}

/// The caller keys the passcode, then keeps pressing 1 once a second: the flow reads no digit
/// while it speaks the address, so the first 1 it hears is the one at "if correct press 1".
fn call_and_confirm(env: &Env, passcode: &str) -> Hangup {
    env.call(
        3,
        &Call::to(DISA)
            .via_trunk("15550100")
            .dtmf(&format!("{passcode}#{}", "ww1".repeat(10)))
            .hold(Duration::from_secs(60)),
    )
}

fn in_allow_set(d: &Daemon, ip: &str) -> bool {
    d.nft_set("allow_sip_v4").contains(ip)
}

#[test]
fn the_phone_trying_to_register_is_read_back_granted_and_then_registers() {
    let env = env();
    let d = env.daemon.as_ref().unwrap();
    // No --address-modes: `attempted` comes first for a new account.
    let passcode = add_account(d, &["ann", "--endpoint", "701", "--services", "sip,rtp"]);
    let accounts = d.ok(&["account", "list"]);
    assert!(accounts.contains("attempted"), "{accounts}");
    assert!(
        !env.sip_reaches(1, false, Duration::from_secs(1)),
        "SIP is closed to the road"
    );

    let phone = env.phone_in_background(
        1,
        "701",
        support::asterisk::password("701"),
        Duration::from_secs(90),
    );
    let hangup = call_and_confirm(&env, &passcode);
    assert_eq!(
        hangup,
        Hangup::Remote,
        "the PBX ends the call after saying it all"
    );

    let d = env.daemon.as_ref().unwrap();
    let g = grants(d);
    assert_eq!(g.len(), 1, "{g:?}\n{}", d.log_text());
    assert_eq!(g[0]["address"], PHONE);
    assert_eq!(g[0]["who"], "disa:ann");
    assert!(g[0]["note"].as_str().unwrap().contains("mode=attempted"), "{g:?}");
    assert!(in_allow_set(d, PHONE), "{}", d.nft_set("allow_sip_v4"));
    let log = d.log_text();
    assert!(
        log.contains(&format!(
            "granted where the phone tried to register address={PHONE} account=\"ann\" source=disa"
        )),
        "{log}"
    );
    assert!(!log.contains(&passcode), "the passcode never reaches a log");

    // What the caller heard, as Asterisk played it: the read-back, then "connected".
    let heard = env.asterisk_log();
    let playing = |f: &str| format!("Playing '{f}.");
    let order = [
        playing("is"),
        playing("digits/2"),
        playing("letters/dot"),
        playing("if-correct-press"),
        playing("auth-thankyou"),
        playing("telephone-number"),
        playing("activated"),
        playing("vm-goodbye"),
    ];
    let mut at = 0;
    for p in &order {
        match heard[at..].find(p.as_str()) {
            Some(i) => at += i + p.len(),
            None => panic!("the caller did not hear {p} in order:\n{heard}"),
        }
    }
    assert!(!heard.contains("Playing 'vm-isunavail."), "{heard}");

    // The phone got in by itself: its REGISTER was answered 200 OK after the grant ...
    assert_eq!(phone.join().unwrap(), Ok(Some(Registration::Registered)));
    // ... and so is its next one.
    assert_eq!(env.register(1, "701"), Registration::Registered);
    let st = d.json(&["status"]);
    assert_eq!(st["last_hour"]["attempted_grants"], 1, "{st}");
}

#[test]
fn a_forged_register_for_the_same_extension_makes_the_flow_ask_not_guess() {
    let env = env();
    let d = env.daemon.as_ref().unwrap();
    let passcode = add_account(
        d,
        &[
            "bob",
            "--endpoint",
            "701",
            "--services",
            "sip,rtp",
            "--address-modes",
            "attempted,registered",
        ],
    );
    // The real phone, and someone else claiming extension 701 in the same minute.
    let phone = env.phone_in_background(
        1,
        "701",
        support::asterisk::password("701"),
        Duration::from_secs(40),
    );
    let forger = env.phone_in_background(2, "701", "not-the-password", Duration::from_secs(40));
    let hangup = call_and_confirm(&env, &passcode);
    assert_eq!(hangup, Hangup::Remote);

    let d = env.daemon.as_ref().unwrap();
    assert!(grants(d).is_empty(), "no grant by guess: {}", d.log_text());
    assert!(!in_allow_set(d, PHONE) && !in_allow_set(d, FORGER));
    let log = d.log_text();
    assert!(log.contains("701: 2 address(es) tried to register"), "{log}");
    assert!(log.contains("bob had no usable address"), "{log}");
    let heard = env.asterisk_log();
    assert!(
        heard.contains("Playing 'vm-isunavail."),
        "told, not guessed: {heard}"
    );
    assert!(
        !heard.contains("Playing 'if-correct-press."),
        "nothing offered: {heard}"
    );
    // Neither phone got through the table.
    assert_eq!(phone.join().unwrap(), Ok(None));
    assert_eq!(forger.join().unwrap(), Ok(None));
}
