//! The checks a parsed config must pass: each section's values and the cross-section rules.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Config, ConfigError, PortRange};
use crate::base::defaults;
use crate::base::duration::Ttl;

impl Config {
    /// Services do not overlap: the table accepts a port for a service's grants, so a port in two
    /// services would open for a grant of either. The error names both services, the ports they
    /// share, and the lines where each lists them.
    pub(super) fn check_overlaps(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let all: Vec<(&str, usize, &PortRange)> = self
            .services
            .iter()
            .flat_map(|(name, s)| {
                s.ports
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (name.as_str(), i, p))
            })
            .collect();
        for (n, (a, ai, ap)) in all.iter().enumerate() {
            for (b, bi, bp) in &all[n + 1..] {
                let Some(shared) = ap.overlap(bp).filter(|_| a != b) else {
                    continue;
                };
                let lines = port_lines(text);
                let line = |svc: &str, i: usize| lines.get(&(svc.to_string(), i)).copied();
                // Name the entry written last: it is the one most likely added by mistake.
                let (first, second) = match (line(a, *ai), line(b, *bi)) {
                    (Some(la), Some(lb)) if lb < la => ((*b, *bi, *bp), (*a, *ai, *ap)),
                    _ => ((*a, *ai, *ap), (*b, *bi, *bp)),
                };
                let at = |svc: &str, i: usize| match line(svc, i) {
                    Some(l) => format!(", line {l}"),
                    None => String::new(),
                };
                return Err(ConfigError::Invalid {
                    origin: origin.to_string(),
                    key: format!("services.{}.ports", second.0),
                    message: format!(
                        "{shared} is in service {} ({}{}) and in service {} ({}{}); services must not \
                         overlap, or a grant for one opens the other's ports",
                        second.0,
                        second.2,
                        at(second.0, second.1),
                        first.0,
                        first.2,
                        at(first.0, first.1),
                    ),
                });
            }
        }
        Ok(())
    }

    pub(super) fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        if self.services.is_empty() {
            return Err(invalid(
                "services".into(),
                "no services are defined; add e.g. [services.sip] with ports = [\"udp/5060\"]".into(),
            ));
        }
        for (name, svc) in &self.services {
            if !valid_service_name(name) {
                return Err(invalid(
                    format!("services.{name}"),
                    "a service name is lowercase letters, digits and `_`, starting with a letter, at most 32 characters".into(),
                ));
            }
            if svc.ports.is_empty() {
                return Err(invalid(format!("services.{name}.ports"), "lists no ports".into()));
            }
        }
        for (i, s) in self.grants.default_services.iter().enumerate() {
            if !self.services.contains_key(s) {
                return Err(invalid(
                    format!("grants.default-services[{i}]"),
                    format!("`{s}` is not a service defined under [services]"),
                ));
            }
        }
        for (section, default, max) in [
            ("grants", self.grants.ttl_default, self.grants.ttl_max),
            ("bans", self.bans.ttl_default, self.bans.ttl_max),
        ] {
            if max.0.is_zero() {
                return Err(invalid(
                    format!("{section}.ttl-max"),
                    "must be more than 0s".into(),
                ));
            }
            if default > max {
                return Err(invalid(
                    format!("{section}.ttl-default"),
                    format!("{default} is above {section}.ttl-max ({max})"),
                ));
            }
        }
        self.ami
            .check(&self.bans)
            .map_err(|(key, message)| invalid(key, message))?;
        if self.disa.passcode_digits < defaults::PASSCODE_DIGITS_MIN || self.disa.passcode_digits > 32 {
            return Err(invalid(
                "disa.passcode-digits".into(),
                format!("must be from {} to 32", defaults::PASSCODE_DIGITS_MIN),
            ));
        }
        for (key, n) in [
            ("disa.tries-per-call", self.disa.tries_per_call),
            ("disa.lockout-failures", self.disa.lockout_failures),
            (
                "disa.global-failures-per-hour",
                self.disa.global_failures_per_hour,
            ),
        ] {
            if n == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        for (key, p, max) in [
            ("standing.max-prefix-v4", self.standing.max_prefix_v4, 32),
            ("standing.max-prefix-v6", self.standing.max_prefix_v6, 128),
        ] {
            if p > max {
                return Err(invalid(key.into(), format!("must be from 0 to {max}")));
            }
        }
        if self.standing.resolve_every.0 < std::time::Duration::from_secs(1) {
            return Err(invalid(
                "standing.resolve-every".into(),
                "must be at least 1s".into(),
            ));
        }
        if !self.metrics.listen.ip().is_loopback() {
            return Err(invalid(
                "metrics.listen".into(),
                format!(
                    "{} is not a loopback address; the metrics endpoint is for this host only",
                    self.metrics.listen
                ),
            ));
        }
        // A few seconds: the caller waits in silence, and the call holds one of the AGI sessions.
        if self.disa.connected_wait.0 > std::time::Duration::from_secs(60) {
            return Err(invalid(
                "disa.connected-wait".into(),
                format!(
                    "{} is more than 60s; the caller waits in silence",
                    self.disa.connected_wait
                ),
            ));
        }
        if self.agi.max_sessions == 0 {
            return Err(invalid("agi.max-sessions".into(), "must be at least 1".into()));
        }
        self.check_agi_start(&invalid)?;
        for (key, list) in [
            ("passcode", &self.disa.prompts.passcode),
            ("retry", &self.disa.prompts.retry),
            ("enter-address", &self.disa.prompts.enter_address),
            ("confirm", &self.disa.prompts.confirm),
        ] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                return Err(invalid(
                    format!("disa.prompts.{key}"),
                    "names no sound file".into(),
                ));
            }
        }
        if self.daemon.reconcile_interval.0.as_secs() < 1 {
            return Err(invalid(
                "daemon.reconcile-interval".into(),
                "must be at least 1s".into(),
            ));
        }
        if self.daemon.history_retention.0 < defaults::HISTORY_RETENTION_MIN {
            return Err(invalid(
                "daemon.history-retention".into(),
                format!(
                    "must be at least {}: `passknock status` counts the last 24 hours from it",
                    Ttl(defaults::HISTORY_RETENTION_MIN)
                ),
            ));
        }
        self.daemon
            .check_store()
            .map_err(|(key, message)| invalid(key, message))?;
        self.check_knock(&invalid)?;
        self.sip_auth_grant
            .check(self)
            .map_err(|(key, message)| invalid(key, message))?;
        self.check_sip_attempts(&invalid)?;
        self.check_sip_door(&invalid)
    }

    /// Asterisk opens one connection per call from one address, all at once when calls arrive
    /// together: the starting caps must leave room for every session.
    fn check_agi_start(&self, invalid: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
        let agi = &self.agi;
        let t = agi.start_timeout.0;
        if t < std::time::Duration::from_secs(1) || t > agi.session_deadline.0 {
            return Err(invalid(
                "agi.start-timeout".into(),
                format!(
                    "must be from 1s to agi.session-deadline ({})",
                    agi.session_deadline
                ),
            ));
        }
        if agi.max_starting_per_peer < agi.max_sessions {
            return Err(invalid(
                "agi.max-starting-per-peer".into(),
                format!(
                    "must be at least agi.max-sessions ({}): Asterisk opens every call's connection from one address",
                    agi.max_sessions
                ),
            ));
        }
        if agi.max_starting < agi.max_starting_per_peer {
            return Err(invalid(
                "agi.max-starting".into(),
                format!(
                    "must be at least agi.max-starting-per-peer ({})",
                    agi.max_starting_per_peer
                ),
            ));
        }
        Ok(())
    }

    fn check_knock(&self, invalid: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
        let knock = &self.knock;
        if !(16..=1_000_000).contains(&knock.max_in_progress) {
            return Err(invalid(
                "knock.max-in-progress".into(),
                "must be from 16 to 1000000".into(),
            ));
        }
        if knock.profiles.len() > knockd::gate::PROFILES_MAX {
            return Err(invalid(
                "knock.profiles".into(),
                format!("at most {} profiles", knockd::gate::PROFILES_MAX),
            ));
        }
        // Shape only: secret files are read when the daemon starts (`knock_profiles`).
        let placeholder = knockd::KnockSecret::from_bytes(&[0u8; 32]);
        for (name, p) in &knock.profiles {
            let key = |k: &str| format!("knock.profiles.{name}.{k}");
            if !valid_service_name(name) {
                return Err(invalid(
                    format!("knock.profiles.{name}"),
                    "a profile name is lowercase letters, digits and `_`, starting with a letter, at most 32 characters".into(),
                ));
            }
            p.spec(p.secret_file.as_ref().map(|_| placeholder.clone()))
                .build()
                .map_err(|e| invalid(key(e.key), e.message))?;
            for (i, s) in p.services.iter().enumerate() {
                if !self.services.contains_key(s) {
                    return Err(invalid(
                        key(&format!("services[{i}]")),
                        format!("`{s}` is not a service defined under [services]"),
                    ));
                }
            }
            if let Some(ttl) = p.ttl {
                if ttl.0.is_zero() || ttl > self.grants.ttl_max {
                    return Err(invalid(
                        key("ttl"),
                        format!(
                            "must be more than 0s and at most grants.ttl-max ({})",
                            self.grants.ttl_max
                        ),
                    ));
                }
            }
            let ports_key = match p.mode {
                knockd::Mode::Static => "ports",
                knockd::Mode::Rotating => "range",
                knockd::Mode::Spa => "port",
            };
            for kp in p.knock_ports() {
                for (svc, s) in &self.services {
                    if let Some(hit) = s.ports.iter().find(|sp| sp.overlaps(&kp)) {
                        return Err(invalid(
                            key(ports_key),
                            format!(
                                "{kp} overlaps {hit} of service {svc}; knock ports must not be a protected service's ports"
                            ),
                        ));
                    }
                }
            }
            // An SPA port belongs to its profile alone: its datagrams are never sequence knocks.
            if p.mode == knockd::Mode::Spa {
                let spa = &p.knock_ports()[0];
                for (other, q) in knock.profiles.iter().filter(|(o, _)| *o != name) {
                    if q.knock_ports().iter().any(|r| r.overlaps(spa)) {
                        return Err(invalid(
                            key("port"),
                            format!("{spa} is also a knock port of profile {other}; an SPA port is its profile's alone"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where each service's port entries are written: (service, index) → line, from 1. Read again
/// only when an error needs it, so the parsed config keeps plain values.
fn port_lines(text: &str) -> BTreeMap<(String, usize), usize> {
    #[derive(Deserialize)]
    struct Services {
        #[serde(default)]
        services: BTreeMap<String, Ports>,
    }
    #[derive(Deserialize)]
    struct Ports {
        #[serde(default)]
        ports: Vec<toml::Spanned<String>>,
    }
    let Ok(parsed) = toml::from_str::<Services>(text) else {
        return BTreeMap::new();
    };
    let line_of = |offset: usize| text.get(..offset).unwrap_or(text).matches('\n').count() + 1;
    parsed
        .services
        .into_iter()
        .flat_map(|(name, s)| {
            s.ports
                .into_iter()
                .enumerate()
                .map(move |(i, p)| ((name.clone(), i), line_of(p.span().start)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
