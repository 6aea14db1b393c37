//! The state of folders watched with IMAP IDLE, and their logins (for the login budget).

use sqlx::Row as _;

use crate::{Store, StoreError};

/// One pushed folder, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRow {
    /// The account.
    pub account: String,
    /// The folder watched.
    pub folder: String,
    /// `connected`, `reconnecting`, `no idle` (polled instead) or `stopped`.
    pub state: String,
    /// Unix seconds the current connection was made.
    pub connected_since: Option<i64>,
    /// Unix seconds the server last announced a change.
    pub last_event: Option<i64>,
    /// From that announcement to its messages delivered, in milliseconds.
    pub last_latency_ms: Option<i64>,
    /// Why the last connection ended, if it did.
    pub last_error: Option<String>,
    /// Logins in the last 24 hours.
    pub logins_24h: u32,
}

impl Store {
    /// Stores `row` (its `logins_24h` is not stored: logins are counted from
    /// [`Store::record_push_login`]).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_push(&self, row: &PushRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO push (account, folder, state, connected_since, last_event, last_latency_ms, last_error) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, folder) DO UPDATE SET \
             state = excluded.state, connected_since = excluded.connected_since, \
             last_event = COALESCE(excluded.last_event, push.last_event), \
             last_latency_ms = COALESCE(excluded.last_latency_ms, push.last_latency_ms), \
             last_error = excluded.last_error",
        )
        .bind(&row.account)
        .bind(&row.folder)
        .bind(&row.state)
        .bind(row.connected_since)
        .bind(row.last_event)
        .bind(row.last_latency_ms)
        .bind(&row.last_error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a push login at `at` (Unix seconds) and forgets those older than a day.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_push_login(
        &self,
        account: &str,
        folder: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO push_logins (account, folder, at) VALUES (?, ?, ?)")
            .bind(account)
            .bind(folder)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM push_logins WHERE at < ?")
            .bind(at - 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The push logins of `account`'s `folder` at or after `since` (Unix seconds), oldest
    /// first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn push_logins(
        &self,
        account: &str,
        folder: &str,
        since: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT at FROM push_logins WHERE account = ? AND folder = ? AND at >= ? ORDER BY at",
        )
        .bind(account)
        .bind(folder)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    /// Every pushed folder of `account` (of every account when `None`), with its logins in
    /// the 24 hours before `now`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn pushes(
        &self,
        account: Option<&str>,
        now: i64,
    ) -> Result<Vec<PushRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.account, p.folder, p.state, p.connected_since, p.last_event, p.last_latency_ms, p.last_error, \
             (SELECT COUNT(*) FROM push_logins l WHERE l.account = p.account AND l.folder = p.folder AND l.at >= ?1) \
             FROM push p WHERE ?2 IS NULL OR p.account = ?2 ORDER BY p.account, p.folder",
        )
        .bind(now - 86_400)
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PushRow {
                account: r.get(0),
                folder: r.get(1),
                state: r.get(2),
                connected_since: r.get(3),
                last_event: r.get(4),
                last_latency_ms: r.get(5),
                last_error: r.get(6),
                logins_24h: u32::try_from(r.get::<i64, _>(7)).unwrap_or(u32::MAX),
            })
            .collect())
    }
}
