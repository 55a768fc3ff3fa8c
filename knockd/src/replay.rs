//! What has been used once and must not work again: SPA nonces and rotating steps, each kept
//! until it would be refused anyway (aged out, step gone). Bounded: when full of live entries it
//! refuses new ones rather than forget one — forgetting would let a replay through.

use std::collections::HashMap;

#[derive(Debug)]
pub struct ReplayCache {
    cap: usize,
    until: HashMap<String, i64>,
}

/// An entry to make durable before the grant it belongs to is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayMark {
    pub key: String,
    /// Unix ms after which the entry may be forgotten.
    pub until: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Remembered {
    New,
    Replayed,
    Full,
}

impl ReplayCache {
    pub fn new(cap: usize) -> ReplayCache {
        ReplayCache {
            cap: cap.max(1),
            until: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Whether `key` was used and is still remembered at `now`.
    pub fn seen(&self, key: &str, now: i64) -> bool {
        self.until.get(key).is_some_and(|u| *u > now)
    }

    /// Remembers `key` until `until` unless it is already remembered.
    pub fn remember(&mut self, key: &str, until: i64, now: i64) -> Remembered {
        if self.seen(key, now) {
            return Remembered::Replayed;
        }
        if self.until.len() >= self.cap {
            self.purge(now);
            if self.until.len() >= self.cap {
                return Remembered::Full;
            }
        }
        self.until.insert(key.to_string(), until);
        Remembered::New
    }

    /// Forgets what has aged out.
    pub fn purge(&mut self, now: i64) {
        self.until.retain(|_, u| *u > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_then_forgets_and_refuses_when_full() {
        let mut c = ReplayCache::new(2);
        assert_eq!(c.remember("a", 100, 0), Remembered::New);
        assert_eq!(c.remember("a", 100, 50), Remembered::Replayed);
        assert_eq!(c.remember("b", 200, 50), Remembered::New);
        assert_eq!(
            c.remember("c", 200, 50),
            Remembered::Full,
            "never forgets a live entry"
        );
        assert!(c.seen("a", 99) && !c.seen("a", 100));
        assert_eq!(c.remember("c", 200, 100), Remembered::New, "a has aged out");
        assert_eq!(c.len(), 2);
    }
}
