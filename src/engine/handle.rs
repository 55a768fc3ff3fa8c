//! The engine's handle: how every part of the daemon asks the one writer for something.

use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::oneshot;

use super::Job;
use crate::control::{Reply, Request};
use crate::model::Source;

/// How every part of the daemon (control socket, FastAGI, knock listener, AMI) asks the engine
/// for something. Cheap to clone; the engine stops once every handle is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Job>,
}

impl EngineHandle {
    pub fn new(tx: SyncSender<Job>) -> EngineHandle {
        EngineHandle { tx }
    }

    /// Sends one request and waits for its reply. A full queue is refused at once, not waited on.
    pub async fn submit(&self, request: Request, who: &str, source: Source) -> Reply {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            request,
            who: who.to_string(),
            source,
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Reply::error("the daemon is stopping")),
            Err(TrySendError::Full(_)) => Reply::error("the daemon is busy; try again"),
            Err(TrySendError::Disconnected(_)) => Reply::error("the daemon is stopping"),
        }
    }
}
