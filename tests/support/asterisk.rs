//! A real Asterisk 22 for one test: config rendered from `tests/harness/asterisk/`, run from the
//! test chroot inside the test's pbx namespace, awaited until fully booted, killed on drop.

use std::fs::{self, File};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::chroot::{self, TestDir};

/// The DISA number routed to `[passknock-disa]` by the test extensions.conf.
pub const DISA_EXTEN: &str = "3472";
/// passknockd's default FastAGI port, as `dialplan/passknock.conf` dials it.
pub const FASTAGI_PORT: u16 = 4573;
/// AMI port, on 127.0.0.1 inside the pbx namespace.
pub const AMI_PORT: u16 = 5038;
/// The daemon's manager user (`read = system,security,call`).
pub const AMI_USER: &str = "passknock";
pub const AMI_SECRET: &str = "pk-ami-4f9c2e71d8b35a60";
/// The tests' own manager user (everything, including Originate).
pub const ADMIN_USER: &str = "harness";
pub const ADMIN_SECRET: &str = "pk-admin-93b1d07e5c2a4f86";
/// Road phones: endpoint name (also auth user and AOR) and its password.
pub const ENDPOINTS: [(&str, &str); 3] = [
    ("701", "Vq7-kT2m-Rw9x-Lp4c-Hs8d"),
    ("702", "Zb3-nF6y-Qe1u-Mj5g-Wt2k"),
    // The carrier trunk (see pjsip.conf): calls from road 3 with any caller id.
    ("trunk", "Hc4-pX8r-Tn2v-Gd6w-Ky9m"),
];

/// How long Asterisk may take to be fully booted; it takes well under a second when idle.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one CLI command.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// The password of a road endpoint. Panics for an unknown endpoint.
pub fn password(endpoint: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|(name, _)| *name == endpoint)
        .map(|(_, pw)| *pw)
        .unwrap_or_else(|| panic!("no endpoint {endpoint} in the test pjsip.conf"))
}

/// What varies between tests' Asterisks.
#[derive(Clone, Debug, Default)]
pub struct AsteriskConfig {
    /// Extra config files, or replacements for the templates, as (file name, contents).
    /// Placeholders (`{{DIR}}` …) are substituted in them too.
    pub files: Vec<(String, String)>,
}

/// A running Asterisk. Drop kills it.
pub struct Asterisk {
    ns: String,
    /// asterisk.conf, as seen inside the chroot.
    conf: PathBuf,
    /// The per-test Asterisk directory on the host (etc, log, run, …).
    host_dir: PathBuf,
    child: Option<Child>,
}

impl Asterisk {
    /// Renders the config into `dir/asterisk`, starts Asterisk in namespace `ns` and waits until it
    /// is fully booted. Panics, with Asterisk's output, if it does not boot.
    pub fn start(
        ns: &str,
        dir: &TestDir,
        pbx_v4: Ipv4Addr,
        pbx_v6: Ipv6Addr,
        config: &AsteriskConfig,
    ) -> Asterisk {
        let inside = dir.subdir("asterisk");
        let host_dir = chroot::on_host(&inside);
        for sub in ["etc", "cache", "run", "log", "spool", "db", "keys"] {
            fs::create_dir_all(host_dir.join(sub)).expect("create asterisk dir");
        }
        render_config(&host_dir.join("etc"), &inside, pbx_v4, pbx_v6, config);
        let mut ast = Asterisk {
            ns: ns.to_string(),
            conf: inside.join("etc/asterisk.conf"),
            host_dir,
            child: None,
        };
        ast.boot();
        ast
    }

    /// Starts Asterisk again after [`Asterisk::stop`] (or a crash), with the same config and state.
    pub fn boot(&mut self) {
        self.kill();
        let out = File::create(self.host_dir.join("asterisk.out")).expect("create asterisk.out");
        let child = chroot::command(Some(&self.ns), "/usr/sbin/asterisk")
            // -f: stay in the foreground, so the child is Asterisk itself and a kill reaches it.
            .args(["-f", "-n", "-C"])
            .arg(&self.conf)
            .stdout(out.try_clone().expect("dup asterisk.out"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start asterisk: {e}"));
        self.child = Some(child);
        self.wait_booted();
    }

    fn wait_booted(&mut self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("asterisk exited while booting ({status})\n{}", self.log_tail(40));
            }
            // The control socket appears early; waitfullybooted then blocks until modules are up.
            if self.host_dir.join("run/asterisk.ctl").exists() {
                if let Ok(out) = self.try_cli("core waitfullybooted") {
                    if out.contains("fully booted") {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "asterisk not fully booted after {BOOT_TIMEOUT:?}\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs a CLI command (`asterisk -rx`) against this Asterisk and returns its output.
    pub fn try_cli(&self, command: &str) -> Result<String, String> {
        let mut cmd = chroot::command(None, "/usr/sbin/asterisk");
        cmd.arg("-C").arg(&self.conf).args(["-rx", command]);
        let out = chroot::run_bounded(cmd, CLI_TIMEOUT)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "asterisk -rx {command:?} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Like [`Asterisk::try_cli`], but panics with Asterisk's log tail on failure.
    pub fn cli(&self, command: &str) -> String {
        self.try_cli(command)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail(30)))
    }

    /// Stops Asterisk gracefully (`core stop now`), killing it if it lingers.
    pub fn stop(&mut self) {
        let _ = self.try_cli("core stop now");
        if let Some(mut child) = self.child.take() {
            chroot::wait_bounded(&mut child, Duration::from_secs(10));
        }
    }

    /// Kills Asterisk at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Asterisk gracefully and boots it again with the same config and state (astdb with
    /// its registrations, logs): what an admin's `systemctl restart asterisk` does. Returns once
    /// it is fully booted.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// Like [`Asterisk::restart`], but Asterisk forgets everything it stored (astdb: registered
    /// contacts among it) while it is down: a client that re-syncs must forget them too.
    pub fn restart_forgetting_state(&mut self) {
        self.stop();
        let db = self.host_dir.join("db");
        let _ = fs::remove_dir_all(&db);
        fs::create_dir_all(&db).expect("recreate astdb dir");
        self.boot();
    }

    /// The directory Asterisk writes its logs to (messages.log, security.log), on the host.
    pub fn log_dir(&self) -> PathBuf {
        self.host_dir.join("log")
    }

    /// The security log channel's file, on the host.
    pub fn security_log(&self) -> PathBuf {
        self.log_dir().join("security.log")
    }

    /// The last lines of Asterisk's own output and of messages.log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- asterisk output ---\n{}\n--- asterisk messages.log ---\n{}",
            chroot::tail(&self.host_dir.join("asterisk.out"), lines),
            chroot::tail(&self.log_dir().join("messages.log"), lines)
        )
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory holding the config templates.
fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/asterisk")
}

/// Writes every template, placeholders substituted, plus a verbatim copy of the shipped
/// `dialplan/passknock.conf`, into `etc`.
fn render_config(etc: &Path, inside: &Path, pbx_v4: Ipv4Addr, pbx_v6: Ipv6Addr, config: &AsteriskConfig) {
    let dir = inside.display().to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("DIR".into(), dir),
        ("MODDIR".into(), module_dir()),
        ("PBX_V4".into(), pbx_v4.to_string()),
        ("PBX_V6".into(), pbx_v6.to_string()),
        ("AMI_SECRET".into(), AMI_SECRET.into()),
        ("ADMIN_SECRET".into(), ADMIN_SECRET.into()),
        ("DIALPLAN".into(), "passknock.conf".into()),
        ("DISA_EXTEN".into(), DISA_EXTEN.into()),
    ];
    for (name, pw) in ENDPOINTS {
        vars.push((format!("SECRET_{name}"), pw.to_string()));
    }
    let mut files: Vec<(String, String)> = Vec::new();
    for entry in fs::read_dir(template_dir()).expect("read tests/harness/asterisk") {
        let path = entry.expect("template entry").path();
        if path.extension().is_some_and(|e| e == "conf") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("read template");
            files.push((name, text));
        }
    }
    for (name, text) in &config.files {
        files.retain(|(n, _)| n != name);
        files.push((name.clone(), text.clone()));
    }
    for (name, text) in files {
        let rendered =
            substitute(&text, &vars).unwrap_or_else(|e| panic!("tests/harness/asterisk/{name}: {e}"));
        fs::write(etc.join(&name), rendered).expect("write asterisk config");
    }
    let dialplan = Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplan/passknock.conf");
    fs::copy(&dialplan, etc.join("passknock.conf"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", dialplan.display()));
}

/// Replaces each `{{NAME}}`; an unknown placeholder is an error, not a silent leftover.
fn substitute(text: &str, vars: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| "unclosed {{".to_string())?;
        let name = &rest[start + 2..start + end];
        let value = vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Asterisk's module directory inside the chroot (multiarch path on Debian).
fn module_dir() -> String {
    let lib = chroot::root().join("usr/lib");
    let found = fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("asterisk/modules"))
        .chain([lib.join("asterisk/modules")])
        .find(|p| p.join("chan_pjsip.so").exists())
        .expect("no Asterisk module directory with chan_pjsip.so in the chroot");
    format!("/{}", found.strip_prefix(chroot::root()).unwrap().display())
}

#[cfg(test)]
mod tests {
    // Imports go inside the tests: benches include this file and drop #[test] fns.
    #[test]
    fn substitute_replaces_and_refuses_unknown() {
        use super::substitute;
        let vars = vec![("A".to_string(), "1".to_string())];
        assert_eq!(substitute("x{{A}}y{{A}}", &vars).unwrap(), "x1y1");
        assert!(substitute("{{B}}", &vars).unwrap_err().contains("B"));
        assert!(substitute("{{A", &vars).is_err());
    }
}
