//! What an admin meets before and around the daemon: configs that `passknockd --check` must refuse
//! exactly as the start would, output into a closed pipe, the DISA prompts the caller hears.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::daemon::PASSKNOCKD;

/// A config with every path in `dir`, and `extra` appended.
fn config_in(dir: &Path, daemon: &str, extra: &str) -> String {
    format!(
        "[daemon]\nstore = \"{d}/state/store.db\"\ncontrol-socket = \"{d}/run/control.sock\"\n{daemon}\n\
         [services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n\n[services.rtp]\nports = [\"udp/10000-20000\"]\n{extra}\n",
        d = dir.display()
    )
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn check(config: &Path) -> Output {
    Command::new(PASSKNOCKD)
        .arg("--check")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn overlapping_services_fail_the_check_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, shared, other) in [
        ("[services.dup]\nports = [\"udp/5060\"]\n", "udp/5060", "sip"),
        (
            "[services.dup]\nports = [\"udp/15000-15010\"]\n",
            "udp/15000-15010",
            "rtp",
        ),
    ] {
        let cfg = dir.path().join("passknock.toml");
        write(&cfg, &config_in(dir.path(), "", extra), 0o600);
        let out = check(&cfg);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{extra}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            e.contains("services.dup.ports")
                && e.contains(&format!("{shared} is in service dup"))
                && e.contains(&format!("service {other} ("))
                && e.contains("line"),
            "{e}"
        );
    }
    // The shipped example has no overlap.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/passknock.toml");
    let out = check(&example);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
