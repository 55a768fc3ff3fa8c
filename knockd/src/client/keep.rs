//! `--keep`'s rules without IO: when to knock again (before the grant ends, at once when the
//! laptop's addresses change or the probe stops answering), when to probe and to look at the
//! interfaces, and how long to back off after a failure. Time comes in as Unix milliseconds;
//! the loop in `client/keep_loop.rs` does the sending, probing and sleeping.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// First wait after a failed knock; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the interfaces are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How often the probe port is tried while access is open.
pub const PROBE_EVERY: Duration = Duration::from_secs(15);
/// The shortest renewal: a grant of a few seconds must not make the loop spin.
const RENEW_MIN: Duration = Duration::from_secs(2);

/// Re-knock after this share of a grant's time: early enough that a lost knock can be tried
/// again (with backoff) before the grant ends.
pub fn renew_after(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(RENEW_MIN)
}

/// Why a knock is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    First,
    Renew,
    AddressChanged { from: Vec<IpAddr>, to: Vec<IpAddr> },
    ProbeFailed,
    Retry { attempt: u32 },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[IpAddr]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            }
        };
        match self {
            Why::First => write!(f, "knocking"),
            Why::Renew => write!(f, "renewing before the grant ends: knocking again"),
            Why::AddressChanged { from, to } => write!(
                f,
                "address changed: {} -> {}, knocking again",
                list(from),
                list(to)
            ),
            Why::ProbeFailed => write!(
                f,
                "the probe stopped answering (a new public address?), knocking again"
            ),
            Why::Retry { attempt } => write!(f, "knocking again (try {attempt})"),
        }
    }
}

/// What the loop does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Knock(Why),
    Probe,
    /// Read the interface addresses and hand them to [`Keeper::on_addresses`].
    Watch,
    /// Nothing until this time (Unix ms).
    Wait(i64),
}

/// How a knock went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Knocked {
    /// Access opened. `seen` is the address the daemon opened (from its answer), `left` how long
    /// the grant lasts (from the answer, else the profile's `ttl`).
    Open {
        seen: Option<IpAddr>,
        left: Duration,
        detail: String,
    },
    /// Not verified (no probe port and no answer): assumed open.
    Sent {
        left: Duration,
    },
    NotOpen(String),
}

#[derive(Debug)]
pub struct Keeper {
    probing: bool,
    probe_every: i64,
    watch_every: i64,
    due: Option<(i64, Why)>,
    /// The earliest the next knock may go (a rotating profile's next step).
    not_before: i64,
    knocking: bool,
    open: bool,
    next_probe: i64,
    next_watch: i64,
    addresses: Option<Vec<IpAddr>>,
    failures: u32,
}

impl Keeper {
    /// A keeper that knocks at once; `probing` when the profile has a probe port.
    pub fn new(now: i64, probing: bool) -> Keeper {
        Keeper {
            probing,
            probe_every: PROBE_EVERY.as_millis() as i64,
            watch_every: WATCH_EVERY.as_millis() as i64,
            due: Some((now, Why::First)),
            not_before: now,
            knocking: false,
            open: false,
            next_probe: i64::MAX,
            next_watch: now,
            addresses: None,
            failures: 0,
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: i64) -> Next {
        if self.knocking {
            // The loop is still knocking: it reports before asking again.
            return Next::Wait(now);
        }
        // The first look at the interfaces comes before the first knock, so a change while that
        // knock is under way is seen as one.
        if self.addresses.is_none() && self.next_watch <= now {
            self.next_watch = now + self.watch_every;
            return Next::Watch;
        }
        if let Some((at, _)) = &self.due {
            if *at <= now && self.not_before <= now {
                let (_, why) = self.due.take().expect("checked above");
                self.knocking = true;
                return Next::Knock(why);
            }
        }
        if self.next_watch <= now {
            self.next_watch = now + self.watch_every;
            return Next::Watch;
        }
        if self.probing && self.open && self.next_probe <= now {
            self.next_probe = now + self.probe_every;
            return Next::Probe;
        }
        let mut wake = self.next_watch;
        if let Some((at, _)) = &self.due {
            wake = wake.min((*at).max(self.not_before));
        }
        if self.probing && self.open {
            wake = wake.min(self.next_probe);
        }
        Next::Wait(wake)
    }

    /// A knock finished at `now`. `not_before` is when the profile allows the next one;
    /// `jitter` is any random number (it spreads retries). Returns the line to print.
    pub fn on_knocked(&mut self, now: i64, how: Knocked, not_before: i64, jitter: u32) -> String {
        self.knocking = false;
        self.not_before = not_before;
        // Look at the interfaces at once: an address that changed while this knock was under
        // way (it may have gone out from the old one) knocks again now, not after a backoff.
        self.next_watch = now;
        match how {
            Knocked::Open { seen, left, detail } => {
                self.opened(now, left);
                let from = seen.map(|a| format!(" from {a}")).unwrap_or_default();
                format!(
                    "access open{from}: {detail}; knocking again in {}",
                    secs(renew_after(left))
                )
            }
            Knocked::Sent { left } => {
                self.opened(now, left);
                format!(
                    "knocked (not verified: no probe port); knocking again in {}",
                    secs(renew_after(left))
                )
            }
            Knocked::NotOpen(why) => {
                self.open = false;
                self.failures += 1;
                let wait = backoff(self.failures, jitter);
                self.due = Some((
                    now + wait.as_millis() as i64,
                    Why::Retry {
                        attempt: self.failures + 1,
                    },
                ));
                format!("access did not open: {why}; trying again in {}", secs(wait))
            }
        }
    }

    fn opened(&mut self, now: i64, left: Duration) {
        self.open = true;
        self.failures = 0;
        self.due = Some((now + renew_after(left).as_millis() as i64, Why::Renew));
        self.next_probe = now + self.probe_every;
    }

    /// The probe ran at `now`. A closed probe while access should be open means the address
    /// the PBX sees changed (or the grant went): knock at once. Returns a line to print, if any.
    pub fn on_probe(&mut self, now: i64, open: bool) -> Option<String> {
        if open || !self.open || self.knocking {
            return None;
        }
        self.open = false;
        self.due = Some((now, Why::ProbeFailed));
        None
    }

    /// The interface addresses at `now` (any order). A change from the last look knocks at
    /// once, whatever backoff was running: a new network may well let the knock through.
    pub fn on_addresses(&mut self, now: i64, mut addresses: Vec<IpAddr>) {
        addresses.sort();
        addresses.dedup();
        let Some(old) = self.addresses.replace(addresses.clone()) else {
            return;
        };
        if old == addresses {
            return;
        }
        let from: Vec<IpAddr> = old.iter().filter(|a| !addresses.contains(a)).copied().collect();
        let to: Vec<IpAddr> = addresses.iter().filter(|a| !old.contains(a)).copied().collect();
        self.failures = 0;
        // Also while a knock is under way: it may have gone out from the old address.
        self.due = Some((now, Why::AddressChanged { from, to }));
    }
}

/// The wait after `failures` failed knocks in a row: doubling from [`BACKOFF_FIRST`], capped at
/// [`BACKOFF_MAX`], then spread by up to a fifth either way so many laptops do not knock in step.
pub fn backoff(failures: u32, jitter: u32) -> Duration {
    let base = BACKOFF_FIRST.as_millis() as u64;
    let raw = base
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX.as_millis() as u64);
    // jitter picks a point in [-20%, +20%].
    let spread = raw / 5;
    let off = (jitter as u64) % (2 * spread + 1);
    Duration::from_millis(raw - spread + off)
}

/// A wait as people read it: `40m00s`, `5h20m`, `1.6s`.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(60) {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 120 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn open(k: &mut Keeper, now: i64) -> String {
        if k.addresses.is_none() {
            assert_eq!(k.poll(now), Next::Watch, "the interfaces first");
            k.on_addresses(now, vec![a("203.0.113.10")]);
        }
        assert!(matches!(k.poll(now), Next::Knock(_)));
        k.on_knocked(
            now,
            Knocked::Open {
                seen: Some(a("203.0.113.10")),
                left: HOUR,
                detail: "tcp/5061 answered".into(),
            },
            now,
            0,
        )
    }

    /// Polls until the next knock, doing watches and probes with the given answers; returns
    /// when the knock came and why.
    fn next_knock(k: &mut Keeper, mut now: i64, probe_open: bool, until: i64) -> Option<(i64, Why)> {
        while now <= until {
            match k.poll(now) {
                Next::Knock(why) => return Some((now, why)),
                Next::Watch => k.on_addresses(now, vec![a("203.0.113.10")]),
                Next::Probe => {
                    let _ = k.on_probe(now, probe_open);
                }
                Next::Wait(t) => {
                    assert!(t > now, "never spins");
                    now = t;
                }
            }
        }
        None
    }

    #[test]
    fn knocks_at_once_then_renews_at_two_thirds_of_the_ttl() {
        let mut k = Keeper::new(T0, true);
        let line = open(&mut k, T0);
        assert!(line.starts_with("access open from 203.0.113.10"), "{line}");
        assert!(line.contains("knocking again in 40m00s"), "{line}");
        let (at, why) = next_knock(&mut k, T0, true, T0 + 2 * 3_600_000).unwrap();
        assert_eq!((at - T0, why), (2_400_000, Why::Renew));
    }

    #[test]
    fn a_failing_probe_knocks_at_once() {
        let mut k = Keeper::new(T0, true);
        open(&mut k, T0);
        let (at, why) = next_knock(&mut k, T0, false, T0 + 3_600_000).unwrap();
        assert_eq!(why, Why::ProbeFailed);
        assert_eq!(at - T0, PROBE_EVERY.as_millis() as i64, "at the first probe");
    }

    #[test]
    fn an_address_change_knocks_at_once_and_says_what_changed() {
        let mut k = Keeper::new(T0, false);
        k.on_addresses(T0, vec![a("203.0.113.10")]);
        open(&mut k, T0);
        assert_eq!(k.poll(T0 + 1), Next::Watch);
        k.on_addresses(T0 + 1, vec![a("203.0.113.10")]);
        assert_eq!(k.poll(T0 + 1), Next::Wait(T0 + 2001));
        k.on_addresses(T0 + 2000, vec![a("203.0.113.10")]);
        assert!(matches!(k.poll(T0 + 2000), Next::Wait(_)), "no change, no knock");
        k.on_addresses(T0 + 4000, vec![a("203.0.113.99"), a("2001:db8::1")]);
        let Next::Knock(why) = k.poll(T0 + 4000) else {
            panic!()
        };
        assert_eq!(
            why.to_string(),
            "address changed: 203.0.113.10 -> 203.0.113.99, 2001:db8::1, knocking again"
        );
    }

    #[test]
    fn failures_back_off_doubling_to_a_cap_with_jitter_and_a_change_resets() {
        let mut k = Keeper::new(T0, true);
        let mut now = T0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let Some((at, _)) = next_knock(&mut k, now, true, now + 120_000) else {
                panic!("no retry")
            };
            // jitter 0 is the low end: 4/5 of the doubling wait.
            let line = k.on_knocked(at, Knocked::NotOpen("probe closed".into()), at, 0);
            assert!(line.starts_with("access did not open: probe closed"), "{line}");
            waits.push(at - now);
            now = at;
        }
        // The first knock is at once; then 1.6 s, 3.2 s, 6.4 s, … capped at 48 s (60 s − 20 %).
        assert_eq!(&waits[..], &[0, 1600, 3200, 6400, 12800, 25600, 48000, 48000]);
        // A new network knocks at once, whatever the backoff.
        k.on_addresses(now + 10, vec![a("192.0.2.5")]);
        assert!(matches!(
            k.poll(now + 10),
            Next::Knock(Why::AddressChanged { .. })
        ));
        for j in [0, 1, 12345, u32::MAX] {
            let d = backoff(3, j);
            assert!(
                d >= Duration::from_millis(6400) && d <= Duration::from_millis(9600),
                "{d:?}"
            );
        }
        assert_eq!(backoff(40, 0), Duration::from_secs(48));
    }

    #[test]
    fn a_profile_that_forbids_a_quick_second_knock_waits_for_its_next_step() {
        let mut k = Keeper::new(T0, false);
        open(&mut k, T0);
        // The rotating step used by this knock ends 20 s from now.
        let _ = k.on_knocked(T0, Knocked::Sent { left: HOUR }, T0 + 20_000, 0);
        k.on_addresses(T0 + 1000, vec![a("203.0.113.10")]);
        k.on_addresses(T0 + 2000, vec![a("203.0.113.99")]);
        let (at, why) = next_knock(&mut k, T0 + 2000, true, T0 + 60_000).unwrap();
        assert_eq!(at, T0 + 20_000);
        assert!(matches!(why, Why::AddressChanged { .. }));
    }

    #[test]
    fn a_change_during_a_failed_knock_knocks_again_at_once_not_after_the_backoff() {
        let mut k = Keeper::new(T0, true);
        assert_eq!(k.poll(T0), Next::Watch);
        k.on_addresses(T0, vec![a("203.0.113.10")]);
        assert_eq!(k.poll(T0), Next::Knock(Why::First));
        let _ = k.on_knocked(T0, Knocked::NotOpen("x".into()), T0, 0);
        assert_eq!(k.poll(T0 + 5), Next::Watch);
        k.on_addresses(T0 + 5, vec![a("203.0.113.10")]);
        let _ = k.poll(T0 + 10);
        assert!(matches!(k.poll(T0 + 10), Next::Wait(_)));
        assert!(matches!(
            k.poll(T0 + 1700),
            Next::Knock(Why::Retry { attempt: 2 })
        ));
        let _ = k.on_knocked(T0 + 4700, Knocked::NotOpen("probe closed".into()), T0, 0);
        assert_eq!(k.poll(T0 + 4700), Next::Watch, "right after the knock");
        k.on_addresses(T0 + 4700, vec![a("203.0.113.77")]);
        assert!(matches!(
            k.poll(T0 + 4700),
            Next::Knock(Why::AddressChanged { .. })
        ));
    }

    #[test]
    fn a_short_grant_never_renews_faster_than_the_floor() {
        assert_eq!(renew_after(Duration::from_secs(1)), RENEW_MIN);
        assert_eq!(renew_after(Duration::from_secs(9)), Duration::from_secs(6));
    }
}
