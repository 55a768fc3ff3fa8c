//! The engine: the one writer of the store and the table. Requests arrive on a channel and are
//! taken in batches — one store transaction and one nft batch for many grants — so a burst of
//! callers costs one fsync and one `nft` run, not hundreds.

mod handle;

pub use handle::EngineHandle;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::base::addr::{self, Family};
use crate::base::clock::{now_ms, utc, Clock, Now, UnixMs};
use crate::base::defaults;
use crate::base::duration::{human, Ttl};
use crate::base::secret::{self, DisaKey};
use crate::config::Config;
use crate::control::{Applied, NewAccount, Reply, Request, Status};
use crate::daemon::knock::{KnockApplied, KnockSlot};
use crate::model::{Account, Grant, NewGrant, Source};
use crate::model::{Event, Kind};
use crate::nft::{self, ban_key, Changes, ElemKey, Firewall, Layout, Nft, NftError, Reconciled, Verdict};
use crate::observe::audit::{self};
use crate::store::{Store, StoreError};

/// One request and where its reply goes.
pub struct Job {
    pub request: Request,
    /// Who asked, for the audit log: `uid 0` over the control socket, `disa:…` from a call.
    pub who: String,
    pub source: Source,
    pub reply: oneshot::Sender<Reply>,
}

pub struct Engine {
    config: Config,
    /// Where the config came from, for reloads; `None` when running on the embedded example.
    config_path: Option<PathBuf>,
    knock: KnockSlot,
    disa_key: Option<Arc<DisaKey>>,
    store: Store,
    firewall: Firewall,
    /// Holds kernel timeouts to the time truly left when the wall clock is stepped.
    clock: Clock,
    next_reconcile: Instant,
    retry_delay: Duration,
    last_reconcile: Option<UnixMs>,
    firewall_error: Option<String>,
    /// Pinged from [`Engine::run`]'s loop: a stuck engine (a hung nft, say) goes
    /// silent, and systemd restarts the daemon.
    watchdog: Option<crate::daemon::notify::Watchdog>,
}

/// Longest note or reason kept with a grant or ban.
const TEXT_MAX: usize = 200;

impl Engine {
    pub fn new(config: Config, store: Store, firewall: Firewall) -> Engine {
        Engine {
            config,
            config_path: None,
            knock: KnockSlot::default(),
            disa_key: None,
            store,
            firewall,
            clock: Clock::default(),
            next_reconcile: Instant::now(),
            retry_delay: defaults::RETRY_FIRST,
            last_reconcile: None,
            firewall_error: None,
            watchdog: None,
        }
    }

    /// The service manager's watchdog, fed from the loop in [`Engine::run`].
    pub fn set_watchdog(&mut self, watchdog: crate::daemon::notify::Watchdog) {
        self.watchdog = Some(watchdog);
    }

    /// Reads both clocks, and says so once when the wall clock was stepped since the last reading.
    fn now(&mut self) -> Now {
        let now = Now::read();
        if let Some(step) = self.clock.step(now, defaults::CLOCK_STEP_MIN) {
            // To the nearest second: the readings straddle the step by a few milliseconds.
            let size = human(Duration::from_secs((step.unsigned_abs() + 500) / 1000));
            if step < 0 {
                warn!(
                    "the wall clock was stepped back by {size}; grants and bans keep the time they \
                     were given, and kernel timeouts never run past it"
                );
            } else {
                warn!(
                    "the wall clock jumped forward by {size} (stepped, or the host was suspended); \
                     grants and bans end by the wall clock, so they end that much sooner"
                );
            }
        }
        now
    }

    pub fn set_config_path(&mut self, path: PathBuf) {
        self.config_path = Some(path);
    }

    /// Where a reload finds the running knock listener.
    pub fn set_knock_slot(&mut self, slot: KnockSlot) {
        self.knock = slot;
    }

    /// Re-reads the config. A config that does not load changes nothing; one that does replaces
    /// services, trusted networks, TTL caps and limits, and the table is rebuilt to match. Grants
    /// and bans are the store's and are all kept.
    fn reload(&mut self, who: &str) -> Reply {
        let Some(path) = self.config_path.clone() else {
            return Reply::error("running on the embedded example config: there is no file to reload");
        };
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                warn!("config not reloaded, the running one stays: {e}");
                return Reply::error(format!("config not reloaded, the running one stays: {e}"));
            }
        };
        let mut restart = Vec::new();
        if new.daemon.store != self.config.daemon.store {
            restart.push("daemon.store");
        }
        if new.daemon.control_socket != self.config.daemon.control_socket {
            restart.push("daemon.control-socket");
        }
        // The reload reopens the audit file at the path it was started with (after logrotate).
        if new.daemon.audit_log != self.config.daemon.audit_log {
            restart.push("daemon.audit-log");
        }
        if new.agi.listen != self.config.agi.listen || new.disa.enabled != self.config.disa.enabled {
            restart.push("agi.listen / disa.enabled");
        }
        // The AMI listener holds its connection settings and ban policy from the start; only
        // hold-max, which the engine applies, changes now.
        let ami_then = crate::config::AmiConfig {
            hold_max: self.config.ami.hold_max,
            ..new.ami.clone()
        };
        if ami_then != self.config.ami {
            restart.push("ami (all but hold-max)");
        }
        // Knock profiles are swapped into the running listener (last: nothing after this refuses).
        // What it cannot take now — another NFLOG group, a first profile — waits for a restart,
        // and until then the table keeps logging the ports the listener knows.
        let mut new = new;
        if new.knock != self.config.knock {
            match self.knock.apply(&new) {
                Ok(KnockApplied::Now) => {}
                Ok(KnockApplied::AtRestart(what)) => {
                    restart.push(what);
                    new.knock = self.config.knock.clone();
                }
                Err(e) => {
                    warn!("config not reloaded, the running one stays: knock: {e}");
                    return Reply::error(format!("config not reloaded, the running one stays: knock: {e}"));
                }
            }
        }
        self.firewall
            .set_layout(Layout::from_config(&new), Nft::new(&new.firewall.nft));
        self.config = new;
        let table = self.reconcile();
        audit::record(
            Event::new(Kind::Reload, now_ms())
                .who(who)
                .source(Source::Admin)
                .detail(format!("from {}", path.display())),
        );
        let mut message = format!("config reloaded from {}", path.display());
        match table {
            Ok(r) => message.push_str(&format!("; table {r}")),
            Err(e) => message.push_str(&format!("; table not applied yet (retrying): {e}")),
        }
        if !restart.is_empty() {
            message.push_str(&format!(
                "; {} change(s) take effect at the next restart",
                restart.join(", ")
            ));
        }
        Reply::Done { message }
    }

    /// The key new passcodes are tagged with (the DISA listener holds the same one).
    pub fn set_disa_key(&mut self, key: Arc<DisaKey>) {
        self.disa_key = Some(key);
    }

    fn disa_key(&mut self) -> Result<Arc<DisaKey>, String> {
        if let Some(k) = &self.disa_key {
            return Ok(k.clone());
        }
        let k = Arc::new(DisaKey::load_or_create(&self.config.disa.key_file).map_err(|e| e.to_string())?);
        self.disa_key = Some(k.clone());
        Ok(k)
    }

    fn account_add(&mut self, new: &NewAccount, who: &str) -> Reply {
        let NewAccount {
            name,
            services,
            ttl,
            endpoint,
            address_modes: modes,
            callers,
        } = new;
        let endpoint = endpoint.as_deref();
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Reply::error("an account name is 1–64 letters, digits, `.`, `_` or `-`");
        }
        let services = if services.is_empty() {
            self.config.default_services()
        } else {
            services.to_vec()
        };
        for s in &services {
            if !self.firewall.layout().has_service(s) {
                return Reply::error(format!("unknown service `{s}`"));
            }
        }
        let ttl = ttl.unwrap_or(self.config.grants.ttl_default);
        if let Err(e) = check_ttl(ttl, self.config.grants.ttl_max, "grants.ttl-max") {
            return Reply::error(e);
        }
        if let Some(ep) = endpoint {
            if ep.is_empty()
                || ep.len() > 80
                || !ep
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
            {
                return Reply::error(format!("`{ep}` is not a PJSIP endpoint name"));
            }
        }
        let modes: Vec<String> = if modes.is_empty() {
            vec!["source".into(), "registered".into(), "keyed".into()]
        } else {
            modes.iter().map(|m| m.trim().to_string()).collect()
        };
        for m in &modes {
            if agi::disa::AddressMode::parse(m).is_none() {
                return Reply::error(format!(
                    "unknown address mode `{m}`; use source, registered, keyed"
                ));
            }
        }
        let callers = match caller_numbers(callers) {
            Ok(c) => c,
            Err(e) => return Reply::error(e),
        };
        match self.store.account(name) {
            Ok(Some(_)) => {
                return Reply::error(format!(
                    "an account named {name} exists; use account reset-passcode"
                ))
            }
            Ok(None) => {}
            Err(e) => return Reply::error(e.to_string()),
        }
        let key = match self.disa_key() {
            Ok(k) => k,
            Err(e) => return Reply::error(e),
        };
        let now = now_ms();
        let account = Account {
            name: name.to_string(),
            services,
            ttl_secs: ttl.0.as_secs(),
            endpoint: endpoint.map(str::to_string),
            address_modes: modes,
            disabled: false,
            created: now,
            passcode_set: now,
            callers,
            passcode_digits: Some(self.config.disa.passcode_digits),
        };
        // A tag collision (two equal passcodes) is a one-in-10^12 event: draw again.
        for _ in 0..3 {
            let passcode = match secret::new_passcode(self.config.disa.passcode_digits) {
                Ok(p) => p,
                Err(e) => return Reply::error(e.to_string()),
            };
            if self
                .store
                .add_account(&account, &key.tag(passcode.expose()))
                .is_ok()
            {
                audit::record(
                    Event::new(Kind::Account, now)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!(
                            "added by {who:?}: services={} ttl={ttl} endpoint={} modes={} callers={}",
                            account.services.join(","),
                            account.endpoint.as_deref().unwrap_or("-"),
                            account.address_modes.join(","),
                            account.callers.join(",")
                        )),
                );
                return Reply::AccountCreated { account, passcode };
            }
        }
        Reply::error("could not store the account")
    }

    fn account_reset(&mut self, name: &str, who: &str) -> Reply {
        let account = match self.store.account(name) {
            Ok(Some(a)) => a,
            Ok(None) => return Reply::error(format!("no account named {name}")),
            Err(e) => return Reply::error(e.to_string()),
        };
        let key = match self.disa_key() {
            Ok(k) => k,
            Err(e) => return Reply::error(e),
        };
        for _ in 0..3 {
            let passcode = match secret::new_passcode(self.config.disa.passcode_digits) {
                Ok(p) => p,
                Err(e) => return Reply::error(e.to_string()),
            };
            if let Ok(true) = self.store.set_passcode(
                name,
                &key.tag(passcode.expose()),
                self.config.disa.passcode_digits,
                now_ms(),
            ) {
                audit::record(
                    Event::new(Kind::Account, now_ms())
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("passcode reset by {who:?}")),
                );
                return Reply::AccountCreated { account, passcode };
            }
        }
        Reply::error("could not store the new passcode")
    }

    fn account_callers(&mut self, name: &str, callers: &[String], who: &str) -> Reply {
        let callers = match caller_numbers(callers) {
            Ok(c) => c,
            Err(e) => return Reply::error(e),
        };
        match self.store.set_callers(name, &callers) {
            Ok(true) => {
                audit::record(
                    Event::new(Kind::Account, now_ms())
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("owner numbers set by {who:?}: {}", callers.join(","))),
                );
                Reply::Done {
                    message: if callers.is_empty() {
                        format!("account {name} has no owner numbers")
                    } else {
                        format!("account {name}: owner numbers {}", callers.join(", "))
                    },
                }
            }
            Ok(false) => Reply::error(format!("no account named {name}")),
            Err(e) => Reply::error(e.to_string()),
        }
    }

    fn account_disable(&mut self, name: &str, disabled: bool, who: &str) -> Reply {
        match self.store.set_disabled(name, disabled) {
            Ok(true) => {
                let verb = if disabled { "disabled" } else { "enabled" };
                audit::record(
                    Event::new(Kind::Account, now_ms())
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("{verb} by {who:?}")),
                );
                Reply::Done {
                    message: format!("account {name} {verb}"),
                }
            }
            Ok(false) => Reply::error(format!("no account named {name}")),
            Err(e) => Reply::error(e.to_string()),
        }
    }

    /// Prunes what ended while the daemon was down, then brings the table in line with the store.
    pub fn start(&mut self) -> Result<Reconciled, String> {
        let now = self.now();
        self.expire(now);
        self.publish_counts();
        self.reconcile()
    }

    /// Serves jobs until every sender is gone, waking for expiries and reconciles in between.
    pub fn run(mut self, rx: Receiver<Job>) {
        loop {
            if let Some(w) = &mut self.watchdog {
                w.tick(Instant::now());
            }
            let mut wait = self.until_next_wake();
            if let Some(w) = &self.watchdog {
                wait = wait.min(w.until_due(Instant::now()));
            }
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    let mut batch = vec![job];
                    while batch.len() < defaults::BATCH_MAX {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    self.handle(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = self.now();
            if self
                .store
                .next_end()
                .ok()
                .flatten()
                .is_some_and(|e| e <= now.wall)
            {
                self.expire(now);
            }
            if Instant::now() >= self.next_reconcile {
                let _ = self.reconcile();
            }
        }
        let (g, b) = self.store.counts().unwrap_or((0, 0));
        info!(
            "stopping: table inet {} stays in place with {g} grant(s) and {b} ban(s); each element \
             keeps its kernel timeout, so access still closes on time while the daemon is down",
            self.firewall.layout().table
        );
    }

    fn until_next_wake(&self) -> Duration {
        let mut wait = self.next_reconcile.saturating_duration_since(Instant::now());
        if let Ok(Some(end)) = self.store.next_end() {
            let ms = (end - now_ms()).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
        wait
    }

    fn handle(&mut self, batch: Vec<Job>) {
        let mut grants = Vec::new();
        for job in batch {
            if matches!(job.request, Request::Grant { .. }) {
                grants.push(job);
                continue;
            }
            // Keep order: grants queued before this request are applied first.
            if !grants.is_empty() {
                self.grant_batch(std::mem::take(&mut grants));
            }
            let reply = match &job.request {
                Request::Revoke { address } => self.revoke(address, &job.who, job.source),
                Request::List { limit } => self.list(*limit),
                Request::Ban { address, ttl, reason } => {
                    self.ban(address, *ttl, reason, &job.who, job.source)
                }
                Request::Unban { address } => self.unban(address, &job.who, job.source),
                Request::Status => self.status(),
                Request::Hold { address, until } => self.hold(*address, *until, &job.who),
                Request::Release { address } => self.release(*address, &job.who),
                Request::Contacts | Request::Calls | Request::Log { .. } | Request::Report { .. } => {
                    Reply::error("contacts, calls, log and report are answered by the daemon, not the engine")
                }
                Request::Reload => self.reload(&job.who),
                Request::AccountAdd(new) => self.account_add(new, &job.who),
                Request::AccountCallers { name, callers } => self.account_callers(name, callers, &job.who),
                Request::AccountList => match self.store.accounts() {
                    Ok(accounts) => Reply::Accounts { accounts },
                    Err(e) => Reply::error(e.to_string()),
                },
                Request::AccountResetPasscode { name } => self.account_reset(name, &job.who),
                Request::AccountDisable { name } => self.account_disable(name, true, &job.who),
                Request::AccountEnable { name } => self.account_disable(name, false, &job.who),
                Request::AccountRemove { name } => match self.store.remove_account(name) {
                    Ok(true) => {
                        audit::record(
                            Event::new(Kind::Account, now_ms())
                                .who(name.as_str())
                                .source(Source::Admin)
                                .detail(format!("removed by {:?}", job.who)),
                        );
                        Reply::Done {
                            message: format!("account {name} removed"),
                        }
                    }
                    Ok(false) => Reply::error(format!("no account named {name}")),
                    Err(e) => Reply::error(e.to_string()),
                },
                Request::Grant { .. } => unreachable!("grants are batched above"),
            };
            let _ = job.reply.send(reply);
        }
        if !grants.is_empty() {
            self.grant_batch(grants);
        }
        self.publish_counts();
    }

    /// Sets the live grant and ban gauges from the store: after each batch and each expiry, so a
    /// scrape sees what the table holds.
    fn publish_counts(&self) {
        if let Ok((g, b)) = self.store.counts() {
            crate::observe::metrics::METRICS.set_live(g, b);
        }
    }

    /// Checks one grant request; the error is what the asker sees, and nothing is changed.
    fn check_grant(&self, req: &Request, job: &Job, now: UnixMs) -> Result<NewGrant, String> {
        let Request::Grant {
            address,
            services,
            ttl,
            note,
        } = req
        else {
            unreachable!()
        };
        let ip = addr::parse_host(address)
            .and_then(addr::check_grantable)
            .map_err(|e| e.to_string())?;
        let mut svcs: Vec<String> = Vec::new();
        let asked = if services.is_empty() {
            self.config.default_services()
        } else {
            services.clone()
        };
        for s in asked {
            let s = s.trim().to_string();
            if !self.firewall.layout().has_service(&s) {
                let known: Vec<&str> = self
                    .firewall
                    .layout()
                    .services
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                return Err(format!(
                    "unknown service `{s}`; the config defines: {}",
                    known.join(", ")
                ));
            }
            if !svcs.contains(&s) {
                svcs.push(s);
            }
        }
        let ttl = ttl.unwrap_or(self.config.grants.ttl_default);
        check_ttl(ttl, self.config.grants.ttl_max, "grants.ttl-max")?;
        Ok(NewGrant {
            address: ip,
            services: svcs,
            source: job.source,
            who: job.who.clone(),
            note: clean_text(note),
            expires: now + ttl.0.as_millis() as i64,
        })
    }

    fn grant_batch(&mut self, jobs: Vec<Job>) {
        let now = self.now();
        let mut ok: Vec<(NewGrant, Job)> = Vec::new();
        for job in jobs {
            match self.check_grant(&job.request, &job, now.wall) {
                Ok(g) => ok.push((g, job)),
                Err(e) => {
                    let mut ev = Event::new(Kind::GrantRefused, now.wall)
                        .who(job.who.as_str())
                        .source(job.source)
                        .detail(e.clone());
                    if let Request::Grant { address, .. } = &job.request {
                        ev.address = addr::parse_host(address).ok();
                    }
                    audit::record(ev);
                    let _ = job.reply.send(Reply::error(e));
                }
            }
        }
        if ok.is_empty() {
            return;
        }
        let new: Vec<NewGrant> = ok.iter().map(|(g, _)| g.clone()).collect();
        let written = match self.store.insert_grants(&new, now.wall) {
            Ok(w) => w,
            Err(e) => {
                warn!("store refused {} grant(s): {e}", ok.len());
                for (_, job) in ok {
                    let _ = job.reply.send(Reply::error(format!("not granted: {e}")));
                }
                return;
            }
        };
        // Durable now. Put every touched address's elements in with its latest end.
        let addrs: BTreeSet<IpAddr> = written.iter().map(|g| g.address).collect();
        let applied = self.refresh_addresses(&addrs, &[], now);
        for (grant, (_, job)) in written.into_iter().zip(ok) {
            crate::observe::metrics::METRICS.grant(grant.source);
            audit::record(
                Event::new(Kind::Grant, now.wall)
                    .address(grant.address)
                    .who(grant.who.as_str())
                    .source(grant.source)
                    .detail(format!(
                        "services={} until={} note={:?}",
                        grant.services.join(","),
                        utc(grant.end()),
                        grant.note
                    )),
            );
            let warning = self.banned_warning(grant.address, now.wall);
            let _ = job.reply.send(Reply::Granted {
                grant,
                firewall: applied.clone(),
                warning,
            });
        }
    }

    fn banned_warning(&self, ip: IpAddr, now: UnixMs) -> Option<String> {
        let bans = self.store.live_bans(now).ok()?;
        let b = bans.iter().find(|b| b.address == ip)?;
        Some(format!(
            "{ip} is banned for another {}; the ban wins until it ends (passknock unban {ip})",
            human(Duration::from_millis((b.expires - now).max(0) as u64))
        ))
    }

    /// Sets each address's allow elements to what its live grants want, and removes the elements
    /// of `services_gone` that no live grant wants any more.
    fn refresh_addresses(&mut self, addrs: &BTreeSet<IpAddr>, gone: &[Grant], now: Now) -> Applied {
        let mut changes = Changes::default();
        for ip in addrs {
            let live = match self.store.grants_for(*ip, now.wall) {
                Ok(l) => l,
                Err(e) => return self.note_firewall(Err(e.to_string())),
            };
            let want = nft::desired(self.firewall.layout(), &live, &[], &mut self.clock, now);
            for g in gone.iter().filter(|g| g.address == *ip) {
                for svc in &g.services {
                    let k = ElemKey {
                        set: nft::allow_set(svc, Family::of(ip)),
                        addr: *ip,
                    };
                    if self.firewall.layout().has_service(svc)
                        && !want.contains_key(&k)
                        && !changes.remove.contains(&k)
                    {
                        changes.remove.push(k);
                    }
                }
            }
            changes.set.extend(want);
        }
        self.apply(changes, now)
    }

    /// Applies element changes; a failure is recorded and retried (see `note_firewall`).
    fn apply(&mut self, changes: Changes, now: Now) -> Applied {
        let r = self
            .firewall
            .change(&changes, now.wall)
            .map_err(|e| e.to_string());
        self.note_firewall(r)
    }

    /// Records an nft failure and schedules a retry: the store has the change, the table will.
    fn note_firewall(&mut self, r: Result<(), String>) -> Applied {
        match r {
            Ok(()) => Applied::default(),
            Err(e) => {
                warn!(
                    "firewall not updated, retrying in {}: {e}",
                    human(self.retry_delay)
                );
                self.firewall_error = Some(e.clone());
                self.next_reconcile = self.next_reconcile.min(Instant::now() + self.retry_delay);
                Applied { error: Some(e) }
            }
        }
    }

    fn revoke(&mut self, address: &str, who: &str, source: Source) -> Reply {
        let ip = match addr::parse_host(address) {
            Ok(ip) => ip,
            Err(e) => return Reply::error(e.to_string()),
        };
        let removed = match self.store.revoke(ip) {
            Ok(r) => r,
            Err(e) => return Reply::error(format!("not revoked: {e}")),
        };
        if removed.is_empty() {
            return Reply::error(format!("{ip} has no grant"));
        }
        let now = self.now();
        let applied = self.refresh_addresses(&BTreeSet::from([ip]), &removed, now);
        audit::record(
            Event::new(Kind::Revoke, now.wall)
                .address(ip)
                .who(who)
                .source(source)
                .detail(format!("grants={}", removed.len())),
        );
        Reply::Revoked {
            address: ip,
            grants: removed.len(),
            firewall: applied,
        }
    }

    fn ban(&mut self, address: &str, ttl: Option<Ttl>, reason: &str, who: &str, source: Source) -> Reply {
        let ip = match addr::parse_host(address).and_then(addr::check_grantable) {
            Ok(ip) => ip,
            Err(e) => return Reply::error(e.to_string()),
        };
        if let Some(net) = self.config.firewall.trusted.iter().find(|n| n.contains(ip)) {
            return Reply::error(format!(
                "{ip} is trusted (firewall.trusted has {net}); trusted addresses are never banned"
            ));
        }
        let ttl = ttl.unwrap_or(self.config.bans.ttl_default);
        if let Err(e) = check_ttl(ttl, self.config.bans.ttl_max, "bans.ttl-max") {
            return Reply::error(e);
        }
        let now = self.now();
        let reason = if reason.trim().is_empty() {
            format!("banned by {who}")
        } else {
            clean_text(reason)
        };
        let ban = match self
            .store
            .ban(ip, &reason, now.wall + ttl.0.as_millis() as i64, now.wall)
        {
            Ok(b) => b,
            Err(e) => return Reply::error(format!("not banned: {e}")),
        };
        let set = self.clock.end(ip, ban.expires, now).map(|end| (ban_key(ip), end));
        let applied = self.apply(
            Changes {
                set: set.into_iter().collect(),
                remove: vec![],
            },
            now,
        );
        audit::record(
            Event::new(Kind::Ban, now.wall)
                .address(ip)
                .who(who)
                .source(source)
                .detail(format!("until={} reason={reason:?}", utc(ban.expires))),
        );
        crate::observe::metrics::METRICS.ban();
        Reply::Banned {
            ban,
            firewall: applied,
        }
    }

    fn unban(&mut self, address: &str, who: &str, source: Source) -> Reply {
        let now = self.now();
        let ip = match addr::parse_host(address) {
            Ok(ip) => ip,
            Err(e) => return Reply::error(e.to_string()),
        };
        match self.store.unban(ip) {
            Ok(Some(_)) => {}
            Ok(None) => return Reply::error(format!("{ip} is not banned")),
            Err(e) => return Reply::error(format!("not unbanned: {e}")),
        }
        let applied = self.apply(
            Changes {
                set: vec![],
                remove: vec![ban_key(ip)],
            },
            now,
        );
        audit::record(
            Event::new(Kind::Unban, now.wall)
                .address(ip)
                .who(who)
                .source(source),
        );
        Reply::Unbanned {
            address: ip,
            firewall: applied,
        }
    }

    /// A call is up from `ip`: each live grant of `ip` lasts until at least `until`, but at most
    /// `ami.hold-max` past its own expiry. Writes nothing while every grant outlives `until` anyway,
    /// so a renewal costs a store write and an nft run only when a TTL is near.
    fn hold(&mut self, ip: IpAddr, until: UnixMs, who: &str) -> Reply {
        let now = self.now();
        let max = self.config.ami.hold_max.0.as_millis() as i64;
        let grants = match self.store.grants_for(ip, now.wall) {
            Ok(g) => g,
            Err(e) => return Reply::error(format!("not held: {e}")),
        };
        let new_end = |g: &Grant| g.expires.max(until.min(g.expires + max));
        let changes = grants.iter().any(|g| new_end(g) != g.end());
        let mut applied = Applied::default();
        if changes {
            if let Err(e) = self.store.hold_capped(ip, until, max, now.wall) {
                return Reply::error(format!("not held: {e}"));
            }
            applied = self.refresh_addresses(&BTreeSet::from([ip]), &[], now);
            let end = grants.iter().map(new_end).max().unwrap_or(now.wall);
            audit::record(
                Event::new(Kind::Hold, now.wall)
                    .address(ip)
                    .who(who)
                    .source(Source::Ami)
                    .detail(format!("until={} (call up)", utc(end))),
            );
        }
        Reply::Held {
            address: ip,
            grants: grants.len(),
            end: grants
                .iter()
                .map(|g| if changes { new_end(g) } else { g.end() })
                .max(),
            firewall: applied,
        }
    }

    /// `ip`'s calls ended: its grants end at their own expiry again, and those already past it end
    /// now.
    fn release(&mut self, ip: IpAddr, who: &str) -> Reply {
        let released = match self.store.release(ip) {
            Ok(n) => n,
            Err(e) => return Reply::error(format!("not released: {e}")),
        };
        let now = self.now();
        let mut applied = Applied::default();
        if released > 0 {
            audit::record(
                Event::new(Kind::Release, now.wall)
                    .address(ip)
                    .who(who)
                    .source(Source::Ami)
                    .detail("(calls ended)"),
            );
            // Grants whose TTL passed during the call go now; the rest get their shorter timeout.
            self.expire(now);
            if self.store.grants_for(ip, now.wall).is_ok_and(|g| !g.is_empty()) {
                applied = self.refresh_addresses(&BTreeSet::from([ip]), &[], now);
            }
        }
        let live = self.store.grants_for(ip, now.wall).unwrap_or_default();
        Reply::Held {
            address: ip,
            grants: live.len(),
            end: live.iter().map(Grant::end).max(),
            firewall: applied,
        }
    }

    fn list(&self, limit: Option<usize>) -> Reply {
        let now = now_ms();
        match (
            self.store.first_live_grants(now, limit),
            self.store.first_live_bans(now, limit),
        ) {
            (Ok(grants), Ok(bans)) => Reply::Listing { now, grants, bans },
            (Err(e), _) | (_, Err(e)) => Reply::error(e.to_string()),
        }
    }

    fn desired_now(&mut self, now: Now) -> Result<nft::Elements, StoreError> {
        let bans = self.store.live_bans(now.wall)?;
        let layout = self.firewall.layout();
        let clock = &mut self.clock;
        let mut out = nft::desired(layout, [], &bans, clock, now);
        self.store.for_each_live(now.wall, |ip, services, end| {
            nft::add_grant(layout, &mut out, ip, services.split(','), end, clock, now)
        })?;
        Ok(out)
    }

    fn status(&mut self) -> Reply {
        let now = self.now();
        let desired = match self.desired_now(now) {
            Ok(d) => d,
            Err(e) => return Reply::error(e.to_string()),
        };
        let (present, in_sync, detail, elements) = match self.firewall.compare(&desired, now.wall) {
            Ok((obs, v)) => {
                let elements = obs.as_ref().map(|o| o.element_count()).unwrap_or(0);
                let detail = match &v {
                    Verdict::InSync => String::new(),
                    Verdict::Fix(c) => {
                        format!("{} element(s) to set, {} to remove", c.set.len(), c.remove.len())
                    }
                    Verdict::Rebuild(why) => why.clone(),
                };
                (obs.is_some(), v == Verdict::InSync, detail, elements)
            }
            Err(e) => (false, false, e.to_string(), 0),
        };
        give_back_memory();
        let (grants, bans) = self.store.counts().unwrap_or((0, 0));
        Reply::Status(Box::new(Status {
            table: format!("inet {}", self.firewall.layout().table),
            table_present: present,
            in_sync,
            sync_detail: detail,
            grants,
            bans,
            elements,
            services: self
                .firewall
                .layout()
                .services
                .iter()
                .map(|(n, _)| n.clone())
                .collect(),
            store: self.store.path().to_path_buf(),
            last_reconcile: self.last_reconcile,
            firewall_error: self.firewall_error.clone(),
            now: now.wall,
            // Counted from the history by the daemon, off this thread.
            last_hour: Default::default(),
            last_24h: Default::default(),
        }))
    }

    /// Ends what is due: store rows go, and their elements go from the table now (the kernel's
    /// own timeout, rounded up to a second, is only the backstop).
    fn expire(&mut self, now: Now) {
        let (grants, bans) = match self.store.prune(now.wall) {
            Ok(x) => x,
            Err(e) => {
                warn!("cannot prune the store: {e}");
                return;
            }
        };
        for g in &grants {
            audit::record(
                Event::new(Kind::GrantEnded, now.wall)
                    .address(g.address)
                    .who(g.who.as_str())
                    .source(g.source)
                    .detail(format!("services={}", g.services.join(","))),
            );
        }
        for b in &bans {
            audit::record(
                Event::new(Kind::BanEnded, now.wall)
                    .address(b.address)
                    .detail(format!("reason={:?}", b.reason)),
            );
        }
        if grants.is_empty() && bans.is_empty() {
            return;
        }
        self.publish_counts();
        let addrs: BTreeSet<IpAddr> = grants.iter().map(|g| g.address).collect();
        let mut applied = self.refresh_addresses(&addrs, &grants, now);
        if !bans.is_empty() {
            let remove = bans.iter().map(|b| ban_key(b.address)).collect();
            applied = self.apply(Changes { set: vec![], remove }, now);
        }
        debug!(
            "expired {} grant(s), {} ban(s); firewall error: {:?}",
            grants.len(),
            bans.len(),
            applied.error
        );
    }

    /// Reads the table back and fixes it. On failure, retries with a growing delay.
    pub fn reconcile(&mut self) -> Result<Reconciled, String> {
        let now = self.now();
        self.clock.forget_ended(now);
        let interval = self.config.daemon.reconcile_interval.0;
        let result = self.desired_now(now).map_err(|e| e.to_string()).and_then(|d| {
            self.firewall
                .reconcile(&d, now.wall)
                .map_err(|e: NftError| e.to_string())
        });
        give_back_memory();
        match &result {
            Ok(r) => {
                match r {
                    Reconciled::InSync => debug!("reconcile: table in sync"),
                    Reconciled::Fixed { .. } => warn!("reconcile: table had drifted from the store; {r}"),
                    Reconciled::Rebuilt { .. } => info!("reconcile: table {r}"),
                }
                self.last_reconcile = Some(now.wall);
                self.firewall_error = None;
                self.retry_delay = defaults::RETRY_FIRST;
                self.next_reconcile = Instant::now() + interval;
            }
            Err(e) => {
                warn!(
                    "reconcile failed, the previous table stays; retrying in {}: {e}",
                    human(self.retry_delay)
                );
                self.firewall_error = Some(e.clone());
                self.next_reconcile = Instant::now() + self.retry_delay;
                self.retry_delay = (self.retry_delay * 2).min(interval);
            }
        }
        result
    }
}

/// A reconcile of 100,000 grants builds tens of megabytes that are dropped right after; hand
/// them back to the OS rather than keep the peak as the daemon's size for good.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Owner numbers as the limits key them; an entry that is not a number is refused.
fn caller_numbers(raw: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for r in raw.iter().filter(|r| !r.trim().is_empty()) {
        match crate::rules::limiter::normalize_number(r)? {
            Some(n) if !out.contains(&n) => out.push(n),
            _ => {}
        }
    }
    if out.len() > 16 {
        return Err("an account lists at most 16 owner numbers".into());
    }
    Ok(out)
}

fn check_ttl(ttl: Ttl, max: Ttl, key: &str) -> Result<(), String> {
    if ttl.0.is_zero() {
        return Err("a TTL must be more than 0s".into());
    }
    if ttl > max {
        return Err(format!("TTL {ttl} is above the cap {key} ({max})"));
    }
    Ok(())
}

/// Notes and reasons go into audit lines: one line, printable, bounded.
fn clean_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(TEXT_MAX)
        .collect::<String>()
        .trim()
        .to_string()
}
