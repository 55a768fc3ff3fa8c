//! The AMI client: connects, logs in (MD5 challenge or plain), re-syncs, keeps the connection
//! alive with `Ping`, and reconnects with backoff — until shutdown. The only code here that
//! touches a socket; parsing is [`crate::codec`], meaning is [`crate::session`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::{Action, Decoder, DecoderCaps, Frame, Message, GREETING_PREFIX};
use crate::session::{Session, Update};

/// The manager secret. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AmiSecret(String);

impl AmiSecret {
    pub fn new(s: impl Into<String>) -> AmiSecret {
        AmiSecret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AmiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AmiSecret(hidden)")
    }
}

/// Wiped on drop, so a freed buffer does not keep the manager secret.
impl Drop for AmiSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// How to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMethod {
    /// `Action: Challenge` then `Key: md5(challenge + secret)`: the secret never crosses the wire.
    Md5,
    /// `Secret:` in clear.
    Plain,
}

/// Everything the client needs; the daemon builds it from `[ami]`.
#[derive(Clone, Debug)]
pub struct AmiSettings {
    /// `host:port`.
    pub address: String,
    pub username: String,
    pub secret: AmiSecret,
    pub login: LoginMethod,
    /// First wait before reconnecting; doubles up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// A `Ping` goes out this often; a connection that says nothing for one whole period after a
    /// ping is dead.
    pub keepalive: Duration,
    /// Bound on connecting, the greeting, login, and any one write.
    pub timeout: Duration,
    pub limits: DecoderCaps,
}

/// A connection that lasted this long was healthy: the next failure starts the backoff afresh.
const STABLE: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Counters the daemon shows (`passknock contacts`) and the bench reads. Shared, lock-free.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub logins: AtomicU64,
    pub messages: AtomicU64,
    pub events: AtomicU64,
    /// Blocks dropped for their size or for garbage.
    pub skipped: AtomicU64,
    /// Events missing what we need, actions refused.
    pub problems: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("not an AMI server (greeting {0:?})")]
    NotAmi(String),
    #[error("login as {user} refused: {message}")]
    LoginRefused { user: String, message: String },
    #[error("Asterisk closed the connection")]
    Closed,
    #[error("no reply to keep-alive for {0:?}")]
    Silent(Duration),
    #[error("AMI connection: {0}")]
    Io(#[from] std::io::Error),
}

/// How a connection ended without an error.
enum Ended {
    Shutdown,
    /// The daemon dropped its receiver: nobody listens any more.
    NoListener,
}

/// Backoff between connection attempts: `first`, doubling, at most `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Runs the client until `shutdown`, sending what it learns to `updates`.
pub async fn run(
    settings: AmiSettings,
    updates: mpsc::Sender<Update>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(settings.backoff_first, settings.backoff_max);
    let mut was_up = true; // the first failure is worth a warning
    loop {
        let started = Instant::now();
        let mut conn = Connection {
            settings: &settings,
            updates: &updates,
            stats: &stats,
            shutdown: &shutdown,
            logged_in: false,
        };
        let result = conn.serve().await;
        let logged_in = conn.logged_in;
        stats.connected.store(false, Ordering::Relaxed);
        let reason = match result {
            Ok(Ended::Shutdown) | Ok(Ended::NoListener) => return,
            Err(e) => e.to_string(),
        };
        stats.set_error(Some(reason.clone()));
        if logged_in {
            let gone = Update::Disconnected {
                reason: reason.clone(),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = updates.send(gone) => if r.is_err() { return },
            }
        }
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if was_up || logged_in {
            warn!("AMI {}: {reason}; reconnecting in {delay:?}", settings.address);
        } else {
            debug!("AMI {}: {reason}; reconnecting in {delay:?}", settings.address);
        }
        was_up = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

struct Connection<'a> {
    settings: &'a AmiSettings,
    updates: &'a mpsc::Sender<Update>,
    stats: &'a Stats,
    shutdown: &'a CancellationToken,
    logged_in: bool,
}

/// The socket and what has been read from it but not decoded yet.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Wire {
    /// Reads more bytes; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.buf.reserve(READ_CHUNK);
        let n = (&mut self.stream)
            .take(READ_CHUNK as u64)
            .read_buf(&mut self.buf)
            .await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    async fn send(&mut self, action: &Action, limit: Duration) -> Result<(), ClientError> {
        timeout(limit, self.stream.write_all(&action.encode()))
            .await
            .map_err(|_| ClientError::Timeout("a write to Asterisk"))??;
        Ok(())
    }

    /// The next frame, reading as needed, before `deadline`.
    async fn frame(&mut self, deadline: Instant, what: &'static str) -> Result<Frame, ClientError> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf) {
                return Ok(f);
            }
            tokio::time::timeout_at(deadline, self.fill())
                .await
                .map_err(|_| ClientError::Timeout(what))??;
        }
    }

    /// Sends `action` and waits for the response carrying its ActionID.
    async fn request(
        &mut self,
        action: Action,
        limit: Duration,
        what: &'static str,
    ) -> Result<Message, ClientError> {
        self.send(&action, limit).await?;
        let deadline = Instant::now() + limit;
        loop {
            if let Frame::Message(m) = self.frame(deadline, what).await? {
                if m.response().is_some() && m.action_id() == Some(action.id.as_str()) {
                    return Ok(m);
                }
            }
        }
    }
}

impl Connection<'_> {
    async fn serve(&mut self) -> Result<Ended, ClientError> {
        let s = self.settings;
        let mut wire = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(Ended::Shutdown),
            w = self.connect_and_login() => w?,
        };
        self.logged_in = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        self.stats.set_error(None);
        info!("AMI {}: logged in as {}; re-syncing", s.address, s.username);
        let (mut session, actions) = Session::start();
        if !self
            .deliver(Update::LoggedIn {
                banner: String::new(),
            })
            .await
        {
            return Ok(Ended::NoListener);
        }
        for a in &actions {
            wire.send(a, s.timeout).await?;
        }
        let mut ping = tokio::time::interval_at(Instant::now() + s.keepalive, s.keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut synced_logged = false;
        loop {
            // Decode everything already buffered before reading more.
            while let Some(frame) = wire.decoder.decode(&mut wire.buf) {
                let msg = match frame {
                    Frame::Message(m) => m,
                    Frame::Skipped(why) => {
                        let n = self.stats.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            warn!("AMI {}: dropped {why} ({n} dropped so far)", s.address);
                        }
                        continue;
                    }
                    Frame::Greeting(_) => continue,
                };
                self.stats.messages.fetch_add(1, Ordering::Relaxed);
                if msg.event().is_some() {
                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                }
                let out = session.on_message(&msg);
                for p in &out.problems {
                    let n = self.stats.problems.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!("AMI {}: {p} ({n} so far)", s.address);
                    }
                }
                for a in &out.actions {
                    wire.send(a, s.timeout).await?;
                }
                for u in out.updates {
                    if !self.deliver(u).await {
                        return Ok(if self.shutdown.is_cancelled() {
                            Ended::Shutdown
                        } else {
                            Ended::NoListener
                        });
                    }
                }
                if !synced_logged && session.synced() {
                    synced_logged = true;
                    info!("AMI {}: re-synced contacts and channels", s.address);
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let bye = Action::new("Logoff", session.id("logoff"));
                    let _ = wire.send(&bye, Duration::from_millis(200)).await;
                    return Ok(Ended::Shutdown);
                }
                r = wire.fill() => {
                    r?;
                    last_heard = Instant::now();
                }
                _ = ping.tick() => {
                    if let Some(sent) = ping_sent {
                        if last_heard < sent {
                            return Err(ClientError::Silent(s.keepalive));
                        }
                    }
                    let id = session.id("ping");
                    wire.send(&Action::new("Ping", id), s.timeout).await?;
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Hands one update to the daemon; false if shutting down or nobody listens.
    async fn deliver(&self, u: Update) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = self.updates.send(u) => r.is_ok(),
        }
    }

    async fn connect_and_login(&self) -> Result<Wire, ClientError> {
        let s = self.settings;
        let stream = timeout(s.timeout, TcpStream::connect(&s.address))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|source| ClientError::Connect {
                address: s.address.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut wire = Wire {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            decoder: Decoder::new(s.limits),
        };
        let deadline = Instant::now() + s.timeout;
        match wire.frame(deadline, "the AMI greeting").await? {
            Frame::Greeting(g) if g.starts_with(GREETING_PREFIX) => {}
            Frame::Greeting(g) => return Err(ClientError::NotAmi(g)),
            _ => return Err(ClientError::NotAmi("(too long)".into())),
        }
        let events = "system,call,security";
        let login = match s.login {
            LoginMethod::Md5 => {
                let ch = wire
                    .request(
                        Action::new("Challenge", "pk-challenge").header("AuthType", "MD5"),
                        s.timeout,
                        "the login challenge",
                    )
                    .await?;
                let challenge = match ch.get("Challenge") {
                    Some(c) if ch.is("Response", "Success") => c.to_string(),
                    _ => {
                        return Err(ClientError::LoginRefused {
                            user: s.username.clone(),
                            message: format!("no MD5 challenge: {}", ch.get("Message").unwrap_or("")),
                        })
                    }
                };
                Action::new("Login", "pk-login")
                    .header("AuthType", "MD5")
                    .header("Username", s.username.clone())
                    .header("Key", md5_key(&challenge, &s.secret))
                    .header("Events", events)
            }
            LoginMethod::Plain => Action::new("Login", "pk-login")
                .header("Username", s.username.clone())
                .header("Secret", s.secret.expose())
                .header("Events", events),
        };
        let reply = wire.request(login, s.timeout, "login").await?;
        if !reply.is("Response", "Success") {
            return Err(ClientError::LoginRefused {
                user: s.username.clone(),
                message: reply.get("Message").unwrap_or("no reason given").to_string(),
            });
        }
        Ok(wire)
    }
}

/// The MD5 login key: lowercase hex of md5(challenge ‖ secret).
pub fn md5_key(challenge: &str, secret: &AmiSecret) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.expose().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_matches_asterisk() {
        // md5("123456" ‖ "secret"), as Asterisk's manager.c checks it.
        assert_eq!(
            md5_key("123456", &AmiSecret::new("secret")),
            "992f3c4e7ec9a0e96173284c816612bd"
        );
        assert_eq!(format!("{:?}", AmiSecret::new("pw")), "AmiSecret(hidden)");
    }

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
