//! The install script: puts everything in place, never overwrites a config, uninstalls cleanly.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn install(dest: &Path, arg: &str) -> String {
    let built = Path::new(env!("CARGO_BIN_EXE_passknockd")).parent().unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/install.sh"))
        .arg(arg)
        .env("DESTDIR", dest)
        .env("BUILT", built)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn installs_keeps_the_config_and_uninstalls() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    install(d, "--no-build");
    for f in ["usr/local/bin/passknockd", "usr/local/bin/passknock"] {
        assert_eq!(mode(&d.join(f)), 0o755, "{f}");
    }
    let config = d.join("etc/passknock/passknock.toml");
    assert_eq!(mode(&config), 0o600, "the config may hold secrets");
    assert_eq!(mode(&d.join("etc/passknock")), 0o700);
    assert!(
        d.join("usr/local/share/passknock/passknock.conf").exists(),
        "the dialplan file"
    );
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/passknockd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecStart=/usr/local/bin/passknockd"));
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN") && unit.contains("ProtectSystem=strict"));
    // The installed binary runs and accepts the installed config.
    let out = Command::new(d.join("usr/local/bin/passknockd"))
        .args(["--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // An upgrade keeps the admin's config.
    std::fs::write(&config, "# mine\n[services.sip]\nports = [\"udp/5060\"]\n").unwrap();
    let out = install(d, "--no-build");
    assert!(out.contains("kept your config"), "{out}");
    assert!(std::fs::read_to_string(&config).unwrap().starts_with("# mine"));

    let out = install(d, "--uninstall");
    assert!(out.contains("kept"), "{out}");
    assert!(!d.join("usr/local/bin/passknockd").exists());
    assert!(!d.join("etc/systemd/system/passknockd.service").exists());
    assert!(config.exists(), "uninstall keeps config and state");
}
