//! Grants with an owner (a DISA account, a knock profile): a new address replaces the holder's
//! grant elsewhere unless the owner keeps several, the same address extends in place, the later
//! of two asks in one batch wins, and admin grants stay as they were.

use super::*;

const A: &str = "203.0.113.7";
const B: &str = "198.51.100.9";

fn owned(address: &str, holder: Holder, replace: bool, t: Option<&str>) -> GrantAsk {
    GrantAsk {
        owner: Some(Owner { holder, replace }),
        ..grant_ask(address, &["sip", "rtp"], t)
    }
}

fn laptop() -> Holder {
    Holder::Profile("laptop".into())
}

fn alice() -> Holder {
    Holder::Account("alice".into())
}

impl Rig {
    fn owned(&mut self, ms: i64, ask: GrantAsk) -> Result<Granted, Refused> {
        self.one(ms, |r| Command::Grant(ask, r))
    }

    /// The ends of `addr`'s elements in the table.
    fn ends(&mut self, addr: &str) -> Vec<UnixMs> {
        let a = ip(addr);
        self.table()
            .elements
            .as_ref()
            .map(|e| {
                e.iter()
                    .filter(|(k, _)| k.addr == a)
                    .map(|(_, end)| *end)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn a_grant_from_a_new_address_replaces_the_holder_s_old_one_in_one_write() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, laptop(), true, None)).unwrap();
    assert_eq!(rig.table().count(ip(A)), 2);
    let (tx0, nft0) = (rig.store().transactions, rig.table().batches);
    let g = rig.owned(MIN, owned(B, laptop(), true, None)).unwrap();
    assert_eq!(g.grant.address, ip(B));
    assert_eq!(g.grant.who, "knock:laptop");
    assert_eq!(rig.store().grants.len(), 1, "A's row is gone");
    assert_eq!(rig.live_grants(MIN, B), 1);
    assert!(!rig.table().has(ip(A)), "A's elements are gone");
    assert_eq!(rig.table().count(ip(B)), 2);
    assert_eq!(rig.store().transactions - tx0, 1, "one store transaction");
    assert_eq!(rig.table().batches - nft0, 1, "one nft batch");
}

#[test]
fn an_owner_that_keeps_several_keeps_every_address() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, alice(), false, None)).unwrap();
    rig.owned(MIN, owned(B, alice(), false, None)).unwrap();
    assert_eq!(rig.store().grants.len(), 2);
    assert!(rig.table().has(ip(A)) && rig.table().has(ip(B)));
    // One that replaces, later, ends both others.
    rig.owned(2 * MIN, owned("203.0.113.99", alice(), true, None))
        .unwrap();
    assert_eq!(rig.store().grants.len(), 1);
    assert!(!rig.table().has(ip(A)) && !rig.table().has(ip(B)));
}

#[test]
fn a_grant_from_the_same_address_extends_the_row_and_refreshes_its_elements() {
    let mut rig = Rig::new();
    let first = rig.owned(0, owned(A, laptop(), true, Some("1h"))).unwrap().grant;
    assert_eq!(rig.ends(A), [W0 + HOUR, W0 + HOUR]);
    let again = rig
        .owned(30 * MIN, owned(A, laptop(), true, Some("1h")))
        .unwrap()
        .grant;
    assert_eq!(again.id, first.id, "the same row");
    assert_eq!(again.created, first.created);
    assert_eq!(again.expires, W0 + 30 * MIN + HOUR, "a later expiry");
    assert_eq!(rig.store().grants.len(), 1);
    assert_eq!(
        rig.ends(A),
        [W0 + 30 * MIN + HOUR; 2],
        "element timeouts refreshed"
    );
    // A shorter TTL never shortens it.
    let short = rig
        .owned(31 * MIN, owned(A, laptop(), true, Some("5m")))
        .unwrap()
        .grant;
    assert_eq!(short.expires, W0 + 30 * MIN + HOUR);
    // It ends at the extended time, not the first one.
    rig.wake(HOUR + MIN);
    assert_eq!(rig.live_grants(HOUR + MIN, A), 1);
    rig.wake(90 * MIN);
    assert!(rig.store().grants.is_empty());
    assert!(!rig.table().has(ip(A)));
}

#[test]
fn an_extension_that_opens_fewer_services_takes_the_others_out() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, laptop(), true, None)).unwrap();
    let fewer = GrantAsk {
        services: Services::from_names(&["sip".to_string()]),
        ..owned(A, laptop(), true, None)
    };
    rig.owned(MIN, fewer).unwrap();
    assert_eq!(rig.store().grants.len(), 1);
    assert_eq!(rig.table().count(ip(A)), 1, "rtp went");
}

#[test]
fn within_one_batch_the_later_address_wins() {
    for (first, second) in [(A, B), (B, A)] {
        let mut rig = Rig::new();
        let (j1, r1) = job(|r| Command::Grant(owned(first, laptop(), true, None), r));
        let (j2, r2) = job(|r| Command::Grant(owned(second, laptop(), true, None), r));
        let (j3, r3) = job(|r| Command::Grant(owned(first, alice(), true, None), r));
        rig.batch(SEC, vec![j1, j2, j3]);
        let e = answer(r1).unwrap_err();
        assert!(e.0.contains(&format!("from {second} in the same batch")), "{e}");
        assert_eq!(answer(r2).unwrap().grant.address, ip(second));
        assert!(answer(r3).is_ok(), "another holder is not touched");
        let laptops: Vec<IpAddr> = rig
            .store()
            .grants
            .iter()
            .filter(|g| g.who == "knock:laptop")
            .map(|g| g.address)
            .collect();
        assert_eq!(laptops, [ip(second)]);
        assert_eq!(rig.store().grants.len(), 2);
        assert_eq!(rig.table().count(ip(second)), 2);
    }
}

#[test]
fn two_asks_from_the_same_address_in_one_batch_make_one_row() {
    let mut rig = Rig::new();
    let (j1, r1) = job(|r| Command::Grant(owned(A, laptop(), true, Some("1h")), r));
    let (j2, r2) = job(|r| Command::Grant(owned(A, laptop(), true, Some("2h")), r));
    rig.batch(SEC, vec![j1, j2]);
    let (g1, g2) = (answer(r1).unwrap().grant, answer(r2).unwrap().grant);
    assert_eq!(g1, g2);
    assert_eq!(g1.expires, W0 + SEC + 2 * HOUR);
    assert_eq!(rig.store().grants.len(), 1);
}

#[test]
fn an_extension_then_a_replacement_in_one_batch_leaves_only_the_new_address() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, laptop(), true, None)).unwrap();
    let (j1, r1) = job(|r| Command::Grant(owned(A, laptop(), true, None), r));
    let (j2, r2) = job(|r| Command::Grant(owned(B, laptop(), true, None), r));
    rig.batch(MIN, vec![j1, j2]);
    assert!(answer(r1).is_err(), "its grant was replaced at once");
    assert!(answer(r2).is_ok());
    assert_eq!(rig.store().grants.len(), 1);
    assert!(!rig.table().has(ip(A)));
    assert!(rig.table().has(ip(B)));
}

#[test]
fn admin_grants_neither_replace_nor_are_replaced_nor_extend() {
    let mut rig = Rig::new();
    rig.grant(0, A, None).unwrap();
    rig.grant(0, A, None).unwrap();
    assert_eq!(rig.store().grants.len(), 2, "an admin grant adds a row, as ever");
    // An owned grant at the same address is a row of its own; one elsewhere leaves A's alone.
    rig.owned(MIN, owned(A, laptop(), true, None)).unwrap();
    assert_eq!(rig.store().grants.len(), 3);
    rig.owned(2 * MIN, owned(B, laptop(), true, None)).unwrap();
    assert_eq!(rig.live_grants(2 * MIN, A), 2, "the admin's grants stay");
    assert_eq!(rig.live_grants(2 * MIN, B), 1);
    assert_eq!(rig.table().count(ip(A)), 1, "sip by the admin's grants; rtp went");
}

#[test]
fn a_replacement_while_nft_fails_leaves_the_store_right_and_the_retry_fixes_the_table() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, laptop(), true, None)).unwrap();
    rig.table().fail = true;
    let g = rig.owned(MIN, owned(B, laptop(), true, None)).unwrap();
    assert!(g.firewall.error.is_some());
    assert_eq!(rig.store().grants.len(), 1);
    assert_eq!(rig.store().grants[0].address, ip(B));
    assert!(
        rig.table().has(ip(A)) && !rig.table().has(ip(B)),
        "not applied yet"
    );
    rig.table().fail = false;
    rig.wake(MIN + SEC);
    assert!(!rig.table().has(ip(A)), "the retry took A out");
    assert_eq!(rig.table().count(ip(B)), 2, "and put B in");
}

#[test]
fn a_hold_counts_when_a_held_grant_is_extended() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, alice(), true, Some("1h"))).unwrap();
    rig.one(MIN, |r| Command::Hold(ip(A), W0 + 3 * HOUR, r)).unwrap();
    let g = rig
        .owned(2 * MIN, owned(A, alice(), true, Some("1h")))
        .unwrap()
        .grant;
    assert_eq!(g.expires, W0 + 2 * MIN + HOUR);
    assert_eq!(
        g.end(),
        W0 + 2 * HOUR,
        "the hold, capped at hold-max past the first expiry"
    );
}

#[test]
fn a_dual_stack_pair_spares_its_twin_and_replaces_the_rest_in_a_batch_or_apart() {
    const V6: &str = "2001:db8:113::10";
    const V6_NEW: &str = "2001:db8:113::99";
    let pair = |v4: &'static str, v6: &'static str| {
        let (j1, r1) = job(move |r| Command::GrantBeside(owned(v4, laptop(), true, None), ip(v6), r));
        let (j2, r2) = job(move |r| Command::GrantBeside(owned(v6, laptop(), true, None), ip(v4), r));
        (j1, r1, j2, r2)
    };
    let mut rig = Rig::new();
    let (j1, r1, j2, r2) = pair(A, V6);
    rig.batch(SEC, vec![j1, j2]);
    assert!(answer(r1).is_ok() && answer(r2).is_ok());
    assert_eq!(rig.store().grants.len(), 2, "both halves stand");
    let ids: Vec<_> = rig.store().grants.iter().map(|g| g.id).collect();
    // The same pair again, in two batches: both rows extended in place.
    let (j1, r1, j2, r2) = pair(A, V6);
    rig.batch(2 * SEC, vec![j1]);
    rig.batch(2 * SEC, vec![j2]);
    assert!(answer(r1).is_ok() && answer(r2).is_ok());
    let again: Vec<_> = rig.store().grants.iter().map(|g| g.id).collect();
    assert_eq!(ids, again, "one row each, extended");
    // The laptop moves: a new pair replaces both old halves.
    let (j1, r1, j2, r2) = pair(B, V6_NEW);
    rig.batch(3 * SEC, vec![j1, j2]);
    assert!(answer(r1).is_ok() && answer(r2).is_ok());
    let mut now: Vec<IpAddr> = rig.store().grants.iter().map(|g| g.address).collect();
    now.sort();
    assert_eq!(now, [ip(B), ip(V6_NEW)]);
    assert!(!rig.table().has(ip(A)) && !rig.table().has(ip(V6)));
}

/// The table is opened before the store writes; when the store then refuses, the table is put
/// back as the store has it: the new address closed, the replaced grant's elements back, an
/// extension's longer end undone.
#[test]
fn a_write_the_store_refuses_is_taken_back_out_of_the_table() {
    let mut rig = Rig::new();
    rig.owned(0, owned(A, laptop(), true, None)).unwrap();
    let before = rig.ends(A);
    rig.engine.store.down = true;
    let nft0 = rig.table().batches;
    let e = refused(rig.owned(MIN, owned(B, laptop(), true, None)));
    assert!(e.contains("told to be"), "{e}");
    assert_eq!(rig.table().batches - nft0, 2, "opened, then taken back");
    assert!(!rig.table().has(ip(B)), "B closed again");
    assert_eq!(rig.ends(A), before, "A's elements back as they were");
    // An extension from the same address: its longer end is undone too.
    let e = refused(rig.owned(MIN, owned(A, laptop(), true, Some("3h"))));
    assert!(e.contains("told to be"), "{e}");
    assert_eq!(rig.ends(A), before);
    rig.engine.store.down = false;
    rig.owned(2 * MIN, owned(B, laptop(), true, None)).unwrap();
    assert!(rig.table().has(ip(B)) && !rig.table().has(ip(A)));
}
