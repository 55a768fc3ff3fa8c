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
        self.grant(i, k.source, k.source, None, mark, None)
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
                self.grant(i, address, k.source, also, mark, answer)
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
        also: Option<IpAddr>,
        mark: Option<ReplayMark>,
        answer: Option<AnswerTo>,
    ) -> Option<KnockOutcome> {
        self.stats.grants += 1;
        let p = &self.profiles[i];
        Some(KnockOutcome::Grant {
            profile: p.name.clone(),
            mode: p.kind.mode(),
            address,
            source,
            also,
            mark,
            answer,
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
mod tests;
