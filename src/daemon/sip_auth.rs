//! `[sip-auth-grant]` on the AMI side: which `SuccessfulAuth` events earn a grant (a PJSIP login
//! by a listed endpoint from a usable, untrusted address) and asking the engine for it.
//!
//! AMI is a peer passknock reads, not one it trusts blindly: an event without an account or an
//! address, or with one no grant may hold, is refused with a log line, never granted.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ami_listener::event::{Security, SecurityKind};
use tracing::{debug, info, warn};

use crate::base::addr::{self, Net};
use crate::base::clock::utc;
use crate::base::duration::Ttl;
use crate::base::lock::lock;
use crate::config::Config;
use crate::engine::{Actor, AuthGranted, EngineHandle, GrantAsk, Holder, Owner, Services};
use crate::model::Source;

/// Logins waiting for the engine's answer, at most: a flood from a broken peer is refused past
/// it instead of piling up tasks. A phone's repeated logins while one is pending are one ask.
const PENDING_MAX: usize = 1024;

/// What one `SuccessfulAuth` comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the engine to grant `address` for `endpoint`.
    Grant { endpoint: String, address: IpAddr },
    /// Not a login this section is about (an AMI or other non-SIP login, an endpoint not listed,
    /// a trusted address): said at debug level only, as every other phone logs in all day.
    Pass(String),
    /// An event that should not come from Asterisk as it is: refused with a warning.
    Refuse(String),
}

/// The section as the AMI handler runs it; `None` from [`AuthGrants::from_config`] when off.
pub struct AuthGrants {
    endpoints: BTreeSet<String>,
    services: Services,
    ttl: Option<Ttl>,
    trusted: Vec<Net>,
    /// (endpoint, address) asked of the engine and not answered yet.
    pending: Arc<Mutex<HashSet<(String, IpAddr)>>>,
    refusals: u64,
}

impl AuthGrants {
    pub fn from_config(config: &Config) -> Option<AuthGrants> {
        let c = &config.sip_auth_grant;
        if !c.enabled() {
            return None;
        }
        Some(AuthGrants {
            endpoints: c.endpoints.iter().cloned().collect(),
            services: Services::from_names(&c.services),
            ttl: c.ttl,
            trusted: config.firewall.trusted.clone(),
            pending: Arc::default(),
            refusals: 0,
        })
    }

    /// What `s` earns. Pure: the tests feed it any event.
    pub fn judge(&self, s: &Security) -> Verdict {
        if s.kind != SecurityKind::SuccessfulAuth {
            return Verdict::Pass(format!("{} is not a successful login", s.kind.name()));
        }
        // A manager login (Service AMI, AccountID its user) or another channel driver's: only
        // a PJSIP endpoint's login is a phone's.
        if !s.service.eq_ignore_ascii_case("PJSIP") {
            return Verdict::Pass(format!("a {:?} login, not a PJSIP one", s.service));
        }
        let endpoint = s.account.trim();
        if endpoint.is_empty() {
            return Verdict::Refuse("a PJSIP SuccessfulAuth without an AccountID".into());
        }
        if !self.endpoints.contains(endpoint) {
            return Verdict::Pass(format!(
                "endpoint {:?} is not in sip-auth-grant.endpoints",
                printable(endpoint)
            ));
        }
        let Some(remote) = &s.remote else {
            return Verdict::Refuse(format!("a SuccessfulAuth for {endpoint} without a RemoteAddress"));
        };
        let ip = addr::normalize(remote.addr.ip());
        if let Err(e) = addr::check_grantable(ip) {
            return Verdict::Refuse(format!("a SuccessfulAuth for {endpoint}: {e}"));
        }
        if let Some(n) = self.trusted.iter().find(|n| n.contains(ip)) {
            return Verdict::Pass(format!("{endpoint} logged in from {ip}, trusted already ({n})"));
        }
        Verdict::Grant {
            endpoint: endpoint.to_string(),
            address: ip,
        }
    }

    /// The engine's ask for `endpoint` at `address`, and who it comes from.
    pub fn ask(&self, endpoint: &str, address: IpAddr) -> (Actor, GrantAsk) {
        let holder = Holder::Endpoint(endpoint.to_string());
        let actor = Actor::new(holder.who(), Source::Ami);
        let ask = GrantAsk {
            address,
            services: self.services.clone(),
            ttl: self.ttl,
            note: format!("PJSIP endpoint {endpoint} authenticated from {address}"),
            // An endpoint may have several contacts (a desk phone and a softphone): each address
            // keeps its own grant, which ends by its TTL.
            owner: Some(Owner {
                holder,
                replace: false,
            }),
        };
        (actor, ask)
    }

    /// Takes one security event: asks the engine (on a task of its own, so events keep
    /// flowing) when it earns a grant, and logs why not otherwise.
    pub fn on_event(&mut self, s: &Security, engine: &EngineHandle) {
        let (endpoint, address) = match self.judge(s) {
            Verdict::Grant { endpoint, address } => (endpoint, address),
            Verdict::Pass(why) => {
                debug!("AMI: no grant: {why}");
                return;
            }
            Verdict::Refuse(why) => {
                self.refuse(&why);
                return;
            }
        };
        let key = (endpoint.clone(), address);
        {
            let mut pending = lock(&self.pending);
            if pending.contains(&key) {
                return;
            }
            if pending.len() >= PENDING_MAX {
                drop(pending);
                self.refuse(&format!(
                    "{PENDING_MAX} logins already wait for the engine; {endpoint} from {address} is not granted now"
                ));
                return;
            }
            pending.insert(key.clone());
        }
        let (actor, ask) = self.ask(&endpoint, address);
        let engine = engine.clone();
        let pending = self.pending.clone();
        tokio::spawn(async move {
            let answer = engine.grant_on_auth(&actor, ask).await;
            lock(&pending).remove(&key);
            log_answer(&endpoint, address, answer);
        });
    }

    /// A warning for each refusal, fewer as they repeat: a broken peer cannot flood the log.
    fn refuse(&mut self, why: &str) {
        self.refusals += 1;
        if self.refusals.is_power_of_two() {
            warn!(
                "AMI: refused to grant on {why} ({} such refusal(s) so far)",
                self.refusals
            );
        }
    }
}

fn log_answer(endpoint: &str, address: IpAddr, answer: Result<AuthGranted, crate::engine::Refused>) {
    match answer {
        Ok(AuthGranted::Granted(g)) => {
            if let Some(e) = g.firewall.error {
                warn!("AMI: granted {address} in the store; nft not updated yet: {e}");
            }
            info!(
                "AMI: {endpoint} authenticated from {address}: granted {} until {}",
                g.grant.services.join(","),
                utc(g.grant.end())
            );
        }
        Ok(AuthGranted::Fresh(g)) => debug!(
            "AMI: {endpoint} authenticated from {address}: its grant runs until {}, nothing to write",
            utc(g.end())
        ),
        Err(refused) => info!("AMI: {endpoint} authenticated from {address}, not granted: {refused}"),
    }
}

/// An AccountID as a log line may show it: the peer chose it.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests;
