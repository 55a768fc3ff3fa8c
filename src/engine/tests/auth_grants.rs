//! Grants a successful SIP login earned: granted once, left alone while more than half the TTL
//! is left (no write at all), extended in place after; refused while the address is banned.

use super::*;

const PHONE: &str = "203.0.113.5";

fn earned(address: &str, endpoint: &str, services: &[&str]) -> GrantAsk {
    GrantAsk {
        note: format!("endpoint {endpoint} authenticated"),
        owner: Some(Owner {
            holder: Holder::Endpoint(endpoint.into()),
            replace: false,
        }),
        ..grant_ask(address, services, Some("2h"))
    }
}

impl Rig {
    fn on_auth(&mut self, ms: i64, ask: GrantAsk) -> Result<AuthGranted, Refused> {
        self.one(ms, |r| Command::GrantOnAuth(ask, r))
    }

    /// Store transactions and nft batches so far.
    fn writes(&mut self) -> (usize, usize) {
        (self.store().transactions, self.table().batches)
    }
}

fn granted(a: Result<AuthGranted, Refused>) -> Granted {
    match a {
        Ok(AuthGranted::Granted(g)) => g,
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn a_login_grants_then_refreshes_only_past_half_its_ttl() {
    let mut rig = Rig::new();
    let g = granted(rig.on_auth(0, earned(PHONE, "701", &["sip", "rtp"])));
    assert_eq!(g.grant.who, "sip-auth:701");
    assert_eq!(g.grant.source, Source::Ami);
    assert_eq!(g.grant.services, ["sip", "rtp"]);
    assert_eq!(g.grant.expires, W0 + 2 * HOUR);
    assert_eq!(g.warning, None);
    assert_eq!(rig.table().count(ip(PHONE)), 2);

    // Every REGISTER refresh and INVITE logs in again: while more than an hour is left, nothing
    // is written, to the store or to the table.
    let before = rig.writes();
    for ms in [SEC, 10 * MIN, HOUR - SEC] {
        match rig.on_auth(ms, earned(PHONE, "701", &["rtp", "sip"])) {
            Ok(AuthGranted::Fresh(f)) => assert_eq!(f.id, g.grant.id),
            other => panic!("at {ms} ms: {other:?}"),
        }
    }
    assert_eq!(rig.writes(), before, "no write while the grant is fresh");

    // Past half its TTL the same grant is extended in place: one row, one write.
    let e = granted(rig.on_auth(HOUR + SEC, earned(PHONE, "701", &["sip", "rtp"])));
    assert_eq!(e.grant.id, g.grant.id);
    assert_eq!(e.grant.expires, W0 + HOUR + SEC + 2 * HOUR);
    assert_eq!(rig.store().grants.len(), 1);
    assert_eq!(rig.store().transactions - before.0, 1);
}

#[test]
fn fresh_is_per_endpoint_and_per_services() {
    let mut rig = Rig::new();
    granted(rig.on_auth(0, earned(PHONE, "701", &["rtp"])));
    // Another endpoint behind the same address (one NAT, two phones) has a grant of its own.
    let other = granted(rig.on_auth(SEC, earned(PHONE, "702", &["rtp"])));
    assert_eq!(other.grant.who, "sip-auth:702");
    assert_eq!(rig.live_grants(SEC, PHONE), 2);
    // An admin's grant at the address is not the endpoint's.
    rig.grant(2 * SEC, "198.51.100.9", None).unwrap();
    granted(rig.on_auth(3 * SEC, earned("198.51.100.9", "701", &["rtp"])));
    // The config now asks for more: the grant is written again, not taken as fresh.
    let more = granted(rig.on_auth(4 * SEC, earned(PHONE, "701", &["sip", "rtp"])));
    assert_eq!(more.grant.services, ["sip", "rtp"]);
    assert_eq!(rig.live_grants(4 * SEC, PHONE), 2, "extended in place, not added");
}

#[test]
fn a_banned_address_is_not_granted_and_the_ban_says_so() {
    let mut rig = Rig::new();
    rig.one(0, |r| Command::Ban(ban_ask(PHONE, Some("30m")), r))
        .unwrap();
    let before = rig.writes();
    let e = refused(rig.on_auth(SEC, earned(PHONE, "701", &["sip"])).map(|_| ()));
    assert!(
        e.contains("is banned for another 29m") && e.contains("the ban wins"),
        "{e}"
    );
    assert_eq!(rig.store().grants.len(), 0);
    assert_eq!(rig.writes(), before, "nothing written");

    // A ban queued just before the login in the same batch wins too.
    let other = "198.51.100.20";
    let (b, b_rx) = job(|r| Command::Ban(ban_ask(other, Some("10m")), r));
    let (a, a_rx) = job(|r| Command::GrantOnAuth(earned(other, "701", &["sip"]), r));
    rig.batch(2 * SEC, vec![b, a]);
    answer(b_rx).unwrap();
    assert!(refused(answer(a_rx).map(|_| ())).contains("the ban wins"));

    // Once the ban has ended the same login grants.
    let g = granted(rig.on_auth(31 * MIN, earned(PHONE, "701", &["sip"])));
    assert_eq!(g.grant.address, ip(PHONE));
}

#[test]
fn login_grants_batch_with_other_grants_and_keep_the_grant_checks() {
    let mut rig = Rig::new();
    let before = rig.writes();
    let (a, a_rx) = job(|r| Command::GrantOnAuth(earned(PHONE, "701", &["rtp"]), r));
    let (g, g_rx) = job(|r| Command::Grant(grant_ask("198.51.100.9", &[], None), r));
    let (b, b_rx) = job(|r| Command::GrantOnAuth(earned("198.51.100.10", "702", &["rtp"]), r));
    rig.batch(SEC, vec![a, g, b]);
    granted(answer(a_rx));
    answer(g_rx).unwrap();
    granted(answer(b_rx));
    assert_eq!(rig.store().transactions - before.0, 1, "one store transaction");
    assert_eq!(rig.table().batches - before.1, 1, "one nft batch");
    // What any grant is refused for, a login-earned one is too.
    let e = refused(
        rig.on_auth(2 * SEC, earned("127.0.0.1", "701", &["rtp"]))
            .map(|_| ()),
    );
    assert!(e.contains("127.0.0.1"), "{e}");
    let e = refused(rig.on_auth(2 * SEC, earned(PHONE, "701", &["ssh"])).map(|_| ()));
    assert!(e.contains("unknown service `ssh`"), "{e}");
}
