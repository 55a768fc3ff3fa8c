//! The store several PBXs share: this node, the database, the link to it and the other nodes.

use std::path::Path;

use super::{fail, ok, warn, Check};
use crate::base::duration::left;
use crate::cli::call;
use crate::control::{Reply, Request};

/// What the daemon says of its link to the shared store.
pub(super) fn store(socket: &Path) -> Check {
    let status = match call(socket, &Request::Status) {
        Ok(Reply::Status(s)) => s,
        Ok(_) | Err(_) => {
            return fail(
                "store",
                "cannot tell: the daemon did not answer its status (see the table check)",
                "start the daemon: systemctl start passknockd",
            )
        }
    };
    let Some(c) = &status.cluster else {
        return ok(
            "store",
            format!("{} (a store of this node's own)", status.store.display()),
        );
    };
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .map(|(name, seen)| format!("{name} seen {} ago", left(*seen, status.now)))
        .collect();
    if !c.connected {
        let since = c
            .lost_since
            .map(|t| format!(" for {}", left(t, status.now)))
            .unwrap_or_default();
        return fail(
            "store",
            format!(
                "node {} has NOT reached {}{since}: {}; it enforces what its table has and refuses new grants",
                c.node,
                c.database,
                c.error.as_deref().unwrap_or("no answer")
            ),
            "check the database server and the network to it; passknockd reconnects and resyncs by itself",
        );
    }
    if c.pending_bans > 0 {
        return warn(
            "store",
            format!(
                "node {} is connected to {}, but {} ban(s) made while it was away are not written up yet",
                c.node, c.database, c.pending_bans
            ),
            "they are written at the next resync; `journalctl -u passknockd` says why not",
        );
    }
    ok(
        "store",
        format!(
            "node {} is connected to {}; nodes: {}",
            c.node,
            c.database,
            nodes.join(", ")
        ),
    )
}
