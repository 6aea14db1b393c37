//! What the commands and the running service tell each other through the database: the
//! accounts asked to run at once, and what the service made of the configuration file the
//! last time it read it on request.

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
    /// Asks the running service to run `accounts` at once (it takes them at SIGUSR1).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn request_wakeup(&self, accounts: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for a in accounts {
            sqlx::query(
                "INSERT INTO wakeups (account, at) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET at = excluded.at",
            )
            .bind(a)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes (and forgets) the accounts asked to run at once.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn take_wakeups(&self) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let names: Vec<String> = sqlx::query_scalar("SELECT account FROM wakeups ORDER BY at")
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM wakeups").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(names)
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
