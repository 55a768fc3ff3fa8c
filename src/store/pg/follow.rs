//! Following the other nodes' writes: `LISTEN passknock` on a connection of its own.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

use super::conn::{Conn, Target};
use super::notify::{node_word, CHANNEL};
use crate::base::addr;
use crate::store::StoreError;

/// A change another node committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub node: String,
    /// The addresses whose grants or bans changed; `None`: anything may have (accounts,
    /// standing entries, a long list), read everything again.
    pub addresses: Option<Vec<IpAddr>>,
}

/// Hears the other nodes' changes. Notifications sent while it was not connected are lost, so
/// after an error (the connection is gone) the caller makes a new one and reads everything.
pub struct Follower {
    conn: Conn,
    own: String,
    node: String,
}

impl Follower {
    /// Connects and starts listening. Changes committed from now on are heard.
    pub fn open(target: &Target) -> Result<Follower, StoreError> {
        let conn = Conn::open(target)?;
        conn.with_live(|s| s.client.batch_execute(&format!("LISTEN {CHANNEL}")))?;
        Ok(Follower {
            conn,
            own: node_word(&target.node),
            node: target.node.clone(),
        })
    }

    /// Marks this node alive now, on the database's clock, through the follower's connection.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        let node = self.node.clone();
        self.conn.with_live(move |s| {
            let st = s.prep(super::HEARTBEAT)?;
            s.client.execute(&st, &[&node])?;
            Ok(())
        })
    }

    /// The next change another node made, waiting up to `timeout`; `None` when none came. This
    /// node's own notifications are skipped. An error means the connection is gone.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Change>, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let heard = self.conn.with_live(move |s| {
                let mut n = s.client.notifications();
                let mut it = n.timeout_iter(left);
                it.next()
            })?;
            let Some(n) = heard else {
                return Ok(None);
            };
            if n.channel() != CHANNEL {
                continue;
            }
            let change = parse(n.payload());
            if change.node != self.own {
                return Ok(Some(change));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}

/// `<node> <address>…` or `<node> *`; an address that does not parse makes it everything.
fn parse(payload: &str) -> Change {
    let (node, rest) = payload.split_once(' ').unwrap_or((payload, "*"));
    let addresses = match rest.trim() {
        "*" => None,
        list => list
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(|a| addr::parse_host(a).ok())
            .collect::<Option<Vec<_>>>(),
    };
    Change {
        node: node.to_string(),
        addresses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back() {
        let c = parse("b 192.0.2.1 2001:db8::1");
        assert_eq!(c.node, "b");
        assert_eq!(
            c.addresses.unwrap(),
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(parse("b *").addresses, None);
        assert_eq!(parse("b 192.0.2.1 nonsense").addresses, None);
        assert_eq!(parse("b").addresses, None);
    }
}
