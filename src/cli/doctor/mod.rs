//! `passknock doctor`: looks at the whole installation as an admin would — nft and the table, the
//! config and its secret files, AMI and its permissions, the dialplan Asterisk has loaded, the
//! FastAGI port, the odds a passcode guesser has, the ports Asterisk really listens on, and whether
//! the admin's own address gets in — and says, for each, a verdict in plain words and what to do about it.
//!
//! Every check only looks; none changes anything. AMI is asked with the daemon's own user.

mod ami;
pub mod asterisk;
pub(super) mod show;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use knockd::secret::NotPrivate;
use serde::Serialize;

use crate::base::defaults;
use crate::base::duration::left;
use crate::config::{Config, PortRange, Proto};
use crate::control::client::call;
use crate::control::{Reply, Request};
use crate::rules::limiter::{odds, Policy};

use asterisk::{manager_classes, Asterisk, Listening};

/// The dialplan context `dialplan/passknock.conf` defines.
pub const DIALPLAN_CONTEXT: &str = "passknock-disa";
/// A yearly chance of a guessed passcode above this is worth a warning.
const GUESS_ODDS_WARN: f64 = 1e-3;
/// Bound on each network conversation.
const TIMEOUT: Duration = Duration::from_secs(3);
/// What the daemon's AMI user must read: contacts (system), failed logins (security), calls (call).
const AMI_READ: [&str; 3] = ["system", "security", "call"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, but something an admin should know.
    Warn,
    Fail,
    /// Not checked: it does not apply, or what it needs failed first.
    Skip,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn skip(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Skip,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(name: &'static str, verdict: Verdict, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(name, Verdict::Fail, detail, fix)
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(name, Verdict::Warn, detail, fix)
}

/// What the doctor looks at.
pub struct Options {
    pub config: PathBuf,
    /// The control socket, if not the config's.
    pub socket: Option<PathBuf>,
    /// The admin's own address: `--address`, else the client end of `SSH_CONNECTION`.
    pub address: Option<IpAddr>,
}

/// The client address in `SSH_CONNECTION` ("client port server port").
pub fn ssh_client(ssh_connection: &str) -> Option<IpAddr> {
    ssh_connection.split_whitespace().next()?.parse().ok()
}

/// Runs every check, in an order where each one's prerequisites come first.
pub fn examine(opts: &Options) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::load(&opts.config) {
        Ok(c) => {
            // Knock secrets are files of their own, read as the daemon reads them at start.
            checks.push(match c.knock_profiles() {
                Ok(_) => ok("config", format!("{} is valid", opts.config.display())),
                Err(e) => fail(
                    "config",
                    e.to_string(),
                    "correct the knock profile or its secret file (`passknock knock-profile add` makes both)",
                ),
            });
            c
        }
        Err(e) => {
            let missing = matches!(&e, crate::config::ConfigError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound);
            let fix = if missing {
                format!(
                    "install one: `bash dist/install.sh` puts the commented example at {}; or name \
                     yours with `passknock --config FILE doctor`",
                    defaults::CONFIG_PATH
                )
            } else {
                format!(
                    "correct {} (every key is explained in examples/passknock.toml; \
                     `passknockd --check --config FILE` checks a file), then `passknock reload`",
                    opts.config.display()
                )
            };
            checks.push(fail("config", e.to_string(), fix));
            for name in [
                "secrets",
                "nft",
                "table",
                "ami",
                "ami-permissions",
                "dialplan",
                "fastagi",
                "guessing",
                "ports",
                "address",
            ] {
                checks.push(skip(name, "needs a valid config"));
            }
            return checks;
        }
    };
    checks.push(secrets(&config));
    let nft = nft(&config);
    let nft_ok = nft.verdict == Verdict::Ok;
    checks.push(nft);
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| config.daemon.control_socket.clone());
    checks.push(table(&socket, nft_ok));
    let asterisk = Asterisk::find();
    checks.extend(ami(&config, asterisk.as_ref()));
    checks.push(fastagi(&config));
    checks.push(guessing(&config, &socket));
    checks.push(ports(&config, asterisk.as_ref()));
    checks.push(address(&config, &socket, opts.address));
    checks
}

/// Files that hold secrets must be readable by their owner only.
fn secrets(config: &Config) -> Check {
    let mut files: Vec<(String, &Path, bool)> =
        vec![("daemon.store".into(), config.daemon.store.as_path(), false)];
    if config.disa.enabled {
        files.push(("disa.key-file".into(), &config.disa.key_file, false));
    }
    if config.ami.enabled {
        if let Some(f) = &config.ami.secret_file {
            files.push(("ami.secret-file".into(), f, true));
        }
    }
    for (name, p) in &config.knock.profiles {
        if let Some(f) = &p.secret_file {
            files.push((format!("knock.profiles.{name}.secret-file"), f, true));
        }
    }
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (key, path, required) in &files {
        match knockd::secret::private_mode(path) {
            Ok(()) => {}
            Err(NotPrivate::Mode(mode)) => {
                problems.push(format!(
                    "{} ({key}) is mode {mode:04o}: others can read it",
                    path.display()
                ));
                fixes.push(format!("chmod 600 {}", path.display()));
            }
            Err(NotPrivate::Unreadable(e)) if *required || e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("{} ({key}): {e}", path.display()));
                fixes.push(format!("create {} with mode 0600", path.display()));
            }
            // The store and the DISA key are made (0600) at the daemon's first start.
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        ok(
            "secrets",
            format!("{} file(s) private (0600 or stricter)", files.len()),
        )
    } else {
        let detail = problems.join("; ");
        fail(
            "secrets",
            detail,
            format!(
                "{} (passknockd refuses to start with a readable secret)",
                fixes.join("; ")
            ),
        )
    }
}

fn nft(config: &Config) -> Check {
    let program = &config.firewall.nft;
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => ok(
            "nft",
            format!(
                "{} ({})",
                String::from_utf8_lossy(&o.stdout).trim(),
                program.display()
            ),
        ),
        Ok(o) => fail(
            "nft",
            format!(
                "{} --version failed: {}",
                program.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            "reinstall nftables (apt-get install nftables)",
        ),
        Err(e) => fail(
            "nft",
            format!("cannot run {}: {e}", program.display()),
            "install nftables (apt-get install nftables), or set [firewall] nft to where it is",
        ),
    }
}

fn table(socket: &Path, nft_ok: bool) -> Check {
    let status =
        match call(socket, &Request::Status) {
            Ok(Reply::Status(s)) => s,
            Ok(other) => {
                return fail(
                    "table",
                    format!("passknockd gave an unexpected reply: {other:?}"),
                    "run the same version of passknock and passknockd",
                )
            }
            Err(e) => return fail(
                "table",
                format!("cannot tell: {e}"),
                "start the daemon: systemctl start passknockd (journalctl -u passknockd says why it stopped)",
            ),
        };
    let retry = if nft_ok {
        "passknockd repairs it at its next reconcile; if it stays so, `passknock status` shows nft's error"
    } else {
        "fix nft first (above); passknockd then repairs the table by itself"
    };
    if !status.table_present {
        let why = match &status.firewall_error {
            Some(e) => format!("nft's last error: {e}"),
            None => "someone deleted it, or flushed the ruleset".into(),
        };
        return fail(
            "table",
            format!(
                "table {} is not in nft ({why}): protected ports are open to everyone",
                status.table
            ),
            retry,
        );
    }
    if !status.in_sync {
        return fail(
            "table",
            format!(
                "table {} differs from the store: {}",
                status.table, status.sync_detail
            ),
            retry,
        );
    }
    ok(
        "table",
        format!(
            "table {} is in sync: {} grant(s), {} ban(s)",
            status.table, status.grants, status.bans
        ),
    )
}

/// AMI reachable and logged in to; the user's permissions; the dialplan context.
fn ami(config: &Config, asterisk: Option<&Asterisk>) -> Vec<Check> {
    let a = &config.ami;
    if !a.enabled {
        return vec![
            warn(
                "ami",
                "AMI is off: no contacts learned, no live calls held open, no bans for failed SIP logins",
                "set [ami] enabled = true with a manager user (see the README's AMI section)",
            ),
            skip("ami-permissions", "AMI is off"),
            dialplan_without_ami(config),
        ];
    }
    let login_fix = format!(
        "in manager.conf: [general] enabled = yes, port and bindaddr matching ami.address ({}); \
         a [{}] user whose secret is the one in ami.secret-file; then `asterisk -rx 'manager reload'`",
        a.address, a.username
    );
    let secret = match a.read_secret("[ami]") {
        Ok(s) => s,
        Err(e) => {
            return vec![
                fail("ami", e.to_string(), login_fix),
                skip("ami-permissions", "needs an AMI login"),
                skip("dialplan", "needs an AMI login"),
            ]
        }
    };
    let mut session = match ami::Ami::connect(&a.address, TIMEOUT)
        .and_then(|mut s| s.login(&a.username, &secret, a.login).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            return vec![
                fail("ami", format!("{} as {}: {e}", a.address, a.username), login_fix),
                skip("ami-permissions", "needs an AMI login"),
                skip("dialplan", "needs an AMI login"),
            ]
        }
    };
    let mut checks = vec![ok("ami", format!("logged in to {} as {}", a.address, a.username))];
    checks.push(ami_permissions(&mut session, &a.username, asterisk));
    checks.push(dialplan(&mut session, config));
    session.logoff();
    checks
}

/// Read permissions from the manager.conf Asterisk loaded; write permissions by asking for what
/// the daemon asks for.
fn ami_permissions(session: &mut ami::Ami, user: &str, asterisk: Option<&Asterisk>) -> Check {
    let fix_conf = |missing: &str| {
        format!(
            "in manager.conf, [{user}]: read = {}, write = system,reporting; then `asterisk -rx 'manager reload'` \
             (missing: {missing})",
            AMI_READ.join(",")
        )
    };
    let mut denied = Vec::new();
    for action in ["PJSIPShowContacts", "CoreShowChannels"] {
        match session.request(action, &[]) {
            // An error other than a refusal ("No Contacts found") is still an answer.
            Ok((r, _))
                if !r
                    .get("Message")
                    .unwrap_or("")
                    .to_ascii_lowercase()
                    .contains("permission") => {}
            Ok((r, _)) => denied.push(format!("{action}: {}", r.get("Message").unwrap_or("refused"))),
            Err(e) => denied.push(format!("{action}: {e}")),
        }
    }
    if !denied.is_empty() {
        return fail(
            "ami-permissions",
            format!("Asterisk refuses the daemon's actions: {}", denied.join("; ")),
            fix_conf("write = system"),
        );
    }
    let Some(asterisk) = asterisk else {
        return warn(
            "ami-permissions",
            "actions allowed; read permissions not checked: no Asterisk process in this network namespace",
            "run the doctor on the PBX itself",
        );
    };
    let (conf, path) = match asterisk.manager_conf() {
        Ok(c) => c,
        Err(e) => {
            return warn(
                "ami-permissions",
                format!("actions allowed; read permissions not checked: {e}"),
                fix_conf("unknown"),
            )
        }
    };
    let Some(read) = manager_classes(&conf, user, "read") else {
        return warn(
            "ami-permissions",
            format!(
                "actions allowed; no [{user}] section in {} to read permissions from",
                path.display()
            ),
            fix_conf("unknown"),
        );
    };
    let missing: Vec<&str> = AMI_READ
        .iter()
        .copied()
        .filter(|c| !read.iter().any(|r| r == c || r == "all"))
        .collect();
    if missing.is_empty() {
        ok(
            "ami-permissions",
            format!("read = {} and the daemon's actions are allowed", read.join(",")),
        )
    } else {
        let without: Vec<&str> = missing
            .iter()
            .map(|c| match *c {
                "system" => "contacts are not learned",
                "security" => "failed SIP logins are never banned",
                _ => "live calls are not held open",
            })
            .collect();
        fail(
            "ami-permissions",
            format!(
                "[{user}] in {} reads {}, not {}: {}",
                path.display(),
                if read.is_empty() {
                    "nothing".to_string()
                } else {
                    read.join(",")
                },
                missing.join(","),
                without.join("; ")
            ),
            fix_conf(&missing.join(",")),
        )
    }
}

fn dialplan_fix(config: &Config) -> String {
    format!(
        "copy dialplan/passknock.conf to /etc/asterisk/passknock.conf, add `#include passknock.conf` to \
         extensions.conf, send the DISA number there with Goto({DIALPLAN_CONTEXT},s,1), then \
         `asterisk -rx 'dialplan reload'`; its AGI() must name agi://{}/disa",
        config.agi.listen
    )
}

fn dialplan_without_ami(config: &Config) -> Check {
    if config.disa.enabled {
        warn(
            "dialplan",
            format!("cannot ask Asterisk whether [{DIALPLAN_CONTEXT}] is loaded: AMI is off"),
            format!("check by hand: asterisk -rx 'dialplan show {DIALPLAN_CONTEXT}'"),
        )
    } else {
        skip("dialplan", "DISA is off")
    }
}

/// Asks Asterisk for the context and checks its AGI() reaches our listener.
fn dialplan(session: &mut ami::Ami, config: &Config) -> Check {
    if !config.disa.enabled {
        return skip("dialplan", "DISA is off");
    }
    let (response, lines) = match session.request("ShowDialPlan", &[("Context", DIALPLAN_CONTEXT)]) {
        Ok(r) => r,
        Err(e) => return fail("dialplan", format!("ShowDialPlan: {e}"), dialplan_fix(config)),
    };
    if !response.is("Response", "Success") {
        let message = response.get("Message").unwrap_or("refused");
        if message.to_ascii_lowercase().contains("permission") {
            return warn(
                "dialplan",
                format!("Asterisk will not show its dialplan to this user: {message}"),
                "add reporting to the AMI user's write permissions, or check by hand: \
                 asterisk -rx 'dialplan show passknock-disa'",
            );
        }
        return fail(
            "dialplan",
            format!("[{DIALPLAN_CONTEXT}] is not loaded in Asterisk ({message}): DISA calls cannot reach passknock"),
            dialplan_fix(config),
        );
    }
    let agi: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l.get("Application")
                .is_some_and(|a| a.eq_ignore_ascii_case("AGI"))
        })
        .filter_map(|l| l.get("AppData"))
        .collect();
    let want = agi_target(config.agi.listen);
    if agi.iter().any(|d| d.starts_with(&want)) {
        ok(
            "dialplan",
            format!("[{DIALPLAN_CONTEXT}] is loaded and its AGI() calls {want}"),
        )
    } else {
        fail(
            "dialplan",
            format!(
                "[{DIALPLAN_CONTEXT}] is loaded but calls {}, not {want}",
                if agi.is_empty() {
                    "no AGI()".to_string()
                } else {
                    agi.join(", ")
                }
            ),
            dialplan_fix(config),
        )
    }
}

/// Where Asterisk must connect: the listen address, with an unspecified one read as loopback.
fn agi_connect(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    a
}

fn agi_target(listen: SocketAddr) -> String {
    format!("agi://{}/", agi_connect(listen))
}

fn fastagi(config: &Config) -> Check {
    if !config.disa.enabled {
        return skip("fastagi", "DISA is off");
    }
    let to = agi_connect(config.agi.listen);
    match TcpStream::connect_timeout(&to, TIMEOUT) {
        Ok(_) => ok("fastagi", format!("{to} accepts connections")),
        Err(e) => fail(
            "fastagi",
            format!("cannot connect to the FastAGI listener {to}: {e}; DISA callers hear \"not in service\""),
            format!(
                "start passknockd with [disa] enabled = true and [agi] listen = \"{}\"; \
                 nothing else may hold that port",
                config.agi.listen
            ),
        ),
    }
}

/// What the DISA limits allow a guesser in a year, with the accounts the daemon has: the shortest
/// passcode and every owner number count against the odds.
fn guessing(config: &Config, socket: &Path) -> Check {
    if !config.disa.enabled {
        return skip("guessing", "DISA is off");
    }
    let accounts = match call(socket, &Request::AccountList) {
        Ok(Reply::Accounts { accounts }) => accounts,
        Ok(Reply::Error { message }) => return skip("guessing", format!("cannot list accounts: {message}")),
        Ok(_) | Err(_) => return skip("guessing", "needs the daemon, to count accounts"),
    };
    let live: Vec<_> = accounts.iter().filter(|a| !a.disabled).collect();
    let digits = live
        .iter()
        .map(|a| a.passcode_digits.unwrap_or(defaults::PASSCODE_DIGITS_MIN))
        .min()
        .unwrap_or(config.disa.passcode_digits) as u32;
    let owners: u64 = live.iter().map(|a| a.callers.len() as u64).sum();
    let policy = Policy::from(&config.disa);
    let odds = odds(&policy, live.len() as u64, owners, digits);
    let detail = odds.describe(&policy, live.len() as u64, owners, digits);
    if odds.p_year < GUESS_ODDS_WARN {
        ok("guessing", detail)
    } else {
        warn(
            "guessing",
            detail,
            "lower disa.global-failures-per-hour (and disa.lockout-failures), or raise \
             disa.passcode-digits and give each account a new passcode (account reset-passcode)",
        )
    }
}

/// Every non-loopback socket Asterisk listens on must be in some service: one that is not is open
/// to the whole Internet. A single service port nothing listens on is a typo or a transport left
/// unconfigured.
fn ports(config: &Config, asterisk: Option<&Asterisk>) -> Check {
    let Some(asterisk) = asterisk else {
        return fail(
            "ports",
            "no Asterisk is running in this network namespace",
            "start Asterisk (systemctl start asterisk), then run the doctor again",
        );
    };
    let listening = match asterisk.listening() {
        Ok(l) => l,
        Err(e) => return fail("ports", e, "run the doctor as root"),
    };
    let protected: Vec<(String, PortRange)> = config
        .services
        .iter()
        .flat_map(|(name, s)| s.ports.iter().map(move |p| (name.clone(), *p)))
        .collect();
    let covered = |l: &Listening| {
        protected
            .iter()
            .any(|(_, p)| p.proto == l.proto && (p.first..=p.last).contains(&l.port))
    };
    // UDP sockets the kernel bound to an ephemeral port are Asterisk's own outgoing ones (DNS,
    // STUN, …): nothing is served there.
    let ephemeral = ephemeral_ports();
    let outgoing = |l: &Listening| l.proto == Proto::Udp && ephemeral.contains(&l.port);
    let open: Vec<String> = listening
        .iter()
        .filter(|l| !l.address.is_loopback() && !covered(l) && !outgoing(l))
        .map(|l| l.to_string())
        .collect();
    let idle: Vec<String> = protected
        .iter()
        .filter(|(_, p)| p.first == p.last)
        .filter(|(_, p)| !listening.iter().any(|l| l.proto == p.proto && l.port == p.first))
        .map(|(name, p)| format!("{p} ({name})"))
        .collect();
    let public = listening
        .iter()
        .filter(|l| !l.address.is_loopback() && (covered(l) || !outgoing(l)))
        .count();
    if !open.is_empty() {
        let first = open[0].split(" on ").next().unwrap_or("").to_string();
        return fail(
            "ports",
            format!(
                "Asterisk (pid {}) listens on {}, which no service covers: anyone can reach it",
                asterisk.pid,
                open.join(", ")
            ),
            format!(
                "add them to a service's ports in the config, e.g. ports = [..., \"{first}\"] under \
                 [services.sip], then `passknock reload`"
            ),
        );
    }
    if !idle.is_empty() {
        return warn(
            "ports",
            format!(
                "all {public} port(s) Asterisk listens on are protected, but nothing listens on {}",
                idle.join(", ")
            ),
            "remove them from the services, or configure the transport in Asterisk",
        );
    }
    ok(
        "ports",
        format!(
            "all {public} port(s) Asterisk (pid {}) listens on are protected",
            asterisk.pid
        ),
    )
}

/// The kernel's range for automatically bound ports, in this network namespace.
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => a..=b,
        _ => 32768..=60999,
    }
}

/// The admin's own address: trusted, or granted for a while, or about to be locked out.
fn address(config: &Config, socket: &Path, ip: Option<IpAddr>) -> Check {
    let Some(ip) = ip else {
        return skip(
            "address",
            "your address is unknown (not over SSH); pass --address to check it",
        );
    };
    let ip = crate::base::addr::normalize(ip);
    if let Some(net) = config.firewall.trusted.iter().find(|n| n.contains(ip)) {
        return ok("address", format!("your address {ip} is trusted ({net})"));
    }
    let trust_fix = format!(
        "add \"{ip}/{}\" to [firewall] trusted and `passknock reload` (or `passknock grant {ip}` for a while)",
        if ip.is_ipv4() { 32 } else { 128 }
    );
    match call(socket, &Request::List { limit: None }) {
        Ok(Reply::Listing { now, grants, bans }) => {
            if let Some(b) = bans.iter().find(|b| b.address == ip) {
                return fail(
                    "address",
                    format!(
                        "your address {ip} is BANNED ({}) for {}",
                        b.reason,
                        left(now, b.expires)
                    ),
                    format!("passknock unban {ip}; then {trust_fix}"),
                );
            }
            match grants.iter().filter(|g| g.address == ip).map(|g| g.end()).max() {
                Some(end) => warn(
                    "address",
                    format!(
                        "your address {ip} is granted, but only for {} more",
                        left(now, end)
                    ),
                    trust_fix,
                ),
                None => fail(
                    "address",
                    format!(
                        "your address {ip} is neither trusted nor granted: the protected services \
                         are closed to you"
                    ),
                    trust_fix,
                ),
            }
        }
        _ => fail(
            "address",
            format!("your address {ip} is not trusted, and passknockd cannot say whether it is granted"),
            trust_fix,
        ),
    }
}

/// Whether the admin should worry: any failure.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}

/// The default config path, for messages.
pub fn default_config() -> PathBuf {
    defaults::CONFIG_PATH.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_comes_from_ssh_connection() {
        assert_eq!(
            ssh_client("203.0.113.9 50022 192.0.2.1 22"),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            ssh_client("2001:db8::9 50022 2001:db8::1 22"),
            Some("2001:db8::9".parse().unwrap())
        );
        assert_eq!(ssh_client(""), None);
        assert_eq!(ssh_client("garbage 1 2 3"), None);
    }

    #[test]
    fn an_unspecified_agi_listen_address_is_reached_on_loopback() {
        assert_eq!(
            agi_target("0.0.0.0:4573".parse().unwrap()),
            "agi://127.0.0.1:4573/"
        );
        assert_eq!(agi_target("[::]:4573".parse().unwrap()), "agi://[::1]:4573/");
        assert_eq!(
            agi_target("127.0.0.2:4000".parse().unwrap()),
            "agi://127.0.0.2:4000/"
        );
    }

    #[test]
    fn one_failure_makes_the_installation_unhealthy() {
        let all = vec![ok("a", "fine"), warn("b", "hm", "do x"), skip("c", "n/a")];
        assert!(healthy(&all));
        let mut all = all;
        all.push(fail("d", "broken", "do y"));
        assert!(!healthy(&all));
    }
}
