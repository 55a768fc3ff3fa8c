//! Knock sequences per source, knockd's semantics: the first port starts an attempt; each next
//! port in order advances it; any other knock port from that source ends it; the whole sequence
//! must fit in the timeout. A repeat of the port just hit (a retransmitted SYN) is ignored.
//!
//! State is bounded: at most `cap` sources are tracked. When full, the oldest source that has
//! only hit a first port is dropped before any source that got further — a flood of spoofed
//! first knocks churns through its own entries and leaves a real knocker's alone.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::Port;

/// One sequence a source can knock: a profile, and for a rotating profile the time step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DoorId {
    pub profile: u16,
    pub step: u64,
}

/// The most doors the tracker follows (the gate keeps the current and previous steps of each
/// rotating profile, so this bounds profiles too).
pub const DOORS_MAX: usize = 64;

/// A sequence the tracker matches against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Door {
    pub id: DoorId,
    pub ports: Vec<Port>,
    pub timeout_ms: i64,
    /// New attempts start until then (Unix ms); attempts already going may finish after.
    pub opens_until: i64,
}

#[derive(Clone, Copy, Debug)]
struct Attempt {
    door: DoorId,
    stage: u8,
    started: i64,
    last: Port,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// Some attempt got past its first port.
    advanced: bool,
    attempts: Vec<Attempt>,
}

/// Counters, for logs and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    pub started: u64,
    pub completed: u64,
    pub wrong: u64,
    pub timed_out: u64,
    pub duplicates: u64,
    pub evicted: u64,
}

#[derive(Debug)]
pub struct Tracker {
    cap: usize,
    entries: HashMap<IpAddr, Entry>,
    /// Sources in arrival order, as (address, entry seq); stale pairs are skipped.
    young: VecDeque<(IpAddr, u64)>,
    advanced: VecDeque<(IpAddr, u64)>,
    next_seq: u64,
    pub stats: TrackerStats,
}

impl Tracker {
    pub fn new(cap: usize) -> Tracker {
        let cap = cap.max(1);
        Tracker {
            cap,
            entries: HashMap::with_capacity(cap.min(1 << 16)),
            young: VecDeque::new(),
            advanced: VecDeque::new(),
            next_seq: 0,
            stats: TrackerStats::default(),
        }
    }

    /// Sources with an attempt in progress.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One knock from `source` on `port` at `now`; returns the door it completes, if any.
    pub fn knock(&mut self, doors: &[Door], source: IpAddr, port: Port, now: i64) -> Option<DoorId> {
        debug_assert!(doors.len() <= DOORS_MAX);
        let mut completed = None;
        // Doors this knock advanced or repeated: it must not also start them afresh.
        let mut touched: u64 = 0;
        let stats = &mut self.stats;
        let mut now_advanced = false;
        if let Some(e) = self.entries.get_mut(&source) {
            e.attempts.retain_mut(|a| {
                let Some((i, d)) = doors.iter().enumerate().find(|(_, d)| d.id == a.door) else {
                    return false;
                };
                if now - a.started > d.timeout_ms {
                    stats.timed_out += 1;
                    return false;
                }
                if port == d.ports[a.stage as usize] {
                    touched |= 1 << i;
                    a.stage += 1;
                    a.last = port;
                    if a.stage as usize == d.ports.len() {
                        stats.completed += 1;
                        completed = Some(a.door);
                        return false;
                    }
                    now_advanced = true;
                    return true;
                }
                if port == a.last {
                    touched |= 1 << i;
                    stats.duplicates += 1;
                    return true;
                }
                stats.wrong += 1;
                false
            });
        }
        for (i, d) in doors.iter().enumerate() {
            if d.ports[0] != port || touched & (1 << i) != 0 || now >= d.opens_until {
                continue;
            }
            if !self.entries.contains_key(&source) {
                if self.entries.len() >= self.cap {
                    self.evict_one();
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.entries.insert(
                    source,
                    Entry {
                        seq,
                        advanced: false,
                        attempts: Vec::with_capacity(1),
                    },
                );
                self.young.push_back((source, seq));
            }
            self.stats.started += 1;
            self.entries
                .get_mut(&source)
                .expect("just made")
                .attempts
                .push(Attempt {
                    door: d.id,
                    stage: 1,
                    started: now,
                    last: port,
                });
        }
        if let Some(e) = self.entries.get_mut(&source) {
            if e.attempts.is_empty() {
                self.entries.remove(&source);
            } else if now_advanced && !e.advanced {
                e.advanced = true;
                self.advanced.push_back((source, e.seq));
            }
        }
        self.compact();
        completed
    }

    /// Drops attempts that timed out or whose door is gone.
    pub fn sweep(&mut self, doors: &[Door], now: i64) {
        let stats = &mut self.stats;
        self.entries.retain(|_, e| {
            e.attempts
                .retain(|a| match doors.iter().find(|d| d.id == a.door) {
                    Some(d) if now - a.started <= d.timeout_ms => true,
                    _ => {
                        stats.timed_out += 1;
                        false
                    }
                });
            !e.attempts.is_empty()
        });
        self.compact();
    }

    fn evict_one(&mut self) {
        for advanced in [false, true] {
            let queue = if advanced {
                &mut self.advanced
            } else {
                &mut self.young
            };
            while let Some((ip, seq)) = queue.pop_front() {
                if self
                    .entries
                    .get(&ip)
                    .is_some_and(|e| e.seq == seq && e.advanced == advanced)
                {
                    self.entries.remove(&ip);
                    self.stats.evicted += 1;
                    return;
                }
            }
        }
    }

    /// Keeps the arrival queues from growing past twice the cap with stale pairs.
    fn compact(&mut self) {
        let limit = 2 * self.cap + 64;
        let entries = &self.entries;
        for (queue, advanced) in [(&mut self.young, false), (&mut self.advanced, true)] {
            if queue.len() > limit {
                queue.retain(|(ip, seq)| {
                    entries
                        .get(ip)
                        .is_some_and(|e| e.seq == *seq && e.advanced == advanced)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(profile: u16, ports: &[Port]) -> Door {
        Door {
            id: DoorId { profile, step: 0 },
            ports: ports.to_vec(),
            timeout_ms: 10_000,
            opens_until: i64::MAX,
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from((0x6440_0000u32 + i).to_be_bytes())
    }

    const A: Port = Port {
        proto: crate::Proto::Tcp,
        port: 7000,
    };
    const B: Port = Port {
        proto: crate::Proto::Udp,
        port: 8000,
    };
    const C: Port = Port {
        proto: crate::Proto::Tcp,
        port: 9000,
    };

    fn run(t: &mut Tracker, doors: &[Door], src: IpAddr, knocks: &[(Port, i64)]) -> Option<DoorId> {
        let mut out = None;
        for (p, at) in knocks {
            if let Some(d) = t.knock(doors, src, *p, *at) {
                out = Some(d);
            }
        }
        out
    }

    #[test]
    fn in_order_opens_and_retransmits_are_tolerated() {
        let doors = [door(0, &[A, B, C])];
        let mut t = Tracker::new(16);
        assert!(run(&mut t, &doors, ip(1), &[(A, 0), (B, 10), (C, 20)]).is_some());
        assert!(t.is_empty(), "a completed attempt is gone");
        let dup = [(A, 0), (A, 900), (B, 1000), (B, 1001), (C, 2000)];
        assert!(run(&mut t, &doors, ip(1), &dup).is_some());
        assert_eq!(t.stats.duplicates, 2);
    }

    #[test]
    fn wrong_order_too_slow_and_junk_never_open() {
        let doors = [door(0, &[A, B, C]), door(1, &[C, A, B])];
        let mut t = Tracker::new(16);
        assert!(run(&mut t, &doors, ip(1), &[(A, 0), (C, 1), (B, 2)]).is_none());
        assert!(run(&mut t, &doors, ip(2), &[(B, 0), (A, 1), (C, 2)]).is_none());
        assert!(
            run(&mut t, &doors, ip(3), &[(A, 0), (B, 5_000), (C, 10_001)]).is_none(),
            "too slow"
        );
        // Junk from the same source on another knock port ends the attempt.
        assert!(run(&mut t, &doors, ip(4), &[(A, 0), (B, 1), (A, 2), (C, 3)]).is_none());
        // The other profile's sequence still works from the same source.
        assert_eq!(
            run(&mut t, &doors, ip(5), &[(C, 0), (A, 1), (B, 2)]),
            Some(DoorId { profile: 1, step: 0 })
        );
        // Knocks from other sources do not mix.
        assert!(t.knock(&doors, ip(6), A, 0).is_none());
        assert!(t.knock(&doors, ip(7), B, 1).is_none());
        assert!(t.knock(&doors, ip(7), C, 2).is_none());
        // A wrong knock that is a first port starts over.
        assert!(run(&mut t, &doors, ip(8), &[(A, 0), (B, 1), (A, 2), (B, 3), (C, 4)]).is_some());
    }

    #[test]
    fn door_that_closed_starts_nothing() {
        let mut d = door(0, &[A, B]);
        d.opens_until = 100;
        let doors = [d];
        let mut t = Tracker::new(16);
        assert!(
            run(&mut t, &doors, ip(1), &[(A, 99), (B, 150)]).is_some(),
            "began in time"
        );
        assert!(run(&mut t, &doors, ip(1), &[(A, 100), (B, 150)]).is_none());
    }

    #[test]
    fn a_flood_of_first_knocks_is_bounded_and_spares_a_real_knocker() {
        let doors = [door(0, &[A, B, C])];
        let mut t = Tracker::new(1000);
        let real = IpAddr::from([203, 0, 113, 10]);
        assert!(t.knock(&doors, real, A, 0).is_none());
        assert!(
            t.knock(&doors, real, B, 1).is_none(),
            "the real knocker got past the first port"
        );
        for i in 0..1_000_000 {
            t.knock(&doors, ip(i), A, 2);
            assert!(t.len() <= 1000);
        }
        assert!(t.young.len() <= 2 * 1000 + 64 && t.advanced.len() <= 2 * 1000 + 64);
        assert!(
            t.knock(&doors, real, C, 3).is_some(),
            "survived a million spoofed first knocks"
        );
        assert!(t.stats.evicted >= 999_000);
        // A flood of sources that got past the first port evicts the oldest of them.
        let mut t = Tracker::new(100);
        for i in 0..1000 {
            t.knock(&doors, ip(i), A, 0);
            t.knock(&doors, ip(i), B, 0);
        }
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn sweep_drops_what_timed_out() {
        let doors = [door(0, &[A, B, C])];
        let mut t = Tracker::new(16);
        t.knock(&doors, ip(1), A, 0);
        t.knock(&doors, ip(2), A, 9_000);
        t.sweep(&doors, 10_001);
        assert_eq!(t.len(), 1);
        t.sweep(&[], 10_001);
        assert!(t.is_empty(), "doors that went away take their attempts");
    }
}
