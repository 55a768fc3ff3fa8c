//! Which AMI logins earn a grant, what the engine is asked, and the whole path over the
//! engine's in-memory store and table: granted once, left alone while fresh, refused if banned.

use std::time::Duration;

use ami_listener::codec::Message;
use ami_listener::event::Event;

use super::*;
use crate::base::clock::Now;
use crate::engine::command::Command;
use crate::engine::fakes::{FakeStore, FakeTable};
use crate::engine::{channel, BanAsk, Engine};

const CONFIG: &str = r#"
[services.sip]
ports = ["udp/5060"]
[services.rtp]
ports = ["udp/10000-20000"]
[firewall]
trusted = ["192.0.2.0/24"]
[ami]
enabled = true
secret-file = "/nonexistent"
[sip-auth-grant]
endpoints = ["701", "702"]
services = ["rtp"]
ttl = "2h"
"#;

fn config() -> Config {
    Config::parse(CONFIG, "t").unwrap()
}

fn grants() -> AuthGrants {
    AuthGrants::from_config(&config()).expect("on")
}

/// A security event as Asterisk 22 sends it, typed by the listener's own parser.
fn event(pairs: &[(&str, &str)]) -> Result<Security, String> {
    let msg = Message {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    match Event::parse(&msg) {
        Ok(Event::Security(s)) => Ok(s),
        Ok(other) => Err(format!("not a security event: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn login(service: &str, account: &str, remote: &str) -> Security {
    event(&[
        ("Event", "SuccessfulAuth"),
        ("Privilege", "security,all"),
        ("Severity", "Informational"),
        ("Service", service),
        ("EventVersion", "1"),
        ("AccountID", account),
        ("SessionID", "0x7f0c"),
        ("LocalAddress", "IPV4/UDP/203.0.113.1/5060"),
        ("RemoteAddress", remote),
        ("UsingPassword", "1"),
    ])
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn off_unless_endpoints_are_listed() {
    let off = Config::parse(
        &CONFIG.replace("endpoints = [\"701\", \"702\"]", "endpoints = []"),
        "t",
    );
    assert!(AuthGrants::from_config(&off.unwrap()).is_none());
    assert!(AuthGrants::from_config(&config()).is_some());
}

#[test]
fn a_listed_endpoint_s_login_from_a_usable_address_earns_a_grant() {
    let g = grants();
    let grant = |ep: &str, a: &str| Verdict::Grant {
        endpoint: ep.into(),
        address: ip(a),
    };
    assert_eq!(
        g.judge(&login("PJSIP", "701", "IPV4/UDP/203.0.113.5/5060")),
        grant("701", "203.0.113.5")
    );
    assert_eq!(
        g.judge(&login("pjsip", "702", "IPV6/UDP/2001:db8::5/5062")),
        grant("702", "2001:db8::5")
    );
    assert_eq!(
        g.judge(&login("PJSIP", "701", "IPV6/UDP/::ffff:203.0.113.5/5060")),
        grant("701", "203.0.113.5"),
        "a mapped address is its IPv4 one"
    );
    assert_eq!(
        g.judge(&login("PJSIP", "701", "IPV4/TCP/198.51.100.7/40312")),
        grant("701", "198.51.100.7")
    );
}

#[test]
fn other_logins_pass_and_broken_ones_are_refused() {
    let g = grants();
    let pass = |s: Security| matches!(g.judge(&s), Verdict::Pass(_));
    let refuse = |s: Security| matches!(g.judge(&s), Verdict::Refuse(_));
    // Another phone on the PBX, a manager login with a listed name, a trusted address.
    assert!(pass(login("PJSIP", "703", "IPV4/UDP/203.0.113.5/5060")));
    assert!(pass(login("PJSIP", "70", "IPV4/UDP/203.0.113.5/5060")));
    assert!(pass(login("AMI", "701", "IPV4/TCP/203.0.113.5/5038")));
    assert!(pass(login("PJSIP", "701", "IPV4/UDP/192.0.2.9/5060")));
    // A failure is the ban policy's, never a grant.
    let mut failed = login("PJSIP", "701", "IPV4/UDP/203.0.113.5/5060");
    failed.kind = SecurityKind::ChallengeResponseFailed;
    assert!(pass(failed));
    // Addresses no grant may hold, and events missing what a grant needs.
    for remote in [
        "IPV4/UDP/0.0.0.0/5060",
        "IPV4/UDP/127.0.0.1/5060",
        "IPV4/UDP/224.0.0.1/5060",
        "IPV4/UDP/255.255.255.255/5060",
        "IPV6/UDP/::/5060",
        "IPV6/UDP/::1/5060",
        "IPV6/UDP/ff02::1/5060",
    ] {
        assert!(refuse(login("PJSIP", "701", remote)), "{remote}");
    }
    assert!(refuse(login("PJSIP", "", "IPV4/UDP/203.0.113.5/5060")));
    assert!(refuse(login("PJSIP", "  ", "IPV4/UDP/203.0.113.5/5060")));
    let no_address = event(&[
        ("Event", "SuccessfulAuth"),
        ("Service", "PJSIP"),
        ("AccountID", "701"),
    ])
    .unwrap();
    assert!(refuse(no_address));
    // A garbage address never becomes an event at all: the listener reports it malformed.
    for garbage in [
        "IPV4/UDP/203.0.113/5060",
        "IPV4/UDP/2001:db8::5/5060",
        "IPV4/UDP/phone.example/5060",
        "IPV4/UDP/203.0.113.5/99999",
        "203.0.113.5",
        "",
    ] {
        let e = event(&[
            ("Event", "SuccessfulAuth"),
            ("Service", "PJSIP"),
            ("AccountID", "701"),
            ("RemoteAddress", garbage),
        ]);
        assert!(e.unwrap_err().contains("RemoteAddress"), "{garbage}");
    }
}

#[test]
fn the_ask_names_the_endpoint_and_the_section_s_services_and_ttl() {
    let (actor, ask) = grants().ask("701", ip("203.0.113.5"));
    assert_eq!(actor, Actor::new("sip-auth:701", Source::Ami));
    assert_eq!(ask.address, ip("203.0.113.5"));
    assert_eq!(ask.services, Services::Named(vec!["rtp".into()]));
    assert_eq!(ask.ttl, Some("2h".parse().unwrap()));
    let owner = ask.owner.unwrap();
    assert_eq!(owner.holder, Holder::Endpoint("701".into()));
    assert!(!owner.replace);
}

#[tokio::test]
async fn only_grant_verdicts_reach_the_engine_once_while_pending() {
    let (engine, inbox) = channel(16);
    let mut g = grants();
    let phone = login("PJSIP", "701", "IPV4/UDP/203.0.113.5/5060");
    for s in [
        login("PJSIP", "703", "IPV4/UDP/203.0.113.5/5060"),
        login("AMI", "701", "IPV4/TCP/203.0.113.5/5038"),
        login("PJSIP", "701", "IPV4/UDP/127.0.0.1/5060"),
        phone.clone(),
        // A phone logs in again before the first is answered: one ask.
        phone.clone(),
    ] {
        g.on_event(&s, &engine);
    }
    let job = tokio::task::spawn_blocking(move || {
        let job = inbox.0.recv_timeout(Duration::from_secs(5)).expect("one ask");
        assert!(
            inbox.0.recv_timeout(Duration::from_millis(200)).is_err(),
            "only one"
        );
        job
    })
    .await
    .unwrap();
    assert_eq!(job.actor.who, "sip-auth:701");
    let Command::GrantOnAuth(ask, _) = job.command else {
        panic!("not a login grant")
    };
    assert_eq!(ask.address, ip("203.0.113.5"));
    assert_eq!(g.refusals, 1, "the loopback login is refused");
}

/// The real engine over its in-memory store and table, on its own thread.
fn engine() -> EngineHandle {
    let config = config();
    let table = FakeTable::new(&config);
    let now = Now::read();
    let mut engine = Engine::new(config, FakeStore::default(), table, now);
    engine.start(now);
    let (handle, inbox) = channel(64);
    std::thread::spawn(move || engine.run(inbox));
    handle
}

#[tokio::test]
async fn a_login_grants_then_is_fresh_and_a_banned_address_gets_nothing() {
    let engine = engine();
    let g = grants();
    let Verdict::Grant { endpoint, address } = g.judge(&login("PJSIP", "701", "IPV4/UDP/203.0.113.5/5060"))
    else {
        panic!()
    };
    let (actor, ask) = g.ask(&endpoint, address);
    let first = engine.grant_on_auth(&actor, ask.clone()).await.unwrap();
    let AuthGranted::Granted(granted) = first else {
        panic!("{first:?}")
    };
    assert_eq!(granted.grant.who, "sip-auth:701");
    assert_eq!(granted.grant.services, ["rtp"]);
    // The REGISTER refresh a minute later: nothing to write.
    let again = engine.grant_on_auth(&actor, ask).await.unwrap();
    assert!(
        matches!(again, AuthGranted::Fresh(ref f) if f.id == granted.grant.id),
        "{again:?}"
    );
    let listed = engine
        .list(&Actor::new("uid 0", Source::Admin), None)
        .await
        .unwrap();
    assert_eq!(listed.grants.len(), 1);
    assert_eq!(listed.grants[0].who, "sip-auth:701");

    // Banned as today for failures; a right password afterwards does not open it.
    let bad = ip("198.51.100.66");
    engine
        .ban(
            &Actor::new("ami", Source::Ami),
            BanAsk {
                address: bad,
                ttl: None,
                reason: "AMI: ChallengeResponseFailed".into(),
            },
        )
        .await
        .unwrap();
    let (actor, ask) = g.ask("702", bad);
    let e = engine.grant_on_auth(&actor, ask).await.unwrap_err();
    assert!(e.0.contains("the ban wins"), "{e}");
    let listed = engine
        .list(&Actor::new("uid 0", Source::Admin), None)
        .await
        .unwrap();
    assert!(listed.grants.iter().all(|g| g.address != bad));
}
