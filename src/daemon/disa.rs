//! The DISA call's policy: passcodes checked against account tags under the server key, brute-force
//! limits kept in the store, which addresses may be granted, and the grant itself through the
//! engine. The call flow (what the caller hears) is `agi::disa`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agi::disa::{
    Account as CallAccount, AddressMode, Backend, Call, CallFlowSettings, Outcome, Passcode, PasscodeVerdict,
    Prompts,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::addr::{self, Net};
use crate::base::clock::{now_ms, UnixMs};
use crate::base::defaults;
use crate::base::duration::Ttl;
use crate::base::lock::lock;
use crate::base::secret::{tags_equal, DisaKey};
use crate::config::Config;
use crate::engine::{Actor, BanAsk, EngineHandle, GrantAsk, Holder, Owner, Services};
use crate::model::Source;
use crate::model::{Event, Kind};
use crate::observe::audit::{self};
use crate::rules::attempts::SeenAttempts;
use crate::rules::contacts::Contacts;
use crate::rules::limiter::{normalize_number, Admission, Caller, GuessLimits, Key, Limiter, Record};
use crate::store::{Db, LimitLog, Location, StoreError};

/// The accounts' passcode lengths and owner numbers, as of one store version.
struct Shapes {
    version: i64,
    lengths: Vec<Option<usize>>,
    owners: std::collections::HashSet<String>,
}

/// Private ranges, granted only when `disa.allow-private` says so.
const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

pub struct DisaBackend {
    engine: EngineHandle,
    contacts: Contacts,
    /// REGISTERs the table dropped, by user: the `attempted` address mode.
    attempts: SeenAttempts,
    /// How long a call waits, after a grant, to tell the caller the phone registered.
    connected_wait: Duration,
    key: Arc<DisaKey>,
    /// A read connection of its own; the engine stays the only writer.
    store: Mutex<Db>,
    /// What every call asks of all accounts, kept while the store is unchanged.
    shapes: Mutex<Option<Shapes>>,
    limiter: Arc<Mutex<Limiter>>,
    /// Where the limiter's state is kept, so a restart keeps every lockout; with a store several
    /// nodes share, so a guesser gets no fresh tries by calling another node.
    limits_log: Arc<Mutex<LimitLog>>,
    /// The limits' store is shared: each check reads the caller's keys from it first.
    shared_limits: bool,
    /// Length of new passcodes: an entry of this length counts as a guess.
    passcode_digits: usize,
    trusted: Vec<Net>,
    allow_private: bool,
    ban_ttl: Ttl,
}

impl DisaBackend {
    pub fn new(
        config: &Config,
        store: &Location,
        engine: EngineHandle,
        contacts: Contacts,
        attempts: SeenAttempts,
        key: Arc<DisaKey>,
    ) -> Result<DisaBackend, StoreError> {
        let d = &config.disa;
        let policy = GuessLimits::from(d);
        // Lockouts and the suspension carry on across a restart.
        let now = now_ms();
        let limits_log = LimitLog::open(store)?;
        let keep = policy.window.max(Duration::from_secs(3600)).as_millis() as i64;
        let kept = limits_log.load(now, now - keep)?;
        if !kept.is_empty() {
            info!(
                "DISA: {} lockout and failure records kept from before",
                kept.len()
            );
        }
        Ok(DisaBackend {
            engine,
            contacts,
            attempts,
            // Only AMI tells us of a registration: without it there is nothing to wait for.
            connected_wait: if config.ami.enabled {
                d.connected_wait.0
            } else {
                Duration::ZERO
            },
            key,
            store: Mutex::new(Db::open(store)?),
            shapes: Mutex::new(None),
            limiter: Arc::new(Mutex::new(Limiter::restore(policy, kept, now))),
            shared_limits: limits_log.is_shared(),
            limits_log: Arc::new(Mutex::new(limits_log)),
            passcode_digits: d.passcode_digits,
            trusted: config.firewall.trusted.clone(),
            allow_private: d.allow_private,
            ban_ttl: d.ban_ttl,
        })
    }

    fn lookup(&self, tag: &[u8; 32]) -> Option<crate::model::Account> {
        let store = lock(&self.store);
        match store.account_by_tag(tag) {
            // Found by an index on the tag; compared again in constant time all the same.
            Ok(Some((a, stored))) if tags_equal(&stored, tag) => Some(a),
            Ok(_) => None,
            Err(e) => {
                warn!("DISA: cannot read accounts: {e}");
                None
            }
        }
    }
}

impl DisaBackend {
    /// The SIP peer as the limits see it: a trusted one (a trunk, carrying every PSTN caller)
    /// is no one's address, so it is never locked out.
    fn untrusted_peer(&self, call: &Call) -> Option<IpAddr> {
        call.peer
            .map(addr::normalize)
            .filter(|ip| !self.trusted.iter().any(|n| n.contains(*ip)))
    }

    /// `f` of the accounts' passcode lengths and owner numbers, read again only when another
    /// connection has committed since: 500 calls at once each scanned every account twice.
    fn with_shapes<T>(&self, f: impl FnOnce(&Shapes) -> T) -> T {
        let store = lock(&self.store);
        let mut shapes = lock(&self.shapes);
        let version = store.data_version().ok();
        if version.is_none() || shapes.as_ref().map(|s| Some(s.version)) != Some(version) {
            let lengths = store.passcode_lengths().unwrap_or_else(|e| {
                warn!("DISA: cannot read passcode lengths: {e}");
                vec![None]
            });
            let owners = store.owner_numbers().unwrap_or_else(|e| {
                warn!("DISA: cannot read accounts: {e}");
                Default::default()
            });
            let fresh = Shapes {
                version: version.unwrap_or(-1),
                lengths,
                owners,
            };
            // Kept only when the store said which version it read.
            if version.is_none() {
                return f(&fresh);
            }
            *shapes = Some(fresh);
        }
        f(shapes.as_ref().expect("just read"))
    }

    /// Whether `entry` could be a passcode at all: digits of a length some account's passcode has.
    /// Anything else (silence, a fax, a misdial) uses up a try but costs no one a lockout.
    fn could_be_passcode(&self, entry: &str) -> bool {
        if entry.is_empty() || !entry.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let n = entry.len();
        n == self.passcode_digits
            || self.with_shapes(|s| {
                s.lengths.iter().any(|l| match l {
                    Some(l) => *l == n,
                    None => (defaults::PASSCODE_DIGITS_MIN..=32).contains(&n),
                })
            })
    }

    fn is_owner_number(&self, number: &str) -> bool {
        !number.is_empty() && self.with_shapes(|s| s.owners.contains(number))
    }

    /// `f` on the limiter and its store. For a store of this box, here and now, as a local
    /// commit always was; for a shared one, on a blocking thread: a network round trip, and the
    /// PostgreSQL client must not run on the runtime's threads.
    async fn with_limits<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Limiter, &mut LimitLog) -> T + Send + 'static,
    ) -> T {
        let (limiter, log) = (self.limiter.clone(), self.limits_log.clone());
        let run = move || {
            let mut limiter = lock(&limiter);
            let mut log = lock(&log);
            f(&mut limiter, &mut log)
        };
        if !self.shared_limits {
            return run();
        }
        match tokio::task::spawn_blocking(run).await {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The caller's keys, owned, for the limiter's thread.
#[derive(Clone)]
struct CallerKeys {
    number: String,
    address: Option<IpAddr>,
    owner: bool,
}

impl CallerKeys {
    fn caller(&self) -> Caller<'_> {
        Caller {
            number: &self.number,
            address: self.address,
            owner: self.owner,
        }
    }
}

/// Before a passcode check: with a shared store, the caller's keys as every node left them.
fn refresh(
    limiter: &mut Limiter,
    log: &LimitLog,
    caller: &Caller<'_>,
    now: UnixMs,
) -> Result<(), StoreError> {
    let keys = Limiter::keys(caller);
    let records = log.refresh(&keys)?;
    limiter.refresh(&keys, records, now);
    Ok(())
}

/// Writes what a guess or a success changed, before the caller hears the verdict.
fn persist(limiter: &Limiter, log: &mut LimitLog, caller: &Caller<'_>, now: UnixMs) {
    let records: Vec<(Key, Record)> = Limiter::keys(caller)
        .into_iter()
        .map(|k| {
            let r = limiter.record(&k);
            (k, r)
        })
        .collect();
    if let Err(e) = log.save(&records, now) {
        warn!("DISA: cannot keep lockout state in the store: {e}");
    }
}

impl Backend for DisaBackend {
    async fn verify(&self, call: &Call, passcode: Passcode) -> PasscodeVerdict {
        let now = now_ms();
        // Caller ids that are not numbers (anonymous, withheld) share one key.
        let number = normalize_number(&call.number).ok().flatten().unwrap_or_default();
        let keys = CallerKeys {
            owner: self.is_owner_number(&number),
            number,
            address: self.untrusted_peer(call),
        };
        let caller = keys.caller();
        let number = caller.number;
        let shared = self.shared_limits;
        let k = keys.clone();
        let gate = self
            .with_limits(move |limiter, log| {
                let caller = k.caller();
                if shared {
                    refresh(limiter, log, &caller, now)?;
                }
                Ok::<_, StoreError>(limiter.gate(&caller, now))
            })
            .await;
        let gate = match gate {
            Ok(g) => g,
            Err(e) => {
                // Limits that may be stale are no limits: nothing is checked, nothing counted,
                // and the caller hears what a wrong passcode gets.
                warn!("DISA: the store is unreachable; passcode not checked: {e}");
                audit::record(
                    Event::new(Kind::PasscodeRefused, now)
                        .source(Source::Disa)
                        .who(call.number.as_str())
                        .detail(format!("(store unreachable) channel={:?}", call.channel)),
                );
                return PasscodeVerdict::Rejected;
            }
        };
        let shaped = self.could_be_passcode(passcode.expose());
        // The same work whatever happens next: the tag is made and looked up even when the
        // caller is locked out, so the answer's timing says nothing.
        let tag = self.key.tag(passcode.expose());
        drop(passcode);
        let found = self.lookup(&tag);
        let accepted = match (&found, gate) {
            (Some(a), Admission::Open) => !a.disabled,
            // While entry is suspended, an owner's number opens only the account that lists it.
            (Some(a), Admission::OwnerOnly) => !a.disabled && a.callers.iter().any(|c| c == number),
            _ => false,
        };
        // The SIP source as the call reported it: trusted or not, it is where the call came from.
        let from = call.peer.map(addr::normalize);
        let event = |kind: Kind| {
            let e = Event::new(kind, now).source(Source::Disa);
            match from {
                Some(ip) => e.address(ip),
                None => e,
            }
        };
        if let (true, Some(a)) = (accepted, found.clone()) {
            let k = keys.clone();
            self.with_limits(move |limiter, log| {
                let caller = k.caller();
                // A caller with no failures on record changes nothing: no write, no fsync, so
                // a crowd of right passcodes is not queued behind the disk.
                if limiter.success(&caller) {
                    persist(limiter, log, &caller, now);
                }
            })
            .await;
            audit::record(event(Kind::PasscodeAccepted).who(a.name.as_str()).detail(format!(
                "channel={:?} number={:?}{}",
                call.channel,
                call.number,
                if gate == Admission::OwnerOnly {
                    " (owner's number during a suspension)"
                } else {
                    ""
                }
            )));
            return PasscodeVerdict::Accepted(CallAccount {
                name: a.name,
                endpoint: a.endpoint,
                modes: a
                    .address_modes
                    .iter()
                    .filter_map(|m| AddressMode::parse(m))
                    .collect(),
            });
        }
        crate::observe::metrics::METRICS.failed_passcode();
        let why = match gate {
            Admission::LockedOut => "locked out",
            Admission::Suspended => "suspended",
            _ if !shaped => "not a passcode",
            _ if found.as_ref().is_some_and(|a| a.disabled) => "account disabled",
            Admission::OwnerOnly if found.is_some() => "suspended; not this number's account",
            _ => "wrong passcode",
        };
        // Only a guess counts: an entry that could be a passcode, checked by an open gate.
        let failure = if gate.checks() && shaped {
            let k = keys.clone();
            let f = self
                .with_limits(move |limiter, log| {
                    let caller = k.caller();
                    let f = limiter.failure(&caller, now);
                    persist(limiter, log, &caller, now);
                    f
                })
                .await;
            Some(f)
        } else {
            None
        };
        audit::record(
            event(Kind::PasscodeRefused)
                .who(call.number.as_str())
                .detail(format!("({why}) channel={:?}", call.channel)),
        );
        if let Some(f) = failure {
            if f.number_locked {
                audit::record(
                    Event::new(Kind::LockoutNumber, now)
                        .who(call.number.as_str())
                        .source(Source::Disa)
                        .detail("(DISA passcode failures)"),
                );
            }
            if f.suspended {
                audit::record(
                    Event::new(Kind::Suspension, now)
                        .source(Source::Disa)
                        .detail("too many failures this hour"),
                );
            }
            if let (true, Some(ip)) = (f.address_locked, caller.address) {
                audit::record(
                    Event::new(Kind::LockoutAddress, now)
                        .address(ip)
                        .source(Source::Disa)
                        .detail("(DISA passcode failures)"),
                );
                // The SIP source of a call guessing passcodes goes to the ban set too.
                let ask = BanAsk {
                    address: ip,
                    ttl: Some(self.ban_ttl),
                    reason: "DISA: repeated wrong passcodes".into(),
                };
                if let Err(refused) = self.engine.ban(&Actor::new("disa", Source::Disa), ask).await {
                    info!("DISA: not banning {ip}: {refused}");
                }
            }
        }
        PasscodeVerdict::Rejected
    }

    async fn registered(&self, endpoint: &str) -> Vec<IpAddr> {
        self.contacts.registered(endpoint)
    }

    async fn attempted(&self, endpoint: &str) -> Option<IpAddr> {
        let now = now_ms();
        let seen = self.attempts.lookup(now, endpoint);
        let Some(ip) = seen.sole_source().map(addr::normalize) else {
            // Said in the log, never guessed at: the caller hears "unavailable" and moves on.
            info!(
                "DISA: {endpoint}: {} address(es) tried to register{}; not offering one",
                seen.len(),
                if seen.complete {
                    ""
                } else {
                    " (some may have been forgotten)"
                }
            );
            return None;
        };
        if let Err(why) = self.check_address(ip) {
            info!("DISA: {endpoint} tried to register from {ip}, not offered: {why}");
            return None;
        }
        let banned = {
            let store = lock(&self.store);
            store.ban_of(ip).map(|ban| ban.is_some_and(|b| b.expires > now))
        };
        match banned {
            Ok(false) => Some(ip),
            Ok(true) => {
                info!("DISA: {endpoint} tried to register from {ip}, not offered: it is banned");
                None
            }
            Err(e) => {
                warn!("DISA: cannot read bans; not offering {ip}: {e}");
                None
            }
        }
    }

    async fn wait_connected(&self, endpoint: &str, ip: IpAddr) -> Option<bool> {
        if self.connected_wait.is_zero() {
            return None;
        }
        // Holds nothing but this call: the grant is written and in the table already.
        Some(
            self.contacts
                .wait_registered(endpoint, addr::normalize(ip), self.connected_wait)
                .await,
        )
    }

    fn check_address(&self, ip: IpAddr) -> Result<(), String> {
        let ip = addr::check_grantable(addr::normalize(ip)).map_err(|e| e.to_string())?;
        if let Some(n) = self.trusted.iter().find(|n| n.contains(ip)) {
            return Err(format!("{ip} is trusted already ({n})"));
        }
        if !self.allow_private
            && PRIVATE
                .iter()
                .any(|p| p.parse::<Net>().is_ok_and(|n| n.contains(ip)))
        {
            return Err(format!("{ip} is a private address (disa.allow-private = false)"));
        }
        Ok(())
    }

    async fn grant(
        &self,
        account: &CallAccount,
        ip: IpAddr,
        mode: AddressMode,
        call: &Call,
    ) -> Result<Duration, String> {
        // Read the account again: it may have been disabled since the passcode was checked.
        let a = {
            let store = lock(&self.store);
            store.account(&account.name).map_err(|e| e.to_string())?
        };
        let Some(a) = a.filter(|a| !a.disabled) else {
            return Err(format!("account {} is gone or disabled", account.name));
        };
        let ask = GrantAsk {
            address: ip,
            services: Services::from_names(&a.services),
            ttl: Some(Ttl(Duration::from_secs(a.ttl_secs))),
            note: format!(
                "channel={} number={} mode={}",
                call.channel,
                call.number,
                mode.name()
            ),
            owner: Some(Owner {
                holder: Holder::Account(a.name.clone()),
                replace: !a.keep_several,
            }),
        };
        let actor = Actor::new(format!("disa:{}", a.name), Source::Disa);
        let granted = self.engine.grant(&actor, ask).await.map_err(|e| e.0)?;
        let grant = granted.grant;
        if mode == AddressMode::Attempted {
            // Made from these attempts: a later call looks at new ones only.
            if let Some(ep) = &a.endpoint {
                self.attempts.forget(ep);
            }
            crate::observe::metrics::METRICS.attempted_grant();
            audit::record(
                Event::new(Kind::GrantAttempted, now_ms())
                    .address(grant.address)
                    .who(a.name.as_str())
                    .source(Source::Disa)
                    .detail(format!(
                        "endpoint={} was trying to register from it; channel={:?}",
                        a.endpoint.as_deref().unwrap_or("-"),
                        call.channel
                    )),
            );
        }
        // From now, to the nearest second: a re-call extends a grant made earlier.
        let left = (grant.end() - now_ms()).max(0) as u64;
        Ok(Duration::from_secs((left + 500) / 1000))
    }
}

/// The call flow's settings from config.
pub fn settings(config: &Config) -> CallFlowSettings {
    let d = &config.disa;
    let p = &d.prompts;
    let base = Prompts::default();
    CallFlowSettings {
        tries: d.tries_per_call,
        digit_timeout: d.digit_timeout.0,
        max_digits: 32,
        address_tries: 3,
        prompts: Prompts {
            passcode: p.passcode.clone().unwrap_or(base.passcode),
            retry: p.retry.clone().unwrap_or(base.retry),
            enter_address: p.enter_address.clone().unwrap_or(base.enter_address),
            you_entered: p.you_entered.clone().unwrap_or(base.you_entered),
            dot: p.dot.clone().unwrap_or(base.dot),
            confirm: p.confirm.clone().unwrap_or(base.confirm),
            attempt_found: p.attempt_found.clone().unwrap_or(base.attempt_found),
            attempt_unclear: p.attempt_unclear.clone().unwrap_or(base.attempt_unclear),
            connected: p.connected.clone().unwrap_or(base.connected),
            not_connected: p.not_connected.clone().unwrap_or(base.not_connected),
            refused_address: p.refused_address.clone().unwrap_or(base.refused_address),
            no_address: p.no_address.clone().unwrap_or(base.no_address),
            granted: p.granted.clone().unwrap_or(base.granted),
            hours: p.hours.clone().unwrap_or(base.hours),
            minutes: p.minutes.clone().unwrap_or(base.minutes),
            goodbye: p.goodbye.clone().unwrap_or(base.goodbye),
        },
    }
}

/// Loads the DISA key, refusing a file others can read.
pub fn load_key(path: &Path) -> Result<Arc<DisaKey>, crate::base::secret::SecretError> {
    DisaKey::load_or_create(path).map(Arc::new)
}

/// Whether `ip` may speak FastAGI to us: only Asterisk may, since whoever speaks AGI names the
/// caller and the source address. Asterisk runs on this host or on a trusted one.
fn admits(trusted: &[Net], ip: IpAddr) -> bool {
    let ip = addr::normalize(ip);
    ip.is_loopback() || trusted.iter().any(|n| n.contains(ip))
}

/// Serves the DISA call on `listener` until `shutdown`. A peer that is neither loopback nor
/// trusted is turned away at accept, before anything it sends is read.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    backend: Arc<DisaBackend>,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings(config));
    let trusted = config.firewall.trusted.clone();
    let limits = agi::server::ServerCaps {
        max_sessions: config.agi.max_sessions,
        session_deadline: config.agi.session_deadline.0,
        start_timeout: config.agi.start_timeout.0,
        max_starting: config.agi.max_starting,
        max_starting_per_peer: config.agi.max_starting_per_peer,
    };
    let handler = move |mut session: agi::session::Session<TcpStream>, peer: SocketAddr| {
        let (backend, settings) = (backend.clone(), settings.clone());
        async move {
            if session.env().script() != Some("disa") {
                warn!("FastAGI {peer}: unknown script {:?}", session.env().script());
                session.hangup().await;
                return;
            }
            let channel = session.env().get("channel").unwrap_or_default().to_string();
            crate::observe::metrics::METRICS.disa_call();
            // The number is all a call has said about itself yet; its SIP source comes later.
            audit::record(
                Event::new(Kind::DisaCall, now_ms())
                    .who(session.env().get("callerid").unwrap_or_default())
                    .source(Source::Disa)
                    .detail(format!("channel={channel:?}")),
            );
            match agi::disa::run(&mut session, &*backend, &settings).await {
                Outcome::Granted {
                    account,
                    address,
                    ttl,
                } => {
                    info!(
                        "DISA {channel}: {account} granted {address} for {}",
                        crate::base::duration::human(ttl)
                    )
                }
                Outcome::Rejected => info!("DISA {channel}: no valid passcode; call ended"),
                Outcome::NoAddress { account } => info!("DISA {channel}: {account} had no usable address"),
                Outcome::GrantFailed { account, reason } => {
                    warn!("DISA {channel}: grant for {account} failed: {reason}")
                }
                Outcome::HungUp => info!("DISA {channel}: caller hung up"),
                Outcome::Failed(e) => warn!("DISA {channel}: {e}"),
            }
        }
    };
    let admit = move |ip: IpAddr| admits(&trusted, ip);
    agi::server::serve(listener, limits, admit, handler, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_trusted_peers_may_speak_fastagi() {
        let trusted: Vec<Net> = vec!["192.0.2.0/24".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(admits(&trusted, ip("127.0.0.1")));
        assert!(admits(&trusted, ip("::1")));
        assert!(admits(&trusted, ip("::ffff:127.0.0.1")), "IPv4-mapped loopback");
        assert!(admits(&trusted, ip("192.0.2.7")));
        assert!(!admits(&trusted, ip("203.0.113.10")));
        assert!(!admits(&[], ip("192.0.2.7")));
    }
}
