//! `[knock]`: the NFLOG group, knock profiles, and what a knock on each opens.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, PortRange};
use crate::base::defaults;
use crate::base::duration::Ttl;

/// Knock access: the NFLOG group the table logs knock ports to, the bound on knocks in progress,
/// and the profiles.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KnockConfig {
    pub nflog_group: u16,
    /// Sources with a knock sequence in progress, at most: a flood cannot take more memory.
    pub max_in_progress: usize,
    pub profiles: BTreeMap<String, KnockProfile>,
}

impl Default for KnockConfig {
    fn default() -> Self {
        KnockConfig {
            nflog_group: defaults::KNOCK_NFLOG_GROUP,
            max_in_progress: defaults::KNOCK_MAX_IN_PROGRESS,
            profiles: BTreeMap::new(),
        }
    }
}

/// `[knock.profiles.NAME]`: how a road warrior knocks, and what that opens for how long.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KnockProfile {
    pub mode: knockd::Mode,
    /// What a knock opens (default: grants.default-services).
    #[serde(default)]
    pub services: Vec<String>,
    /// For how long (default: grants.ttl-default).
    pub ttl: Option<Ttl>,
    /// static: the sequence, e.g. ["tcp/7000", "udp/8000", "tcp/9000"].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<knockd::Port>,
    /// static, rotating: time from the first knock to the last.
    pub timeout: Option<Ttl>,
    /// rotating, spa: the shared secret, 64 hex digits; refused unless mode 0600.
    pub secret_file: Option<PathBuf>,
    /// rotating: where the ports are drawn from, e.g. "udp/40000-40999".
    pub range: Option<knockd::PortRange>,
    /// rotating: ports in a sequence.
    pub length: Option<usize>,
    /// rotating: how long one sequence is current.
    pub step: Option<Ttl>,
    /// spa: the UDP port.
    pub port: Option<u16>,
    /// spa: how far a timestamp may be from this server's clock.
    pub max_age: Option<Ttl>,
    /// spa: whether a packet may ask to open another address than its own.
    pub allow_address: Option<bool>,
    /// spa: whether a packet may carry the sender's address of the other family, opened with
    /// its source (default false: such a packet is refused and opens nothing).
    pub dual_stack: Option<bool>,
    /// spa: whether an address a packet carries besides its source may be a private one
    /// (10/8, 172.16/12, 192.168/16, fc00::/7; default false).
    pub allow_private: Option<bool>,
    /// spa: the phone (PJSIP endpoint) this profile's softphone registers as; a client that
    /// asks to wait is answered once AMI sees it register from the opened address.
    pub endpoint: Option<String>,
    /// Whether a knock from a new address ends the profile's grants at other addresses (default
    /// true: the road warrior moved); false keeps them side by side.
    pub replace: Option<bool>,
}

impl KnockProfile {
    pub(super) fn spec(&self, secret: Option<knockd::KnockSecret>) -> knockd::profile::Spec {
        knockd::profile::Spec {
            mode: Some(self.mode),
            ports: self.ports.clone(),
            range: self.range,
            length: self.length,
            step: self.step.map(|t| t.0),
            port: self.port,
            timeout: self.timeout.map(|t| t.0),
            max_age: self.max_age.map(|t| t.0),
            allow_address: self.allow_address,
            dual_stack: self.dual_stack,
            has_secret: self.secret_file.is_some(),
            secret,
            secret_key: "secret-file",
        }
    }

    /// The ports this profile knocks on, as the table logs them.
    pub fn knock_ports(&self) -> Vec<PortRange> {
        let conv = |proto: knockd::Proto, first, last| PortRange { proto, first, last };
        match self.mode {
            knockd::Mode::Static => self.ports.iter().map(|p| conv(p.proto, p.port, p.port)).collect(),
            knockd::Mode::Rotating => self
                .range
                .iter()
                .map(|r| conv(r.proto, r.first, r.last))
                .collect(),
            knockd::Mode::Spa => {
                let p = self.port.unwrap_or(knockd::profile::SPA_PORT);
                vec![conv(knockd::Proto::Udp, p, p)]
            }
        }
    }
}

impl KnockConfig {
    /// Every port the table logs for knocking.
    pub fn ports(&self) -> Vec<PortRange> {
        let mut v: Vec<PortRange> = self.profiles.values().flat_map(|p| p.knock_ports()).collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Config {
    /// The knock profiles with their secrets read (files refused unless 0600).
    pub fn knock_profiles(&self) -> Result<Vec<knockd::Profile>, ConfigError> {
        let mut out = Vec::new();
        for (name, p) in &self.knock.profiles {
            let key = |k: &str| format!("knock.profiles.{name}.{k}");
            let secret = match &p.secret_file {
                Some(f) => Some(knockd::KnockSecret::load(f).map_err(|e| ConfigError::File {
                    key: key("secret-file"),
                    message: e.to_string(),
                })?),
                None => None,
            };
            let kind = p.spec(secret).build().map_err(|e| ConfigError::File {
                key: key(e.key),
                message: e.message,
            })?;
            for (present, k) in [
                (p.allow_private.is_some(), "allow-private"),
                (p.endpoint.is_some(), "endpoint"),
            ] {
                if present && p.mode != knockd::Mode::Spa {
                    return Err(ConfigError::File {
                        key: key(k),
                        message: format!("is for spa profiles, and this one is {}", p.mode.name()),
                    });
                }
            }
            out.push(knockd::Profile {
                name: name.clone(),
                kind,
            });
        }
        Ok(out)
    }

    /// What a knock on profile `name` opens: its services (or the default ones) and its TTL.
    pub fn knock_grant(&self, name: &str) -> Option<(Vec<String>, Option<Ttl>)> {
        let p = self.knock.profiles.get(name)?;
        let services = if p.services.is_empty() {
            self.default_services()
        } else {
            p.services.clone()
        };
        Some((services, p.ttl))
    }

    /// Whether a knock on profile `name` from a new address replaces its grants elsewhere.
    pub fn knock_replaces(&self, name: &str) -> bool {
        self.knock
            .profiles
            .get(name)
            .and_then(|p| p.replace)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::base::defaults;

    #[test]
    fn the_client_reckons_with_the_daemons_default_ttl() {
        assert_eq!(knockd::profile::CLIENT_TTL, defaults::GRANT_TTL);
    }
}
