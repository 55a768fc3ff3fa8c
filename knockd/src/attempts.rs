//! A bounded memory of registration attempts the table dropped — which addresses tried to
//! register as which user, lately — so a road warrior who phones in can have "the address your
//! softphone is trying to register from" allowed, and an attacker claiming the same user shows up
//! as a second address rather than a quiet substitute. Time is passed in (Unix ms).
//!
//! Bounded against a flood of spoofed sources: at most `users` users, each with at most
//! `sources_per_user` addresses; the user recorded least recently goes first, and within a user
//! the address seen least recently. Every entry lives for the window and no longer.
//!
//! What that costs, at the default caps: a user with all 8 addresses holds about 780 bytes (8
//! sightings of 72 bytes kept inline, User-Agent included, so no flood allocates per address;
//! its name; a hash-table slot; a place in the recency order), so a full memory is about 50 MiB
//! (`tests/attempts_flood.rs` measures it under a million spoofed sources). Give the memory
//! only users that are accounts and a flood of made-up names cannot fill it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::sip::USER_MAX;

/// How long an attempt counts: a softphone whose REGISTER goes unanswered retries within
/// seconds and re-registers within minutes, so a caller who phones in finds it here.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Most users remembered at once.
pub const USERS_MAX: usize = 65_536;
/// Most addresses remembered per user.
pub const SOURCES_PER_USER_MAX: usize = 8;
/// Bytes of a User-Agent kept: enough to tell Linphone from Zoiper in a read-back or a log,
/// and stored inline so a flood of long ones costs no allocation.
pub const USER_AGENT_MAX: usize = 42;

/// The bounds of an [`AttemptMemory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptCaps {
    pub window_ms: i64,
    pub users: usize,
    pub sources_per_user: usize,
}

impl Default for AttemptCaps {
    fn default() -> AttemptCaps {
        AttemptCaps {
            window_ms: WINDOW_MS,
            users: USERS_MAX,
            sources_per_user: SOURCES_PER_USER_MAX,
        }
    }
}

/// One address that tried to register as a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub source: IpAddr,
    /// Attempts from this address within its life here (retransmissions included).
    pub count: u32,
    /// Unix ms of the latest attempt.
    pub last_seen: i64,
    user_agent: UserAgent,
}

impl Sighting {
    /// The User-Agent of the latest attempt, cut to [`USER_AGENT_MAX`] bytes.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_str()
    }
}

/// A User-Agent kept inline, cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
struct UserAgent {
    len: u8,
    bytes: [u8; USER_AGENT_MAX],
}

impl UserAgent {
    fn new(s: Option<&str>) -> UserAgent {
        let mut ua = UserAgent {
            len: 0,
            bytes: [0; USER_AGENT_MAX],
        };
        if let Some(s) = s {
            let mut end = s.len().min(USER_AGENT_MAX);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            ua.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
            ua.len = end as u8;
        }
        ua
    }

    fn as_str(&self) -> Option<&str> {
        let s = std::str::from_utf8(&self.bytes[..self.len as usize]).ok()?;
        Some(s).filter(|s| !s.is_empty())
    }
}

impl std::fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// What [`AttemptMemory::lookup`] found for a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// Distinct addresses within the window, most recent first.
    pub sightings: Vec<Sighting>,
    /// Nothing that could belong to this user was forgotten to make room within the window.
    /// When false, the sightings may be missing an address, so even one is not proof.
    pub complete: bool,
}

impl Attempts {
    /// The one address that tried to register as the user, when exactly one did and nothing was
    /// forgotten: the only answer a caller may act on without asking.
    pub fn sole_source(&self) -> Option<IpAddr> {
        match self.sightings.as_slice() {
            [only] if self.complete => Some(only.source),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sightings.len()
    }
}

/// Counters, for logs and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttemptStats {
    pub recorded: u64,
    /// Attempts whose user could not be a SIP user (empty, too long, control characters).
    pub refused: u64,
    pub evicted_users: u64,
    pub evicted_sources: u64,
    pub expired_users: u64,
}

#[derive(Debug)]
struct UserEntry {
    /// Key of this user in the recency order.
    order: u64,
    /// When an address of this user was last evicted to make room (`i64::MIN`: never).
    source_evicted: i64,
    /// Least recently seen first, so "most recent" is the order of arrival and survives a
    /// clock step.
    sightings: Vec<Sighting>,
}

/// A user's place in the recency order.
#[derive(Debug)]
struct Recent {
    user: Arc<str>,
    last_seen: i64,
}

/// The memory itself: users by name, and the same users in the order they were last recorded.
#[derive(Debug)]
pub struct AttemptMemory {
    limits: AttemptCaps,
    users: HashMap<Arc<str>, UserEntry>,
    /// Users by the order of their latest attempt, least recent first: who is evicted or
    /// expires next.
    recency: BTreeMap<u64, Recent>,
    next_order: u64,
    sources: usize,
    /// When a user was last evicted to make room (`i64::MIN`: never).
    user_evicted: i64,
    pub stats: AttemptStats,
}

impl AttemptMemory {
    pub fn new(limits: AttemptCaps) -> AttemptMemory {
        let limits = AttemptCaps {
            window_ms: limits.window_ms.max(0),
            users: limits.users.max(1),
            // With room for two, a second address claiming a user always shows beside the
            // first; with room for one it would silently replace it.
            sources_per_user: limits.sources_per_user.max(2),
        };
        AttemptMemory {
            limits,
            users: HashMap::new(),
            recency: BTreeMap::new(),
            next_order: 0,
            sources: 0,
            user_evicted: i64::MIN,
            stats: AttemptStats::default(),
        }
    }

    pub fn limits(&self) -> AttemptCaps {
        self.limits
    }

    /// Users remembered.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Addresses remembered, over all users.
    pub fn sources(&self) -> usize {
        self.sources
    }

    /// Within the window of `now`, either way: an attempt stamped after `now` (the clock
    /// stepped back) counts only as long as one stamped as far before it would.
    fn fresh(&self, at: i64, now: i64) -> bool {
        now.abs_diff(at) <= self.limits.window_ms as u64
    }

    /// One attempt at `now` from `source` to register as `user`.
    pub fn record(&mut self, now: i64, source: IpAddr, user: &str, user_agent: Option<&str>) {
        if user.is_empty() || user.len() > USER_MAX || user.chars().any(char::is_control) {
            self.stats.refused += 1;
            return;
        }
        self.stats.recorded += 1;
        self.expire(now);
        let order = self.next_order;
        self.next_order += 1;
        if !self.users.contains_key(user) {
            if self.users.len() >= self.limits.users {
                self.evict_user(now);
            }
            let user: Arc<str> = Arc::from(user);
            self.users.insert(
                Arc::clone(&user),
                UserEntry {
                    order,
                    source_evicted: i64::MIN,
                    sightings: Vec::with_capacity(1),
                },
            );
            self.recency.insert(order, Recent { user, last_seen: now });
        }
        let window = self.limits.window_ms as u64;
        let per_user = self.limits.sources_per_user;
        let entry = self.users.get_mut(user).expect("present or just made");
        let mut last = self.recency.last_entry().expect("the user is in it");
        if *last.key() == entry.order {
            // A user flooded with attempts is already the most recent: nothing to move.
            last.get_mut().last_seen = now;
        } else {
            let mut recent = self.recency.remove(&entry.order).expect("every user is in it");
            recent.last_seen = now;
            self.recency.insert(order, recent);
            entry.order = order;
        }

        let before = entry.sightings.len();
        entry.sightings.retain(|s| now.abs_diff(s.last_seen) <= window);
        let mut removed = before - entry.sightings.len();
        let mut sighting = Sighting {
            source,
            count: 1,
            last_seen: now,
            user_agent: UserAgent::new(user_agent),
        };
        if let Some(i) = entry.sightings.iter().position(|s| s.source == source) {
            sighting.count = entry.sightings.remove(i).count.saturating_add(1);
        } else {
            if entry.sightings.len() >= per_user {
                entry.sightings.remove(0);
                entry.source_evicted = now;
                removed += 1;
                self.stats.evicted_sources += 1;
            }
            self.sources += 1;
        }
        entry.sightings.push(sighting);
        self.sources -= removed;
    }

    /// The distinct addresses that tried to register as `user` within the window of `now`,
    /// most recent first.
    pub fn lookup(&self, now: i64, user: &str) -> Attempts {
        let complete = !self.fresh(self.user_evicted, now);
        let Some(entry) = self.users.get(user) else {
            return Attempts {
                sightings: Vec::new(),
                complete,
            };
        };
        let sightings = entry
            .sightings
            .iter()
            .rev()
            .filter(|s| self.fresh(s.last_seen, now))
            .copied()
            .collect();
        Attempts {
            sightings,
            complete: complete && !self.fresh(entry.source_evicted, now),
        }
    }

    /// Forgets a user: after a grant, its attempts have served their purpose.
    pub fn forget(&mut self, user: &str) {
        if let Some(entry) = self.users.remove(user) {
            self.recency.remove(&entry.order);
            self.sources -= entry.sightings.len();
        }
    }

    /// Drops users whose latest attempt is out of the window. `record` does this as it goes;
    /// a caller may also call it on a timer so memory shrinks when attempts stop.
    pub fn expire(&mut self, now: i64) {
        while let Some((_, recent)) = self.recency.first_key_value() {
            if self.fresh(recent.last_seen, now) {
                break;
            }
            self.stats.expired_users += 1;
            self.remove_oldest();
        }
    }

    fn evict_user(&mut self, now: i64) {
        if self.remove_oldest() {
            self.user_evicted = now;
            self.stats.evicted_users += 1;
        }
    }

    fn remove_oldest(&mut self) -> bool {
        let Some((_, recent)) = self.recency.pop_first() else {
            return false;
        };
        if let Some(entry) = self.users.remove(&recent.user) {
            self.sources -= entry.sightings.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn flood_ip(i: u32) -> IpAddr {
        IpAddr::from((0x6440_0000u32 + i).to_be_bytes())
    }

    fn memory() -> AttemptMemory {
        AttemptMemory::new(AttemptCaps::default())
    }

    fn sources(a: &Attempts) -> Vec<IpAddr> {
        a.sightings.iter().map(|s| s.source).collect()
    }

    const MIN: i64 = 60_000;

    #[test]
    fn a_softphone_retrying_is_one_address() {
        let mut m = memory();
        let phone = ip("203.0.113.10");
        for t in [0, 500, 1_500, 3_500, 7_500] {
            m.record(t, phone, "alice", Some("Linphone-Desktop/5.2.4"));
        }
        m.record(8_000, phone, "alice", Some("Linphone-Desktop/5.2.5"));
        let a = m.lookup(10_000, "alice");
        assert_eq!(a.sole_source(), Some(phone));
        assert_eq!(a.sightings[0].count, 6);
        assert_eq!(a.sightings[0].last_seen, 8_000);
        assert_eq!(a.sightings[0].user_agent(), Some("Linphone-Desktop/5.2.5"));
        assert_eq!((m.len(), m.sources()), (1, 1));
        assert!(m.lookup(10_000, "bob").is_empty());
        assert!(m.lookup(10_000, "Alice").is_empty(), "users are case-sensitive");
    }

    #[test]
    fn a_second_address_claiming_the_user_makes_two() {
        let mut m = memory();
        let phone = ip("203.0.113.10");
        let attacker = ip("2001:db8:bad::1");
        m.record(0, phone, "alice", Some("Zoiper rv2.10.20.3"));
        m.record(1_000, attacker, "alice", Some("Zoiper rv2.10.20.3"));
        let a = m.lookup(2_000, "alice");
        assert_eq!(sources(&a), [attacker, phone], "most recent first");
        assert!(a.complete);
        assert_eq!(
            a.sole_source(),
            None,
            "two addresses: the caller must ask or refuse"
        );
        // The real phone retrying moves it back in front; it does not hide the other.
        m.record(3_000, phone, "alice", None);
        let a = m.lookup(3_000, "alice");
        assert_eq!(sources(&a), [phone, attacker]);
        assert_eq!(a.sightings[0].user_agent(), None);
        assert_eq!(a.sole_source(), None);
    }

    #[test]
    fn attempts_last_the_window_and_no_longer() {
        let mut m = memory();
        m.record(0, ip("203.0.113.10"), "alice", None);
        m.record(2 * MIN, ip("203.0.113.11"), "alice", None);
        assert_eq!(m.lookup(WINDOW_MS, "alice").len(), 2);
        let a = m.lookup(WINDOW_MS + 1, "alice");
        assert_eq!(a.sole_source(), Some(ip("203.0.113.11")));
        assert!(m.lookup(2 * MIN + WINDOW_MS + 1, "alice").is_empty());
        // A clock stepped back does not make an old attempt count for longer.
        assert_eq!(m.lookup(-WINDOW_MS, "alice").len(), 1);
        assert!(m.lookup(-WINDOW_MS - 1, "alice").is_empty());
        // Recording drops users whose attempts are all out of the window.
        m.record(10 * MIN, ip("203.0.113.12"), "bob", None);
        assert_eq!((m.len(), m.sources()), (1, 1));
        assert_eq!(m.stats.expired_users, 1);
        m.expire(20 * MIN);
        assert!(m.is_empty());
        assert_eq!(m.sources(), 0);

        let mut m = AttemptMemory::new(AttemptCaps {
            window_ms: 30_000,
            ..AttemptCaps::default()
        });
        m.record(0, ip("203.0.113.10"), "alice", None);
        assert!(m.lookup(30_001, "alice").is_empty(), "the window is configurable");
    }

    #[test]
    fn a_user_keeps_its_most_recent_addresses() {
        let mut m = memory();
        for i in 0..20 {
            m.record(i as i64, flood_ip(i), "alice", None);
        }
        let a = m.lookup(20, "alice");
        let want: Vec<IpAddr> = (12..20).rev().map(flood_ip).collect();
        assert_eq!(sources(&a), want);
        assert!(!a.complete, "addresses were forgotten within the window");
        assert_eq!((m.sources(), m.stats.evicted_sources), (8, 12));
        // A lone address after the window of the eviction is proof again.
        m.forget("alice");
        m.record(WINDOW_MS + 100, ip("203.0.113.10"), "alice", None);
        assert!(m.lookup(WINDOW_MS + 100, "alice").complete);
        // Caps below two addresses are raised to two: a second claim must show.
        let mut m = AttemptMemory::new(AttemptCaps {
            sources_per_user: 1,
            ..AttemptCaps::default()
        });
        m.record(0, ip("203.0.113.10"), "alice", None);
        m.record(1, ip("203.0.113.66"), "alice", None);
        assert_eq!(m.lookup(2, "alice").len(), 2);
    }

    #[test]
    fn a_full_memory_forgets_the_least_recent_user_and_says_so() {
        let mut m = AttemptMemory::new(AttemptCaps {
            users: 3,
            ..AttemptCaps::default()
        });
        m.record(0, ip("203.0.113.1"), "a", None);
        m.record(1, ip("203.0.113.2"), "b", None);
        m.record(2, ip("203.0.113.3"), "c", None);
        m.record(3, ip("203.0.113.1"), "a", None);
        m.record(4, ip("203.0.113.4"), "d", None);
        assert_eq!(m.len(), 3);
        assert!(m.lookup(5, "b").is_empty(), "b was recorded least recently");
        // After an eviction even a single address is not proof: the user's real address may be
        // what was forgotten, and the one left an attacker's.
        let a = m.lookup(5, "a");
        assert_eq!(a.len(), 1);
        assert!(!a.complete);
        assert_eq!(a.sole_source(), None);
        // Once the eviction is out of the window, a lone address is proof again.
        let later = WINDOW_MS + 5;
        m.record(later, ip("203.0.113.4"), "d", None);
        assert!(!m.lookup(later - 1, "d").complete);
        assert_eq!(m.lookup(later, "d").sole_source(), Some(ip("203.0.113.4")));
    }

    #[test]
    fn forget_and_refusals() {
        let mut m = memory();
        m.record(0, ip("203.0.113.10"), "alice", None);
        m.record(0, ip("203.0.113.11"), "alice", None);
        m.record(0, ip("203.0.113.10"), "bob", None);
        m.forget("alice");
        m.forget("nobody");
        assert!(m.lookup(0, "alice").is_empty());
        assert_eq!((m.len(), m.sources()), (1, 1));
        for bad in ["", "a\nb", "\u{7f}", &"u".repeat(USER_MAX + 1)] {
            m.record(0, ip("203.0.113.10"), bad, None);
        }
        assert_eq!((m.len(), m.stats.refused), (1, 4));
        m.record(0, ip("203.0.113.10"), &"u".repeat(USER_MAX), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn user_agents_are_cut_at_a_character() {
        let mut m = memory();
        let long = "Ünïcödé SIP Phone/1.0 ".repeat(5);
        m.record(0, ip("203.0.113.10"), "alice", Some(&long));
        let ua = m.lookup(0, "alice").sightings[0]
            .user_agent()
            .unwrap()
            .to_string();
        assert!(ua.len() <= USER_AGENT_MAX && long.starts_with(&ua) && ua.len() >= USER_AGENT_MAX - 3);
        m.record(0, ip("203.0.113.11"), "alice", Some(""));
        assert_eq!(m.lookup(0, "alice").sightings[0].user_agent(), None);
    }

    /// The parts agree with each other whatever the flood: every user is in the recency order
    /// once, and the address count is the sum. (The million-source flood, with memory measured,
    /// is `tests/attempts_flood.rs`.)
    #[test]
    fn a_flood_keeps_the_parts_in_step() {
        let mut m = AttemptMemory::new(AttemptCaps {
            users: 100,
            sources_per_user: 4,
            window_ms: 1_000,
        });
        let mut user = String::new();
        for i in 0..20_000u32 {
            user.clear();
            user.push_str(["u", "v", "w"][i as usize % 3]);
            user.push_str(&(i % 257).to_string());
            m.record(i as i64 / 4, flood_ip(i % 1_013), &user, Some("friendly-scanner"));
            if i % 97 == 0 {
                m.forget(&user);
            }
            assert!(m.len() <= 100);
        }
        assert_eq!(m.recency.len(), m.len());
        assert!(m
            .recency
            .iter()
            .all(|(order, r)| m.users[&r.user].order == *order));
        let sum: usize = m.users.values().map(|e| e.sightings.len()).sum();
        assert_eq!(m.sources(), sum);
        assert!(m.users.values().all(|e| e.sightings.len() <= 4));
        m.expire(i64::MAX / 2);
        assert!(m.is_empty() && m.recency.is_empty() && m.sources() == 0);
    }
}
