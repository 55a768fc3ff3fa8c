//! `passknock doctor`: looks at the whole installation as an admin would — nft and the table, the
//! config and its secret files, AMI and its permissions, the dialplan Asterisk has loaded, the
//! FastAGI port, the odds a passcode guesser has, the ports Asterisk really listens on, and whether
//! the admin's own address gets in — and says, for each, a verdict in plain words and what to do about it.
//!
//! Every check only looks; none changes anything. AMI is asked with the daemon's own user.

mod access;
mod ami;
pub mod asterisk;
mod firewall;
mod network;
mod pbx;
mod secrets;
pub(super) mod show;
mod store;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::base::defaults;
use crate::config::Config;

use access::{address, guessing};
use asterisk::Asterisk;
use firewall::{nft, table};
use network::{fastagi, ports};
use pbx::ami;
use secrets::secrets;

/// The dialplan context `dialplan/passknock.conf` defines.
pub const DIALPLAN_CONTEXT: &str = "passknock-disa";
/// Bound on each network conversation.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// Works, but something an admin should know.
    Warn,
    Fail,
    /// Not checked: it does not apply, or what it needs failed first.
    Skip,
}

impl Health {
    pub fn word(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warn => "warn",
            Health::Fail => "FAIL",
            Health::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Health,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Health::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn skip(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Health::Skip,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(name: &'static str, verdict: Health, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(name, Health::Fail, detail, fix)
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    bad(name, Health::Warn, detail, fix)
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
    let nft_ok = nft.verdict == Health::Ok;
    checks.push(nft);
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| config.daemon.control_socket.clone());
    checks.push(table(&socket, nft_ok));
    if matches!(config.daemon.store_at(), crate::config::StoreAt::Postgres(_)) {
        checks.push(store::store(&socket));
    }
    let asterisk = Asterisk::find();
    checks.extend(ami(&config, asterisk.as_ref()));
    checks.push(fastagi(&config));
    checks.push(guessing(&config, &socket));
    checks.push(ports(&config, asterisk.as_ref()));
    checks.push(address(&config, &socket, opts.address));
    checks
}

/// Whether the admin should worry: any failure.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Health::Fail)
}

/// The default config path, for messages.
pub fn default_config() -> PathBuf {
    defaults::CONFIG_PATH.into()
}

#[cfg(test)]
mod tests {
    use super::network::agi_target;
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
