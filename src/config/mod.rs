//! The daemon's TOML config: services (named port groups), trusted networks, TTLs, paths.

mod ami;
mod attempts;
mod check;
mod daemon;
mod disa;
mod firewall;
mod grants;
mod knock;
mod sip_auth;
mod sip_door;
mod standing;
mod trusted;

pub use ami::{AmiConfig, AmiLogin};
pub use attempts::{SipAttemptsConfig, SipCapture};
pub use daemon::{DaemonConfig, MetricsConfig, StoreAt};
pub use disa::{AgiConfig, DisaConfig, PromptsConfig};
pub use firewall::{ElementPath, FirewallConfig, PortRange, Proto, Service, Shards};
pub use grants::{BansConfig, GrantsConfig};
pub use knock::{KnockConfig, KnockProfile};
pub use sip_auth::SipAuthGrantConfig;
pub use sip_door::{
    secret_name, Responsive, SecretDomain, SipResponsiveConfig, SipSecretDomainConfig, SECRET_NAME_MAX,
};
pub use standing::StandingConfig;
pub use trusted::TrustedList;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::defaults;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's message names the key and shows the line and column.
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A file the config names (a knock secret) is missing, unreadable or not private.
    #[error("config: {key}: {message}")]
    File { key: String, message: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub grants: GrantsConfig,
    #[serde(default)]
    pub bans: BansConfig,
    #[serde(default)]
    pub firewall: FirewallConfig,
    /// Named port groups; a grant names the services it opens.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub agi: AgiConfig,
    #[serde(default)]
    pub ami: AmiConfig,
    #[serde(default)]
    pub knock: KnockConfig,
    #[serde(default)]
    pub disa: DisaConfig,
    #[serde(default)]
    pub sip_attempts: SipAttemptsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub standing: StandingConfig,
    /// Opt-in doors to the SIP ports for unknown addresses (`sip_door.rs`).
    #[serde(default)]
    pub sip_secret_domain: SipSecretDomainConfig,
    #[serde(default)]
    pub sip_responsive: SipResponsiveConfig,
    /// A successful SIP login by a listed endpoint grants its address (off by default).
    #[serde(default)]
    pub sip_auth_grant: SipAuthGrantConfig,
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.firewall.load_trusted_files()?;
        Ok(config)
    }

    /// The example config compiled into the binary.
    pub fn embedded() -> Config {
        Config::parse(defaults::EXAMPLE_CONFIG, "(embedded example)")
            .expect("the embedded example config is valid")
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check(origin)?;
        config.check_overlaps(text, origin)?;
        Ok(config)
    }

    /// The services a grant opens when it names none: the configured default, or all.
    pub fn default_services(&self) -> Vec<String> {
        if self.grants.default_services.is_empty() {
            self.services.keys().cloned().collect()
        } else {
            self.grants.default_services.clone()
        }
    }
}

#[cfg(test)]
mod tests;
