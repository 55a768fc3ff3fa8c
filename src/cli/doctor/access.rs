//! Who gets in: the odds a passcode guesser has, and whether the admin's own address is let in.

use std::net::IpAddr;
use std::path::Path;

use super::{fail, ok, skip, warn, Check};
use crate::base::defaults;
use crate::base::duration::left;
use crate::config::Config;
use crate::control::client::call;
use crate::control::{Reply, Request};
use crate::rules::limiter::{odds, GuessLimits};

/// A yearly chance of a guessed passcode above this is worth a warning.
const GUESS_ODDS_WARN: f64 = 1e-3;

/// What the DISA limits allow a guesser in a year, with the accounts the daemon has: the shortest
/// passcode and every owner number count against the odds.
pub(super) fn guessing(config: &Config, socket: &Path) -> Check {
    if !config.disa.enabled {
        return skip("guessing", "DISA is off");
    }
    let accounts = match call(socket, &Request::AccountList) {
        Ok(Reply::Accounts { accounts }) => accounts,
        Ok(Reply::Error { message }) => return skip("guessing", format!("cannot list accounts: {message}")),
        Ok(_) | Err(_) => return skip("guessing", "needs the daemon, to count accounts"),
    };
    let live: Vec<_> = accounts.iter().filter(|a| !a.disabled).collect();
    let digits = live
        .iter()
        .map(|a| a.passcode_digits.unwrap_or(defaults::PASSCODE_DIGITS_MIN))
        .min()
        .unwrap_or(config.disa.passcode_digits) as u32;
    let owners: u64 = live.iter().map(|a| a.callers.len() as u64).sum();
    let policy = GuessLimits::from(&config.disa);
    let odds = odds(&policy, live.len() as u64, owners, digits);
    let detail = odds.describe(&policy, live.len() as u64, owners, digits);
    if odds.p_year < GUESS_ODDS_WARN {
        ok("guessing", detail)
    } else {
        warn(
            "guessing",
            detail,
            "lower disa.global-failures-per-hour (and disa.lockout-failures), or raise \
             disa.passcode-digits and give each account a new passcode (account reset-passcode)",
        )
    }
}

/// The admin's own address: trusted, or granted for a while, or about to be locked out.
pub(super) fn address(config: &Config, socket: &Path, ip: Option<IpAddr>) -> Check {
    let Some(ip) = ip else {
        return skip(
            "address",
            "your address is unknown (not over SSH); pass --address to check it",
        );
    };
    let ip = crate::base::addr::normalize(ip);
    if let Some(net) = config.firewall.trusted.iter().find(|n| n.contains(ip)) {
        return ok("address", format!("your address {ip} is trusted ({net})"));
    }
    let trust_fix = format!(
        "add \"{ip}/{}\" to [firewall] trusted and `passknock reload` (or `passknock grant {ip}` for a while)",
        if ip.is_ipv4() { 32 } else { 128 }
    );
    match call(socket, &Request::List { limit: None }) {
        Ok(Reply::Listing { now, grants, bans }) => {
            if let Some(b) = bans.iter().find(|b| b.address == ip) {
                return fail(
                    "address",
                    format!(
                        "your address {ip} is BANNED ({}) for {}",
                        b.reason,
                        left(now, b.expires)
                    ),
                    format!("passknock unban {ip}; then {trust_fix}"),
                );
            }
            match grants.iter().filter(|g| g.address == ip).map(|g| g.end()).max() {
                Some(end) => warn(
                    "address",
                    format!(
                        "your address {ip} is granted, but only for {} more",
                        left(now, end)
                    ),
                    trust_fix,
                ),
                None => fail(
                    "address",
                    format!(
                        "your address {ip} is neither trusted nor granted: the protected services \
                         are closed to you"
                    ),
                    trust_fix,
                ),
            }
        }
        _ => fail(
            "address",
            format!("your address {ip} is not trusted, and passknockd cannot say whether it is granted"),
            trust_fix,
        ),
    }
}
