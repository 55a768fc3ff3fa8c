//! Bans: set, lifted and listed.

use std::net::IpAddr;

use rusqlite::{params, OptionalExtension, Row};

use super::{sql_limit, Store, StoreError, UnixMs};
use crate::base::addr;
use crate::model::Ban;

impl Store {
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

    /// Sets or replaces every ban in `bans` (address, reason, expiry) in one transaction: a flood
    /// of offenders costs one fsync. Returns them as stored, in order.
    pub fn ban_many(
        &mut self,
        bans: &[(IpAddr, String, UnixMs)],
        now: UnixMs,
    ) -> Result<Vec<Ban>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(bans.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO bans (address, reason, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, expires_ms = excluded.expires_ms
                 RETURNING address, reason, created_ms, expires_ms",
            )?;
            for (address, reason, expires) in bans {
                let ban = stmt.query_row(params![address.to_string(), reason, now, expires], ban_row)??;
                out.push(ban);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub fn unban(&mut self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        let ban = self.ban_of(address)?;
        self.conn
            .prepare_cached("DELETE FROM bans WHERE address = ?1")?
            .execute(params![address.to_string()])?;
        Ok(ban)
    }

    /// `address`'s ban row (live or not yet pruned): one indexed lookup.
    pub fn ban_of(&self, address: IpAddr) -> Result<Option<Ban>, StoreError> {
        self.conn
            .prepare_cached("SELECT address, reason, created_ms, expires_ms FROM bans WHERE address = ?1")?
            .query_row(params![address.to_string()], ban_row)
            .optional()?
            .transpose()
    }

    /// Every live ban, soonest end first.
    pub fn live_bans(&self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        self.first_live_bans(now, None)
    }

    /// The `limit` live bans that end first (all, without one).
    pub fn first_live_bans(&self, now: UnixMs, limit: Option<usize>) -> Result<Vec<Ban>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT address, reason, created_ms, expires_ms FROM bans WHERE expires_ms > ?1 \
             ORDER BY expires_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, sql_limit(limit)], ban_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }
}

pub(super) fn ban_row(r: &Row<'_>) -> rusqlite::Result<Result<Ban, StoreError>> {
    let address: String = r.get(0)?;
    let Ok(ip) = addr::parse_host(&address) else {
        return Ok(Err(StoreError::BadRow(format!("ban {address}"))));
    };
    Ok(Ok(Ban {
        address: ip,
        reason: r.get(1)?,
        created: r.get(2)?,
        expires: r.get(3)?,
    }))
}
