//! A store other nodes share: their changes reach this node's table, and a listener's bans hold
//! while the database is away.

use super::*;
use crate::model::{Ban, Grant};

/// A grant another node wrote straight into the shared store.
fn written_elsewhere(rig: &mut Rig, address: &str) {
    let store = &mut rig.engine.store;
    store.grants.push(Grant {
        id: 900,
        address: ip(address),
        services: vec!["sip".into()],
        source: Source::Disa,
        who: "disa:alice".into(),
        note: String::new(),
        created: W0,
        expires: W0 + HOUR,
        hold_until: None,
        node: "pbx-b".into(),
    });
}

#[test]
fn another_nodes_change_reaches_this_table_for_its_addresses_alone() {
    let mut rig = Rig::new();
    written_elsewhere(&mut rig, "203.0.113.50");
    assert!(!rig.table().has(ip("203.0.113.50")));
    let batches = rig.table().batches;
    rig.batch(SEC, vec![remote(Some(vec![ip("203.0.113.50")]))]);
    assert!(rig.table().has(ip("203.0.113.50")));
    assert_eq!(rig.table().batches - batches, 1, "one element batch");
    // Gone at the other node: gone here.
    rig.engine.store.grants.clear();
    rig.batch(2 * SEC, vec![remote(Some(vec![ip("203.0.113.50")]))]);
    assert!(!rig.table().has(ip("203.0.113.50")));
}

#[test]
fn a_change_of_anything_puts_the_whole_table_in_line() {
    let mut rig = Rig::new();
    written_elsewhere(&mut rig, "203.0.113.51");
    rig.engine.store.bans.push(Ban {
        address: ip("203.0.113.52"),
        reason: "elsewhere".into(),
        created: W0,
        expires: W0 + HOUR,
    });
    rig.batch(SEC, vec![remote(None)]);
    assert!(rig.table().has(ip("203.0.113.51")));
    assert!(rig.table().has(ip("203.0.113.52")));
}

#[test]
fn a_listeners_ban_holds_while_the_shared_store_is_away_and_is_written_up_after() {
    let mut rig = Rig::new();
    rig.engine.store.shared = true;
    rig.engine.store.down = true;
    let ami = |r| Command::Ban(ban_ask("203.0.113.66", Some("10m")), r);
    let (mut j, rx) = job(ami);
    j.actor = Actor::new("ami", Source::Ami);
    rig.batch(SEC, vec![j]);
    assert!(answer(rx).is_ok(), "enforced here");
    assert!(rig.table().has(ip("203.0.113.66")));
    assert!(rig.store().bans.is_empty());
    assert_eq!(rig.engine.held_ban_count(), 1);
    // An admin's ban is refused: the store is the truth, and only a listener's attack can't wait.
    let e = rig.one(SEC, |r| Command::Ban(ban_ask("203.0.113.67", None), r));
    assert!(e.unwrap_err().0.contains("not banned"));
    // The database is back and this node resyncs: the ban is written up first, so the repair
    // keeps it.
    rig.engine.store.down = false;
    rig.batch(2 * SEC, vec![remote(None)]);
    assert_eq!(rig.store().bans.len(), 1);
    assert_eq!(rig.engine.held_ban_count(), 0);
    assert!(rig.table().has(ip("203.0.113.66")));
}

fn remote(addresses: Option<Vec<IpAddr>>) -> Job {
    Job {
        arrived: Instant::now(),
        actor: Actor::new("shared store", Source::Admin),
        command: Command::Remote(addresses),
    }
}
