//! `[sip-auth-grant]`: the phones whose successful SIP login (an AMI `SuccessfulAuth`) grants
//! their address, what that opens and for how long. Off while it lists no endpoint.

use serde::{Deserialize, Serialize};

use super::Config;
use crate::base::duration::Ttl;

/// Longest endpoint name taken: Asterisk's own object names are far shorter, and the name goes
/// into every grant's `who` and audit line.
const ENDPOINT_MAX: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SipAuthGrantConfig {
    /// PJSIP endpoints (as `pjsip.conf` names them) whose successful authentication grants the
    /// address it came from; none: off.
    pub endpoints: Vec<String>,
    /// What such a grant opens (default: grants.default-services).
    pub services: Vec<String>,
    /// For how long (default: grants.ttl-default); a phone re-authenticating while its grant has
    /// more than half of this left changes nothing.
    pub ttl: Option<Ttl>,
}

impl SipAuthGrantConfig {
    /// Whether a successful login grants anything at all.
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Whether `endpoint` is one the admin listed.
    pub fn lists(&self, endpoint: &str) -> bool {
        self.endpoints.iter().any(|e| e == endpoint)
    }

    pub(super) fn check(&self, config: &Config) -> Result<(), (String, String)> {
        let bad = |key: String, m: String| Err((format!("sip-auth-grant.{key}"), m));
        for (i, e) in self.endpoints.iter().enumerate() {
            if e.is_empty()
                || e.len() > ENDPOINT_MAX
                || e.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return bad(
                    format!("endpoints[{i}]"),
                    format!("{e:?} is not a PJSIP endpoint name (1 to {ENDPOINT_MAX} characters, no spaces)"),
                );
            }
            if self.endpoints[..i].contains(e) {
                return bad(format!("endpoints[{i}]"), format!("`{e}` is listed twice"));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            if !config.services.contains_key(s) {
                return bad(
                    format!("services[{i}]"),
                    format!("`{s}` is not a service defined under [services]"),
                );
            }
        }
        if let Some(ttl) = self.ttl {
            if ttl.0.is_zero() || ttl > config.grants.ttl_max {
                return bad(
                    "ttl".into(),
                    format!(
                        "must be more than 0s and at most grants.ttl-max ({})",
                        config.grants.ttl_max
                    ),
                );
            }
        }
        // The logins are seen through AMI only: a list without it would silently grant nothing.
        if self.enabled() && !config.ami.enabled {
            return bad(
                "endpoints".into(),
                "needs ami.enabled = true: successful logins are seen through AMI".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[services.sip]
ports = ["udp/5060"]
[services.rtp]
ports = ["udp/10000-20000"]
[grants]
ttl-max = "12h"
[ami]
enabled = true
secret-file = "/nonexistent/ami.secret"
"#;

    fn parse(section: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}[sip-auth-grant]\n{section}"), "t").map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_on_with_endpoints() {
        let c = Config::parse(BASE, "t").unwrap();
        assert!(!c.sip_auth_grant.enabled());
        assert_eq!(c.sip_auth_grant, SipAuthGrantConfig::default());
        let c =
            parse("endpoints = [\"701\", \"702\"]\nservices = [\"sip\", \"rtp\"]\nttl = \"8h\"\n").unwrap();
        let g = &c.sip_auth_grant;
        assert!(g.enabled() && g.lists("701") && g.lists("702") && !g.lists("70"));
        assert_eq!(g.ttl, Some("8h".parse().unwrap()));
        // An empty list is off, whatever else is set.
        assert!(!parse("endpoints = []\nservices = [\"rtp\"]\n")
            .unwrap()
            .sip_auth_grant
            .enabled());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (section, key, words) in [
            (
                "endpoints = [\"701\"]\nservices = [\"ssh\"]\n",
                "sip-auth-grant.services[0]",
                "`ssh` is not a service",
            ),
            (
                "endpoints = [\"701\"]\nttl = \"13h\"\n",
                "sip-auth-grant.ttl",
                "grants.ttl-max (12h)",
            ),
            (
                "endpoints = [\"701\"]\nttl = \"0s\"\n",
                "sip-auth-grant.ttl",
                "more than 0s",
            ),
            (
                "endpoints = [\"701\", \"\"]\n",
                "sip-auth-grant.endpoints[1]",
                "not a PJSIP endpoint",
            ),
            (
                "endpoints = [\"7 01\"]\n",
                "sip-auth-grant.endpoints[0]",
                "no spaces",
            ),
            (
                "endpoints = [\"701\", \"701\"]\n",
                "sip-auth-grant.endpoints[1]",
                "listed twice",
            ),
            ("endpoint = [\"701\"]\n", "unknown field `endpoint`", ""),
            ("endpoints = \"701\"\n", "endpoints", "sequence"),
        ] {
            let e = parse(section).unwrap_err();
            assert!(e.contains(key) && e.contains(words), "{section}: {e}");
        }
        let long = format!("endpoints = [\"{}\"]\n", "7".repeat(ENDPOINT_MAX + 1));
        assert!(parse(&long).unwrap_err().contains("endpoints[0]"));
    }

    #[test]
    fn needs_ami() {
        let text = format!(
            "{}[sip-auth-grant]\nendpoints = [\"701\"]\n",
            BASE.replace("enabled = true\n", "")
        );
        let e = Config::parse(&text, "t").unwrap_err().to_string();
        assert!(
            e.contains("sip-auth-grant.endpoints") && e.contains("ami.enabled"),
            "{e}"
        );
    }
}
