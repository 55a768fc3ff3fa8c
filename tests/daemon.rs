//! The daemon's life: crash safety under `kill -9`, restart with remaining TTLs, reconcile
//! repairs, nft failures, refusals that change nothing, and a clean SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::daemon::{eventually, test_config, Daemon};
use support::netns::Netns;

fn start(ns: &Netns, dir: &Path) -> Daemon {
    Daemon::start(ns, dir, &test_config(dir, ""))
}

fn listed(d: &Daemon) -> Vec<String> {
    d.json(&["list"])["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["address"].as_str().unwrap().to_string())
        .collect()
}

/// Sends grants over the control socket as fast as it can, recording each acknowledged address.
fn burst(socket: &Path, thread: u8, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let Ok(s) = UnixStream::connect(socket) else {
        return;
    };
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..=u16::MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let addr = format!("198.18.{}.{}", thread as u16 * 16 + i / 250, i % 250 + 1);
        let req =
            format!("{{\"op\":\"grant\",\"address\":\"{addr}\",\"services\":[\"sip\"],\"ttl\":\"1h\"}}\n");
        if w.write_all(req.as_bytes()).is_err() {
            return;
        }
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 && line.contains("\"granted\"") => acked.lock().unwrap().push(addr),
            _ => return,
        }
    }
}

#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_grant() {
    let ns = Netns::new("crash");
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(&ns, dir.path());
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    // Kill at several different instants into the burst.
    for (round, after_ms) in [(0u8, 250u64), (1, 500), (2, 800)] {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4u8)
            .map(|t| {
                let (sock, a, s) = (d.socket.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || burst(&sock, round * 4 + t, a, s))
            })
            .collect();
        // The clock starts at the round's first acknowledgement: on a loaded machine the first
        // grants can take a while, and a kill before any would prove nothing.
        let before = acked.lock().unwrap().len();
        assert!(
            eventually(Duration::from_secs(10), || acked.lock().unwrap().len() > before),
            "round {round}: no grant acknowledged"
        );
        std::thread::sleep(Duration::from_millis(after_ms));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        d.spawn();
        let have: std::collections::HashSet<String> = listed(&d).into_iter().collect();
        let acked = acked.lock().unwrap();
        assert!(
            acked.len() > 10,
            "round {round}: the burst got going ({} acked)",
            acked.len()
        );
        let lost: Vec<&String> = acked.iter().filter(|a| !have.contains(*a)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged grants lost: {lost:?}"
        );
        let store = passknock::store::Store::open(&dir.path().join("store.db")).unwrap();
        assert_eq!(
            store.integrity_check().unwrap(),
            "ok",
            "round {round}: store is sound"
        );
        // Every grant row is whole: address, service and expiry all there.
        for g in store.live_grants(0).unwrap() {
            assert_eq!(g.services, vec!["sip"]);
            assert!(g.expires > g.created);
        }
        // And the table was rebuilt from the store on start.
        let set = d.nft_set("allow_sip_v4");
        assert!(
            acked.iter().all(|a| set.contains(a.as_str())),
            "round {round}: nft has every grant"
        );
        eprintln!(
            "round {round}: killed after {after_ms} ms; {} grants acknowledged so far, all present",
            acked.len()
        );
    }
}

#[test]
fn restart_restores_remaining_ttl_and_prunes_expired() {
    let ns = Netns::new("restart");
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(&ns, dir.path());
    d.ok(&[
        "grant",
        "203.0.113.7",
        "--services",
        "sip,rtp",
        "--ttl",
        "1h",
        "--note",
        "hotel",
    ]);
    d.ok(&["grant", "203.0.113.8", "--ttl", "2s"]);
    d.ok(&["grant", "2001:db8::7", "--services", "iax", "--ttl", "30m"]);
    d.ok(&["ban", "203.0.113.66", "--ttl", "2s"]);
    d.ok(&["ban", "203.0.113.67", "--ttl", "1h"]);
    assert!(d.term().success(), "SIGTERM is a clean exit");
    assert!(d.log_text().contains("stays in place"), "says what it leaves");
    // While the daemon is down, the kernel's own timeouts keep running.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !d.nft_set("allow_sip_v4").contains("203.0.113.8"),
        "kernel closed it with no daemon"
    );
    // Lose the table too, as a reboot would.
    assert!(d.nft(&["flush", "ruleset"]).status.success());
    d.spawn();
    let mut l = listed(&d);
    l.sort();
    assert_eq!(
        l,
        ["2001:db8::7", "203.0.113.7"],
        "live grants back, expired pruned"
    );
    let bans = d.json(&["list"])["bans"].as_array().unwrap().clone();
    assert_eq!(bans.len(), 1);
    let sip = d.nft_set("allow_sip_v4");
    assert!(sip.contains("203.0.113.7"), "{sip}");
    assert!(!sip.contains("203.0.113.8"), "{sip}");
    // The remaining life, not a fresh TTL: under an hour, more than 55 minutes.
    let expires = sip.split("expires ").nth(1).unwrap();
    assert!(expires.starts_with("59m") || expires.starts_with("58m"), "{sip}");
    assert!(d.nft_set("allow_iax_v6").contains("2001:db8::7"));
    assert!(d.nft_set("ban_v4").contains("203.0.113.67"));
    assert!(!d.nft_set("ban_v4").contains("203.0.113.66"));
}

#[test]
fn reconcile_repairs_the_table() {
    let ns = Netns::new("reconcile");
    let dir = tempfile::tempdir().unwrap();
    let d = start(&ns, dir.path());
    d.ok(&["grant", "203.0.113.7", "--services", "sip", "--ttl", "1h"]);
    let in_sync = || d.json(&["status"])["in_sync"] == true;
    assert!(in_sync());

    // An element the store does not know goes; a missing one comes back.
    assert!(d
        .nft(&[
            "add",
            "element",
            "inet",
            "passknock",
            "allow_sip_v4",
            "{ 192.0.2.99 timeout 1h }"
        ])
        .status
        .success());
    assert!(d
        .nft(&[
            "delete",
            "element",
            "inet",
            "passknock",
            "allow_sip_v4",
            "{ 203.0.113.7 }"
        ])
        .status
        .success());
    // Status says so, unless the read-back (every second here, on a thread of its own) has
    // repaired it already.
    let out = d.ok(&["status"]);
    assert!(
        out.contains("NOT in sync") || d.log_text().contains("table had drifted from the store"),
        "{out}"
    );
    assert!(eventually(Duration::from_secs(5), in_sync), "{}", d.log_text());
    let set = d.nft_set("allow_sip_v4");
    assert!(
        set.contains("203.0.113.7") && !set.contains("192.0.2.99"),
        "{set}"
    );

    // A rule tampered with: the table is rebuilt whole.
    assert!(d
        .nft(&["flush", "chain", "inet", "passknock", "input"])
        .status
        .success());
    assert!(eventually(Duration::from_secs(5), in_sync), "{}", d.log_text());
    assert!(d.nft_set("allow_sip_v4").contains("203.0.113.7"));

    // The whole ruleset flushed (a reboot, `nft flush ruleset`): re-created.
    assert!(d.nft(&["flush", "ruleset"]).status.success());
    assert!(eventually(Duration::from_secs(5), in_sync), "{}", d.log_text());
    assert!(d.nft_set("allow_sip_v4").contains("203.0.113.7"));
    // Other tables are never touched.
    assert!(d.nft(&["add", "table", "inet", "admins_own"]).status.success());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.nft(&["list", "table", "inet", "admins_own"]).status.success());

    // The kernel sweeps the timeout sets for expired elements once a minute, not every second.
    let listed = d.nft(&["-j", "list", "set", "inet", "passknock", "allow_sip_v4"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("\"gc-interval\": 60"), "{listed}");
}

#[test]
fn nft_failure_is_reported_retried_and_loses_nothing() {
    let ns = Netns::new("nftfail");
    let dir = tempfile::tempdir().unwrap();
    // An nft that fails, with a message of its own, while a flag file exists.
    let flag = dir.path().join("fail");
    let wrapper = dir.path().join("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {} ]; then echo 'Error: Could not process rule: simulated outage' >&2; exit 1; fi\nexec nft \"$@\"\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Element changes through nft too (not netlink), so every change meets the failing program.
    let extra = format!(
        "\n[firewall]\nnft = \"{}\"\nelements = \"nft\"\n",
        wrapper.display()
    );
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), &extra));
    d.ok(&["grant", "203.0.113.7", "--services", "sip"]);

    std::fs::write(&flag, "").unwrap();
    let out = d.ok(&["grant", "203.0.113.8", "--services", "sip"]);
    assert!(
        out.contains("not updated yet") && out.contains("simulated outage"),
        "nft's own message: {out}"
    );
    let st = d.ok(&["status"]);
    assert!(st.contains("simulated outage"), "{st}");
    // The previous table stays as it was.
    let set = d.nft_set("allow_sip_v4");
    assert!(
        set.contains("203.0.113.7") && !set.contains("203.0.113.8"),
        "{set}"
    );
    // nft is back: the retry puts the grant in without anyone asking.
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || d
            .nft_set("allow_sip_v4")
            .contains("203.0.113.8")),
        "{}",
        d.log_text()
    );
    assert!(d.json(&["status"])["firewall_error"].is_null());
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let ns = Netns::new("refuse");
    let dir = tempfile::tempdir().unwrap();
    let d = start(&ns, dir.path());
    d.ok(&["grant", "203.0.113.7", "--services", "sip", "--ttl", "1h"]);
    let before = d.json(&["list"]);
    let table_before = d.nft(&["-j", "list", "table", "inet", "passknock"]).stdout;
    for (args, says) in [
        (vec!["grant", "203.0.113.999"], "not an IPv4 or IPv6 address"),
        (vec!["grant", "not-an-address"], "not an IPv4 or IPv6 address"),
        (vec!["grant", "127.0.0.1"], "loopback"),
        (vec!["grant", "0.0.0.0"], "unspecified"),
        (vec!["grant", "224.0.0.5"], "multicast"),
        (
            vec!["grant", "203.0.113.9", "--services", "sip,ssh"],
            "unknown service `ssh`",
        ),
        (
            vec!["grant", "203.0.113.9", "--ttl", "25h"],
            "above the cap grants.ttl-max",
        ),
        (vec!["grant", "203.0.113.9", "--ttl", "0s"], "more than 0s"),
        (vec!["revoke", "203.0.113.9"], "has no grant"),
        (vec!["unban", "203.0.113.9"], "not banned"),
        (vec!["ban", "127.0.0.1"], "loopback"),
        (
            vec!["ban", "203.0.113.9", "--ttl", "31d"],
            "above the cap bans.ttl-max",
        ),
    ] {
        let e = d.refused(&args);
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // A TTL that does not parse is refused by the CLI itself.
    let e = d.refused(&["grant", "203.0.113.9", "--ttl", "forever"]);
    assert!(e.contains("forever"), "{e}");
    // Garbage on the socket gets an error reply, not a crash.
    let s = UnixStream::connect(&d.socket).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"{\"op\":\"grant\",\"address\":1}\nnot json\n")
        .unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains("\"error\"") && line.contains("bad request"),
            "{line}"
        );
    }
    assert_eq!(d.json(&["list"])["grants"], before["grants"], "nothing changed");
    assert_eq!(
        d.nft(&["-j", "list", "table", "inet", "passknock"]).stdout.len(),
        table_before.len()
    );
    // The socket is the owner's alone.
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn broken_config_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text =
        test_config(dir.path(), "").replace("ttl-max = \"24h\"", "ttl-max = \"24h\"\nttl-defualt = \"1h\"");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(support::daemon::PASSKNOCKD)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("ttl-defualt") && e.contains("line"), "{e}");
    // And the embedded example is a working default.
    let out = std::process::Command::new(support::daemon::PASSKNOCKD)
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sighup_reloads_the_config_keeps_grants_and_refuses_a_broken_one() {
    let ns = Netns::new("reload");
    let dir = tempfile::tempdir().unwrap();
    let d = start(&ns, dir.path());
    d.ok(&["grant", "203.0.113.7", "--services", "sip", "--ttl", "1h"]);
    let hup = || unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };

    // A new service: the table is rebuilt with its sets, and the grant is kept.
    let text = test_config(dir.path(), "\n[services.probe]\nports = [\"udp/7070\"]\n");
    std::fs::write(&d.config, &text).unwrap();
    hup();
    assert!(
        eventually(Duration::from_secs(5), || d
            .nft_set("allow_probe_v4")
            .contains("allow_probe_v4")),
        "{}",
        d.log_text()
    );
    assert!(
        d.nft_set("allow_sip_v4").contains("203.0.113.7"),
        "grants survive a reload"
    );
    assert!(d
        .ok(&["grant", "203.0.113.8", "--services", "probe"])
        .contains("probe"));

    // A broken config: refused with the key named, the running one stays.
    std::fs::write(
        &d.config,
        text.replace("[services.probe]", "[services.probe]\nprots = 1"),
    )
    .unwrap();
    hup();
    assert!(
        eventually(Duration::from_secs(5), || d
            .log_text()
            .contains("config not reloaded")),
        "{}",
        d.log_text()
    );
    let e = d.refused(&["reload"]);
    assert!(e.contains("prots") && e.contains("running one stays"), "{e}");
    assert!(
        d.nft_set("allow_probe_v4").contains("203.0.113.8"),
        "nothing changed"
    );
    assert!(d.json(&["status"])["in_sync"] == true);
}

#[test]
fn tells_systemd_it_is_ready_only_once_the_table_is_applied() {
    let ns = Netns::new("notify");
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let cfg = dir.path().join("passknock.toml");
    std::fs::write(&cfg, test_config(dir.path(), "")).unwrap();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, support::daemon::PASSKNOCKD, "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("READY=1 within 20 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("READY=1"), "{msg}");
    // By the time systemd hears READY, the table is there.
    let out = ns.exec("nft", &["list", "table", "inet", "passknock"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain input"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn audit_lines_go_to_the_audit_file_too() {
    let ns = Netns::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("log/audit.log");
    let extra = "";
    let text = test_config(dir.path(), extra).replace(
        "reconcile-interval = \"1s\"",
        &format!("reconcile-interval = \"1s\"\naudit-log = \"{}\"", audit.display()),
    );
    let d = Daemon::start(&ns, dir.path(), &text);
    d.ok(&[
        "grant",
        "203.0.113.7",
        "--services",
        "sip",
        "--ttl",
        "1h",
        "--note",
        "Ann in Lyon",
    ]);
    d.refused(&["grant", "127.0.0.1"]);
    d.ok(&["ban", "203.0.113.66", "--reason", "scanner"]);
    d.ok(&["revoke", "203.0.113.7"]);
    let text = std::fs::read_to_string(&audit).unwrap();
    for want in [
        "grant address=203.0.113.7 who=\"uid 0\" source=admin services=sip until=",
        "note=\"Ann in Lyon\"",
        "refused grant address=127.0.0.1 who=\"uid 0\" source=admin 127.0.0.1 is a loopback address",
        "ban address=203.0.113.66 who=\"uid 0\" source=admin until=",
        "reason=\"scanner\"",
        "revoke address=203.0.113.7 who=\"uid 0\" source=admin grants=1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("reconcile"), "only audit lines: {text}");
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn metrics_endpoint_counts_grants_bans_and_nft_applies() {
    let ns = Netns::new("metrics");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &ns,
        dir.path(),
        &test_config(
            dir.path(),
            "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:9477\"\n",
        ),
    );
    d.ok(&["grant", "203.0.113.7", "--services", "sip"]);
    d.ok(&["grant", "203.0.113.8", "--services", "sip"]);
    d.ok(&["ban", "203.0.113.66"]);
    let get = |path: &str| {
        let script =
            format!("exec 3<>/dev/tcp/127.0.0.1/9477; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3");
        String::from_utf8_lossy(&ns.exec("bash", &["-c", &script]).stdout).into_owned()
    };
    let text = get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("passknock_grants_total{source=\"admin\"} 2"),
        "{text}"
    );
    assert!(text.contains("passknock_bans_total 1"), "{text}");
    assert!(text.contains("passknock_nft_apply_seconds_count"), "{text}");
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    // Off the loopback it is refused by the config itself.
    let bad = test_config(
        dir.path(),
        "\n[metrics]\nenabled = true\nlisten = \"0.0.0.0:9477\"\n",
    );
    let e = passknock::config::Config::parse(&bad, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.listen"), "{e}");
}
