//! What an admin meets before and around the daemon: configs that `passknockd --check` must refuse
//! exactly as the start would, output into a closed pipe, the DISA prompts the caller hears.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::daemon::{start_refused, test_config, Daemon, PASSKNOCK, PASSKNOCKD};
use support::netns::Netns;

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

/// The `Error: …` line a failed passknockd printed.
fn error_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("no error line in: {}", String::from_utf8_lossy(&out.stderr)))
        .to_string()
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

#[test]
fn check_refuses_what_the_start_refuses_with_the_same_message() {
    let ns = Netns::new("precheck");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = "ab".repeat(32) + "\n";
    write(&d.join("ami-open.secret"), "pw\n", 0o644);
    write(&d.join("ami.secret"), "pw\n", 0o600);
    write(&d.join("disa-open.key"), &key, 0o644);
    write(&d.join("knock-open.secret"), &key, 0o644);
    write(&d.join("knock.secret"), &key, 0o600);
    write(&d.join("a-file"), "", 0o600);
    std::fs::create_dir(d.join("a-dir")).unwrap();
    let ami = |f: &str| format!("[ami]\nenabled = true\nsecret-file = \"{}/{f}\"\n", d.display());
    let spa = |f: &str| {
        format!(
            "[knock.profiles.laptop]\nmode = \"spa\"\nsecret-file = \"{}/{f}\"\n",
            d.display()
        )
    };
    let cases = [
        ("a 0644 AMI secret", "", ami("ami-open.secret"), "chmod 600"),
        (
            "a 0644 DISA key",
            "",
            format!(
                "[disa]\nenabled = true\nkey-file = \"{}/disa-open.key\"\n",
                d.display()
            ),
            "0600",
        ),
        ("a 0644 knock secret", "", spa("knock-open.secret"), "chmod 600"),
        (
            "a store under a file",
            &*format!("store = \"{}/a-file/store.db\"", d.display()),
            String::new(),
            "daemon.store",
        ),
        (
            "a control socket under a file",
            &*format!("control-socket = \"{}/a-file/control.sock\"", d.display()),
            String::new(),
            "daemon.control-socket",
        ),
        (
            "a control socket path too long to bind",
            &*format!(
                "control-socket = \"{}/{}/control.sock\"",
                d.display(),
                "x".repeat(100)
            ),
            String::new(),
            "daemon.control-socket",
        ),
        (
            "an audit log that is a directory",
            &*format!("audit-log = \"{}/a-dir\"", d.display()),
            String::new(),
            "daemon.audit-log",
        ),
    ];
    for (i, (what, daemon, extra, says)) in cases.iter().enumerate() {
        // A [daemon] key replaces the default line of the same name.
        let mut text = config_in(d, "", extra);
        if let Some((key, _)) = daemon.split_once(" = ") {
            let keep: Vec<&str> = text.lines().filter(|l| !l.starts_with(key)).collect();
            text = keep
                .join("\n")
                .replacen("[daemon]", &format!("[daemon]\n{daemon}"), 1);
        }
        let cfg = d.join(format!("case{i}.toml"));
        write(&cfg, &text, 0o600);
        let checked = check(&cfg);
        assert!(
            !checked.status.success(),
            "--check passed {what}: {}",
            String::from_utf8_lossy(&checked.stdout)
        );
        let started = start_refused(&ns, &cfg);
        let (c, s) = (error_line(&checked), error_line(&started));
        assert_eq!(c, s, "{what}: --check and the start differ");
        assert!(c.contains(says), "{what}: {c}");
    }

    // A good config passes, and checking it creates nothing: the key, the store and the audit log
    // are made by the start.
    let text = config_in(
        d,
        &format!("audit-log = \"{}/log/audit.log\"", d.display()),
        &format!(
            "{}{}[disa]\nenabled = true\nkey-file = \"{}/keys/disa.key\"\n",
            ami("ami.secret"),
            spa("knock.secret"),
            d.display()
        ),
    );
    let cfg = d.join("good.toml");
    write(&cfg, &text, 0o600);
    let before = std::fs::read_dir(d).unwrap().count();
    let out = check(&cfg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("config ok"));
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        before,
        "--check wrote something"
    );
}

/// A pipe whose reading end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { libc::close(fds[0]) };
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

/// Grants 800 addresses over the control socket, each with a long note, so `list` prints far
/// more than a pipe holds. Four connections at once, so the engine batches them.
fn many_grants(socket: &Path) {
    let note = "n".repeat(190);
    let workers: Vec<_> = (0..4u16)
        .map(|t| {
            let (socket, note) = (socket.to_path_buf(), note.clone());
            std::thread::spawn(move || {
                let s = UnixStream::connect(socket).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                for i in 0..200u16 {
                    let req = format!(
                        "{{\"op\":\"grant\",\"address\":\"198.18.{t}.{}\",\"services\":[\"sip\"],\"ttl\":\"1h\",\"note\":\"{note}\"}}\n",
                        i + 1
                    );
                    w.write_all(req.as_bytes()).unwrap();
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    assert!(line.contains("\"granted\""), "{line}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let ns = Netns::new("pipe");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&ns, dir.path(), &test_config(dir.path(), ""));
    many_grants(&d.socket);
    let config = d.config.to_str().unwrap().to_string();
    let socket = d.socket.to_str().unwrap().to_string();
    // Every command that prints, into a pipe nobody reads any more.
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["contacts"],
        vec!["calls"],
        vec!["attempts"],
        vec!["account", "list"],
        vec!["grant", "198.51.100.99", "--services", "sip"],
        vec!["reload"],
        vec![
            "--config",
            &config,
            "knock-profile",
            "add",
            "extra",
            "--mode",
            "static",
        ],
    ] {
        let out = Command::new(PASSKNOCK)
            .args(["--socket", &socket])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && e.is_empty(),
            "passknock {}: {} {e}",
            args.join(" "),
            out.status
        );
    }
    assert!(d.ok(&["list"]).contains("198.51.100.99"), "the grant was made");
    // As an admin types it: the reader stops after one line of a long listing.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("set -o pipefail; {PASSKNOCK} --socket {socket} list | head -1"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ADDRESS"));
    // A daemon that is not there is still an error.
    let out = Command::new(PASSKNOCK)
        .args(["--socket", "/nonexistent/control.sock", "list"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach passknockd"));
}

/// Resolves `path` inside the chroot at `root`, following absolute links as the chroot sees them.
fn in_chroot(root: &Path, path: &str) -> PathBuf {
    let mut p = root.join(path.trim_start_matches('/'));
    for _ in 0..8 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = root.join(t.strip_prefix("/").unwrap()),
            Ok(t) => p = p.parent().unwrap().join(t),
            Err(_) => break,
        }
    }
    p
}

/// `name: description` lines of Asterisk's core sound list.
fn sound_descriptions(root: &Path) -> std::collections::HashMap<String, String> {
    let gz = in_chroot(
        root,
        "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz",
    );
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(out.status.success(), "cannot read {}", gz.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_lowercase()))
        .collect()
}

#[test]
fn default_prompts_exist_in_asterisks_sounds_and_ask_for_an_ip_address() {
    let root = support::chroot::root();
    let en = in_chroot(root, "/usr/share/asterisk/sounds/en");
    let p = agi::disa::Prompts::default();
    let mut all: Vec<&String> = [
        &p.passcode,
        &p.retry,
        &p.enter_address,
        &p.you_entered,
        &p.confirm,
        &p.attempt_found,
        &p.attempt_unclear,
        &p.connected,
        &p.not_connected,
        &p.refused_address,
        &p.no_address,
        &p.granted,
        &p.goodbye,
    ]
    .into_iter()
    .flatten()
    .collect();
    let goes_on = agi::disa::ENTRY_GOES_ON.to_string();
    all.extend([&p.dot, &p.hours, &p.minutes, &goes_on]);
    for name in all {
        let file = en.join(name);
        let (dir, stem) = (file.parent().unwrap(), file.file_name().unwrap());
        let found = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().file_stem() == Some(stem) && e.path().extension().is_some())
            })
            .unwrap_or(false);
        assert!(found, "prompt `{name}` is not among {}", en.display());
    }
    let said = sound_descriptions(root);
    let heard: Vec<&str> = p
        .enter_address
        .iter()
        .map(|f| {
            said.get(f)
                .unwrap_or_else(|| panic!("{f} is not described"))
                .as_str()
        })
        .collect();
    let heard = heard.join(" ");
    // "Your I P; press star for dot, then press pound" — not "the number you wish to call".
    assert!(
        heard.contains("i p") && heard.contains("star") && heard.contains("dot"),
        "{heard}"
    );
    assert!(!heard.contains("number") && !heard.contains("call"), "{heard}");
    // The attempted mode and "your phone is connected" say what they mean with stock sounds.
    let say = |files: &[String]| -> String {
        files
            .iter()
            .map(|f| said.get(f).map_or("?", |d| d.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    assert_eq!(say(&p.attempt_found), "your. i p is.");
    assert_eq!(say(&p.attempt_unclear), "your. i p is unavailable");
    assert_eq!(say(&p.connected), "your. telephone number. is. activated.");
    assert_eq!(say(&p.not_connected), "your. telephone number. is unavailable");
}
