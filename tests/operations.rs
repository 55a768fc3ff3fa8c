//! Running in production: the systemd unit against the config's paths, the watchdog, journal and
//! JSON logs, the audit file through logrotate, and bans from fail2ban — all against the real
//! daemon and the real tools.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::daemon::{eventually, test_config, Daemon, PASSKNOCK, PASSKNOCKD};
use support::netns::Netns;

const UNIT: &str = include_str!("../dist/passknockd.service");
const EXAMPLE: &str = include_str!("../examples/passknock.toml");
const FAIL2BAN_ACTION: &str = include_str!("../dist/fail2ban/action.d/passknock.conf");

/// The directories a unit's `[Service]` section lets the daemon write under `ProtectSystem=strict`.
fn writable_dirs(unit: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in unit.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        // systemd's own roots for each kind of directory it makes and hands to the service.
        let root = match key.trim() {
            "ReadWritePaths" => "",
            "StateDirectory" => "/var/lib",
            "LogsDirectory" => "/var/log",
            "RuntimeDirectory" => "/run",
            "CacheDirectory" => "/var/cache",
            _ => continue,
        };
        for v in value.split_whitespace() {
            // `-` makes a missing ReadWritePaths entry no error; it names the same path.
            let v = v.trim_start_matches('-');
            dirs.push(if root.is_empty() {
                PathBuf::from(v)
            } else {
                Path::new(root).join(v)
            });
        }
    }
    dirs
}

/// Every path the example config names for the daemon to write — set or commented out, since
/// an admin uncomments them — as (key, path).
fn written_paths(example: &str) -> Vec<(String, PathBuf)> {
    // The keys whose files the daemon creates or writes: the store (and its WAL beside it), the
    // control socket, the audit log, the DISA key (made on first use).
    const WRITTEN: [&str; 4] = ["store", "control-socket", "audit-log", "key-file"];
    let mut out = Vec::new();
    for line in example.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if WRITTEN.contains(&key) {
            let value = value.trim().trim_matches('"');
            out.push((key.to_string(), PathBuf::from(value)));
        }
    }
    out
}

#[test]
fn the_unit_lets_the_daemon_write_every_path_the_example_config_names() {
    assert!(UNIT.lines().any(|l| l.trim() == "ProtectSystem=strict"));
    let dirs = writable_dirs(UNIT);
    let paths = written_paths(EXAMPLE);
    let keys: Vec<&str> = paths.iter().map(|(k, _)| k.as_str()).collect();
    for want in ["store", "control-socket", "audit-log", "key-file"] {
        assert!(keys.contains(&want), "the example names {want}: {keys:?}");
    }
    // The built-in defaults too: a config that leaves the keys out writes there.
    let defaults = [
        ("store (default)", passknock::base::defaults::STORE_PATH),
        (
            "control-socket (default)",
            passknock::base::defaults::CONTROL_SOCKET,
        ),
        ("key-file (default)", passknock::base::defaults::DISA_KEY_PATH),
    ];
    let all = paths
        .iter()
        .map(|(k, p)| (k.clone(), p.clone()))
        .chain(defaults.iter().map(|(k, p)| (k.to_string(), PathBuf::from(p))));
    for (key, path) in all {
        assert!(
            dirs.iter().any(|d| path.starts_with(d) && path != *d),
            "{key} = {} is read-only under ProtectSystem=strict: no ReadWritePaths, \
             StateDirectory, LogsDirectory or RuntimeDirectory covers it (writable: {dirs:?})",
            path.display()
        );
    }
    // The audit log and the state hold who came in from where: root's alone.
    for (key, mode) in [
        ("StateDirectoryMode", "0700"),
        ("LogsDirectoryMode", "0700"),
        ("RuntimeDirectoryMode", "0700"),
    ] {
        assert!(
            UNIT.lines().any(|l| l.trim() == format!("{key}={mode}")),
            "{key}={mode}"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed (Debian: systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ExecStart must name an executable that exists: the one just built.
    let unit = dir.path().join("passknockd.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/passknockd", PASSKNOCKD)).unwrap();
    // The unit's Documentation= names the manual pages the package installs; this host has not
    // installed them (tests/package.rs checks them, installed), so only the unit is verified here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // An unknown or misspelt key is only a warning to systemd: none may be left.
    assert!(err.trim().is_empty(), "systemd-analyze verify warns: {err}");
    assert!(
        UNIT.contains("\nWatchdogSec=30s\n"),
        "the unit asks for the watchdog"
    );
}

/// Starts `passknockd` in `ns` with `args`, extra environment and stderr into `log`; returns
/// once the control socket answers.
fn spawn(
    ns: &Netns,
    config: &Path,
    socket: &Path,
    log: &Path,
    env: &[(&str, String)],
    args: &[&str],
) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, PASSKNOCKD, "--config"])
        .arg(config)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let up = eventually(Duration::from_secs(20), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "passknockd exited:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        cli(socket, &["status"]).status.success()
    });
    assert!(
        up,
        "passknockd did not answer:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

fn cli(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(PASSKNOCK)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// The notify datagrams that arrive within `within`.
fn datagrams(sock: &UnixDatagram, within: Duration) -> Vec<(Instant, String)> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(_) => return got,
        }
    }
}

#[test]
fn the_engine_pings_the_watchdog_and_stops_when_it_is_stuck() {
    let ns = Netns::new("watchdog");
    let dir = tempfile::tempdir().unwrap();
    // An nft that hangs while `hang` exists — as a wedged netlink or a stopped nft would — and
    // says so by touching `hung`.
    let (hang, hung) = (dir.path().join("hang"), dir.path().join("hung"));
    let wrapper = dir.path().join("nft-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nwhile [ -e {hang} ]; do touch {hung}; sleep 0.05; done\nexec nft \"$@\"\n",
            hang = hang.display(),
            hung = hung.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("passknock.toml");
    // Element changes through nft too, so a grant meets the hanging program on the engine's own
    // thread (the read-back runs on a thread of its own).
    let extra = format!(
        "\n[firewall]\nnft = \"{}\"\nelements = \"nft\"\n",
        wrapper.display()
    );
    std::fs::write(&cfg, test_config(dir.path(), &extra)).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = dir.path().join("passknockd.log");
    let env = [
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
        // 1 s: a ping every half second.
        ("WATCHDOG_USEC", "1000000".to_string()),
    ];
    let child = spawn(&ns, &cfg, &dir.path().join("control.sock"), &log, &env, &[]);

    let got = datagrams(&notify, Duration::from_secs(3));
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        (5..=8).contains(&pings.len()),
        "about 6 pings in 3 s at one per 0.5 s: {got:?}"
    );
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(400) && gap <= Duration::from_millis(800),
            "a ping every half of WATCHDOG_USEC, not {gap:?}"
        );
    }

    // nft hangs: the engine's next change waits on it, and the pings stop.
    std::fs::write(&hang, "").unwrap();
    let grant = Command::new(PASSKNOCK)
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .args(["grant", "203.0.113.7", "--services", "sip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || hung.exists()),
        "the engine ran nft"
    );
    // A ping sent just before the engine got stuck may still be queued.
    let _ = datagrams(&notify, Duration::from_millis(100));
    let silent = datagrams(&notify, Duration::from_secs(3));
    assert!(
        silent.iter().all(|(_, m)| m != "WATCHDOG=1"),
        "no ping from a stuck engine: {silent:?}"
    );

    // nft answers again: the engine moves on and the pings come back.
    std::fs::remove_file(&hang).unwrap();
    let back = datagrams(&notify, Duration::from_secs(2));
    assert!(
        back.iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 2,
        "pings resume: {back:?}"
    );
    assert!(
        grant.wait_with_output().unwrap().status.success(),
        "the grant went through"
    );
    stop(child);
}

/// `device:inode` of a file, as systemd puts its journal stream in `JOURNAL_STREAM`.
fn journal_stream(file: &Path) -> String {
    let m = std::fs::metadata(file).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// Writes a config that does not parse and sends SIGHUP: a warning the test can wait for.
fn warn_with_a_broken_reload(cfg: &Path, child: &Child, log: &Path) {
    let good = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(cfg, format!("{good}\n[grants]\nttl-defualt = 1\n")).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(
        log
    )
    .unwrap()
    .contains("config not reloaded")));
    std::fs::write(cfg, good).unwrap();
}

#[test]
fn under_the_journal_each_line_starts_with_its_syslog_priority() {
    let ns = Netns::new("journal");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("passknock.toml");
    std::fs::write(&cfg, test_config(dir.path(), "")).unwrap();
    let socket = dir.path().join("control.sock");
    let log = dir.path().join("passknockd.log");
    std::fs::write(&log, "").unwrap();
    let env = [
        ("JOURNAL_STREAM", journal_stream(&log)),
        ("PASSKNOCK_LOG", "debug".to_string()),
    ];
    let child = spawn(&ns, &cfg, &socket, &log, &env, &[]);
    assert!(cli(&socket, &["grant", "203.0.113.7"]).status.success());
    warn_with_a_broken_reload(&cfg, &child, &log);
    // A debug line: the next reconcile (every second) finds the table in sync.
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(
        &log
    )
    .unwrap()
    .contains("table in sync")));
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let line = |has: &str| {
        text.lines()
            .find(|l| l.contains(has))
            .unwrap_or_else(|| panic!("no line with {has:?}:\n{text}"))
    };
    assert!(line("config not reloaded").starts_with("<4>"), "{text}");
    assert!(line("ready: control socket").starts_with("<6>"), "{text}");
    assert!(line("reconcile: table in sync").starts_with("<7>"), "{text}");
    for l in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("a line without a priority: {l:?}"));
        // journald stamps each line itself; a timestamp of ours would only repeat it.
        assert!(!rest.starts_with("20"), "no timestamp under the journal: {l:?}");
        assert!(!rest.contains('\u{1b}'), "no colour: {l:?}");
    }

    // JOURNAL_STREAM inherited but naming another stream (stderr went elsewhere): plain lines.
    let log2 = dir.path().join("plain.log");
    let env = [("JOURNAL_STREAM", journal_stream(&cfg))];
    let child = spawn(&ns, &cfg, &socket, &log2, &env, &[]);
    stop(child);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(
        text.lines().all(|l| !l.starts_with('<') && l.starts_with("20")),
        "{text}"
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let ns = Netns::new("jsonlog");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("passknock.toml");
    std::fs::write(&cfg, test_config(dir.path(), "")).unwrap();
    let socket = dir.path().join("control.sock");
    let log = dir.path().join("passknockd.log");
    std::fs::write(&log, "").unwrap();
    // Even under the journal, JSON stays bare JSON: a shipper parses every line.
    let env = [("JOURNAL_STREAM", journal_stream(&log))];
    let child = spawn(&ns, &cfg, &socket, &log, &env, &["--log-format", "json"]);
    assert!(
        cli(&socket, &["grant", "203.0.113.7", "--note", "Ann \"in\" Lyon"])
            .status
            .success()
    );
    warn_with_a_broken_reload(&cfg, &child, &log);
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    for v in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {v}");
        }
        assert!(v["fields"].is_object(), "{v}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    }
    let find = |has: &str| {
        lines
            .iter()
            .find(|v| v["message"].as_str().unwrap().contains(has))
            .unwrap_or_else(|| panic!("no line with {has:?}:\n{text}"))
    };
    assert_eq!(find("config not reloaded")["level"], "WARN");
    assert_eq!(find("ready: control socket")["level"], "INFO");
    let grant = find("grant address=203.0.113.7");
    assert_eq!(grant["target"], "passknock::audit");
    assert!(
        grant["message"].as_str().unwrap().contains("Ann \\\"in\\\" Lyon"),
        "{grant}"
    );
}

/// A daemon with its audit log at `dir/log/audit.log`.
fn audited(ns: &Netns, dir: &Path) -> (Daemon, PathBuf) {
    let audit = dir.join("log/audit.log");
    let text = test_config(dir, "").replace(
        "reconcile-interval = \"1s\"",
        &format!("reconcile-interval = \"1s\"\naudit-log = \"{}\"", audit.display()),
    );
    (Daemon::start(ns, dir, &text), audit)
}

/// Grants one address per number in `range` (each an audit line naming it).
fn grant_each(d: &Daemon, range: std::ops::Range<u8>) {
    for i in range {
        d.ok(&["grant", &format!("203.0.113.{i}"), "--services", "sip"]);
    }
}

/// Which of `files` each `203.0.113.N` grant's audit line is in, and how many times in all.
fn where_granted(files: &[(&str, String)]) -> BTreeMap<u8, Vec<&'static str>> {
    let mut seen: BTreeMap<u8, Vec<&'static str>> = BTreeMap::new();
    for (name, text) in files {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        for l in text.lines() {
            if let Some(rest) = l.split("grant address=203.0.113.").nth(1) {
                let n: u8 = rest.split(' ').next().unwrap().parse().unwrap();
                seen.entry(n).or_default().push(name);
            }
        }
    }
    seen
}

#[test]
fn the_audit_file_is_reopened_on_reload_and_sighup() {
    let ns = Netns::new("auditrot");
    let dir = tempfile::tempdir().unwrap();
    let (d, audit) = audited(&ns, dir.path());
    let moved = |n: u32| dir.path().join(format!("log/audit.log.{n}"));

    grant_each(&d, 1..6);
    // Moved as logrotate's `create` mode does: until the daemon is told, lines go to the moved file.
    std::fs::rename(&audit, moved(1)).unwrap();
    grant_each(&d, 6..9);
    d.ok(&["reload"]);
    assert!(audit.exists(), "reopened at its path");
    grant_each(&d, 9..14);

    std::fs::rename(&audit, moved(2)).unwrap();
    grant_each(&d, 14..16);
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    // SIGHUP is answered on its own time: the reload's own audit line comes after the reopen.
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&audit)
            .is_ok_and(|t| t.contains("config reloaded"))),
        "{}",
        d.log_text()
    );
    grant_each(&d, 16..20);

    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let files = [
        ("1", read(&moved(1))),
        ("2", read(&moved(2))),
        ("new", read(&audit)),
    ];
    let seen = where_granted(&files);
    for n in 1..20u8 {
        let want = match n {
            1..=8 => "1",
            9..=15 => "2",
            _ => "new",
        };
        assert_eq!(
            seen.get(&n).map(Vec::as_slice),
            Some(&[want][..]),
            "grant 203.0.113.{n}: once, in file {want}: {files:?}"
        );
    }
    // Each reload's line is the first in the file it opened.
    assert!(
        files[1].1.lines().next().unwrap().contains("config reloaded"),
        "{}",
        files[1].1
    );
    assert!(
        files[2].1.lines().next().unwrap().contains("config reloaded"),
        "{}",
        files[2].1
    );
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_real_logrotate_cycle_loses_no_audit_line() {
    let ns = Netns::new("logrotate");
    let dir = tempfile::tempdir().unwrap();
    let (d, audit) = audited(&ns, dir.path());
    // The package's /etc/logrotate.d/passknock, pointed at this test's directory and socket.
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{logs}/*.log {{\n    daily\n    rotate 14\n    compress\n    delaycompress\n    missingok\n    \
             notifempty\n    create 0600 root root\n    sharedscripts\n    postrotate\n        \
             {cli} --socket {socket} reload >/dev/null 2>&1 || true\n    endscript\n}}\n",
            logs = audit.parent().unwrap().display(),
            cli = PASSKNOCK,
            socket = d.socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = dir.path().join("logrotate.state");
    let rotate = || {
        let out = Command::new("logrotate")
            .arg("--force")
            .arg("--state")
            .arg(&state)
            .arg(&conf)
            .output()
            .expect("logrotate (Debian: logrotate; tests/run-all.sh installs it)");
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    grant_each(&d, 1..6);
    rotate();
    grant_each(&d, 6..11);
    // A second cycle: yesterday's file is compressed now (delaycompress), today's moved aside.
    rotate();
    grant_each(&d, 11..16);

    let logs = audit.parent().unwrap();
    let zcat = Command::new("zcat")
        .arg(logs.join("audit.log.2.gz"))
        .output()
        .unwrap();
    assert!(
        zcat.status.success(),
        "{:?}",
        std::fs::read_dir(logs).unwrap().collect::<Vec<_>>()
    );
    let files = [
        ("2.gz", String::from_utf8(zcat.stdout).unwrap()),
        ("1", std::fs::read_to_string(logs.join("audit.log.1")).unwrap()),
        ("new", std::fs::read_to_string(&audit).unwrap()),
    ];
    let seen = where_granted(&files);
    for n in 1..16u8 {
        let want = match n {
            1..=5 => "2.gz",
            6..=10 => "1",
            _ => "new",
        };
        assert_eq!(
            seen.get(&n).map(Vec::as_slice),
            Some(&[want][..]),
            "grant 203.0.113.{n}: once, in audit.log.{want}: {files:?}"
        );
    }
    assert_eq!(
        std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The action file's `[Definition]` and `[Init]` entries, continuation lines joined with
/// newlines, `%%` unescaped, and from a ` ;` on a comment — as fail2ban's config reader hands
/// them to the shell.
fn fail2ban_action(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let line = line.split(" ;").next().unwrap();
        if line.starts_with('#') || line.starts_with('[') || line.trim().is_empty() {
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let key = last.as_ref().expect("a continuation follows a key");
            let v = out.get_mut(key).unwrap();
            v.push('\n');
            v.push_str(line.trim());
            continue;
        }
        let (k, v) = line.split_once('=').expect("key = value");
        out.insert(k.trim().to_string(), v.trim().to_string());
        last = Some(k.trim().to_string());
    }
    for v in out.values_mut() {
        *v = v.replace("%%", "%");
    }
    out
}

/// Runs one of the action's commands as fail2ban would: tags substituted, through /bin/sh.
fn run_action(action: &BTreeMap<String, String>, which: &str, tags: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = action[which].clone();
    for (tag, value) in tags.iter().copied().chain(
        action
            .iter()
            .filter(|(k, _)| !k.starts_with("action"))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        cmd = cmd.replace(&format!("<{tag}>"), value);
    }
    assert!(!cmd.contains('<'), "every tag substituted: {cmd}");
    Command::new("/bin/sh").arg("-c").arg(&cmd).output().unwrap()
}

#[test]
fn the_fail2ban_action_bans_and_unbans_through_the_cli() {
    let ns = Netns::new("f2baction");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    let action = fail2ban_action(FAIL2BAN_ACTION);
    let cli = format!("{PASSKNOCK} --socket {}", d.socket.display());
    let bans = || d.json(&["list"])["bans"].as_array().unwrap().clone();

    let out = run_action(
        &action,
        "actionban",
        &[
            ("ip", "203.0.113.66"),
            ("bantime", "600"),
            ("name", "asterisk"),
            ("passknock", &cli),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = bans();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["address"], "203.0.113.66");
    assert_eq!(b[0]["reason"], "fail2ban asterisk");
    let left = (b[0]["expires"].as_i64().unwrap() - b[0]["created"].as_i64().unwrap()) / 1000;
    assert_eq!(left, 600, "{b:?}");
    assert!(d.nft_set("ban_v4").contains("203.0.113.66"));

    // A permanent (-1) or too long ban is banned for ttlmax, not refused (which would ban nobody).
    for (ip, bantime) in [("203.0.113.67", "-1"), ("2001:db8::67", "99999999")] {
        let out = run_action(
            &action,
            "actionban",
            &[
                ("ip", ip),
                ("bantime", bantime),
                ("name", "sshd"),
                ("passknock", &cli),
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(bans().len(), 3);

    let unban = |ip: &str| run_action(&action, "actionunban", &[("ip", ip), ("passknock", &cli)]);
    assert!(unban("203.0.113.66").status.success());
    assert!(!d.nft_set("ban_v4").contains("203.0.113.66"));
    // Already gone (its TTL ran out first): no error for fail2ban to report.
    assert!(unban("203.0.113.66").status.success());
    // The daemon unreachable: an error fail2ban reports.
    let down = format!("{PASSKNOCK} --socket {}/nobody.sock", dir.path().display());
    let out = run_action(
        &action,
        "actionunban",
        &[("ip", "203.0.113.67"), ("passknock", &down)],
    );
    assert!(!out.status.success());
}

#[test]
fn real_fail2ban_bans_through_passknock() {
    let ns = Netns::new("fail2ban");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    // A fail2ban of the test's own: its config, socket and database in the test's directory.
    let f2b = dir.path().join("fail2ban");
    std::fs::create_dir_all(f2b.join("action.d")).unwrap();
    std::fs::create_dir_all(f2b.join("filter.d")).unwrap();
    std::fs::write(f2b.join("action.d/passknock.conf"), FAIL2BAN_ACTION).unwrap();
    std::fs::write(
        f2b.join("filter.d/pktest.conf"),
        "[Definition]\nfailregex = ^login failed from <HOST>$\n",
    )
    .unwrap();
    let (sock, pid, db) = (f2b.join("f2b.sock"), f2b.join("f2b.pid"), f2b.join("f2b.sqlite3"));
    std::fs::write(
        f2b.join("fail2ban.conf"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = {}\n",
            f2b.join("f2b.log").display(),
            sock.display(),
            pid.display(),
            db.display()
        ),
    )
    .unwrap();
    let auth_log = dir.path().join("auth.log");
    std::fs::write(&auth_log, "").unwrap();
    std::fs::write(
        f2b.join("jail.conf"),
        format!(
            "[pktest]\nenabled = true\nfilter = pktest\nlogpath = {log}\nbackend = polling\n\
             maxretry = 3\ndatepattern = {{NONE}}\nfindtime = 10m\nbantime = 1h\n\
             action = passknock[passknock=\"{cli} --socket {socket}\"]\n",
            log = auth_log.display(),
            cli = PASSKNOCK,
            socket = d.socket.display()
        ),
    )
    .unwrap();
    let client = |args: &[&str]| {
        Command::new("fail2ban-client")
            .arg("-c")
            .arg(&f2b)
            .arg("-s")
            .arg(&sock)
            .arg("-p")
            .arg(&pid)
            .args(args)
            .output()
            .expect("fail2ban-client (Debian: fail2ban; tests/run-all.sh installs it)")
    };
    let out = client(&["-x", "start"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    struct Stop<F: Fn()>(F);
    impl<F: Fn()> Drop for Stop<F> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _stop = Stop(|| {
        let _ = client(&["stop"]);
    });
    let f2b_log = || std::fs::read_to_string(f2b.join("f2b.log")).unwrap_or_default();
    let banned = |ip: &str| {
        d.json(&["list"])["bans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["address"] == ip && b["reason"] == "fail2ban pktest")
    };

    // Three failed logins in the log the jail watches: banned in passknock's table, for the jail's
    // bantime.
    let mut f = std::fs::OpenOptions::new().append(true).open(&auth_log).unwrap();
    for _ in 0..3 {
        writeln!(f, "login failed from 203.0.113.50").unwrap();
    }
    drop(f);
    assert!(
        eventually(Duration::from_secs(20), || banned("203.0.113.50")),
        "fail2ban's log:\n{}",
        f2b_log()
    );
    assert!(d.nft_set("ban_v4").contains("203.0.113.50"));
    let ban = d.json(&["list"])["bans"][0].clone();
    let ttl = (ban["expires"].as_i64().unwrap() - ban["created"].as_i64().unwrap()) / 1000;
    assert_eq!(ttl, 3600, "the jail's bantime: {ban}");

    // An admin's unban in fail2ban lifts it in passknock.
    let out = client(&["set", "pktest", "unbanip", "203.0.113.50"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(Duration::from_secs(10), || !banned("203.0.113.50")),
        "fail2ban's log:\n{}",
        f2b_log()
    );
    assert!(!d.nft_set("ban_v4").contains("203.0.113.50"));
    assert!(!f2b_log().contains("Error"), "{}", f2b_log());
}
