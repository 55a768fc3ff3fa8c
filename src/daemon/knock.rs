//! The knock listener's wiring: the gate built from config, the NFLOG thread that feeds it, the
//! replay log that outlives restarts, and grants submitted to the engine like any other.
//!
//! Order matters for replays: a knock's replay entry is on disk before its grant is asked for,
//! so a crash in between burns the knock rather than lets it work twice; and it is granted only
//! when the store had no live entry for it, so with a store several nodes share, a knock used at
//! one node opens nothing at the others.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use knockd::gate::{AnswerTo, Gate, KnockOutcome, Refusal, REPLAY_MAX};
use knockd::replay::ReplayMark;
use knockd::Mode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::base::clock::now_ms;
use crate::base::lock::lock;
use crate::config::{Config, ConfigError};
use crate::engine::{Actor, EngineHandle, GrantAsk, Granted, Holder, Owner, Services};
use crate::model::Source;
use crate::model::{Event, Kind};
use crate::observe::audit::{self};
use crate::rules::contacts::Contacts;
use crate::store::{Db, Location, ReplayLog, StoreError};

mod answer;
mod beside;

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
    /// Where the knock packets came from (`address` may differ: an SPA packet can name another).
    sent_from: IpAddr,
    /// A dual-stack SPA's address of the other family, to be opened too if it passes the checks.
    also: Option<IpAddr>,
    /// Where the one answer goes, when the SPA asked for it.
    answer: Option<AnswerTo>,
}

/// The gate for `config`'s profiles (secrets read, files refused unless private), with every
/// replay entry the log remembers; and the profiles' names, for the log.
fn build_gate(config: &Config, log: &ReplayLog) -> Result<(Gate, Vec<String>, usize), KnockError> {
    let profiles = config.knock_profiles()?;
    let names: Vec<String> = profiles
        .iter()
        .map(|p| format!("{} ({})", p.name, p.kind.mode().name()))
        .collect();
    let mut gate = Gate::new(profiles, config.knock.max_in_progress, REPLAY_MAX).map_err(KnockError::Gate)?;
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
    Ok((gate, names, marks.len()))
}

/// How a running knock listener takes new profiles: the reload builds a gate, the listener
/// thread swaps it in between two NFLOG reads. Knocks in progress start over; replays stay
/// refused, since every used knock is in the replay log the new gate is built from.
pub struct KnockReload {
    group: u16,
    log: ReplayLog,
    pending: Arc<Mutex<Option<Gate>>>,
    /// Ends the current NFLOG run: for a swap, or (with `ending`) for good.
    stop: Arc<AtomicBool>,
    config: Arc<Mutex<Arc<Config>>>,
}

/// What a reload did to the knock listener.
#[derive(Debug, PartialEq, Eq)]
pub enum KnockApplied {
    Now,
    AtRestart(&'static str),
}

/// The knock listener's reload handle, once it runs; the daemon's reload holds the slot from the start.
#[derive(Clone, Default)]
pub struct KnockSlot(Arc<Mutex<Option<KnockReload>>>);

impl KnockSlot {
    pub fn set(&self, k: KnockReload) {
        *lock(&self.0) = Some(k);
    }

    /// Applies `new`'s knock section. `Err` means it is unusable (a secret file, a profile the
    /// gate refuses) and nothing changed.
    pub fn apply(&self, new: &Config) -> Result<KnockApplied, String> {
        let slot = lock(&self.0);
        let Some(k) = slot.as_ref() else {
            if new.knock.profiles.is_empty() {
                return Ok(KnockApplied::Now);
            }
            new.knock_profiles().map_err(|e| e.to_string())?;
            return Ok(KnockApplied::AtRestart(
                "knock (the listener starts at the next restart)",
            ));
        };
        if new.knock.nflog_group != k.group {
            new.knock_profiles().map_err(|e| e.to_string())?;
            return Ok(KnockApplied::AtRestart("knock.nflog-group"));
        }
        let (gate, names, _) = build_gate(new, &k.log).map_err(|e| e.to_string())?;
        *lock(&k.pending) = Some(gate);
        k.stop.store(true, Ordering::Relaxed);
        // The thread looks at `stop` at least every NFLOG wake interval.
        let deadline = Instant::now() + knockd::nflog::WAKE * 10;
        while lock(&k.pending).is_some() {
            if Instant::now() > deadline {
                return Err("the knock listener did not take the new profiles in time".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        *lock(&k.config) = Arc::new(new.clone());
        info!(
            "knock profiles now {}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        );
        Ok(KnockApplied::Now)
    }
}

/// Starts the knock listener if the config has profiles: binds the NFLOG group now (so a bad
/// group fails the start), then listens on a thread of its own until `shutdown`. The returned
/// task ends after shutdown, dropping its engine handle; the reload handle swaps profiles.
pub fn spawn(
    config: &Config,
    store: &Location,
    engine: EngineHandle,
    contacts: Contacts,
    shutdown: CancellationToken,
) -> Result<Option<(JoinHandle<()>, KnockReload)>, KnockError> {
    if config.knock.profiles.is_empty() {
        return Ok(None);
    }
    let log = ReplayLog::open(store)?;
    let (gate, names, marks) = build_gate(config, &log)?;
    let (tx, rx) = mpsc::channel::<Earned>(PENDING);
    let stop = Arc::new(AtomicBool::new(false));
    let ending = Arc::new(AtomicBool::new(false));
    let pending = Arc::new(Mutex::new(None));
    let thread = listen_thread(
        config.knock.nflog_group,
        gate,
        ReplayLog::open(store)?,
        tx,
        Flags {
            stop: stop.clone(),
            ending: ending.clone(),
            pending: pending.clone(),
        },
    )?;
    info!(
        "knock listener on NFLOG group {}: profiles {}; {marks} replay entr(ies) remembered",
        config.knock.nflog_group,
        names.join(", "),
    );
    let current = Arc::new(Mutex::new(Arc::new(config.clone())));
    let reload = KnockReload {
        group: config.knock.nflog_group,
        log,
        pending,
        stop: stop.clone(),
        config: current.clone(),
    };
    let bans = Db::open(store)?;
    let task = tokio::spawn(async move {
        let ctx = Submit {
            config: current,
            engine,
            contacts,
            bans: Arc::new(Mutex::new(bans)),
            answers: Arc::new(tokio::sync::Semaphore::new(answer::AT_ONCE)),
        };
        submit_grants(ctx, rx, shutdown).await;
        // The thread notices within a wake interval; wait, so its last words are logged.
        ending.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    Ok(Some((task, reload)))
}

/// What the listener thread watches besides packets.
struct Flags {
    stop: Arc<AtomicBool>,
    /// Set before `stop` when the daemon shuts down.
    ending: Arc<AtomicBool>,
    /// A gate a reload built, to be swapped in.
    pending: Arc<Mutex<Option<Gate>>>,
}

#[cfg(target_os = "linux")]
fn listen_thread(
    group: u16,
    mut gate: Gate,
    log: ReplayLog,
    tx: mpsc::Sender<Earned>,
    flags: Flags,
) -> Result<std::thread::JoinHandle<()>, KnockError> {
    let mut nflog = knockd::nflog::Nflog::bind(group).map_err(|e| KnockError::Listen(e.to_string()))?;
    std::thread::Builder::new()
        .name("knock".into())
        .spawn(move || {
            let mut refusals = RateLimit::new(REFUSALS_PER_SEC);
            while !flags.ending.load(Ordering::Relaxed) {
                let r = nflog.run(&mut gate, &flags.stop, |outcome| {
                    on_outcome(outcome, &log, &tx, &mut refusals)
                });
                if let Err(e) = r {
                    warn!("knock listener stopped: {e}");
                    break;
                }
                match lock(&flags.pending).take() {
                    Some(new) => {
                        gate = new;
                        // `ending` is looked at again before the next run.
                        flags.stop.store(false, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
            let s = gate.stats();
            info!(
                "knock listener stopped: {} packet(s), {} grant(s), {} refused, {} sequence(s) started, \
                 {} evicted, {} SPA with a bad tag, {} kernel overrun(s) (since the last reload)",
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
    _flags: Flags,
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
            also,
            mark,
            answer,
        } => {
            if let Some(m) = mark {
                match log.remember(&m.key, m.until) {
                    Ok(true) => {}
                    // Used before where this gate could not see it: at another node sharing
                    // the store. Refused as a replay here would be.
                    Ok(false) => {
                        let refused = KnockOutcome::Refused {
                            profile,
                            mode,
                            source,
                            reason: Refusal::Replayed,
                        };
                        return on_outcome(refused, log, tx, refusals);
                    }
                    Err(e) => {
                        warn!("knock from {source} (profile {profile}) not granted: cannot record it against replays: {e}");
                        return;
                    }
                }
            }
            let earned = Earned {
                profile,
                mode,
                address,
                sent_from: source,
                also,
                answer,
            };
            if let Err(e) = tx.try_send(earned) {
                let e = e.into_inner();
                warn!(
                    "knock from {} (profile {}) not granted: {PENDING} grants are already waiting for the engine",
                    e.sent_from, e.profile
                );
            }
        }
        KnockOutcome::Refused {
            profile,
            mode,
            source,
            reason,
        } => {
            crate::observe::metrics::METRICS.knock(false);
            let event = Event::new(Kind::KnockRefused, now_ms())
                .address(source)
                .who(profile)
                .source(Source::Knock)
                .detail(format!("mode={}: {reason}", mode.name()));
            // Every refusal is counted in the history; only so many a second get a line.
            if refusals.allow() {
                audit::record(event);
            } else {
                audit::count(event);
            }
        }
    }
}

/// What the grant submitter works with.
struct Submit {
    config: Arc<Mutex<Arc<Config>>>,
    engine: EngineHandle,
    contacts: Contacts,
    /// A read connection, for the bans a dual-stack address is checked against.
    bans: Arc<Mutex<Db>>,
    /// Answers waiting for a phone, at most [`answer::AT_ONCE`].
    answers: Arc<tokio::sync::Semaphore>,
}

async fn submit_grants(ctx: Submit, mut rx: mpsc::Receiver<Earned>, shutdown: CancellationToken) {
    loop {
        let earned = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        let current = lock(&ctx.config).clone();
        let Some((services, ttl)) = current.knock_grant(&earned.profile) else {
            continue;
        };
        // The other family's address, only if nothing speaks against it; the source is opened
        // whatever becomes of it.
        let also = earned
            .also
            .and_then(|a| match beside::check(&current, &earned.profile, a, &ctx.bans) {
                Ok(a) => Some(a),
                Err(why) => {
                    warn!(
                        "knock on profile {} from {}: not opening {a} besides it: {why}",
                        earned.profile, earned.sent_from
                    );
                    audit::record(
                        Event::new(Kind::KnockRefused, now_ms())
                            .address(earned.sent_from)
                            .who(earned.profile.as_str())
                            .source(Source::Knock)
                            .detail(format!(
                                "mode={}: not opening {a} besides: {why}",
                                earned.mode.name()
                            )),
                    );
                    None
                }
            });
        let who = format!("knock:{}", earned.profile);
        let note = if earned.address == earned.sent_from {
            format!("{} knock", earned.mode.name())
        } else {
            format!("{} knock sent from {}", earned.mode.name(), earned.sent_from)
        };
        let ask = |address: IpAddr, note: String| GrantAsk {
            address,
            services: Services::from_names(&services),
            ttl,
            note,
            owner: Some(Owner {
                holder: Holder::Profile(earned.profile.clone()),
                replace: current.knock_replaces(&earned.profile),
            }),
        };
        let actor = Actor::new(who, Source::Knock);
        let main = ask(earned.address, note.clone());
        let granted = match also {
            None => ctx.engine.grant(&actor, main).await,
            Some(a) => {
                // Both asked at once, each sparing the other: neither replaces its twin.
                let other = ask(a, format!("{note} (dual stack, with {})", earned.address));
                let (first, second) = tokio::join!(
                    ctx.engine.grant_beside(&actor, main, a),
                    ctx.engine.grant_beside(&actor, other, earned.address)
                );
                if let Err(refused) = &second {
                    warn!(
                        "knock on profile {}: {a} (dual stack) not granted: {refused}",
                        earned.profile
                    );
                }
                first
            }
        };
        match granted {
            Ok(Granted { grant, .. }) => {
                crate::observe::metrics::METRICS.knock(true);
                let opened = match also {
                    Some(a) => format!("{} and {a}", grant.address),
                    None => grant.address.to_string(),
                };
                audit::record(
                    Event::new(Kind::KnockAccepted, now_ms())
                        .address(earned.sent_from)
                        .who(earned.profile.as_str())
                        .source(Source::Knock)
                        .detail(format!("mode={} opened {opened}", earned.mode.name())),
                );
                debug!(
                    "knock on profile {} opened {opened} for {}",
                    earned.profile,
                    grant.services.join(",")
                );
                if let Some(to) = earned.answer {
                    let endpoint = current
                        .knock
                        .profiles
                        .get(&earned.profile)
                        .and_then(|p| p.endpoint.clone());
                    answer::spawn(
                        to,
                        answer::Opened {
                            address: grant.address,
                            also,
                            end: grant.end(),
                        },
                        endpoint,
                        ctx.contacts.clone(),
                        ctx.answers.clone(),
                    );
                }
            }
            Err(refused) => warn!(
                "knock on profile {} from {} not granted: {refused}",
                earned.profile, earned.sent_from
            ),
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
