//! The daemon's side of AMI: runs the listener and turns what it learns into policy — registered
//! contacts for the DISA flow, holds for grants with a live call, bans for addresses that fail
//! too often, grants for listed endpoints' logins (`sip_auth`). The listener only reports; every
//! decision is made here, every change by the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ami_listener::event::{Security, SecurityKind};
use ami_listener::{AmiSecret, AmiSettings, DecoderCaps, LoginMethod, Stats, Update};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sip_auth::AuthGrants;
use crate::base::addr::{self, Net};
use crate::base::clock::{now_ms, UnixMs};
use crate::base::defaults;
use crate::base::duration::Ttl;
use crate::config::{AmiConfig, AmiLogin, Config};
use crate::control::{AmiStatus, CallEntry, ContactEntry, Reply};
use crate::engine::{Actor, BanAsk, Banned, EngineHandle};
use crate::model::Source;
use crate::model::{Event, Kind};
use crate::observe::audit::{self};
use crate::rules::calls::LiveCalls;
use crate::rules::contacts::Contacts;
use crate::rules::offenders::{BanDecision, BanPolicy, Offenders};
use crate::store::{Location, OffenderLog};

/// Updates the listener may queue ahead of the policy; past it the listener stops reading
/// (Asterisk buffers), so nothing is lost and memory stays bounded.
const UPDATES_QUEUE: usize = 1024;
/// Who the engine's audit lines name for what AMI caused.
const WHO: &str = "ami";

fn actor() -> Actor {
    Actor::new(WHO, Source::Ami)
}

/// What the control socket shows of AMI: cheap to clone, shared with the policy task.
#[derive(Clone, Default)]
pub struct AmiView {
    inner: Arc<Mutex<ViewState>>,
}

#[derive(Default)]
struct ViewState {
    enabled: bool,
    address: String,
    stats: Option<Arc<Stats>>,
    calls: Vec<CallEntry>,
    bans: u64,
    last_ban_us: Option<u64>,
}

impl AmiView {
    fn with<T>(&self, f: impl FnOnce(&mut ViewState) -> T) -> T {
        f(&mut crate::base::lock::lock(&self.inner))
    }

    pub fn status(&self) -> AmiStatus {
        self.with(|v| {
            let s = v.stats.as_deref();
            let n = |f: fn(&Stats) -> u64| s.map(f).unwrap_or(0);
            AmiStatus {
                enabled: v.enabled,
                address: v.address.clone(),
                connected: s.is_some_and(|s| s.connected.load(Ordering::Relaxed)),
                logins: n(|s| s.logins.load(Ordering::Relaxed)),
                events: n(|s| s.events.load(Ordering::Relaxed)),
                skipped: n(|s| s.skipped.load(Ordering::Relaxed)),
                bans: v.bans,
                last_ban_us: v.last_ban_us,
                last_error: s.and_then(Stats::last_error),
            }
        })
    }

    pub fn calls(&self) -> Vec<CallEntry> {
        self.with(|v| v.calls.clone())
    }

    /// The reply to `passknock contacts`.
    pub fn contacts_reply(&self, contacts: &Contacts) -> Reply {
        Reply::Contacts {
            ami: self.status(),
            contacts: contacts
                .snapshot()
                .into_iter()
                .map(|(endpoint, set)| ContactEntry {
                    endpoint,
                    addresses: set.into_iter().collect(),
                })
                .collect(),
        }
    }

    /// The reply to `passknock calls`.
    pub fn calls_reply(&self) -> Reply {
        Reply::Calls {
            ami: self.status(),
            calls: self.calls(),
        }
    }
}

/// The listener's settings from `[ami]`.
pub fn settings(ami: &AmiConfig, secret: AmiSecret) -> AmiSettings {
    AmiSettings {
        address: ami.address.clone(),
        username: ami.username.clone(),
        secret,
        login: match ami.login {
            AmiLogin::Md5 => LoginMethod::Md5,
            AmiLogin::Plain => LoginMethod::Plain,
        },
        backoff_first: ami.reconnect_first.0,
        backoff_max: ami.reconnect_max.0,
        keepalive: ami.keepalive.0,
        timeout: ami.timeout.0,
        limits: DecoderCaps::default(),
    }
}

/// Runs the AMI listener and its policy until `shutdown`.
pub async fn run(
    config: Config,
    store: Location,
    secret: AmiSecret,
    engine: EngineHandle,
    contacts: Contacts,
    view: AmiView,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(UPDATES_QUEUE);
    let stats = Arc::new(Stats::default());
    view.with(|v| {
        v.enabled = true;
        v.address = config.ami.address.clone();
        v.stats = Some(stats.clone());
    });
    let client = tokio::spawn(ami_listener::run(
        settings(&config.ami, secret),
        tx,
        stats,
        shutdown.clone(),
    ));
    let mut policy = AmiHandler::new(&config, &store, engine, contacts, view);
    let mut renew = tokio::time::interval(defaults::HOLD_STEP / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            u = rx.recv() => match u {
                Some(u) => policy.apply(u, Instant::now()).await,
                None => break,
            },
            _ = renew.tick() => policy.renew_holds().await,
        }
    }
    let _ = client.await;
    crate::observe::metrics::METRICS.ami_connected(false);
}

/// The decisions: what each update means for contacts, holds and bans.
struct AmiHandler {
    engine: EngineHandle,
    contacts: Contacts,
    view: AmiView,
    trusted: Vec<Net>,
    hold: bool,
    /// (endpoint, contact URI) → address: one endpoint may have several contacts on one address.
    known: BTreeMap<(String, String), IpAddr>,
    calls: LiveCalls,
    offenders: Offenders,
    /// With a store several nodes share: the offender counts there, so failures from one address
    /// seen at different nodes add up.
    shared: Option<SharedOffenders>,
    /// `[sip-auth-grant]`, when it lists endpoints.
    sip_auth: Option<AuthGrants>,
}

impl AmiHandler {
    fn new(
        config: &Config,
        store: &Location,
        engine: EngineHandle,
        contacts: Contacts,
        view: AmiView,
    ) -> AmiHandler {
        AmiHandler {
            engine,
            contacts,
            view,
            trusted: config.firewall.trusted.clone(),
            hold: !config.ami.hold_max.0.is_zero(),
            known: BTreeMap::new(),
            calls: LiveCalls::default(),
            offenders: Offenders::new(BanPolicy::from_config(&config.ami)),
            shared: SharedOffenders::open(store),
            sip_auth: AuthGrants::from_config(config),
        }
    }

    /// Counts one failure from `ip`: in the shared store when there is one and it answers, else
    /// here alone (a node cut off from the store keeps banning on what it sees itself).
    async fn count(&mut self, ip: IpAddr, now: UnixMs) -> Option<BanDecision> {
        let Some(shared) = &mut self.shared else {
            return self.offenders.record(ip, now);
        };
        let since = now - self.offenders.window().as_millis().min(i64::MAX as u128) as i64;
        match shared.count(ip, now, since).await {
            Some(hits) => {
                let v = self.offenders.record_shared(ip, now, &hits);
                if v.is_some() {
                    // The ban is decided on these failures: no other node bans on them again.
                    shared.clear(ip);
                }
                v
            }
            None => self.offenders.record(ip, now),
        }
    }

    async fn apply(&mut self, u: Update, received: Instant) {
        match u {
            Update::LoggedIn { .. } => crate::observe::metrics::METRICS.ami_connected(true),
            Update::Contacts(list) => {
                self.known = list
                    .into_iter()
                    .filter_map(|c| Some(((c.endpoint, c.uri), addr::normalize(c.address?))))
                    .collect();
                let mut all: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
                for ((ep, _), ip) in &self.known {
                    all.entry(ep.clone()).or_default().insert(*ip);
                }
                info!("AMI: {} endpoint(s) registered", all.len());
                self.contacts.replace_all(all);
                crate::observe::metrics::METRICS.set_contacts(self.contacts.endpoints() as u64);
            }
            Update::Contact(c) => {
                let key = (c.endpoint.clone(), c.uri.clone());
                match c.address.filter(|_| !c.removed) {
                    Some(ip) => self.known.insert(key, addr::normalize(ip)),
                    None => self.known.remove(&key),
                };
                self.sync_endpoint(&c.endpoint);
            }
            Update::CallsPresent(ids) => {
                for ip in self.calls.retain(&ids) {
                    info!("AMI: calls from {ip} ended while we were not looking");
                    self.release(ip).await;
                }
                self.publish_calls();
            }
            Update::CallUp(call) => {
                let ip = addr::normalize(call.remote);
                // A call reported again after a re-sync was counted when it was new.
                if !self.calls.knows(&call.id) {
                    crate::observe::metrics::METRICS.sip_call();
                    // Counted in the history for `status`; the journal has no line per call.
                    audit::count(
                        Event::new(Kind::SipCall, now_ms())
                            .address(ip)
                            .who(call.channel.as_str())
                            .source(Source::Ami),
                    );
                }
                let first = self.calls.up(&call.id, &call.channel, ip, now_ms());
                self.publish_calls();
                debug!("AMI: call {} up from {ip}", call.channel);
                if first {
                    self.hold(ip).await;
                }
            }
            Update::CallDown { id } => {
                let last = self.calls.down(&id);
                self.publish_calls();
                if let Some(ip) = last {
                    debug!("AMI: last call from {ip} ended");
                    self.release(ip).await;
                }
            }
            Update::Security(s) => self.security(s, received).await,
            Update::Disconnected { reason } => {
                crate::observe::metrics::METRICS.ami_connected(false);
                // Calls and contacts stay as last known until the re-sync after the next login;
                // holds lapse on their own (ami.hold-max) if that login never comes.
                debug!("AMI disconnected: {reason}");
            }
        }
    }

    /// Makes `Contacts` for `endpoint` match what `known` says.
    fn sync_endpoint(&mut self, endpoint: &str) {
        let want: BTreeSet<IpAddr> = self
            .known
            .iter()
            .filter(|((ep, _), _)| ep == endpoint)
            .map(|(_, ip)| *ip)
            .collect();
        let have: BTreeSet<IpAddr> = self.contacts.registered(endpoint).into_iter().collect();
        for ip in want.difference(&have) {
            info!("AMI: {endpoint} registered from {ip}");
            self.contacts.add(endpoint, *ip);
        }
        for ip in have.difference(&want) {
            info!("AMI: {endpoint} no longer registered from {ip}");
            self.contacts.remove(endpoint, *ip);
        }
        crate::observe::metrics::METRICS.set_contacts(self.contacts.endpoints() as u64);
    }

    fn publish_calls(&self) {
        let entries = self.calls.entries();
        crate::observe::metrics::METRICS.set_calls(entries.len() as u64);
        self.view.with(|v| v.calls = entries);
    }

    async fn security(&mut self, s: Security, received: Instant) {
        if s.kind == SecurityKind::SuccessfulAuth {
            if let Some(grants) = &mut self.sip_auth {
                grants.on_event(&s, &self.engine);
            }
            return;
        }
        if !s.kind.is_failure() {
            return;
        }
        let Some(remote) = &s.remote else { return };
        let ip = addr::normalize(remote.addr.ip());
        if self.trusted.iter().any(|n| n.contains(ip)) || addr::check_grantable(ip).is_err() {
            debug!("AMI: {} from trusted {ip} not counted", s.kind.name());
            return;
        }
        let Some(v) = self.count(ip, now_ms()).await else {
            return;
        };
        let reason = format!(
            "AMI: {} (service {}, account {:?}) — offence {}",
            s.kind.name(),
            s.service,
            s.account,
            v.offence
        );
        let ask = BanAsk {
            address: ip,
            ttl: Some(Ttl(v.ttl)),
            reason,
        };
        // Each ban is awaited on its own task: events keep flowing while the engine takes a
        // flood of offenders in batches (one transaction, one kernel batch for all queued).
        let engine = self.engine.clone();
        let view = self.view.clone();
        tokio::spawn(async move {
            let banned = engine.ban_when_room(&actor(), ask).await;
            let took = received.elapsed();
            match banned {
                Ok(Banned { firewall, .. }) => {
                    if let Some(e) = firewall.error {
                        warn!("AMI: banned {ip} in the store; nft not updated yet: {e}");
                    }
                    info!(
                        "AMI: banned {ip} for {} (offence {}), {:.1} ms after the event",
                        crate::base::duration::human(v.ttl),
                        v.offence,
                        took.as_secs_f64() * 1000.0
                    );
                    view.with(|view| {
                        view.bans += 1;
                        view.last_ban_us = Some(took.as_micros() as u64);
                    });
                }
                Err(refused) => warn!("AMI: could not ban {ip}: {refused}"),
            }
        });
        if self.offenders.tracked() > crate::rules::offenders::MAX_TRACKED / 2 {
            self.offenders.forget_stale(now_ms());
        }
    }

    /// Holds `ip`'s grants one step ahead while a call from it is up.
    async fn hold(&mut self, ip: IpAddr) {
        if !self.hold {
            return;
        }
        let until = now_ms() + defaults::HOLD_STEP.as_millis() as i64;
        if let Err(refused) = self.engine.hold(&actor(), ip, until).await {
            warn!("AMI: could not hold {ip}'s grants for its call: {refused}");
        }
    }

    async fn release(&mut self, ip: IpAddr) {
        if !self.hold {
            return;
        }
        if let Err(refused) = self.engine.release(&actor(), ip).await {
            warn!("AMI: could not release {ip}'s grants after its calls: {refused}");
        }
    }

    /// Every third of a hold step: push each live call's hold ahead again.
    async fn renew_holds(&mut self) {
        for ip in self.calls.addresses() {
            self.hold(ip).await;
        }
    }
}

/// How long AMI counts offenders on this node alone after the shared store failed to answer,
/// before asking it again: a store that is down must not hold every event up.
const SHARED_RETRY_MS: i64 = 5_000;
/// Counts between two prunes of the shared offender table.
const SHARED_PRUNE_EVERY: u32 = 1_000;

/// The shared store's offender counts, asked off the runtime's threads.
struct SharedOffenders {
    log: Arc<OffenderLog>,
    /// No asking before this (the store failed to answer).
    quiet_until: UnixMs,
    counted: u32,
}

impl SharedOffenders {
    /// The shared store's counts, or `None` on a single box (or when the store cannot be
    /// reached at start: then this node counts alone, and says so).
    fn open(at: &Location) -> Option<SharedOffenders> {
        match OffenderLog::open(at) {
            Ok(log) => log.map(|log| SharedOffenders {
                log: Arc::new(log),
                quiet_until: 0,
                counted: 0,
            }),
            Err(e) => {
                warn!("AMI: offender counts stay on this node, the shared store cannot be reached: {e}");
                None
            }
        }
    }

    /// `ip`'s failures since `since` as every node counted them, this one included; `None` when
    /// the store did not answer (or failed to, a moment ago).
    async fn count(&mut self, ip: IpAddr, now: UnixMs, since: UnixMs) -> Option<Vec<UnixMs>> {
        if now < self.quiet_until {
            return None;
        }
        let log = self.log.clone();
        let prune = {
            self.counted = self.counted.wrapping_add(1);
            self.counted.is_multiple_of(SHARED_PRUNE_EVERY)
        };
        let asked = tokio::task::spawn_blocking(move || {
            if prune {
                // Rows past the window with no failure since: nothing left to add up.
                if let Err(e) = log.prune(since) {
                    debug!("AMI: cannot prune the shared offender counts: {e}");
                }
            }
            log.count(ip, now, since)
        })
        .await;
        match asked {
            Ok(Ok(hits)) => Some(hits),
            Ok(Err(e)) => {
                warn!(
                    "AMI: the shared store did not count a failure from {ip}; counting on this node alone for {} s: {e}",
                    SHARED_RETRY_MS / 1000
                );
                self.quiet_until = now + SHARED_RETRY_MS;
                None
            }
            Err(e) => {
                warn!("AMI: counting a failure from {ip} in the shared store failed: {e}");
                None
            }
        }
    }

    /// Forgets `ip`'s failures in the store, on a task of its own.
    fn clear(&self, ip: IpAddr) {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = log.clear(ip) {
                debug!("AMI: cannot clear {ip}'s shared offender count: {e}");
            }
        });
    }
}
