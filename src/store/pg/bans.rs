//! Bans on PostgreSQL: set, lifted and listed, each change announced.

use std::net::IpAddr;

use postgres::Row;

use super::notify::{self, Touched};
use super::{conn, PgStore};
use crate::base::addr;
use crate::model::Ban;
use crate::store::{StoreError, UnixMs};

impl PgStore {
    /// Sets or replaces the ban on `address`.
    pub fn ban(
        &mut self,
        address: IpAddr,
        reason: &str,
        expires: UnixMs,
        now: UnixMs,
    ) -> Result<Ban, StoreError> {
        let mut out = self.ban_many(&[(address, reason.to_string(), expires)], now)?;
        out.pop()
            .ok_or_else(|| StoreError::BadRow("ban vanished after insert".into()))
    }

    /// Sets or replaces every ban in `bans` (address, reason, expiry) in one transaction.
    /// Returns them as stored, in order.
    pub fn ban_many(
        &mut self,
        bans: &[(IpAddr, String, UnixMs)],
        now: UnixMs,
    ) -> Result<Vec<Ban>, StoreError> {
        if bans.is_empty() {
            return Ok(Vec::new());
        }
        let node = self.node().to_string();
        let found = self.conn.with(|s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let st = conn::prep(
                stmts,
                &mut tx,
                "INSERT INTO bans (address, reason, created_ms, expires_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, expires_ms = excluded.expires_ms
                 RETURNING address, reason, created_ms, expires_ms",
            )?;
            // Written in address order: two nodes banning the same addresses at once (one attack
            // seen at both) then lock the rows in the same order, and never each wait on the
            // other, which PostgreSQL would end by failing one batch as a deadlock.
            let mut order: Vec<usize> = (0..bans.len()).collect();
            order.sort_by_key(|&i| bans[i].0);
            let mut out = Vec::with_capacity(bans.len());
            let mut touched = Vec::with_capacity(bans.len());
            for i in order {
                let (address, reason, expires) = &bans[i];
                let a = address.to_string();
                out.push((i, tx.query_one(&st, &[&a, reason, &now, expires])?));
                touched.push(a);
            }
            notify::send(&mut tx, stmts, &node, &Touched::Texts(touched))?;
            tx.commit()?;
            out.sort_by_key(|(i, _)| *i);
            Ok(out.into_iter().map(|(_, row)| row).collect::<Vec<_>>())
        })?;
        found.iter().map(ban_row).collect()
    }

    pub fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        let node = self.node().to_string();
        let a = address.to_string();
        let found = self.conn.with(move |s| {
            let (client, stmts) = s.split();
            let mut tx = client.transaction()?;
            let st = conn::prep(
                stmts,
                &mut tx,
                "DELETE FROM bans WHERE address = $1 RETURNING address, reason, created_ms, expires_ms",
            )?;
            let found = tx.query_opt(&st, &[&a])?;
            if found.is_some() {
                notify::send(&mut tx, stmts, &node, &Touched::Texts(vec![a]))?;
            }
            tx.commit()?;
            Ok(found)
        })?;
        found.as_ref().map(ban_row).transpose()
    }

    /// `address`'s ban row (live or not yet pruned): one indexed lookup.
    pub fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        let a = address.to_string();
        let found = self.conn.with(|s| {
            let st = s.prep("SELECT address, reason, created_ms, expires_ms FROM bans WHERE address = $1")?;
            s.client.query_opt(&st, &[&a])
        })?;
        found.as_ref().map(ban_row).transpose()
    }

    /// Every live ban, soonest end first.
    pub fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        self.first_live_bans(now, None)
    }

    /// The `limit` live bans that end first (all, without one).
    pub fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64);
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT address, reason, created_ms, expires_ms FROM bans WHERE expires_ms > $1
                 ORDER BY expires_ms LIMIT $2",
            )?;
            s.client.query(&st, &[&now, &limit])
        })?;
        found.iter().map(ban_row).collect()
    }
}

/// A ban from a row of `address, reason, created_ms, expires_ms`.
pub(super) fn ban_row(r: &Row) -> Result<Ban, StoreError> {
    let address: String = r.get(0);
    let Ok(ip) = addr::parse_host(&address) else {
        return Err(StoreError::BadRow(format!("ban {address}")));
    };
    Ok(Ban {
        address: ip,
        reason: r.get(1),
        created: r.get(2),
        expires: r.get(3),
    })
}
