//! `[sip-auth-grant]` end to end: SIP reachable to all (not a protected service here), RTP
//! closed; a real SIPp phone in a road namespace registers to real Asterisk 22 with its password,
//! Asterisk says `SuccessfulAuth` on AMI, and the daemon grants the phone's address RTP — a real
//! datagram then gets through nft. Its re-registrations write nothing; a phone with the wrong
//! password is not granted and is banned as before, and its right password later does not open
//! what the ban closes.

mod support;

use std::time::Duration;

use support::daemon::{eventually, Daemon};
use support::disa_daemon::{grants, grants_of};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::Registration;

/// A port in the RTP service's range and outside Asterisk's own (10000-10999, rtp.conf): a free
/// port the probe can bind a sink on.
const RTP_PROBE: u16 = 12000;

/// The section under test, and AMI's ban policy made quick to reach.
const SECTIONS: &str = r#"
[sip-auth-grant]
endpoints = ["701", "702"]
services = ["rtp"]
ttl = "1h"
"#;
const AMI_KEYS: &str = "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"\n";

/// The test config without its SIP service: SIP is not protected, so a phone reaches Asterisk
/// without a grant (as with responsive SIP), and a grant opens RTP.
fn without_sip(config: String) -> String {
    let sip = "[services.sip]\nports = [\"udp/5060\", \"tcp/5060\", \"tcp/5061\"]\n";
    assert!(
        config.contains(sip),
        "the test config's SIP service moved:\n{config}"
    );
    config.replace(sip, "").replace(
        "default-services = [\"sip\", \"rtp\"]",
        "default-services = [\"rtp\"]",
    )
}

fn start() -> Env {
    let mut env = Env::with(EnvConfig {
        roads: 2,
        ..EnvConfig::default()
    });
    env.start_ami_daemon_edited(SECTIONS, AMI_KEYS, without_sip);
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(WAIT, || d.json(&["contacts"])["ami"]["connected"] == true),
        "the daemon never logged in to AMI:\n{}",
        d.log_text()
    );
    env
}

fn in_rtp_set(d: &Daemon, ip: &str) -> bool {
    d.nft_set("allow_rtp_v4").contains(ip)
}

#[test]
fn a_phone_that_registers_is_granted_rtp_and_a_wrong_password_is_banned_not_granted() {
    let env = start();
    let d = env.daemon.as_ref().unwrap();
    let phone = env.road(1).v4.to_string();
    let guesser = env.road(2).v4.to_string();

    // Before: SIP reaches Asterisk from anywhere, RTP from nowhere.
    assert!(env.sip_reaches(1, false, Duration::from_secs(2)), "SIP is open");
    assert!(!env.udp_reaches(1, RTP_PROBE, false), "RTP is closed");
    assert!(grants(d).is_empty());

    // The phone registers with its password; Asterisk tells AMI, the daemon grants.
    let mut ami = env.ami();
    assert_eq!(env.register(1, "701"), Registration::Registered);
    let event = ami.expect_event("SuccessfulAuth for 701", WAIT, |e| {
        e.is("SuccessfulAuth") && e.has("Service", "PJSIP") && e.has("AccountID", "701")
    });
    assert_eq!(
        event.get("RemoteAddress").unwrap_or_default().split('/').nth(2),
        Some(phone.as_str()),
        "{event}"
    );
    assert!(
        eventually(WAIT, || grants_of(d, "sip-auth:701").len() == 1),
        "no grant for 701:\n{}",
        d.log_text()
    );
    let g = grants_of(d, "sip-auth:701").remove(0);
    assert_eq!(g["address"], phone.as_str(), "{g}");
    assert_eq!(g["source"], "ami", "{g}");
    assert_eq!(g["services"], serde_json::json!(["rtp"]), "{g}");
    let listed = d.ok(&["list"]);
    assert!(
        listed.contains("sip-auth:701") && listed.contains(&phone),
        "{listed}"
    );
    assert!(
        eventually(WAIT, || in_rtp_set(d, &phone)),
        "{}",
        d.nft_set("allow_rtp_v4")
    );

    // A real datagram now gets through to the protected port; not from the other road.
    assert!(
        env.udp_reaches(1, RTP_PROBE, false),
        "the granted phone reaches RTP"
    );
    assert!(!env.udp_reaches(2, RTP_PROBE, false), "nobody else does");

    // Re-registering (a REGISTER refresh) logs in again: the grant is fresh, nothing is written.
    let expires = g["expires"].as_i64().unwrap();
    for _ in 0..2 {
        assert_eq!(env.register(1, "701"), Registration::Registered);
        ami.expect_event("another SuccessfulAuth for 701", WAIT, |e| {
            e.is("SuccessfulAuth") && e.has("AccountID", "701")
        });
    }

    // Wrong passwords from road 2: never granted, banned past the threshold as before.
    for _ in 0..3 {
        assert!(matches!(
            env.register_with(2, "702", "not-the-password"),
            Registration::Rejected(_)
        ));
    }
    assert!(
        eventually(WAIT, || d.nft_set("ban_v4").contains(&guesser)),
        "{guesser} was not banned:\n{}",
        d.log_text()
    );
    assert!(grants_of(d, "sip-auth:702").is_empty());
    // By now (seconds and several SIP exchanges later) the re-logins above were handled: the
    // phone's grant is the one row written at first, not extended.
    let again = grants_of(d, "sip-auth:701");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["id"], g["id"]);
    assert_eq!(again[0]["expires"].as_i64(), Some(expires), "not extended");
    let granted_line = format!("701 authenticated from {phone}: granted rtp");
    assert_eq!(
        d.log_text().matches(&granted_line).count(),
        1,
        "one grant written:\n{}",
        d.log_text()
    );

    // The right password afterwards: Asterisk takes it (SIP is not protected), but the ban wins.
    assert_eq!(env.register(2, "702"), Registration::Registered);
    ami.expect_event("SuccessfulAuth for 702", WAIT, |e| {
        e.is("SuccessfulAuth") && e.has("AccountID", "702")
    });
    assert!(
        eventually(WAIT, || d
            .log_text()
            .contains(&format!("702 authenticated from {guesser}, not granted"))),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("the ban wins"));
    assert!(grants_of(d, "sip-auth:702").is_empty());
    assert!(!in_rtp_set(d, &guesser));
    assert!(!env.udp_reaches(2, RTP_PROBE, false), "banned: RTP stays closed");
    // And the phone that got in is still in.
    assert!(env.udp_reaches(1, RTP_PROBE, false));
}

#[test]
fn an_endpoint_not_listed_registers_but_is_not_granted() {
    let mut env = Env::with(EnvConfig {
        roads: 2,
        ..EnvConfig::default()
    });
    env.start_ami_daemon_edited(
        &SECTIONS.replace("[\"701\", \"702\"]", "[\"702\"]"),
        AMI_KEYS,
        without_sip,
    );
    let d = env.daemon.as_ref().unwrap();
    assert!(eventually(WAIT, || d.json(&["contacts"])["ami"]["connected"] == true));
    let mut ami = env.ami();
    assert_eq!(env.register(1, "701"), Registration::Registered);
    ami.expect_event("SuccessfulAuth for 701", WAIT, |e| {
        e.is("SuccessfulAuth") && e.has("AccountID", "701")
    });
    // The contact is learned (the AMI listener saw the login) yet nothing is granted.
    assert!(eventually(WAIT, || d.json(&["contacts"])["contacts"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["endpoint"] == "701"))));
    assert!(grants(d).is_empty(), "{:?}", grants(d));
    assert!(!env.udp_reaches(1, RTP_PROBE, false));
}

#[test]
fn a_phone_registering_over_ipv6_is_granted_its_ipv6_address() {
    let env = start();
    let d = env.daemon.as_ref().unwrap();
    let v6 = env.road(1).v6.to_string();
    assert!(
        !env.udp_reaches(1, RTP_PROBE, true),
        "RTP is closed over IPv6 too"
    );
    assert_eq!(
        env.register_over(1, "702", support::asterisk::password("702"), true),
        Registration::Registered
    );
    assert!(
        eventually(WAIT, || grants_of(d, "sip-auth:702")
            .iter()
            .any(|g| g["address"] == v6.as_str())),
        "no grant for {v6}:\n{}",
        d.log_text()
    );
    assert!(eventually(WAIT, || d.nft_set("allow_rtp_v6").contains(&v6)));
    assert!(
        env.udp_reaches(1, RTP_PROBE, true),
        "the IPv6 address reaches RTP"
    );
    assert!(
        !env.udp_reaches(1, RTP_PROBE, false),
        "its IPv4 address was not granted"
    );
}
