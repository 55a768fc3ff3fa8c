//! Changes to the table's elements (grants and bans coming and going) as one nft JSON batch.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nftables::expr::{Elem, Expression, NamedExpression};
use nftables::schema::{NfCmd, NfObject, Nftables};

use super::render::{add, ElemKey, Layout};
use crate::base::clock::UnixMs;

/// What one batch of element changes does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Put in with a timeout for the remaining life (replacing any older timeout).
    pub set: Vec<(ElemKey, UnixMs)>,
    /// Take out.
    pub remove: Vec<ElemKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn len(&self) -> usize {
        self.set.len() + self.remove.len()
    }
}

/// Element changes as one batch. nft has no "replace element": to set a new timeout, or to delete
/// an element that may already have timed out, the batch first adds it (a no-op if present), then
/// deletes it, then (for `set`) adds it with the right timeout. One transaction, so no packet sees
/// the gap, and it cannot fail on an element that is, or is not, there.
pub fn render_changes(layout: &Layout, changes: &Changes, now: UnixMs) -> Nftables<'static> {
    let changes = layout.kernel_changes(changes);
    let mut first: BTreeMap<&str, Vec<Expression<'static>>> = BTreeMap::new();
    let mut del: BTreeMap<&str, Vec<Expression<'static>>> = BTreeMap::new();
    let mut last: BTreeMap<&str, Vec<Expression<'static>>> = BTreeMap::new();
    for (k, end) in changes.set.iter() {
        first.entry(&k.set).or_default().push(timed(k.addr, *end, now));
        del.entry(&k.set).or_default().push(addr_expr(k.addr));
        last.entry(&k.set).or_default().push(timed(k.addr, *end, now));
    }
    for k in changes.remove.iter() {
        first
            .entry(&k.set)
            .or_default()
            .push(timed(k.addr, now + 1000, now));
        del.entry(&k.set).or_default().push(addr_expr(k.addr));
    }
    let mut cmds = Vec::new();
    for (set, e) in first {
        cmds.push(add(layout.element(set, e)));
    }
    for (set, e) in del {
        cmds.push(NfObject::CmdObject(NfCmd::Delete(layout.element(set, e))));
    }
    for (set, e) in last {
        cmds.push(add(layout.element(set, e)));
    }
    Nftables { objects: cmds.into() }
}

/// The kernel timeout for an element ending at `end`: whole seconds (nft's JSON takes no less),
/// rounded up so the kernel never closes early; the daemon removes it on time itself.
pub fn timeout_secs(end: UnixMs, now: UnixMs) -> u32 {
    let ms = (end - now).max(1);
    ((ms + 999) / 1000).min(u32::MAX as i64) as u32
}

pub(super) fn timed(addr: IpAddr, end: UnixMs, now: UnixMs) -> Expression<'static> {
    Expression::Named(NamedExpression::Elem(Elem {
        val: Box::new(addr_expr(addr)),
        timeout: Some(timeout_secs(end, now)),
        expires: None,
        comment: None,
        counter: None,
    }))
}

fn addr_expr(addr: IpAddr) -> Expression<'static> {
    Expression::String(addr.to_string().into())
}
