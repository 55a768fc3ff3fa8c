//! The control socket server: one task per connection, each request line converted once into
//! an engine command (or answered from the daemon's own views), each typed result converted once
//! into a reply line.

use std::net::IpAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::ami::AmiView;
use super::control_slots::{Slot, Slots};
use super::reload::Reloader;
use super::DaemonError;
use crate::base::addr;
use crate::base::clock::{now_ms, UnixMs};
use crate::base::defaults;
use crate::base::duration::Ttl;
use crate::control::{self, Applied, Lines, NewAccount, Reply, Request, TooLong};
use crate::engine::{
    self, AccountAsk, Actor, BanAsk, EngineHandle, GrantAsk, Refused, Services, StandingAsk,
};
use crate::model::{Event, Kind, Source};
use crate::observe::audit;
use crate::rules::contacts::Contacts;
use crate::store::history::{EventLog, History};
use crate::store::StoreError;

pub async fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    // lstat: a symlink is judged as itself, never followed to whatever it names.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => return Err(DaemonError::AlreadyRunning(path.to_path_buf())),
            // Nobody listening: a socket left by a daemon that died, and safe to replace.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(sock_err)?
            }
            Err(e) => return Err(sock_err(e)),
        },
        Ok(meta) => return Err(DaemonError::NotASocket(path.to_path_buf(), kind(&meta))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    // Only root (the owner) may talk to the daemon: the socket is 0600 from the moment it exists.
    // SAFETY: umask(2) cannot fail; it is restored right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    bound.map_err(sock_err)
}

/// What sits at a path, in words, for a refusal.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a named pipe"
    } else {
        "a device"
    }
}

/// What the daemon answers itself, without the engine: state other tasks keep, and the history.
#[derive(Clone)]
pub struct Views {
    pub contacts: Contacts,
    /// Dropped registration attempts, and the account endpoints they are kept for.
    pub attempts: crate::rules::attempts::SeenAttempts,
    pub endpoints: crate::daemon::attempts::Endpoints,
    pub ami: AmiView,
    pub history: Arc<History>,
    /// Wakes the resolver (`resolve.rs`) at once: a standing entry was added.
    pub resolve_now: Arc<tokio::sync::Notify>,
}

impl Views {
    /// Runs `f` on a history reader off the async threads, once the rows queued before this
    /// request are committed, so an event a command just caused is in what it reads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EventLog, UnixMs) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let h = self.history.clone();
        tokio::task::spawn_blocking(move || {
            if !h.flush(defaults::HISTORY_FLUSH_WAIT) {
                warn!("history: the newest events are not committed yet; reading what is there");
            }
            f(&h.reader()?, now_ms())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("history: {e}"))
    }

    /// Every remembered attempt, per account endpoint, newest first.
    fn attempts_reply(&self) -> Reply {
        let now = now_ms();
        let mut attempts: Vec<control::AttemptEntry> = Vec::new();
        for endpoint in self.endpoints.list() {
            let a = self.attempts.lookup(now, &endpoint);
            attempts.extend(a.sightings.iter().map(|s| control::AttemptEntry {
                endpoint: endpoint.clone(),
                address: s.source,
                count: s.count,
                last_seen: s.last_seen,
                user_agent: s.user_agent().map(str::to_string),
                complete: a.complete,
            }));
        }
        attempts.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        Reply::Attempts {
            active: crate::observe::attempts::SIP_ATTEMPTS.is_active(),
            now,
            attempts,
        }
    }

    /// The engine's status with the last hour's and day's counts from the history.
    async fn status(&self, s: engine::TableStatus) -> Reply {
        let now = s.now;
        let tally = self
            .read(move |log, _| Ok((log.tally(now - HOUR)?, log.tally(now - 24 * HOUR)?)))
            .await;
        let tally = match tally {
            // A shared store that is away: the status still says what this node has, and its
            // store line says why the counts are missing.
            Err(_) if s.cluster.as_ref().is_some_and(|c| !c.connected) => Ok(Default::default()),
            t => t,
        };
        match tally {
            Ok((last_hour, last_24h)) => Reply::Status(Box::new(control::Status {
                table: s.table,
                table_present: s.table_present,
                in_sync: s.in_sync,
                sync_detail: s.sync_detail,
                grants: s.grants,
                bans: s.bans,
                elements: s.elements,
                services: s.services,
                store: s.store,
                last_reconcile: s.last_reconcile,
                firewall_error: s.firewall_error,
                firewall_path: s.firewall_path,
                now: s.now,
                standing: s.standing,
                names: s.names,
                last_hour,
                last_24h,
                sip_attempts: crate::observe::attempts::SIP_ATTEMPTS.counts(),
                sip_door: s.sip_door,
                sip_rate_drops: s.sip_rate_drops,
                cluster: s.cluster,
            })),
            Err(e) => Reply::error(e),
        }
    }

    async fn log(
        &self,
        since: Option<Ttl>,
        address: Option<IpAddr>,
        account: Option<String>,
        limit: Option<usize>,
    ) -> Reply {
        let since = since.map_or(defaults::LOG_SINCE, |t| t.0);
        let limit = limit.unwrap_or(defaults::LOG_ROWS).min(defaults::LOG_ROWS);
        let r = self
            .read(move |log, now| {
                let (events, more) = log.query(
                    now - ms(since),
                    address.map(addr::normalize),
                    account.as_deref(),
                    limit,
                )?;
                Ok(Reply::Events { now, events, more })
            })
            .await;
        r.unwrap_or_else(Reply::error)
    }

    async fn report(&self, since: Option<Ttl>) -> Reply {
        let since = since.map_or(defaults::LOG_SINCE, |t| t.0);
        let r = self
            .read(move |log, now| Ok(Reply::Report(Box::new(log.report(now - ms(since), now)?))))
            .await;
        r.unwrap_or_else(Reply::error)
    }
}

const HOUR: UnixMs = 3_600_000;

fn ms(d: std::time::Duration) -> UnixMs {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Serves the control socket until `shutdown`.
pub async fn serve(listener: UnixListener, server: Server, shutdown: CancellationToken) {
    // Each connection is a descriptor and a task: without a cap, idle ones piled up for good.
    let slots = Slots::new(defaults::CONTROL_MAX_CONNECTIONS);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(slot) = slots.take() else {
                        // Every connection has a request in hand: say so rather than queue.
                        warn!(
                            "control socket: {} connections busy; refusing one",
                            defaults::CONTROL_MAX_CONNECTIONS
                        );
                        let _ = stream.try_write(BUSY);
                        continue;
                    };
                    let server = server.clone();
                    let stop = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve_connection(stream, slot, server) => {}
                        }
                    });
                }
                Err(e) => {
                    warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The reply to a connection past the cap when none can make room; written without waiting.
const BUSY: &[u8] =
    b"{\"reply\":\"error\",\"message\":\"the daemon is busy: too many control connections; try again\"}\n";

/// Serves one control connection until the peer closes it, stays idle past
/// [`defaults::CONTROL_IDLE_TIMEOUT`], or its slot is taken by a newer connection.
async fn serve_connection(stream: UnixStream, mut slot: Slot, server: Server) {
    let who = match stream.peer_cred() {
        Ok(c) => format!("uid {}", c.uid()),
        Err(_) => "unknown".into(),
    };
    let actor = Actor::new(who, Source::Admin);
    let idle = defaults::CONTROL_IDLE_TIMEOUT;
    let (mut read, mut write) = stream.into_split();
    let mut lines = Lines::new(defaults::CONTROL_MAX_LINE);
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let line = match lines.next_line() {
            Some(Ok(line)) => line,
            Some(Err(TooLong { .. })) => {
                let r = Reply::error("request too long");
                let _ = tokio::time::timeout(idle, write_reply(&mut write, &r)).await;
                return;
            }
            None => {
                slot.idle();
                let n = tokio::select! {
                    // A request already sent is served even when the slot was just given away.
                    biased;
                    read = tokio::time::timeout(idle, read.read(&mut chunk)) => match read {
                        Ok(Ok(n)) => n,
                        // Idle too long, or a read error: either way, nothing more to serve.
                        Err(_) | Ok(Err(_)) => return,
                    },
                    _ = slot.evicted() => return,
                };
                if n == 0 {
                    match lines.finish() {
                        Some(last) => last,
                        None => return,
                    }
                } else {
                    lines.feed(&chunk[..n]);
                    continue;
                }
            }
        };
        slot.busy();
        let reply = match control::parse_request(&line) {
            Ok(request) => server.answer(request, &actor).await,
            Err(e) => Reply::error(e),
        };
        // A peer that stops reading its reply is as idle as one that stops writing.
        match tokio::time::timeout(idle, write_reply(&mut write, &reply)).await {
            Ok(Ok(())) => {}
            Err(_) | Ok(Err(_)) => return,
        }
    }
}

async fn write_reply(w: &mut (impl AsyncWriteExt + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(reply)
        .unwrap_or_else(|_| b"{\"reply\":\"error\",\"message\":\"unencodable reply\"}".to_vec());
    out.push(b'\n');
    w.write_all(&out).await
}

/// Everything a connection may need to answer a request.
#[derive(Clone)]
pub struct Server {
    pub engine: EngineHandle,
    pub views: Views,
    pub reloader: Reloader,
}

impl Server {
    /// The one place a wire request becomes a command and a command's result a reply.
    async fn answer(&self, request: Request, actor: &Actor) -> Reply {
        let engine = &self.engine;
        match request {
            Request::Grant {
                address,
                services,
                ttl,
                note,
            } => {
                let address = match addr::parse_host(&address) {
                    Ok(ip) => ip,
                    Err(e) => return refused_grant(actor, e.to_string()),
                };
                let ask = GrantAsk {
                    address,
                    services: Services::from_names(&services),
                    ttl,
                    note,
                    owner: None,
                };
                reply(engine.grant(actor, ask).await, |g| Reply::Granted {
                    grant: g.grant,
                    firewall: applied(g.firewall),
                    warning: g.warning,
                })
            }
            Request::Revoke { address } => match parse(&address) {
                Ok(ip) => reply(engine.revoke(actor, ip).await, |r| Reply::Revoked {
                    address: r.address,
                    grants: r.grants,
                    firewall: applied(r.firewall),
                }),
                Err(e) => Reply::error(e),
            },
            Request::Ban { address, ttl, reason } => match parse(&address) {
                Ok(address) => reply(engine.ban(actor, BanAsk { address, ttl, reason }).await, |b| {
                    Reply::Banned {
                        ban: b.ban,
                        firewall: applied(b.firewall),
                    }
                }),
                Err(e) => Reply::error(e),
            },
            Request::Unban { address } => match parse(&address) {
                Ok(ip) => reply(engine.unban(actor, ip).await, |u| Reply::Unbanned {
                    address: u.address,
                    firewall: applied(u.firewall),
                }),
                Err(e) => Reply::error(e),
            },
            Request::List { limit } => reply(engine.list(actor, limit).await, |l| Reply::Listing {
                now: l.now,
                grants: l.grants,
                bans: l.bans,
            }),
            Request::Status => match engine.status(actor).await {
                Ok(s) => self.views.status(s).await,
                Err(e) => Reply::error(e.0),
            },
            Request::Contacts => self.views.ami.contacts_reply(&self.views.contacts),
            Request::Calls => self.views.ami.calls_reply(),
            Request::Attempts => self.views.attempts_reply(),
            Request::Reload => match self.reloader.reload(actor).await {
                Ok(message) => Reply::Done { message },
                Err(message) => Reply::Error { message },
            },
            Request::AccountAdd(NewAccount {
                name,
                services,
                ttl,
                endpoint,
                address_modes,
                callers,
                keep_several,
            }) => {
                let ask = AccountAsk {
                    name,
                    services,
                    ttl,
                    endpoint,
                    address_modes,
                    callers,
                    keep_several,
                };
                reply(engine.account_add(actor, ask).await, |a| Reply::AccountCreated {
                    account: a.account,
                    passcode: a.passcode,
                })
            }
            Request::AccountList => reply(engine.accounts(actor).await, |accounts| Reply::Accounts {
                accounts,
            }),
            Request::AccountCallers { name, callers } => {
                let r = engine.account_callers(actor, name.clone(), callers).await;
                reply(r, |callers| Reply::Done {
                    message: if callers.is_empty() {
                        format!("account {name} has no owner numbers")
                    } else {
                        format!("account {name}: owner numbers {}", callers.join(", "))
                    },
                })
            }
            Request::AccountResetPasscode { name } => {
                reply(engine.account_reset_passcode(actor, name).await, |a| {
                    Reply::AccountCreated {
                        account: a.account,
                        passcode: a.passcode,
                    }
                })
            }
            Request::AccountDisable { name } => self.set_disabled(actor, name, true).await,
            Request::AccountEnable { name } => self.set_disabled(actor, name, false).await,
            Request::AccountRemove { name } => {
                let r = engine.account_remove(actor, name.clone()).await;
                reply(r, |()| Reply::Done {
                    message: format!("account {name} removed"),
                })
            }
            Request::Log {
                since,
                address,
                account,
                limit,
            } => self.views.log(since, address, account, limit).await,
            Request::Report { since } => self.views.report(since).await,
            Request::AllowAdd {
                name,
                targets,
                services,
                note,
            } => {
                let ask = StandingAsk {
                    name,
                    targets,
                    services,
                    note,
                };
                let r = engine.standing_add(actor, ask).await;
                if r.is_ok() {
                    // Its names are resolved now, not at the next period.
                    self.views.resolve_now.notify_one();
                }
                reply(r, |c| Reply::Standing {
                    entry: c.entry,
                    removed: false,
                    firewall: applied(c.firewall),
                })
            }
            Request::AllowList => reply(engine.standing_list(actor).await, |l| Reply::StandingList {
                now: l.now,
                entries: l.entries,
                names: l.names,
            }),
            Request::AllowRemove { name } => {
                reply(engine.standing_remove(actor, name).await, |c| Reply::Standing {
                    entry: c.entry,
                    removed: true,
                    firewall: applied(c.firewall),
                })
            }
        }
    }

    async fn set_disabled(&self, actor: &Actor, name: String, disabled: bool) -> Reply {
        let r = self
            .engine
            .account_set_disabled(actor, name.clone(), disabled)
            .await;
        let verb = if disabled { "disabled" } else { "enabled" };
        reply(r, |()| Reply::Done {
            message: format!("account {name} {verb}"),
        })
    }
}

/// An address as the wire spells it; the error is what the asker is told.
fn parse(address: &str) -> Result<IpAddr, String> {
    addr::parse_host(address).map_err(|e| e.to_string())
}

/// A grant refused before it reached the engine still goes in the audit log, as the engine's
/// own refusals do.
fn refused_grant(actor: &Actor, message: String) -> Reply {
    audit::record(
        Event::new(Kind::GrantRefused, now_ms())
            .who(actor.who.as_str())
            .source(actor.source)
            .detail(message.clone()),
    );
    Reply::error(message)
}

fn reply<T>(result: Result<T, Refused>, ok: impl FnOnce(T) -> Reply) -> Reply {
    match result {
        Ok(t) => ok(t),
        Err(Refused(message)) => Reply::Error { message },
    }
}

fn applied(a: engine::TableChange) -> Applied {
    Applied { error: a.error }
}
