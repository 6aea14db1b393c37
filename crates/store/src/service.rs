//! What the commands and the running service tell each other through the database: the
//! accounts asked to run at once and the runs that answered, and what the service made of
//! the configuration file the last time it read it on request.

use sqlx::Row;

use crate::{Store, StoreError, now};

/// The service's last reading of the configuration file on request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLoad {
    /// Grows with each reading: a command compares it before and after its request.
    pub serial: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Why the file could not be used (the service kept the configuration it had), or
    /// `None` when it was read.
    pub error: Option<String>,
}

impl Store {
    /// Asks the running service to run `accounts` at once (it looks at SIGUSR1). Returns
    /// the requests' numbers, one per account, for [`Self::answers`].
    ///
    /// # Errors
    /// On a database failure.
    pub async fn request_wakeup(&self, accounts: &[String]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut seqs = Vec::with_capacity(accounts.len());
        for a in accounts {
            let seq = sqlx::query("INSERT INTO wake_requests (account, at) VALUES (?, ?)")
                .bind(a)
                .bind(now())
                .execute(&mut *tx)
                .await?
                .last_insert_rowid();
            seqs.push(seq);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    /// Accounts with a request no run has answered yet.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn pending_wakeups(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT account FROM wake_requests WHERE run IS NULL GROUP BY account ORDER BY MIN(seq)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The unanswered requests for `account` as its run starts: [`Self::answer_wakeups`]
    /// gives them that run once it is done.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn wakeups_of(&self, account: &str) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT seq FROM wake_requests WHERE account = ? AND run IS NULL ORDER BY seq",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that run `run` answered the requests `seqs`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn answer_wakeups(&self, seqs: &[i64], run: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for seq in seqs {
            sqlx::query("UPDATE wake_requests SET run = ? WHERE seq = ?")
                .bind(run)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        // Answered requests older than a day have been read long ago.
        sqlx::query("DELETE FROM wake_requests WHERE run IS NOT NULL AND at < ?")
            .bind(now() - 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The finished runs that answered the requests `seqs`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn answers(&self, seqs: &[i64]) -> Result<Vec<crate::FinishedRun>, StoreError> {
        let mut out = Vec::new();
        for seq in seqs {
            let run: Option<i64> =
                sqlx::query_scalar("SELECT run FROM wake_requests WHERE seq = ?")
                    .bind(seq)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten();
            if let Some(run) = run
                && let Some(finished) = self.finished_run(run).await?
            {
                out.push(finished);
            }
        }
        Ok(out)
    }

    /// Records the service's reading of the configuration file: `error` when it could not
    /// be used.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_config_load(&self, error: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO config_load (id, serial, at, error) VALUES (1, 1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET serial = serial + 1, at = ?1, error = ?2",
        )
        .bind(now())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The service's last reading of the configuration file, if it has made one on request.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn config_load(&self) -> Result<Option<ConfigLoad>, StoreError> {
        let row = sqlx::query("SELECT serial, at, error FROM config_load WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| ConfigLoad {
            serial: r.get(0),
            at: r.get(1),
            error: r.get(2),
        }))
    }
}

impl Store {
    /// The import rate learned for the Gmail mailbox `mailbox`, if any.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn gmail_rate(&self, mailbox: &str) -> Result<Option<f64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT rate FROM gmail_pace WHERE mailbox = ?")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Remembers the import rate learned for `mailbox`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_gmail_rate(&self, mailbox: &str, rate: f64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gmail_pace (mailbox, rate, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (mailbox) DO UPDATE SET rate = excluded.rate, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(rate)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
