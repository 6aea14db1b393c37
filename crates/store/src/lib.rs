//! mailferry's state in one SQLite file: the ledger of every message seen, and the history
//! of runs. The ledger is the truth: a message counts as delivered only once its
//! `delivered` row is committed, and nothing at the source may change before that.
//!
//! The file is created `0600` inside a `0700` directory, in WAL mode with
//! `synchronous = NORMAL`: every commit survives a crash or `kill -9` of mailferry, and the
//! file is never corrupted. After an OS crash or power loss the last commits may roll back,
//! which can only make mailferry send those messages again, never lose one. (`FULL` would
//! fsync twice per message; under the disk load of a large import that cost a third of
//! the throughput in `scripts/bench`.)

#![warn(missing_docs)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailferry_core::MessageKey;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod folders;
mod push;
mod status;
mod tokens;
pub use push::PushRow;
pub use status::{ScheduleRow, Totals};
pub use tokens::{IssuedTokens, StoredToken};

/// The embedded migrations; run by [`Store::open`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The file name of the database inside the state directory.
pub const DB_FILE: &str = "mailferry.db";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or file could not be created or secured.
    #[error("cannot prepare the state directory {path}")]
    Prepare {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open the state database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("cannot update the state database")]
    Query(#[from] sqlx::Error),
    /// Another mailferry process holds this state directory.
    #[error(
        "another mailferry process (the service?) is using the state directory {0}: to run accounts now beside it, use `mailferry run-now [NAME]`; otherwise stop it first (or give this one its own daemon.state-dir)"
    )]
    Busy(PathBuf),
    /// A value does not fit its column.
    #[error("value out of range for the state database: {0}")]
    Range(&'static str),
    /// The state directory belongs to another user (the service's): writing to it as
    /// this one would leave files the service cannot open.
    #[error(
        "the state directory {dir} belongs to {owner}, not to the user running this command: run it as that user (e.g. `sudo -u {owner} mailferry ...`), so that the files it writes stay the service's"
    )]
    Owner {
        /// The state directory.
        dir: PathBuf,
        /// Its owner's user name (or uid).
        owner: String,
    },
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
    fn columns(&self) -> (i64, &str) {
        match &self.key {
            MessageKey::Uid(uid) => (i64::from(*uid), ""),
            MessageKey::Uidl(uidl) => (0, uidl.as_str()),
        }
    }
}

/// The key stored in the `(uid, uidl)` columns.
fn key_from_columns(uid: i64, uidl: String) -> Result<MessageKey, StoreError> {
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
    /// SHA-256 of the raw bytes, lowercase hex.
    pub sha256: &'a str,
    /// Size in bytes.
    pub size: usize,
    /// Name of the destination it goes to.
    pub destination: &'a str,
}

/// Counts of one account's run, as stored in `runs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Messages fetched from the source.
    pub fetched: u64,
    /// Messages the destination accepted.
    pub delivered: u64,
    /// Messages not delivered because they already were (duplicates).
    pub skipped: u64,
    /// Messages deferred or refused.
    pub failed: u64,
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
}

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// An exclusive lock on `state_dir/lock`, held while any clone of the store lives, so
    /// that two processes never work through the same ledger at once (both would deliver
    /// the same new messages).
    _lock: Option<Arc<std::fs::File>>,
    /// The state directory (`None` for a bare pool in tests).
    dir: Option<PathBuf>,
}

/// Held while a token is refreshed: no other process refreshes the same refresh token
/// meanwhile (providers that rotate refresh tokens kill the old one at first use).
/// Released on drop.
#[derive(Debug)]
pub struct RefreshLock {
    _file: Option<std::fs::File>,
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir` and runs the migrations.
    ///
    /// # Errors
    /// When the directory or file cannot be created with safe permissions, or SQLite fails.
    pub async fn open(state_dir: &Path) -> Result<Self, StoreError> {
        prepare_files(state_dir)?;
        let lock = lock_state_dir(state_dir)?;
        Self::connect(state_dir, Some(lock)).await
    }

    /// Opens the database without the exclusive lock, beside a running daemon: for
    /// commands that only read, or write tokens (`mailferry auth`, `status`). Such a store
    /// must never be used to fetch or deliver.
    ///
    /// # Errors
    /// As [`Store::open`], except that another process is no obstacle.
    pub async fn open_shared(state_dir: &Path) -> Result<Self, StoreError> {
        prepare_files(state_dir)?;
        Self::connect(state_dir, None).await
    }

    async fn connect(state_dir: &Path, lock: Option<std::fs::File>) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        // One process migrates at a time: `status` started beside a service that is
        // creating a new database would otherwise run the same migrations twice, and one
        // of them would fail ("table ledger already exists").
        let migrating = lock_file(&state_dir.join("migrate.lock"))?;
        let migrating = tokio::task::spawn_blocking(move || migrating.lock().map(|()| migrating))
            .await
            .map_err(|e| open_err(sqlx::Error::Io(std::io::Error::other(e))))?
            .map_err(|e| open_err(sqlx::Error::Io(e)))?;
        MIGRATOR.run(&pool).await.map_err(|e| open_err(e.into()))?;
        drop(migrating);
        Ok(Self {
            pool,
            _lock: lock.map(Arc::new),
            dir: Some(state_dir.to_owned()),
        })
    }

    /// Takes the state directory's refresh lock (`refresh.lock`), waiting for another
    /// process (the service, a `check` or `auth` beside it) that holds it.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub async fn refresh_lock(&self) -> Result<RefreshLock, StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(RefreshLock { _file: None });
        };
        let path = dir.join("refresh.lock");
        let prepare = |source| StoreError::Prepare {
            path: path.clone(),
            source,
        };
        let file = lock_file(&path)?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| prepare(std::io::Error::other(e)))?
            .map_err(prepare)?;
        Ok(RefreshLock { _file: Some(file) })
    }

    /// Wraps an existing pool (tests with `#[sqlx::test]`).
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            _lock: None,
            dir: None,
        }
    }

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
                           AND state IN ('delivered', 'refused', 'duplicate') \
                           UNION ALL SELECT uid, uidl FROM baseline WHERE account = ?1 AND folder = ?2 AND uidvalidity = ?3";
        self.keys(SQL, account, folder, uidvalidity).await
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
        const SQL: &str = "SELECT uid, uidl FROM ledger WHERE account = ? AND folder = ? AND uidvalidity = ? \
                           AND state IN ('delivered', 'duplicate')";
        self.keys(SQL, account, folder, uidvalidity).await
    }

    async fn keys(
        &self,
        sql: &'static str,
        account: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<HashSet<MessageKey>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(account)
            .bind(folder)
            .bind(i64::from(uidvalidity))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| key_from_columns(r.get(0), r.get(1)))
            .collect()
    }

    /// Records that `key` is about to be delivered, before anything is sent, so that a
    /// crash during delivery is detectable. Recognises content already delivered under
    /// another UIDVALIDITY of the same folder and records it as a duplicate instead.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn begin_attempt(
        &self,
        key: &LedgerKey,
        facts: &MessageFacts<'_>,
    ) -> Result<Attempt, StoreError> {
        let now = now();
        let size = i64::try_from(facts.size).map_err(|_| StoreError::Range("size"))?;
        let (uid, uidl) = key.columns();
        // IMMEDIATE: this transaction reads, then writes. A deferred one would fail at once
        // with SQLITE_BUSY(_SNAPSHOT) when a concurrent delivery commits in between, since
        // upgrading a read to a write cannot wait; taking the write lock first can.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let previous: Option<(String, i64)> = sqlx::query_as(
            "SELECT state, updated_at FROM ledger WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .fetch_optional(&mut *tx)
        .await?;
        match previous.as_ref().map(|(s, t)| (s.as_str(), *t)) {
            Some(("attempt", since)) => {
                // Left open: its age tells whether a destination's search can be trusted yet.
                tx.commit().await?;
                return Ok(Attempt::Interrupted { since });
            }
            // A settled row is never reopened by a new attempt.
            Some(("delivered" | "refused" | "duplicate", _)) => {
                tx.commit().await?;
                return Ok(Attempt::Settled);
            }
            _ => {}
        }
        let seen_elsewhere: bool = previous.is_none()
            && sqlx::query_scalar::<_, i64>(
                "SELECT EXISTS (SELECT 1 FROM ledger WHERE account = ? AND folder = ? AND sha256 = ? \
                 AND uidvalidity <> ? AND state = 'delivered' \
                 AND message_id IS ?)",
            )
            .bind(&key.account)
            .bind(&key.folder)
            .bind(facts.sha256)
            .bind(i64::from(key.uidvalidity))
            .bind(facts.message_id)
            .fetch_one(&mut *tx)
            .await?
                != 0;
        let state = if seen_elsewhere {
            "duplicate"
        } else {
            "attempt"
        };
        sqlx::query(
            "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, sha256, size, state, attempts, \
             destination, first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO UPDATE SET \
             state = excluded.state, attempts = attempts + 1, message_id = excluded.message_id, \
             sha256 = excluded.sha256, size = excluded.size, destination = excluded.destination, \
             updated_at = excluded.updated_at",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .bind(facts.message_id)
        .bind(facts.sha256)
        .bind(size)
        .bind(state)
        .bind(i64::from(!seen_elsewhere))
        .bind(facts.destination)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if seen_elsewhere {
            Attempt::Duplicate
        } else {
            Attempt::Fresh
        })
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
        self.set_state(key, "delivered", Some(destination_id), None)
            .await
    }

    /// The ledger state of `key` (`attempt`, `delivered`, ...), if it has a row.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn state_of(&self, key: &LedgerKey) -> Result<Option<String>, StoreError> {
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
        sqlx::query(
            "UPDATE ledger SET attempts = attempts + 1, updated_at = ? \
             WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ? AND state = 'attempt'",
        )
        .bind(now())
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the source would not hand out this message (`reason`: its words).
    /// The message is tried again at later runs; at the `limit`-th failure in a row it is
    /// recorded as refused with the reason, and reported. A settled row is left alone.
    /// Returns whether the message is now refused.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_fetch_failure(
        &self,
        key: &LedgerKey,
        destination: &str,
        reason: &str,
        limit: u32,
    ) -> Result<bool, StoreError> {
        let (uid, uidl) = key.columns();
        let now = now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, sha256, size, state, \
             attempts, destination, last_error, first_seen, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, '', 0, CASE WHEN ?9 <= 1 THEN 'refused' ELSE 'deferred' END, \
             1, ?6, ?7, ?8, ?8) \
             ON CONFLICT (account, folder, uidvalidity, uid, uidl) DO UPDATE SET \
             attempts = attempts + 1, last_error = excluded.last_error, updated_at = excluded.updated_at, \
             state = CASE WHEN attempts + 1 >= ?9 THEN 'refused' ELSE 'deferred' END \
             WHERE state IN ('deferred', 'attempt')",
        )
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(uid)
        .bind(uidl)
        .bind(destination)
        .bind(reason)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        let state: String = sqlx::query_scalar(
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
        Ok(state == "refused")
    }

    /// Records a temporary refusal: the message is tried again on the next run.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_deferred(&self, key: &LedgerKey, reason: &str) -> Result<(), StoreError> {
        self.set_state(key, "deferred", None, Some(reason)).await
    }

    /// Records a permanent refusal with the destination's reason: the message stays at the
    /// source and is not retried automatically.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn mark_refused(&self, key: &LedgerKey, reason: &str) -> Result<(), StoreError> {
        self.set_state(key, "refused", None, Some(reason)).await
    }

    async fn set_state(
        &self,
        key: &LedgerKey,
        state: &str,
        destination_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ledger SET state = ?, destination_id = COALESCE(?, destination_id), last_error = ?, updated_at = ? \
             WHERE account = ? AND folder = ? AND uidvalidity = ? AND uid = ? AND uidl = ?",
        )
        .bind(state)
        .bind(destination_id)
        .bind(error)
        .bind(now())
        .bind(&key.account)
        .bind(&key.folder)
        .bind(i64::from(key.uidvalidity))
        .bind(key.columns().0)
        .bind(key.columns().1)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Messages of `account` refused for good, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn refusals(&self, account: &str) -> Result<Vec<Refusal>, StoreError> {
        let rows = sqlx::query(
            "SELECT folder, uidvalidity, uid, uidl, message_id, last_error FROM ledger \
             WHERE account = ? AND state = 'refused' ORDER BY updated_at, id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Refusal {
                    key: LedgerKey {
                        account: account.to_owned(),
                        folder: r.get(0),
                        uidvalidity: u32::try_from(r.get::<i64, _>(1))
                            .map_err(|_| StoreError::Range("uidvalidity"))?,
                        key: key_from_columns(r.get(2), r.get(3))?,
                    },
                    message_id: r.get(4),
                    reason: r.get::<Option<String>, _>(5).unwrap_or_default(),
                })
            })
            .collect()
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
            "UPDATE ledger SET state = 'deferred', \
             last_error = 'returned to the queue by `mailferry retry`; was: ' || COALESCE(last_error, ''), \
             updated_at = ?1 \
             WHERE state = 'refused' AND (?2 IS NULL OR account = ?2) AND (?3 IS NULL OR folder = ?3) \
             AND (?4 IS NULL OR (uidl = '' AND uid = ?5) OR (uidl <> '' AND uidl = ?4) \
                  OR trim(message_id, '<>') = ?4)",
        )
        .bind(now())
        .bind(account)
        .bind(folder)
        .bind(bare)
        .bind(uid)
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

    /// Starts a run of `account`; returns its id for [`Store::finish_run`].
    ///
    /// # Errors
    /// On a database failure.
    pub async fn start_run(&self, account: &str) -> Result<i64, StoreError> {
        let id = sqlx::query("INSERT INTO runs (account, started_at) VALUES (?, ?)")
            .bind(account)
            .bind(now())
            .execute(&self.pool)
            .await?
            .last_insert_rowid();
        Ok(id)
    }

    /// Ends run `id` with its counts and, if it stopped early, the error.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn finish_run(
        &self,
        id: i64,
        counts: &RunCounts,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = |v: u64| i64::try_from(v).map_err(|_| StoreError::Range("count"));
        sqlx::query(
            "UPDATE runs SET finished_at = ?, fetched = ?, delivered = ?, skipped = ?, failed = ?, error = ? WHERE id = ?",
        )
        .bind(now())
        .bind(n(counts.fetched)?)
        .bind(n(counts.delivered)?)
        .bind(n(counts.skipped)?)
        .bind(n(counts.failed)?)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the state directory `0700` and the database file `0600` before SQLite opens it,
/// so that no window exists in which another user could read it.
fn prepare_files(state_dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Prepare { path, source }
    };
    if let Ok(meta) = std::fs::metadata(state_dir) {
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(StoreError::Owner {
                dir: state_dir.to_owned(),
                owner: user_name(meta.uid()),
            });
        }
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(err(state_dir))?;
    }
    for name in [
        DB_FILE.to_owned(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
    ] {
        let path = state_dir.join(name);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(err(&path))?;
        }
    }
    let db = state_dir.join(DB_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&db)
        .map_err(err(&db))?;
    Ok(())
}

/// The name of the user with `uid`, from `/etc/passwd`, or the number.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Opens (creating, `0600`) a lock file of the state directory.
fn lock_file(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Prepare {
            path: path.to_owned(),
            source,
        })
}

/// The file in which the running service names its process id.
const SERVICE_PID: &str = "service.pid";

/// The process id of the service running on `state_dir`, if one is: the state's lock is
/// held and the service named itself (once it could take SIGUSR1).
#[must_use]
pub fn service_pid(state_dir: &Path) -> Option<u32> {
    let lock = std::fs::File::open(state_dir.join("lock")).ok()?;
    if lock.try_lock_shared().is_ok() {
        // Nobody holds the state: a service.pid left by a crash names nobody.
        return None;
    }
    std::fs::read_to_string(state_dir.join(SERVICE_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Store {
    /// Names this process as the service (call once it takes SIGUSR1); see
    /// [`service_pid`].
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn announce_service(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(SERVICE_PID);
        let file = lock_file(&path)?;
        let prepare = |source| StoreError::Prepare {
            path: path.clone(),
            source,
        };
        file.set_len(0).map_err(prepare)?;
        std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes())
            .map_err(prepare)
    }
}

/// Takes the state directory's lock without waiting.
fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = state_dir.join("lock");
    let file = lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy(state_dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Prepare { path, source }),
    }
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}
