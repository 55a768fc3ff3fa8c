//! Standing entries' names: an answer that changes within half a period is damped, a failing name keeps its addresses for the grace period and
//! then loses them, and an answer's private addresses are refused.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::super::command::{Actor, Answer, StandingAsk};
use super::super::fakes::{FakeStore, FakeTable};
use super::super::Engine;
use crate::base::clock::Now;
use crate::config::Config;
use crate::model::Source;

const W0: i64 = 1_795_248_830_000;
const SEC: i64 = 1000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn names_are_damped_kept_through_failures_for_the_grace_and_private_answers_refused() {
    let config = Config::parse(
        "[services.sip]\nports = [\"udp/5060\"]\n[standing]\nresolve-every = \"1m\"\ngrace = \"1h\"\n",
        "test",
    )
    .unwrap();
    let store = FakeStore::default();
    let t0 = Instant::now();
    let at = |ms: i64| Now {
        wall: W0 + ms,
        mono: t0 + Duration::from_millis(ms as u64),
    };
    let table = FakeTable::new(&config);
    let mut e = Engine::new(config, store, table, at(0));
    let admin = Actor::new("uid 0", Source::Admin);
    e.standing_add(
        StandingAsk {
            name: "home".into(),
            targets: vec!["phone.example.com".into()],
            services: vec!["sip".into()],
            note: String::new(),
        },
        &admin,
        at(0),
    )
    .unwrap();
    let answer = |e: &mut Engine<FakeStore, FakeTable>, ms: i64, r: Result<Vec<&str>, &str>| {
        let result = r.map(|v| v.into_iter().map(ip).collect()).map_err(str::to_string);
        e.resolved(
            vec![Answer {
                name: "phone.example.com".into(),
                result,
            }],
            at(ms),
        )
        .unwrap();
        e.standing_list(at(ms)).unwrap().names[0].clone()
    };
    let n = answer(&mut e, SEC, Ok(vec!["203.0.113.7"]));
    assert_eq!(
        n.addresses,
        [ip("203.0.113.7")],
        "the first answer is taken at once"
    );
    let n = answer(&mut e, 10 * SEC, Ok(vec!["203.0.113.8"]));
    assert_eq!(
        n.addresses,
        [ip("203.0.113.7")],
        "a change within half a period is damped"
    );
    let n = answer(&mut e, 40 * SEC, Ok(vec!["203.0.113.8", "2001:db8::8"]));
    assert_eq!(n.addresses, [ip("203.0.113.8"), ip("2001:db8::8")]);
    let n = answer(&mut e, 100 * SEC, Err("no such name"));
    assert_eq!(n.addresses.len(), 2, "kept through a failure");
    assert_eq!(n.failing_since, Some(W0 + 100 * SEC));
    let n = answer(&mut e, 100 * SEC + 3_599 * SEC, Err("no such name"));
    assert_eq!(n.addresses.len(), 2, "kept within the grace");
    let n = answer(&mut e, 100 * SEC + 3_600 * SEC, Err("no such name"));
    assert!(n.addresses.is_empty(), "gone after the grace");
    let n = answer(&mut e, 4_000 * SEC, Ok(vec!["10.1.2.3", "203.0.113.9"]));
    assert_eq!(n.addresses, [ip("203.0.113.9")]);
    assert!(n.error.unwrap().contains("10.1.2.3"));
    let n = answer(&mut e, 5_000 * SEC, Ok(vec!["127.0.0.1"]));
    assert_eq!(
        n.addresses,
        [ip("203.0.113.9")],
        "only refused addresses: kept as a failure"
    );
    assert!(n.failing_since.is_some());
}
