//! A wall-clock step against the real daemon and real nft: the daemon's wall clock (and only
//! its, through libfaketime) is stepped 3 h back and then forward, and a 1 h grant's kernel
//! timeout never grows past the hour it was given.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::daemon::{eventually, test_config, Daemon};
use support::netns::Netns;

/// Debian's libfaketime (package `faketime`), wherever the multiarch directory is.
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing: apt-get install faketime (tests/run-all.sh does)")
}

/// What libfaketime adds to the daemon's wall clock from now on: "+0", "-3h", "+3h".
fn set_offset(file: &Path, offset: &str) {
    // Written whole and renamed, so the daemon never reads half a line.
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, format!("{offset}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// (timeout, expires) in seconds of `addr`'s element in `set`, as the kernel has it.
fn kernel_timeout(d: &Daemon, set: &str, addr: &str) -> Option<(i64, i64)> {
    let out = d.nft(&["-j", "list", "set", "inet", "passknock", set]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"]
        .as_array()?
        .iter()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .map(|e| &e["elem"])
        .find(|e| e["val"] == addr)
        .map(|e| {
            (
                e["timeout"].as_i64().unwrap_or(0),
                e["expires"].as_i64().unwrap_or(0),
            )
        })
}

/// Waits until the daemon has logged `n` more reconciles than it had at `since`.
fn reconciles_after(d: &Daemon, since: usize, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || {
            d.log_text().matches("reconcile:").count() >= since + n
        }),
        "no reconcile ran:\n{}",
        d.log_text()
    );
}

#[test]
fn a_wall_clock_step_never_lengthens_a_grant_in_the_kernel() {
    let lib = libfaketime();
    let ns = Netns::new("clock");
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    set_offset(&offset, "+0");
    let lib = lib.to_string_lossy();
    let offset_path = offset.to_string_lossy();
    let d = Daemon::start_with_env(
        &ns,
        dir.path(),
        &test_config(dir.path(), ""),
        &[
            ("LD_PRELOAD", &lib),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            // Re-read the file on every call, so a step lands while the daemon runs.
            ("FAKETIME_NO_CACHE", "1"),
            // The monotonic clock stays true: it is what a step is measured against.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );

    d.ok(&["grant", "203.0.113.7", "--services", "sip", "--ttl", "1h"]);
    let (timeout, _) = kernel_timeout(&d, "allow_sip_v4", "203.0.113.7").expect("element in the kernel");
    assert_eq!(timeout, 3600);

    // Back 3 h: the store still says the grant ends at its old wall-clock time, 4 h away now.
    let seen = d.log_text().matches("reconcile:").count();
    set_offset(&offset, "-3h");
    reconciles_after(&d, seen, 2);
    let (timeout, expires) = kernel_timeout(&d, "allow_sip_v4", "203.0.113.7").expect("still granted");
    assert!(
        timeout <= 3600 && expires <= 3600,
        "a 1 h grant has timeout {timeout}s, expires {expires}s after a 3 h step back"
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("the wall clock was stepped back by 3h").count(),
        1,
        "the step is logged once:\n{log}"
    );

    // A grant made after the step is measured from it, and keeps its whole hour.
    d.ok(&["grant", "203.0.113.8", "--services", "sip", "--ttl", "1h"]);
    let (timeout, _) = kernel_timeout(&d, "allow_sip_v4", "203.0.113.8").expect("new grant in the kernel");
    assert!((3590..=3600).contains(&timeout), "new grant's timeout {timeout}s");

    // Forward 3 h past the true time: both grants are over on the wall clock and leave the
    // kernel at once, without waiting for their timeouts.
    set_offset(&offset, "+3h");
    assert!(
        eventually(Duration::from_secs(10), || {
            kernel_timeout(&d, "allow_sip_v4", "203.0.113.7").is_none()
                && kernel_timeout(&d, "allow_sip_v4", "203.0.113.8").is_none()
        }),
        "grants still in the kernel after a step forward:\n{}",
        d.log_text()
    );
    assert!(d.log_text().contains("the wall clock jumped forward by 6h"));
}
