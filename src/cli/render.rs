//! The daemon's replies as text: confirmations, the grant and ban tables, contacts, calls and accounts.

use std::io::Write;
use std::time::Duration;

use super::{history, paint, status, CliError};
use crate::base::clock::{utc, UnixMs};
use crate::base::defaults;
use crate::base::duration::{human, left};
use crate::control::{AmiStatus, Applied, Reply};
use crate::model::{Ban, Grant};

fn firewall_note(out: &mut impl Write, a: &Applied) -> std::io::Result<()> {
    if let Some(e) = &a.error {
        writeln!(
            out,
            "  note: saved, but the firewall is not updated yet (passknockd retries): {e}"
        )?;
    }
    Ok(())
}

pub(super) fn render(reply: &Reply, out: &mut impl Write) -> Result<(), CliError> {
    let now = crate::base::clock::now_ms();
    match reply {
        Reply::Granted {
            grant,
            firewall,
            warning,
        } => {
            writeln!(
                out,
                "granted {} access to {} for {} (until {})",
                grant.address,
                grant.services.join(","),
                left(grant.created, grant.end()),
                utc(grant.end())
            )?;
            if let Some(w) = warning {
                writeln!(out, "  warning: {w}")?;
            }
            firewall_note(out, firewall)?;
        }
        Reply::Revoked {
            address,
            grants,
            firewall,
        } => {
            writeln!(out, "revoked {grants} grant(s) for {address}")?;
            firewall_note(out, firewall)?;
        }
        Reply::Banned { ban, firewall } => {
            writeln!(
                out,
                "banned {} for {} (until {})",
                ban.address,
                left(now, ban.expires),
                utc(ban.expires)
            )?;
            firewall_note(out, firewall)?;
        }
        Reply::Unbanned { address, firewall } => {
            writeln!(out, "unbanned {address}")?;
            firewall_note(out, firewall)?;
        }
        Reply::Listing { now, grants, bans } => list(out, *now, grants, bans)?,
        Reply::Held { address, end, .. } => match end {
            Some(end) => writeln!(out, "{address}: access until {}", utc(*end))?,
            None => writeln!(out, "{address} has no grant")?,
        },
        Reply::Contacts { ami, contacts } => {
            ami_line(out, ami)?;
            if contacts.is_empty() {
                writeln!(out, "no registered contacts")?;
            } else {
                let rows: Vec<[String; 2]> = contacts
                    .iter()
                    .map(|c| {
                        let a: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                        [c.endpoint.clone(), a.join(", ")]
                    })
                    .collect();
                table(out, ["ENDPOINT", "REGISTERED FROM"], &rows)?;
            }
        }
        Reply::Calls { ami, calls } => {
            ami_line(out, ami)?;
            if calls.is_empty() {
                writeln!(out, "no live calls")?;
            } else {
                let rows: Vec<[String; 3]> = calls
                    .iter()
                    .map(|c| [c.channel.clone(), c.address.to_string(), left(c.since, now)])
                    .collect();
                table(out, ["CHANNEL", "REMOTE ADDRESS", "UP FOR"], &rows)?;
            }
        }
        Reply::Attempts {
            active,
            now,
            attempts,
        } => {
            if !active {
                writeln!(
                    out,
                    "SIP attempts are not captured (see [sip-attempts] in the config)"
                )?;
            } else if attempts.is_empty() {
                writeln!(out, "no recent registration attempts by account endpoints")?;
            } else {
                let rows: Vec<[String; 5]> = attempts
                    .iter()
                    .map(|a| {
                        [
                            format!("{}{}", a.endpoint, if a.complete { "" } else { " (partial)" }),
                            a.address.to_string(),
                            a.count.to_string(),
                            format!("{} ago", left(a.last_seen, *now)),
                            a.user_agent.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(
                    out,
                    ["ENDPOINT", "TRIED FROM", "COUNT", "LAST SEEN", "USER-AGENT"],
                    &rows,
                )?;
            }
        }
        Reply::Status(s) => status::headline(out, s, None, paint::Paint(false))?,
        Reply::Standing {
            entry,
            removed,
            firewall,
        } => super::allow::changed(out, entry, *removed, firewall)?,
        Reply::StandingList { now, entries, names } => super::allow::list(out, *now, entries, names)?,
        Reply::AccountCreated { account, passcode } => {
            writeln!(
                out,
                "account {}: {} for {}{}; address from {}{}",
                account.name,
                account.services.join(","),
                human(Duration::from_secs(account.ttl_secs)),
                account
                    .endpoint
                    .as_ref()
                    .map(|e| format!(", endpoint {e}"))
                    .unwrap_or_default(),
                account.address_modes.join(", then "),
                if account.keep_several {
                    "; a grant per address (keep several)"
                } else {
                    ""
                }
            )?;
            writeln!(out, "passcode: {}", passcode.expose())?;
            writeln!(
                out,
                "This passcode is shown once and stored only as a keyed hash: hand it over now."
            )?;
        }
        Reply::Accounts { accounts } => {
            if accounts.is_empty() {
                writeln!(out, "no accounts")?;
            } else {
                let rows: Vec<[String; 7]> = accounts
                    .iter()
                    .map(|a| {
                        [
                            a.name.clone(),
                            a.services.join(","),
                            human(Duration::from_secs(a.ttl_secs)),
                            a.endpoint.clone().unwrap_or_else(|| "-".into()),
                            a.address_modes.join(","),
                            if a.callers.is_empty() {
                                "-".into()
                            } else {
                                a.callers.join(",")
                            },
                            if a.disabled {
                                "disabled".into()
                            } else {
                                format!("passcode set {}", utc(a.passcode_set))
                            },
                        ]
                    })
                    .collect();
                table(
                    out,
                    [
                        "ACCOUNT",
                        "SERVICES",
                        "TTL",
                        "ENDPOINT",
                        "ADDRESS FROM",
                        "CALLERS",
                        "STATE",
                    ],
                    &rows,
                )?;
            }
        }
        Reply::Events { events, more, .. } => history::log(out, events, *more, defaults::LOG_SINCE)?,
        Reply::Report(r) => history::report(out, r)?,
        Reply::Done { message } => writeln!(out, "{message}")?,
        Reply::Error { message } => return Err(CliError::Refused(message.clone())),
    }
    Ok(())
}

/// A grant as a row: address, services, source, who (and at which node, in a cluster), time left
/// (`held` marks one a call keeps open), note.
pub(super) fn grant_row(now: UnixMs, g: &Grant, held: &str) -> [String; 6] {
    let mut exp = left(now, g.end());
    if g.hold_until.is_some_and(|h| h > g.expires) {
        exp.push_str(held);
    }
    [
        g.address.to_string(),
        g.services.join(","),
        g.source.as_str().to_string(),
        if g.node.is_empty() {
            g.who.clone()
        } else {
            format!("{} at {}", g.who, g.node)
        },
        exp,
        g.note.clone(),
    ]
}

fn list(out: &mut impl Write, now: UnixMs, grants: &[Grant], bans: &[Ban]) -> std::io::Result<()> {
    if grants.is_empty() {
        writeln!(out, "no grants")?;
    } else {
        let rows: Vec<[String; 6]> = grants
            .iter()
            .map(|g| grant_row(now, g, " (held: call up)"))
            .collect();
        table(
            out,
            ["ADDRESS", "SERVICES", "SOURCE", "WHO", "EXPIRES IN", "NOTE"],
            &rows,
        )?;
    }
    if !bans.is_empty() {
        writeln!(out)?;
        let rows: Vec<[String; 3]> = bans
            .iter()
            .map(|b| [b.address.to_string(), left(now, b.expires), b.reason.clone()])
            .collect();
        table(out, ["BANNED", "EXPIRES IN", "REASON"], &rows)?;
    }
    Ok(())
}

fn table<const N: usize>(out: &mut impl Write, head: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    for line in table_lines(head, rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A header and rows, each column as wide as its widest cell; the last column is not padded.
pub(super) fn table_lines<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut width = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut lines = vec![line(head.to_vec())];
    lines.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    lines
}

/// One line on the AMI connection, above `contacts` and `calls`.
fn ami_line(out: &mut impl Write, a: &AmiStatus) -> std::io::Result<()> {
    if !a.enabled {
        return writeln!(
            out,
            "AMI is off ([ami] enabled = false): nothing is learned from Asterisk"
        );
    }
    let state = if a.connected { "connected" } else { "NOT connected" };
    write!(
        out,
        "AMI {} {state}; {} login(s), {} event(s), {} ban(s)",
        a.address, a.logins, a.events, a.bans
    )?;
    if a.skipped > 0 {
        write!(out, ", {} oversized or garbled block(s) dropped", a.skipped)?;
    }
    writeln!(out)?;
    if let (false, Some(e)) = (a.connected, &a.last_error) {
        writeln!(out, "  last error: {e}")?;
    }
    Ok(())
}
