//! Human durations (`250ms`, `30s`, `5m`, `1h30m`): the one parser the daemon and the knock
//! client share, and the client config's duration type.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Reads a human duration, the one way daemon and client both do: `humantime` units (`250ms`,
/// `90s`, `15m`, `2h`, `1d`, `1w`, `1h30m`), or a bare number of seconds (`90`). Signs,
/// fractions and anything over `max` are refused; the caller words its own error.
pub fn parse(s: &str, max: Duration) -> Option<Duration> {
    let t = s.trim();
    // humantime takes `1.5h` and `µs`; our files and flags speak whole units only.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
        return None;
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(t.parse().ok()?)
    } else {
        humantime::parse_duration(t).ok()?
    };
    (d <= max).then_some(d)
}

/// A client delay or timeout: whole milliseconds, at most a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// Knock steps and waits longer than this are typing mistakes.
const DUR_MAX: Duration = Duration::from_secs(86_400);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, DUR_MAX)
            .filter(|d| d.subsec_nanos() % 1_000_000 == 0)
            .map(Dur)
            .ok_or_else(|| format!("`{s}` is not a duration; write e.g. 250ms, 30s or 5m"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let d = |s: &str| s.parse::<Dur>().map(|d| d.0.as_millis());
        assert_eq!(d("250ms"), Ok(250));
        assert_eq!(d("30s"), Ok(30_000));
        assert_eq!(d("1m30s"), Ok(90_000));
        assert_eq!(d("5"), Ok(5_000));
        assert_eq!(d("1h 30m"), Ok(5_400_000));
        for bad in ["", "s", "5x", "-1s", "2d", "1.5s", "1us"] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
