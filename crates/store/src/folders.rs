//! What the ledger remembers about folders: when each was first listed, under which
//! UIDVALIDITY, up to which UIDNEXT, and what first-run excluded.

use std::collections::HashSet;

use mailferry_core::MessageKey;

use crate::{LedgerState, Store, StoreError, now};

impl Store {
    /// When `folder` was first listed (Unix seconds) and the UIDVALIDITY of its last
    /// listing (`None` when not recorded yet); `None` for a folder never listed.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn folder_sight(
        &self,
        account: &str,
        folder: &str,
    ) -> Result<Option<(i64, Option<u32>)>, StoreError> {
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT since, uidvalidity FROM folders_seen WHERE account = ? AND folder = ?",
        )
        .bind(account)
        .bind(folder)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(since, v)| {
            let v = v
                .map(u32::try_from)
                .transpose()
                .map_err(|_| StoreError::Range("uidvalidity"))?;
            Ok((since, v))
        })
        .transpose()
    }

    /// The UIDVALIDITY and UIDNEXT a complete run of `folder` saw last, if known.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn listed_up_to(
        &self,
        account: &str,
        folder: &str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT uidvalidity, uidnext FROM folders_seen WHERE account = ? AND folder = ?",
        )
        .bind(account)
        .bind(folder)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((Some(v), Some(n))) => Some((
                u32::try_from(v).map_err(|_| StoreError::Range("uidvalidity"))?,
                u32::try_from(n).map_err(|_| StoreError::Range("uidnext"))?,
            )),
            _ => None,
        })
    }

    /// Records the UIDNEXT a complete run of `folder` (under `uidvalidity`) saw.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_listed_up_to(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
        uidnext: Option<u32>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE folders_seen SET uidnext = ? WHERE account = ? AND folder = ? AND uidvalidity = ?",
        )
        .bind(uidnext.map(i64::from))
        .bind(account)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keys of `folder` under `uidvalidity` that are not settled yet (deferred, or an
    /// attempt left open): a listing that skips old UIDs must still name them.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn unsettled_keys(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<HashSet<MessageKey>, StoreError> {
        const SQL: &str = "SELECT uid, uidl FROM ledger WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 \
                           AND state IN (?4, ?5)";
        let states = [LedgerState::Deferred, LedgerState::Attempt];
        self.keys(SQL, account, folder, uidvalidity, &states).await
    }

    /// Records a listing of `folder` under `uidvalidity`: the first one (its time is kept),
    /// or one under a new UIDVALIDITY. `skipped` (what `first-run` says not to deliver)
    /// counts as settled under `uidvalidity` from now on.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_first_sight(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
        skipped: &[MessageKey],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for key in skipped {
            let (uid, uidl) = match key {
                MessageKey::Uid(u) => (i64::from(*u), ""),
                MessageKey::Uidl(u) => (0, u.as_str()),
            };
            sqlx::query(
                "INSERT OR IGNORE INTO baseline (account, folder, uidvalidity, uid, uidl) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(account)
            .bind(folder)
            .bind(i64::from(uidvalidity))
            .bind(uid)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO folders_seen (account, folder, since, uidvalidity) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, uidnext = NULL",
        )
        .bind(account)
        .bind(folder)
        .bind(now())
        .bind(i64::from(uidvalidity))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
