//! A long import in progress, as `status` and `/metrics` show it.

use sqlx::Row;

use crate::{Store, StoreError, now};

/// One folder's import in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The account.
    pub account: String,
    /// The folder.
    pub folder: String,
    /// Messages it had to go when the run started.
    pub total: u64,
    /// Done since (delivered, already there, or failed).
    pub done: u64,
    /// When the run started (Unix seconds).
    pub started_at: i64,
    /// When `done` was last written.
    pub updated_at: i64,
}

impl Progress {
    /// Messages still to go.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.done)
    }

    /// Messages a second so far, once there is something to tell.
    #[must_use]
    pub fn rate(&self) -> Option<f64> {
        let secs = self.updated_at - self.started_at;
        (self.done > 0 && secs > 0).then(|| self.done as f64 / secs as f64)
    }

    /// Seconds to the end at the rate so far.
    #[must_use]
    pub fn eta(&self) -> Option<i64> {
        #[allow(clippy::cast_possible_truncation)]
        self.rate()
            .map(|r| (self.remaining() as f64 / r).round().min(1e12) as i64)
    }
}

impl Store {
    /// Records that `done` of `total` messages of `folder` are done (the run started at
    /// `started_at`).
    ///
    /// On the ledger's own connection, on this thread (see hot.rs): a long import saves its
    /// progress every 25 messages, and through the pool each save waited for the pool's
    /// thread and, written by another connection, made the ledger's read its pages again
    /// (about a dozen reads a save).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_progress(
        &self,
        account: &str,
        folder: &str,
        total: u64,
        done: u64,
        started_at: i64,
    ) -> Result<(), StoreError> {
        let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let now = now();
        self.hot(|c| {
            c.prepare_cached(
                "INSERT INTO progress (account, folder, total, done, started_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (account, folder) DO UPDATE SET \
                 total = excluded.total, done = excluded.done, started_at = excluded.started_at, \
                 updated_at = excluded.updated_at",
            )?
            .execute((account, folder, count(total), count(done), started_at, now))
            .map(|_| ())
        })
        .await
    }

    /// The folder's import is over.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn clear_progress(&self, account: &str, folder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM progress WHERE account = ? AND folder = ?")
            .bind(account)
            .bind(folder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Imports in progress, of `account` or of every account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn progress(&self, account: Option<&str>) -> Result<Vec<Progress>, StoreError> {
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let rows = sqlx::query(
            "SELECT account, folder, total, done, started_at, updated_at FROM progress \
             WHERE ?1 IS NULL OR account = ?1 ORDER BY account, folder",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Progress {
                account: r.get(0),
                folder: r.get(1),
                total: count(r.get(2)),
                done: count(r.get(3)),
                started_at: r.get(4),
                updated_at: r.get(5),
            })
            .collect())
    }
}
