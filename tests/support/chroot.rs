//! The Debian sid chroot that end-to-end tests run Asterisk and SIPp from, and per-test directories in it.
//!
//! The chroot is built once per machine by `tests/harness/build-chroot.sh` (cached outside the clone,
//! serialized by a flock) and located here lazily, so `cargo test` alone works on a fresh machine.
//! Programs inside it see only the chroot, so everything a test hands them (config, scenarios,
//! pcaps) lives in a [`TestDir`] under the chroot's `/var/tmp/passknock/`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::netns::Netns;

/// Where per-test directories live, as seen from inside the chroot.
const TESTS_ROOT: &str = "/var/tmp/passknock";

/// How long a first build of the chroot may take before the tests give up (the script has its own
/// per-step timeouts; this only bounds a wedged script).
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The chroot's root on the host, built on first use. Panics with the script's reason if it
/// cannot be built.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/build-chroot.sh");
        // stderr is inherited: a first build takes minutes and should show its progress.
        let mut cmd = Command::new("bash");
        cmd.arg(&script).stdin(Stdio::null()).stderr(Stdio::inherit());
        let out = run_bounded(cmd, BUILD_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot build the test chroot with {}: {e}", script.display()));
        if !out.status.success() {
            panic!(
                "{} failed ({}); its reason is on stderr above",
                script.display(),
                out.status
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.join("usr/sbin/asterisk").exists(),
            "build-chroot.sh printed {path:?}, which holds no Asterisk"
        );
        sweep_stale(&path);
        path
    })
}

/// A command that runs `program` inside the chroot, in the network namespace named `ns` (or the
/// host's when `None`). Network namespaces are per process, so the chrooted program inherits `ns`.
pub fn command(ns: Option<&str>, program: &str) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "chroot"]);
            c
        }
        None => Command::new("chroot"),
    };
    c.arg(root()).arg(program).stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion, killing it after `timeout`. Output is captured unless the caller
/// redirected it.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let status = wait_bounded(&mut child, timeout);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{desc} did not finish within {timeout:?}; output so far: {}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// Waits for `child` up to `timeout`; kills (and reaps) it and returns `None` if it is still
/// running then.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The last `lines` lines of a file, or a note saying why there are none.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// A fresh directory inside the chroot for one test's files, removed on drop.
///
/// Named `<pid>-<n>-<label>` so that directories left by a killed test run can be recognised
/// (their pid is gone) and swept.
pub struct TestDir {
    /// The path as programs inside the chroot see it.
    pub inside: PathBuf,
    /// The same directory on the host.
    pub host: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        // Unix socket paths are short (108 bytes): keep the label brief.
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let label = &label[..label.len().min(32)];
        let inside = PathBuf::from(format!("{TESTS_ROOT}/{}-{n}-{label}", std::process::id()));
        let host = on_host(&inside);
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(&host).unwrap_or_else(|e| panic!("create {}: {e}", host.display()));
        TestDir { inside, host }
    }

    /// A subdirectory, created; returns its path inside the chroot.
    pub fn subdir(&self, name: &str) -> PathBuf {
        subdir(&self.inside, name)
    }
}

/// Creates `name` under `inside` (a path inside the chroot) and returns its path inside the chroot.
pub fn subdir(inside: &Path, name: &str) -> PathBuf {
    let path = inside.join(name);
    let host = on_host(&path);
    fs::create_dir_all(&host).unwrap_or_else(|e| panic!("create {}: {e}", host.display()));
    path
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // PASSKNOCK_KEEP_TEST_DIRS=1 keeps logs, configs and SIPp traces for a post-mortem; the next
        // run's sweep removes them.
        if std::env::var_os("PASSKNOCK_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.host.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.host);
    }
}

/// The host path of a path inside the chroot.
pub fn on_host(inside: &Path) -> PathBuf {
    root().join(inside.strip_prefix("/").unwrap_or(inside))
}

/// Removes what killed test runs left: per-test directories and network namespaces (with their
/// processes) whose owning test process no longer exists.
fn sweep_stale(root: &Path) {
    let dead = |name: &str, prefix: &str| -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            // SAFETY: kill with signal 0 only checks whether the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0)
    };
    let dirs = root.join(TESTS_ROOT.trim_start_matches('/'));
    for entry in fs::read_dir(&dirs).into_iter().flatten().flatten() {
        if dead(&entry.file_name().to_string_lossy(), "") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    // Namespaces follow netns.rs's naming: pk<pid>-<n>-<role>.
    for entry in fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead(&name, "pk") {
            drop(Netns { name });
        }
    }
}
