//! The admin CLI: `passknock grant|revoke|list|ban|unban|status|contacts|calls|log|report`, over the control
//! socket; and `passknock knock` (the laptop's side) and `passknock knock-profile add`, which need
//! no daemon.
//!
//! This file runs each command; `args.rs` is the command line as clap reads it, `render.rs` the
//! daemon's replies as text.

mod allow;
mod args;
pub mod doctor;
mod history;
mod knock;
mod paint;
mod render;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::base::defaults;
use crate::config::Config;
use crate::control::client::call;
use crate::control::{NewAccount, Reply, Request};

pub use args::{AccountCommand, AllowAction, AllowArgs, Cli, Command, KnockProfileAction};
use render::render;
// Rows and tables the other commands print too.
use render::{grant_row, table_lines};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
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
            Command::Attempts { json } => (Request::Attempts, json),
            Command::Knock { .. } | Command::KnockProfile { .. } | Command::Doctor { .. } => {
                unreachable!("handled above")
            }
            Command::Reload => (Request::Reload, false),
            Command::Allow(a) => match a.action {
                Some(AllowAction::List { json }) => (Request::AllowList, json),
                Some(AllowAction::Remove { name }) => (Request::AllowRemove { name }, false),
                None => (
                    Request::AllowAdd {
                        name: a.name.unwrap_or_default(),
                        targets: a.targets,
                        services: a.services,
                        note: a.note,
                    },
                    false,
                ),
            },
            Command::Account(a) => match a {
                AccountCommand::Add {
                    name,
                    services,
                    ttl,
                    endpoint,
                    address_modes,
                    callers,
                    keep_several,
                } => (
                    Request::AccountAdd(NewAccount {
                        name,
                        services,
                        ttl,
                        endpoint,
                        address_modes,
                        callers,
                        keep_several,
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
