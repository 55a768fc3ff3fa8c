//! Registered contacts as the AMI listener learns them (endpoint → addresses), read by the DISA
//! call flow for its "registered" address mode and by `passknock contacts`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::base::lock::{read, write};

/// Shared, cheap to clone; empty until the AMI listener fills it.
#[derive(Clone, Debug, Default)]
pub struct Contacts {
    inner: Arc<RwLock<BTreeMap<String, BTreeSet<IpAddr>>>>,
    /// Woken on every change, for callers waiting on a registration.
    changed: Arc<Notify>,
}

impl Contacts {
    /// Addresses `endpoint` is registered from.
    pub fn registered(&self, endpoint: &str) -> Vec<IpAddr> {
        let map = read(&self.inner);
        map.get(endpoint)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Endpoints registered from at least one address.
    pub fn endpoints(&self) -> usize {
        read(&self.inner).len()
    }

    pub fn add(&self, endpoint: &str, ip: IpAddr) {
        write(&self.inner)
            .entry(endpoint.to_string())
            .or_default()
            .insert(ip);
        self.changed.notify_waiters();
    }

    /// Whether `endpoint` is registered from `ip`.
    pub fn is_registered(&self, endpoint: &str, ip: IpAddr) -> bool {
        read(&self.inner).get(endpoint).is_some_and(|s| s.contains(&ip))
    }

    /// Waits until `endpoint` is registered from `ip`, for at most `wait`; true when it is
    /// (at once if it already was). "Your phone is connected" after a grant.
    pub async fn wait_registered(&self, endpoint: &str, ip: IpAddr, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Take the ticket before looking, so a change between the look and the wait wakes us.
            let changed = self.changed.notified();
            if self.is_registered(endpoint, ip) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.is_registered(endpoint, ip);
            }
        }
    }

    pub fn remove(&self, endpoint: &str, ip: IpAddr) {
        let mut map = write(&self.inner);
        if let Some(set) = map.get_mut(endpoint) {
            set.remove(&ip);
            if set.is_empty() {
                map.remove(endpoint);
            }
        }
    }

    /// Replaces everything, as after a full re-sync.
    pub fn replace_all(&self, all: BTreeMap<String, BTreeSet<IpAddr>>) {
        *write(&self.inner) = all;
        self.changed.notify_waiters();
    }

    pub fn snapshot(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        read(&self.inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_replace() {
        let c = Contacts::default();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        c.add("701", a);
        assert_eq!(c.clone().registered("701"), vec![a]);
        c.remove("701", a);
        assert!(c.registered("701").is_empty());
        c.replace_all(BTreeMap::from([("702".to_string(), BTreeSet::from([a]))]));
        assert_eq!(c.snapshot().len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_endpoint_registers_from_the_address() {
        let c = Contacts::default();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "203.0.113.20".parse().unwrap();
        assert!(!c.wait_registered("701", a, Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait_registered("701", a, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.add("701", b);
        c.add("702", a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "another address or endpoint is not this phone"
        );
        c.add("701", a);
        assert!(waiter.await.unwrap());
        assert!(c.wait_registered("701", a, Duration::ZERO).await);
    }
}
