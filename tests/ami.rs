//! The AMI listener end to end: real Asterisk 22, real SIPp, the real daemon and nftables in
//! network namespaces. Wrong passwords get an address banned within a second and its packets
//! dropped; right ones teach the daemon the contact; an Asterisk restart is followed by a re-sync
//! within seconds; a call from a granted address outlives the grant's TTL until hangup.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::daemon::{eventually, test_config, write_secret, Daemon};
use support::env::{Env, EnvConfig, WAIT};
use support::sipp::{Call, Hangup, Registration};

/// Starts passknockd next to Asterisk with AMI on; `extra` is more TOML (sections of its own, or
/// keys that go under `[ami]`).
fn start_daemon(env: &mut Env, sections: &str, ami_keys: &str) {
    env.start_ami_daemon(sections, ami_keys);
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
    // `passknock status` counts it live and in the last hour.
    let st = d.json(&["status"]);
    assert_eq!(st["calls"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["last_hour"]["sip_calls"], 1, "{st}");
    assert_eq!(st["ami"]["connected"], true, "{st}");
    let screen = d.ok(&["status"]);
    assert!(
        screen.contains(&format!(
            "AMI       {} connected",
            st["ami"]["address"].as_str().unwrap()
        )),
        "{screen}"
    );

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
    assert_eq!(
        d.json(&["status"])["last_hour"]["sip_calls"],
        1,
        "one call, counted once"
    );
}

/// A hostile "Asterisk" on the daemon's AMI port: logs anyone in, then floods a 64 MiB line, a
/// block of 100,000 fields, binary garbage and events missing their fields, and half-closes; and
/// again on every reconnect. The daemon stays up, answers its socket promptly, and stays small.
#[test]
fn a_hostile_ami_peer_neither_crashes_nor_stalls_the_daemon() {
    use std::io::{Read, Write};
    use support::netns::Netns;

    let ns = Netns::new("hostile");
    let listener = ns.within(|| std::net::TcpListener::bind("127.0.0.1:5038").unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let peer = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut served = 0;
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            served += 1;
            s.set_nonblocking(false).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = s.try_clone().unwrap();
            // Drain whatever the client sends; answer the challenge and the login.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            });
            let _ = s.write_all(
                b"Asterisk Call Manager/11.0.0\r\n\
                  Response: Success\r\nActionID: pk-challenge\r\nChallenge: 1\r\n\r\n\
                  Response: Success\r\nActionID: pk-login\r\n\r\n",
            );
            let chunk = vec![b'x'; 1 << 20];
            let _ = s.write_all(b"Event: Huge\r\nValue: ");
            for _ in 0..64 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = s.write_all(b"\r\n\r\nEvent: Many\r\n");
            let mut many = Vec::new();
            for i in 0..100_000 {
                many.extend_from_slice(format!("K{i}: v\r\n").as_bytes());
            }
            let _ = s.write_all(&many);
            let _ = s.write_all(b"\r\n\x00\xff\xfe\x01 garbage\r\n\r\nEvent: Hangup\r\n\r\n");
            let _ = s.write_all(b"Event: InvalidPassword\r\nRemoteAddress: IPV4/UDP/nonsense/1\r\n\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            std::thread::sleep(Duration::from_millis(200));
        }
        served
    });

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ami.secret");
    write_secret(&secret, "whatever");
    let extra = format!(
        "[ami]\nenabled = true\nsecret-file = \"{}\"\nreconnect-first = \"100ms\"\nreconnect-max = \"200ms\"\n",
        secret.display()
    );
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), &extra));
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut peak_kib = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        d.ok(&["status"]);
        slowest = slowest.max(t.elapsed());
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let rss: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        peak_kib = peak_kib.max(rss);
        std::thread::sleep(Duration::from_millis(100));
    }
    let ami = ami_status(&d);
    stop.store(true, Ordering::Relaxed);
    let served = peer.join().unwrap();
    eprintln!(
        "hostile peer: {served} connection(s), {} login(s), {} block(s) dropped; slowest status \
         {slowest:?}; peak RSS {} MiB",
        ami["logins"],
        ami["skipped"],
        peak_kib / 1024
    );
    assert!(served >= 2, "the daemon reconnected after each half-close");
    assert!(ami["skipped"].as_u64().unwrap() >= 2, "{ami}");
    // Not stalled: every `status` above was answered (the client gives up after 60 s, and
    // `d.ok` fails then). How fast is a figure, printed above, not a test: a status is answered by
    // a read-back pass at nice 19, which a loaded machine may hold back.
    assert!(peak_kib < 100 * 1024, "daemon grew to {peak_kib} KiB");
    assert!(d.json(&["list"])["bans"].as_array().unwrap().is_empty());
}

#[test]
fn wrong_passwords_over_ipv6_ban_that_address_and_only_it() {
    let mut env = Env::new();
    let (v4, v6) = (env.road(1).v4.to_string(), env.road(1).v6.to_string());
    start_daemon(
        &mut env,
        "",
        "ban-threshold = 3\nban-window = \"60s\"\nban-ttl = \"10m\"\n",
    );
    let d = env.daemon.as_ref().unwrap();
    for a in [&v4, &v6] {
        d.ok(&["grant", a, "--services", "sip", "--ttl", "1h"]);
    }
    // (No reachability probe first: Asterisk counts the probe's OPTIONS as a failure too.)
    for _ in 0..3 {
        assert!(matches!(
            env.register_over(1, "701", "wrong-password", true),
            Registration::Rejected(_)
        ));
    }
    assert!(
        eventually(WAIT, || d.nft_set("ban_v6").contains(&v6)),
        "{v6} was not banned:\n{}",
        d.log_text()
    );
    // The ban holds over the grant for the IPv6 address; the same host's IPv4 address, which
    // never failed, still gets in.
    assert!(!env.sip_reaches(1, true, Duration::from_secs(1)));
    assert!(env.sip_reaches(1, false, Duration::from_secs(2)));
    assert!(!d.nft_set("ban_v4").contains(&v4));
    let bans = d.json(&["list"])["bans"].clone();
    assert_eq!(bans.as_array().unwrap().len(), 1, "{bans}");
    assert_eq!(bans[0]["address"], v6.as_str());
}
