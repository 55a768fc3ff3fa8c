//! Human durations for config and CLI: `90s`, `15m`, `2h`, `1d`, `1h30m`, read by the parser
//! the knock client shares (`knockd::duration::parse`) under our caps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of seconds, written and read as `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(pub Duration);

/// Years are nonsense for access grants and overflow nft's timeouts.
const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 86400);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a duration; write e.g. 90s, 15m, 2h, 1d or 1h30m")]
pub struct ParseTtlError(String);

impl FromStr for Ttl {
    type Err = ParseTtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        knockd::duration::parse(s, TTL_MAX)
            .filter(|d| d.subsec_nanos() == 0)
            .map(Ttl)
            .ok_or_else(|| ParseTtlError(s.to_string()))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human(self.0))
    }
}

/// `1d2h`, `1h30m`, `45s`, `0s`: the two largest units, for tables and messages.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let parts = [
        (s / 86400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A short delay for timers (reconnect backoff, keep-alive): `250ms`, or anything a [`Ttl`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Delay(pub Duration);

impl FromStr for Delay {
    type Err = ParseTtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        knockd::duration::parse(s, TTL_MAX)
            .filter(|d| d.subsec_nanos() % 1_000_000 == 0)
            .map(Delay)
            .ok_or_else(|| ParseTtlError(s.to_string()))
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() != 0 || self.0.is_zero() {
            write!(f, "{}ms", self.0.as_millis())
        } else {
            f.write_str(&human(self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Delay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Time from `now` to `end`, to the nearest second.
pub fn left(now: crate::base::clock::UnixMs, end: crate::base::clock::UnixMs) -> String {
    human(Duration::from_secs(((end - now).max(0) as u64 + 500) / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let p = |s: &str| s.parse::<Ttl>().map(|t| t.0.as_secs());
        assert_eq!(p("90s"), Ok(90));
        assert_eq!(p("15m"), Ok(900));
        assert_eq!(p("2h"), Ok(7200));
        assert_eq!(p("1d"), Ok(86400));
        assert_eq!(p("1h30m"), Ok(5400));
        assert_eq!(p("3600"), Ok(3600));
        assert_eq!(p("1h 30m"), Ok(5400));
        for bad in [
            "",
            "h",
            "2x",
            "-1h",
            "1.5h",
            "99999999999999999999d",
            "20000d",
            "250ms",
        ] {
            assert!(p(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn displays_two_largest_units() {
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(86400 + 7200 + 5)), "1d2h");
        assert_eq!(human(Duration::from_secs(3600 + 5)), "1h");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn delays_take_milliseconds() {
        let p = |s: &str| s.parse::<Delay>().map(|d| d.0.as_millis());
        assert_eq!(p("250ms"), Ok(250));
        assert_eq!(p("2s"), Ok(2000));
        assert_eq!(p("1m"), Ok(60_000));
        assert!(p("1.5ms").is_err() && p("ms").is_err() && p("-1ms").is_err());
        assert_eq!(Delay(Duration::from_millis(250)).to_string(), "250ms");
        assert_eq!(Delay(Duration::from_secs(4)).to_string(), "4s");
    }
}
