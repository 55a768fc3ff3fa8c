//! One connection to the shared PostgreSQL store: where it is, logging in, errors in words, and
//! calls that are safe from async code and from plain threads alike.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, Config, GenericClient, NoTls, Statement};

use crate::store::StoreError;

/// Where the shared store is and which node this is: the daemon builds it from `[daemon] store`,
/// `store-password-file` (or the `PG*` environment) and `[daemon] node`.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// A `postgres://` or `postgresql://` URL, without a password.
    pub url: String,
    /// From `store-password-file`; `None` leaves it to `PGPASSWORD`.
    pub password: Option<String>,
    /// This node's name, on every grant it writes and in `nodes`.
    pub node: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &shown_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("node", &self.node)
            .finish()
    }
}

impl Target {
    /// The URL as it may be shown: any password in it cut out.
    pub fn shown(&self) -> String {
        shown_url(&self.url)
    }
}

/// How long a connection attempt may take before the server counts as unreachable, and how long a
/// silent peer may stay unanswered before the connection counts as lost (a partition must not hang
/// a grant for the kernel's two hours).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The live connection and its prepared statements (prepared once: a grant is one round trip).
pub(super) struct Session {
    pub client: Client,
    stmts: HashMap<&'static str, Statement>,
    /// When it last answered: one idle longer than [`IDLE_CHECK`] is asked if it is still there.
    used: std::time::Instant,
}

/// A connection idle this long may have been cut by a restarted server: it is checked with an
/// empty query before use, so the first grant after the database comes back does not fail on a
/// dead socket. Busy connections pay nothing.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Session {
    /// `sql` prepared on this connection, once.
    pub fn prep(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        prep(&mut self.stmts, &mut self.client, sql)
    }

    /// A transaction and the statement cache side by side, for preparing inside it.
    pub fn split(&mut self) -> (&mut Client, &mut HashMap<&'static str, Statement>) {
        (&mut self.client, &mut self.stmts)
    }
}

/// `sql` prepared once per connection, through a client or a transaction on it.
pub(super) fn prep(
    stmts: &mut HashMap<&'static str, Statement>,
    c: &mut impl GenericClient,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = stmts.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql)?;
    stmts.insert(sql, s.clone());
    Ok(s)
}

/// One connection, made again on the next call after it was lost. Behind a mutex so that the
/// store's reading methods can take `&self` as SQLite's do.
pub(super) struct Conn {
    pub target: Target,
    /// Boxed: it is large, and the store is moved about as one of [`crate::store::Db`]'s variants.
    config: Box<Config>,
    /// The URL without any password, for errors and `status`.
    pub shown: String,
    /// The server as errors name it: `host:port` or the socket's path.
    pub server: String,
    session: Mutex<Option<Box<Session>>>,
    /// The follower's view of the link: while it has seen the server go and not come back, a
    /// lost connection is not made again here, so the engine never waits on a dead server's
    /// connect timeout; the follower's own thread does the trying.
    pub gate: Option<std::sync::Arc<super::Link>>,
}

impl Conn {
    /// Reads the target and logs in.
    pub fn open(target: &Target) -> Result<Conn, StoreError> {
        let (config, server) = config_of(target)?;
        let conn = Conn {
            target: target.clone(),
            config: Box::new(config),
            shown: target.shown(),
            server,
            session: Mutex::new(None),
            gate: None,
        };
        let first = conn.connect()?;
        *conn.lock() = Some(first);
        Ok(conn)
    }

    /// Another connection to the same place (a reader, a follower).
    pub fn again(&self) -> Result<Conn, StoreError> {
        Conn::open(&self.target)
    }

    /// Whether the connection is up as of its last call (a call in flight counts as up).
    pub fn is_connected(&self) -> bool {
        match self.session.try_lock() {
            Ok(s) => s.as_ref().is_some_and(|s| !s.client.is_closed()),
            Err(std::sync::TryLockError::Poisoned(p)) => p.get_ref().is_some(),
            Err(std::sync::TryLockError::WouldBlock) => true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<Session>>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Box<Session>, StoreError> {
        let config = &self.config;
        let client = blocking(|| config.connect(NoTls)).map_err(|e| self.refused(e))?;
        Ok(Box::new(Session {
            client,
            stmts: HashMap::new(),
            used: std::time::Instant::now(),
        }))
    }

    /// Runs `f` on the connection (logging in again first if it was lost). An error that closed
    /// the connection is [`StoreError::PgLost`]; the next call tries a fresh one.
    pub fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, StoreError> {
        self.call(f, true)
    }

    /// Runs `f` on the connection made at open, never another: for a listener, which would not
    /// hear what was sent while it was away. [`StoreError::PgLost`] once that connection is gone.
    pub fn with_live<T: Send>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, StoreError> {
        self.call(f, false)
    }

    fn call<T: Send>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, postgres::Error> + Send,
        reconnect: bool,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        if reconnect {
            if let Some(s) = guard.as_mut() {
                if s.used.elapsed() >= IDLE_CHECK && blocking(|| s.client.is_valid(CONNECT_TIMEOUT)).is_err()
                {
                    *guard = None;
                }
            }
        }
        if guard.as_ref().is_none_or(|s| s.client.is_closed()) {
            *guard = None;
            if !reconnect {
                return Err(StoreError::PgLost {
                    server: self.server.clone(),
                    reason: "the server closed the connection".into(),
                });
            }
            if let Some(link) = &self.gate {
                let state = link.state();
                if !state.connected && state.lost_since.is_some() {
                    return Err(StoreError::PgLost {
                        server: self.server.clone(),
                        reason: state
                            .error
                            .unwrap_or_else(|| "the server is not answering".into()),
                    });
                }
            }
            *guard = Some(self.connect()?);
        }
        let session: &mut Session = guard.as_mut().expect("connected just above");
        match blocking(|| f(session)) {
            Ok(v) => {
                session.used = std::time::Instant::now();
                Ok(v)
            }
            Err(e) => {
                let lost = session.client.is_closed() || e.is_closed() || io_error(&e) || session_ended(&e);
                if lost {
                    *guard = None;
                }
                Err(self.failed(e, lost))
            }
        }
    }

    /// A failed login, in words: which server, which role, which database, and why.
    fn refused(&self, e: postgres::Error) -> StoreError {
        let user = self.config.get_user().unwrap_or("(none)").to_string();
        let database = self
            .config
            .get_dbname()
            .unwrap_or_else(|| self.config.get_user().unwrap_or("(none)"))
            .to_string();
        match e.as_db_error() {
            Some(db) if is_login_refusal(db.code()) => StoreError::PgLogin {
                server: self.server.clone(),
                user,
                database,
                reason: db.message().to_string(),
            },
            Some(db) => StoreError::Pg(format!("{} at {}", db.message(), self.server)),
            None => StoreError::PgUnreachable {
                server: self.server.clone(),
                reason: words(&e),
            },
        }
    }

    /// A failed call, in words.
    pub fn failed(&self, e: postgres::Error, lost: bool) -> StoreError {
        if lost {
            StoreError::PgInDoubt {
                server: self.server.clone(),
                reason: words(&e),
            }
        } else {
            StoreError::Pg(words(&e))
        }
    }
}

impl Drop for Conn {
    /// The client says goodbye to the server as it is dropped, blocking on its own runtime: on a
    /// tokio worker (a DISA backend dropped at shutdown) that panics like any bare call would.
    fn drop(&mut self) {
        let session = self.session.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = session {
            blocking(move || drop(s));
        }
    }
}

/// Runs blocking client work where it may block: the `postgres` client drives a runtime of its
/// own, which panics inside a tokio worker. On a multi-thread runtime's worker the work runs in
/// `block_in_place`; on a current-thread runtime (which cannot give its thread away) on a
/// scoped thread; elsewhere (engine, read-back, listeners' plain threads) right here.
pub(super) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// The client's configuration from the target: the URL, the password from the target or
/// `PGPASSWORD`, the other `PG*` variables for what the URL leaves out, and timeouts that turn a
/// dead server into an error. Also the server's name for errors.
fn config_of(target: &Target) -> Result<(Config, String), StoreError> {
    let shown = target.shown();
    let bad = |reason: String| StoreError::PgUrl {
        url: shown.clone(),
        reason,
    };
    if !(target.url.starts_with("postgres://") || target.url.starts_with("postgresql://")) {
        return Err(bad("it must start with postgres:// or postgresql://".into()));
    }
    let mut config = Config::from_str(&target.url).map_err(|e| bad(words(&e)))?;
    if config.get_password().is_some() {
        return Err(bad(
            "it holds a password; give it in store-password-file or PGPASSWORD instead".into(),
        ));
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (&target.password, env("PGPASSWORD")) {
        (Some(p), _) => {
            config.password(p.as_bytes());
        }
        (None, Some(p)) => {
            config.password(p.as_bytes());
        }
        (None, None) => {}
    }
    if config.get_user().is_none() {
        config.user(&env("PGUSER").unwrap_or_else(|| "passknock".into()));
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_hosts().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            if h.starts_with('/') {
                config.host_path(h);
            } else {
                config.host(h);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port = p
                .parse()
                .map_err(|_| bad(format!("PGPORT {p:?} is not a port number")))?;
            config.port(port);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(USER_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .application_name(&format!("passknock {}", target.node));
    let server = server_of(&config);
    Ok((config, server))
}

/// `host:port` or `socket /dir/.s.PGSQL.port`, for each host the client will try.
fn server_of(config: &Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("socket {}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A URL with any password in its user part cut out.
fn shown_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// Login refused: bad role or password (class 28), or no such database.
fn is_login_refusal(code: &SqlState) -> bool {
    code.code().starts_with("28") || *code == SqlState::INVALID_CATALOG_NAME
}

/// The server ended the session as it answered: a FATAL error, such as an administrator's
/// `pg_terminate_backend` or a shutdown, can arrive before the client sees the socket close.
fn session_ended(e: &postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.severity(), "FATAL" | "PANIC") || db.code().code().starts_with("57P"))
}

fn io_error(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error as one line: the server's own message when it sent one, else the client's chain.
pub(super) fn words(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        };
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target {
            url: url.into(),
            password: Some("s3cret".into()),
            node: "a".into(),
        }
    }

    #[test]
    fn the_password_never_shows() {
        let t = target("postgresql://pk:inurl@db.example:5433/pk");
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("inurl"), "{shown}");
        let e = config_of(&t).unwrap_err().to_string();
        assert!(e.contains("holds a password") && !e.contains("inurl"), "{e}");
    }

    #[test]
    fn a_url_of_another_kind_is_refused_in_words() {
        let e = config_of(&target("mysql://x@y/z")).unwrap_err().to_string();
        assert!(e.contains("postgres://"), "{e}");
    }

    #[test]
    fn the_server_is_named_by_host_or_socket() {
        let (_, s) = config_of(&target("postgresql://pk@db.example:5433/pk")).unwrap();
        assert_eq!(s, "db.example:5433");
        let (_, s) = config_of(&target("postgresql://pk@/pk?host=/tmp/sock")).unwrap();
        assert_eq!(s, "socket /tmp/sock/.s.PGSQL.5432");
    }
}
