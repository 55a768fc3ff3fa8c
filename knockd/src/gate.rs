//! The gate: every profile's state machine behind one call — a knock packet and the time in, an
//! outcome (grant, or an authenticated request refused) out. No IO; the NFLOG loop and the tests
//! drive it the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::packet::Knock;
use crate::profile::{Profile, ProfileKind};
use crate::replay::{Remembered, ReplayCache, ReplayMark};
use crate::rotating;
use crate::sequence::{Door, DoorId, Tracker, TrackerStats, DOORS_MAX};
use crate::spa::{self, Age, Requested, SpaError, SpaKey};
use crate::{Mode, Proto};

/// Sources with a sequence in progress, when the config says nothing.
pub const MAX_IN_PROGRESS: usize = 16_384;
/// Live SPA nonces and rotating steps remembered at most.
pub const REPLAY_MAX: usize = 65_536;
/// The most profiles a gate serves (rotating profiles keep three steps' doors each).
pub const PROFILES_MAX: usize = 16;
/// How often timed-out attempts and aged replay entries are dropped.
const SWEEP_MS: i64 = 1000;

/// What the daemon does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnockOutcome {
    /// Open the profile's services to `address`. If `mark` is set, make it durable first: it is
    /// what stops the same knock from working again after a restart.
    Grant {
        profile: String,
        mode: Mode,
        address: IpAddr,
        source: IpAddr,
        /// The sender's address of the other family, carried in an SPA packet of a profile
        /// that consents (`dual-stack`): open it too, once the daemon's own checks pass.
        also: Option<IpAddr>,
        mark: Option<ReplayMark>,
        /// Where and how to answer, when an SPA sender asked for one answer.
        answer: Option<AnswerTo>,
    },
    /// An authenticated knock that must not open anything (worth an audit line; forged and
    /// junk packets are only counted).
    Refused {
        profile: String,
        mode: Mode,
        source: IpAddr,
        reason: Refusal,
    },
}

/// The one answer an accepted SPA packet asked for: sent from the port it was sent to, back to
/// the port it came from, sealed with its profile's key for its nonce.
#[derive(Clone, Debug)]
pub struct AnswerTo {
    pub to: SocketAddr,
    pub from: SocketAddr,
    pub key: SpaKey,
    pub nonce: [u8; 16],
}

impl PartialEq for AnswerTo {
    fn eq(&self, o: &AnswerTo) -> bool {
        (self.to, self.from, self.key.id, self.nonce) == (o.to, o.from, o.key.id, o.nonce)
    }
}

impl Eq for AnswerTo {}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it was used before (a replay)")]
    Replayed,
    #[error("its timestamp is {}s older than the age window allows (clock skew or a replay)", .0.as_secs())]
    Aged(Duration),
    #[error("its timestamp is {}s ahead of this server's clock beyond the age window", .0.as_secs())]
    Future(Duration),
    #[error("it asks for {0}, and this profile opens only the sender's own address")]
    AddressNotAllowed(IpAddr),
    #[error("it carries {0} to open besides its source, and this profile is not dual-stack")]
    DualStackNotAllowed(IpAddr),
    #[error("it carries {0} as the other family's address, and that is the source's family")]
    NotOtherFamily(IpAddr),
    #[error("the replay cache is full of live entries")]
    ReplayCacheFull,
}

/// Counters, for logs and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    pub packets: u64,
    pub not_syn: u64,
    pub spa_bad_length: u64,
    pub spa_bad_version: u64,
    pub spa_unknown_key: u64,
    pub spa_bad_tag: u64,
    pub refused: u64,
    pub grants: u64,
    pub sequences: TrackerStats,
}

#[derive(Debug)]
pub struct Gate {
    profiles: Vec<Profile>,
    doors: Vec<Door>,
    /// Per profile, the rotating step its doors were last built for.
    steps: Vec<Option<u64>>,
    spa_keys: HashMap<u32, (usize, SpaKey)>,
    tracker: Tracker,
    replay: ReplayCache,
    next_sweep: i64,
    stats: GateStats,
}

impl Gate {
    pub fn new(profiles: Vec<Profile>, max_in_progress: usize, replay_max: usize) -> Result<Gate, String> {
        if profiles.len() > PROFILES_MAX {
            return Err(format!("at most {PROFILES_MAX} knock profiles"));
        }
        let mut spa_keys = HashMap::new();
        let mut doors = Vec::new();
        for (i, p) in profiles.iter().enumerate() {
            match &p.kind {
                ProfileKind::Static(s) => doors.push(Door {
                    id: DoorId {
                        profile: i as u16,
                        step: 0,
                    },
                    ports: s.ports.clone(),
                    timeout_ms: s.timeout.as_millis() as i64,
                    opens_until: i64::MAX,
                }),
                ProfileKind::Rotating(_) => {}
                ProfileKind::Spa(s) => {
                    let key = SpaKey::derive(&s.secret);
                    if let Some((j, _)) = spa_keys.insert(key.id, (i, key)) {
                        let other: &Profile = &profiles[j];
                        return Err(format!(
                            "knock profiles {} and {} have the same SPA key id; give each its own secret",
                            other.name, p.name
                        ));
                    }
                }
            }
        }
        if doors.len()
            + 3 * profiles
                .iter()
                .filter(|p| p.kind.mode() == Mode::Rotating)
                .count()
            > DOORS_MAX
        {
            return Err(format!("too many knock sequences (at most {DOORS_MAX} doors)"));
        }
        Ok(Gate {
            steps: vec![None; profiles.len()],
            profiles,
            doors,
            spa_keys,
            tracker: Tracker::new(max_in_progress),
            replay: ReplayCache::new(replay_max),
            next_sweep: 0,
            stats: GateStats::default(),
        })
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    pub fn stats(&self) -> GateStats {
        GateStats {
            sequences: self.tracker.stats,
            ..self.stats
        }
    }

    /// Sources with a sequence in progress.
    pub fn in_progress(&self) -> usize {
        self.tracker.len()
    }

    /// Entries in the replay cache.
    pub fn remembered(&self) -> usize {
        self.replay.len()
    }

    /// Loads a replay entry made durable before a restart.
    pub fn remember(&mut self, mark: &ReplayMark, now: i64) {
        self.replay.remember(&mark.key, mark.until, now);
    }

    /// Time passes: rotating doors move on, timed-out attempts and aged entries go.
    pub fn tick(&mut self, now: i64) {
        self.refresh_doors(now);
        if now >= self.next_sweep {
            self.tracker.sweep(&self.doors, now);
            self.replay.purge(now);
            self.next_sweep = now + SWEEP_MS;
        }
    }

    /// One knock packet at `now` (Unix ms).
    pub fn on_packet(&mut self, k: &Knock<'_>, now: i64) -> Option<KnockOutcome> {
        self.stats.packets += 1;
        self.tick(now);
        if k.port.proto == Proto::Tcp && !k.is_syn() {
            // knockd's rule: other TCP segments neither advance nor cancel a sequence.
            self.stats.not_syn += 1;
            return None;
        }
        let spa_profile = match k.port.proto {
            Proto::Udp => self.spa_profile_on(k.port.port),
            Proto::Tcp => None,
        };
        // Every knock port counts for sequences: junk on an SPA port between a sequence's
        // knocks ends that sequence too (an SPA port is never a sequence's port, so it can
        // neither start nor advance one).
        let door = self.tracker.knock(&self.doors, k.source, k.port, now);
        if let Some(i) = spa_profile {
            return self.on_spa(i, k, now);
        }
        let door = door?;
        let i = door.profile as usize;
        let p = &self.profiles[i];
        let mark = match &p.kind {
            ProfileKind::Rotating(r) => {
                let key = format!("rot:{}:{}", p.name, door.step);
                let until =
                    rotating::step_start(door.step + 2, r.step) + r.timeout.as_millis() as i64 + SWEEP_MS;
                match self.replay.remember(&key, until, now) {
                    Remembered::New => Some(ReplayMark { key, until }),
                    Remembered::Replayed => return self.refuse(i, k.source, Refusal::Replayed),
                    Remembered::Full => return self.refuse(i, k.source, Refusal::ReplayCacheFull),
                }
            }
            _ => None,
        };
        self.grant(i, k.source, k.source, mark)
    }

    fn spa_profile_on(&self, port: u16) -> Option<usize> {
        self.profiles
            .iter()
            .position(|p| matches!(&p.kind, ProfileKind::Spa(s) if s.port == port))
    }

    fn on_spa(&mut self, on_port: usize, k: &Knock<'_>, now: i64) -> Option<KnockOutcome> {
        let id = match spa::key_id(k.payload) {
            Ok(id) => id,
            Err(SpaError::Length) => {
                self.stats.spa_bad_length += 1;
                return None;
            }
            Err(_) => {
                self.stats.spa_bad_version += 1;
                return None;
            }
        };
        let Some((i, key)) = self.spa_keys.get(&id) else {
            self.stats.spa_unknown_key += 1;
            return None;
        };
        let i = *i;
        if i != on_port {
            // Every SPA profile listens on its own port; a key for another port is unknown here.
            self.stats.spa_unknown_key += 1;
            return None;
        }
        let Ok(spa) = spa::open(key, k.payload) else {
            self.stats.spa_bad_tag += 1;
            return None;
        };
        // Authenticated from here on: a refusal is worth telling.
        let ProfileKind::Spa(profile) = &self.profiles[i].kind else {
            unreachable!("SPA keys come from SPA profiles")
        };
        let (max_age, allow_address, dual_stack) =
            (profile.max_age, profile.allow_address, profile.dual_stack);
        match spa::age(spa.timestamp, now, max_age) {
            Age::Fresh => {}
            Age::Aged(by) => return self.refuse(i, k.source, Refusal::Aged(by)),
            Age::Future(by) => return self.refuse(i, k.source, Refusal::Future(by)),
        }
        // An address the packet carries is honoured only with the profile's consent; without
        // it the whole packet is refused, so a forged field opens nothing at all.
        let (address, also) = match spa.requested {
            Requested::Source => (k.source, None),
            Requested::Address(a) if a == k.source || allow_address => (a, None),
            Requested::Address(a) => return self.refuse(i, k.source, Refusal::AddressNotAllowed(a)),
            Requested::Also(a) if !dual_stack => {
                return self.refuse(i, k.source, Refusal::DualStackNotAllowed(a))
            }
            Requested::Also(a) if a.is_ipv4() == k.source.is_ipv4() => {
                return self.refuse(i, k.source, Refusal::NotOtherFamily(a))
            }
            Requested::Also(a) => (k.source, Some(a)),
        };
        let key = spa.replay_key();
        let until = spa::remember_until(spa.timestamp, max_age);
        match self.replay.remember(&key, until, now) {
            Remembered::New => {
                let answer = spa.answer.then(|| AnswerTo {
                    to: SocketAddr::new(k.source, k.source_port),
                    from: SocketAddr::new(k.dest, k.port.port),
                    key: self.spa_keys[&id].1.clone(),
                    nonce: spa.nonce,
                });
                let mark = Some(ReplayMark { key, until });
                self.stats.grants += 1;
                let p = &self.profiles[i];
                Some(KnockOutcome::Grant {
                    profile: p.name.clone(),
                    mode: p.kind.mode(),
                    address,
                    source: k.source,
                    also,
                    mark,
                    answer,
                })
            }
            Remembered::Replayed => self.refuse(i, k.source, Refusal::Replayed),
            Remembered::Full => self.refuse(i, k.source, Refusal::ReplayCacheFull),
        }
    }

    fn grant(
        &mut self,
        i: usize,
        address: IpAddr,
        source: IpAddr,
        mark: Option<ReplayMark>,
    ) -> Option<KnockOutcome> {
        self.stats.grants += 1;
        let p = &self.profiles[i];
        Some(KnockOutcome::Grant {
            profile: p.name.clone(),
            mode: p.kind.mode(),
            address,
            source,
            also: None,
            mark,
            answer: None,
        })
    }

    fn refuse(&mut self, i: usize, source: IpAddr, reason: Refusal) -> Option<KnockOutcome> {
        self.stats.refused += 1;
        let p = &self.profiles[i];
        Some(KnockOutcome::Refused {
            profile: p.name.clone(),
            mode: p.kind.mode(),
            source,
            reason,
        })
    }

    /// Keeps, for each rotating profile, doors for the current and previous steps (which may
    /// start) and the one before (whose attempts may still finish).
    fn refresh_doors(&mut self, now: i64) {
        for (i, p) in self.profiles.iter().enumerate() {
            let ProfileKind::Rotating(r) = &p.kind else {
                continue;
            };
            let cur = rotating::step_at(now, r.step);
            if self.steps[i] == Some(cur) {
                continue;
            }
            self.steps[i] = Some(cur);
            self.doors.retain(|d| d.id.profile as usize != i);
            for s in cur.saturating_sub(2)..=cur {
                self.doors.push(Door {
                    id: DoorId {
                        profile: i as u16,
                        step: s,
                    },
                    ports: rotating::sequence(&r.secret, r.range, r.length, s),
                    timeout_ms: r.timeout.as_millis() as i64,
                    opens_until: rotating::step_start(s + 2, r.step),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
