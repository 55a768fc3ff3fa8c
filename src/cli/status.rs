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
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::model::{Counts, GrantsBySource};

    const NOW: i64 = 1_795_248_830_000;

    fn grant(i: u32) -> Grant {
        Grant {
            id: i as i64,
            address: format!("203.0.113.{i}").parse().unwrap(),
            services: vec!["sip".into(), "rtp".into()],
            created: NOW - 60_000,
            expires: NOW + 3_600_000 + i as i64 * 1000,
            hold_until: None,
            node: String::new(),
            source: Source::Admin,
            who: "uid 0".into(),
            note: format!("hotel {i}"),
        }
    }

    fn screen(grants: u32, bans: u32, contacts: u32, ami: bool) -> Screen {
        Screen {
            status: Status {
                table: "inet passknock".into(),
                table_present: true,
                in_sync: true,
                sync_detail: String::new(),
                grants: grants as u64,
                bans: bans as u64,
                elements: 0,
                services: vec!["sip".into()],
                store: "/var/lib/passknock/passknock.db".into(),
                last_reconcile: Some(NOW - 5_000),
                firewall_error: None,
                firewall_path: "netlink".into(),
                now: NOW,
                standing: 0,
                names: vec![],
                last_hour: Counts {
                    grants: GrantsBySource {
                        admin: 7,
                        knock: 2,
                        ..Default::default()
                    },
                    bans: 1,
                    knocks_accepted: 2,
                    knocks_refused: 40,
                    failed_passcodes: 3,
                    disa_calls: 5,
                    sip_calls: 9,
                    attempted_grants: 1,
                    grants_replaced: 0,
                    grants_extended: 2,
                },
                last_24h: Counts {
                    grants: GrantsBySource {
                        admin: 20,
                        knock: 4,
                        ..Default::default()
                    },
                    bans: 3,
                    knocks_accepted: 4,
                    knocks_refused: 400,
                    failed_passcodes: 6,
                    disa_calls: 11,
                    sip_calls: 30,
                    attempted_grants: 2,
                    grants_replaced: 1,
                    grants_extended: 5,
                },
                sip_attempts: None,
                sip_door: None,
                sip_rate_drops: None,
                cluster: None,
            },
            live_grants: (1..=grants).map(grant).collect(),
            live_bans: (1..=bans)
                .map(|i| Ban {
                    address: format!("198.51.100.{i}").parse().unwrap(),
                    reason: "scanner".into(),
                    created: NOW,
                    expires: NOW + 600_000,
                })
                .collect(),
            ami: AmiStatus {
                enabled: ami,
                address: "127.0.0.1:5038".into(),
                connected: ami,
                ..Default::default()
            },
            contacts: (1..=contacts)
                .map(|i| ContactEntry {
                    endpoint: format!("70{i}"),
                    addresses: vec![format!("192.0.2.{i}").parse().unwrap()],
                })
                .collect(),
            calls: vec![],
        }
    }

    fn text(sc: &Screen, color: bool) -> String {
        let mut out = Vec::new();
        render(&mut out, sc, Paint(color)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_grant_shows_the_node_that_granted_it_in_a_cluster() {
        let mut g = grant(1);
        assert_eq!(grant_row(NOW, &g, "")[3], "uid 0");
        g.node = "pbx-b".into();
        assert_eq!(grant_row(NOW, &g, "")[3], "uid 0 at pbx-b");
    }

    #[test]
    fn long_lists_are_capped_with_how_many_more() {
        let t = text(&screen(11, 5, 8, true), false);
        assert!(t.contains("203.0.113.4 "), "{t}");
        assert!(
            !t.contains("203.0.113.5 "),
            "the fifth grant is past the cap:\n{t}"
        );
        assert!(t.contains("… and 7 more (passknock list)"), "{t}");
        assert!(t.contains("198.51.100.3 ") && !t.contains("198.51.100.4 "), "{t}");
        assert!(t.contains("… and 2 more (passknock list)"), "{t}");
        assert!(t.contains("703") && !t.contains("704"), "{t}");
        assert!(t.contains("… and 5 more (passknock contacts)"), "{t}");
        // Long lists of everything still make one screen.
        assert!(t.lines().count() <= 26, "{} lines:\n{t}", t.lines().count());
        assert!(!t.contains('\x1b'), "{t}");
    }

    #[test]
    fn a_typical_box_fits_24_lines() {
        let t = text(&screen(3, 1, 3, true), false);
        assert!(t.lines().count() <= 24, "{} lines:\n{t}", t.lines().count());
        assert!(!t.contains("more ("), "{t}");
        assert!(!t.contains("SIP attempts"), "no reader, no line: {t}");
        let mut sc = screen(3, 1, 3, true);
        sc.status.sip_attempts = Some(crate::observe::attempts::SipAttemptCounts {
            seen: 9,
            recorded: 2,
            malformed: 7,
            users: 1,
            sources: 1,
            ..Default::default()
        });
        let t = text(&sc, false);
        assert!(t.lines().count() <= 24, "{} lines:\n{t}", t.lines().count());
        assert!(
            t.contains("SIP attempts since start: 9 seen, 2 recorded, 0 not an account, 0 ignored, 7 malformed; remembered: 1 endpoints, 1 addresses"),
            "{t}"
        );
    }

    #[test]
    fn counts_show_now_and_the_last_hour() {
        let t = text(&screen(2, 1, 0, true), false);
        let row = |label: &str| {
            t.lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label} row:\n{t}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(row("grants "), "grants 2 9 24 knocks accepted 2 4");
        assert_eq!(row("bans"), "bans 1 1 3 knocks refused 40 400");
        assert_eq!(row("contacts"), "contacts 0 - - DISA calls 5 11");
        assert_eq!(row("SIP calls"), "SIP calls 0 9 30 failed passcodes 3 6");
        assert_eq!(
            row("grants in"),
            "grants in the last hour by source: knock 2, admin 7; from a phone's attempts 1, extended 2"
        );
        assert!(
            t.contains("present, in sync with the store; reconciled 5s ago"),
            "{t}"
        );
        assert!(t.contains("AMI       127.0.0.1:5038 connected"), "{t}");
        assert!(t.contains("no registered contacts"), "{t}");
    }

    #[test]
    fn ami_off_says_so_instead_of_counting_nothing() {
        let t = text(&screen(0, 0, 0, false), false);
        assert!(t.contains("AMI       off"), "{t}");
        let contacts = t.lines().find(|l| l.starts_with("contacts")).unwrap();
        assert_eq!(
            contacts.split_whitespace().take(4).collect::<Vec<_>>(),
            ["contacts", "-", "-", "-"]
        );
        assert!(
            !t.contains("ENDPOINT") && !t.contains("no registered contacts"),
            "{t}"
        );
        assert!(t.contains("no grants") && t.contains("no bans"), "{t}");
    }

    #[test]
    fn colour_marks_health_and_headings_only_when_asked() {
        let mut sc = screen(1, 1, 1, true);
        sc.status.in_sync = false;
        sc.status.sync_detail = "2 element(s) to set, 0 to remove".into();
        sc.status.firewall_error = Some("nft: simulated outage".into());
        sc.ami.connected = false;
        let plain = text(&sc, false);
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("NOT in sync: 2 element(s)"), "{plain}");
        let t = text(&sc, true);
        assert!(
            t.contains("\x1b[31mpresent, NOT in sync"),
            "red for the table:\n{t}"
        );
        assert!(t.contains("\x1b[31mlast error: nft: simulated outage"), "{t}");
        assert!(t.contains("\x1b[33mNOT connected"), "yellow for AMI:\n{t}");
        assert!(t.contains("\x1b[1mGRANTED"), "bold headings:\n{t}");
        // Colour changes no text: strip the escapes and the plain screen is what is left.
        let mut stripped = String::new();
        let mut rest = t.as_str();
        while let Some(i) = rest.find('\x1b') {
            stripped.push_str(&rest[..i]);
            let end = rest[i..].find('m').unwrap();
            rest = &rest[i + end + 1..];
        }
        stripped.push_str(rest);
        assert_eq!(stripped, plain);
    }

    #[test]
    fn json_keeps_the_status_fields_at_the_top_and_reads_an_old_reply() {
        let sc = screen(1, 0, 0, false);
        let v: serde_json::Value = serde_json::to_value(&sc).unwrap();
        assert_eq!(v["in_sync"], true);
        assert_eq!(v["grants"], 1);
        assert_eq!(v["last_hour"]["grants"]["admin"], 7);
        assert_eq!(v["last_24h"]["knocks_refused"], 400);
        assert_eq!(v["live_grants"][0]["address"], "203.0.113.1");
        assert_eq!(serde_json::from_value::<Screen>(v).unwrap(), sc);
        // A daemon from before the last-hour counts: its status still reads, with zeros.
        let mut old = serde_json::to_value(&sc.status).unwrap();
        old.as_object_mut().unwrap().remove("last_hour");
        old.as_object_mut().unwrap().remove("last_24h");
        let st: Status = serde_json::from_value(old).unwrap();
        assert_eq!(st.last_hour, Counts::default());
        assert_eq!(st.last_24h, Counts::default());
    }

    #[test]
    fn a_shared_store_says_its_node_the_link_and_every_node() {
        let mut sc = screen(1, 0, 0, false);
        sc.status.cluster = Some(crate::model::ClusterView {
            node: "pbx-a".into(),
            database: "postgresql://passknock@db/pk".into(),
            connected: true,
            resynced: Some(NOW - 120_000),
            followed: 4,
            nodes: vec![("pbx-a".into(), NOW - 1_000), ("pbx-b".into(), NOW - 3_000)],
            ..Default::default()
        });
        let mut out = Vec::new();
        render(&mut out, &sc, Paint(false)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("store     postgresql://passknock@db/pk as node pbx-a: connected; in step since 2m ago, 4 change(s) followed"),
            "{text}"
        );
        assert!(
            text.contains("nodes     pbx-a (seen 1s ago), pbx-b (seen 3s ago)"),
            "{text}"
        );
        let c = sc.status.cluster.as_mut().unwrap();
        c.connected = false;
        c.lost_since = Some(NOW - 30_000);
        c.error = Some("cannot reach the database".into());
        c.pending_bans = 2;
        let mut out = Vec::new();
        render(&mut out, &sc, Paint(false)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "NOT connected for 30s: cannot reach the database; enforcing what it has, new grants refused"
            ),
            "{text}"
        );
        assert!(
            text.contains("2 ban(s) made here wait to be written up"),
            "{text}"
        );
    }
}
