//! `passknock status`: one screen — table and AMI health, counts now, in the last hour and day, and the
//! first few live grants, bans and contacts — in colour on a terminal, plain when piped, or one
//! JSON object for scripts.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::paint::{Paint, Tone};
use super::{call, grant_row, table_lines, CliError};
use crate::base::clock::UnixMs;
use crate::base::duration::left;
use crate::control::{AmiStatus, CallEntry, ContactEntry, Reply, Request, Status};
use crate::model::{Ban, Grant};

/// Rows of each list the screen shows before "… and N more": with the headline and the counts,
/// a box with a few of each fits 24 lines.
const GRANT_ROWS: usize = 4;
const BAN_ROWS: usize = 3;
const CONTACT_ROWS: usize = 3;

/// Everything the screen shows, as fetched; also the `--json` object. The status fields sit at
/// the top level, as `status --json` has always had them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    #[serde(flatten)]
    pub status: Status,
    pub live_grants: Vec<Grant>,
    pub live_bans: Vec<Ban>,
    pub ami: AmiStatus,
    pub contacts: Vec<ContactEntry>,
    pub calls: Vec<CallEntry>,
}

/// The four requests the screen is made of.
pub fn fetch(socket: &Path) -> Result<Screen, CliError> {
    let status = match call(socket, &Request::Status)? {
        Reply::Status(s) => *s,
        other => return Err(unexpected("status", other)),
    };
    // Only the rows the screen shows: a box with many grants does not ship them all.
    let limit = Some(GRANT_ROWS.max(BAN_ROWS));
    let store_away = status.cluster.as_ref().is_some_and(|c| !c.connected);
    let (live_grants, live_bans) = match call(socket, &Request::List { limit })? {
        Reply::Listing { grants, bans, .. } => (grants, bans),
        // A shared store that is away has no rows to show; its store line says so.
        Reply::Error { .. } if store_away => (Vec::new(), Vec::new()),
        other => return Err(unexpected("list", other)),
    };
    // With AMI off the daemon still answers these, with `ami.enabled` false and empty lists.
    let (ami, contacts) = match call(socket, &Request::Contacts)? {
        Reply::Contacts { ami, contacts } => (ami, contacts),
        other => return Err(unexpected("contacts", other)),
    };
    let calls = match call(socket, &Request::Calls)? {
        Reply::Calls { calls, .. } => calls,
        other => return Err(unexpected("calls", other)),
    };
    Ok(Screen {
        status,
        live_grants,
        live_bans,
        ami,
        contacts,
        calls,
    })
}

fn unexpected(asked: &str, reply: Reply) -> CliError {
    match reply {
        Reply::Error { message } => CliError::Refused(message),
        _ => CliError::Reply(format!("passknockd answered `{asked}` with something else")),
    }
}

/// `passknock status [--json] [--color …]`.
pub fn show(socket: &Path, json: bool, color: bool, out: &mut impl Write) -> Result<(), CliError> {
    let screen = fetch(socket)?;
    if json {
        let text = serde_json::to_string_pretty(&screen).map_err(|e| CliError::Reply(e.to_string()))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    render(out, &screen, Paint(color))?;
    Ok(())
}

/// The table's state, the last nft error, and, when known, AMI's.
pub fn headline(out: &mut impl Write, s: &Status, ami: Option<&AmiStatus>, p: Paint) -> std::io::Result<()> {
    let sync = match (s.table_present, s.in_sync) {
        (true, true) => p.tone(Tone::Good, "present, in sync with the store"),
        (true, false) => p.tone(Tone::Bad, &format!("present, NOT in sync: {}", s.sync_detail)),
        (false, _) => p.tone(Tone::Bad, &format!("MISSING: {}", s.sync_detail)),
    };
    let reconciled = match s.last_reconcile {
        Some(t) => format!("reconciled {} ago", left(t, s.now)),
        None => p.tone(Tone::Bad, "never reconciled"),
    };
    writeln!(out, "table     {}: {sync}; {reconciled}", s.table)?;
    if let Some(c) = &s.cluster {
        cluster(out, c, s.now, p)?;
    }
    // Said only when it is not the in-process path: a fallback is worth a line, the norm is not.
    if s.firewall_path.starts_with("nft (netlink") {
        writeln!(
            out,
            "elements  {}",
            p.tone(Tone::Bad, &format!("through {}", s.firewall_path))
        )?;
    } else if s.firewall_path.starts_with("nft") {
        writeln!(out, "elements  through {}", s.firewall_path)?;
    }
    if let Some(e) = &s.firewall_error {
        writeln!(
            out,
            "nft       {}",
            p.tone(Tone::Bad, &format!("last error: {e}"))
        )?;
    }
    if s.standing > 0 {
        writeln!(
            out,
            "standing  {} entr{} (passknock allow list)",
            s.standing,
            if s.standing == 1 { "y" } else { "ies" }
        )?;
        for line in super::allow::names_lines(s.now, &s.names) {
            writeln!(out, "          {line}")?;
        }
    }
    let Some(a) = ami else { return Ok(()) };
    if !a.enabled {
        return writeln!(
            out,
            "AMI       off ([ami] enabled = false): no contacts or calls from Asterisk"
        );
    }
    if a.connected {
        writeln!(out, "AMI       {} {}", a.address, p.tone(Tone::Good, "connected"))
    } else {
        let why = a
            .last_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "AMI       {} {}",
            a.address,
            p.tone(Tone::Warn, &format!("NOT connected{why}"))
        )
    }
}

/// The shared store: this node, the database, the link, and every node's last sign of life.
fn cluster(
    out: &mut impl Write,
    c: &crate::model::ClusterView,
    now: UnixMs,
    p: Paint,
) -> std::io::Result<()> {
    let link = if c.connected {
        let since = match c.resynced {
            Some(t) => format!(
                "; in step since {} ago, {} change(s) followed",
                left(t, now),
                c.followed
            ),
            None => String::new(),
        };
        format!("{}{since}", p.tone(Tone::Good, "connected"))
    } else {
        let when = c
            .lost_since
            .map(|t| format!(" for {}", left(t, now)))
            .unwrap_or_default();
        let why = c.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        p.tone(
            Tone::Bad,
            &format!("NOT connected{when}{why}; enforcing what it has, new grants refused"),
        )
    };
    writeln!(out, "store     {} as node {}: {link}", c.database, c.node)?;
    if c.pending_bans > 0 {
        writeln!(
            out,
            "          {}",
            p.tone(
                Tone::Warn,
                &format!("{} ban(s) made here wait to be written up", c.pending_bans)
            )
        )?;
    }
    if !c.nodes.is_empty() {
        let nodes: Vec<String> = c
            .nodes
            .iter()
            .map(|(name, seen)| format!("{name} (seen {} ago)", left(*seen, now)))
            .collect();
        writeln!(out, "nodes     {}", nodes.join(", "))?;
    }
    Ok(())
}

/// A count, right-aligned in `width`; `None` (not known) is `-`, and a count that should be zero
/// is yellow when it is not.
fn count(p: Paint, n: Option<u64>, width: usize, warn_above_zero: bool) -> String {
    let text = format!(
        "{:>width$}",
        n.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
    );
    match n {
        Some(n) if n > 0 && warn_above_zero => p.tone(Tone::Warn, &text),
        _ => text,
    }
}

/// Two columns of counts: what is live now, in the last hour and in the last 24 hours, then
/// what only has the last hour and 24 hours. Both windows come from the history in the store.
fn counts(out: &mut impl Write, sc: &Screen, p: Paint) -> std::io::Result<()> {
    let (s, h, d) = (&sc.status, &sc.status.last_hour, &sc.status.last_24h);
    let via_ami = |n: u64| sc.ami.enabled.then_some(n);
    let now_and_windows = [
        (
            "grants",
            Some(s.grants),
            Some(h.grants.total()),
            Some(d.grants.total()),
            false,
        ),
        ("bans", Some(s.bans), Some(h.bans), Some(d.bans), true),
        ("contacts", via_ami(sc.contacts.len() as u64), None, None, false),
        (
            "SIP calls",
            via_ami(sc.calls.len() as u64),
            via_ami(h.sip_calls),
            via_ami(d.sip_calls),
            false,
        ),
    ];
    let windows_only = [
        ("knocks accepted", h.knocks_accepted, d.knocks_accepted, false),
        ("knocks refused", h.knocks_refused, d.knocks_refused, false),
        ("DISA calls", h.disa_calls, d.disa_calls, false),
        ("failed passcodes", h.failed_passcodes, d.failed_passcodes, true),
    ];
    let head = format!(
        "{:<17}{:>5}  {:>9}  {:>5}   {:<17}{:>9}  {:>5}",
        "", "now", "last hour", "24 h", "", "last hour", "24 h"
    );
    writeln!(out, "{}", p.tone(Tone::Heading, &head))?;
    for ((label, now, hour, day, warn), (label2, hour2, day2, warn2)) in
        now_and_windows.into_iter().zip(windows_only)
    {
        writeln!(
            out,
            "{label:<17}{}  {}  {}   {label2:<17}{}  {}",
            count(p, now, 5, warn),
            count(p, hour, 9, warn),
            count(p, day, 5, warn),
            count(p, Some(hour2), 9, warn2),
            count(p, Some(day2), 5, warn2)
        )?;
    }
    let by_source: Vec<String> = [
        ("disa", h.grants.disa),
        ("knock", h.grants.knock),
        ("admin", h.grants.admin),
        ("ami", h.grants.ami),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(src, n)| format!("{src} {n}"))
    .collect();
    // How the last hour's grants came and went, on the same line: the screen stays one screen.
    let how: Vec<String> = [
        ("from a phone's attempts", h.attempted_grants),
        ("replaced", h.grants_replaced),
        ("extended", h.grants_extended),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{what} {n}"))
    .collect();
    match (by_source.is_empty(), how.is_empty()) {
        (true, true) => {}
        (false, true) => writeln!(out, "grants in the last hour by source: {}", by_source.join(", "))?,
        (true, false) => writeln!(out, "grants in the last hour: {}", how.join(", "))?,
        (false, false) => writeln!(
            out,
            "grants in the last hour by source: {}; {}",
            by_source.join(", "),
            how.join(", ")
        )?,
    }
    if let Some(a) = &s.sip_attempts {
        sip_attempts(out, a, p)?;
    }
    if let Some(door) = &s.sip_door {
        match s.sip_rate_drops {
            Some(n) => writeln!(out, "sip: {door}; {n} dropped over the rate")?,
            None => writeln!(out, "sip: {door}")?,
        }
    }
    Ok(())
}

/// The SIP attempt reader's counts since the daemon started, in one line.
fn sip_attempts(
    out: &mut impl Write,
    a: &crate::observe::attempts::SipAttemptCounts,
    p: Paint,
) -> std::io::Result<()> {
    let overruns = if a.overruns > 0 {
        p.tone(Tone::Warn, &format!(", {} overruns", a.overruns))
    } else {
        String::new()
    };
    writeln!(
        out,
        "SIP attempts since start: {} seen, {} recorded, {} not an account, {} ignored, {} \
         malformed{overruns}; remembered: {} endpoints, {} addresses",
        a.seen, a.recorded, a.not_account, a.ignored, a.malformed, a.users, a.sources
    )
}

/// A table whose header names the section, then a pointer to the rest: `shown` are the first
/// few rows of `total`.
fn section<const N: usize>(
    out: &mut impl Write,
    p: Paint,
    head: [&str; N],
    shown: Vec<[String; N]>,
    total: usize,
    empty: &str,
    more: &str,
) -> std::io::Result<()> {
    if shown.is_empty() {
        return writeln!(out, "{empty}");
    }
    let hidden = total.saturating_sub(shown.len());
    for (i, line) in table_lines(head, &shown).into_iter().enumerate() {
        if i == 0 {
            writeln!(out, "{}", p.tone(Tone::Heading, &line))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if hidden > 0 {
        writeln!(out, "… and {hidden} more ({more})")?;
    }
    Ok(())
}

/// The whole screen.
pub fn render(out: &mut impl Write, sc: &Screen, p: Paint) -> std::io::Result<()> {
    let now = sc.status.now;
    headline(out, &sc.status, Some(&sc.ami), p)?;
    writeln!(out)?;
    counts(out, sc, p)?;
    writeln!(out)?;

    let grants = sc
        .live_grants
        .iter()
        .take(GRANT_ROWS)
        .map(|g| grant_row(now, g, " (held)"))
        .collect();
    section(
        out,
        p,
        ["GRANTED", "SERVICES", "SOURCE", "WHO", "EXPIRES IN", "NOTE"],
        grants,
        (sc.status.grants as usize).max(sc.live_grants.len()),
        "no grants",
        "passknock list",
    )?;
    let bans = sc
        .live_bans
        .iter()
        .take(BAN_ROWS)
        .map(|b| [b.address.to_string(), left(now, b.expires), b.reason.clone()])
        .collect();
    section(
        out,
        p,
        ["BANNED", "EXPIRES IN", "REASON"],
        bans,
        (sc.status.bans as usize).max(sc.live_bans.len()),
        "no bans",
        "passknock list",
    )?;
    if sc.ami.enabled {
        let contacts = sc
            .contacts
            .iter()
            .take(CONTACT_ROWS)
            .map(|c| {
                let a: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                [c.endpoint.clone(), a.join(", ")]
            })
            .collect();
        section(
            out,
            p,
            ["ENDPOINT", "REGISTERED FROM"],
            contacts,
            sc.contacts.len(),
            "no registered contacts",
            "passknock contacts",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
