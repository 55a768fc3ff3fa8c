//! Brute-force limits on passcode entry, with time passed in: a lockout per calling number and
//! per source address after repeated failures, and a global cap on failures per hour that
//! suspends passcode entry for everyone for a while. Guessing a 12-digit passcode must be hopeless
//! even from many numbers at once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use crate::clock::UnixMs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Failures from one number (or one address) within `window` that lock it out.
    pub failures: u32,
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Failures from everyone within an hour that suspend passcode entry.
    pub global_per_hour: u32,
    /// How long a suspension lasts.
    pub suspend: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failures: 5,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(3600),
            global_per_hour: 30,
            suspend: Duration::from_secs(30 * 60),
        }
    }
}

/// Most numbers and addresses tracked; past it the least recent go first, so a flood of fresh
/// numbers costs bounded memory (and the global cap still holds them back).
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<UnixMs>,
    locked_until: UnixMs,
    last: UnixMs,
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Table { map: HashMap::new() }
    }

    fn locked(&self, k: &K, now: UnixMs) -> bool {
        self.map.get(k).is_some_and(|e| e.locked_until > now)
    }

    /// Records a failure; true when this one locks the key out.
    fn fail(&mut self, k: &K, p: &Policy, now: UnixMs) -> bool {
        if self.map.len() >= MAX_TRACKED && !self.map.contains_key(k) {
            self.evict(now);
        }
        let e = self.map.entry(k.clone()).or_default();
        e.last = now;
        let window = p.window.as_millis() as i64;
        while e.failures.front().is_some_and(|t| *t <= now - window) {
            e.failures.pop_front();
        }
        e.failures.push_back(now);
        if e.failures.len() as u32 >= p.failures && e.locked_until <= now {
            e.locked_until = now + p.lockout.as_millis() as i64;
            e.failures.clear();
            return true;
        }
        false
    }

    fn clear(&mut self, k: &K) {
        self.map.remove(k);
    }

    fn evict(&mut self, now: UnixMs) {
        self.map.retain(|_, e| e.locked_until > now);
        if self.map.len() >= MAX_TRACKED {
            // Still full of lockouts: drop the oldest half of them.
            let mut lasts: Vec<UnixMs> = self.map.values().map(|e| e.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.map.retain(|_, e| e.last > cut);
        }
    }
}

/// What a failure led to, for the audit log and for bans.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub number_locked: bool,
    pub address_locked: bool,
    pub suspended: bool,
}

pub struct Limiter {
    policy: Policy,
    numbers: Table<String>,
    addrs: Table<IpAddr>,
    global: VecDeque<UnixMs>,
    suspended_until: UnixMs,
}

impl Limiter {
    pub fn new(policy: Policy) -> Limiter {
        Limiter {
            policy,
            numbers: Table::new(),
            addrs: Table::new(),
            global: VecDeque::new(),
            suspended_until: 0,
        }
    }

    /// Whether this caller may try a passcode now. A locked-out caller is still prompted and
    /// hears "incorrect": only this gate knows.
    pub fn allows(&self, number: &str, addr: Option<IpAddr>, now: UnixMs) -> bool {
        self.suspended_until <= now
            && (self.recent_global(now) as u32) < self.policy.global_per_hour
            && !self.numbers.locked(&number.to_string(), now)
            && !addr.is_some_and(|a| self.addrs.locked(&a, now))
    }

    fn recent_global(&self, now: UnixMs) -> usize {
        self.global
            .iter()
            .rev()
            .take_while(|t| **t > now - 3_600_000)
            .count()
    }

    pub fn suspended(&self, now: UnixMs) -> bool {
        self.suspended_until > now
    }

    /// Records a wrong passcode.
    pub fn failure(&mut self, number: &str, addr: Option<IpAddr>, now: UnixMs) -> Failure {
        let mut out = Failure {
            number_locked: self.numbers.fail(&number.to_string(), &self.policy, now),
            ..Failure::default()
        };
        if let Some(a) = addr {
            out.address_locked = self.addrs.fail(&a, &self.policy, now);
        }
        while self.global.front().is_some_and(|t| *t <= now - 3_600_000) {
            self.global.pop_front();
        }
        self.global.push_back(now);
        if self.global.len() as u32 >= self.policy.global_per_hour && self.suspended_until <= now {
            // The hour's failures stay counted: the cap holds over any rolling hour, and the
            // suspension adds a pause on top.
            self.suspended_until = now + self.policy.suspend.as_millis() as i64;
            out.suspended = true;
        }
        out
    }

    /// A right passcode clears that caller's count.
    pub fn success(&mut self, number: &str, addr: Option<IpAddr>) {
        self.numbers.clear(&number.to_string());
        if let Some(a) = addr {
            self.addrs.clear(&a);
        }
    }

    pub fn tracked(&self) -> usize {
        self.numbers.map.len() + self.addrs.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn number_and_address_lock_out_after_repeated_failures() {
        let mut l = Limiter::new(Policy::default());
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        for i in 0..4 {
            assert!(l.allows("5551234", Some(a), i * MIN));
            assert_eq!(l.failure("5551234", Some(a), i * MIN), Failure::default());
        }
        let f = l.failure("5551234", Some(a), 4 * MIN);
        assert!(f.number_locked && f.address_locked);
        assert!(!l.allows("5551234", None, 5 * MIN));
        assert!(
            !l.allows("5550000", Some(a), 5 * MIN),
            "the address is locked whatever the number"
        );
        assert!(
            l.allows("5550000", None, 5 * MIN),
            "another number from elsewhere is not"
        );
        assert!(
            l.allows("5551234", Some(a), 4 * MIN + 3_600_001),
            "a lockout ends"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut l = Limiter::new(Policy::default());
        for i in 0..20 {
            // One failure every 4 minutes: never 5 within 15 minutes.
            assert!(!l.failure("555", None, i * 4 * MIN).number_locked);
        }
        assert!(l.allows("555", None, 80 * MIN));
    }

    #[test]
    fn success_clears_the_count() {
        let mut l = Limiter::new(Policy::default());
        for i in 0..4 {
            l.failure("555", None, i);
        }
        l.success("555", None);
        assert!(!l.failure("555", None, 5).number_locked);
    }

    /// Many numbers and addresses, a whole week, as fast as an attacker can dial: how many
    /// passcode checks get through the gate, and what chance do they have?
    #[test]
    fn guessing_from_many_numbers_is_hopeless() {
        let p = Policy::default();
        let mut l = Limiter::new(p);
        let (mut checked, mut attempts) = (0u64, 0u64);
        let week = 7 * 24 * 60 * MIN;
        let mut now = 0;
        let mut n: u64 = 0;
        // An attempt every 100 ms, each from a fresh number and a fresh address.
        while now < week {
            n += 1;
            let number = format!("+1555{n:07}");
            let addr = IpAddr::from([100, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            attempts += 1;
            if l.allows(&number, Some(addr), now) {
                checked += 1;
                l.failure(&number, Some(addr), now);
            }
            now += 100;
        }
        // At most the global cap per hour, minus suspensions.
        let hours = (week / (60 * MIN)) as u64;
        assert!(
            checked <= p.global_per_hour as u64 * hours,
            "{checked} checks in {hours} h"
        );
        // 100 accounts with 12-digit passcodes: the chance any check hits one.
        let p_hit = checked as f64 * 100.0 / 1e12;
        assert!(p_hit < 1e-6, "P(guess in a week) = {p_hit:e}");
        assert!(
            l.tracked() <= 2 * MAX_TRACKED,
            "memory stays bounded: {}",
            l.tracked()
        );
        eprintln!("{attempts} attempts in a week, {checked} reached a passcode check; P(hit) = {p_hit:.1e}");
    }
}
