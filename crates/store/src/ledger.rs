//! The ledger: one row per message seen, from its attempt to its outcome.

use std::collections::HashSet;

use futures_util::TryStreamExt as _;
use mailferry_core::MessageKey;
use sqlx::Row;

use crate::{Store, StoreError, now};

/// Where a message stands in the ledger (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum LedgerState {
    /// Committed before the message is sent; an open one after a crash means "may have
    /// arrived".
    Attempt,
    /// The destination accepted it: only now may the source change it.
    Delivered,
    /// Refused for now; tried again.
    Deferred,
    /// Refused for good (or the source would not hand it out); not tried again on its own.
    Refused,
    /// The same message was delivered under another UIDVALIDITY.
    Duplicate,
}

impl LedgerState {
    /// Whether no further delivery is due.
    #[must_use]
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Delivered | Self::Refused | Self::Duplicate)
    }
}

/// Where a message was seen: the ledger's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LedgerKey {
    /// Account name.
    pub account: String,
    /// Folder name (`INBOX` for POP3).
    pub folder: String,
    /// The folder's UIDVALIDITY when the message was seen (0 for POP3).
    pub uidvalidity: u32,
    /// The message's UID or UIDL.
    pub key: MessageKey,
}

impl LedgerKey {
    /// The `(uid, uidl)` column pair: `(uid, '')` for IMAP, `(0, uidl)` for POP3.
    pub(crate) fn columns(&self) -> (i64, &str) {
        match &self.key {
            MessageKey::Uid(uid) => (i64::from(*uid), ""),
            MessageKey::Uidl(uidl) => (0, uidl.as_str()),
        }
    }
}

/// The key stored in the `(uid, uidl)` columns.
pub(crate) fn key_from_columns(uid: i64, uidl: String) -> Result<MessageKey, StoreError> {
    if uidl.is_empty() {
        Ok(MessageKey::Uid(
            u32::try_from(uid).map_err(|_| StoreError::Range("uid"))?,
        ))
    } else {
        Ok(MessageKey::Uidl(uidl))
    }
}

/// What the ledger says about a message about to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// First attempt, or a retry after a temporary refusal: deliver it.
    Fresh,
    /// An earlier attempt was interrupted between "attempt" and its outcome (a crash, a
    /// kill, a cut connection, an answer that did not confirm it): it may or may not have
    /// arrived. The row is left as it was; ask the destination if it can tell, else
    /// [`Store::renew_attempt`] and deliver again (SMTP is at-least-once), and count it.
    Interrupted {
        /// When that attempt began, Unix seconds.
        since: i64,
    },
    /// The same bytes were already delivered from this folder under another UIDVALIDITY:
    /// recorded as a duplicate, do not deliver.
    Duplicate,
    /// The row is settled already (delivered, refused or a duplicate): a key listed twice,
    /// or a listing that straddled a commit. Nothing was changed; do not deliver.
    Settled,
}

/// Facts about one message, recorded with the attempt.
#[derive(Debug, Clone)]
pub struct MessageFacts<'a> {
    /// The Message-ID header, if any.
    pub message_id: Option<&'a str>,
    /// The fingerprint of the raw bytes (`RawMessage::content_hash`: `blake3:` and hex).
    pub content_hash: &'a str,
    /// Their SHA-256 in lowercase hex, the fingerprint of ledgers written before BLAKE3:
    /// needed only where [`Store::has_sha256_rows`] says such rows exist under another
    /// UIDVALIDITY of the folder; `None` elsewhere.
    pub sha256: Option<&'a str>,
    /// Size in bytes.
    pub size: usize,
    /// Name of the destination it goes to.
    pub destination: &'a str,
}

/// A message the destination refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where it is.
    pub key: LedgerKey,
    /// Its Message-ID, if any.
    pub message_id: Option<String>,
    /// The destination's reason.
    pub reason: String,
    /// When it was refused (Unix seconds).
    pub at: i64,
}

impl Store {
    /// Keys of `folder` under `uidvalidity` that need no further delivery: delivered,
    /// refused for good, or recognised as duplicates. Everything else is new or retried.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn settled_keys(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<HashSet<MessageKey>, StoreError> {
        const SQL: &str = "SELECT uid, uidl FROM ledger WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 \
                           AND state IN (?4, ?5, ?6) \
                           UNION ALL SELECT uid, uidl FROM baseline WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3";
        let states = [
            LedgerState::Delivered,
            LedgerState::Refused,
            LedgerState::Duplicate,
        ];
        self.keys(SQL, account, folder, uidvalidity, &states).await
    }

    /// Keys of `folder` under `uidvalidity` whose delivery is committed (delivered, or a
    /// duplicate of a delivered message): the only ones a source may remove.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn delivered_keys(
        &self,
        account: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<HashSet<MessageKey>, StoreError> {
        const SQL: &str = "SELECT uid, uidl FROM ledger WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3 \
                           AND state IN (?4, ?5)";
        let states = [LedgerState::Delivered, LedgerState::Duplicate];
        self.keys(SQL, account, folder, uidvalidity, &states).await
    }

    pub(crate) async fn keys(
        &self,
        sql: &'static str,
        account: &str,
        folder: &str,
        uidvalidity: u32,
        states: &[LedgerState],
    ) -> Result<HashSet<MessageKey>, StoreError> {
        // `sql` takes account, folder and uidvalidity as ?1..?3, then one ? per state.
        let mut query = sqlx::query(sql)
            .bind(account)
            .bind(folder)
            .bind(i64::from(uidvalidity));
        for state in states {
            query = query.bind(*state);
        }
        // Row by row into the set (a row held whole takes several times its key).
        let mut rows = query.fetch(&self.pool);
        let mut keys = HashSet::new();
        while let Some(r) = rows.try_next().await? {
            keys.insert(key_from_columns(r.get(0), r.get(1))?);
        }
        Ok(keys)
    }

    /// Records that the destination accepted `key`. Only after this returns may the source
    /// be changed.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_delivered(
        &self,
        key: &LedgerKey,
        destination_id: &str,
    ) -> Result<(), StoreError> {
        self.set_state(key, LedgerState::Delivered, Some(destination_id), None)
            .await
    }

    /// The ledger state of `key` (`attempt`, `delivered`, ...), if it has a row.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn state_of(&self, key: &LedgerKey) -> Result<Option<LedgerState>, StoreError> {
        let (uid, uidl) = key.columns();
        Ok(sqlx::query_scalar(
            "SELECT state FROM ledger WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Starts a new attempt on a row whose earlier attempt was interrupted and did not
    /// arrive: the attempt's time becomes now.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn renew_attempt(&self, key: &LedgerKey) -> Result<(), StoreError> {
        let (uid, uidl) = key.columns();
        let uidvalidity = i64::from(key.uidvalidity);
        self.hot(|c| {
            c.prepare_cached(
                "UPDATE ledger SET attempts = attempts + 1, updated_at = ?1 \
                 WHERE account = ?2 AND folder = ?3 AND uidvalidity = ?4 AND uid = ?5 AND uidl = ?6 AND state = ?7",
            )?
            .execute((now(), &key.account, &key.folder, uidvalidity, uid, uidl, LedgerState::Attempt))
        })
        .await?;
        Ok(())
    }

    /// Records a temporary refusal: the message is tried again on the next run.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_deferred(&self, key: &LedgerKey, reason: &str) -> Result<(), StoreError> {
        self.set_state(key, LedgerState::Deferred, None, Some(reason))
            .await
    }

    /// Records a permanent refusal with the destination's reason: the message stays at the
    /// source and is not retried automatically.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_refused(&self, key: &LedgerKey, reason: &str) -> Result<(), StoreError> {
        self.set_state(key, LedgerState::Refused, None, Some(reason))
            .await
    }

    async fn set_state(
        &self,
        key: &LedgerKey,
        state: LedgerState,
        destination_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let (uid, uidl) = key.columns();
        let uidvalidity = i64::from(key.uidvalidity);
        self.hot(|c| {
            c.prepare_cached(
                "UPDATE ledger SET state = ?1, destination_id = COALESCE(?2, destination_id), last_error = ?3, \
                 updated_at = ?4 WHERE account = ?5 AND folder = ?6 AND uidvalidity = ?7 AND uid = ?8 AND uidl = ?9",
            )?
            .execute((state, destination_id, error, now(), &key.account, &key.folder, uidvalidity, uid, uidl))
        })
        .await?;
        Ok(())
    }

    /// Messages of `account` refused for good, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn refusals(&self, account: &str) -> Result<Vec<Refusal>, StoreError> {
        Ok(self
            .refusals_of(Some(account))
            .await?
            .remove(account)
            .unwrap_or_default())
    }

    /// Refused messages per account (of `account`, or of all), oldest first: one query
    /// through the partial index `ledger_refused`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn refusals_of(
        &self,
        account: Option<&str>,
    ) -> Result<std::collections::HashMap<String, Vec<Refusal>>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, folder, uidvalidity, uid, uidl, message_id, last_error, updated_at FROM ledger \
             WHERE state = 'refused' AND (?1 IS NULL OR account = ?1) ORDER BY updated_at, id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let mut out: std::collections::HashMap<String, Vec<Refusal>> =
            std::collections::HashMap::new();
        for r in &rows {
            let account: String = r.get(0);
            let refusal = Refusal {
                key: LedgerKey {
                    account: account.clone(),
                    folder: r.get(1),
                    uidvalidity: u32::try_from(r.get::<i64, _>(2))
                        .map_err(|_| StoreError::Range("uidvalidity"))?,
                    key: key_from_columns(r.get(3), r.get(4))?,
                },
                message_id: r.get(5),
                reason: r.get::<Option<String>, _>(6).unwrap_or_default(),
                at: r.get(7),
            };
            out.entry(account).or_default().push(refusal);
        }
        Ok(out)
    }

    /// Returns refused messages to the queue (state `deferred`): the next run delivers them
    /// again. Filters: `account`, `folder`, and `key` (a UID, a UIDL, or a Message-ID with
    /// or without angle brackets); `None` matches all. Returns how many went back.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn retry_refused(
        &self,
        account: Option<&str>,
        folder: Option<&str>,
        key: Option<&str>,
    ) -> Result<u64, StoreError> {
        let bare = key.map(|k| k.trim().trim_matches(['<', '>']).to_owned());
        let uid = key.and_then(|k| k.trim().parse::<i64>().ok());
        let done = sqlx::query(
            "UPDATE ledger SET state = ?6, not_before = NULL, \
             last_error = 'returned to the queue by `mailferry retry`; was: ' || COALESCE(last_error, ''), \
             updated_at = ?1 \
             WHERE state = ?7 AND (?2 IS NULL OR account = ?2) AND (?3 IS NULL OR folder = ?3) \
             AND (?4 IS NULL OR (uidl = '' AND uid = ?5) OR (uidl <> '' AND uidl = ?4) \
                  OR trim(message_id, '<>') = ?4)",
        )
        .bind(now())
        .bind(account)
        .bind(folder)
        .bind(bare)
        .bind(uid)
        .bind(LedgerState::Deferred)
        .bind(LedgerState::Refused)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// What the account's source asked to remember ([`mailferry_core::Source::memo`]).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn memo(&self, account: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT memo FROM source_memo WHERE account = ?")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Stores what the account's source asked to remember.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_memo(&self, account: &str, memo: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_memo (account, memo) VALUES (?, ?) \
             ON CONFLICT (account) DO UPDATE SET memo = excluded.memo",
        )
        .bind(account)
        .bind(memo)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
