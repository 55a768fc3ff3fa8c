//! A roaming phone with no DISA call and no knock, end to end with real Asterisk 22, SIPp, nft and
//! passknockd in namespaces: through responsive SIP or the secret SIP domain the phone reaches
//! Asterisk's own password check, its successful login (AMI `SuccessfulAuth`) grants its address,
//! and it then reaches RTP; a scanner guessing passwords is held to its rate in the kernel and
//! banned.

mod support;

use std::time::Duration;

use support::daemon::eventually;
use support::disa_daemon::{grants, grants_of};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::{self, Peer, Registration};

/// A port in the RTP service's range and outside Asterisk's own (10000-10999, rtp.conf).
const RTP_PROBE: u16 = 12000;
/// The secret name of the second test.
const SECRET: &str = "r9w4m.pbx.example.test";
/// How long a request the table drops is waited for.
const DROPPED: Duration = Duration::from_secs(2);
/// AMI's ban policy made quick to reach.
const AMI_KEYS: &str = "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"\n";
/// 701's login grants its address SIP and RTP.
const LOGIN_GRANT: &str = r#"
[sip-auth-grant]
endpoints = ["701"]
services = ["sip", "rtp"]
ttl = "1h"
"#;

fn start(sections: &str) -> Env {
    let mut env = Env::with(EnvConfig {
        roads: 2,
        ..EnvConfig::default()
    });
    env.start_ami_daemon_edited(&format!("{sections}{LOGIN_GRANT}"), AMI_KEYS, |c| c);
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(WAIT, || d.json(&["contacts"])["ami"]["connected"] == true),
        "the daemon never logged in to AMI:\n{}",
        d.log_text()
    );
    env
}

/// 701's login from road `road` was granted, and the grant is in the table.
fn login_granted(env: &Env, road: usize) -> bool {
    let d = env.daemon.as_ref().unwrap();
    let addr = env.road(road).v4.to_string();
    eventually(WAIT, || {
        grants_of(d, "sip-auth:701")
            .iter()
            .any(|g| g["address"] == addr.as_str())
            && d.nft_set("allow_rtp_v4").contains(&addr)
    })
}

#[test]
fn responsive_sip_lets_a_phone_log_in_and_in_while_a_guessing_scanner_is_cut_and_banned() {
    let env = start("[sip-responsive]\nenabled = true\nservice = \"sip\"\nrate = 60\nburst = 10\n");
    let d = env.daemon.as_ref().unwrap();
    let scanner = env.road(2).v4.to_string();
    let pbx = env.topo.pbx_addr(false);

    // Unknown to the table: SIP answers (under the rate), RTP does not.
    assert!(!env.udp_reaches(1, RTP_PROBE, false), "RTP is closed");
    assert!(grants(d).is_empty());

    // The phone logs in with its password; Asterisk tells AMI; its address is granted.
    assert_eq!(env.register(1, "701"), Registration::Registered);
    assert!(login_granted(&env, 1), "no grant for 701:\n{}", d.log_text());
    assert!(env.udp_reaches(1, RTP_PROBE, false), "the phone reaches RTP");

    // The scanner probes: 60 REGISTERs at 100 a second. The kernel lets its burst of 10 (and a
    // token a second) through and drops and counts the rest, without Asterisk seeing them.
    let probe = sipp::register_flood(&env.dir.inside, &Peer::from(env.road(2)), pbx, "702", 60, 100)
        .unwrap_or_else(|e| panic!("probe flood: {e}"));
    let dropped = d.nft_counter("sip_rate_drops");
    eprintln!("probe flood: {probe:?}, dropped over the rate: {dropped}");
    assert!(probe.answered >= 1 && probe.answered <= 11, "{probe:?}");
    assert!(dropped >= u64::from(probe.sent - 11), "{dropped} for {probe:?}");

    // Then it guesses 702's password, as fast as the rate lets it (SIPp retransmits what the
    // kernel drops): each wrong password reaches Asterisk, fails, and AMI bans it at the third.
    for i in 0..3 {
        assert!(
            matches!(
                env.register_with(2, "702", "not-the-password"),
                Registration::Rejected(_)
            ),
            "guess {i}"
        );
    }
    assert!(
        eventually(WAIT, || d.nft_set("ban_v4").contains(&scanner)),
        "{scanner} was not banned:\n{}",
        d.log_text()
    );
    assert!(grants_of(d, "sip-auth:702").is_empty());
    assert!(
        !env.udp_reaches(2, RTP_PROBE, false),
        "nor does the scanner reach RTP"
    );

    // Banned, its guessing flood reaches nothing: the ban drops it, ahead of the rate.
    let before = d.nft_counter("sip_rate_drops");
    let guesses = sipp::guess_flood(
        &env.dir.inside,
        &Peer::from(env.road(2)),
        pbx,
        "702",
        "not-the-password",
        20,
        100,
    )
    .unwrap_or_else(|e| panic!("guessing flood: {e}"));
    assert_eq!(guesses.answered, 0, "banned: {guesses:?}");
    assert_eq!(
        d.nft_counter("sip_rate_drops"),
        before,
        "the ban drops it, not the rate"
    );

    // The granted phone is not held to the rate: a dozen registrations in a row (two packets each,
    // past the burst of 10) all answered.
    for i in 0..12 {
        assert_eq!(
            env.register(1, "701"),
            Registration::Registered,
            "registration {i}"
        );
    }
    assert!(env.udp_reaches(1, RTP_PROBE, false));
    let st = d.json(&["status"]);
    assert_eq!(st["in_sync"], true, "{st}");
}

#[test]
fn a_phone_that_registers_through_the_secret_domain_is_granted_and_reaches_rtp() {
    let env = start(&format!(
        "[sip-secret-domain]\nnames = [\"{SECRET}\"]\nservice = \"sip\"\n"
    ));
    let d = env.daemon.as_ref().unwrap();
    // Before: only a REGISTER to the secret name gets through; OPTIONS and RTP do not.
    assert!(!env.sip_reaches(1, false, DROPPED), "OPTIONS is dropped");
    assert!(!env.udp_reaches(1, RTP_PROBE, false), "RTP is closed");

    // Road 2 registers to the PBX's real name: dropped in the kernel, so no login, no grant.
    assert_eq!(env.register_to(2, "pbx.example.test", false, DROPPED), None);

    // Road 1 knows the name: it registers, Asterisk reports the login, the address is granted.
    assert_eq!(
        env.register_to(1, SECRET, false, Duration::from_secs(20)),
        Some(Registration::Registered)
    );
    assert!(login_granted(&env, 1), "no grant for 701:\n{}", d.log_text());
    // Now granted SIP and RTP: any request, and media.
    assert!(
        env.sip_reaches(1, false, Duration::from_secs(5)),
        "OPTIONS now answered"
    );
    assert!(env.udp_reaches(1, RTP_PROBE, false), "the phone reaches RTP");
    // Road 2 got nothing.
    assert!(grants(d)
        .iter()
        .all(|g| g["address"] != env.road(2).v4.to_string().as_str()));
    assert!(!env.udp_reaches(2, RTP_PROBE, false));
    assert!(!env.sip_reaches(2, false, DROPPED));
}
