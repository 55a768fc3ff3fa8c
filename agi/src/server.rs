//! The FastAGI listener: accepts Asterisk's connections, caps how many run at once, gives each a
//! deadline, and stops on shutdown. What a session does is the handler's business.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::session::{Session, SessionError};

/// Listener limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sessions at once; more are closed at once (Asterisk's AGI() then fails, and the dialplan
    /// plays its no-service prompt).
    pub max_sessions: usize,
    /// The longest a session may last, start to end.
    pub session_deadline: Duration,
}

/// Serves FastAGI on `listener` until `shutdown`. `handler` gets each started session and the
/// peer's address.
pub async fn serve<H, F>(listener: TcpListener, limits: Limits, handler: H, shutdown: CancellationToken)
where
    H: Fn(Session<TcpStream>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_sessions));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(
                "FastAGI: {} sessions already running; refusing {peer}",
                limits.max_sessions
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let session = tokio::select! {
                _ = stop.cancelled() => return,
                s = Session::start(stream, limits.session_deadline) => s,
            };
            match session {
                Ok(s) => {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = handler(s, peer) => {}
                    }
                }
                Err(SessionError::Hangup | SessionError::Closed) => {
                    debug!("FastAGI {peer} left before starting")
                }
                Err(e) => warn!("FastAGI {peer}: {e}"),
            }
        });
    }
}
