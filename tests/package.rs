//! The Debian package, end to end: built from this tree (release), checked as a file, installed
//! with apt into a clean Debian root, the daemon started the way its unit starts it, a grant made,
//! upgraded to a newer version with the grant live, removed and purged.
//!
//! The root is a minbase Debian of the host's suite, cached as a tarball by
//! `tests/harness/build-debian-root.sh` (about two minutes, once per machine) and unpacked fresh
//! for each run. There is no running systemd here, so the unit is checked with
//! `systemd-analyze verify` and its settings that matter to the daemon are applied by hand:
//! ExecStart as written, only CAP_NET_ADMIN in the bounding set, no new privileges, umask 0077,
//! the runtime directory, and the notify socket, whose READY=1 the test waits for.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use passknock::config::Config;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The address the test grants; it must survive the upgrade.
const GRANTED: &str = "203.0.113.7";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `cmd`, fails the test with its output unless it succeeds, returns its stdout.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds a package with dist/deb/build.sh and returns its path.
fn build_deb(args: &[&str], version: Option<&str>) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(REPO).join("dist/deb/build.sh")).args(args);
    if let Some(v) = version {
        cmd.env("VERSION", v);
    }
    let out = run("dist/deb/build.sh", &mut cmd);
    let path = Path::new(REPO).join(out.lines().last().expect("build.sh printed the .deb's path"));
    assert!(path.is_file(), "{} was not written", path.display());
    path
}

fn deb_field(deb: &Path, field: &str) -> String {
    run(
        "dpkg-deb -f",
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
    )
    .trim()
    .to_string()
}

/// Every key the daemon's config structs know, in kebab-case as the file spells them, with the
/// sections they sit in: read from the structs themselves (serde_json keeps the unset options as
/// null), so a key added to src/config/ without a line in passknock.toml(5) fails this test.
fn config_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = format!(
        "{}\n[knock.profiles.a]\nmode = \"spa\"\nsecret-file = \"/x\"\n\
         [knock.profiles.b]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/8000\"]\n",
        passknock::base::defaults::EXAMPLE_CONFIG
    );
    let config = Config::parse(&text, "test").unwrap();
    let value = serde_json::to_value(&config).unwrap();
    let (mut sections, mut keys) = (BTreeSet::new(), BTreeSet::new());
    fn walk(v: &serde_json::Value, path: &str, sections: &mut BTreeSet<String>, keys: &mut BTreeSet<String>) {
        let Some(map) = v.as_object() else { return };
        for (k, child) in map {
            // Names an admin chooses (services, profiles) are not keys; what is under them is.
            let named = matches!(path, "services" | "knock.profiles");
            let here = match (path, named) {
                ("", _) => k.clone(),
                (_, true) => format!("{path}.NAME"),
                _ => format!("{path}.{k}"),
            };
            if child.is_object() && !matches!(k.as_str(), "ports") {
                sections.insert(here.clone());
                walk(child, &here, sections, keys);
            } else {
                keys.insert(k.clone());
            }
        }
    }
    walk(&value, "", &mut sections, &mut keys);
    sections.remove("knock.profiles");
    sections.remove("services");
    (sections, keys)
}

/// Renders a man page as man-db does, failing on any groff warning.
fn render_man(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "200")
        .env("MAN_DISABLE_SECCOMP", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man -l {} warns or fails:\n{stderr}",
        page.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh Debian root, in a network namespace of its own, with the daemon maybe running in it.
struct Root {
    dir: tempfile::TempDir,
    netns: String,
    daemon: Option<Child>,
}

impl Root {
    fn new(tarball: &Path) -> Root {
        std::fs::create_dir_all("/var/tmp/passknock").unwrap();
        // A killed run leaves its root behind (300 MB): any older than a run could last goes.
        for e in std::fs::read_dir("/var/tmp/passknock").unwrap().flatten() {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3 * 3600));
            if stale && e.file_name().to_string_lossy().starts_with("deb-root-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("deb-root-")
            .tempdir_in("/var/tmp/passknock")
            .unwrap();
        run(
            "unpack the clean root",
            Command::new("tar")
                .arg("-C")
                .arg(dir.path())
                .args(["--numeric-owner", "-xf"])
                .arg(tarball),
        );
        let netns = format!("pkdeb-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        run("ip netns add", Command::new("ip").args(["netns", "add", &netns]));
        run(
            "lo up",
            Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]),
        );
        Root {
            dir,
            netns,
            daemon: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    /// `argv` inside the root and its namespace, with a clean environment as a service manager
    /// or dpkg's front end gives it.
    /// `ip netns exec` gives each command a mount namespace of its own, so the root's /proc
    /// (apt needs it) is mounted there and goes when the command ends, never on the host.
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "sh", "-c"])
            .arg(r#"mount -t proc proc "$0/proc" && exec chroot "$0" "$@""#)
            .arg(self.dir.path())
            .args(["env", "-i", PATH, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"])
            .args(argv);
        c
    }

    fn run(&self, what: &str, argv: &[&str]) -> String {
        run(what, &mut self.cmd(argv))
    }

    fn nft(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts passknockd as its installed unit would: ExecStart as written, CAP_NET_ADMIN only,
    /// no new privileges, UMask=0077, RuntimeDirectory=passknock (0700), and Type=notify: returns
    /// once the daemon said READY=1.
    fn start_daemon(&mut self) {
        let unit = std::fs::read_to_string(self.path("/lib/systemd/system/passknockd.service")).unwrap();
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("the unit has an ExecStart");
        let argv: Vec<&str> = exec.split_whitespace().collect();
        std::fs::create_dir_all(self.path("/run/passknock")).unwrap();
        std::fs::set_permissions(self.path("/run/passknock"), PermissionsExt::from_mode(0o700)).unwrap();
        let sock_path = self.path("/run/test-notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let mut cmd = self.cmd(&["NOTIFY_SOCKET=/run/test-notify.sock", "/bin/sh", "-c"]);
        cmd.arg(r#"umask 0077; exec setpriv --bounding-set -all,+net_admin --inh-caps -all --no-new-privs -- "$@""#)
            .arg("sh")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.daemon = Some(cmd.spawn().unwrap());
        let mut buf = [0u8; 512];
        let ready = sock
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        let _ = std::fs::remove_file(&sock_path);
        match ready {
            Ok(msg) if msg.contains("READY=1") => {}
            other => panic!(
                "passknockd did not say READY=1 ({other:?}); its log:\n{}",
                self.daemon_log()
            ),
        }
    }

    /// Stops the daemon with SIGTERM, as `systemctl stop` does, and waits for it to exit.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        // `ip netns exec` execs sh, chroot, env, sh and setpriv in turn: the pid is the daemon's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "passknockd ignored SIGTERM for 20s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("package: {what} took {:.1}s", start.elapsed().as_secs_f64());
    out
}

/// The package as a file: control fields, conffiles, paths, owners and modes.
fn check_deb_file(deb: &Path) {
    assert_eq!(deb_field(deb, "Package"), "passknock");
    assert_eq!(deb_field(deb, "Section"), "net");
    assert_eq!(deb_field(deb, "Suggests"), "asterisk");
    let depends = deb_field(deb, "Depends");
    assert!(
        depends.contains("libc6 (>= ") && depends.contains("nftables"),
        "Depends: {depends}"
    );
    assert!(
        !deb_field(deb, "Description").is_empty() && deb_field(deb, "Maintainer").contains('<'),
        "a real Description and Maintainer"
    );
    let conffiles = run(
        "dpkg-deb -I conffiles",
        Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"),
    );
    assert_eq!(
        conffiles.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from(["/etc/passknock/passknock.toml", "/etc/logrotate.d/passknock"])
    );

    let listing = run("dpkg-deb -c", Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut entries = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "root/root", "owned by root: {line}");
        let path = f[5].trim_start_matches('.').trim_end_matches('/');
        entries.insert(path.to_string(), f[0].to_string());
    }
    let want = [
        ("/usr/bin/passknockd", "-rwxr-xr-x"),
        ("/usr/bin/passknock", "-rwxr-xr-x"),
        ("/usr/bin/passknock-knock", "-rwxr-xr-x"),
        ("/lib/systemd/system/passknockd.service", "-rw-r--r--"),
        ("/etc/passknock", "drwx------"),
        ("/etc/passknock/passknock.toml", "-rw-------"),
        ("/etc/logrotate.d/passknock", "-rw-r--r--"),
        ("/usr/share/passknock/passknock.conf", "-rw-r--r--"),
        ("/usr/share/doc/passknock/copyright", "-rw-r--r--"),
        ("/usr/share/man/man8/passknockd.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/passknock.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/passknock-grant.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man8/passknock-account-add.8.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/passknock-knock.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man5/passknock.toml.5.gz", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/passknock", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/passknock-knock",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_passknock", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/passknock.fish",
            "-rw-r--r--",
        ),
    ];
    for (path, mode) in want {
        assert_eq!(
            entries.get(path).map(String::as_str),
            Some(mode),
            "{path} in the package"
        );
    }
    let secret_like: Vec<_> = entries
        .iter()
        .filter(|(p, m)| p.starts_with("/etc/passknock/") && !m.starts_with("-rw-------"))
        .collect();
    assert!(
        secret_like.is_empty(),
        "loose modes under /etc/passknock: {secret_like:?}"
    );
}

/// The pages render without a groff warning, name their subcommands' pages, and passknock.toml(5)
/// documents every section and key the config structs have.
fn check_man_pages(tree: &Path) {
    let mut pages = Vec::new();
    for section in ["man1", "man5", "man8"] {
        for e in std::fs::read_dir(tree.join("usr/share/man").join(section)).unwrap() {
            pages.push(e.unwrap().path());
        }
    }
    assert!(pages.len() > 10, "pages: {pages:?}");
    for page in &pages {
        let text = render_man(page);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{}:\n{text}",
            page.display()
        );
    }
    let main = render_man(&tree.join("usr/share/man/man8/passknock.8.gz"));
    for sub in [
        "passknock-grant(8)",
        "passknock-doctor(8)",
        "passknock-account(8)",
    ] {
        assert!(main.contains(sub), "passknock(8) names {sub}");
    }
    let daemon = render_man(&tree.join("usr/share/man/man8/passknockd.8.gz"));
    assert!(daemon.contains("--config") && daemon.contains("SIGHUP") && daemon.contains("FILES"));

    let toml5 = render_man(&tree.join("usr/share/man/man5/passknock.toml.5.gz"));
    let (sections, keys) = config_keys();
    for s in &sections {
        assert!(
            toml5.lines().any(|l| l.trim() == format!("[{s}]")),
            "passknock.toml(5) has no [{s}] section"
        );
    }
    for k in &keys {
        let documented = toml5.lines().any(|l| {
            let t = l.trim_start();
            t.strip_prefix(k.as_str())
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with(','))
                || l.contains(&format!(", {k} "))
        });
        assert!(documented, "passknock.toml(5) does not document the key {k}");
    }
}

#[test]
fn the_deb_installs_upgrades_with_a_grant_live_and_purges() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the package test needs root (chroot, netns)"
    );

    let deb1 = timed("release build and package", || build_deb(&[], None));
    let v1 = deb_field(&deb1, "Version");
    let v2 = format!("{v1}+upgrade1");
    let deb2 = build_deb(&["--no-build"], Some(&v2));
    eprintln!(
        "package: {} is {} KiB",
        deb1.file_name().unwrap().to_string_lossy(),
        std::fs::metadata(&deb1).unwrap().len() / 1024
    );
    check_deb_file(&deb1);

    let extracted = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb -x",
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb1)
            .arg(extracted.path()),
    );
    check_man_pages(extracted.path());
    let unit =
        std::fs::read_to_string(extracted.path().join("lib/systemd/system/passknockd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/passknockd --config /etc/passknock/passknock.toml"));
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN") && unit.contains("ProtectSystem=strict"));
    if has_tool("logrotate") {
        run(
            "logrotate -d",
            Command::new("logrotate")
                .args(["-d", "-s", "/dev/null"])
                .arg(extracted.path().join("etc/logrotate.d/passknock")),
        );
    }

    let tarball = run(
        "build-debian-root.sh",
        Command::new("bash").arg(Path::new(REPO).join("tests/harness/build-debian-root.sh")),
    );
    let mut root = timed("unpacking a fresh clean root", || {
        Root::new(Path::new(tarball.trim()))
    });
    // Under their own names: apt takes a local .deb's path as given only if it is the archive's
    // canonical name.
    let inside = |deb: &Path| format!("/tmp/{}", deb.file_name().unwrap().to_string_lossy());
    let (in1, in2) = (inside(&deb1), inside(&deb2));
    std::fs::copy(&deb1, root.path(&in1)).unwrap();
    std::fs::copy(&deb2, root.path(&in2)).unwrap();

    // Install as an admin would, with apt: Depends must bring nftables. The namespace has no
    // route anywhere, so apt can only take what the cached root holds.
    let said = timed("apt-get install ./passknock.deb (with nftables)", || {
        root.run(
            "apt-get install",
            &["apt-get", "install", "-y", "--no-install-recommends", &in1],
        )
    });
    assert!(
        said.contains("NOT enabled or started")
            && said.contains("firewall.trusted")
            && said.contains("systemctl enable --now passknockd")
            && said.contains("passknock doctor"),
        "postinst says what to do next:\n{said}"
    );
    let status = root.run(
        "dpkg-query",
        &["dpkg-query", "-W", "-f", "${Status} ${Version}", "passknock"],
    );
    assert_eq!(status, format!("install ok installed {v1}"));
    root.run("nftables came with it", &["dpkg-query", "-W", "nftables"]);
    let conffiles = root.run(
        "dpkg-query",
        &["dpkg-query", "-W", "-f", "${Conffiles}", "passknock"],
    );
    assert!(conffiles.contains("/etc/passknock/passknock.toml"), "{conffiles}");
    for (p, m) in [
        ("/etc/passknock", 0o700),
        ("/etc/passknock/passknock.toml", 0o600),
        ("/var/lib/passknock", 0o700),
        ("/var/log/passknock", 0o700),
        ("/usr/bin/passknockd", 0o755),
    ] {
        assert_eq!(mode(&root.path(p)), m, "{p}");
    }
    assert!(
        !root
            .path("/etc/systemd/system/multi-user.target.wants/passknockd.service")
            .exists(),
        "installing must not enable the service"
    );
    root.run(
        "the packaged config",
        &[
            "passknockd",
            "--check",
            "--config",
            "/etc/passknock/passknock.toml",
        ],
    );
    root.run("the knock client runs", &["passknock-knock", "--version"]);

    // The unit as installed, by the root's own systemd (installed there, not running); man pages
    // are checked above, on the host.
    let verify = root
        .cmd(&[
            "systemd-analyze",
            "verify",
            "--man=no",
            "/lib/systemd/system/passknockd.service",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !said.contains("passknockd.service"),
        "systemd-analyze verify:\n{said}"
    );
    // What the admin does once the config is right; purge must take the link away again.
    root.run(
        "systemctl enable (offline)",
        &["systemctl", "enable", "passknockd.service"],
    );
    let wants = root.path("/etc/systemd/system/multi-user.target.wants/passknockd.service");
    assert!(wants.symlink_metadata().is_ok(), "enabled");

    // The admin's edits: their trunk trusted, the audit log on. An upgrade must keep them.
    let config_path = root.path("/etc/passknock/passknock.toml");
    let edited = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"fc00::/7\",", "\"fc00::/7\", \"192.0.2.0/24\",  # our trunk")
        .replace("# audit-log = ", "audit-log = ");
    let edited = format!("# edited by the admin before the upgrade\n{edited}");
    std::fs::write(&config_path, &edited).unwrap();
    root.run(
        "the edited config",
        &[
            "passknockd",
            "--check",
            "--config",
            "/etc/passknock/passknock.toml",
        ],
    );

    timed("starting passknockd to READY", || root.start_daemon());
    let granted = root.run(
        "passknock grant",
        &[
            "passknock",
            "grant",
            GRANTED,
            "--ttl",
            "2h",
            "--note",
            "before the upgrade",
        ],
    );
    assert!(granted.contains(&format!("granted {GRANTED}")), "{granted}");
    let set = root.nft(&["list", "set", "inet", "passknock", "allow_sip_v4"]);
    assert!(
        String::from_utf8_lossy(&set.stdout).contains(GRANTED),
        "the grant is in nft"
    );
    assert_eq!(mode(&root.path("/var/lib/passknock/passknock.db")), 0o600);

    // The upgrade, with the daemon running and the grant live; dpkg must not ask about the
    // edited conffile (stdin is closed: a prompt would fail it).
    let upgraded = timed("dpkg -i (upgrade)", || {
        root.run("dpkg -i v2", &["dpkg", "-i", &in2])
    });
    let status = root.run(
        "dpkg-query",
        &["dpkg-query", "-W", "-f", "${Status} ${Version}", "passknock"],
    );
    assert_eq!(status, format!("install ok installed {v2}"), "{upgraded}");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        edited,
        "the config was kept"
    );
    assert_eq!(mode(&config_path), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(root.path("/etc/passknock"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".dpkg-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no .dpkg-dist/.dpkg-new beside the config: {leftovers:?}"
    );
    // What `systemctl restart` does on a real box: the new binary, the same store.
    root.stop_daemon();
    root.start_daemon();
    let list = root.run("passknock list", &["passknock", "list", "--json"]);
    assert!(
        list.contains(GRANTED) && list.contains("before the upgrade"),
        "the grant survived the upgrade:\n{list}"
    );
    let set = root.nft(&["list", "set", "inet", "passknock", "allow_sip_v4"]);
    assert!(
        String::from_utf8_lossy(&set.stdout).contains(GRANTED),
        "still in nft"
    );
    let audit = std::fs::read_to_string(root.path("/var/log/passknock/audit.log")).unwrap_or_default();
    assert!(audit.contains(GRANTED), "the audit log has the grant:\n{audit}");

    // Remove keeps config and state; it stops the service (here: by hand, no systemd) and takes
    // the table with it, since nothing would manage it any more.
    root.stop_daemon();
    timed("dpkg -r", || root.run("dpkg -r", &["dpkg", "-r", "passknock"]));
    assert!(!root.path("/usr/bin/passknockd").exists());
    assert!(config_path.exists() && root.path("/var/lib/passknock/passknock.db").exists());
    assert!(
        !root.nft(&["list", "table", "inet", "passknock"]).status.success(),
        "prerm deleted the table"
    );
    timed("dpkg --purge", || {
        root.run("dpkg --purge", &["dpkg", "--purge", "passknock"])
    });
    for gone in [
        "/etc/passknock",
        "/var/lib/passknock",
        "/var/log/passknock",
        "/etc/logrotate.d/passknock",
    ] {
        assert!(!root.path(gone).exists(), "purge removes {gone}");
    }
    assert!(
        wants.symlink_metadata().is_err(),
        "purge removes the enablement link"
    );
    // A purged package is forgotten: dpkg no longer knows the name.
    let known = root.cmd(&["dpkg-query", "-W", "passknock"]).output().unwrap();
    assert!(
        !known.status.success(),
        "dpkg still lists passknock after the purge"
    );
    root.run("nftables stays", &["dpkg-query", "-W", "nftables"]);
}
