//! The ledger's own connection, for the statements every message makes (its attempt, its
//! outcome) and a long import's progress every 25, run on the calling task's thread.
//!
//! Through sqlx each statement is handed to SQLite's worker thread and its answer handed
//! back: two thread switches and a futex wait on this machine's kind of VM, about a quarter
//! of the CPU a message costs in `scripts/bench` (DECISIONS.md). These statements are
//! short, single-row, and touch pages that are in the cache, so they run here, on the
//! runtime's thread, through a synchronous connection (rusqlite, on the same SQLite library
//! as sqlx's). Two things could make such a statement wait, and neither may block the
//! thread:
//! - another writer (a pool connection, `mailferry auth` in another process): the
//!   connection's busy timeout is zero, and a busy statement is tried again after an
//!   asynchronous pause, for as long as the pool's busy timeout;
//! - a checkpoint's fsync: the connection does not checkpoint ([`Hot::open`]); every
//!   [`CHECKPOINT_EVERY`] writes the pool runs a passive one on its own thread.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::ledger::LedgerState;
use crate::{BUSY_TIMEOUT, Store, StoreError};

/// Writes between two checkpoints of the WAL (about 5 pages each).
const CHECKPOINT_EVERY: u32 = 200;

/// The longest pause between two tries of a busy statement.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The connection, opened at its first use.
#[derive(Debug)]
pub(crate) struct Hot {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    writes: AtomicU32,
}

impl Hot {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: Mutex::new(None),
            writes: AtomicU32::new(0),
        }
    }

    /// Runs `op` on the connection, opening it first if needed.
    pub(crate) fn run<T>(
        &self,
        op: &mut impl FnMut(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A panic while it was held cannot leave the connection half-used: every statement
        // is reset as it is dropped.
        let mut slot = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match &mut *slot {
            Some(conn) => conn,
            closed => closed.insert(self.open()?),
        };
        op(conn)
    }

    /// The database was created and migrated by the pool: opened read-write, never created.
    /// Per connection: `synchronous = NORMAL` as the pool's, no waiting when busy, no
    /// checkpoints, and a small cache.
    fn open(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Through the VFS that writes a transaction's WAL frames at once (crates/sys wal).
        let conn = match mailferry_sys::wal::register() {
            Ok(vfs) => Connection::open_with_flags_and_vfs(&self.path, flags, vfs)?,
            Err(code) => {
                tracing::warn!(
                    code,
                    "cannot register the WAL-gathering VFS; writing frames one by one"
                );
                Connection::open_with_flags(&self.path, flags)?
            }
        };
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // 256 KiB: the right-most pages of the ledger and its indexes, their interior
        // pages, and some of the content index's leaves, which each message visits one of
        // at random. SQLite's default (2 MB) filled with those, visited once: `scripts/bench`'s
        // peak RSS 2 to 4 MB higher.
        conn.pragma_update(None, "cache_size", -256)?;
        Ok(conn)
    }

    /// Closes the connection (it opens again at its next use).
    pub(crate) fn close(&self) {
        drop(
            self.conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }
}

impl Store {
    /// Runs `op`, one statement or one transaction, on the ledger's own connection on
    /// this thread; tries it again while another writer holds the database, for up to the
    /// pool's busy timeout. `op` must be safe to run again after a busy error: a statement
    /// that failed so changed nothing.
    pub(crate) async fn hot<T>(
        &self,
        mut op: impl FnMut(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // Real time, as SQLite's own busy timeout (a test's paused clock would end it at once).
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        let result = loop {
            match self.hot.run(&mut op) {
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                result => break result.map_err(StoreError::Ledger)?,
            }
        };
        if self.hot.writes.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY
            == CHECKPOINT_EVERY - 1
        {
            // Passive: it copies what no reader still needs and waits for nobody. A failure
            // only leaves the WAL longer until the next; the statement above is committed.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await
            {
                tracing::debug!(error = %e, "WAL checkpoint failed");
            }
        }
        Ok(result)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

impl LedgerState {
    /// The `state` column's text.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Attempt => "attempt",
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Refused => "refused",
            Self::Duplicate => "duplicate",
        }
    }
}

impl ToSql for LedgerState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for LedgerState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        [
            Self::Attempt,
            Self::Delivered,
            Self::Deferred,
            Self::Refused,
            Self::Duplicate,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
        .ok_or_else(|| FromSqlError::Other(format!("unknown ledger state {text:?}").into()))
    }
}
