//! The gate's unit tests: each mode's packets, replays, forgeries and dual stack, in memory.

use super::*;
use crate::packet::{build, parse, TCP_ACK, TCP_SYN};
use crate::profile::{RotatingSequence, SinglePacket, StaticSequence};
use crate::spa::Spa;
use crate::{KnockSecret, Port, PortRange};

const T0: i64 = 1_800_000_000_000;

fn src(i: u8) -> IpAddr {
    IpAddr::from([203, 0, 113, i])
}

fn pbx() -> IpAddr {
    IpAddr::from([198, 51, 100, 1])
}

fn knock(g: &mut Gate, from: IpAddr, p: Port, now: i64) -> Option<KnockOutcome> {
    let pkt = match p.proto {
        Proto::Tcp => build::tcp(from, pbx(), 40000, p.port, TCP_SYN, 1),
        Proto::Udp => build::udp(from, pbx(), 40000, p.port, &[]),
    };
    g.on_packet(&parse(&pkt).unwrap(), now)
}

fn spa_packet(g: &mut Gate, from: IpAddr, bytes: &[u8], now: i64) -> Option<KnockOutcome> {
    let pkt = build::udp(from, pbx(), 40000, 62201, bytes);
    g.on_packet(&parse(&pkt).unwrap(), now)
}

fn rotating_secret() -> KnockSecret {
    KnockSecret::from_bytes(&[5u8; 32])
}

fn spa_secret() -> KnockSecret {
    KnockSecret::from_bytes(&[6u8; 32])
}

fn rot() -> RotatingSequence {
    RotatingSequence {
        secret: rotating_secret(),
        range: "udp/40000-40999".parse::<PortRange>().unwrap(),
        length: 4,
        step: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    }
}

fn gate() -> Gate {
    Gate::new(
        vec![
            Profile {
                name: "laptop".into(),
                kind: ProfileKind::Static(StaticSequence {
                    ports: vec![Port::tcp(7000), Port::udp(8000), Port::tcp(9000)],
                    timeout: Duration::from_secs(10),
                }),
            },
            Profile {
                name: "phone".into(),
                kind: ProfileKind::Rotating(rot()),
            },
            Profile {
                name: "spa".into(),
                kind: ProfileKind::Spa(SinglePacket {
                    secret: spa_secret(),
                    port: 62201,
                    max_age: Duration::from_secs(60),
                    allow_address: false,
                    dual_stack: true,
                }),
            },
        ],
        100,
        100,
    )
    .unwrap()
}

fn granted(o: Option<KnockOutcome>) -> Option<IpAddr> {
    match o {
        Some(KnockOutcome::Grant { address, .. }) => Some(address),
        _ => None,
    }
}

#[test]
fn static_sequence_grants_the_source_and_ignores_non_syn() {
    let mut g = gate();
    assert!(knock(&mut g, src(1), Port::tcp(7000), T0).is_none());
    // An ACK to the next port neither advances nor cancels.
    let ack = build::tcp(src(1), pbx(), 40000, 8000, TCP_ACK, 1);
    assert!(g.on_packet(&parse(&ack).unwrap(), T0 + 1).is_none());
    let ack = build::tcp(src(1), pbx(), 40000, 9000, TCP_ACK, 1);
    assert!(g.on_packet(&parse(&ack).unwrap(), T0 + 1).is_none());
    assert!(knock(&mut g, src(1), Port::udp(8000), T0 + 2).is_none());
    assert_eq!(
        granted(knock(&mut g, src(1), Port::tcp(9000), T0 + 3)),
        Some(src(1))
    );
    assert_eq!(g.stats().not_syn, 2);
}

#[test]
fn rotating_current_and_previous_step_once_each() {
    let mut g = gate();
    let r = rot();
    let step = rotating::step_at(T0, r.step);
    let seq = |n| rotating::sequence(&r.secret, r.range, r.length, n);
    let send = |g: &mut Gate, from, ports: &[Port], at| {
        let mut last = None;
        for (j, p) in ports.iter().enumerate() {
            last = knock(g, from, *p, at + j as i64);
        }
        last
    };
    assert!(
        granted(send(&mut g, src(1), &seq(step), T0)).is_some(),
        "current step"
    );
    assert!(
        matches!(
            send(&mut g, src(2), &seq(step), T0 + 100),
            Some(KnockOutcome::Refused {
                reason: Refusal::Replayed,
                ..
            })
        ),
        "the same step again, from anywhere, is a replay"
    );
    assert!(
        granted(send(&mut g, src(1), &seq(step - 1), T0 + 200)).is_some(),
        "previous step"
    );
    assert!(
        send(&mut g, src(1), &seq(step - 2), T0 + 300).is_none(),
        "two steps back"
    );
    assert!(
        send(&mut g, src(1), &seq(step + 1), T0 + 400).is_none(),
        "the future"
    );
    // Once the next step begins, the old current step is the previous: still once only.
    let later = rotating::step_start(step + 1, r.step) + 5;
    assert!(matches!(
        send(&mut g, src(3), &seq(step), later),
        Some(KnockOutcome::Refused {
            reason: Refusal::Replayed,
            ..
        })
    ));
    assert!(granted(send(&mut g, src(3), &seq(step + 1), later + 10)).is_some());
}

#[test]
fn rotating_replay_entries_survive_a_restart() {
    let mut g = gate();
    let r = rot();
    let step = rotating::step_at(T0, r.step);
    let mut mark = None;
    for (j, p) in rotating::sequence(&r.secret, r.range, r.length, step)
        .iter()
        .enumerate()
    {
        if let Some(KnockOutcome::Grant { mark: m, .. }) = knock(&mut g, src(1), *p, T0 + j as i64) {
            mark = m;
        }
    }
    let mark = mark.expect("a rotating grant carries its replay mark");
    let mut fresh = gate();
    fresh.remember(&mark, T0 + 10);
    let mut last = None;
    for (j, p) in rotating::sequence(&r.secret, r.range, r.length, step)
        .iter()
        .enumerate()
    {
        last = knock(&mut fresh, src(1), *p, T0 + 20 + j as i64);
    }
    assert!(matches!(
        last,
        Some(KnockOutcome::Refused {
            reason: Refusal::Replayed,
            ..
        })
    ));
}

#[test]
fn spa_grants_once_and_refuses_replayed_forged_aged_truncated() {
    let mut g = gate();
    let key = SpaKey::derive(&spa_secret());
    let now_s = (T0 / 1000) as u64;
    let good = spa::seal(&key, &Spa::new(&key, now_s, Requested::Source).unwrap());
    assert_eq!(granted(spa_packet(&mut g, src(1), &good, T0)), Some(src(1)));
    assert!(matches!(
        spa_packet(&mut g, src(1), &good, T0 + 5),
        Some(KnockOutcome::Refused {
            reason: Refusal::Replayed,
            ..
        })
    ));
    assert!(matches!(
        spa_packet(&mut g, src(2), &good, T0 + 5),
        Some(KnockOutcome::Refused {
            reason: Refusal::Replayed,
            ..
        })
    ));
    // Forged: right key id, wrong MAC key.
    let mut forged = good;
    forged[16] ^= 1;
    assert!(spa_packet(&mut g, src(1), &forged, T0).is_none());
    let other = SpaKey::derive(&KnockSecret::from_bytes(&[1u8; 32]));
    let wrong_key = spa::seal(&other, &Spa::new(&other, now_s, Requested::Source).unwrap());
    assert!(spa_packet(&mut g, src(1), &wrong_key, T0).is_none());
    let aged = spa::seal(&key, &Spa::new(&key, now_s - 600, Requested::Source).unwrap());
    assert!(matches!(
        spa_packet(&mut g, src(1), &aged, T0),
        Some(KnockOutcome::Refused {
            reason: Refusal::Aged(_),
            ..
        })
    ));
    let fresh = spa::seal(&key, &Spa::new(&key, now_s, Requested::Source).unwrap());
    for n in [0, 1, 47, 48, 79] {
        assert!(
            spa_packet(&mut g, src(1), &fresh[..n], T0).is_none(),
            "truncated to {n}"
        );
    }
    let mut long = fresh.to_vec();
    long.push(0);
    assert!(spa_packet(&mut g, src(1), &long, T0).is_none());
    // The untouched packet still works: nothing above used its nonce.
    assert!(granted(spa_packet(&mut g, src(1), &fresh, T0)).is_some());
    // Another address only when the profile allows it.
    let other_addr = spa::seal(
        &key,
        &Spa::new(&key, now_s, Requested::Address("198.51.100.99".parse().unwrap())).unwrap(),
    );
    assert!(matches!(
        spa_packet(&mut g, src(1), &other_addr, T0),
        Some(KnockOutcome::Refused {
            reason: Refusal::AddressNotAllowed(_),
            ..
        })
    ));
    let s = g.stats();
    assert_eq!((s.spa_bad_tag, s.spa_unknown_key, s.grants), (1, 1, 2));
    assert!(s.spa_bad_length >= 6);
}

fn spa_gate(dual_stack: bool) -> Gate {
    Gate::new(
        vec![Profile {
            name: "spa".into(),
            kind: ProfileKind::Spa(SinglePacket {
                secret: spa_secret(),
                port: 62201,
                max_age: Duration::from_secs(60),
                allow_address: false,
                dual_stack,
            }),
        }],
        10,
        10,
    )
    .unwrap()
}

#[test]
fn dual_stack_opens_the_source_and_the_carried_address_only_with_consent() {
    let key = SpaKey::derive(&spa_secret());
    let now_s = (T0 / 1000) as u64;
    let v6: IpAddr = "2001:db8:113::10".parse().unwrap();
    let packet = |req, answer| {
        spa::seal(
            &key,
            &Spa {
                answer,
                ..Spa::new(&key, now_s, req).unwrap()
            },
        )
    };
    let mut g = spa_gate(true);
    match spa_packet(&mut g, src(1), &packet(Requested::Also(v6), true), T0) {
        Some(KnockOutcome::Grant {
            address,
            source,
            also,
            answer: Some(a),
            ..
        }) => {
            assert_eq!((address, source, also), (src(1), src(1), Some(v6)));
            assert_eq!(a.to, SocketAddr::new(src(1), 40000), "back to the sender's port");
            assert_eq!(
                a.from,
                SocketAddr::new(pbx(), 62201),
                "from the port it was sent to"
            );
        }
        other => panic!("{other:?}"),
    }
    // The carried address must be of the other family.
    assert!(matches!(
        spa_packet(&mut g, src(1), &packet(Requested::Also(src(9)), false), T0),
        Some(KnockOutcome::Refused {
            reason: Refusal::NotOtherFamily(_),
            ..
        })
    ));
    // Without consent, a packet carrying another address opens nothing, not even its source.
    let mut g = spa_gate(false);
    assert!(matches!(
        spa_packet(&mut g, src(1), &packet(Requested::Also(v6), false), T0),
        Some(KnockOutcome::Refused {
            reason: Refusal::DualStackNotAllowed(a),
            ..
        }) if a == v6
    ));
    assert_eq!(g.stats().grants, 0);
    // A plain packet still opens its source, and asks no answer unless it says so.
    assert!(matches!(
        spa_packet(&mut g, src(1), &packet(Requested::Source, false), T0),
        Some(KnockOutcome::Grant {
            also: None,
            answer: None,
            ..
        })
    ));
}

#[test]
fn same_spa_key_twice_is_refused() {
    let spa = |name: &str, port| Profile {
        name: name.into(),
        kind: ProfileKind::Spa(SinglePacket {
            secret: spa_secret(),
            port,
            max_age: Duration::from_secs(60),
            allow_address: false,
            dual_stack: false,
        }),
    };
    let e = Gate::new(vec![spa("a", 1), spa("b", 2)], 10, 10).unwrap_err();
    assert!(e.contains("a and b"), "{e}");
}
