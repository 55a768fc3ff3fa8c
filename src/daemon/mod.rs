//! Daemon wiring: store, table, engine thread, and the control socket, until shutdown.

pub mod ami;
pub mod args;
pub mod control_slots;
pub mod disa;
pub mod knock;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod preflight;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::net::IpAddr;
use std::sync::Arc;

use crate::base::addr;
use crate::base::clock::{now_ms, UnixMs};
use crate::base::defaults;
use crate::base::duration::Ttl;
use crate::config::{Config, ConfigError};
use crate::control::{self, Lines, Reply, Request, TooLong};
use crate::daemon::ami::AmiView;
use crate::daemon::control_slots::{Slot, Slots};
use crate::daemon::logs::AuditLog;
use crate::daemon::preflight::Ready;
use crate::engine::EngineHandle;
use crate::engine::{Engine, Job};
use crate::model::Source;
use crate::nft::{Firewall, Layout, Nft};
use crate::rules::contacts::Contacts;
use crate::store::history::{EventLog, History};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another passknockd is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error(
        "the control socket path {0} holds something that is not a socket ({1}); it is left \
         alone: move it away, or set daemon.control-socket to another path"
    )]
    NotASocket(PathBuf, &'static str),
    #[error("cannot serve the control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the engine thread failed: {0}")]
    Engine(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Knock(#[from] crate::daemon::knock::KnockError),
    #[error("DISA: {0}")]
    Secret(#[from] crate::base::secret::SecretError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for FastAGI on {address}: {source}")]
    Agi {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Pending requests the engine may hold before callers are told it is busy.
const QUEUE: usize = 4096;

/// Runs the daemon until `shutdown` is cancelled. `config_path` is where SIGHUP re-reads it from.
/// `ready` is what [`preflight`](crate::daemon::preflight::preflight) read: secrets were refused and paths
/// checked before anything was touched. `audit` is the audit file, if the logs have one: each
/// reload (SIGHUP or `passknock reload`) reopens it, so logrotate loses no line.
pub async fn run(
    config: Config,
    ready: Ready,
    config_path: Option<PathBuf>,
    audit: Option<AuditLog>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let (ami_secret, disa_key) = ready.into_parts();
    let store = Store::open(&config.daemon.store)?;
    info!("store {} opened", store.path().display());
    // Before anything can make an audit event: from here on each one is also a history row.
    let history = Arc::new(History::start(
        &config.daemon.store,
        config.daemon.history_retention.0,
    )?);
    history.install();
    let layout = Layout::from_config(&config);
    let firewall = Firewall::new(Nft::new(&config.firewall.nft), layout);
    let mut engine = Engine::new(config.clone(), store, firewall);
    if let Some(p) = &config_path {
        engine.set_config_path(p.clone());
    }
    // Filled once the knock listener runs: a reload then swaps its profiles in place.
    let knock_slot = crate::daemon::knock::KnockSlot::default();
    if let Some(w) = crate::daemon::notify::Watchdog::from_env() {
        engine.set_watchdog(w);
    }
    engine.set_knock_slot(knock_slot.clone());
    let disa_key = if config.disa.enabled {
        let key = match disa_key {
            Some(key) => key,
            // Checked to be creatable; made now, 0600.
            None => crate::daemon::disa::load_key(&config.disa.key_file)?,
        };
        engine.set_disa_key(key.clone());
        Some(key)
    } else {
        None
    };
    match engine.start() {
        Ok(r) => info!("table inet {} applied: {r}", defaults::TABLE),
        // The store is the truth; the engine keeps retrying, and `passknock status` says why.
        Err(e) => warn!("table not applied yet: {e}"),
    }
    let listener = bind_control(&config.daemon.control_socket).await?;
    // Bound before "ready": a call arriving right after start finds the listener.
    let agi_listener = if config.disa.enabled {
        Some(
            tokio::net::TcpListener::bind(config.agi.listen)
                .await
                .map_err(|source| DaemonError::Agi {
                    address: config.agi.listen,
                    source,
                })?,
        )
    } else {
        None
    };
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let engine = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine.run(rx))
        .map_err(|e| DaemonError::Engine(e.to_string()))?;
    let handle = EngineHandle::new(tx);
    // Filled by the AMI listener; read by the DISA flow ("registered" address) and the CLI.
    let contacts = Contacts::default();
    let ami_view = AmiView::default();
    // Listeners for calls, knocks and AMI get a clone of `handle` here, each with `shutdown`.
    // Knocks first: if the NFLOG group cannot be had, nothing else holds a handle yet.
    let knock = match crate::daemon::knock::spawn(&config, handle.clone(), shutdown.clone()) {
        Ok(Some((task, reload))) => {
            knock_slot.set(reload);
            Some(task)
        }
        Ok(None) => None,
        Err(e) => {
            // Stop what started: the engine ends once its handles are gone.
            drop(handle);
            let _ = tokio::task::spawn_blocking(move || engine.join()).await;
            let _ = std::fs::remove_file(&config.daemon.control_socket);
            return Err(e.into());
        }
    };
    if let (Some(key), Some(agi_listener)) = (disa_key, agi_listener) {
        let backend = Arc::new(crate::daemon::disa::DisaBackend::new(
            &config,
            handle.clone(),
            contacts.clone(),
            key,
        )?);
        let cfg = config.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { crate::daemon::disa::serve(agi_listener, &cfg, backend, stop).await });
        info!("DISA: FastAGI on {}", config.agi.listen);
    }
    if config.metrics.enabled {
        let l = tokio::net::TcpListener::bind(config.metrics.listen)
            .await
            .map_err(|source| DaemonError::Metrics {
                address: config.metrics.listen,
                source,
            })?;
        tokio::spawn(crate::daemon::metrics::serve(l, shutdown.clone()));
        info!("metrics on http://{}/metrics", config.metrics.listen);
    }
    let ami = ami_secret.map(|secret| {
        info!(
            "AMI: listening to {} as {}",
            config.ami.address, config.ami.username
        );
        tokio::spawn(crate::daemon::ami::run(
            config.clone(),
            secret,
            handle.clone(),
            contacts.clone(),
            ami_view.clone(),
            shutdown.clone(),
        ))
    });
    let views = Views {
        contacts,
        ami: ami_view,
        audit: audit.clone(),
        history: history.clone(),
    };
    watch_reload(handle.clone(), audit, shutdown.clone());
    info!(
        "ready: control socket {}, services {}",
        config.daemon.control_socket.display(),
        config.services.keys().cloned().collect::<Vec<_>>().join(",")
    );
    let _ = crate::daemon::notify::notify("READY=1\nSTATUS=table applied; serving");
    serve_control(listener, handle, views, shutdown.clone()).await;
    // Each holds an engine handle: they must be gone before the engine can finish.
    if let Some(k) = knock {
        let _ = k.await;
    }
    if let Some(ami) = ami {
        let _ = ami.await;
    }
    let _ = crate::daemon::notify::notify("STOPPING=1");
    // The last events (a shutdown's grants ended, a knock refused a moment ago) are kept.
    let h = history.clone();
    let _ = tokio::task::spawn_blocking(move || h.flush(defaults::HISTORY_FLUSH_WAIT)).await;
    // Every sender is gone once the server stops; the engine finishes its queue and returns.
    tokio::task::spawn_blocking(move || engine.join())
        .await
        .map_err(|e| DaemonError::Engine(e.to_string()))?
        .map_err(|_| DaemonError::Engine("panicked".into()))?;
    let _ = std::fs::remove_file(&config.daemon.control_socket);
    Ok(())
}

/// Reopens the audit file before a reload's own audit line, so that line is the new file's first.
/// Done whatever becomes of the config: logrotate's signal must never leave lines in a moved file.
fn reopen_audit(audit: Option<&AuditLog>) {
    if let Some(log) = audit {
        if let Err(e) = log.reopen() {
            warn!("audit lines still go to the file opened before: {e}");
        }
    }
}

/// SIGHUP reopens the audit file and re-reads the config through the engine; a bad config is
/// logged and changes nothing.
fn watch_reload(engine: EngineHandle, audit: Option<AuditLog>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            warn!("cannot watch SIGHUP: reload with `passknock reload`");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {}
            }
            let _ = crate::daemon::notify::notify("RELOADING=1");
            reopen_audit(audit.as_ref());
            match engine.submit(Request::Reload, "SIGHUP", Source::Admin).await {
                Reply::Done { message } => info!("SIGHUP: {message}"),
                Reply::Error { message } => warn!("SIGHUP: {message}"),
                _ => {}
            }
            let _ = crate::daemon::notify::notify("READY=1");
        }
    });
}

async fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
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
struct Views {
    contacts: Contacts,
    ami: AmiView,
    audit: Option<AuditLog>,
    history: Arc<History>,
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

    /// The engine's status with the last hour's and day's counts from the history.
    async fn status(&self, reply: Reply) -> Reply {
        let Reply::Status(mut s) = reply else {
            return reply;
        };
        let now = s.now;
        match self
            .read(move |log, _| Ok((log.tally(now - HOUR)?, log.tally(now - 24 * HOUR)?)))
            .await
        {
            Ok((hour, day)) => {
                s.last_hour = hour;
                s.last_24h = day;
                Reply::Status(s)
            }
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

async fn serve_control(
    listener: UnixListener,
    engine: EngineHandle,
    views: Views,
    shutdown: CancellationToken,
) {
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
                    let engine = engine.clone();
                    let views = views.clone();
                    let stop = shutdown.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve_connection(stream, slot, engine, views) => {}
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
async fn serve_connection(stream: UnixStream, mut slot: Slot, engine: EngineHandle, views: Views) {
    let who = match stream.peer_cred() {
        Ok(c) => format!("uid {}", c.uid()),
        Err(_) => "unknown".into(),
    };
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
            Ok(Request::Contacts) => views.ami.contacts_reply(&views.contacts),
            Ok(Request::Calls) => views.ami.calls_reply(),
            Ok(Request::Reload) => {
                reopen_audit(views.audit.as_ref());
                engine.submit(Request::Reload, &who, Source::Admin).await
            }
            Ok(Request::Status) => {
                let reply = engine.submit(Request::Status, &who, Source::Admin).await;
                views.status(reply).await
            }
            Ok(Request::Log {
                since,
                address,
                account,
                limit,
            }) => views.log(since, address, account, limit).await,
            Ok(Request::Report { since }) => views.report(since).await,
            Ok(request) => engine.submit(request, &who, Source::Admin).await,
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
