//! The DISA call's policy: passcodes checked against account tags under the server key, brute-force
//! limits, which addresses may be granted, and the grant itself through the engine. The call
//! flow (what the caller hears) is `agi::disa`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agi::disa::{
    Account as CallAccount, AddressMode, Backend, Call, Outcome, Passcode, Prompts, Settings, Verdict,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::addr::{self, Net};
use crate::clock::now_ms;
use crate::config::Config;
use crate::contacts::Contacts;
use crate::control::{Reply, Request};
use crate::daemon::EngineHandle;
use crate::duration::Ttl;
use crate::limiter::{Limiter, Policy};
use crate::secret::{tags_equal, DisaKey};
use crate::store::{Source, Store, StoreError};

/// Private ranges, granted only when `disa.allow-private` says so.
const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

pub struct DisaBackend {
    engine: EngineHandle,
    contacts: Contacts,
    key: Arc<DisaKey>,
    /// A read connection of its own; the engine stays the only writer.
    store: Mutex<Store>,
    limiter: Mutex<Limiter>,
    trusted: Vec<Net>,
    allow_private: bool,
    ban_ttl: Ttl,
}

impl DisaBackend {
    pub fn new(
        config: &Config,
        engine: EngineHandle,
        contacts: Contacts,
        key: Arc<DisaKey>,
    ) -> Result<DisaBackend, StoreError> {
        let d = &config.disa;
        Ok(DisaBackend {
            engine,
            contacts,
            key,
            store: Mutex::new(Store::open(&config.daemon.store)?),
            limiter: Mutex::new(Limiter::new(Policy {
                failures: d.lockout_failures,
                window: d.lockout_window.0,
                lockout: d.lockout.0,
                global_per_hour: d.global_failures_per_hour,
                suspend: d.suspend.0,
            })),
            trusted: config.firewall.trusted.clone(),
            allow_private: d.allow_private,
            ban_ttl: d.ban_ttl,
        })
    }

    fn lookup(&self, tag: &[u8; 32]) -> Option<crate::store::Account> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
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

impl Backend for DisaBackend {
    async fn verify(&self, call: &Call, passcode: Passcode) -> Verdict {
        let now = now_ms();
        let allowed =
            self.limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allows(&call.number, call.source, now);
        // The same work whatever happens next: the tag is made and looked up even when the
        // caller is locked out, so the answer's timing says nothing.
        let tag = self.key.tag(passcode.expose());
        drop(passcode);
        let found = self.lookup(&tag);
        match found {
            Some(a) if allowed && !a.disabled => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .success(&call.number, call.source);
                info!(
                    target: "passknock::audit",
                    "passcode accepted account={:?} channel={:?} number={:?} source={}",
                    a.name,
                    call.channel,
                    call.number,
                    call.source.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
                );
                Verdict::Accepted(CallAccount {
                    name: a.name,
                    endpoint: a.endpoint,
                    modes: a
                        .address_modes
                        .iter()
                        .filter_map(|m| AddressMode::parse(m))
                        .collect(),
                })
            }
            _ => {
                crate::metrics::METRICS.failed_passcode();
                let why = if !allowed {
                    "locked out or suspended"
                } else if found.is_some() {
                    "account disabled"
                } else {
                    "wrong passcode"
                };
                let failure = if allowed {
                    Some(self.limiter.lock().unwrap_or_else(|e| e.into_inner()).failure(
                        &call.number,
                        call.source,
                        now,
                    ))
                } else {
                    None
                };
                info!(
                    target: "passknock::audit",
                    "passcode refused ({why}) channel={:?} number={:?} source={}",
                    call.channel,
                    call.number,
                    call.source.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
                );
                if let Some(f) = failure {
                    if f.number_locked {
                        info!(target: "passknock::audit", "lockout number={:?} (DISA passcode failures)", call.number);
                    }
                    if f.suspended {
                        warn!(target: "passknock::audit", "passcode entry suspended: too many failures this hour");
                    }
                    if let (true, Some(ip)) = (f.address_locked, call.source) {
                        info!(target: "passknock::audit", "lockout address={ip} (DISA passcode failures)");
                        // The SIP source of a call guessing passcodes goes to the ban set too.
                        let reply = self
                            .engine
                            .submit(
                                Request::Ban {
                                    address: ip.to_string(),
                                    ttl: Some(self.ban_ttl),
                                    reason: "DISA: repeated wrong passcodes".into(),
                                },
                                "disa",
                                Source::Disa,
                            )
                            .await;
                        if let Reply::Error { message } = reply {
                            info!("DISA: not banning {ip}: {message}");
                        }
                    }
                }
                Verdict::Rejected
            }
        }
    }

    async fn registered(&self, endpoint: &str) -> Vec<IpAddr> {
        self.contacts.registered(endpoint)
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

    async fn grant(&self, account: &CallAccount, ip: IpAddr, call: &Call) -> Result<Duration, String> {
        // Read the account again: it may have been disabled since the passcode was checked.
        let a = {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            store.account(&account.name).map_err(|e| e.to_string())?
        };
        let Some(a) = a.filter(|a| !a.disabled) else {
            return Err(format!("account {} is gone or disabled", account.name));
        };
        let reply = self
            .engine
            .submit(
                Request::Grant {
                    address: ip.to_string(),
                    services: a.services.clone(),
                    ttl: Some(Ttl(Duration::from_secs(a.ttl_secs))),
                    note: format!("channel={} number={}", call.channel, call.number),
                },
                &format!("disa:{}", a.name),
                Source::Disa,
            )
            .await;
        match reply {
            Reply::Granted { grant, .. } => {
                Ok(Duration::from_millis((grant.end() - grant.created).max(0) as u64))
            }
            Reply::Error { message } => Err(message),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// The call flow's settings from config.
pub fn settings(config: &Config) -> Settings {
    let d = &config.disa;
    let p = &d.prompts;
    let base = Prompts::default();
    Settings {
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
pub fn load_key(path: &Path) -> Result<Arc<DisaKey>, crate::secret::SecretError> {
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
    let limits = agi::server::Limits {
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
            crate::metrics::METRICS.disa_call();
            match agi::disa::run(&mut session, &*backend, &settings).await {
                Outcome::Granted {
                    account,
                    address,
                    ttl,
                } => {
                    info!(
                        "DISA {channel}: {account} granted {address} for {}",
                        crate::duration::human(ttl)
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
