//! `[grants]` and `[bans]`: their default and longest TTLs, and the services a grant opens by default.

use serde::{Deserialize, Serialize};

use crate::base::defaults;
use crate::base::duration::Ttl;

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
