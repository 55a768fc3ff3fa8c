//! Registration attempts the table dropped, shared between the reader that records them (the SIP
//! NFLOG group) and the DISA call flow that asks "which address is this endpoint's phone trying
//! to register from?". Time is passed in (Unix ms).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use knockd::attempts::{AttemptCaps, AttemptMemory, AttemptStats, Attempts};

use crate::base::lock::lock;

/// Cheap to clone; every clone sees the same memory.
#[derive(Clone, Debug)]
pub struct SeenAttempts {
    inner: Arc<Mutex<AttemptMemory>>,
}

impl SeenAttempts {
    pub fn new(caps: AttemptCaps) -> SeenAttempts {
        SeenAttempts {
            inner: Arc::new(Mutex::new(AttemptMemory::new(caps))),
        }
    }

    /// One dropped attempt at `now` from `source` to register as `user`.
    pub fn record(&self, now: i64, source: IpAddr, user: &str, user_agent: Option<&str>) {
        lock(&self.inner).record(now, source, user, user_agent);
    }

    /// The addresses that tried to register as `user` within the window of `now`.
    pub fn lookup(&self, now: i64, user: &str) -> Attempts {
        lock(&self.inner).lookup(now, user)
    }

    /// Forgets `user`'s attempts, as after a grant made from them.
    pub fn forget(&self, user: &str) {
        lock(&self.inner).forget(user);
    }

    /// Drops users whose attempts are all out of the window, so memory shrinks when they stop.
    pub fn expire(&self, now: i64) {
        lock(&self.inner).expire(now);
    }

    /// Users and addresses held now.
    pub fn sizes(&self) -> (usize, usize) {
        let m = lock(&self.inner);
        (m.len(), m.sources())
    }

    pub fn stats(&self) -> AttemptStats {
        lock(&self.inner).stats
    }
}

impl Default for SeenAttempts {
    fn default() -> SeenAttempts {
        SeenAttempts::new(AttemptCaps::default())
    }
}
