//! Messages that rest between tries: one the source will not hand out (Exchange's
//! body-less FETCH), one the destination refused in a way that may be about the
//! destination. Each rests for a growing pause and is refused only after a rule's tries
//! over its time.

use std::collections::HashSet;

use mailferry_core::MessageKey;
use sqlx::Row;

use crate::ledger::key_from_columns;
use crate::{LedgerKey, LedgerState, Store, StoreError};

/// When a message the source will not hand out is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRetry {
    /// Failures before it is refused...
    pub tries: u32,
    /// ...spread over at least this many seconds since the first.
    pub for_at_least: i64,
}

impl FetchRetry {
    /// First pause after a failure, doubled after each further one...
    pub const FIRST_PAUSE: i64 = 10 * 60;
    /// ...up to this.
    pub const LONGEST_PAUSE: i64 = 6 * 3600;

    /// Refused at the first failure (a message larger than the limit).
    pub const AT_ONCE: Self = Self {
        tries: 1,
        for_at_least: 0,
    };

    /// How long a message rests after its `attempts`-th failure (none after the one that
    /// refuses it: it is settled then).
    #[must_use]
    pub fn pause(self, attempts: i64) -> i64 {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        Self::FIRST_PAUSE
            .saturating_mul(1 << doublings)
            .min(Self::LONGEST_PAUSE)
    }
}

impl Store {
    /// Records that the source would not hand out this message (`reason`: its words).
    /// The message rests for a pause that grows with each failure ([`FetchRetry::pause`]),
    /// then is tried again; it is recorded as refused, with the reason, only once it has
    /// failed `rule.tries` times over at least `rule.for_at_least` seconds since it first
    /// failed. A settled row is left alone. Returns whether the message is now refused.
    /// `now` is the time in unix seconds (a parameter, so that tests can step it).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_fetch_failure(
        &self,
        key: &LedgerKey,
        destination: &str,
        reason: &str,
        rule: FetchRetry,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (uid, uidl) = key.columns();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let before: Option<(i64, i64, LedgerState)> = sqlx::query_as(
            "SELECT attempts, first_seen, state FROM ledger \
             WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ? AND state IN (?, ?)",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .bind(LedgerState::Deferred)
        .bind(LedgerState::Attempt)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((_, _, LedgerState::Attempt)) = before {
            // An open attempt may have arrived (an unconfirmed Gmail upload): it stays open,
            // with its time, until the destination is asked; only the failure is noted.
            sqlx::query(
                "UPDATE ledger SET last_error = ? \
                 WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
            )
            .bind(reason)
            .bind(&key.account)
            .bind(&key.folder)
            .bind(i64::from(key.uidvalidity))
            .bind(uid)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(false);
        }
        let before = before.map(|(a, s, _)| (a, s));
        let (attempts, since) = before.map_or((1, now), |(a, s)| (a + 1, s));
        let refused = attempts >= i64::from(rule.tries) && now - since >= rule.for_at_least;
        let state = if refused {
            LedgerState::Refused
        } else {
            LedgerState::Deferred
        };
        let not_before = now + rule.pause(attempts);
        sqlx::query(
            "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, \
             attempts, destination, last_error, first_seen, updated_at, not_before) \
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, '', 0, ?9, 1, ?6, ?7, ?8, ?8, ?10) \
             ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO UPDATE SET \
             attempts = attempts + 1, last_error = excluded.last_error, updated_at = excluded.updated_at, \
             state = excluded.state, not_before = excluded.not_before \
             WHERE state = ?11",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .bind(destination)
        .bind(reason)
        .bind(now)
        .bind(state)
        .bind(not_before)
        .bind(LedgerState::Deferred)
        .execute(&mut *tx)
        .await?;
        let state: LedgerState = sqlx::query_scalar(
            "SELECT state FROM ledger WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(state == LedgerState::Refused)
    }

    /// Records a refusal by the destination that may be about the destination rather than
    /// this message (a 5xx to `DATA`, a refusal of the message's own sender): the message
    /// rests and is tried again like one the source will not hand out, and is recorded as
    /// refused only once `rule` says so, counting its delivery attempts since it was first
    /// seen. Returns whether it is now refused.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_doubtful_refusal(
        &self,
        key: &LedgerKey,
        reason: &str,
        rule: FetchRetry,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (uid, uidl) = key.columns();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some((attempts, since)): Option<(i64, i64)> = sqlx::query_as(
            "SELECT attempts, first_seen FROM ledger \
             WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.commit().await?;
            return Ok(false);
        };
        let refused = attempts >= i64::from(rule.tries) && now - since >= rule.for_at_least;
        let state = if refused {
            LedgerState::Refused
        } else {
            LedgerState::Deferred
        };
        sqlx::query(
            "UPDATE ledger SET state = ?, last_error = ?, updated_at = ?, not_before = ? \
             WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(state)
        .bind(reason)
        .bind(now)
        .bind(now + rule.pause(attempts))
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(refused)
    }

    /// Keys of `folder` under `uidvalidity` that the source would not hand out and that
    /// rest at `now` ([`Self::record_fetch_failure`]): not asked for in this run.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn resting_keys(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
        now: i64,
    ) -> Result<HashSet<MessageKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT uid, uidl FROM ledger WHERE account = ? AND folder = ? AND uidvalidity = ? \
             AND state = ? AND not_before > ?",
        )
        .bind(account)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(LedgerState::Deferred)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| key_from_columns(r.get(0), r.get(1)))
            .collect()
    }
}
