//! `[sip-secret-domain]` and `[sip-responsive]`: two opt-in doors to the SIP ports for addresses
//! the table does not know, both kept in the kernel (payload match, per-source rate limit).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, PortRange, Proto};

/// The longest secret name: the table compares `REGISTER sip:<name>` against the packet in 16-byte
/// pieces (the most one kernel compare holds), and 64 characters keep that to six compares while
/// leaving room for any name a person would type into a softphone.
pub const SECRET_NAME_MAX: usize = 64;

/// Requests per minute from one source to the responsive SIP ports, and its burst, by default:
/// a phone registers, re-registers and subscribes well within it; a scanner does not.
pub const RESPONSIVE_RATE: u32 = 30;
pub const RESPONSIVE_BURST: u32 = 10;

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SipSecretDomainConfig {
    /// The secret names, lowercase; empty: off.
    #[serde(deserialize_with = "secret_names")]
    pub names: Vec<String>,
    /// The service whose UDP ports a `REGISTER sip:<name>` may reach.
    pub service: String,
}

impl Default for SipSecretDomainConfig {
    fn default() -> Self {
        SipSecretDomainConfig {
            names: Vec::new(),
            service: "sip".into(),
        }
    }
}

/// The names are the door's key: `{:?}` says how many, never which.
impl fmt::Debug for SipSecretDomainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipSecretDomainConfig")
            .field("names", &format_args!("[{} name(s)]", self.names.len()))
            .field("service", &self.service)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SipResponsiveConfig {
    pub enabled: bool,
    /// The service whose ports unknown sources may reach under the limit.
    pub service: String,
    /// Requests (UDP packets, new TCP connections) per minute from one source address.
    pub rate: u32,
    /// How many a source may send at once before the rate applies.
    pub burst: u32,
}

impl Default for SipResponsiveConfig {
    fn default() -> Self {
        SipResponsiveConfig {
            enabled: false,
            service: "sip".into(),
            rate: RESPONSIVE_RATE,
            burst: RESPONSIVE_BURST,
        }
    }
}

/// What the table needs of an active secret domain.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDomain {
    pub names: Vec<String>,
    /// The service's UDP ports.
    pub ports: Vec<PortRange>,
}

impl fmt::Debug for SecretDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretDomain")
            .field("names", &format_args!("[{} name(s)]", self.names.len()))
            .field("ports", &self.ports)
            .finish()
    }
}

/// What the table needs of an active responsive SIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Responsive {
    /// The service's ports, UDP and TCP.
    pub ports: Vec<PortRange>,
    pub rate: u32,
    pub burst: u32,
}

impl Config {
    /// The secret domain when names are configured and the service has UDP ports.
    pub fn sip_secret_domain(&self) -> Option<SecretDomain> {
        let s = &self.sip_secret_domain;
        if s.names.is_empty() {
            return None;
        }
        let ports: Vec<PortRange> = self
            .services
            .get(&s.service)?
            .ports
            .iter()
            .filter(|p| p.proto == Proto::Udp)
            .copied()
            .collect();
        (!ports.is_empty()).then(|| SecretDomain {
            names: s.names.clone(),
            ports,
        })
    }

    /// Responsive SIP when it is on and its service exists.
    pub fn sip_responsive(&self) -> Option<Responsive> {
        let r = &self.sip_responsive;
        if !r.enabled {
            return None;
        }
        Some(Responsive {
            ports: self.services.get(&r.service)?.ports.clone(),
            rate: r.rate,
            burst: r.burst,
        })
    }

    pub(super) fn check_sip_door(
        &self,
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let s = &self.sip_secret_domain;
        for (i, name) in s.names.iter().enumerate() {
            let key = format!("sip-secret-domain.names[{i}]");
            secret_name(name).map_err(|why| invalid(key.clone(), why))?;
            if s.names[..i].contains(name) {
                return Err(invalid(key, "is listed twice".into()));
            }
        }
        if !s.names.is_empty() {
            let Some(svc) = self.services.get(&s.service) else {
                return Err(invalid(
                    "sip-secret-domain.service".into(),
                    format!("`{}` is not a service defined under [services]", s.service),
                ));
            };
            if !svc.ports.iter().any(|p| p.proto == Proto::Udp) {
                return Err(invalid(
                    "sip-secret-domain.service".into(),
                    format!(
                        "service `{}` has no UDP port; the secret domain is matched on SIP over UDP only",
                        s.service
                    ),
                ));
            }
        }
        let r = &self.sip_responsive;
        for (k, v, max) in [("rate", r.rate, 6_000), ("burst", r.burst, 1_000)] {
            if !(1..=max).contains(&v) {
                return Err(invalid(
                    format!("sip-responsive.{k}"),
                    format!("must be from 1 to {max}"),
                ));
            }
        }
        if r.enabled && !self.services.contains_key(&r.service) {
            return Err(invalid(
                "sip-responsive.service".into(),
                format!("`{}` is not a service defined under [services]", r.service),
            ));
        }
        Ok(())
    }
}

/// Reads the names lowercased, as the table matches them; `check_sip_door` checks their shape
/// (there, and not here, so that no error quotes the config line holding the secret).
fn secret_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect())
}

/// A secret name as the table matches it: lowercase letters, digits, `-` and `.`, in labels of 1 to
/// 63 characters that neither start nor end with `-`, at most [`SECRET_NAME_MAX`] in all, and not
/// an IPv4 address (a name is the secret; the PBX's address is not one). Errors never repeat the
/// name: it is the secret.
pub fn secret_name(name: &str) -> Result<String, String> {
    let name = name.to_ascii_lowercase();
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > SECRET_NAME_MAX {
        return Err(format!(
            "is {} characters; at most {SECRET_NAME_MAX} fit the table's payload match",
            name.len()
        ));
    }
    if name.ends_with('.') {
        return Err("ends with `.`; write the name without the root dot".into());
    }
    for label in name.split('.') {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if label.is_empty() || label.len() > 63 || !label.chars().all(ok_char) {
            return Err(
                "is not a DNS name: labels of letters, digits and `-`, 1 to 63 characters, joined by `.`"
                    .into(),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("is not a DNS name: a label starts or ends with `-`".into());
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("is an address, not a name; the secret domain is a name only your phones know".into());
    }
    Ok(name)
}
