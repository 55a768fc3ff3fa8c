//! `[standing]`: how wide a standing entry's network may be, and how its DNS names are followed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::addr::Net;
use crate::base::duration::Ttl;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StandingConfig {
    /// The widest IPv4 network a standing entry may hold, as a prefix length: /16 by default, so
    /// a slip of the finger (`/8`) cannot open the PBX to a sixteenth of the Internet.
    pub max_prefix_v4: u8,
    /// The same for IPv6: /48, one site.
    pub max_prefix_v6: u8,
    /// How often every DNS name in a standing entry (or in `firewall.trusted`) is resolved again.
    /// The system resolver gives no TTLs, so this period is also the fastest a name is followed.
    pub resolve_every: Ttl,
    /// How long a name that stops resolving keeps its last addresses.
    pub grace: Ttl,
    /// Private networks a DNS name may resolve into (a name answering with a private, loopback or
    /// unspecified address has that address refused otherwise): e.g. a VPN's range.
    pub private_ok: Vec<Net>,
}

impl Default for StandingConfig {
    fn default() -> Self {
        StandingConfig {
            max_prefix_v4: 16,
            max_prefix_v6: 48,
            resolve_every: Ttl(Duration::from_secs(300)),
            grace: Ttl(Duration::from_secs(24 * 3600)),
            private_ok: Vec::new(),
        }
    }
}
