//! Whether the other family's address a dual-stack SPA carries may be opened beside its source:
//! never an unusable, trusted, banned or (unless the profile allows it) private one.

use std::net::IpAddr;
use std::sync::Mutex;

use crate::base::addr::{self, Net};
use crate::base::clock::now_ms;
use crate::base::lock::lock;
use crate::config::Config;
use crate::store::Db;

/// Private ranges, opened beside a source only when the profile's `allow-private` says so.
const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

/// The address to open, normalised, or why not.
pub fn check(config: &Config, profile: &str, ip: IpAddr, bans: &Mutex<Db>) -> Result<IpAddr, String> {
    let ip = addr::check_grantable(addr::normalize(ip)).map_err(|e| e.to_string())?;
    if let Some(n) = config.firewall.trusted.iter().find(|n| n.contains(ip)) {
        return Err(format!("{ip} is trusted already ({n})"));
    }
    let allow_private = config
        .knock
        .profiles
        .get(profile)
        .and_then(|p| p.allow_private)
        .unwrap_or(false);
    if !allow_private && is_private(ip) {
        return Err(format!(
            "{ip} is a private address (knock.profiles.{profile}.allow-private = false)"
        ));
    }
    let ban = lock(bans)
        .ban_of(ip)
        .map_err(|e| format!("cannot read bans: {e}"))?;
    if ban.is_some_and(|b| b.expires > now_ms()) {
        return Err(format!("{ip} is banned"));
    }
    Ok(ip)
}

fn is_private(ip: IpAddr) -> bool {
    PRIVATE
        .iter()
        .any(|p| p.parse::<Net>().is_ok_and(|n| n.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_of_both_families() {
        for a in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "fd00::1"] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["203.0.113.10", "2001:db8:113::10", "172.32.0.1"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }
}
