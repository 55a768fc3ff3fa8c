//! What a knock profile is — static sequence, rotating sequence or single packet — checked the
//! same way whether it comes from the daemon's config or the laptop's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{KnockSecret, Port, PortRange};

/// Time allowed from a sequence's first knock to its last.
pub const SEQUENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports in a rotating sequence.
pub const ROTATING_LENGTH: usize = 4;
/// How long one rotating sequence is current.
pub const ROTATING_STEP: Duration = Duration::from_secs(30);
/// The UDP port SPA datagrams go to (fwknop's, so firewalls that know one know the other).
pub const SPA_PORT: u16 = 62201;
/// How far an SPA timestamp may be from the server's clock, either way.
pub const SPA_MAX_AGE: Duration = Duration::from_secs(60);
/// Pause between two knocks of a sequence, so they arrive in order.
pub const CLIENT_DELAY: Duration = Duration::from_millis(20);
/// How long the client probes for access before it says access did not open.
pub const CLIENT_WAIT: Duration = Duration::from_secs(5);
/// How long a grant lasts when the client config does not say: the daemon's own default
/// (`grants.ttl-default`), checked against it by a test in the daemon's crate.
pub const CLIENT_TTL: Duration = Duration::from_secs(2 * 3600);
/// How long `--wait-phone` waits for the daemon's answer: longer than the daemon waits for the
/// phone ([`ANSWER_WAIT_MAX`]), so a "not yet" still arrives.
pub const CLIENT_ANSWER_WAIT: Duration = Duration::from_secs(15);
/// The daemon waits at most this long for a phone to register before it answers "not yet".
pub const ANSWER_WAIT_MAX: Duration = Duration::from_secs(10);
/// Sequence lengths allowed.
pub const SEQUENCE_MIN: usize = 2;
pub const SEQUENCE_MAX: usize = 16;
/// A rotating range smaller than this makes sequences guessable.
pub const ROTATING_RANGE_MIN: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Static,
    Rotating,
    Spa,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Static => "static",
            Mode::Rotating => "rotating",
            Mode::Spa => "spa",
        }
    }
}

/// A fixed sequence of ports, knockd style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticSequence {
    pub ports: Vec<Port>,
    pub timeout: Duration,
}

/// Ports drawn from `range` by HMAC-SHA256 over the time step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotatingSequence {
    pub secret: KnockSecret,
    pub range: PortRange,
    pub length: usize,
    pub step: Duration,
    pub timeout: Duration,
}

/// One authenticated UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinglePacket {
    pub secret: KnockSecret,
    pub port: u16,
    pub max_age: Duration,
    /// Whether a packet may ask for an address other than the one it came from.
    pub allow_address: bool,
    /// Whether a packet may carry the sender's address of the other family, to be opened with
    /// its source (one knock, both IPv4 and IPv6).
    pub dual_stack: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileKind {
    Static(StaticSequence),
    Rotating(RotatingSequence),
    Spa(SinglePacket),
}

impl ProfileKind {
    pub fn mode(&self) -> Mode {
        match self {
            ProfileKind::Static(_) => Mode::Static,
            ProfileKind::Rotating(_) => Mode::Rotating,
            ProfileKind::Spa(_) => Mode::Spa,
        }
    }

    /// Every port this profile may knock on, as ranges: what the table must log.
    pub fn knock_ports(&self) -> Vec<PortRange> {
        match self {
            ProfileKind::Static(s) => s
                .ports
                .iter()
                .map(|p| PortRange {
                    proto: p.proto,
                    first: p.port,
                    last: p.port,
                })
                .collect(),
            ProfileKind::Rotating(r) => vec![r.range],
            ProfileKind::Spa(s) => vec![PortRange {
                proto: crate::Proto::Udp,
                first: s.port,
                last: s.port,
            }],
        }
    }
}

/// A named profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub kind: ProfileKind,
}

/// A problem with one key of a profile; the caller prefixes the profile's path.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError {
    pub key: &'static str,
    pub message: String,
}

fn key_err(key: &'static str, message: impl Into<String>) -> KeyError {
    KeyError {
        key,
        message: message.into(),
    }
}

/// The keys of a profile as a config file gives them, before they are checked.
#[derive(Debug, Default)]
pub struct Spec {
    pub mode: Option<Mode>,
    pub ports: Vec<Port>,
    pub range: Option<PortRange>,
    pub length: Option<usize>,
    pub step: Option<Duration>,
    pub port: Option<u16>,
    pub timeout: Option<Duration>,
    pub max_age: Option<Duration>,
    pub allow_address: Option<bool>,
    pub dual_stack: Option<bool>,
    /// Whether the config named a secret (the caller loads it, so a bad file names its key).
    pub has_secret: bool,
    pub secret: Option<KnockSecret>,
    /// The key that names the secret in this config: `secret-file` or `secret`.
    pub secret_key: &'static str,
}

impl Spec {
    /// Checks the keys against the mode and builds the profile kind.
    pub fn build(self) -> Result<ProfileKind, KeyError> {
        let mode = self
            .mode
            .ok_or_else(|| key_err("mode", "is missing; write static, rotating or spa"))?;
        let only = |present: bool, key: &'static str, modes: &str| {
            if present {
                Err(key_err(
                    key,
                    format!("is for {modes} profiles, and this one is {}", mode.name()),
                ))
            } else {
                Ok(())
            }
        };
        if mode != Mode::Static {
            only(!self.ports.is_empty(), "ports", "static")?;
        }
        if mode != Mode::Rotating {
            only(self.range.is_some(), "range", "rotating")?;
            only(self.length.is_some(), "length", "rotating")?;
            only(self.step.is_some(), "step", "rotating")?;
        }
        if mode != Mode::Spa {
            only(self.port.is_some(), "port", "spa")?;
            only(self.max_age.is_some(), "max-age", "spa")?;
            only(self.allow_address.is_some(), "allow-address", "spa")?;
            only(self.dual_stack.is_some(), "dual-stack", "spa")?;
        }
        if mode == Mode::Spa {
            only(self.timeout.is_some(), "timeout", "static and rotating")?;
        }
        if mode == Mode::Static {
            only(self.has_secret, self.secret_key, "rotating and spa")?;
        } else if !self.has_secret {
            return Err(key_err(
                self.secret_key,
                format!(
                    "is missing; a {} profile needs a secret (`passknock knock-profile add` makes one)",
                    mode.name()
                ),
            ));
        }
        let timeout = self.timeout.unwrap_or(SEQUENCE_TIMEOUT);
        if mode != Mode::Spa && !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
            return Err(key_err("timeout", "must be from 1s to 5m"));
        }
        let secret = || {
            self.secret
                .clone()
                .ok_or_else(|| key_err(self.secret_key, "could not be read"))
        };
        Ok(match mode {
            Mode::Static => {
                let n = self.ports.len();
                if !(SEQUENCE_MIN..=SEQUENCE_MAX).contains(&n) {
                    return Err(key_err(
                        "ports",
                        format!("lists {n} port(s); a sequence has {SEQUENCE_MIN} to {SEQUENCE_MAX}"),
                    ));
                }
                if let Some(w) = self.ports.windows(2).find(|w| w[0] == w[1]) {
                    return Err(key_err(
                        "ports",
                        format!(
                            "repeats {} twice in a row, which a retransmitted SYN would look like",
                            w[0]
                        ),
                    ));
                }
                ProfileKind::Static(StaticSequence {
                    ports: self.ports,
                    timeout,
                })
            }
            Mode::Rotating => {
                let range = self
                    .range
                    .ok_or_else(|| key_err("range", "is missing; write e.g. udp/40000-40999"))?;
                if range.len() < ROTATING_RANGE_MIN {
                    return Err(key_err(
                        "range",
                        format!(
                            "holds {} ports; at least {ROTATING_RANGE_MIN} keep sequences unguessable",
                            range.len()
                        ),
                    ));
                }
                let length = self.length.unwrap_or(ROTATING_LENGTH);
                if !(SEQUENCE_MIN..=SEQUENCE_MAX).contains(&length) {
                    return Err(key_err(
                        "length",
                        format!("must be from {SEQUENCE_MIN} to {SEQUENCE_MAX}"),
                    ));
                }
                let step = self.step.unwrap_or(ROTATING_STEP);
                if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&step)
                    || step.subsec_millis() != 0
                {
                    return Err(key_err("step", "must be whole seconds from 5s to 1h"));
                }
                ProfileKind::Rotating(RotatingSequence {
                    secret: secret()?,
                    range,
                    length,
                    step,
                    timeout,
                })
            }
            Mode::Spa => {
                let max_age = self.max_age.unwrap_or(SPA_MAX_AGE);
                if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&max_age) {
                    return Err(key_err("max-age", "must be from 5s to 1h"));
                }
                ProfileKind::Spa(SinglePacket {
                    secret: secret()?,
                    port: self.port.unwrap_or(SPA_PORT),
                    max_age,
                    allow_address: self.allow_address.unwrap_or(false),
                    dual_stack: self.dual_stack.unwrap_or(false),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: Mode) -> Spec {
        Spec {
            mode: Some(mode),
            secret_key: "secret-file",
            ..Default::default()
        }
    }

    #[test]
    fn keys_follow_the_mode() {
        let mut s = spec(Mode::Static);
        s.ports = vec![Port::tcp(7000), Port::udp(8000), Port::tcp(9000)];
        assert!(matches!(s.build(), Ok(ProfileKind::Static(_))));
        let mut s = spec(Mode::Static);
        s.ports = vec![Port::tcp(7000), Port::tcp(7000)];
        assert_eq!(s.build().unwrap_err().key, "ports");
        let mut s = spec(Mode::Static);
        s.ports = vec![Port::tcp(7000)];
        assert_eq!(s.build().unwrap_err().key, "ports");
        let mut s = spec(Mode::Static);
        s.ports = vec![Port::tcp(7000), Port::tcp(7001)];
        s.has_secret = true;
        assert_eq!(s.build().unwrap_err().key, "secret-file");

        let e = spec(Mode::Spa).build().unwrap_err();
        assert_eq!(e.key, "secret-file");
        let mut s = spec(Mode::Spa);
        s.has_secret = true;
        s.secret = Some(KnockSecret::generate().unwrap());
        let ProfileKind::Spa(p) = s.build().unwrap() else {
            panic!()
        };
        assert_eq!((p.port, p.max_age), (SPA_PORT, SPA_MAX_AGE));
        let mut s = spec(Mode::Spa);
        s.has_secret = true;
        s.range = Some("udp/1-1000".parse().unwrap());
        assert_eq!(s.build().unwrap_err().key, "range");

        let mut s = spec(Mode::Rotating);
        s.has_secret = true;
        s.secret = Some(KnockSecret::generate().unwrap());
        assert_eq!(s.build().unwrap_err().key, "range");
        let mut s = spec(Mode::Rotating);
        s.has_secret = true;
        s.secret = Some(KnockSecret::generate().unwrap());
        s.range = Some("udp/40000-40099".parse().unwrap());
        assert_eq!(s.build().unwrap_err().key, "range", "too small");
        assert_eq!(Spec::default().build().unwrap_err().key, "mode");
    }
}
