//! The resolver: off the engine's thread, resolves every DNS name the standing entries and
//! `firewall.trusted` hold (A and
//! AAAA, through the system resolver) each `standing.resolve-every`, and at once when an entry is
//! added, and hands the engine the answers. The system resolver gives no TTLs, so the period is
//! how fast a moved name is followed. A lookup that hangs is given up after a while and counts as
//! a failure; nothing here ever stops the daemon.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Config;
use crate::engine::{Actor, Answer, EngineHandle};
use crate::model::Source;

/// Longest one name's lookup may take.
const LOOKUP_MAX: Duration = Duration::from_secs(10);

/// Starts the resolver; `now` wakes it at once.
pub fn spawn(
    config: &Config,
    engine: EngineHandle,
    now: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let every = config.standing.resolve_every.0;
    tokio::spawn(async move {
        let actor = Actor::new("resolver", Source::Admin);
        loop {
            let names = match engine.standing_list(&actor).await {
                Ok(l) => l.followed.into_iter().collect::<BTreeSet<String>>(),
                Err(e) => {
                    debug!("resolver: no standing entries to read: {e}");
                    BTreeSet::new()
                }
            };
            if !names.is_empty() {
                let mut answers = Vec::new();
                for name in names {
                    let result = lookup(name.clone()).await;
                    answers.push(Answer { name, result });
                }
                if let Err(e) = engine.resolved(&actor, answers).await {
                    warn!("resolver: the engine did not take the answers: {e}");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = now.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// A and AAAA through `getaddrinfo`, on a blocking thread.
async fn lookup(name: String) -> Result<Vec<IpAddr>, String> {
    let task = tokio::task::spawn_blocking(move || {
        (name.as_str(), 0u16)
            .to_socket_addrs()
            .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    });
    match tokio::time::timeout(LOOKUP_MAX, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", LOOKUP_MAX.as_secs())),
    }
}
