//! The AMI listener end to end: real Asterisk 22, real SIPp, the real daemon and nftables in
//! network namespaces. Wrong passwords get an address banned within a second and its packets
//! dropped; right ones teach the daemon the contact; an Asterisk restart is followed by a re-sync
//! within seconds; a call from a granted address outlives the grant's TTL until hangup.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::asterisk::{AMI_SECRET, AMI_USER};
use support::daemon::{eventually, short_socket, test_config, Daemon};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::{Call, Hangup, Registration};

/// Starts passknockd next to Asterisk with AMI on; `extra` is more TOML (sections of its own, or
/// keys that go under `[ami]`).
fn start_daemon(env: &mut Env, sections: &str, ami_keys: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.daemon_dir();
    let secret = dir.join("ami.secret");
    std::fs::write(&secret, format!("{AMI_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "{sections}\n[ami]\nenabled = true\nusername = \"{AMI_USER}\"\nsecret-file = \"{}\"\n{ami_keys}\n",
        secret.display()
    );
    // The per-test directory is deep in the chroot: the socket goes where its path fits.
    let config = test_config(&dir, &extra).replace(
        &format!("{}/control.sock", dir.display()),
        &short_socket().display().to_string(),
    );
    let d = Daemon::start(env.pbx(), &dir, &config);
    env.daemon = Some(d);
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(WAIT, || ami_status(d)["connected"] == true),
        "the daemon never logged in to AMI:\n{}",
        d.log_text()
    );
}

fn ami_status(d: &Daemon) -> serde_json::Value {
    d.json(&["contacts"])["ami"].clone()
}

/// Addresses the daemon says `endpoint` is registered from.
fn registered(d: &Daemon, endpoint: &str) -> Vec<String> {
    d.json(&["contacts"])["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["endpoint"] == endpoint)
        .flat_map(|c| c["addresses"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn wrong_passwords_are_banned_within_a_second_and_right_ones_are_learned() {
    let mut env = Env::with(EnvConfig {
        roads: 3,
        ..EnvConfig::default()
    });
    let (bad, good, trusted) = (
        env.road(1).v4.to_string(),
        env.road(2).v4.to_string(),
        env.road(3).v4.to_string(),
    );
    start_daemon(
        &mut env,
        &format!("[firewall]\ntrusted = [\"127.0.0.0/8\", \"::1/128\", \"{trusted}/32\"]\n"),
        "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"\n",
    );
    let d = env.daemon.as_ref().unwrap();
    for a in [&bad, &good] {
        d.ok(&["grant", a, "--services", "sip", "--ttl", "1h"]);
    }

    // The right password, more often than the threshold: each REGISTER draws a ChallengeSent,
    // which is no failure.
    for _ in 0..4 {
        assert_eq!(env.register(2, "702"), Registration::Registered);
    }
    assert!(
        eventually(WAIT, || registered(d, "702") == vec![good.clone()]),
        "702's contact was not learned: {}",
        d.json(&["contacts"])
    );
    // A trusted address may fail as often as it likes.
    for _ in 0..4 {
        assert!(matches!(
            env.register_with(3, "701", "wrong"),
            Registration::Rejected(_)
        ));
    }

    // Watch for the third failure from `bad` on AMI and for the ban in nft, each on its own
    // thread, while the failures happen.
    let mut ami = env.ami();
    let (b1, b2) = (bad.clone(), bad.clone());
    let seen_event = std::thread::spawn(move || {
        for _ in 0..3 {
            ami.expect_event("ChallengeResponseFailed", WAIT, |e| {
                e.is("ChallengeResponseFailed")
                    && e.get("RemoteAddress")
                        .is_some_and(|a| a.contains(&format!("/{b1}/")))
            });
        }
        Instant::now()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let netns = env.pbx().name.clone();
    let stop2 = stop.clone();
    let seen_ban = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns,
                    "nft",
                    "list",
                    "set",
                    "inet",
                    "passknock",
                    "ban_v4",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&b2) {
                return Some(Instant::now());
            }
        }
        None
    });
    for _ in 0..3 {
        assert!(matches!(
            env.register_with(1, "701", "wrong-password"),
            Registration::Rejected(_)
        ));
    }
    let event_at = seen_event.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !seen_ban.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let ban_at = seen_ban
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("{bad} was not banned:\n{}", d.log_text()));
    let latency = ban_at.saturating_duration_since(event_at);
    let inside = ami_status(d)["last_ban_us"].as_u64().unwrap_or(0);
    eprintln!(
        "event→ban in nft: {:.1} ms seen from outside (AMI event to `nft list` finding it); \
         {:.1} ms inside the daemon (event received to nft applied)",
        latency.as_secs_f64() * 1000.0,
        inside as f64 / 1000.0
    );
    assert!(latency < Duration::from_secs(1), "ban took {latency:?}");

    // The ban beats the grant: nothing from `bad` reaches SIP; `good` still does.
    assert!(!env.sip_reaches(1, false, Duration::from_secs(1)));
    assert!(env.sip_reaches(2, false, Duration::from_secs(2)));
    let bans = d.json(&["list"])["bans"].clone();
    let banned: Vec<&str> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert_eq!(banned, vec![bad.as_str()], "only {bad} is banned: {bans}");
    assert!(bans[0]["reason"]
        .as_str()
        .unwrap()
        .contains("ChallengeResponseFailed"));
    assert_eq!(ami_status(d)["bans"], 1);
}

#[test]
fn asterisk_restart_is_followed_by_a_resync_within_five_seconds() {
    let mut env = Env::new();
    let road1 = env.road(1).v4.to_string();
    let road2 = env.road(2).v4.to_string();
    start_daemon(&mut env, "", "");
    {
        let d = env.daemon.as_ref().unwrap();
        for a in [&road1, &road2] {
            d.ok(&["grant", a, "--services", "sip", "--ttl", "1h"]);
        }
    }
    assert_eq!(env.register(1, "701"), Registration::Registered);
    let d = env.daemon.as_ref().unwrap();
    assert!(eventually(WAIT, || registered(d, "701") == vec![road1.clone()]));

    // A plain restart: Asterisk keeps the registration in astdb; the re-sync after the new login
    // lists it again.
    env.asterisk.restart();
    let booted = Instant::now();
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = ami_status(d);
            s["connected"] == true && s["logins"] == 2
        }),
        "no new AMI login within 5 s of Asterisk being up: {}\n{}",
        ami_status(d),
        d.log_text()
    );
    eprintln!("AMI back {:?} after Asterisk was fully booted", booted.elapsed());
    assert_eq!(registered(d, "701"), vec![road1.clone()]);

    // A restart that loses the registrations: only a re-sync can tell the daemon.
    env.asterisk.restart_forgetting_state();
    let booted = Instant::now();
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            ami_status(d)["logins"] == 3 && registered(d, "701").is_empty()
        }),
        "contacts not re-synced within 5 s: {}\n{}",
        d.json(&["contacts"]),
        d.log_text()
    );
    eprintln!(
        "AMI back and contacts re-synced {:?} after Asterisk was fully booted",
        booted.elapsed()
    );
    // And live events flow on the new connection.
    assert_eq!(env.register(2, "702"), Registration::Registered);
    let d = env.daemon.as_ref().unwrap();
    assert!(eventually(WAIT, || registered(d, "702") == vec![road2.clone()]));
}

#[test]
fn a_call_outlives_its_grant_until_hangup_then_access_ends() {
    let mut env = Env::new();
    let road = env.road(1).v4.to_string();
    start_daemon(&mut env, "", "hold-max = \"1h\"\n");
    let d = env.daemon.as_ref().unwrap();
    d.ok(&["grant", &road, "--ttl", "3s"]);
    let expires = d.json(&["list"])["grants"][0]["expires"].as_i64().unwrap();

    // A call to the echo line, which stays up until the phone hangs up after 8 s.
    let caller = env.call_in_background(1, Call::to("600").hold(Duration::from_secs(6)));
    assert!(
        eventually(WAIT, || !d.json(&["calls"])["calls"]
            .as_array()
            .unwrap()
            .is_empty()),
        "the call was not seen:\n{}",
        d.log_text()
    );
    let calls = d.json(&["calls"]);
    assert_eq!(calls["calls"][0]["address"], road.as_str(), "{calls}");

    // Past the TTL: the grant is held and SIP still passes (the call itself is the proof).
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    std::thread::sleep(Duration::from_millis((expires - now() + 1500).max(0) as u64));
    let list = d.json(&["list"]);
    let g = &list["grants"][0];
    assert_eq!(g["address"], road.as_str(), "held grant listed: {list}");
    assert!(g["hold_until"].as_i64().unwrap() > expires, "{list}");
    assert!(d.nft_set("allow_sip_v4").contains(&road));
    assert!(d.ok(&["list"]).contains("held: call up"));

    let hangup = caller
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", env.asterisk.log_tail(30)));
    assert_eq!(hangup, Hangup::Local, "the phone hung up, not the PBX");
    let ended = Instant::now();
    let d = env.daemon.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(2), || !d
            .nft_set("allow_sip_v4")
            .contains(&road)),
        "access did not end after the call:\n{}",
        d.log_text()
    );
    eprintln!("access ended {:?} after hangup", ended.elapsed());
    assert!(d.json(&["list"])["grants"].as_array().unwrap().is_empty());
    assert!(d.json(&["calls"])["calls"].as_array().unwrap().is_empty());
    assert!(!env.sip_reaches(1, false, Duration::from_secs(1)));
}
