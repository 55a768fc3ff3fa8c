//! The SIP attempt reader: the table logs the SIP requests it drops on the SIP service's UDP
//! ports to an NFLOG group; this thread parses each (sans-IO, capped) and remembers which
//! address tried to register (or call) as which account endpoint, for the DISA flow's
//! `attempted` mode and for `passknock attempts`.
//!
//! Only users that are account endpoints are remembered, so a flood of made-up names costs
//! nothing but a counter. The set of endpoints is read from the store through the engine at
//! start and every [`ENDPOINTS_REFRESH`] after: an account added
//! or given an endpoint is recognised within that; one removed stops being recorded, and its
//! remembered attempts are forgotten. Nothing is logged per packet: every datagram lands in
//! exactly one counter ([`SIP_ATTEMPTS`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use knockd::attempts::AttemptCaps;
use knockd::sip::{self, Method};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::defaults;
use crate::config::Config;
use crate::engine::{Actor, EngineHandle};
use crate::model::Source;
use crate::observe::attempts::SIP_ATTEMPTS;
use crate::rules::attempts::SeenAttempts;

/// How often the account endpoints are read again.
pub const ENDPOINTS_REFRESH: Duration = Duration::from_secs(5);
/// How often the memory gauges are brought up to date while packets keep coming.
const GAUGES_EVERY: u64 = 1024;

/// The attempt memory for `config`: its window, the default caps.
pub fn memory(config: &Config) -> SeenAttempts {
    SeenAttempts::new(AttemptCaps {
        window_ms: config.sip_attempts.window.0.as_millis() as i64,
        ..AttemptCaps::default()
    })
}

/// The account endpoints whose attempts are remembered. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Endpoints(Arc<RwLock<HashSet<String>>>);

impl Endpoints {
    pub fn contains(&self, user: &str) -> bool {
        self.0.read().map(|s| s.contains(user)).unwrap_or(false)
    }

    /// Replaces the set; answers the endpoints that are gone.
    pub fn replace(&self, now: HashSet<String>) -> Vec<String> {
        let mut set = match self.0.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let gone = set.difference(&now).cloned().collect();
        *set = now;
        gone
    }

    /// Every endpoint, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .read()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// What one datagram from `source` comes to, counted; the attempt is remembered when it names
/// an account endpoint.
pub fn take(seen: &SeenAttempts, endpoints: &Endpoints, at: i64, source: IpAddr, payload: &[u8]) {
    let req = match sip::parse_request(payload) {
        Ok(r) => r,
        Err(_) => return SIP_ATTEMPTS.malformed(1),
    };
    // REGISTER: the address of record (To). INVITE: the caller (From), a softphone that
    // places a call before it registers.
    let user = match req.method {
        Method::Register => req.registering_user(),
        Method::Invite => req.from.user,
        Method::Other(_) => None,
    };
    match user {
        None => SIP_ATTEMPTS.ignored(),
        Some(u) if endpoints.contains(u) => {
            seen.record(at, source, u, req.user_agent);
            SIP_ATTEMPTS.recorded();
        }
        Some(_) => SIP_ATTEMPTS.not_account(),
    }
}

/// Starts the reader when the config captures SIP attempts: binds the NFLOG group now (so a
/// taken group fails the start), reads on a thread of its own, and keeps `endpoints` fresh
/// from the engine until `shutdown`. The returned task ends after both stop.
pub fn spawn(
    config: &Config,
    seen: SeenAttempts,
    endpoints: Endpoints,
    engine: EngineHandle,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>, String> {
    let Some(capture) = config.sip_capture() else {
        return Ok(None);
    };
    let mut nflog = knockd::nflog::Nflog::bind_with(
        capture.group,
        defaults::SIP_CAPTURE_LEN,
        "sip-attempts.nflog-group",
    )
    .map_err(|e| format!("SIP attempt reader: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, seen, endpoints) = (stop.clone(), seen.clone(), endpoints.clone());
        std::thread::Builder::new()
            .name("sip-attempts".into())
            .spawn(move || {
                SIP_ATTEMPTS.set_active(true);
                let mut n = 0u64;
                let gauges = |seen: &SeenAttempts| {
                    let (users, sources) = seen.sizes();
                    SIP_ATTEMPTS.set_memory(users as u64, sources as u64);
                };
                let r = nflog.run_udp(
                    &stop,
                    |pkt, at| {
                        SIP_ATTEMPTS.seen();
                        match pkt {
                            Some((source, payload)) => take(&seen, &endpoints, at, source, payload),
                            None => SIP_ATTEMPTS.malformed(1),
                        }
                        n += 1;
                        if n.is_multiple_of(GAUGES_EVERY) {
                            gauges(&seen);
                        }
                    },
                    |now, overruns| {
                        seen.expire(now);
                        gauges(&seen);
                        SIP_ATTEMPTS.set_overruns(overruns);
                    },
                );
                if let Err(e) = r {
                    warn!("SIP attempt reader stopped: {e}");
                }
                SIP_ATTEMPTS.set_active(false);
            })
            .map_err(|e| format!("SIP attempt reader: {e}"))?
    };
    info!(
        "SIP attempts: dropped requests on {} read from NFLOG group {}",
        capture
            .ports
            .iter()
            .map(|p| format!("{}", p))
            .collect::<Vec<_>>()
            .join(","),
        capture.group
    );
    Ok(Some(tokio::spawn(async move {
        let actor = Actor::new("sip-attempts", Source::Admin);
        let mut tick = tokio::time::interval(ENDPOINTS_REFRESH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => refresh(&engine, &actor, &endpoints, &seen).await,
            }
        }
        // The engine handle goes with this task; the thread notices within a wake interval.
        drop(engine);
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    })))
}

/// Reads the account endpoints again; forgets the attempts of those that are gone.
async fn refresh(engine: &EngineHandle, actor: &Actor, endpoints: &Endpoints, seen: &SeenAttempts) {
    match engine.accounts(actor).await {
        Ok(accounts) => {
            let now: HashSet<String> = accounts.into_iter().filter_map(|a| a.endpoint).collect();
            for gone in endpoints.replace(now) {
                seen.forget(&gone);
            }
        }
        // Keep the last set: a busy engine must not empty it.
        Err(e) => warn!("SIP attempts: cannot read the account endpoints: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(to: &str) -> Vec<u8> {
        format!(
            "REGISTER sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.10:5060\r\n\
             From: <sip:{to}@pbx.example>;tag=1\r\nTo: <sip:{to}@pbx.example>\r\n\
             Call-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:{to}@203.0.113.10>\r\n\
             User-Agent: Linphone 5\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn remembers_account_endpoints_only_and_counts_the_rest() {
        let seen = SeenAttempts::default();
        let endpoints = Endpoints::default();
        endpoints.replace(HashSet::from(["alice".to_string()]));
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let before = SIP_ATTEMPTS.counts_now();
        take(&seen, &endpoints, 1_000, ip, &register("alice"));
        take(&seen, &endpoints, 1_000, ip, &register("mallory"));
        take(&seen, &endpoints, 1_000, ip, b"\x16\x03\x01 not sip");
        take(&seen, &endpoints, 1_000, ip, &vec![b'A'; 5000]);
        take(
            &seen,
            &endpoints,
            1_000,
            ip,
            b"OPTIONS sip:x SIP/2.0\r\nFrom: <sip:alice@x>\r\nTo: <sip:x@x>\r\n\r\n",
        );
        let a = seen.lookup(1_000, "alice");
        assert_eq!(a.sole_source(), Some(ip));
        assert_eq!(a.sightings[0].user_agent(), Some("Linphone 5"));
        assert!(seen.lookup(1_000, "mallory").is_empty());
        let after = SIP_ATTEMPTS.counts_now();
        // Other tests may count too: at least ours.
        assert!(after.recorded > before.recorded);
        assert!(after.not_account > before.not_account);
        assert!(after.malformed >= before.malformed + 2);
        assert!(after.ignored > before.ignored);
        // An endpoint that goes away takes its attempts with it.
        assert_eq!(endpoints.replace(HashSet::new()), vec!["alice".to_string()]);
    }
}
