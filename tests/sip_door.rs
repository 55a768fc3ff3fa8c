//! The SIP doors end to end, with real Asterisk, SIPp, nft and passknockd in namespaces: a
//! REGISTER to the secret SIP domain reaches Asterisk while one to the PBX's real address or name
//! is dropped in the kernel; with responsive SIP a scanner's REGISTER flood is cut to its burst by
//! the kernel's per-source limit (and counted) while another address is answered; every other
//! protected port stays closed throughout.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::daemon::{eventually, short_socket, test_config, Daemon};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::{self, Peer, Registration};

/// The secret name the phone on road 1 registers to.
const SECRET: &str = "k7q2x.pbx.example.test";
/// How long a REGISTER the table drops is waited for: far longer than an answer takes here.
const DROPPED: Duration = Duration::from_secs(2);
/// How long one expected through may take, challenge and all, on a loaded machine.
const PASSES: Duration = Duration::from_secs(20);
/// A port of the `iax` service: nobody listens, and no door opens it.
const IAX: u16 = 4569;
/// A port of the `rtp` service.
const RTP: u16 = 15000;

/// Two roads and the daemon with `sections` added to the test config (no AMI).
fn env(sections: &str) -> Env {
    let mut env = Env::with(EnvConfig {
        roads: 2,
        ..Default::default()
    });
    let dir = env.daemon_dir();
    // The per-test directory is deep in the chroot: the socket goes where its path fits.
    let config = test_config(&dir, sections).replace(
        &format!("{}/control.sock", dir.display()),
        &short_socket().display().to_string(),
    );
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config));
    env
}

/// The phone on `road` registers through the secret domain (waiting as long as a loaded machine
/// may need).
fn registers(env: &Env, road: usize, v6: bool) -> bool {
    env.register_to(road, SECRET, v6, PASSES) == Some(Registration::Registered)
}

/// Nothing answers a REGISTER to `domain` from `road`.
fn dropped(env: &Env, road: usize, domain: &str, v6: bool) -> bool {
    env.register_to(road, domain, v6, DROPPED).is_none()
}

/// Packets the kernel dropped over responsive SIP's rate, from the table's named counter.
fn rate_drops(d: &Daemon) -> u64 {
    d.nft_counter("sip_rate_drops")
}

#[test]
fn a_register_to_the_secret_domain_passes_and_one_to_the_real_name_does_not() {
    let env = env(&format!(
        "[sip-secret-domain]\nnames = [\"{}\"]\nservice = \"sip\"\n",
        SECRET.to_uppercase()
    ));
    let d = env.daemon.as_ref().unwrap();
    // Matched in the kernel on the payload: the rule as nft shows it.
    let table = String::from_utf8_lossy(&d.nft(&["list", "table", "inet", "passknock"]).stdout).into_owned();
    assert!(
        table.contains("udp dport 5060 @ih,0,128 0x5245474953544552207369703a6b3771 "),
        "{table}"
    );
    assert!(table.contains("{ 0x20, 0x3a, 0x3b, 0x3e } accept"), "{table}");

    // The phone that knows the name gets through to Asterisk, challenge and all.
    assert!(registers(&env, 1, false), "{}", env.asterisk.log_tail(20));
    // The match is on the UDP payload, whatever the family.
    assert!(registers(&env, 1, true));
    assert!(dropped(&env, 1, "pbx.example.test", true));
    // The PBX's address, its real name, and a name that merely starts with the secret one: dropped.
    let pbx = env.topo.pbx_addr(false).to_string();
    for domain in [pbx.as_str(), "pbx.example.test", "k7q2x.pbx.example.testing"] {
        assert!(dropped(&env, 1, domain, false), "REGISTER sip:{domain}");
    }
    // So is any other SIP request, and every other protected port.
    assert!(!env.sip_reaches(1, false, DROPPED), "OPTIONS is not a REGISTER");
    assert!(!env.udp_reaches(1, IAX, false));
    assert!(!env.udp_reaches(1, RTP, false));
    // The door grants nothing by itself.
    assert!(!d.nft_set("allow_sip_v4").contains("203.0.113.10"));

    // A banned address is dropped first, secret or not.
    assert!(registers(&env, 2, false));
    let road2 = IpAddr::V4(env.road(2).v4).to_string();
    d.ok(&["ban", &road2, "--ttl", "1h"]);
    assert!(dropped(&env, 2, SECRET, false));
    assert!(registers(&env, 1, false), "another address still passes");
    let st = d.json(&["status"]);
    assert_eq!(st["in_sync"], true, "{st}");
    assert_eq!(st["sip_door"], "secret domain on for 1 name", "{st}");
    assert!(st.get("sip_rate_drops").is_none(), "{st}");
    // The name is the secret: no log line and no status screen shows it.
    assert!(!d.log_text().contains(SECRET) && !d.ok(&["status"]).contains(SECRET));
}

#[test]
fn responsive_sip_cuts_a_scanner_to_its_burst_in_the_kernel_and_answers_others() {
    let env = env(
        "[sip-responsive]\nenabled = true\nservice = \"sip\"\nrate = 1\nburst = 10\n\
         [metrics]\nenabled = true\nlisten = \"127.0.0.1:9477\"\n",
    );
    let d = env.daemon.as_ref().unwrap();
    assert_eq!(rate_drops(d), 0);

    // A scanner on road 2: 60 REGISTERs within a second or so. One a minute after a burst of 10:
    // however slowly the machine sends them, the rate adds at most a token while they go.
    let flood = sipp::register_flood(
        &env.dir.inside,
        &Peer::from(env.road(2)),
        env.topo.pbx_addr(false),
        "701",
        60,
        100,
    )
    .unwrap_or_else(|e| panic!("flood: {e}"));
    assert!(
        flood.answered >= 1,
        "within its burst the scanner reaches Asterisk: {flood:?}"
    );
    assert!(
        flood.answered <= 11,
        "the kernel cut the flood to its burst: {flood:?}"
    );
    let drops = rate_drops(d);
    eprintln!("flood: {flood:?}, kernel drops counted: {drops}");
    // The kernel let at most 11 through (however slowly Asterisk answered them): the rest were
    // dropped there, and counted.
    assert!(
        drops >= u64::from(flood.sent - 11),
        "the kernel dropped and counted the rest: {drops} for {flood:?}"
    );

    // Another address, within its own rate: answered, and it registers.
    assert_eq!(env.register(1, "701"), Registration::Registered);
    // TCP: a new connection to a SIP port within the rate connects.
    assert!(env.tcp_reaches(1, 5061, false));
    // Every other protected port stays closed, to both.
    for road in [1, 2] {
        assert!(!env.udp_reaches(road, IAX, false), "iax from road {road}");
        assert!(!env.udp_reaches(road, RTP, false), "rtp from road {road}");
    }
    // The meters' entries are the kernel's: the read-back sees no drift.
    let st = d.json(&["status"]);
    assert_eq!(st["in_sync"], true, "{st}");
    assert_eq!(st["sip_door"], "responsive 1/min burst 10", "{st}");
    assert!(st["sip_rate_drops"].as_u64().unwrap() >= drops, "{st}");
    // And /metrics, as of the next read-back (one a second here).
    let metrics = || support::metrics::scrape(env.pbx(), "127.0.0.1:9477".parse().unwrap());
    assert!(
        eventually(WAIT, || metrics()
            .value("passknock_sip_rate_drops_total")
            .is_some_and(|v| v >= drops as f64)),
        "{}",
        metrics().text
    );
    let screen = d.ok(&["status"]);
    assert!(screen.contains("sip: responsive 1/min burst 10; "), "{screen}");

    // A reload that turns it off builds the table again without it: road 1 is unknown, dropped.
    assert!(env.sip_reaches(1, false, DROPPED), "open before the reload");
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace("enabled = true\n", "enabled = false\n")).unwrap();
    d.ok(&["reload"]);
    let st = d.json(&["status"]);
    assert!(st["in_sync"] == true && st.get("sip_door").is_none(), "{st}");
    assert!(!env.sip_reaches(1, false, DROPPED), "closed after it");
    assert!(!d
        .nft(&["list", "counter", "inet", "passknock", "sip_rate_drops"])
        .status
        .success());
    assert!(
        eventually(WAIT, || metrics()
            .value("passknock_sip_rate_drops_total")
            .is_none()),
        "off: not exported"
    );
}
