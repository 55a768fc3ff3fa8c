//! Who fails too often: failed security events counted per address in a sliding window, and a ban
//! that grows for repeat offenders. Pure: time is an argument, nothing here bans anything.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::base::clock::UnixMs;
use crate::config::AmiConfig;

/// Most addresses remembered at once: a flood from spoofed sources cannot grow the table past it.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Failures within `window` that get an address banned.
    pub threshold: u32,
    pub window: Duration,
    pub first: Duration,
    pub growth: u32,
    pub max: Duration,
    /// A ban within this long of the previous one is a repeat offence.
    pub forget: Duration,
}

impl BanPolicy {
    pub fn from_config(ami: &AmiConfig) -> BanPolicy {
        BanPolicy {
            threshold: ami.ban_threshold.max(1),
            window: ami.ban_window.0,
            first: ami.ban_ttl.0,
            growth: ami.ban_growth.max(1),
            max: ami.ban_ttl_max.0,
            forget: ami.ban_forget.0,
        }
    }

    /// The ban for an address's `offence`-th offence (from 1): `first · growth^(offence-1)`, capped.
    pub fn ttl(&self, offence: u32) -> Duration {
        let mut t = self.first;
        for _ in 1..offence {
            t = t.saturating_mul(self.growth);
            if t >= self.max {
                break;
            }
        }
        t.min(self.max)
    }
}

/// What to do about an address that crossed the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanDecision {
    /// Whole seconds, at least one.
    pub ttl: Duration,
    /// 1 for a first offence; more for a repeat within `forget`.
    pub offence: u32,
}

#[derive(Debug)]
struct Record {
    hits: VecDeque<UnixMs>,
    offences: u32,
    last_ban: Option<UnixMs>,
    banned_until: UnixMs,
    last_seen: UnixMs,
}

#[derive(Debug)]
pub struct Offenders {
    policy: BanPolicy,
    table: HashMap<IpAddr, Record>,
    max_tracked: usize,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Offenders {
    pub fn new(policy: BanPolicy) -> Offenders {
        Offenders::with_capacity(policy, MAX_TRACKED)
    }

    pub fn with_capacity(policy: BanPolicy, max_tracked: usize) -> Offenders {
        Offenders {
            policy,
            table: HashMap::new(),
            max_tracked: max_tracked.max(1),
        }
    }

    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// Counts one failure from `ip` at `now`; a verdict when that crosses the threshold.
    ///
    /// An address already banned that crosses the threshold again (its packets got through: an
    /// admin unbanned it, or the ban was lost) is banned again for what was left, not as a new
    /// offence — a few events still in flight when a ban lands cross nothing.
    pub fn record(&mut self, ip: IpAddr, now: UnixMs) -> Option<BanDecision> {
        self.judge(ip, now, None)
    }

    /// Like [`record`](Self::record), with `ip`'s failures in the window as a store several nodes
    /// share counted them, this one among them: failures seen at other nodes count here too.
    pub fn record_shared(&mut self, ip: IpAddr, now: UnixMs, hits: &[UnixMs]) -> Option<BanDecision> {
        self.judge(ip, now, Some(hits))
    }

    /// The window failures are counted over.
    pub fn window(&self) -> Duration {
        self.policy.window
    }

    fn judge(&mut self, ip: IpAddr, now: UnixMs, shared: Option<&[UnixMs]>) -> Option<BanDecision> {
        if !self.table.contains_key(&ip) && self.table.len() >= self.max_tracked {
            self.forget_stale(now);
            if self.table.len() >= self.max_tracked {
                // Still full of live records: drop the tenth heard from longest ago, at once, so a
                // flood costs one pass per many new addresses rather than one per address.
                let mut seen: Vec<(UnixMs, IpAddr)> =
                    self.table.iter().map(|(a, r)| (r.last_seen, *a)).collect();
                let n = (seen.len() / 10).max(1);
                seen.select_nth_unstable(n - 1);
                for (_, a) in &seen[..n] {
                    self.table.remove(a);
                }
            }
        }
        let p = &self.policy;
        let r = self.table.entry(ip).or_insert_with(|| Record {
            hits: VecDeque::new(),
            offences: 0,
            last_ban: None,
            banned_until: 0,
            last_seen: now,
        });
        r.last_seen = now;
        let from = now - ms(p.window);
        match shared {
            Some(hits) => {
                let mut hits: Vec<UnixMs> = hits.iter().copied().filter(|t| *t > from).collect();
                hits.sort_unstable();
                if hits.is_empty() {
                    hits.push(now);
                }
                r.hits = hits.into();
            }
            None => {
                while r.hits.front().is_some_and(|t| *t <= from) {
                    r.hits.pop_front();
                }
                r.hits.push_back(now);
            }
        }
        if (r.hits.len() as u32) < p.threshold {
            return None;
        }
        r.hits.clear();
        if r.banned_until > now {
            let left = (r.banned_until - now) as u64;
            return Some(BanDecision {
                ttl: Duration::from_secs(left.div_ceil(1000).max(1)),
                offence: r.offences,
            });
        }
        r.offences = match r.last_ban {
            Some(t) if now - t < ms(p.forget) => r.offences + 1,
            _ => 1,
        };
        let ttl = Duration::from_secs(p.ttl(r.offences).as_secs().max(1));
        r.last_ban = Some(now);
        r.banned_until = now + ms(ttl);
        Some(BanDecision {
            ttl,
            offence: r.offences,
        })
    }

    /// Drops records with nothing left to remember: no failure in the window, no ban in force,
    /// none recent enough to make the next one a repeat.
    pub fn forget_stale(&mut self, now: UnixMs) {
        let (window, forget) = (ms(self.policy.window), ms(self.policy.forget));
        self.table.retain(|_, r| {
            r.hits.back().is_some_and(|t| now - t < window)
                || r.banned_until > now
                || r.last_ban.is_some_and(|t| now - t < forget)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            threshold: 3,
            window: Duration::from_secs(10),
            first: Duration::from_secs(60),
            growth: 4,
            max: Duration::from_secs(3600),
            forget: Duration::from_secs(86_400),
        }
    }

    const A: &str = "203.0.113.66";

    #[test]
    fn threshold_within_window_bans() {
        let mut o = Offenders::new(policy());
        let a: IpAddr = A.parse().unwrap();
        assert_eq!(o.record(a, 0), None);
        assert_eq!(o.record(a, 5_000), None);
        // The first hit has left the window by 10 s: still two.
        assert_eq!(o.record(a, 10_000), None);
        let v = o.record(a, 11_000).unwrap();
        assert_eq!(
            v,
            BanDecision {
                ttl: Duration::from_secs(60),
                offence: 1
            }
        );
        // Other addresses are counted apart.
        let b: IpAddr = "2001:db8::66".parse().unwrap();
        assert_eq!(o.record(b, 11_000), None);
    }

    #[test]
    fn repeat_offenders_grow_to_the_cap_and_are_forgiven() {
        let mut o = Offenders::new(policy());
        let a: IpAddr = A.parse().unwrap();
        let mut t = 0;
        let mut ttls = Vec::new();
        for _ in 0..5 {
            let v = (0..3).find_map(|_| o.record(a, t)).unwrap();
            ttls.push(v.ttl.as_secs());
            t += v.ttl.as_millis() as i64 + 1_000; // the ban ended
        }
        assert_eq!(ttls, vec![60, 240, 960, 3600, 3600]);
        // A day and more later it is a first offence again.
        t += 86_400_000;
        let v = (0..3).find_map(|_| o.record(a, t)).unwrap();
        assert_eq!(v.offence, 1);
    }

    #[test]
    fn in_flight_events_do_not_escalate_a_ban_in_force() {
        let mut o = Offenders::new(policy());
        let a: IpAddr = A.parse().unwrap();
        (0..3).find_map(|_| o.record(a, 1_000)).unwrap();
        // Two stragglers: nothing.
        assert_eq!(o.record(a, 1_100), None);
        assert_eq!(o.record(a, 1_200), None);
        // A third means packets get through (unbanned?): banned again for what was left, same offence.
        let v = o.record(a, 5_000).unwrap();
        assert_eq!(
            v,
            BanDecision {
                ttl: Duration::from_secs(56),
                offence: 1
            }
        );
    }

    #[test]
    fn failures_counted_at_other_nodes_add_up() {
        let mut here = Offenders::new(policy());
        let a: IpAddr = A.parse().unwrap();
        // Two failures elsewhere, one here: the store's count says three, and that bans.
        let v = here.record_shared(a, 2_000, &[500, 1_000, 2_000]).unwrap();
        assert_eq!(v.offence, 1);
        // Failures the store still holds from before the window do not count.
        let b: IpAddr = "2001:db8::66".parse().unwrap();
        assert_eq!(here.record_shared(b, 20_000, &[1_000, 2_000, 20_000]), None);
        // An empty answer still counts this failure.
        assert_eq!(here.record_shared(b, 21_000, &[]), None);
        assert_eq!(here.record(b, 22_000), None);
        assert!(
            here.record(b, 23_000).is_some(),
            "local counting carries on from it"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut o = Offenders::with_capacity(policy(), 100);
        for i in 0..10_000u32 {
            let ip = IpAddr::from([100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            o.record(ip, i as i64);
        }
        assert!(o.tracked() <= 100);
        o.forget_stale(100_000_000);
        assert_eq!(o.tracked(), 0);
    }

    #[test]
    fn ttl_never_overflows() {
        let p = BanPolicy {
            growth: u32::MAX,
            ..policy()
        };
        assert_eq!(p.ttl(1000), Duration::from_secs(3600));
    }
}
