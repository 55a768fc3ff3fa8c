//! DISA accounts: added with their passcode tag (never the passcode), looked up, changed, removed.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError, UnixMs};
use crate::model::Account;

const ACCOUNT_COLUMNS: &str =
    "name, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several";

impl Store {
    /// Adds an account with its passcode tag. Fails if the name (or, by a one-in-10^12 chance, the
    /// tag) is taken.
    pub fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO accounts (name, tag, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        stmt.execute(params![
            a.name,
            &tag[..],
            a.services.join(","),
            a.ttl_secs as i64,
            a.endpoint,
            a.address_modes.join(","),
            a.disabled,
            a.created,
            a.passcode_set,
            a.callers.join(","),
            a.passcode_digits.map(|d| d as i64),
            a.keep_several
        ])?;
        Ok(())
    }

    /// The account whose passcode has this tag. The caller compares tags again in constant time.
    pub fn account_by_tag(&self, tag: &[u8; 32]) -> Result<Option<(Account, [u8; 32])>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS}, tag FROM accounts WHERE tag = ?1"
            ))?
            .query_row(params![&tag[..]], |r| {
                let stored: Vec<u8> = r.get(11)?;
                Ok((account_row(r)?, stored))
            })
            .optional()?
            .map(|(a, t)| {
                let tag: [u8; 32] = t
                    .try_into()
                    .map_err(|_| StoreError::BadRow("account tag".into()))?;
                Ok((a, tag))
            })
            .transpose()
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"))?
            .query_row(params![name], account_row)
            .optional()?)
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"))?;
        let rows = stmt.query_map([], account_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a new passcode tag; false if there is no such account.
    pub fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE accounts SET tag = ?2, passcode_ms = ?3, passcode_digits = ?4 WHERE name = ?1",
            )?
            .execute(params![name, &tag[..], now, digits as i64])?;
        Ok(n == 1)
    }

    /// The passcode lengths of enabled accounts; `None` for an account made before lengths were
    /// kept (its passcode may have any allowed length).
    pub fn passcode_lengths(&self) -> Result<Vec<Option<usize>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT passcode_digits FROM accounts WHERE disabled = 0")?;
        let rows = stmt.query_map([], |r| r.get::<_, Option<i64>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?.map(|d| d.max(0) as usize));
        }
        Ok(out)
    }

    /// A number that moves whenever another connection commits: what a reader keeps from the
    /// accounts stays right while it stays the same.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Every owner number any account lists (what `is_owner_number` looks for, all at once).
    pub fn owner_numbers(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT callers FROM accounts")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = std::collections::HashSet::new();
        for r in rows {
            out.extend(r?.split(',').filter(|n| !n.is_empty()).map(str::to_string));
        }
        Ok(out)
    }

    /// Whether any account lists `number` as its owner's.
    pub fn is_owner_number(&self, number: &str) -> Result<bool, StoreError> {
        if number.is_empty() {
            return Ok(false);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM accounts WHERE ',' || callers || ',' LIKE '%,' || ?1 || ',%'")?;
        Ok(stmt.exists(params![number])?)
    }

    /// Replaces an account's owner numbers; false if there is no such account.
    pub fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE accounts SET callers = ?2 WHERE name = ?1")?
            .execute(params![name, callers.join(",")])?;
        Ok(n == 1)
    }

    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE accounts SET disabled = ?2 WHERE name = ?1")?
            .execute(params![name, disabled])?;
        Ok(n == 1)
    }

    pub fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM accounts WHERE name = ?1")?
            .execute(params![name])?
            == 1)
    }
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let split = |s: String| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Account {
        name: r.get(0)?,
        services: split(r.get(1)?),
        ttl_secs: r.get::<_, i64>(2)?.max(0) as u64,
        endpoint: r.get(3)?,
        address_modes: split(r.get(4)?),
        disabled: r.get(5)?,
        created: r.get(6)?,
        passcode_set: r.get(7)?,
        callers: split(r.get(8)?),
        passcode_digits: r.get::<_, Option<i64>>(9)?.map(|d| d.max(0) as usize),
        keep_several: r.get(10)?,
    })
}
