//! `passknock doctor` against a real installation: Asterisk 22 with the shipped dialplan, the
//! real daemon with DISA and AMI on, nftables in the PBX's namespace. A healthy setup passes every
//! check; then each thing an admin gets wrong is broken for real, and the doctor names each one
//! with a fix.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::asterisk::{AMI_SECRET, AMI_USER};
use support::daemon::{short_socket, Daemon, PASSKNOCK};
use support::env::Env;

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The daemon's config: Asterisk's SIP and RTP ports as services, DISA on the dialplan's FastAGI
/// port, AMI as the daemon's user. `edit` rewrites it for the doctor's broken copies.
fn config(dir: &Path, socket: &Path, trusted: &str) -> String {
    format!(
        r#"
[daemon]
store = "{dir}/store.db"
control-socket = "{sock}"
reconcile-interval = "1h"

[grants]
default-services = ["sip"]

[firewall]
trusted = ["127.0.0.0/8", "::1/128", "{trusted}/32"]

[services.sip]
ports = ["udp/5060"]

[services.rtp]
ports = ["udp/10000-10999"]

[agi]
listen = "127.0.0.1:4573"

[disa]
enabled = true
key-file = "{dir}/disa.key"

[ami]
enabled = true
username = "{AMI_USER}"
secret-file = "{dir}/ami.secret"
"#,
        dir = dir.display(),
        sock = socket.display(),
    )
}

/// Runs the doctor in the PBX's namespace, as an admin logged in over SSH from `from`.
fn doctor(env: &Env, config: &Path, from: &str, json: bool) -> Output {
    let mut c = env.pbx().command(PASSKNOCK);
    c.arg("--config").arg(config).arg("doctor");
    if json {
        c.arg("--json");
    }
    c.env("SSH_CONNECTION", format!("{from} 50022 192.0.2.1 22"))
        .env_remove("NO_COLOR")
        .output()
        .expect("run passknock doctor")
}

/// name → (verdict, detail, fix)
fn checks(out: &Output) -> Vec<(String, String, String, String)> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("name"), s("verdict"), s("detail"), s("fix"))
        })
        .collect()
}

fn find<'a>(all: &'a [(String, String, String, String)], name: &str) -> &'a (String, String, String, String) {
    all.iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no check named {name}: {all:?}"))
}

/// Asserts `name` failed, its detail says `says`, and it comes with a fix.
fn failed(all: &[(String, String, String, String)], name: &str, says: &str) {
    let c = find(all, name);
    assert_eq!(c.1, "fail", "{name} should fail: {c:?}");
    assert!(c.2.contains(says), "{name}: {:?} does not say {says:?}", c.2);
    assert!(!c.3.is_empty(), "{name} fails with no fix");
}

#[test]
fn doctor_passes_a_healthy_setup_and_names_every_broken_part() {
    let mut env = Env::new();
    let dir = env.daemon_dir();
    let socket = short_socket();
    let trusted = "198.51.100.20";
    private(&dir.join("ami.secret"), &format!("{AMI_SECRET}\n"));
    env.daemon = Some(Daemon::start(env.pbx(), &dir, &config(&dir, &socket, trusted)));
    let d = env.daemon.as_ref().unwrap();
    d.ok(&["account", "add", "ann", "--callers", "5550100,5550101"]);

    // Healthy: every check passes, exit status 0, and piped output has no colour codes.
    let out = doctor(&env, &d.config, trusted, true);
    let all = checks(&out);
    assert!(out.status.success(), "healthy setup: {all:#?}");
    for c in &all {
        assert_eq!(c.1, "ok", "healthy setup: {c:?}\n{all:#?}");
    }
    assert_eq!(all.len(), 11, "{all:#?}");
    // The odds for the default limits with this one account and its two owner numbers.
    let odds = &find(&all, "guessing").2;
    assert!(
        odds.contains("1 account(s) with 12-digit passcodes, 2 owner number(s)")
            && odds.contains("at most 30 wrong passcodes an hour")
            && odds.contains("P(any guess succeeds within a year) <= 6.1e-7"),
        "{odds}"
    );
    let text = doctor(&env, &d.config, trusted, false);
    let text_out = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{text_out}");
    assert!(!text_out.contains('\x1b'), "colour in piped output: {text_out}");
    assert!(text_out.contains("11 checks: 11 ok"), "{text_out}");

    // Break the real thing where it lives: the DISA key readable by all, the table gone from nft,
    // the context unloaded from Asterisk.
    std::fs::set_permissions(dir.join("disa.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let del = d.nft(&["delete", "table", "inet", "passknock"]);
    assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
    let removed = env.cli("dialplan remove context passknock-disa");
    assert!(
        !env.cli("dialplan show passknock-disa").contains("AGI("),
        "the context is still loaded: {removed}"
    );
    // And what a config can get wrong: nft not where it says, a manager user that reads too
    // little, a FastAGI port nobody serves, Asterisk's SIP port in no service; and the admin's
    // address is neither trusted nor granted.
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        config(&dir, &socket, trusted)
            .replace("[firewall]\n", "[firewall]\nnft = \"/nonexistent/sbin/nft\"\n")
            .replace(&format!("username = \"{AMI_USER}\""), "username = \"narrow\"")
            .replace("127.0.0.1:4573", "127.0.0.1:4999")
            .replace("ports = [\"udp/5060\"]", "ports = [\"tcp/5061\"]"),
    )
    .unwrap();
    let out = doctor(&env, &broken, "203.0.113.99", true);
    let all = checks(&out);
    assert_eq!(out.status.code(), Some(1), "{all:#?}");
    assert_eq!(find(&all, "config").1, "ok");
    assert_eq!(find(&all, "ami").1, "ok", "narrow may log in: {all:#?}");
    failed(&all, "secrets", "disa.key");
    failed(&all, "nft", "/nonexistent/sbin/nft");
    failed(&all, "table", "not in nft");
    failed(&all, "ami-permissions", "security");
    failed(&all, "dialplan", "not loaded");
    failed(&all, "fastagi", "127.0.0.1:4999");
    failed(&all, "ports", "udp/5060");
    failed(&all, "address", "203.0.113.99");
    let ports = find(&all, "ports");
    assert!(ports.3.contains("udp/5060"), "the fix names the port: {ports:?}");
    let text = doctor(&env, &broken, "203.0.113.99", false);
    let text_out = String::from_utf8_lossy(&text.stdout);
    assert!(text_out.contains("8 failed"), "{text_out}");
    assert!(
        String::from_utf8_lossy(&text.stderr).contains("8 check(s) failed"),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );

    // A secret Asterisk does not know: the login itself fails, and what needs it is skipped.
    let wrong = dir.join("wrong.secret");
    private(&wrong, "not-the-secret\n");
    let wrong_conf = dir.join("wrong-secret.toml");
    std::fs::write(
        &wrong_conf,
        config(&dir, &socket, trusted).replace(
            &format!("{}/ami.secret", dir.display()),
            &wrong.display().to_string(),
        ),
    )
    .unwrap();
    let all = checks(&doctor(&env, &wrong_conf, trusted, true));
    failed(&all, "ami", "Authentication failed");
    assert_eq!(find(&all, "ami-permissions").1, "skip");
    assert_eq!(find(&all, "dialplan").1, "skip");

    // A config that does not parse: said with its line, the rest skipped, exit 1.
    let garbage = dir.join("garbage.toml");
    std::fs::write(&garbage, "[daemon]\nstore = \n").unwrap();
    let out = doctor(&env, &garbage, trusted, true);
    let all = checks(&out);
    assert_eq!(out.status.code(), Some(1));
    failed(&all, "config", "line 2");
    assert!(all.iter().skip(1).all(|c| c.1 == "skip"), "{all:#?}");
}
