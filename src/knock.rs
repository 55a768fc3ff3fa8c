//! The knock listener's wiring: the gate built from config, the NFLOG thread that feeds it, the
//! replay log that outlives restarts, and grants submitted to the engine like any other.
//!
//! Order matters for replays: a knock's replay entry is on disk before its grant is asked for,
//! so a crash in between burns the knock rather than lets it work twice.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use knockd::gate::{Gate, KnockOutcome, REPLAY_MAX};
use knockd::replay::ReplayMark;
use knockd::Mode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::config::{Config, ConfigError};
use crate::control::{Reply, Request};
use crate::daemon::EngineHandle;
use crate::store::{ReplayLog, Source, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KnockError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("knock profiles: {0}")]
    Gate(String),
    #[error("knock replay log: {0}")]
    Store(#[from] StoreError),
    #[error("knock listener: {0}")]
    Listen(String),
}

/// Grants the NFLOG thread hands to the async side, at most this many waiting.
const PENDING: usize = 256;
/// Refused-knock audit lines per second, at most: a replayed packet in a flood must not flood
/// the log.
const REFUSALS_PER_SEC: u32 = 10;

/// A grant a knock earned.
#[derive(Debug)]
struct Earned {
    profile: String,
    mode: Mode,
    address: IpAddr,
    source: IpAddr,
}

/// Starts the knock listener if the config has profiles: binds the NFLOG group now (so a bad
/// group fails the start), then listens on a thread of its own until `shutdown`. The returned
/// task ends after shutdown, dropping its engine handle.
pub fn spawn(
    config: &Config,
    engine: EngineHandle,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, KnockError> {
    if config.knock.profiles.is_empty() {
        return Ok(None);
    }
    let profiles = config.knock_profiles()?;
    let names: Vec<String> = profiles
        .iter()
        .map(|p| format!("{} ({})", p.name, p.kind.mode().name()))
        .collect();
    let mut gate = Gate::new(profiles, config.knock.max_in_progress, REPLAY_MAX).map_err(KnockError::Gate)?;
    let log = ReplayLog::open(&config.daemon.store)?;
    let now = now_ms();
    let marks = log.load(now)?;
    for (key, until) in &marks {
        gate.remember(
            &ReplayMark {
                key: key.clone(),
                until: *until,
            },
            now,
        );
    }
    let (tx, rx) = mpsc::channel::<Earned>(PENDING);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = listen_thread(config.knock.nflog_group, gate, log, tx, stop.clone())?;
    info!(
        "knock listener on NFLOG group {}: profiles {}; {} replay entr(ies) remembered",
        config.knock.nflog_group,
        names.join(", "),
        marks.len()
    );
    let config = config.clone();
    Ok(Some(tokio::spawn(async move {
        submit_grants(config, engine, rx, shutdown).await;
        // The thread notices within a wake interval; wait, so its last words are logged.
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    })))
}

#[cfg(target_os = "linux")]
fn listen_thread(
    group: u16,
    mut gate: Gate,
    log: ReplayLog,
    tx: mpsc::Sender<Earned>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, KnockError> {
    let mut nflog = knockd::nflog::Nflog::bind(group).map_err(|e| KnockError::Listen(e.to_string()))?;
    std::thread::Builder::new()
        .name("knock".into())
        .spawn(move || {
            let mut refusals = RateLimit::new(REFUSALS_PER_SEC);
            let r = nflog.run(&mut gate, &stop, |outcome| {
                on_outcome(outcome, &log, &tx, &mut refusals)
            });
            if let Err(e) = r {
                warn!("knock listener stopped: {e}");
            }
            let s = gate.stats();
            info!(
                "knock listener stopped: {} packet(s), {} grant(s), {} refused, {} sequence(s) started, \
                 {} evicted, {} SPA with a bad tag, {} kernel overrun(s)",
                s.packets,
                s.grants,
                s.refused,
                s.sequences.started,
                s.sequences.evicted,
                s.spa_bad_tag,
                nflog.overruns
            );
        })
        .map_err(|e| KnockError::Listen(e.to_string()))
}

#[cfg(not(target_os = "linux"))]
fn listen_thread(
    _group: u16,
    _gate: Gate,
    _log: ReplayLog,
    _tx: mpsc::Sender<Earned>,
    _stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, KnockError> {
    Err(KnockError::Listen("knock listening needs Linux (NFLOG)".into()))
}

/// On the NFLOG thread: make the replay entry durable, then hand the grant on.
fn on_outcome(outcome: KnockOutcome, log: &ReplayLog, tx: &mpsc::Sender<Earned>, refusals: &mut RateLimit) {
    match outcome {
        KnockOutcome::Grant {
            profile,
            mode,
            address,
            source,
            mark,
        } => {
            if let Some(m) = mark {
                if let Err(e) = log.remember(&m.key, m.until) {
                    warn!("knock from {source} (profile {profile}) not granted: cannot record it against replays: {e}");
                    return;
                }
            }
            let earned = Earned {
                profile,
                mode,
                address,
                source,
            };
            if let Err(e) = tx.try_send(earned) {
                let e = e.into_inner();
                warn!(
                    "knock from {} (profile {}) not granted: {PENDING} grants are already waiting for the engine",
                    e.source, e.profile
                );
            }
        }
        KnockOutcome::Refused {
            profile,
            mode,
            source,
            reason,
        } => {
            crate::metrics::METRICS.knock(false);
            if refusals.allow() {
                info!(
                    target: "passknock::audit",
                    "knock refused profile={profile} mode={} source={source}: {reason}",
                    mode.name()
                );
            }
        }
    }
}

async fn submit_grants(
    config: Config,
    engine: EngineHandle,
    mut rx: mpsc::Receiver<Earned>,
    shutdown: CancellationToken,
) {
    loop {
        let earned = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        let Some((services, ttl)) = config.knock_grant(&earned.profile) else {
            continue;
        };
        let who = format!("knock:{}", earned.profile);
        let note = if earned.address == earned.source {
            format!("{} knock", earned.mode.name())
        } else {
            format!("{} knock sent from {}", earned.mode.name(), earned.source)
        };
        let request = Request::Grant {
            address: earned.address.to_string(),
            services,
            ttl,
            note,
        };
        match engine.submit(request, &who, Source::Knock).await {
            Reply::Granted { grant, .. } => {
                crate::metrics::METRICS.knock(true);
                debug!(
                    "knock on profile {} opened {} for {}",
                    earned.profile,
                    grant.address,
                    grant.services.join(",")
                )
            }
            Reply::Error { message } => warn!(
                "knock on profile {} from {} not granted: {message}",
                earned.profile, earned.source
            ),
            _ => warn!("the engine answered a knock grant with something else"),
        }
    }
}

/// At most `per_sec` events a second.
struct RateLimit {
    per_sec: u32,
    window: Instant,
    used: u32,
    dropped: u64,
}

impl RateLimit {
    fn new(per_sec: u32) -> RateLimit {
        RateLimit {
            per_sec,
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.window.elapsed().as_secs() >= 1 {
            if self.dropped > 0 {
                info!(target: "passknock::audit", "knock refused: {} more not logged", self.dropped);
            }
            self.window = Instant::now();
            self.used = 0;
            self.dropped = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}
