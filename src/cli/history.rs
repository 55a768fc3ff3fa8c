//! `passknock log` and `passknock report`: the history as a table, newest last, and as plain
//! text an admin can mail from cron.

use std::io::Write;
use std::time::Duration;

use crate::base::clock::{utc, UnixMs};
use crate::base::duration::human;
use crate::model::{Counted, Report};
use crate::model::{Event, Kind};

use super::table_lines;

/// A time as the log shows it: UTC, to the second, without the `T`.
fn when(t: UnixMs) -> String {
    utc(t).replacen('T', " ", 1).trim_end_matches('Z').to_string()
}

/// One event as a row: time, kind, address, who, source, detail (`N×` first when a row counts a
/// flood).
fn row(e: &Event) -> [String; 6] {
    let detail = if e.count > 1 {
        format!("{}× {}", e.count, e.detail)
    } else {
        e.detail.clone()
    };
    [
        when(e.time),
        e.kind.as_str().to_string(),
        e.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        if e.who.is_empty() {
            "-".into()
        } else {
            e.who.clone()
        },
        e.source.map(|s| s.as_str()).unwrap_or("-").to_string(),
        detail,
    ]
}

/// The reply to `passknock log`.
pub fn log(out: &mut impl Write, events: &[Event], more: bool, since: Duration) -> std::io::Result<()> {
    if events.is_empty() {
        return writeln!(out, "no events in the last {}", human(since));
    }
    if more {
        writeln!(
            out,
            "(older events in the last {} left out: narrow with --since, --address or --account)",
            human(since)
        )?;
    }
    // In a cluster each row names the node that wrote it; a single box's rows name none, and its
    // table stays as it was.
    let lines = if events.iter().any(|e| !e.node.is_empty()) {
        let rows: Vec<[String; 7]> = events
            .iter()
            .map(|e| {
                let [time, kind, address, who, source, detail] = row(e);
                let node = if e.node.is_empty() {
                    "-".into()
                } else {
                    e.node.clone()
                };
                [time, kind, address, who, source, node, detail]
            })
            .collect();
        table_lines(
            [
                "TIME (UTC)",
                "EVENT",
                "ADDRESS",
                "WHO",
                "SOURCE",
                "NODE",
                "DETAIL",
            ],
            &rows,
        )
    } else {
        let rows: Vec<[String; 6]> = events.iter().map(row).collect();
        table_lines(
            ["TIME (UTC)", "EVENT", "ADDRESS", "WHO", "SOURCE", "DETAIL"],
            &rows,
        )
    };
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// This host's name, for the report's first line (mail from several PBXs looks alike).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn counted(out: &mut impl Write, title: &str, list: &[Counted], empty: &str) -> std::io::Result<()> {
    writeln!(out, "\n{title}")?;
    if list.is_empty() {
        return writeln!(out, "  {empty}");
    }
    let width = list.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    for c in list {
        writeln!(out, "  {:<width$}  {:>7}", c.name, c.count)?;
    }
    Ok(())
}

fn events(out: &mut impl Write, title: &str, list: &[Event], total: u64) -> std::io::Result<()> {
    writeln!(out, "\n{title}")?;
    if list.is_empty() {
        return writeln!(out, "  none");
    }
    let rows: Vec<[String; 6]> = list.iter().map(row).collect();
    for line in table_lines(
        ["TIME (UTC)", "EVENT", "ADDRESS", "WHO", "SOURCE", "DETAIL"],
        &rows,
    ) {
        writeln!(out, "  {line}")?;
    }
    if total > list.len() as u64 {
        writeln!(
            out,
            "  … and {} earlier (passknock log)",
            total - list.len() as u64
        )?;
    }
    Ok(())
}

/// The reply to `passknock report`: plain text, no colour, for mail.
pub fn report(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let host = hostname();
    writeln!(
        out,
        "passknock report{} for the last {}: {} to {} (UTC)",
        if host.is_empty() {
            String::new()
        } else {
            format!(" for {host}")
        },
        human(Duration::from_millis((r.now - r.since).max(0) as u64)),
        when(r.since),
        when(r.now)
    )?;
    let n = |k: &[Kind]| r.total(k);
    let lines = [
        ("grants", n(&[Kind::Grant]), String::new()),
        ("bans", n(&[Kind::Ban]), String::new()),
        (
            "refusals",
            n(&[Kind::KnockRefused, Kind::PasscodeRefused, Kind::GrantRefused]),
            format!(
                "knocks {}, passcodes {}, grant requests {}",
                n(&[Kind::KnockRefused]),
                n(&[Kind::PasscodeRefused]),
                n(&[Kind::GrantRefused])
            ),
        ),
        (
            "lockouts",
            n(&[Kind::LockoutNumber, Kind::LockoutAddress]),
            format!(
                "numbers {}, addresses {}",
                n(&[Kind::LockoutNumber]),
                n(&[Kind::LockoutAddress])
            ),
        ),
        ("suspensions", n(&[Kind::Suspension]), String::new()),
        ("knocks accepted", n(&[Kind::KnockAccepted]), String::new()),
        ("passcodes accepted", n(&[Kind::PasscodeAccepted]), String::new()),
        ("DISA calls", n(&[Kind::DisaCall]), String::new()),
        ("SIP calls", n(&[Kind::SipCall]), String::new()),
    ];
    writeln!(out)?;
    for (label, count, split) in lines {
        if split.is_empty() || count == 0 {
            writeln!(out, "{label:<20}{count:>7}")?;
        } else {
            writeln!(out, "{label:<20}{count:>7}  ({split})")?;
        }
    }
    counted(out, "Top refused sources", &r.top_refused, "none")?;
    counted(out, "Grants per account", &r.grants_by_who, "none")?;
    events(out, "Bans", &r.bans, n(&[Kind::Ban]))?;
    events(
        out,
        "Lockouts",
        &r.lockouts,
        n(&[Kind::LockoutNumber, Kind::LockoutAddress]),
    )?;
    events(out, "Suspensions", &r.suspensions, n(&[Kind::Suspension]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    const T: UnixMs = 1_795_248_830_000;

    fn text(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_log_is_a_table_newest_last_with_flood_counts() {
        let mut flood = Event::new(Kind::KnockRefused, T + 1000)
            .address("198.51.100.7".parse().unwrap())
            .who("laptop")
            .source(Source::Knock)
            .detail("mode=spa: a replay");
        flood.count = 37;
        let events = vec![
            Event::new(Kind::Grant, T)
                .address("203.0.113.7".parse().unwrap())
                .who("uid 0")
                .source(Source::Admin)
                .detail("services=sip"),
            flood,
        ];
        let t = text(|o| log(o, &events, true, Duration::from_secs(86_400)));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("left out"), "{t}");
        assert!(lines[1].starts_with("TIME (UTC)"), "{t}");
        assert!(
            lines[2].starts_with("2026-11-21 08:13:50  grant          203.0.113.7"),
            "{t}"
        );
        assert!(lines[2].ends_with("uid 0   admin   services=sip"), "{t}");
        assert!(lines[3].ends_with("37× mode=spa: a replay"), "{t}");
        let none = text(|o| log(o, &[], false, Duration::from_secs(3600)));
        assert_eq!(none, "no events in the last 1h\n");
    }

    #[test]
    fn rows_of_a_cluster_name_the_node_that_wrote_them() {
        let mut a = Event::new(Kind::Grant, T)
            .address("203.0.113.7".parse().unwrap())
            .who("disa:ann")
            .source(Source::Disa)
            .detail("services=sip");
        a.node = "pbx-a".into();
        let mut b = a.clone();
        b.node = "pbx-b".into();
        let t = text(|o| log(o, &[a, b], false, Duration::from_secs(86_400)));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("SOURCE  NODE   DETAIL"), "{t}");
        assert!(lines[1].ends_with("disa    pbx-a  services=sip"), "{t}");
        assert!(lines[2].ends_with("disa    pbx-b  services=sip"), "{t}");
    }

    #[test]
    fn the_report_counts_and_lists_in_plain_text() {
        let r = Report {
            since: T - 86_400_000,
            now: T,
            totals: vec![
                (Kind::Grant, 5),
                (Kind::Ban, 1),
                (Kind::LockoutNumber, 1),
                (Kind::KnockRefused, 40),
                (Kind::PasscodeRefused, 3),
            ],
            top_refused: vec![Counted {
                name: "198.51.100.7".into(),
                count: 40,
            }],
            grants_by_who: vec![Counted {
                name: "disa:ann".into(),
                count: 5,
            }],
            bans: vec![Event::new(Kind::Ban, T - 5000)
                .address("198.51.100.7".parse().unwrap())
                .who("ami")
                .source(Source::Ami)],
            lockouts: vec![Event::new(Kind::LockoutNumber, T - 4000).who("701")],
            suspensions: vec![],
        };
        let t = text(|o| report(o, &r));
        assert!(!t.contains('\x1b'));
        assert!(
            t.contains("for the last 1d: 2026-11-20 08:13:50 to 2026-11-21 08:13:50 (UTC)"),
            "{t}"
        );
        assert!(t.contains("\ngrants                    5\n"), "{t}");
        assert!(
            t.contains("refusals                 43  (knocks 40, passcodes 3, grant requests 0)"),
            "{t}"
        );
        assert!(
            t.contains("Top refused sources\n  198.51.100.7       40\n"),
            "{t}"
        );
        assert!(t.contains("Grants per account\n  disa:ann        5\n"), "{t}");
        assert!(t.contains("ban    198.51.100.7  ami"), "{t}");
        assert!(t.contains("Suspensions\n  none"), "{t}");
    }
}
