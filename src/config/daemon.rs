//! `[daemon]` (store, control socket, reconcile, audit, history) and `[metrics]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::defaults;
use crate::base::duration::Ttl;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    /// The SQLite file, or a `postgres://` URL for a store several nodes share.
    pub store: PathBuf,
    /// With a PostgreSQL store: the file (0600) that holds the password; else the `PG*`
    /// environment, or none.
    pub store_password_file: Option<PathBuf>,
    /// This node's name in a shared store; the host name when unset.
    pub node: Option<String>,
    pub control_socket: PathBuf,
    pub reconcile_interval: Ttl,
    /// Audit lines (grants, revokes, bans, lockouts, refusals) also go to this file, 0600.
    pub audit_log: Option<PathBuf>,
    /// How long audit events stay in the store's history.
    pub history_retention: Ttl,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            store: defaults::STORE_PATH.into(),
            store_password_file: None,
            node: None,
            control_socket: defaults::CONTROL_SOCKET.into(),
            reconcile_interval: Ttl(defaults::RECONCILE_INTERVAL),
            audit_log: None,
            history_retention: Ttl(defaults::HISTORY_RETENTION),
        }
    }
}

/// Where `[daemon] store` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAt<'a> {
    /// The embedded SQLite store, for one box.
    File(&'a Path),
    /// A PostgreSQL database several nodes share, by its URL (which holds no password).
    Postgres(&'a str),
}

impl DaemonConfig {
    pub fn store_at(&self) -> StoreAt<'_> {
        match self.store.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreAt::Postgres(url)
            }
            _ => StoreAt::File(&self.store),
        }
    }

    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| valid_node_name(h))
            .unwrap_or_else(|| "passknock".into())
    }

    /// The store's settings taken together: a URL must not carry a password (it would sit in a
    /// config others may read, and in logs), and a password file goes only with a URL.
    pub(super) fn check_store(&self) -> Result<(), (String, String)> {
        match self.store_at() {
            StoreAt::Postgres(url) => {
                let rest = url.split_once("://").map_or("", |(_, r)| r);
                let authority = rest.split(['/', '?']).next().unwrap_or("");
                if let Some((user, _)) = authority.rsplit_once('@') {
                    if user.contains(':') {
                        return Err((
                            "daemon.store".into(),
                            "holds a password; put it in daemon.store-password-file (mode 0600) or the PGPASSWORD environment instead".into(),
                        ));
                    }
                }
                if rest.contains("password=") {
                    return Err((
                        "daemon.store".into(),
                        "holds a password; put it in daemon.store-password-file (mode 0600) or the PGPASSWORD environment instead".into(),
                    ));
                }
            }
            StoreAt::File(_) => {
                if self.store_password_file.is_some() {
                    return Err((
                        "daemon.store-password-file".into(),
                        "goes only with a PostgreSQL store (daemon.store = \"postgres://...\")".into(),
                    ));
                }
                if self.store.as_os_str().to_str().is_some_and(|s| s.contains("://")) {
                    return Err((
                        "daemon.store".into(),
                        "is a URL passknock does not know: a path names the SQLite store, postgres:// or postgresql:// a PostgreSQL one".into(),
                    ));
                }
            }
        }
        match &self.node {
            Some(n) if !valid_node_name(n) => Err((
                "daemon.node".into(),
                "must be 1 to 63 letters, digits, '.', '-' or '_'".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn valid_node_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The Prometheus endpoint: off unless asked for, and only on loopback.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: defaults::METRICS_LISTEN.parse().unwrap(),
        }
    }
}
