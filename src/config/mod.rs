//! The daemon's TOML config: services (named port groups), trusted networks, TTLs, paths.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::base::addr::Net;
use crate::base::defaults;
use crate::base::duration::{Delay, Ttl};

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
    pub metrics: MetricsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    pub store: PathBuf,
    pub control_socket: PathBuf,
    pub reconcile_interval: Ttl,
    /// Audit lines (grants, revokes, bans, lockouts, refusals) also go to this file, 0600.
    pub audit_log: Option<PathBuf>,
    /// How long audit events stay in the store's history.
    pub history_retention: Ttl,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            store: defaults::STORE_PATH.into(),
            control_socket: defaults::CONTROL_SOCKET.into(),
            reconcile_interval: Ttl(defaults::RECONCILE_INTERVAL),
            audit_log: None,
            history_retention: Ttl(defaults::HISTORY_RETENTION),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GrantsConfig {
    pub ttl_default: Ttl,
    pub ttl_max: Ttl,
    /// Services a grant opens when it names none.
    pub default_services: Vec<String>,
}

impl Default for GrantsConfig {
    fn default() -> Self {
        GrantsConfig {
            ttl_default: Ttl(defaults::GRANT_TTL),
            ttl_max: Ttl(defaults::GRANT_TTL_MAX),
            default_services: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BansConfig {
    pub ttl_default: Ttl,
    pub ttl_max: Ttl,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            ttl_default: Ttl(defaults::BAN_TTL),
            ttl_max: Ttl(defaults::BAN_TTL_MAX),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FirewallConfig {
    /// Always allowed, never banned.
    pub trusted: Vec<Net>,
    /// The `nft` program.
    pub nft: PathBuf,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            trusted: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            nft: "nft".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// `udp/5060`, `tcp/5061`, `udp/10000-20000`.
    pub ports: Vec<PortRange>,
}

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

/// The Prometheus endpoint: off unless asked for, and only on loopback.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: defaults::METRICS_LISTEN.parse().unwrap(),
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
    pub refused_address: Option<Vec<String>>,
    pub no_address: Option<Vec<String>>,
    pub granted: Option<Vec<String>>,
    pub hours: Option<String>,
    pub minutes: Option<String>,
    pub goodbye: Option<Vec<String>>,
}

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
    pub fn read_secret(&self, origin: &str) -> Result<ami_listener::Secret, ConfigError> {
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
        Ok(ami_listener::Secret::new(secret))
    }

    fn check(&self, bans: &BansConfig) -> Result<(), (String, String)> {
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
}

impl KnockProfile {
    fn spec(&self, secret: Option<knockd::Secret>) -> knockd::profile::Spec {
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

/// tcp or udp: the same type the knock crate uses, so knock ports and service ports compare.
pub use knockd::Proto;

/// A protocol and an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("`{s}` {why}; write e.g. udp/5060, tcp/5061 or udp/10000-20000");
        let (proto, ports) = s.split_once('/').ok_or_else(|| bad("has no protocol"))?;
        let proto = match proto.trim() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad("is neither tcp nor udp")),
        };
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("is not a port from 1 to 65535"))
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if first > last {
            return Err(bad("runs backwards"));
        }
        Ok(PortRange { proto, first, last })
    }
}

impl PortRange {
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.proto == other.proto && self.first <= other.last && other.first <= self.last
    }

    /// The ports both ranges hold, if any.
    pub fn overlap(&self, other: &PortRange) -> Option<PortRange> {
        self.overlaps(other).then(|| PortRange {
            proto: self.proto,
            first: self.first.max(other.first),
            last: self.last.min(other.last),
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.proto.name(), self.first)
        } else {
            write!(f, "{}/{}-{}", self.proto.name(), self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
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

    /// Services do not overlap: the table accepts a port for a service's grants, so a port in two
    /// services would open for a grant of either. The error names both services, the ports they
    /// share, and the lines where each lists them.
    fn check_overlaps(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
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

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
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
        if !self.metrics.listen.ip().is_loopback() {
            return Err(invalid(
                "metrics.listen".into(),
                format!(
                    "{} is not a loopback address; the metrics endpoint is for this host only",
                    self.metrics.listen
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
        self.check_knock(&invalid)
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
        let placeholder = knockd::Secret::from_bytes(&[0u8; 32]);
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

    /// The knock profiles with their secrets read (files refused unless 0600).
    pub fn knock_profiles(&self) -> Result<Vec<knockd::Profile>, ConfigError> {
        let mut out = Vec::new();
        for (name, p) in &self.knock.profiles {
            let key = |k: &str| format!("knock.profiles.{name}.{k}");
            let secret = match &p.secret_file {
                Some(f) => Some(knockd::Secret::load(f).map_err(|e| ConfigError::File {
                    key: key("secret-file"),
                    message: e.to_string(),
                })?),
                None => None,
            };
            let kind = p.spec(secret).build().map_err(|e| ConfigError::File {
                key: key(e.key),
                message: e.message,
            })?;
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

    /// The services a grant opens when it names none: the configured default, or all.
    pub fn default_services(&self) -> Vec<String> {
        if self.grants.default_services.is_empty() {
            self.services.keys().cloned().collect()
        } else {
            self.grants.default_services.clone()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disa_limits_are_checked() {
        let e = Config::parse(&format!("{MINIMAL}[disa]\npasscode-digits = 6\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disa.passcode-digits"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}[disa]\ntries-per-call = 0\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disa.tries-per-call"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}[disa.prompts]\npasscode = []\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disa.prompts.passcode"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}[disa.prompts]\ngreeting = [\"x\"]\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("greeting"), "{e}");
    }

    const MINIMAL: &str = "[services.sip]\nports = [\"udp/5060\"]\n";

    #[test]
    fn agi_starting_limits_leave_room_for_every_session() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.agi.start_timeout.0, defaults::AGI_START_TIMEOUT);
        assert!(c.agi.max_starting_per_peer >= c.agi.max_sessions);
        let e = |agi: &str| {
            Config::parse(&format!("{MINIMAL}[agi]\n{agi}"), "t")
                .unwrap_err()
                .to_string()
        };
        let m = e("max-sessions = 200\n");
        assert!(
            m.contains("agi.max-starting-per-peer") && m.contains("200"),
            "{m}"
        );
        let m = e("max-starting-per-peer = 300\n");
        assert!(m.contains("agi.max-starting"), "{m}");
        let m = e("start-timeout = \"0s\"\n");
        assert!(m.contains("agi.start-timeout"), "{m}");
        let ok = "max-sessions = 600\nmax-starting-per-peer = 600\nmax-starting = 1000\n";
        assert!(Config::parse(&format!("{MINIMAL}[agi]\n{ok}"), "t").is_ok());
    }

    #[test]
    fn embedded_example_is_valid_and_safe() {
        let c = Config::embedded();
        for svc in ["sip", "rtp", "iax"] {
            assert!(c.services.contains_key(svc), "example protects {svc}");
        }
        // Nobody locks themselves out by trying the example: SSH is not protected.
        let protects_22 = c
            .services
            .values()
            .flat_map(|s| &s.ports)
            .any(|p| p.proto == Proto::Tcp && p.first <= 22 && 22 <= p.last);
        assert!(!protects_22, "the example must not protect SSH");
        for net in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.5.5",
            "192.168.1.1",
            "fd00::1",
        ] {
            let ip = net.parse().unwrap();
            assert!(c.firewall.trusted.iter().any(|n| n.contains(ip)), "trusts {net}");
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse(&format!("{MINIMAL}[grants]\nttl-defualt = \"2h\"\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ttl-defualt"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let e = Config::parse("[services.rtp]\nports = [\"udp/10000-70000\"]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp/10000-70000") && e.contains("line 2"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}[grants]\nttl-max = \"forever\"\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("forever") && e.contains("line 4"), "{e}");
        let e = Config::parse(
            &format!("{MINIMAL}[firewall]\ntrusted = [\"10.0.0.0/40\"]\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("10.0.0.0/40"), "{e}");
    }

    #[test]
    fn cross_checks_name_the_key() {
        let e = Config::parse(
            &format!("{MINIMAL}[grants]\nttl-default = \"2d\"\nttl-max = \"1d\"\n"),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("grants.ttl-default"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}[grants]\ndefault-services = [\"rtp\"]\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("grants.default-services[0]") && e.contains("rtp"),
            "{e}"
        );
        let e = Config::parse("[services.Bad-Name]\nports = [\"udp/1\"]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("services.Bad-Name"), "{e}");
        assert!(Config::parse("", "t").is_err());
    }

    #[test]
    fn knock_profiles_are_checked_and_name_the_key() {
        let with = |extra: &str| Config::parse(&format!("{MINIMAL}{extra}"), "t");
        let ok = with(
            "[knock.profiles.laptop]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/8000\", \"tcp/9000\"]\nservices = [\"sip\"]\nttl = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(ok.knock.ports().len(), 3);
        assert_eq!(ok.knock_grant("laptop").unwrap().0, vec!["sip"]);
        let err = |extra: &str| with(extra).unwrap_err().to_string();
        let e = err("[knock.profiles.laptop]\nmode = \"static\"\nports = [\"udp/5060\", \"tcp/7000\"]\n");
        assert!(
            e.contains("knock.profiles.laptop.ports") && e.contains("sip"),
            "{e}"
        );
        let e = err("[knock.profiles.phone]\nmode = \"rotating\"\nrange = \"udp/40000-40999\"\n");
        assert!(e.contains("knock.profiles.phone.secret-file"), "{e}");
        let e = err(
            "[knock.profiles.phone]\nmode = \"rotating\"\nsecret-file = \"/x\"\nrange = \"udp/5000-5999\"\n",
        );
        assert!(
            e.contains("knock.profiles.phone.range") && e.contains("udp/5060"),
            "{e}"
        );
        let e =
            err("[knock.profiles.a]\nmode = \"spa\"\nsecret-file = \"/x\"\nports = [\"tcp/1\", \"tcp/2\"]\n");
        assert!(e.contains("knock.profiles.a.ports"), "{e}");
        let e = err("[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"tcp/7001\"]\nservices = [\"rtp\"]\n");
        assert!(e.contains("knock.profiles.a.services[0]"), "{e}");
        let e = err(
            "[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"tcp/7001\"]\nttl = \"2d\"\n",
        );
        assert!(e.contains("knock.profiles.a.ttl"), "{e}");
        let e = err("[knock.profiles.a]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/62201\"]\n[knock.profiles.b]\nmode = \"spa\"\nsecret-file = \"/x\"\n");
        assert!(
            e.contains("knock.profiles.b.port") && e.contains("profile a"),
            "{e}"
        );
        let e = err("[knock.profiles.a]\nmode = \"sneaky\"\n");
        assert!(e.contains("sneaky"), "{e}");
        let e = err("[knock]\nmax-in-progress = 1\n");
        assert!(e.contains("knock.max-in-progress"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn knock_secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spa.secret");
        std::fs::write(&f, format!("{}\n", knockd::Secret::generate().unwrap().to_hex())).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::parse(
            &format!(
                "{MINIMAL}[knock.profiles.spa]\nmode = \"spa\"\nsecret-file = \"{}\"\n",
                f.display()
            ),
            "t",
        )
        .unwrap();
        let e = c.knock_profiles().unwrap_err().to_string();
        assert!(
            e.contains("knock.profiles.spa.secret-file") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.knock_profiles().unwrap()[0].kind.mode(), knockd::Mode::Spa);
    }

    #[test]
    fn overlapping_services_are_refused_naming_both_and_the_lines() {
        let e = Config::parse(
            "[services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n\n[services.dup]\nports = [\"udp/5060\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("services.dup.ports")
                && e.contains("service sip (udp/5060, line 2)")
                && e.contains("service dup (udp/5060, line 5)"),
            "{e}"
        );
        // A range inside another service's range: the shared ports are named.
        let e = Config::parse(
            "[services.rtp]\nports = [\"udp/10000-20000\"]\n[services.media]\nports = [\"tcp/15000\", \"udp/15000-15010\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config t.toml: services.media.ports: udp/15000-15010 is in service media")
                && e.contains("service rtp (udp/10000-20000, line 2)"),
            "{e}"
        );
        // Partial overlap: only the shared ports. Other protocols and neighbours are fine.
        let e = Config::parse(
            "[services.a]\nports = [\"udp/100-200\"]\n[services.b]\nports = [\"udp/150-300\"]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("udp/150-200 is in service b"), "{e}");
        Config::parse(
            "[services.a]\nports = [\"udp/100-200\"]\n[services.b]\nports = [\"tcp/100-200\", \"udp/201\"]\n",
            "t",
        )
        .unwrap();
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            "udp/10000-20000".parse::<PortRange>().unwrap(),
            PortRange {
                proto: Proto::Udp,
                first: 10000,
                last: 20000
            }
        );
        for bad in ["5060", "sctp/1", "udp/0", "tcp/20-10", "udp/x"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ami_section_checks_name_the_key() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert!(!c.ami.enabled);
        assert_eq!(c.ami.login, AmiLogin::Md5);
        let ok = Config::parse(
            &format!(
                "{MINIMAL}[ami]\nenabled = true\nsecret-file = \"/x\"\nlogin = \"plain\"\n\
                 reconnect-first = \"100ms\"\nban-threshold = 3\nban-window = \"30s\"\nhold-max = \"0s\"\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(ok.ami.reconnect_first.0.as_millis(), 100);
        for (extra, key) in [
            ("enabled = true", "ami.secret-file"),
            ("ban-threshold = 0", "ami.ban-threshold"),
            ("ban-window = \"0s\"", "ami.ban-window"),
            ("ban-growth = 0", "ami.ban-growth"),
            ("ban-ttl = \"8d\"", "ami.ban-ttl"),
            ("ban-ttl-max = \"60d\"", "ami.ban-ttl-max"),
            ("reconnect-first = \"0ms\"", "ami.reconnect-first"),
            (
                "reconnect-first = \"5s\"\nreconnect-max = \"1s\"",
                "ami.reconnect-max",
            ),
            ("keepalive = \"10ms\"", "ami.keepalive"),
            ("address = \"localhost\"", "ami.address"),
        ] {
            let e = Config::parse(&format!("{MINIMAL}[ami]\n{extra}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let e = Config::parse(&format!("{MINIMAL}[ami]\nlogin = \"sha\"\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn ami_secret_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ami.secret");
        std::fs::write(&path, "pw-123\n").unwrap();
        let mut ami = AmiConfig {
            secret_file: Some(path.clone()),
            ..AmiConfig::default()
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ami.read_secret("t").unwrap_err().to_string();
        assert!(e.contains("ami.secret-file") && e.contains("0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ami.read_secret("t").unwrap().expose(), "pw-123");
        ami.secret_file = Some(dir.path().join("missing"));
        assert!(ami
            .read_secret("t")
            .unwrap_err()
            .to_string()
            .contains("ami.secret-file"));
    }
}
