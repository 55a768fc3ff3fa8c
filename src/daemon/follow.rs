//! Following the store other nodes share: their changes handed to the engine, a full resync on
//! every (re)connect (what was sent while away is lost), and this node's sign of life.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::base::clock::now_ms;
use crate::engine::EngineHandle;
use crate::store::pg::{Follower, Link, Target};

/// How long one wait for a change lasts: the stop and the heartbeat are looked at between waits.
const WAIT: Duration = Duration::from_millis(500);
/// How often this node says it is alive, and how soon it tries the database again.
const BEAT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_secs(1);

/// Starts the follower on a thread of its own (the client blocks).
pub fn spawn(
    target: Target,
    link: Arc<Link>,
    engine: EngineHandle,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || follow(&target, &link, &engine, &shutdown))
}

fn follow(target: &Target, link: &Link, engine: &EngineHandle, shutdown: &CancellationToken) {
    let mut said_down = false;
    while !shutdown.is_cancelled() {
        let mut f = match Follower::open(target) {
            Ok(f) => f,
            Err(e) => {
                if !said_down {
                    warn!("shared store {}: {e}; enforcing what this node has, new grants refused until it is back", target.shown());
                    said_down = true;
                }
                link.lost(e.to_string(), now_ms());
                std::thread::sleep(RETRY);
                continue;
            }
        };
        // Listening before reading: a change made during the resync is heard after it.
        info!(
            "shared store {} reached as node {}: reading the whole live state again",
            target.shown(),
            target.node
        );
        link.resynced(now_ms());
        if !engine.remote_change(None) {
            return;
        }
        let mut beat = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if beat.elapsed() >= BEAT {
                if let Err(e) = f.heartbeat() {
                    warn!("shared store {}: {e}", target.shown());
                }
                beat = Instant::now();
            }
            match f.next(WAIT) {
                Ok(Some(change)) => {
                    link.followed();
                    if !engine.remote_change(change.addresses) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!("shared store {} lost: {e}; enforcing what this node has, new grants refused until it is back", target.shown());
                    said_down = true;
                    link.lost(e.to_string(), now_ms());
                    break;
                }
            }
        }
    }
}
