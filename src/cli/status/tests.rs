//! The status screen rendered from fixed replies: rows, counts, colours, the shared store.

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
