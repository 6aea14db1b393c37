//! Keeping the state bounded over years: what `status`, the metrics and the ledger's
//! promises need, no more.
//!
//! - A ledger row is needed while its message may still be listed: it is what makes a
//!   message delivered once (and, by its content, once across a UIDVALIDITY change). A
//!   complete listing of a folder (POP3 always; IMAP when every UID was listed) shows what
//!   the source still holds: a row it leaves out is marked gone, a row listed again is
//!   unmarked, and a row gone for [`KEEP_FOR`] is dropped. Rows of a folder's earlier
//!   UIDVALIDITY are dropped once untouched for as long (the present messages have rows
//!   under the new one by then). Open attempts are never dropped.
//! - Runs are kept for [`KEEP_FOR`]; each account's last run and last successful run stay.
//! - What was dropped still counts in `status`' delivered total (`pruned`).
//!
//! The work comes in batches of [`BATCH`] rows per transaction, so a delivery never waits
//! long behind it.

use std::collections::HashSet;

use futures_util::TryStreamExt as _;
use mailferry_core::MessageKey;
use sqlx::Row;

use crate::ledger::key_from_columns;
use crate::{LedgerState, Store, StoreError};

/// How long what is gone is kept: 30 days.
pub const KEEP_FOR: i64 = 30 * 86_400;
/// Rows per transaction.
const BATCH: usize = 500;

/// What a listing changed in the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows newly marked gone.
    pub marked: u64,
    /// Rows dropped.
    pub dropped: u64,
}

impl Store {
    /// After a complete listing of `folder` under `uidvalidity` whose keys are `present`:
    /// marks what is gone, unmarks what came back, drops what has been gone for
    /// [`KEEP_FOR`] (see the module). `now` is a parameter so that tests can step it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn note_listing(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
        present: &HashSet<MessageKey>,
        now: i64,
    ) -> Result<Pruned, StoreError> {
        // Row by row: a folder's rows all at once took about 320 bytes each (a folder of
        // 100,000 messages: 32 MB at every complete listing; tests/memory.rs).
        let mut rows = sqlx::query(
            "SELECT id, uid, uidl, gone_since, state, uidvalidity, updated_at FROM ledger \
             WHERE account = ? AND folder = ? AND state <> ?",
        )
        .bind(account)
        .bind(folder)
        .bind(LedgerState::Attempt)
        .fetch(&self.pool);
        let (mut back, mut gone, mut drop) = (Vec::new(), Vec::new(), Vec::new());
        let mut delivered_dropped = 0i64;
        while let Some(r) = rows.try_next().await? {
            let id: i64 = r.get(0);
            let gone_since: Option<i64> = r.get(3);
            let state: LedgerState = r.get(4);
            let here: i64 = r.get(5);
            let updated_at: i64 = r.get(6);
            let expired = if here == i64::from(uidvalidity) {
                let key = key_from_columns(r.get(1), r.get(2))?;
                match (present.contains(&key), gone_since) {
                    (true, Some(_)) => {
                        back.push(id);
                        false
                    }
                    (true, None) => false,
                    (false, None) => {
                        gone.push(id);
                        false
                    }
                    (false, Some(t)) => now - t >= KEEP_FOR,
                }
            } else {
                now - updated_at >= KEEP_FOR
            };
            if expired {
                drop.push(id);
                if state == LedgerState::Delivered {
                    delivered_dropped += 1;
                }
            }
        }
        std::mem::drop(rows);
        self.by_ids(
            "UPDATE ledger SET gone_since = NULL WHERE id IN (SELECT value FROM json_each(?))",
            &back,
            None,
        )
        .await?;
        self.by_ids(
            "UPDATE ledger SET gone_since = ? WHERE id IN (SELECT value FROM json_each(?))",
            &gone,
            Some(now),
        )
        .await?;
        self.by_ids(
            "DELETE FROM ledger WHERE id IN (SELECT value FROM json_each(?))",
            &drop,
            None,
        )
        .await?;
        if delivered_dropped > 0 {
            sqlx::query(
                "INSERT INTO pruned (account, delivered) VALUES (?1, ?2) \
                 ON CONFLICT (account) DO UPDATE SET delivered = delivered + ?2",
            )
            .bind(account)
            .bind(delivered_dropped)
            .execute(&self.pool)
            .await?;
        }
        Ok(Pruned {
            marked: gone.len() as u64,
            dropped: drop.len() as u64,
        })
    }

    /// Runs `sql` (whose last parameter is a JSON array of row ids) for `ids`, [`BATCH`]
    /// at a time, binding `first` before the ids when given.
    async fn by_ids(
        &self,
        sql: &'static str,
        ids: &[i64],
        first: Option<i64>,
    ) -> Result<(), StoreError> {
        for chunk in ids.chunks(BATCH) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let list = format!("[{}]", list.join(","));
            let mut q = sqlx::query(sql);
            if let Some(v) = first {
                q = q.bind(v);
            }
            q.bind(list).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Drops the runs that started more than [`KEEP_FOR`] before `now`, keeping each
    /// account's last run and last successful run, [`BATCH`] rows per transaction.
    /// Returns how many went.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn prune_runs(&self, now: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM daily WHERE day < ?")
            .bind(crate::history::local_day(now - KEEP_FOR))
            .execute(&self.pool)
            .await?;
        let keep: Vec<i64> = sqlx::query_scalar(
            "SELECT MAX(id) FROM runs GROUP BY account \
             UNION SELECT MAX(id) FROM runs WHERE error IS NULL AND finished_at IS NOT NULL GROUP BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        let keep: Vec<String> = keep.iter().map(i64::to_string).collect();
        let keep = format!("[{}]", keep.join(","));
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE started_at < ?1 \
                 AND id NOT IN (SELECT value FROM json_each(?2)) LIMIT ?3)",
            )
            .bind(now - KEEP_FOR)
            .bind(&keep)
            .bind(i64::try_from(BATCH).unwrap_or(500))
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += done;
            if done < BATCH as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}
