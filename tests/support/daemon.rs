//! Runs the real `passknockd` in a network namespace with a config of the test's own, and the
//! real `passknock` CLI against it. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::netns::Netns;

pub const PASSKNOCKD: &str = env!("CARGO_BIN_EXE_passknockd");
pub const PASSKNOCK: &str = env!("CARGO_BIN_EXE_passknock");

/// A control socket path short enough for a Unix socket (108 bytes), unique to this test.
pub fn short_socket() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    PathBuf::from(format!("/tmp/pk{}-{n}.sock", std::process::id()))
}

/// A config for tests: the example's services, a fast reconcile, paths in `dir`.
pub fn test_config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[daemon]
store = "{dir}/store.db"
control-socket = "{dir}/control.sock"
reconcile-interval = "1s"

[grants]
ttl-default = "2h"
ttl-max = "24h"
default-services = ["sip", "rtp"]

[services.sip]
ports = ["udp/5060", "tcp/5060", "tcp/5061"]

[services.rtp]
ports = ["udp/10000-20000"]

[services.iax]
ports = ["udp/4569"]
{extra}
"#,
        dir = dir.display()
    )
}

/// [`test_config`] for benches: the control socket at a [`short_socket`] path, and a long
/// reconcile interval so the background reconcile does not run into what is measured.
pub fn bench_config(dir: &Path, extra: &str) -> String {
    test_config(dir, extra)
        .replace("reconcile-interval = \"1s\"", "reconcile-interval = \"10m\"")
        .replace(
            &format!("{}/control.sock", dir.display()),
            &short_socket().display().to_string(),
        )
}

/// Writes a secret file (the AMI secret, a knock secret) readable by its owner only, as the
/// daemon demands.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts passknockd on `config` in `ns`, expecting it to refuse: waits (at most 20 s) for it to
/// stop by itself and returns its output.
pub fn start_refused(ns: &Netns, config: &Path) -> Output {
    let mut cmd = ns.command(PASSKNOCKD);
    cmd.arg("--config").arg(config).stdin(Stdio::null());
    let out = super::chroot::run_bounded(cmd, Duration::from_secs(20)).expect("passknockd stops by itself");
    assert!(
        !out.status.success(),
        "passknockd started with {}",
        config.display()
    );
    out
}

pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    netns: String,
    /// Extra environment for the daemon process (e.g. a preloaded fake clock).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `config_text` to `dir/passknock.toml` and starts the daemon in `ns`; returns once
    /// the control socket answers.
    pub fn start(ns: &Netns, dir: &Path, config_text: &str) -> Daemon {
        Daemon::start_with_env(ns, dir, config_text, &[])
    }

    /// [`Daemon::start`], with extra environment variables for the daemon process.
    pub fn start_with_env(ns: &Netns, dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Daemon {
        let config = dir.join("passknock.toml");
        std::fs::write(&config, config_text).unwrap();
        let parsed =
            passknock::config::Config::parse(config_text, "test config").expect("test config is valid");
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            socket: parsed.daemon.control_socket,
            log: dir.join("passknockd.log"),
            config,
            netns: ns.name.clone(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
        };
        d.spawn();
        d
    }

    /// (Re)starts the daemon process with the same config.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, PASSKNOCKD, "--config"])
            .arg(&self.config)
            .env("PASSKNOCK_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start passknockd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli(&["status"]).status.success() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("passknockd exited with {st}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "passknockd did not answer:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Runs `passknock ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(PASSKNOCK)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run passknock")
    }

    /// Runs `passknock ARGS`, panicking with its stderr if it fails; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "passknock {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `passknock ARGS` expecting a refusal; returns stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "passknock {} should fail", args.join(" "));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("json reply")
    }

    /// SIGKILL, no chance to clean up: what a crash or `kill -9` does.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the daemon, so the child's pid is the daemon's.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn term(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "passknockd ignored SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nft list set inet passknock SET` in the daemon's namespace, or "" if it cannot.
    pub fn nft_set(&self, set: &str) -> String {
        let out = self.nft(&["list", "set", "inet", "passknock", set]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn nft(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft"])
            .args(args)
            .output()
            .unwrap()
    }

    /// The packets a named counter of the table has counted (`sip_rate_drops`: what responsive
    /// SIP dropped over its rate).
    pub fn nft_counter(&self, name: &str) -> u64 {
        let out = self.nft(&["-j", "list", "counter", "inet", "passknock", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["counter"]["packets"].as_u64())
            .unwrap_or_else(|| panic!("counter {name}: {v}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 if it cannot be read.
pub fn proc_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it is true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
