//! Durations in the client config: `250ms`, `30s`, `5m`, `1h`, `1m30s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a duration; write e.g. 250ms, 30s or 5m");
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut ms: u64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (1, 2)
            } else {
                match rest.bytes().next() {
                    Some(b's') => (1000, 1),
                    Some(b'm') => (60_000, 1),
                    Some(b'h') => (3_600_000, 1),
                    // A bare number is seconds.
                    None => (1000, 0),
                    _ => return Err(bad()),
                }
            };
            rest = &rest[len..];
            ms = n
                .checked_mul(unit)
                .and_then(|v| ms.checked_add(v))
                .filter(|v| *v <= 86_400_000)
                .ok_or_else(bad)?;
        }
        Ok(Dur(Duration::from_millis(ms)))
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
        for bad in ["", "s", "5x", "-1s", "2d"] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
