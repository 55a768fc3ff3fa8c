//! Daemon wiring: store, table, engine thread, and the control socket, until shutdown.

pub mod ami;
pub mod args;
pub mod attempts;
pub mod control_server;
pub mod control_slots;
pub mod disa;
pub mod follow;
pub mod knock;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod reload;
pub mod resolve;
pub mod sip_auth;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::clock::Now;
use crate::base::defaults;
use crate::config::{Config, ConfigError};
use crate::daemon::ami::AmiView;
use crate::daemon::control_server::{bind_control, Server, Views};
use crate::daemon::logs::AuditLog;
use crate::daemon::preflight::Ready;
use crate::daemon::reload::Reloader;
use crate::engine::checker::{self, Checker, Link};
use crate::engine::Engine;
use crate::nft::Firewall;
use crate::rules::contacts::Contacts;
use crate::store::history::History;
use crate::store::{Db, StoreError};

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
    #[error("{0}")]
    SipAttempts(String),
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
    let (ami_secret, disa_key, location) = ready.into_parts();
    let store = Db::open(&location)?;
    match store.node() {
        Some(node) => info!(
            "store {location} (PostgreSQL) opened as node {node}; its clock is {} ms ahead of ours",
            store.clock_offset()
        ),
        None => info!("store {location} opened"),
    }
    let link = store.link();
    for l in &config.firewall.trusted_lists {
        info!(
            "trusted list {} ({}): {} network(s), {} DNS name(s)",
            l.name,
            l.path.display(),
            l.nets.len(),
            l.names.len()
        );
    }
    // Before anything can make an audit event: from here on each one is also a history row.
    let history = Arc::new(History::start(&location, config.daemon.history_retention.0)?);
    history.install();
    // The read-back's own connection and table handle: it lists and compares off the engine's
    // thread.
    let reader = store.reader()?;
    // The sets are split by the store's size at start (`firewall.shards = auto`); the engine's
    // table handle and the read-back's must agree on it.
    let (grants, bans) = store.counts().unwrap_or((0, 0));
    let per_set = grants.max(bans) as usize;
    let kernel = || Firewall::from_config(&config).sized(per_set);
    let firewall = kernel();
    let shards = firewall.layout().shards;
    if shards > 1 {
        info!(
            "{grants} grant(s) and {bans} ban(s) in the store: each timeout set is split in {shards} shards"
        );
    }
    let mut engine = Engine::new(config.clone(), store, firewall, Now::read());
    let mut checker = Checker {
        reader,
        kernel: kernel(),
        clock: engine.clock(),
        heap: Default::default(),
    };
    // Filled once the knock listener runs: a reload then swaps its profiles in place.
    let knock_slot = crate::daemon::knock::KnockSlot::default();
    if let Some(mut w) = crate::daemon::notify::Watchdog::from_env() {
        engine.set_heartbeat(Box::new(move |now: Instant| {
            w.tick(now);
            w.until_due(now)
        }));
    }
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
    let now = Now::read();
    engine.start(now);
    match engine.run_passes(now, |req| checker.pass(req)) {
        Some(Ok(r)) => info!("table inet {} applied: {r}", defaults::TABLE),
        // The store is the truth; the engine keeps retrying, and `passknock status` says why.
        Some(Err(e)) => warn!("table not applied yet: {e}"),
        None => warn!("table not applied yet: the first read-back did not run"),
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
    let (handle, inbox) = crate::engine::channel(QUEUE);
    let (passes, asked) = std::sync::mpsc::channel();
    let (found, outcomes) = std::sync::mpsc::channel();
    engine.set_checker(Link { passes, outcomes });
    std::thread::Builder::new()
        .name("readback".into())
        .spawn(move || {
            // Under load the read-back takes the smallest share of the CPU; when the CPU is free
            // it still gives its core up every half millisecond (`base::pace`, set on in `serve`).
            // SAFETY: setpriority on this thread's own id; no memory is touched.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
            }
            checker::serve(checker, asked, found)
        })
        .map_err(|e| DaemonError::Engine(e.to_string()))?;
    let engine = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine.run(inbox))
        .map_err(|e| DaemonError::Engine(e.to_string()))?;
    // With a shared store: other nodes' changes reach this table, and every reconnect resyncs.
    if let (crate::store::Location::Postgres(target), Some(link)) = (&location, link) {
        crate::daemon::follow::spawn(target.clone(), link, handle.clone(), shutdown.clone())
            .map_err(|e| DaemonError::Engine(e.to_string()))?;
    }
    // Filled by the AMI listener; read by the DISA flow ("registered" address) and the CLI.
    let contacts = Contacts::default();
    // Filled by the SIP attempt reader; read by the DISA flow ("attempted" address) and the CLI.
    let attempts = crate::daemon::attempts::memory(&config);
    let endpoints = crate::daemon::attempts::Endpoints::default();
    let ami_view = AmiView::default();
    // Listeners for calls, knocks and AMI get a clone of `handle` here, each with `shutdown`.
    // Knocks first: if the NFLOG group cannot be had, nothing else holds a handle yet.
    let knock = match crate::daemon::knock::spawn(
        &config,
        &location,
        handle.clone(),
        contacts.clone(),
        shutdown.clone(),
    ) {
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
    let sip_attempts = match crate::daemon::attempts::spawn(
        &config,
        attempts.clone(),
        endpoints.clone(),
        handle.clone(),
        shutdown.clone(),
    ) {
        Ok(task) => task,
        Err(e) => {
            // Stop what started: the knock listener ends with `shutdown`, the engine once its
            // handles are gone.
            shutdown.cancel();
            if let Some(k) = knock {
                let _ = k.await;
            }
            drop(handle);
            let _ = tokio::task::spawn_blocking(move || engine.join()).await;
            let _ = std::fs::remove_file(&config.daemon.control_socket);
            return Err(DaemonError::SipAttempts(e));
        }
    };
    if let (Some(key), Some(agi_listener)) = (disa_key, agi_listener) {
        let backend = Arc::new(crate::daemon::disa::DisaBackend::new(
            &config,
            &location,
            handle.clone(),
            contacts.clone(),
            attempts.clone(),
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
            location.clone(),
            secret,
            handle.clone(),
            contacts.clone(),
            ami_view.clone(),
            shutdown.clone(),
        ))
    });
    let resolve_now = Arc::new(tokio::sync::Notify::new());
    let resolver =
        crate::daemon::resolve::spawn(&config, handle.clone(), resolve_now.clone(), shutdown.clone());
    let views = Views {
        contacts,
        attempts,
        endpoints,
        ami: ami_view,
        history: history.clone(),
        resolve_now,
    };
    let reloader = Reloader::new(handle.clone(), config_path, config.clone(), knock_slot, audit);
    crate::daemon::reload::watch_sighup(reloader.clone(), shutdown.clone());
    info!(
        "ready: control socket {}, services {}",
        config.daemon.control_socket.display(),
        config.services.keys().cloned().collect::<Vec<_>>().join(",")
    );
    let _ = crate::daemon::notify::notify("READY=1\nSTATUS=table applied; serving");
    let server = Server {
        engine: handle,
        views,
        reloader,
    };
    crate::daemon::control_server::serve(listener, server, shutdown.clone()).await;
    // Each holds an engine handle: they must be gone before the engine can finish.
    if let Some(k) = knock {
        let _ = k.await;
    }
    if let Some(ami) = ami {
        let _ = ami.await;
    }
    if let Some(a) = sip_attempts {
        let _ = a.await;
    }
    let _ = resolver.await;
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
