//! `[agi]` (the FastAGI listener and its limits) and `[disa]` (the passcode call and its prompts).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::defaults;
use crate::base::duration::Ttl;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AgiConfig {
    /// FastAGI listener; the dialplan's `AGI(agi://…)` must point here.
    pub listen: SocketAddr,
    /// Calls served at once; more are turned away (the caller hears the no-service prompt).
    pub max_sessions: usize,
    /// The longest one call may spend in the DISA flow.
    pub session_deadline: Ttl,
    /// How long a new connection has to send Asterisk's `agi_*` block before it is closed.
    pub start_timeout: Ttl,
    /// Connections still starting (environment not yet sent), at most, and from one address.
    pub max_starting: usize,
    pub max_starting_per_peer: usize,
}

impl Default for AgiConfig {
    fn default() -> Self {
        AgiConfig {
            listen: defaults::AGI_LISTEN.parse().unwrap(),
            max_sessions: defaults::AGI_MAX_SESSIONS,
            session_deadline: Ttl(defaults::AGI_SESSION_DEADLINE),
            start_timeout: Ttl(defaults::AGI_START_TIMEOUT),
            max_starting: defaults::AGI_MAX_STARTING,
            max_starting_per_peer: defaults::AGI_MAX_STARTING_PER_PEER,
        }
    }
}

/// The DISA passcode call.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DisaConfig {
    /// Serve the FastAGI listener for the DISA call.
    pub enabled: bool,
    /// The server key passcodes are tagged with (created 0600 if missing; refused otherwise).
    pub key_file: PathBuf,
    /// Length of new passcodes (at least 10).
    pub passcode_digits: usize,
    /// Passcode tries in one call.
    pub tries_per_call: u32,
    /// Silence that ends digit entry.
    pub digit_timeout: Ttl,
    /// Failures from one calling number or one source address within `lockout-window` that lock
    /// it out for `lockout`.
    pub lockout_failures: u32,
    pub lockout_window: Ttl,
    pub lockout: Ttl,
    /// Failures from everyone within an hour that suspend passcode entry for `suspend`.
    pub global_failures_per_hour: u32,
    pub suspend: Ttl,
    /// A SIP source address that gets locked out is also banned for this long.
    pub ban_ttl: Ttl,
    /// Whether private-range addresses (10/8, 172.16/12, 192.168/16, fc00::/7) may be granted.
    pub allow_private: bool,
    /// After a grant for an account with an endpoint, how long the call waits for AMI to see
    /// that endpoint register from the granted address, to tell the caller; `0s` turns it off.
    pub connected_wait: Ttl,
    /// Sound files, to replace the stock prompts.
    pub prompts: PromptsConfig,
}

impl Default for DisaConfig {
    fn default() -> Self {
        DisaConfig {
            enabled: false,
            key_file: defaults::DISA_KEY_PATH.into(),
            passcode_digits: defaults::PASSCODE_DIGITS,
            tries_per_call: 3,
            digit_timeout: Ttl(std::time::Duration::from_secs(8)),
            lockout_failures: 5,
            lockout_window: Ttl(std::time::Duration::from_secs(15 * 60)),
            lockout: Ttl(std::time::Duration::from_secs(3600)),
            global_failures_per_hour: 30,
            suspend: Ttl(std::time::Duration::from_secs(30 * 60)),
            ban_ttl: Ttl(std::time::Duration::from_secs(3600)),
            allow_private: false,
            connected_wait: Ttl(std::time::Duration::from_secs(8)),
            prompts: PromptsConfig::default(),
        }
    }
}

/// Each prompt is a list of sound files: all but the last are played, the last asks for digits.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PromptsConfig {
    pub passcode: Option<Vec<String>>,
    pub retry: Option<Vec<String>>,
    pub enter_address: Option<Vec<String>>,
    pub you_entered: Option<Vec<String>>,
    pub dot: Option<String>,
    pub confirm: Option<Vec<String>>,
    pub attempt_found: Option<Vec<String>>,
    pub attempt_unclear: Option<Vec<String>>,
    pub connected: Option<Vec<String>>,
    pub not_connected: Option<Vec<String>>,
    pub refused_address: Option<Vec<String>>,
    pub no_address: Option<Vec<String>>,
    pub granted: Option<Vec<String>>,
    pub hours: Option<String>,
    pub minutes: Option<String>,
    pub goodbye: Option<Vec<String>>,
}
