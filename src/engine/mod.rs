//! The engine: the one writer of the store and the table. Commands arrive on a queue and are
//! taken in batches — one store transaction and one nft batch for many grants — so a burst of
//! callers costs one fsync and one `nft` run, not hundreds. It reads no clock in its rules: the
//! run loop reads [`Now`] once per wake and hands it down.

mod accounts;
mod auth_grants;
mod bans;
pub mod checker;
pub mod command;
mod grants;
mod handle;
mod holds;
pub mod ports;
mod remote;
mod standing;
mod status;
mod upkeep;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;

pub use command::{
    AccountAsk, AccountCreated, Actor, Answer, AuthGranted, BanAsk, Banned, GrantAsk, Granted, Held, Holder,
    Listing, Owner, Refused, Reloaded, Revoked, Services, StandingAsk, StandingChanged, StandingListing,
    TableChange, TableStatus, Unbanned,
};
pub use handle::{channel, EngineHandle, Inbox};

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::base::clock::{Clock, Now, UnixMs};
use crate::base::defaults;
use crate::base::duration::{human, Ttl};
use crate::base::lock::lock;
use crate::base::secret::DisaKey;
use crate::config::Config;
use crate::nft::{Firewall, Reconciled};
use crate::store::Db;
use checker::{Link, PassOutcome, PassRequest};
use command::{Command, Job, Reply};
use ports::{Records, Table};

/// Called from the run loop at each wake with the monotonic time: pings the service manager's
/// watchdog when due, and says how long until it is due again. A stuck engine (a hung nft, say)
/// goes silent, and systemd restarts the daemon.
pub type Heartbeat = Box<dyn FnMut(Instant) -> Duration + Send>;

/// The one writer: the config it enforces, the store and the table it keeps in line.
pub struct Engine<R: Records = Db, T: Table = Firewall> {
    config: Arc<Config>,
    disa_key: Option<Arc<DisaKey>>,
    store: R,
    firewall: T,
    /// Holds kernel timeouts to the time truly left when the wall clock is stepped; shared with
    /// the read-back's thread, which builds the whole table's wants with it.
    clock: Arc<Mutex<Clock>>,
    next_reconcile: Instant,
    retry_delay: Duration,
    last_reconcile: Option<UnixMs>,
    firewall_error: Option<String>,
    heartbeat: Option<Heartbeat>,
    /// Passes for the read-back's thread, sent by the run loop (tests run them by hand).
    passes: Vec<PassRequest>,
    checker: Option<Link>,
    /// While a repair pass runs: the addresses the engine changed since it started, which its
    /// fixes must leave alone.
    touched: Option<BTreeSet<IpAddr>>,
    /// A repair is wanted as soon as the one running comes back.
    repair_again: bool,
    /// When the running repair pass was asked for.
    pass_started: Option<Instant>,
    /// The live-count gauges are behind the store, and when they may be counted again.
    counts_stale: bool,
    counts_due: Instant,
    /// Reloads answered when the next repair pass (the one started after them) comes back.
    reloads_next: Vec<Reply<Reloaded>>,
    reloads_running: Vec<Reply<Reloaded>>,
    /// Bans made while a shared store was away: enforced here, written up once it is back.
    held_bans: Vec<crate::model::Ban>,
}

/// A repair pass running longer than this is stuck: the watchdog is no longer fed.
const PASS_STUCK: Duration = Duration::from_secs(30);

/// The live-count gauges are counted at most this often while the queue stays busy.
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// How often the run loop looks for a running repair pass's outcome.
const OUTCOME_POLL: Duration = Duration::from_millis(5);

/// Longest note or reason kept with a grant or ban.
const TEXT_MAX: usize = 200;

impl<R: Records, T: Table> Engine<R, T> {
    /// An engine over `store` and `firewall`; `now` is when it starts (its first reconcile is due).
    pub fn new(config: Config, store: R, firewall: T, now: Now) -> Engine<R, T> {
        Engine {
            config: Arc::new(config),
            disa_key: None,
            store,
            firewall,
            clock: Arc::default(),
            next_reconcile: now.mono,
            retry_delay: defaults::RETRY_FIRST,
            last_reconcile: None,
            firewall_error: None,
            heartbeat: None,
            passes: Vec::new(),
            checker: None,
            touched: None,
            repair_again: false,
            pass_started: None,
            counts_stale: false,
            counts_due: now.mono,
            reloads_next: Vec::new(),
            reloads_running: Vec::new(),
            held_bans: Vec::new(),
        }
    }

    /// The service manager's watchdog, fed from the loop in [`Engine::run`].
    pub fn set_heartbeat(&mut self, heartbeat: Heartbeat) {
        self.heartbeat = Some(heartbeat);
    }

    /// The key new passcodes are tagged with (the DISA listener holds the same one).
    pub fn set_disa_key(&mut self, key: Arc<DisaKey>) {
        self.disa_key = Some(key);
    }

    /// The clock the read-back's thread builds the table's wants with.
    pub fn clock(&self) -> Arc<Mutex<Clock>> {
        self.clock.clone()
    }

    /// Where repair and status passes go, and their outcomes come from: the read-back's thread.
    pub fn set_checker(&mut self, link: Link) {
        self.checker = Some(link);
    }

    /// Says so once when the wall clock was stepped since the last reading.
    fn note_clock(&mut self, now: Now) {
        let step = lock(&self.clock).step(now, defaults::CLOCK_STEP_MIN);
        let Some(step) = step else {
            return;
        };
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

    /// Prunes what ended while the daemon was down and asks for the first repair pass, which the
    /// caller then runs with [`Engine::run_passes`].
    pub fn start(&mut self, now: Now) {
        self.note_clock(now);
        self.expire(now);
        self.publish_counts();
        self.kick_repair(now);
    }

    /// Runs the passes asked for through `run_pass` (the read-back's checker, inline: at start,
    /// nothing else is asking yet) and takes their outcomes; the last repair's result.
    pub fn run_passes(
        &mut self,
        now: Now,
        mut run_pass: impl FnMut(PassRequest) -> Option<PassOutcome>,
    ) -> Option<Result<Reconciled, String>> {
        let mut result = None;
        while !self.passes.is_empty() {
            for req in std::mem::take(&mut self.passes) {
                if let Some(outcome) = run_pass(req) {
                    result = Some(self.checked(outcome, now));
                }
            }
        }
        result
    }

    /// Hands the passes asked for since the last call to the read-back's thread.
    fn send_passes(&mut self) {
        let Some(link) = &self.checker else { return };
        for req in self.passes.drain(..) {
            if link.passes.send(req).is_err() {
                warn!("the table's read-back thread is gone; reconciles stop");
            }
        }
    }

    /// Takes the repair outcomes the read-back's thread has sent.
    fn take_outcomes(&mut self, now: Now) {
        let Some(link) = &self.checker else { return };
        let outcomes: Vec<PassOutcome> = link.outcomes.try_iter().collect();
        for o in outcomes {
            let _ = self.checked(o, now);
        }
    }

    /// Serves commands until every handle is gone, waking for expiries and reconciles in between.
    /// This loop is the engine's only reading of the clocks: once per wake, handed down.
    pub fn run(mut self, inbox: Inbox) {
        let rx = inbox.0;
        let mut batch: Vec<Job> = Vec::new();
        loop {
            let now = Now::read();
            self.note_clock(now);
            let handled = !batch.is_empty();
            if handled {
                self.handle(std::mem::take(&mut batch), now);
            }
            self.take_outcomes(now);
            self.wake(now);
            // The counts are kept by the store (a row read, on PostgreSQL a round trip): read when
            // the queue is drained, or once a second under a flood, never between a request and
            // its answer.
            if self.counts_stale && (!handled || now.mono >= self.counts_due) {
                self.publish_counts();
                self.counts_stale = false;
                self.counts_due = now.mono + COUNTS_EVERY;
            }
            // After a batch, look again at once: the next wake is reckoned from a fresh reading.
            let mut wait = if handled {
                Duration::ZERO
            } else {
                self.until_next_wake(now)
            };
            // A read-back stuck for long (a hung nft) silences the watchdog as a stuck engine
            // does: the service manager restarts the daemon.
            let stuck = self
                .pass_started
                .is_some_and(|t| now.mono.saturating_duration_since(t) > PASS_STUCK);
            if let (Some(beat), false) = (&mut self.heartbeat, stuck) {
                wait = wait.min(beat(now.mono));
            }
            // While a repair pass runs, look for its outcome often; nobody waits on it.
            if self.touched.is_some() {
                wait = wait.min(OUTCOME_POLL);
            }
            self.send_passes();
            // Nothing in hand: the read-back may work on. A request arriving says otherwise
            // (its sender marks it urgent before the engine wakes).
            crate::base::pace::urgent(false);
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    crate::base::pace::urgent(true);
                    batch.push(job);
                    while batch.len() < defaults::BATCH_MAX {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let (g, b) = self.store.counts().unwrap_or((0, 0));
        info!(
            "stopping: table inet {} stays in place with {g} grant(s) and {b} ban(s); each element \
             keeps its kernel timeout, so access still closes on time while the daemon is down",
            self.firewall.layout().table
        );
    }

    /// Does what is due at `now`: ends expired grants and bans, reconciles when it is time (or
    /// a failed change is to be retried).
    pub fn wake(&mut self, now: Now) {
        if self
            .store
            .next_end()
            .ok()
            .flatten()
            .is_some_and(|e| e <= now.wall)
        {
            self.expire(now);
        }
        if now.mono >= self.next_reconcile {
            self.kick_repair(now);
        }
    }

    fn until_next_wake(&self, now: Now) -> Duration {
        let mut wait = self.next_reconcile.saturating_duration_since(now.mono);
        if let Ok(Some(end)) = self.store.next_end() {
            let ms = (end - now.wall).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
        wait
    }

    /// Runs one batch in order. Consecutive grants are written together (one transaction, one
    /// nft batch); any other command first lets the grants queued before it through.
    pub(crate) fn handle(&mut self, batch: Vec<Job>, now: Now) {
        let mut grants = Vec::new();
        let mut bans = Vec::new();
        let mut arrivals = Vec::new();
        // Login-earned grants in the grant batch: each answer is passed on once it is written.
        let mut earned = Vec::new();
        for Job {
            actor,
            command,
            arrived,
        } in batch
        {
            let command = match command {
                Command::Grant(ask, reply) => {
                    grants.push((actor, ask, None, reply));
                    arrivals.push(arrived);
                    continue;
                }
                Command::GrantBeside(ask, beside, reply) => {
                    grants.push((actor, ask, Some(beside), reply));
                    arrivals.push(arrived);
                    continue;
                }
                Command::GrantOnAuth(ask, reply) => {
                    // The bans queued before it are written first: the ban wins.
                    if !bans.is_empty() {
                        self.ban_batch(std::mem::take(&mut bans), now);
                    }
                    match self.auth_precheck(&ask, &actor, now.wall) {
                        Err(e) => drop(reply.send(Err(e))),
                        Ok(Some(fresh)) => drop(reply.send(Ok(AuthGranted::Fresh(fresh)))),
                        Ok(None) => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            grants.push((actor, ask, None, tx));
                            earned.push((rx, reply));
                            arrivals.push(arrived);
                        }
                    }
                    continue;
                }
                Command::Ban(ask, reply) if grants.is_empty() => {
                    bans.push((actor, ask, reply));
                    arrivals.push(arrived);
                    continue;
                }
                other => other,
            };
            if !bans.is_empty() {
                self.ban_batch(std::mem::take(&mut bans), now);
                observe_arrivals(&mut arrivals);
            }
            if !grants.is_empty() {
                self.grant_batch(std::mem::take(&mut grants), now, || {
                    observe_arrivals(&mut arrivals)
                });
            }
            match command {
                Command::Grant(..) | Command::GrantBeside(..) | Command::GrantOnAuth(..) => {
                    unreachable!("grants are batched above")
                }
                Command::Ban(ask, reply) => {
                    bans.push((actor, ask, reply));
                    arrivals.push(arrived);
                }
                Command::Revoke(ip, r) => drop(r.send(self.revoke(ip, &actor, now))),
                Command::Unban(ip, r) => drop(r.send(self.unban(ip, &actor, now))),
                Command::Hold(ip, until, r) => drop(r.send(self.hold(ip, until, &actor, now))),
                Command::Release(ip, r) => drop(r.send(self.release(ip, &actor, now))),
                Command::List(limit, r) => drop(r.send(self.list(limit, now))),
                Command::Status(r) => self.status(r, now),
                Command::Reload(config, r) => self.reload(*config, r, now),
                Command::AccountAdd(ask, r) => drop(r.send(self.account_add(ask, &actor, now))),
                Command::AccountList(r) => drop(r.send(self.store.accounts().map_err(refused))),
                Command::AccountCallers(name, callers, r) => {
                    drop(r.send(self.account_callers(&name, &callers, &actor, now)))
                }
                Command::AccountResetPasscode(name, r) => {
                    drop(r.send(self.account_reset(&name, &actor, now)))
                }
                Command::AccountSetDisabled(name, disabled, r) => {
                    drop(r.send(self.account_set_disabled(&name, disabled, &actor, now)))
                }
                Command::AccountRemove(name, r) => drop(r.send(self.account_remove(&name, &actor, now))),
                Command::StandingAdd(ask, r) => drop(r.send(self.standing_add(ask, &actor, now))),
                Command::StandingList(r) => drop(r.send(self.standing_list(now))),
                Command::StandingRemove(name, r) => drop(r.send(self.standing_remove(&name, &actor, now))),
                Command::Resolved(answers, r) => drop(r.send(self.resolved(answers, now))),
                Command::Remote(addresses) => self.remote(addresses, now),
            }
        }
        if !bans.is_empty() {
            self.ban_batch(bans, now);
        }
        if !grants.is_empty() {
            self.grant_batch(grants, now, || observe_arrivals(&mut arrivals));
        }
        // Every grant batch has run, so every answer is in its channel.
        for (mut rx, reply) in earned {
            let answer = rx
                .try_recv()
                .unwrap_or_else(|_| Err(Refused::new("not granted: the grant was not answered")));
            let _ = reply.send(answer.map(AuthGranted::Granted));
        }
        observe_arrivals(&mut arrivals);
        self.counts_stale = true;
    }

    /// Takes a config the daemon loaded and checked: services, trusted networks, TTL caps and
    /// limits change now, and the table is rebuilt to match by the next repair pass, which
    /// answers the reload. Grants and bans are the store's and are all kept.
    fn reload(&mut self, config: Config, reply: Reply<Reloaded>, now: Now) {
        self.firewall.reconfigure(&config);
        self.config = Arc::new(config);
        self.reloads_next.push(reply);
        self.kick_repair(now);
    }

    /// Sets the live grant and ban gauges from the store: after each batch and each expiry, so a
    /// scrape sees what the table holds.
    fn publish_counts(&self) {
        if let Ok((g, b)) = self.store.counts() {
            crate::observe::metrics::METRICS.set_live(g, b);
        }
    }
}

/// Each request answered in this batch: from reaching the daemon to the kernel's acknowledgement.
fn observe_arrivals(arrivals: &mut Vec<Instant>) {
    for a in arrivals.drain(..) {
        crate::observe::metrics::METRICS.request_to_kernel(a.elapsed());
    }
}

/// A store failure as the asker sees it.
fn refused(e: impl std::fmt::Display) -> Refused {
    Refused(e.to_string())
}

fn check_ttl(ttl: Ttl, max: Ttl, key: &str) -> Result<(), Refused> {
    if ttl.0.is_zero() {
        return Err(Refused::new("a TTL must be more than 0s"));
    }
    if ttl > max {
        return Err(Refused(format!("TTL {ttl} is above the cap {key} ({max})")));
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
