//! What each write tells the other nodes: `NOTIFY passknock, '<node> <addresses>'`, sent on commit.

use std::collections::HashMap;

use postgres::{Statement, Transaction};

use super::conn::prep;

/// The channel every node listens on.
pub(super) const CHANNEL: &str = "passknock";

/// Past this many bytes a notification says `*` instead (PostgreSQL takes up to 8,000).
const MAX_PAYLOAD: usize = 7_000;

/// What a write changed.
pub(super) enum Touched {
    /// These addresses' grants or bans (as the tables hold them; repeats are fine).
    Texts(Vec<String>),
    /// Accounts or standing entries: every node reads everything again.
    All,
}

/// The payload: the node's name (spaces made `_`, so the first space ends it), then the
/// addresses, or `*`. `None` when nothing changed.
pub(super) fn payload(node: &str, touched: &Touched) -> Option<String> {
    let node = node_word(node);
    match touched {
        Touched::All => Some(format!("{node} *")),
        Touched::Texts(addrs) if addrs.is_empty() => None,
        Touched::Texts(addrs) => {
            let mut sorted: Vec<&str> = addrs.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            let mut out = node.clone();
            for a in sorted {
                out.push(' ');
                out.push_str(a);
                if out.len() > MAX_PAYLOAD {
                    return Some(format!("{node} *"));
                }
            }
            Some(out)
        }
    }
}

/// The node's name as one word.
pub(super) fn node_word(node: &str) -> String {
    node.split_whitespace().collect::<Vec<_>>().join("_")
}

/// Queues the notification in `tx`: it goes out when the transaction commits, and never if it
/// rolls back.
pub(super) fn send(
    tx: &mut Transaction<'_>,
    stmts: &mut HashMap<&'static str, Statement>,
    node: &str,
    touched: &Touched,
) -> Result<(), postgres::Error> {
    if let Some(p) = payload(node, touched) {
        let st = prep(stmts, tx, "SELECT pg_notify('passknock', $1)")?;
        tx.execute(&st, &[&p])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_node_and_each_address_once() {
        let t = Touched::Texts(vec!["192.0.2.2".into(), "192.0.2.1".into(), "192.0.2.2".into()]);
        assert_eq!(payload("pbx a", &t).unwrap(), "pbx_a 192.0.2.1 192.0.2.2");
        assert_eq!(payload("a", &Touched::Texts(vec![])), None);
        assert_eq!(payload("a", &Touched::All).unwrap(), "a *");
    }

    #[test]
    fn a_long_list_becomes_everything() {
        let many = (0..2000).map(|i| format!("2001:db8::{i:x}")).collect();
        assert_eq!(payload("a", &Touched::Texts(many)).unwrap(), "a *");
    }
}
