//! Live calls by remote address, as AMI reports them: which addresses' grants must be held open,
//! and when the last call from an address ends. Pure: time is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::base::clock::UnixMs;
use crate::control::CallEntry;

#[derive(Clone, Debug, PartialEq, Eq)]
struct LiveCall {
    channel: String,
    address: IpAddr,
    since: UnixMs,
}

/// Calls keyed by Asterisk's channel `Uniqueid`.
#[derive(Debug, Default)]
pub struct LiveCalls {
    calls: BTreeMap<String, LiveCall>,
}

impl LiveCalls {
    /// A call is up. True when it is the first live call from its address (a hold should start).
    pub fn up(&mut self, id: &str, channel: &str, address: IpAddr, now: UnixMs) -> bool {
        let first = !self.has(address);
        match self.calls.get_mut(id) {
            // Known already (reported again after a re-sync): keep its start.
            Some(c) if c.address == address => return false,
            Some(c) => {
                c.address = address;
                c.channel = channel.to_string();
            }
            None => {
                self.calls.insert(
                    id.to_string(),
                    LiveCall {
                        channel: channel.to_string(),
                        address,
                        since: now,
                    },
                );
            }
        }
        first
    }

    /// A call ended. Its address when that was the address's last live call (release its hold).
    pub fn down(&mut self, id: &str) -> Option<IpAddr> {
        let gone = self.calls.remove(id)?;
        (!self.has(gone.address)).then_some(gone.address)
    }

    /// After a re-sync: only the calls in `alive` are still up. Returns addresses left with none.
    pub fn retain(&mut self, alive: &BTreeSet<String>) -> Vec<IpAddr> {
        let before = self.addresses();
        self.calls.retain(|id, _| alive.contains(id));
        let after = self.addresses();
        before.difference(&after).copied().collect()
    }

    /// Whether the call `id` is known already (a repeat report, not a new call).
    pub fn knows(&self, id: &str) -> bool {
        self.calls.contains_key(id)
    }

    pub fn has(&self, address: IpAddr) -> bool {
        self.calls.values().any(|c| c.address == address)
    }

    /// Every address with a live call.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.calls.values().map(|c| c.address).collect()
    }

    pub fn entries(&self) -> Vec<CallEntry> {
        self.calls
            .values()
            .map(|c| CallEntry {
                channel: c.channel.clone(),
                address: c.address,
                since: c.since,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_call_from_an_address_releases_it() {
        let mut c = LiveCalls::default();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "2001:db8::20".parse().unwrap();
        assert!(!c.knows("1.0"));
        assert!(c.up("1.0", "PJSIP/701-0", a, 1_000));
        assert!(c.knows("1.0"));
        assert!(!c.up("1.1", "PJSIP/701-1", a, 2_000));
        assert!(
            !c.up("1.0", "PJSIP/701-0", a, 3_000),
            "a repeat report is not a new call"
        );
        assert!(c.up("1.2", "PJSIP/702-2", b, 2_000));
        assert_eq!(c.entries()[0].since, 1_000);
        assert_eq!(c.down("1.0"), None, "another call from a is up");
        assert_eq!(c.down("1.1"), Some(a));
        assert_eq!(c.down("1.1"), None);
        assert_eq!(c.addresses(), BTreeSet::from([b]));
    }

    #[test]
    fn resync_drops_calls_that_ended_unseen() {
        let mut c = LiveCalls::default();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "203.0.113.20".parse().unwrap();
        c.up("1.0", "PJSIP/701-0", a, 0);
        c.up("1.1", "PJSIP/702-1", b, 0);
        c.up("1.2", "PJSIP/702-2", b, 0);
        let released = c.retain(&BTreeSet::from(["1.2".to_string()]));
        assert_eq!(released, vec![a]);
        assert_eq!(c.len(), 1);
    }
}
