//! A store several nodes share, as one node sees it: its name, the database, the link to it, and
//! every node's last sign of life.

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// The database as its URL names it (never with a password).
    pub database: String,
    pub connected: bool,
    /// Why not, in the database's or the network's words, when not connected.
    pub error: Option<String>,
    /// Since when the link has been down.
    pub lost_since: Option<UnixMs>,
    /// When this node last read the whole live state and put its table in line with it.
    pub resynced: Option<UnixMs>,
    /// Changes from other nodes taken since then.
    pub followed: u64,
    /// Bans made here while the database was away, written up once it is back.
    pub pending_bans: usize,
    /// Every node and its last sign of life, on the database's clock.
    pub nodes: Vec<(String, UnixMs)>,
}
