//! The admin CLI: `passknock grant|revoke|list|ban|unban|status|contacts|calls|log|report`, over the control
//! socket; and `passknock knock` (the laptop's side) and `passknock knock-profile add`, which need
//! no daemon.

pub mod doctor;
mod history;
mod knock;
mod paint;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::base::clock::{utc, UnixMs};
use crate::base::defaults;
use crate::base::duration::{human, left, Ttl};
use crate::config::Config;
use crate::control::client::call;
use crate::control::{AmiStatus, Applied, NewAccount, Reply, Request};
use crate::model::{Ban, Grant};

#[derive(Debug, Parser)]
#[command(
    name = "passknock",
    version,
    about = "Let road warriors into an Asterisk PBX that is closed to the Internet"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, env = "PASSKNOCK_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Read the control socket's path from this daemon config.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Allow ADDR to reach some services for a while.
    Grant {
        address: String,
        /// Comma-separated services (default: the config's default-services).
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long, e.g. 90m, 2h, 1d (default: the config's grants.ttl-default).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// Why, for the audit log and `list`.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// End every grant for ADDR now.
    Revoke { address: String },
    /// Show live grants and bans.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Keep ADDR off every protected port for a while.
    Ban {
        address: String,
        #[arg(long)]
        ttl: Option<Ttl>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift the ban on ADDR.
    Unban { address: String },
    /// One screen: table and AMI health, counts now, in the last hour and day, live grants, bans and
    /// contacts.
    Status {
        /// One JSON object for scripts: status, last hour, grants, bans, AMI, contacts, calls.
        #[arg(long)]
        json: bool,
        /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
        #[arg(long, value_enum, default_value_t = paint::ColorChoice::Auto)]
        color: paint::ColorChoice,
    },
    /// Audit events from the daemon's history, newest last: grants, bans, lockouts, refusals,
    /// knocks, calls. Kept across restarts for daemon.history-retention.
    Log {
        /// How far back, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: Ttl,
        /// Only events about this address.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        /// Only events of this DISA account or knock profile (or `uid 0`, `ami`, a number).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Counts of grants, bans and refusals, top refused sources, grants per account, bans,
    /// lockouts and suspensions: plain text to mail from cron.
    Report {
        /// How far back, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: Ttl,
        #[arg(long)]
        json: bool,
    },
    /// Registered phones (endpoint and address) as Asterisk reports them over AMI.
    Contacts {
        #[arg(long)]
        json: bool,
    },
    /// Live SIP calls and their remote addresses, as Asterisk reports them over AMI.
    Calls {
        #[arg(long)]
        json: bool,
    },
    /// Knock on HOST with a profile from this laptop's client config, then check access opened.
    Knock(knockd::client::KnockArgs),
    /// Make knock profiles (for the daemon's config and the laptop's).
    KnockProfile {
        #[command(subcommand)]
        action: KnockProfileAction,
    },
    /// Re-read the daemon's config file (as SIGHUP does); a bad config is refused, nothing changes.
    Reload,
    /// DISA accounts: who may phone in with a passcode.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Check the installation — nft and the table, config and secret files, AMI and its
    /// permissions, the dialplan, FastAGI, the ports Asterisk listens on, your own address — and
    /// say what to fix. Exits 1 if a check fails.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Your address, to check you are not locked out [default: from SSH_CONNECTION].
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        #[arg(long, value_enum, default_value_t = paint::ColorChoice::Auto)]
        color: paint::ColorChoice,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its new passcode, once.
    Add {
        name: String,
        /// Services a call opens (default: the config's default-services).
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long a call's grant lasts (default: grants.ttl-default).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// The PJSIP endpoint whose registered address may be granted.
        #[arg(long)]
        endpoint: Option<String>,
        /// Where the granted address comes from, in order: source, registered, keyed.
        #[arg(long, value_delimiter = ',')]
        address_modes: Vec<String>,
        /// Numbers the owner calls from: still let through (passcode still required) while
        /// passcode entry is suspended for everyone else after a flood of wrong passcodes.
        #[arg(long, value_delimiter = ',')]
        callers: Vec<String>,
    },
    /// Set the numbers an account's owner calls from (none given: clear them).
    Callers {
        name: String,
        #[arg(value_delimiter = ',')]
        numbers: Vec<String>,
    },
    /// List accounts (never passcodes: they are not stored).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give an account a new passcode, printed once; the old one stops working.
    ResetPasscode {
        name: String,
    },
    /// Stop an account's passcode from working, keeping the account.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KnockProfileAction {
    /// Generate a profile — random ports, or a secret from the OS random source — and print the
    /// daemon's config snippet and the client's.
    Add {
        name: String,
        /// static, rotating or spa.
        #[arg(long, value_parser = knock::parse_mode)]
        mode: knockd::Mode,
        /// Comma-separated services a knock opens [default: the config's default-services].
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long a knock opens them [default: the config's grants.ttl-default].
        #[arg(long)]
        ttl: Option<Ttl>,
        /// Ports in a sequence (static, rotating) [default: 4].
        #[arg(long)]
        length: Option<usize>,
        /// Where to write the secret (rotating, spa) [default: /etc/passknock/knock-NAME.secret].
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach passknockd at {path}: {source} (is it running, and are you root?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to passknockd: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::client::ClientError),
    #[error("passknockd sent a reply this passknock cannot read: {0}")]
    Reply(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Knock(#[from] knockd::client::ClientError),
}

/// Standard output as the commands write to it, remembering a failed write: a reader that went
/// away (`passknock list | head -1`) is not the daemon's fault, and must not be reported as a lost
/// connection to it.
pub struct Output<W> {
    inner: W,
    failed: Option<std::io::Error>,
}

impl<W: Write> Output<W> {
    pub fn new(inner: W) -> Output<W> {
        Output { inner, failed: None }
    }

    /// The first write that failed, if one did: the command's own error is then beside the point.
    pub fn failed(&self) -> Option<&std::io::Error> {
        self.failed.as_ref()
    }

    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            if self.failed.is_none() && e.kind() != std::io::ErrorKind::Interrupted {
                self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        }
        r
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

impl Cli {
    fn socket_path(&self) -> Result<PathBuf, CliError> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return Ok(Config::load(c)?.daemon.control_socket);
        }
        Ok(defaults::CONTROL_SOCKET.into())
    }

    /// The daemon config: `--config`, else the installed one, else the embedded example.
    fn daemon_config(&self) -> Result<Config, CliError> {
        if let Some(c) = &self.config {
            return Ok(Config::load(c)?);
        }
        let installed = Path::new(defaults::CONFIG_PATH);
        if installed.exists() {
            return Ok(Config::load(installed)?);
        }
        Ok(Config::embedded())
    }

    /// Runs the command, printing to `out`; an error is what the user is told.
    pub fn run(self, out: &mut impl Write) -> Result<(), CliError> {
        let daemon_config = match &self.command {
            Command::KnockProfile { .. } => Some(self.daemon_config()?),
            _ => None,
        };
        match self.command {
            Command::Knock(args) => {
                return Ok(knockd::client::knock(&args.request(), out)?);
            }
            Command::KnockProfile { action } => {
                let config = daemon_config.expect("read above");
                return knock::run(action, &config, out);
            }
            Command::Doctor { json, address, color } => {
                let opts = crate::cli::doctor::Options {
                    config: self
                        .config
                        .clone()
                        .unwrap_or_else(crate::cli::doctor::default_config),
                    socket: self.socket.clone(),
                    address: address.or_else(|| {
                        std::env::var("SSH_CONNECTION")
                            .ok()
                            .and_then(|s| crate::cli::doctor::ssh_client(&s))
                    }),
                };
                return doctor::show::run(&opts, json, paint::Paint(color.resolve()), out);
            }
            _ => {}
        }
        let socket = self.socket_path()?;
        let (request, json) = match self.command {
            Command::Grant {
                address,
                services,
                ttl,
                note,
            } => (
                Request::Grant {
                    address,
                    services,
                    ttl,
                    note,
                },
                false,
            ),
            Command::Revoke { address } => (Request::Revoke { address }, false),
            Command::List { json } => (Request::List { limit: None }, json),
            Command::Ban { address, ttl, reason } => (Request::Ban { address, ttl, reason }, false),
            Command::Unban { address } => (Request::Unban { address }, false),
            Command::Status { json, color } => return status::show(&socket, json, color.resolve(), out),
            Command::Contacts { json } => (Request::Contacts, json),
            Command::Log {
                since,
                address,
                account,
                json,
            } => {
                let request = Request::Log {
                    since: Some(since),
                    address,
                    account,
                    limit: None,
                };
                return match call(&socket, &request)? {
                    Reply::Events { events, more, .. } if json => {
                        let v = serde_json::json!({ "events": events, "more": more });
                        writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default())?;
                        Ok(())
                    }
                    Reply::Events { events, more, .. } => Ok(history::log(out, &events, more, since.0)?),
                    Reply::Error { message } => Err(CliError::Refused(message)),
                    _ => Err(CliError::Reply(
                        "passknockd answered `log` with something else".into(),
                    )),
                };
            }
            Command::Report { since, json } => (Request::Report { since: Some(since) }, json),
            Command::Calls { json } => (Request::Calls, json),
            Command::Knock { .. } | Command::KnockProfile { .. } | Command::Doctor { .. } => {
                unreachable!("handled above")
            }
            Command::Reload => (Request::Reload, false),
            Command::Account(a) => match a {
                AccountCommand::Add {
                    name,
                    services,
                    ttl,
                    endpoint,
                    address_modes,
                    callers,
                } => (
                    Request::AccountAdd(NewAccount {
                        name,
                        services,
                        ttl,
                        endpoint,
                        address_modes,
                        callers,
                    }),
                    false,
                ),
                AccountCommand::Callers { name, numbers } => (
                    Request::AccountCallers {
                        name,
                        callers: numbers,
                    },
                    false,
                ),
                AccountCommand::List { json } => (Request::AccountList, json),
                AccountCommand::ResetPasscode { name } => (Request::AccountResetPasscode { name }, false),
                AccountCommand::Disable { name } => (Request::AccountDisable { name }, false),
                AccountCommand::Enable { name } => (Request::AccountEnable { name }, false),
                AccountCommand::Remove { name } => (Request::AccountRemove { name }, false),
            },
        };
        let reply = call(&socket, &request)?;
        if json {
            if let Reply::Error { message } = &reply {
                return Err(CliError::Refused(message.clone()));
            }
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&reply).unwrap_or_default()
            )?;
            return Ok(());
        }
        render(&reply, out)
    }
}

fn firewall_note(out: &mut impl Write, a: &Applied) -> std::io::Result<()> {
    if let Some(e) = &a.error {
        writeln!(
            out,
            "  note: saved, but the firewall is not updated yet (passknockd retries): {e}"
        )?;
    }
    Ok(())
}

fn render(reply: &Reply, out: &mut impl Write) -> Result<(), CliError> {
    let now = crate::base::clock::now_ms();
    match reply {
        Reply::Granted {
            grant,
            firewall,
            warning,
        } => {
            writeln!(
                out,
                "granted {} access to {} for {} (until {})",
                grant.address,
                grant.services.join(","),
                left(grant.created, grant.end()),
                utc(grant.end())
            )?;
            if let Some(w) = warning {
                writeln!(out, "  warning: {w}")?;
            }
            firewall_note(out, firewall)?;
        }
        Reply::Revoked {
            address,
            grants,
            firewall,
        } => {
            writeln!(out, "revoked {grants} grant(s) for {address}")?;
            firewall_note(out, firewall)?;
        }
        Reply::Banned { ban, firewall } => {
            writeln!(
                out,
                "banned {} for {} (until {})",
                ban.address,
                left(now, ban.expires),
                utc(ban.expires)
            )?;
            firewall_note(out, firewall)?;
        }
        Reply::Unbanned { address, firewall } => {
            writeln!(out, "unbanned {address}")?;
            firewall_note(out, firewall)?;
        }
        Reply::Listing { now, grants, bans } => list(out, *now, grants, bans)?,
        Reply::Held { address, end, .. } => match end {
            Some(end) => writeln!(out, "{address}: access until {}", utc(*end))?,
            None => writeln!(out, "{address} has no grant")?,
        },
        Reply::Contacts { ami, contacts } => {
            ami_line(out, ami)?;
            if contacts.is_empty() {
                writeln!(out, "no registered contacts")?;
            } else {
                let rows: Vec<[String; 2]> = contacts
                    .iter()
                    .map(|c| {
                        let a: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                        [c.endpoint.clone(), a.join(", ")]
                    })
                    .collect();
                table(out, ["ENDPOINT", "REGISTERED FROM"], &rows)?;
            }
        }
        Reply::Calls { ami, calls } => {
            ami_line(out, ami)?;
            if calls.is_empty() {
                writeln!(out, "no live calls")?;
            } else {
                let rows: Vec<[String; 3]> = calls
                    .iter()
                    .map(|c| [c.channel.clone(), c.address.to_string(), left(c.since, now)])
                    .collect();
                table(out, ["CHANNEL", "REMOTE ADDRESS", "UP FOR"], &rows)?;
            }
        }
        Reply::Status(s) => status::headline(out, s, None, paint::Paint(false))?,
        Reply::AccountCreated { account, passcode } => {
            writeln!(
                out,
                "account {}: {} for {}{}; address from {}",
                account.name,
                account.services.join(","),
                human(Duration::from_secs(account.ttl_secs)),
                account
                    .endpoint
                    .as_ref()
                    .map(|e| format!(", endpoint {e}"))
                    .unwrap_or_default(),
                account.address_modes.join(", then ")
            )?;
            writeln!(out, "passcode: {}", passcode.expose())?;
            writeln!(
                out,
                "This passcode is shown once and stored only as a keyed hash: hand it over now."
            )?;
        }
        Reply::Accounts { accounts } => {
            if accounts.is_empty() {
                writeln!(out, "no accounts")?;
            } else {
                let rows: Vec<[String; 7]> = accounts
                    .iter()
                    .map(|a| {
                        [
                            a.name.clone(),
                            a.services.join(","),
                            human(Duration::from_secs(a.ttl_secs)),
                            a.endpoint.clone().unwrap_or_else(|| "-".into()),
                            a.address_modes.join(","),
                            if a.callers.is_empty() {
                                "-".into()
                            } else {
                                a.callers.join(",")
                            },
                            if a.disabled {
                                "disabled".into()
                            } else {
                                format!("passcode set {}", utc(a.passcode_set))
                            },
                        ]
                    })
                    .collect();
                table(
                    out,
                    [
                        "ACCOUNT",
                        "SERVICES",
                        "TTL",
                        "ENDPOINT",
                        "ADDRESS FROM",
                        "CALLERS",
                        "STATE",
                    ],
                    &rows,
                )?;
            }
        }
        Reply::Events { events, more, .. } => history::log(out, events, *more, defaults::LOG_SINCE)?,
        Reply::Report(r) => history::report(out, r)?,
        Reply::Done { message } => writeln!(out, "{message}")?,
        Reply::Error { message } => return Err(CliError::Refused(message.clone())),
    }
    Ok(())
}

/// A grant as a row: address, services, source, who, time left (`held` marks one a call keeps
/// open), note.
fn grant_row(now: UnixMs, g: &Grant, held: &str) -> [String; 6] {
    let mut exp = left(now, g.end());
    if g.hold_until.is_some_and(|h| h > g.expires) {
        exp.push_str(held);
    }
    [
        g.address.to_string(),
        g.services.join(","),
        g.source.as_str().to_string(),
        g.who.clone(),
        exp,
        g.note.clone(),
    ]
}

fn list(out: &mut impl Write, now: UnixMs, grants: &[Grant], bans: &[Ban]) -> std::io::Result<()> {
    if grants.is_empty() {
        writeln!(out, "no grants")?;
    } else {
        let rows: Vec<[String; 6]> = grants
            .iter()
            .map(|g| grant_row(now, g, " (held: call up)"))
            .collect();
        table(
            out,
            ["ADDRESS", "SERVICES", "SOURCE", "WHO", "EXPIRES IN", "NOTE"],
            &rows,
        )?;
    }
    if !bans.is_empty() {
        writeln!(out)?;
        let rows: Vec<[String; 3]> = bans
            .iter()
            .map(|b| [b.address.to_string(), left(now, b.expires), b.reason.clone()])
            .collect();
        table(out, ["BANNED", "EXPIRES IN", "REASON"], &rows)?;
    }
    Ok(())
}

fn table<const N: usize>(out: &mut impl Write, head: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    for line in table_lines(head, rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A header and rows, each column as wide as its widest cell; the last column is not padded.
fn table_lines<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut width = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut lines = vec![line(head.to_vec())];
    lines.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    lines
}

/// One line on the AMI connection, above `contacts` and `calls`.
fn ami_line(out: &mut impl Write, a: &AmiStatus) -> std::io::Result<()> {
    if !a.enabled {
        return writeln!(
            out,
            "AMI is off ([ami] enabled = false): nothing is learned from Asterisk"
        );
    }
    let state = if a.connected { "connected" } else { "NOT connected" };
    write!(
        out,
        "AMI {} {state}; {} login(s), {} event(s), {} ban(s)",
        a.address, a.logins, a.events, a.bans
    )?;
    if a.skipped > 0 {
        write!(out, ", {} oversized or garbled block(s) dropped", a.skipped)?;
    }
    writeln!(out)?;
    if let (false, Some(e)) = (a.connected, &a.last_error) {
        writeln!(out, "  last error: {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that left after `room` bytes.
    struct Pipe {
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_remembers_the_first_failed_write() {
        let mut out = Output::new(Pipe { room: 4 });
        writeln!(out, "ok").unwrap();
        assert!(out.failed().is_none());
        assert!(writeln!(out, "too much").is_err());
        assert_eq!(
            out.failed().map(|e| e.kind()),
            Some(std::io::ErrorKind::BrokenPipe)
        );
    }
}
