//! `[daemon]` (store, control socket, reconcile, audit, history) and `[metrics]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::defaults;
use crate::base::duration::Ttl;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    pub store: PathBuf,
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
            control_socket: defaults::CONTROL_SOCKET.into(),
            reconcile_interval: Ttl(defaults::RECONCILE_INTERVAL),
            audit_log: None,
            history_retention: Ttl(defaults::HISTORY_RETENTION),
        }
    }
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
