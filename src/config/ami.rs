//! `[ami]`: the manager connection, its secret file, and the ban policy for security events.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{BansConfig, ConfigError};
use crate::base::defaults;
use crate::base::duration::{Delay, Ttl};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AmiConfig {
    pub enabled: bool,
    pub address: String,
    pub username: String,
    /// File holding the manager secret; refused unless mode 0600 (or stricter).
    pub secret_file: Option<PathBuf>,
    /// `md5` (challenge; the secret never crosses the wire) or `plain`.
    pub login: AmiLogin,
    pub reconnect_first: Delay,
    pub reconnect_max: Delay,
    pub keepalive: Delay,
    pub timeout: Delay,
    /// Failed security events from one address within `ban-window` that get it banned.
    pub ban_threshold: u32,
    pub ban_window: Ttl,
    /// The first ban; each repeat offence multiplies it by `ban-growth`, up to `ban-ttl-max`.
    pub ban_ttl: Ttl,
    pub ban_growth: u32,
    pub ban_ttl_max: Ttl,
    /// A ban is a repeat offence when it comes within this long of the address's previous one.
    pub ban_forget: Ttl,
    /// The longest a live call keeps a grant open past its TTL; `0s` never holds.
    pub hold_max: Ttl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AmiLogin {
    Md5,
    Plain,
}

impl Default for AmiConfig {
    fn default() -> Self {
        AmiConfig {
            enabled: false,
            address: defaults::AMI_ADDRESS.into(),
            username: defaults::AMI_USERNAME.into(),
            secret_file: None,
            login: AmiLogin::Md5,
            reconnect_first: Delay(defaults::AMI_RECONNECT_FIRST),
            reconnect_max: Delay(defaults::AMI_RECONNECT_MAX),
            keepalive: Delay(defaults::AMI_KEEPALIVE),
            timeout: Delay(defaults::AMI_TIMEOUT),
            ban_threshold: defaults::BAN_THRESHOLD,
            ban_window: Ttl(defaults::BAN_WINDOW),
            ban_ttl: Ttl(defaults::BAN_FIRST),
            ban_growth: defaults::BAN_GROWTH,
            ban_ttl_max: Ttl(defaults::BAN_TTL_MAX_AMI),
            ban_forget: Ttl(defaults::BAN_FORGET),
            hold_max: Ttl(defaults::HOLD_MAX),
        }
    }
}

impl AmiConfig {
    /// Reads the manager secret from `secret-file`, refusing a file others could read.
    pub fn read_secret(&self, origin: &str) -> Result<ami_listener::AmiSecret, ConfigError> {
        use knockd::secret::{private_mode, NotPrivate};
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: "ami.secret-file".into(),
            message,
        };
        let path = self
            .secret_file
            .as_ref()
            .ok_or_else(|| invalid("is required when ami.enabled = true".into()))?;
        match private_mode(path) {
            Ok(()) => {}
            Err(NotPrivate::Unreadable(e)) => return Err(invalid(format!("{}: {e}", path.display()))),
            Err(NotPrivate::Mode(mode)) => {
                return Err(invalid(format!(
                    "{} is mode {mode:04o}, readable by others; it holds the manager secret: chmod 600 it",
                    path.display()
                )))
            }
        }
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?,
        );
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err(invalid(format!("{} is empty", path.display())));
        }
        Ok(ami_listener::AmiSecret::new(secret))
    }

    pub(super) fn check(&self, bans: &BansConfig) -> Result<(), (String, String)> {
        let bad = |key: &str, m: String| Err((format!("ami.{key}"), m));
        if self.enabled && self.secret_file.is_none() {
            return bad("secret-file", "is required when ami.enabled = true".into());
        }
        if self.address.trim().is_empty() || !self.address.contains(':') {
            return bad("address", format!("`{}` is not HOST:PORT", self.address));
        }
        if self.reconnect_first.0.is_zero() {
            return bad("reconnect-first", "must be more than 0ms".into());
        }
        if self.reconnect_max < self.reconnect_first {
            return bad(
                "reconnect-max",
                format!(
                    "{} is below ami.reconnect-first ({})",
                    self.reconnect_max, self.reconnect_first
                ),
            );
        }
        if self.keepalive.0 < std::time::Duration::from_millis(100) {
            return bad("keepalive", "must be at least 100ms".into());
        }
        if self.timeout.0 < std::time::Duration::from_millis(100) {
            return bad("timeout", "must be at least 100ms".into());
        }
        if self.ban_threshold == 0 {
            return bad("ban-threshold", "must be at least 1".into());
        }
        if self.ban_window.0.is_zero() {
            return bad("ban-window", "must be more than 0s".into());
        }
        if self.ban_growth == 0 {
            return bad(
                "ban-growth",
                "must be at least 1 (1 keeps every ban the same)".into(),
            );
        }
        if self.ban_ttl.0.is_zero() {
            return bad("ban-ttl", "must be more than 0s".into());
        }
        if self.ban_ttl > self.ban_ttl_max {
            return bad(
                "ban-ttl",
                format!("{} is above ami.ban-ttl-max ({})", self.ban_ttl, self.ban_ttl_max),
            );
        }
        if self.ban_ttl_max > bans.ttl_max {
            return bad(
                "ban-ttl-max",
                format!("{} is above bans.ttl-max ({})", self.ban_ttl_max, bans.ttl_max),
            );
        }
        Ok(())
    }
}
