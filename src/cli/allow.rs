//! `passknock allow`: standing entries as text — added, removed, and the list with what each DNS
//! name stands for now.

use std::io::Write;

use super::render::table_lines;
use crate::base::clock::{utc, UnixMs};
use crate::base::duration::left;
use crate::control::Applied;
use crate::model::{NameState, StandingEntry};

pub(super) fn changed(
    out: &mut impl Write,
    entry: &StandingEntry,
    removed: bool,
    firewall: &Applied,
) -> std::io::Result<()> {
    let targets: Vec<String> = entry.targets.iter().map(|t| t.to_string()).collect();
    writeln!(
        out,
        "{} standing entry {}: {} to {}",
        if removed { "removed" } else { "added" },
        entry.name,
        targets.join(", "),
        entry.services.join(",")
    )?;
    if let Some(e) = &firewall.error {
        writeln!(
            out,
            "  note: saved, but the firewall is not updated yet (passknockd retries): {e}"
        )?;
    }
    Ok(())
}

pub(super) fn list(
    out: &mut impl Write,
    now: UnixMs,
    entries: &[StandingEntry],
    names: &[NameState],
) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "no standing entries");
    }
    let mut rows: Vec<[String; 4]> = Vec::new();
    for e in entries {
        let first: Vec<String> = e.targets.iter().map(|t| t.to_string()).collect();
        rows.push([
            e.name.clone(),
            first.join(", "),
            e.services.join(","),
            e.note.clone(),
        ]);
    }
    for line in table_lines(["NAME", "ENTRIES", "SERVICES", "NOTE"], &rows) {
        writeln!(out, "{line}")?;
    }
    if !names.is_empty() {
        writeln!(out)?;
        for line in names_lines(now, names) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// One row per DNS name: its addresses now, when it last resolved, and what is wrong.
pub(super) fn names_lines(now: UnixMs, names: &[NameState]) -> Vec<String> {
    let rows: Vec<[String; 4]> = names
        .iter()
        .map(|n| {
            let addrs: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
            [
                n.name.clone(),
                if addrs.is_empty() {
                    "-".into()
                } else {
                    addrs.join(", ")
                },
                match n.resolved {
                    Some(t) => format!("{} ago ({})", left(t, now), utc(t)),
                    None => "never".into(),
                },
                n.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table_lines(["DNS NAME", "ADDRESSES", "LAST RESOLVED", "PROBLEM"], &rows)
}
