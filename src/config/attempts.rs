//! `[sip-attempts]`: the table logs the SIP requests it drops on the SIP service's UDP ports to an
//! NFLOG group (rate-limited per source and overall) so the daemon learns which address a road
//! warrior's softphone is trying to register from.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, PortRange, Proto};
use crate::base::defaults;
use crate::base::duration::Ttl;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SipAttemptsConfig {
    /// Capture dropped SIP requests; unset follows `disa.enabled` (the DISA call is what reads
    /// them).
    pub enabled: Option<bool>,
    /// The service whose UDP ports are SIP.
    pub service: String,
    /// The NFLOG group the table logs them to; must differ from `knock.nflog-group`.
    pub nflog_group: u16,
    /// How long an attempt is remembered.
    pub window: Ttl,
    /// Packets per second logged from one source, and its burst.
    pub per_source_rate: u32,
    pub per_source_burst: u32,
    /// Packets per second logged from everyone together, and its burst.
    pub rate: u32,
    pub burst: u32,
}

impl Default for SipAttemptsConfig {
    fn default() -> Self {
        SipAttemptsConfig {
            enabled: None,
            service: "sip".into(),
            nflog_group: defaults::SIP_NFLOG_GROUP,
            window: Ttl(std::time::Duration::from_millis(
                knockd::attempts::WINDOW_MS as u64,
            )),
            per_source_rate: defaults::SIP_LOG_PER_SOURCE_RATE,
            per_source_burst: defaults::SIP_LOG_PER_SOURCE_BURST,
            rate: defaults::SIP_LOG_RATE,
            burst: defaults::SIP_LOG_BURST,
        }
    }
}

/// What the table and the daemon need of an active capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipCapture {
    /// The SIP service's UDP ports.
    pub ports: Vec<PortRange>,
    pub group: u16,
    pub per_source_rate: u32,
    pub per_source_burst: u32,
    pub rate: u32,
    pub burst: u32,
}

impl Config {
    /// The capture when it is on and the SIP service has UDP ports; `None` otherwise.
    pub fn sip_capture(&self) -> Option<SipCapture> {
        let a = &self.sip_attempts;
        if !a.enabled.unwrap_or(self.disa.enabled) {
            return None;
        }
        let ports: Vec<PortRange> = self
            .services
            .get(&a.service)?
            .ports
            .iter()
            .filter(|p| p.proto == Proto::Udp)
            .copied()
            .collect();
        if ports.is_empty() {
            return None;
        }
        Some(SipCapture {
            ports,
            group: a.nflog_group,
            per_source_rate: a.per_source_rate,
            per_source_burst: a.per_source_burst,
            rate: a.rate,
            burst: a.burst,
        })
    }

    pub(super) fn check_sip_attempts(
        &self,
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let a = &self.sip_attempts;
        let key = |k: &str| format!("sip-attempts.{k}");
        let window = a.window.0.as_secs();
        if !(10..=3600).contains(&window) {
            return Err(invalid(key("window"), "must be from 10s to 1h".into()));
        }
        for (k, v, max) in [
            ("per-source-rate", a.per_source_rate, 1_000),
            ("per-source-burst", a.per_source_burst, 10_000),
            ("rate", a.rate, 100_000),
            ("burst", a.burst, 100_000),
        ] {
            if !(1..=max).contains(&v) {
                return Err(invalid(key(k), format!("must be from 1 to {max}")));
            }
        }
        // Only an explicit `enabled = true` insists on the service; the default follows DISA
        // and stays quietly off for a config without a SIP service.
        if a.enabled == Some(true) {
            let Some(svc) = self.services.get(&a.service) else {
                return Err(invalid(
                    key("service"),
                    format!("`{}` is not a service defined under [services]", a.service),
                ));
            };
            if !svc.ports.iter().any(|p| p.proto == Proto::Udp) {
                return Err(invalid(
                    key("service"),
                    format!(
                        "service `{}` has no UDP port; only SIP over UDP can be captured",
                        a.service
                    ),
                ));
            }
        }
        if self.sip_capture().is_some() && a.nflog_group == self.knock.nflog_group {
            return Err(invalid(
                key("nflog-group"),
                format!(
                    "{} is also knock.nflog-group; one group cannot feed both the knock gate and \
                     the SIP attempt reader, pick another",
                    a.nflog_group
                ),
            ));
        }
        Ok(())
    }
}
