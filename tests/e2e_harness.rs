//! Smoke tests of the end-to-end harness: a real Asterisk 22 and real SIPp in network namespaces
//! behave as the later DISA, AMI-listener and fail2ban tests will rely on.

mod support;

use std::time::{Duration, Instant};

use support::asterisk::{self, DISA_EXTEN};
use support::env::{Env, WAIT};
use support::sipp::{Call, Hangup, Registration};

#[test]
fn register_with_right_password_shows_contact_on_ami() {
    let env = Env::new();
    let mut ami = env.ami();
    let road = env.road(1).v4.to_string();

    assert_eq!(env.register(1, "701"), Registration::Registered);

    let contact = ami.expect_event("ContactStatus for 701", WAIT, |e| {
        e.is("ContactStatus") && e.has("AOR", "701") && e.get("URI").is_some_and(|u| u.contains(&road))
    });
    assert_eq!(contact.get("EndpointName"), Some("701"), "{contact}");
    let auth = ami.expect_event("SuccessfulAuth for 701", WAIT, |e| {
        e.is("SuccessfulAuth") && e.has("AccountID", "701")
    });
    assert!(
        auth.get("RemoteAddress").is_some_and(|a| a.contains(&road)),
        "{auth}"
    );

    // What the daemon primes its contact map with after every login.
    let (_, contacts) = ami
        .action_list("PJSIPShowContacts", &[])
        .expect("PJSIPShowContacts");
    assert!(
        contacts
            .iter()
            .any(|c| c.has("Endpoint", "701") && c.get("Uri").is_some_and(|u| u.contains(&road))),
        "{contacts:?}"
    );
}

#[test]
fn register_with_wrong_password_is_a_challenge_response_failure() {
    let env = Env::new();
    let mut ami = env.ami();
    let road = env.road(2).v4.to_string();

    assert_eq!(
        env.register_with(2, "702", "not-the-password"),
        Registration::Rejected(401)
    );

    let failed = ami.expect_event("ChallengeResponseFailed for 702", WAIT, |e| {
        e.is("ChallengeResponseFailed") && e.has("AccountID", "702")
    });
    // DESIGN.md: the address comes as IPV4/UDP/203.0.113.20/PORT.
    let remote = failed.get("RemoteAddress").unwrap_or_default();
    assert!(remote.starts_with(&format!("IPV4/UDP/{road}/")), "{failed}");
    // The security log channel saw it too (a later issue compares fail2ban against it).
    let log = std::fs::read_to_string(env.asterisk.security_log()).unwrap_or_default();
    assert!(log.contains("ChallengeResponseFailed"), "security.log: {log}");
}

#[test]
fn disa_call_reaches_fastagi_with_digits_and_source_address() {
    let env = Env::new();
    let stub = env.fastagi_stub();
    let road = env.road(1).v4;
    // Repeated digits and a leading zero: both are easy to lose.
    let call = Call::to(DISA_EXTEN).dtmf("0112#");
    let caller = env.call_in_background(1, call);

    let mut agi = stub
        .accept(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    assert_eq!(agi.var("agi_network_script"), Some("disa"), "{:?}", agi.env);
    assert_eq!(agi.var("agi_context"), Some("passknock-disa"), "{:?}", agi.env);
    assert_eq!(agi.var("agi_callerid"), Some("701"), "{:?}", agi.env);
    let remote = agi
        .get_variable("CHANNEL(pjsip,remote_addr)", WAIT)
        .expect("GET VARIABLE")
        .expect("remote_addr set");
    assert!(remote.starts_with(&format!("{road}:")), "remote_addr {remote}");
    let data = agi.command("GET DATA beep 8000 8", WAIT).expect("GET DATA");
    assert_eq!((data.code, data.result.as_str()), (200, "0112"), "{}", data.line);
    agi.close();

    let hangup = caller
        .join()
        .expect("caller thread")
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    assert_eq!(
        hangup,
        Hangup::Remote,
        "the PBX should hang up once the AGI is done"
    );
}

#[test]
fn disa_call_over_ipv6_reports_the_v6_source() {
    let env = Env::new();
    let stub = env.fastagi_stub();
    let road = env.road(2).v6;
    let caller = env.call_in_background(2, Call::to(DISA_EXTEN).v6().dtmf("9*#"));

    let mut agi = stub
        .accept(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    let remote = agi
        .get_variable("CHANNEL(pjsip,remote_addr)", WAIT)
        .expect("GET VARIABLE")
        .expect("remote_addr set");
    assert!(remote.starts_with(&format!("[{road}]:")), "remote_addr {remote}");
    let data = agi.command("GET DATA beep 8000 8", WAIT).expect("GET DATA");
    assert_eq!(data.result, "9*", "{}", data.line);
    agi.close();
    let hangup = caller
        .join()
        .expect("caller thread")
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    assert_eq!(hangup, Hangup::Remote);
}

#[test]
fn disa_call_without_daemon_hears_no_service_and_ends() {
    let env = Env::new();
    let mut ami = env.ami_admin();
    let hangup = env.call(1, &Call::to(DISA_EXTEN).hold(Duration::from_secs(15)));
    assert_eq!(hangup, Hangup::Remote, "the PBX should hang up after the prompt");
    ami.expect_event("Playback(ss-noservice)", WAIT, |e| {
        e.is("Newexten") && e.has("Application", "Playback") && e.has("AppData", "ss-noservice")
    });
    ami.expect_event("AGI failure noted", WAIT, |e| {
        e.is("VarSet") && e.has("Variable", "AGISTATUS") && e.has("Value", "FAILURE")
    });
}

#[test]
fn local_channel_sends_dtmf_into_the_disa_context() {
    let env = Env::new();
    let stub = env.fastagi_stub();
    env.originate_local_dtmf(DISA_EXTEN, "from-road", "ww4321#");
    let mut agi = stub
        .accept(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    assert_eq!(agi.var("agi_network_script"), Some("disa"));
    let data = agi.command("GET DATA beep 8000 8", WAIT).expect("GET DATA");
    assert_eq!(data.result, "4321", "{}", data.line);
    agi.close();
}

#[test]
fn cli_and_reachability_helpers_work() {
    let start = Instant::now();
    let env = Env::new();
    let _ami = env.ami();
    eprintln!(
        "environment up (namespaces, Asterisk fully booted, AMI logged in) in {:?}",
        start.elapsed()
    );
    let version = env.cli("core show version");
    assert!(version.starts_with("Asterisk 22"), "{version}");
    let transports = env.cli("pjsip show transports");
    assert!(transports.contains("198.51.100.1:5060"), "{transports}");
    // Nothing filters yet: a free port in the pbx namespace is reachable from a road host.
    assert!(env.udp_reaches(1, 40000, false));
    assert!(env.udp_reaches(2, 40000, true));
    assert!(env.tcp_reaches(1, 40001, false));
    // Asterisk's own port: answered over both families; a port nobody serves is not.
    assert!(env.sip_reaches(1, false, Duration::from_secs(2)));
    assert!(env.sip_reaches(2, true, Duration::from_secs(2)));
    env.pbx().exec("nft", &["add table inet harness_probe"]);
    env.pbx().exec(
        "nft",
        &["add chain inet harness_probe input { type filter hook input priority 0; udp dport 5060 drop; }"],
    );
    assert!(!env.sip_reaches(1, false, Duration::from_secs(1)));
}

#[test]
fn dialplan_dials_the_daemons_default_fastagi_port() {
    let dialplan = include_str!("../dialplan/passknock.conf");
    // The daemon's own default, not a copy of it.
    assert!(dialplan.contains(&format!("agi://{}/disa", passknock::base::defaults::AGI_LISTEN)));
    assert!(passknock::base::defaults::AGI_LISTEN.ends_with(&format!(":{}", asterisk::FASTAGI_PORT)));
}

#[test]
fn a_throwaway_postgresql_cluster_starts_stops_and_keeps_its_data() {
    let mut pg = support::pg::Pg::start();
    pg.create_db("harness");
    pg.psql("harness", "CREATE TABLE t (n INT); INSERT INTO t VALUES (7)");
    pg.stop();
    pg.start_again();
    assert_eq!(pg.psql("harness", "SELECT n FROM t"), "7");
    assert!(pg.url("harness").starts_with("postgresql://"));
}
