//! The FastAGI listener: accepts Asterisk's connections, turns away peers it does not know before
//! reading a byte, gives a new connection a short while to send its `agi_*` block, caps how many
//! run at once, gives each a deadline, and stops on shutdown. What a session does is the handler's
//! business.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::session::{Session, SessionError};

/// Listener limits.
#[derive(Clone, Copy, Debug)]
pub struct ServerCaps {
    /// Sessions at once; more are closed once their environment has arrived (Asterisk's AGI()
    /// then fails, and the dialplan plays its no-service prompt).
    pub max_sessions: usize,
    /// The longest a session may last, from connect to end.
    pub session_deadline: Duration,
    /// How long a new connection has to send its `agi_*` block. Asterisk sends it at once; a
    /// connection that stays silent is closed without ever taking a session slot.
    pub start_timeout: Duration,
    /// Connections still starting (environment not yet read), at most; more are closed at once.
    pub max_starting: usize,
    /// The same, from one peer address. Asterisk connects from one address, so this must stay
    /// well above `max_sessions`.
    pub max_starting_per_peer: usize,
}

/// Serves FastAGI on `listener` until `shutdown`. `admit` is asked about each peer (IPv4-mapped
/// addresses given as IPv4) before anything is read; one it refuses is closed at once. `handler`
/// gets each started session and the peer's address.
pub async fn serve<A, H, F>(
    listener: TcpListener,
    limits: ServerCaps,
    admit: A,
    handler: H,
    shutdown: CancellationToken,
) where
    A: Fn(IpAddr) -> bool,
    H: Fn(Session<TcpStream>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let sessions = Arc::new(Semaphore::new(limits.max_sessions));
    let starting = Arc::new(Starting::new(limits.max_starting, limits.max_starting_per_peer));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!("FastAGI accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        if !admit(ip) {
            // Whoever speaks AGI names the caller and the source address: only Asterisk may.
            warn!("FastAGI: refusing {peer}: not loopback and not trusted");
            continue;
        }
        let slot = match starting.enter(ip) {
            Ok(slot) => slot,
            Err(full) => {
                warn!("FastAGI: refusing {peer}: {full}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let sessions = sessions.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let start = tokio::time::timeout(
                limits.start_timeout,
                Session::start(stream, limits.session_deadline),
            );
            let started = tokio::select! {
                _ = stop.cancelled() => return,
                s = start => s,
            };
            // Started or not, this connection no longer counts against the starting caps.
            drop(slot);
            let session = match started {
                Ok(Ok(s)) => s,
                Err(_) => {
                    // Not Asterisk, which sends its environment the moment it connects.
                    debug!(
                        "FastAGI {peer}: no AGI environment within {} ms; closed",
                        limits.start_timeout.as_millis()
                    );
                    return;
                }
                Ok(Err(SessionError::Hangup | SessionError::Closed)) => {
                    debug!("FastAGI {peer} left before starting");
                    return;
                }
                Ok(Err(e)) => {
                    warn!("FastAGI {peer}: {e}");
                    return;
                }
            };
            // The slot is taken only now, so connections that never start cannot hold one.
            let Ok(_permit) = sessions.try_acquire_owned() else {
                warn!(
                    "FastAGI: {} sessions already running; refusing {peer}",
                    limits.max_sessions
                );
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = handler(session, peer) => {}
            }
        });
    }
}

/// Connections still starting: how many in all, and from each peer address.
struct Starting {
    max: usize,
    max_per_peer: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Why a connection was not let start.
#[derive(Debug, thiserror::Error)]
enum Full {
    #[error("{0} connections already starting")]
    All(usize),
    #[error("{0} connections already starting from this address")]
    Peer(usize),
}

impl Starting {
    fn new(max: usize, max_per_peer: usize) -> Starting {
        Starting {
            max,
            max_per_peer,
            counts: Mutex::default(),
        }
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<StartingSlot, Full> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max {
            return Err(Full::All(self.max));
        }
        let n = c.per_peer.entry(ip).or_insert(0);
        if *n >= self.max_per_peer {
            return Err(Full::Peer(self.max_per_peer));
        }
        *n += 1;
        c.total += 1;
        Ok(StartingSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One starting connection's place in the counts; given back on drop.
struct StartingSlot {
    table: Arc<Starting>,
    ip: IpAddr,
}

impl Drop for StartingSlot {
    fn drop(&mut self) {
        let mut c = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Bounded by the addresses starting right now, not by every address ever seen.
                c.per_peer.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_counts_cap_all_and_each_peer_and_are_given_back() {
        let s = Arc::new(Starting::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = s.enter(a).unwrap();
        let a2 = s.enter(a).unwrap();
        assert!(matches!(s.enter(a), Err(Full::Peer(2))));
        let b1 = s.enter(b).unwrap();
        assert!(matches!(s.enter(b), Err(Full::All(3))));
        drop(a1);
        let b2 = s.enter(b).unwrap();
        drop((a2, b1, b2));
        let c = s.counts.lock().unwrap();
        assert_eq!(c.total, 0);
        assert!(
            c.per_peer.is_empty(),
            "no entry left for a peer with nothing starting"
        );
    }
}
