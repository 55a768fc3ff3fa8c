//! DISA accounts on PostgreSQL: the same rows as SQLite's, and a change counter in place of `PRAGMA
//! data_version`.

use std::collections::{HashMap, HashSet};

use postgres::{Row, Statement, Transaction};

use super::{conn, PgStore};
use crate::model::Account;
use crate::store::{StoreError, UnixMs};

impl PgStore {
    /// Adds an account with its passcode tag. Fails if the name (or the tag) is taken.
    pub fn add_account(&mut self, a: &Account, tag: &[u8; 32]) -> Result<(), StoreError> {
        self.account_write(|tx, stmts| {
            let st = conn::prep(
                stmts,
                tx,
                "INSERT INTO accounts (name, tag, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )?;
            tx.execute(
                &st,
                &[
                    &a.name,
                    &&tag[..],
                    &a.services.join(","),
                    &(a.ttl_secs.min(i64::MAX as u64) as i64),
                    &a.endpoint,
                    &a.address_modes.join(","),
                    &a.disabled,
                    &a.created,
                    &a.passcode_set,
                    &a.callers.join(","),
                    &a.passcode_digits.map(|d| d as i64),
                    &a.keep_several,
                ],
            )?;
            Ok(((), true))
        })
    }

    /// The account whose passcode has this tag. The caller compares tags again in constant time.
    pub fn account_by_tag(&self, tag: &[u8; 32]) -> Result<Option<(Account, [u8; 32])>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT name, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several, tag
                 FROM accounts WHERE tag = $1",
            )?;
            s.client.query_opt(&st, &[&&tag[..]])
        })?;
        found
            .map(|r| {
                let stored: Vec<u8> = r.get(11);
                let tag: [u8; 32] = stored
                    .try_into()
                    .map_err(|_| StoreError::BadRow("account tag".into()))?;
                Ok((account_row(&r), tag))
            })
            .transpose()
    }

    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT name, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several
                 FROM accounts WHERE name = $1",
            )?;
            s.client.query_opt(&st, &[&name])
        })?;
        Ok(found.as_ref().map(account_row))
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep(
                "SELECT name, services, ttl_secs, endpoint, address_modes, disabled, created_ms, passcode_ms, callers, passcode_digits, keep_several
                 FROM accounts ORDER BY name",
            )?;
            s.client.query(&st, &[])
        })?;
        Ok(found.iter().map(account_row).collect())
    }

    /// Sets a new passcode tag; false if there is no such account.
    pub fn set_passcode(
        &mut self,
        name: &str,
        tag: &[u8; 32],
        digits: usize,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        self.account_write(|tx, stmts| {
            let st = conn::prep(
                stmts,
                tx,
                "UPDATE accounts SET tag = $2, passcode_ms = $3, passcode_digits = $4 WHERE name = $1",
            )?;
            let n = tx.execute(&st, &[&name, &&tag[..], &now, &(digits as i64)])?;
            Ok((n == 1, n > 0))
        })
    }

    /// The passcode lengths of enabled accounts; `None` for an account made before lengths were
    /// kept.
    pub fn passcode_lengths(&self) -> Result<Vec<Option<usize>>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep("SELECT DISTINCT passcode_digits FROM accounts WHERE NOT disabled")?;
            s.client.query(&st, &[])
        })?;
        Ok(found
            .iter()
            .map(|r| r.get::<_, Option<i64>>(0).map(|d| d.max(0) as usize))
            .collect())
    }

    /// A number that moves whenever any node changes an account: what a reader keeps from the
    /// accounts stays right while it stays the same.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn.with(|s| {
            let st = s.prep("SELECT value FROM counters WHERE name = 'accounts'")?;
            Ok(s.client.query_opt(&st, &[])?.map_or(0, |r| r.get::<_, i64>(0)))
        })
    }

    /// Every owner number any account lists.
    pub fn owner_numbers(&self) -> Result<HashSet<String>, StoreError> {
        let found = self.conn.with(|s| {
            let st = s.prep("SELECT callers FROM accounts")?;
            s.client.query(&st, &[])
        })?;
        Ok(found
            .iter()
            .flat_map(|r| {
                r.get::<_, &str>(0)
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Whether any account lists `number` as its owner's.
    pub fn is_owner_number(&self, number: &str) -> Result<bool, StoreError> {
        if number.is_empty() {
            return Ok(false);
        }
        self.conn.with(|s| {
            let st = s.prep(
                "SELECT EXISTS (SELECT 1 FROM accounts
                                WHERE position(',' || $1 || ',' in ',' || callers || ',') > 0)",
            )?;
            Ok(s.client.query_one(&st, &[&number])?.get(0))
        })
    }

    /// Replaces an account's owner numbers; false if there is no such account.
    pub fn set_callers(&mut self, name: &str, callers: &[String]) -> Result<bool, StoreError> {
        self.account_write(|tx, stmts| {
            let st = conn::prep(stmts, tx, "UPDATE accounts SET callers = $2 WHERE name = $1")?;
            let n = tx.execute(&st, &[&name, &callers.join(",")])?;
            Ok((n == 1, n > 0))
        })
    }

    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Result<bool, StoreError> {
        self.account_write(|tx, stmts| {
            let st = conn::prep(stmts, tx, "UPDATE accounts SET disabled = $2 WHERE name = $1")?;
            let n = tx.execute(&st, &[&name, &disabled])?;
            Ok((n == 1, n > 0))
        })
    }

    pub fn remove_account(&mut self, name: &str) -> Result<bool, StoreError> {
        self.account_write(|tx, stmts| {
            let st = conn::prep(stmts, tx, "DELETE FROM accounts WHERE name = $1")?;
            let n = tx.execute(&st, &[&name])?;
            Ok((n == 1, n > 0))
        })
    }

    /// One change to the accounts: when `f` says it changed anything, the change counter moves
    /// and every node hears `*`, in the same transaction.
    fn account_write<T: Send>(
        &mut self,
        f: impl FnOnce(
                &mut Transaction<'_>,
                &mut HashMap<&'static str, Statement>,
            ) -> Result<(T, bool), postgres::Error>
            + Send,
    ) -> Result<T, StoreError> {
        self.write_all(
            Some("UPDATE counters SET value = value + 1 WHERE name = 'accounts'"),
            f,
        )
    }
}

fn account_row(r: &Row) -> Account {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Account {
        name: r.get(0),
        services: split(r.get(1)),
        ttl_secs: r.get::<_, i64>(2).max(0) as u64,
        endpoint: r.get(3),
        address_modes: split(r.get(4)),
        disabled: r.get(5),
        created: r.get(6),
        passcode_set: r.get(7),
        callers: split(r.get(8)),
        passcode_digits: r.get::<_, Option<i64>>(9).map(|d| d.max(0) as usize),
        keep_several: r.get(10),
    }
}
