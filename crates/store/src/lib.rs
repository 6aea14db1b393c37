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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

mod attempt;
mod history;
mod hot;
mod ledger;
mod progress;
mod prune;
mod rest;
pub use history::{Day, local_day};
pub use ledger::{Attempt, LedgerKey, LedgerState, MessageFacts, Refusal};
pub use progress::Progress;
pub use prune::{KEEP_FOR, Pruned};
pub use rest::FetchRetry;
mod folders;
mod push;
mod service;
mod status;
mod tokens;
pub use push::PushRow;
pub use service::ConfigLoad;

pub use status::{FinishedRun, ScheduleRow, Totals};
pub use tokens::{IssuedTokens, StoredToken};

/// The embedded migrations; run by [`Store::open`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a statement waits for another writer before it fails.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages past which a write through the pool checkpoints (SQLite's default: 1,000).
/// The ledger's writes checkpoint every 200 of them (`hot.rs`), about 1,200 pages; at the
/// default the pool's few writes during an import (its progress, every 25 messages) found
/// the WAL past 1,000 pages and checkpointed it too, about three times as often as meant,
/// two fsyncs each. This is a safety net for a WAL that only the pool writes to.
const POOL_AUTOCHECKPOINT: u32 = 4_000;

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
    /// A statement on the ledger's own connection failed.
    #[error("cannot update the state database")]
    Ledger(#[source] rusqlite::Error),
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

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The ledger's own connection for the statements every message makes (see
    /// [`Store::hot`]).
    hot: Arc<hot::Hot>,
    /// An exclusive lock on `state_dir/lock`, held while any clone of the store lives, so
    /// that two processes never work through the same ledger at once (both would deliver
    /// the same new messages).
    _lock: Option<Arc<std::fs::File>>,
    /// The state directory.
    dir: PathBuf,
}

/// Held while a token is refreshed: no other process refreshes the same refresh token
/// meanwhile (providers that rotate refresh tokens kill the old one at first use).
/// Released on drop.
#[derive(Debug)]
pub struct RefreshLock {
    _file: std::fs::File,
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
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", POOL_AUTOCHECKPOINT.to_string());
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // One process opens and migrates at a time: `status` (or a health check) started
        // beside a service that is creating a new database would otherwise run the same
        // migrations twice ("table ledger already exists"), or find the new file in the
        // middle of its switch to WAL ("database is locked", which stopped the service's
        // start once in CI). Past this, only queries meet, and they wait (busy_timeout).
        let migrating = lock_file(&state_dir.join("migrate.lock"))?;
        let migrating = tokio::task::spawn_blocking(move || migrating.lock().map(|()| migrating))
            .await
            .map_err(|e| open_err(sqlx::Error::Io(std::io::Error::other(e))))?
            .map_err(|e| open_err(sqlx::Error::Io(e)))?;
        // No ping before each use: the database is a local file, a connection cannot go
        // stale, and the ping is one more round trip to SQLite's thread per statement.
        let pool = SqlitePoolOptions::new()
            // Four for everyone; the ledger's per-message statements have their own.
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        MIGRATOR.run(&pool).await.map_err(|e| open_err(e.into()))?;
        drop(migrating);
        Ok(Self {
            pool,
            hot: Arc::new(hot::Hot::new(path.clone())),
            _lock: lock.map(Arc::new),
            dir: state_dir.to_owned(),
        })
    }

    /// Takes the state directory's refresh lock (`refresh.lock`), waiting for another
    /// process (the service, a `check` or `auth` beside it) that holds it.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub async fn refresh_lock(&self) -> Result<RefreshLock, StoreError> {
        let path = self.dir.join("refresh.lock");
        let prepare = |source| StoreError::Prepare {
            path: path.clone(),
            source,
        };
        let file = lock_file(&path)?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| prepare(std::io::Error::other(e)))?
            .map_err(prepare)?;
        Ok(RefreshLock { _file: file })
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
        self.count_day(id).await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        // The pool waits for every connection to come back.
        self.hot.close();
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

/// The process id of the service running on `state_dir`, if one is: the service holds a
/// lock on the file that names it for as long as it lives (the kernel drops it when the
/// process dies, even by `kill -9`), so a name left behind names nobody, whoever holds the
/// state meanwhile (a `once` does, and is no service).
#[must_use]
pub fn service_pid(state_dir: &Path) -> Option<u32> {
    let file = std::fs::File::open(state_dir.join(SERVICE_PID)).ok()?;
    if file.try_lock_shared().is_ok() {
        return None;
    }
    std::fs::read_to_string(state_dir.join(SERVICE_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// This process, named as the service on its state: the name is taken back when this is
/// dropped (the file removed), or by the kernel when the process dies.
#[derive(Debug)]
pub struct ServiceMark {
    file: Option<std::fs::File>,
    path: Option<PathBuf>,
}

impl Drop for ServiceMark {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
        drop(self.file.take());
    }
}

impl Store {
    /// Names this process as the service (call once it takes SIGUSR1) until the mark is
    /// dropped; see [`service_pid`].
    ///
    /// # Errors
    /// When the file cannot be written or locked.
    pub fn announce_service(&self) -> Result<ServiceMark, StoreError> {
        let path = self.dir.join(SERVICE_PID);
        let file = lock_file(&path)?;
        let prepare = |source| StoreError::Prepare {
            path: path.clone(),
            source,
        };
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Busy(self.dir.clone()),
            std::fs::TryLockError::Error(source) => prepare(source),
        })?;
        file.set_len(0).map_err(prepare)?;
        std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes())
            .map_err(prepare)?;
        Ok(ServiceMark {
            file: Some(file),
            path: Some(path),
        })
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

pub(crate) use mailferry_core::unix_now as now;
