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
        ("store (default)", passknock::defaults::STORE_PATH),
        ("control-socket (default)", passknock::defaults::CONTROL_SOCKET),
        ("key-file (default)", passknock::defaults::DISA_KEY_PATH),
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
    let out = Command::new("systemd-analyze")
        .arg("verify")
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
