//! Registered contacts as the AMI listener learns them (endpoint → addresses), read by the DISA
//! call flow for its "registered" address mode and by `passknock contacts`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::base::lock::{read, write};

/// Shared, cheap to clone; empty until the AMI listener fills it.
#[derive(Clone, Debug, Default)]
pub struct Contacts {
    inner: Arc<RwLock<BTreeMap<String, BTreeSet<IpAddr>>>>,
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
        let mut map = write(&self.inner);
        map.entry(endpoint.to_string()).or_default().insert(ip);
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
}
