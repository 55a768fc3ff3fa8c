//! Wall-clock time as Unix milliseconds, its UTC rendering for audit lines, and the monotonic
//! reference that keeps a wall-clock step from lengthening access.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds: grants outlive the process, so monotonic time will not do.
pub type UnixMs = i64;

/// How far the shared store's clock is ahead of ours, in ms: 0 with the embedded store. With a
/// database shared by several nodes every time is the database server's, so nodes whose own
/// clocks disagree still agree on when a grant ends.
static OFFSET: AtomicI64 = AtomicI64::new(0);

/// Unix time in ms on the store's clock (the system's, moved by [`set_offset`]).
pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + OFFSET.load(Ordering::Relaxed)
}

/// Takes the shared store's clock offset, measured when it connects.
pub fn set_offset(ms: i64) {
    OFFSET.store(ms, Ordering::Relaxed);
}

/// The offset [`now_ms`] adds, for `status`.
pub fn offset() -> i64 {
    OFFSET.load(Ordering::Relaxed)
}

/// One reading of both clocks: the wall clock that the store's ends are written in, and the
/// monotonic clock that no one can step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub wall: UnixMs,
    pub mono: Instant,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: now_ms(),
            mono: Instant::now(),
        }
    }
}

/// Holds the ends the firewall is given to the monotonic clock.
///
/// Ends are wall-clock times (they outlive the process), so stepping the wall clock back by 3 h
/// would make a 1 h grant look 4 h long. The first time an end is seen — when it is granted, or
/// at daemon start for what the store already holds — it is pinned to the monotonic instant it
/// then falls at. From then on its time truly left is the smaller of the wall view
/// (`end - wall`) and the monotonic view (`pinned - mono`): a step back changes nothing, a step
/// forward shortens access just as the store's own expiry does. Ends granted after a step are
/// pinned after it, so they get their whole TTL.
#[derive(Debug, Default)]
pub struct Clock {
    last: Option<Now>,
    /// (address, wall end) → when that end truly falls.
    pinned: HashMap<(IpAddr, UnixMs), Instant>,
}

impl Clock {
    /// How far the wall clock moved against the monotonic clock since the previous reading
    /// (positive: forward), when that is at least `min`. Each step is reported once, by the first
    /// reading after it.
    pub fn step(&mut self, now: Now, min: Duration) -> Option<i64> {
        let last = self.last.replace(now)?;
        let mono = now.mono.saturating_duration_since(last.mono).as_millis() as i64;
        let step = (now.wall - last.wall) - mono;
        (step.unsigned_abs() >= min.as_millis() as u64).then_some(step)
    }

    /// The wall-clock end to give the kernel for `addr`'s element that the store says ends at
    /// `end`: no later than its time truly left. `None` when that time is up on either clock.
    pub fn end(&mut self, addr: IpAddr, end: UnixMs, now: Now) -> Option<UnixMs> {
        let wall_left = end - now.wall;
        let pinned = *self
            .pinned
            .entry((addr, end))
            .or_insert_with(|| now.mono + Duration::from_millis(wall_left.max(0) as u64));
        let mono_left = pinned.saturating_duration_since(now.mono).as_millis() as i64;
        let left = wall_left.min(mono_left);
        (left > 0).then_some(now.wall + left)
    }

    /// Forgets ends that are over on both clocks; until then a wall clock stepped back cannot
    /// revive them.
    pub fn forget_ended(&mut self, now: Now) {
        self.pinned
            .retain(|(_, end), pinned| *end > now.wall || *pinned > now.mono);
    }

    /// Ends currently pinned.
    pub fn pinned(&self) -> usize {
        self.pinned.len()
    }
}

/// `2026-11-21T08:13:50Z`.
pub fn utc(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's well-known method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_248_830_000), "2026-11-21T08:13:50Z");
    }

    const HOUR: i64 = 3_600_000;
    const W0: UnixMs = 1_795_248_830_000;
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

    fn at(base: Instant, wall: UnixMs, mono_ms: u64) -> Now {
        Now {
            wall,
            mono: base + Duration::from_millis(mono_ms),
        }
    }

    #[test]
    fn step_is_reported_once_with_its_size() {
        let t = Instant::now();
        let mut c = Clock::default();
        let min = Duration::from_secs(2);
        assert_eq!(c.step(at(t, W0, 0), min), None);
        // A minute passes on both clocks, with a little slew: no step.
        assert_eq!(c.step(at(t, W0 + 60_500, 60_000), min), None);
        assert_eq!(
            c.step(at(t, W0 + 61_500 - 3 * HOUR, 61_000), min),
            Some(-3 * HOUR)
        );
        assert_eq!(c.step(at(t, W0 + 62_500 - 3 * HOUR, 62_000), min), None);
        assert_eq!(c.step(at(t, W0 + 63_500, 63_000), min), Some(3 * HOUR));
    }

    #[test]
    fn a_step_never_lengthens_an_end() {
        let t = Instant::now();
        let mut c = Clock::default();
        let end = W0 + HOUR;
        assert_eq!(c.end(IP, end, at(t, W0, 0)), Some(end));
        // Back 3 h, a minute later: still 59 minutes left, not 3 h 59.
        let back = at(t, W0 + 60_000 - 3 * HOUR, 60_000);
        assert_eq!(c.end(IP, end, back), Some(back.wall + HOUR - 60_000));
        // A grant made after the step is pinned after it and keeps its whole hour.
        assert_eq!(c.end(IP, back.wall + HOUR, back), Some(back.wall + HOUR));
        // Past the hour on the monotonic clock, the old end is over whatever the wall says.
        assert_eq!(
            c.end(IP, end, at(t, W0 + HOUR + 1 - 3 * HOUR, HOUR as u64 + 1)),
            None
        );
        // Forward 3 h: over on the wall clock already.
        assert_eq!(c.end(IP, end, at(t, W0 + 60_000 + 3 * HOUR, 60_000)), None);
    }

    #[test]
    fn ended_pins_are_forgotten_only_when_both_clocks_agree() {
        let t = Instant::now();
        let mut c = Clock::default();
        c.end(IP, W0 + HOUR, at(t, W0, 0));
        // Wall stepped forward past the end; the monotonic clock is not there yet.
        c.forget_ended(at(t, W0 + 2 * HOUR, 60_000));
        assert_eq!(c.pinned(), 1);
        // Wall stepped back; the monotonic clock is past it: kept, or the end would revive.
        c.forget_ended(at(t, W0 - 2 * HOUR, HOUR as u64 + 1));
        assert_eq!(c.pinned(), 1);
        c.forget_ended(at(t, W0 + HOUR, HOUR as u64));
        assert_eq!(c.pinned(), 0);
    }
}
