//! The firewall checks: the nft program, and the table as the running daemon reports it.

use std::path::Path;
use std::process::Command;

use super::{fail, ok, warn, Check};
use crate::config::Config;
use crate::control::client::call;
use crate::control::{Reply, Request};

pub(super) fn nft(config: &Config) -> Check {
    let program = &config.firewall.nft;
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => ok(
            "nft",
            format!(
                "{} ({})",
                String::from_utf8_lossy(&o.stdout).trim(),
                program.display()
            ),
        ),
        Ok(o) => fail(
            "nft",
            format!(
                "{} --version failed: {}",
                program.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            "reinstall nftables (apt-get install nftables)",
        ),
        Err(e) => fail(
            "nft",
            format!("cannot run {}: {e}", program.display()),
            "install nftables (apt-get install nftables), or set [firewall] nft to where it is",
        ),
    }
}

pub(super) fn table(socket: &Path, nft_ok: bool) -> Check {
    let status =
        match call(socket, &Request::Status) {
            Ok(Reply::Status(s)) => s,
            Ok(other) => {
                return fail(
                    "table",
                    format!("passknockd gave an unexpected reply: {other:?}"),
                    "run the same version of passknock and passknockd",
                )
            }
            Err(e) => return fail(
                "table",
                format!("cannot tell: {e}"),
                "start the daemon: systemctl start passknockd (journalctl -u passknockd says why it stopped)",
            ),
        };
    let retry = if nft_ok {
        "passknockd repairs it at its next reconcile; if it stays so, `passknock status` shows nft's error"
    } else {
        "fix nft first (above); passknockd then repairs the table by itself"
    };
    if !status.table_present {
        let why = match &status.firewall_error {
            Some(e) => format!("nft's last error: {e}"),
            None => "someone deleted it, or flushed the ruleset".into(),
        };
        return fail(
            "table",
            format!(
                "table {} is not in nft ({why}): protected ports are open to everyone",
                status.table
            ),
            retry,
        );
    }
    if !status.in_sync {
        return fail(
            "table",
            format!(
                "table {} differs from the store: {}",
                status.table, status.sync_detail
            ),
            retry,
        );
    }
    if status.firewall_path.starts_with("nft (netlink") {
        return warn(
            "table",
            format!(
                "table {} is in sync, but element changes go through {}",
                status.table, status.firewall_path
            ),
            "each grant and ban then spawns nft (milliseconds, not microseconds); check that the \
             kernel has nf_tables and passknockd has CAP_NET_ADMIN, then restart it",
        );
    }
    let door = status
        .sip_door
        .as_deref()
        .map(|d| format!("; sip: {d}"))
        .unwrap_or_default();
    ok(
        "table",
        format!(
            "table {} is in sync: {} grant(s), {} ban(s); changes through {}{door}",
            status.table, status.grants, status.bans, status.firewall_path
        ),
    )
}
