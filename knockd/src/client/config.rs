//! The client config file: its profiles read, their secrets checked, each built into what to send.
//!
//! # Format
//!
//! ```toml
//! [profiles.office]
//! mode = "spa"                 # static | rotating | spa
//! secret = "64 hex digits"     # or secret-file = "PATH"; either way the file must be 0600
//! port = 62201                 # spa
//! # ports = ["tcp/7000", "udp/8000", "tcp/9000"]       static
//! # range = "udp/40000-40999", length = 4, step = "30s" rotating
//! probe = "tcp/5061"           # a port of a granted service: tried after knocking
//! wait = "5s"                  # how long to keep trying it
//! delay = "20ms"               # pause between the knocks of a sequence
//! ttl = "2h"                   # --keep: how long the daemon's grant lasts (its profile's ttl);
//!                              #   the client knocks again after 2/3 of it
//! renew = "40m"                # --keep: or say when to knock again outright
//! dual-stack = true            # spa: carry this laptop's address of the other family too
//! other-host = "2001:db8::1"   # the PBX's other-family address, to find ours (default: HOST's)
//! answer-wait = "15s"          # --wait-phone: how long to wait for the daemon's answer
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ClientError;
use crate::duration::Dur;
use crate::profile::{self, KeyError, ProfileKind, Spec};
use crate::secret::{check_private, KnockSecret};
use crate::{Mode, Port, PortRange};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProfileFile {
    mode: Option<Mode>,
    #[serde(default)]
    ports: Vec<Port>,
    range: Option<PortRange>,
    length: Option<usize>,
    step: Option<Dur>,
    port: Option<u16>,
    timeout: Option<Dur>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    probe: Option<Port>,
    wait: Option<Dur>,
    delay: Option<Dur>,
    ttl: Option<Dur>,
    renew: Option<Dur>,
    dual_stack: Option<bool>,
    other_host: Option<String>,
    answer_wait: Option<Dur>,
}

/// One profile from the client config, checked.
#[derive(Clone, Debug)]
pub struct ClientProfile {
    pub name: String,
    pub kind: ProfileKind,
    /// A port of a granted service to try after knocking.
    pub probe: Option<Port>,
    pub wait: Duration,
    pub delay: Duration,
    /// How long a grant lasts, as the daemon's profile says (for `--keep`).
    pub ttl: Duration,
    /// When `--keep` knocks again; `None`: after 2/3 of `ttl`.
    pub renew: Option<Duration>,
    /// spa: carry the laptop's address of the other family.
    pub dual_stack: bool,
    /// The PBX's address of the other family, to find the laptop's towards it.
    pub other_host: Option<String>,
    /// How long `--wait-phone` waits for the daemon's answer.
    pub answer_wait: Duration,
}

/// The client config: profiles by name.
#[derive(Debug)]
pub struct ClientConfig {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, ClientProfile>,
}

/// Where the client config is when none is named: `$XDG_CONFIG_HOME/passknock/client.toml`,
/// `~/.config/passknock/client.toml`, or `%APPDATA%\passknock\client.toml`.
pub fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("APPDATA").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("passknock").join("client.toml")
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClientConfig::parse(&text, path)
    }

    /// Parses config text that was read from `path` (whose mode is checked if it holds secrets).
    pub fn parse(text: &str, path: &Path) -> Result<ClientConfig, ClientError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ClientError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| ClientError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if file.profiles.values().any(|p| p.secret.is_some()) {
            check_private(path).map_err(|e| invalid("profiles".into(), format!("holds secrets, and {e}")))?;
        }
        let mut profiles = BTreeMap::new();
        for (name, p) in file.profiles {
            let k = |key: &str| format!("profiles.{name}.{key}");
            if p.secret.is_some() && p.secret_file.is_some() {
                return Err(invalid(
                    k("secret"),
                    "give secret or secret-file, not both".into(),
                ));
            }
            let (secret_key, secret) = match (&p.secret, &p.secret_file) {
                (Some(s), _) => (
                    "secret",
                    Some(KnockSecret::from_hex(s).map_err(|e| invalid(k("secret"), e.to_string()))?),
                ),
                (None, Some(f)) => (
                    "secret-file",
                    Some(KnockSecret::load(f).map_err(|e| invalid(k("secret-file"), e.to_string()))?),
                ),
                (None, None) => ("secret", None),
            };
            let spec = Spec {
                mode: p.mode,
                ports: p.ports,
                range: p.range,
                length: p.length,
                step: p.step.map(|d| d.0),
                port: p.port,
                timeout: p.timeout.map(|d| d.0),
                max_age: None,
                allow_address: None,
                dual_stack: None,
                has_secret: secret.is_some(),
                secret,
                secret_key,
            };
            let kind = spec
                .build()
                .map_err(|KeyError { key, message }| invalid(k(key), message))?;
            let is_spa = kind.mode() == Mode::Spa;
            for (present, key) in [
                (p.dual_stack.is_some(), "dual-stack"),
                (p.other_host.is_some(), "other-host"),
                (p.answer_wait.is_some(), "answer-wait"),
            ] {
                if present && !is_spa {
                    return Err(invalid(
                        k(key),
                        format!("is for spa profiles, and this one is {}", kind.mode().name()),
                    ));
                }
            }
            let ttl = p.ttl.map(|d| d.0).unwrap_or(profile::CLIENT_TTL);
            if ttl < Duration::from_secs(1) {
                return Err(invalid(k("ttl"), "must be at least 1s".into()));
            }
            let renew = p.renew.map(|d| d.0);
            if let Some(r) = renew {
                if r < Duration::from_secs(1) || r >= ttl {
                    return Err(invalid(
                        k("renew"),
                        format!("must be from 1s to less than the ttl ({}s)", ttl.as_secs()),
                    ));
                }
            }
            profiles.insert(
                name.clone(),
                ClientProfile {
                    name,
                    kind,
                    probe: p.probe,
                    wait: p.wait.map(|d| d.0).unwrap_or(profile::CLIENT_WAIT),
                    delay: p.delay.map(|d| d.0).unwrap_or(profile::CLIENT_DELAY),
                    ttl,
                    renew,
                    dual_stack: p.dual_stack.unwrap_or(false),
                    other_host: p.other_host,
                    answer_wait: p.answer_wait.map(|d| d.0).unwrap_or(profile::CLIENT_ANSWER_WAIT),
                },
            );
        }
        Ok(ClientConfig {
            path: path.to_path_buf(),
            profiles,
        })
    }

    pub fn profile(&self, name: &str) -> Result<&ClientProfile, ClientError> {
        self.profiles.get(name).ok_or_else(|| ClientError::NoProfile {
            name: name.to_string(),
            path: self.path.clone(),
            known: if self.profiles.is_empty() {
                "no profiles".into()
            } else {
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }
}
