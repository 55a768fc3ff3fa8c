//! This node's link to the shared store, as the follower sees it: connected or since when not
//! and why, the last full resync, the changes followed since; read by `status`.

use std::sync::Mutex;

use crate::base::clock::UnixMs;

#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
}

#[derive(Clone, Debug, Default)]
pub struct LinkState {
    pub connected: bool,
    pub error: Option<String>,
    pub lost_since: Option<UnixMs>,
    pub resynced: Option<UnixMs>,
    pub followed: u64,
}

impl Link {
    fn with<T>(&self, f: impl FnOnce(&mut LinkState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Connected again (or for the first time): everything is read again from `now`.
    pub fn resynced(&self, now: UnixMs) {
        self.with(|s| {
            s.connected = true;
            s.error = None;
            s.lost_since = None;
            s.resynced = Some(now);
            s.followed = 0;
        })
    }

    pub fn followed(&self) {
        self.with(|s| s.followed += 1)
    }

    /// The link is down, or would not come up: `why` in the server's or the network's words.
    pub fn lost(&self, why: String, now: UnixMs) {
        self.with(|s| {
            if s.connected || s.lost_since.is_none() {
                s.lost_since = Some(now);
            }
            s.connected = false;
            s.error = Some(why);
        })
    }

    pub fn state(&self) -> LinkState {
        self.with(|s| s.clone())
    }
}
