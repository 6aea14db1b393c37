//! What `mailferry status` shows: the daemon's schedule per account, and totals from the
//! ledger and the runs.

use std::collections::HashMap;

use sqlx::Row;

use crate::{LedgerState, Store, StoreError, now};

/// One account's schedule as the daemon last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// Account name.
    pub account: String,
    /// The account's state as a stable token (`ok`, `backing-off`, `parked`, `failing`;
    /// the engine's `AccountState` reads and writes it; rows from before 0.1 hold words).
    pub state: String,
    /// Failed runs in a row.
    pub failures: u32,
    /// Next run, Unix seconds.
    pub next_run: Option<i64>,
    /// Last run's end, Unix seconds.
    pub last_run: Option<i64>,
    /// Last successful run's end, Unix seconds.
    pub last_success: Option<i64>,
    /// Last error, when the last run failed.
    pub last_error: Option<String>,
    /// Its hint.
    pub last_hint: Option<String>,
    /// The account's interval in seconds.
    pub interval_s: i64,
}

/// Totals of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Messages delivered, ever.
    pub delivered: u64,
    /// Messages delivered in the last 24 hours.
    pub delivered_24h: u64,
    /// Messages refused for good (still at the source).
    pub refused: u64,
    /// Messages deferred (retried next run).
    pub deferred: u64,
    /// Runs that ended with an error, in the last 24 hours.
    pub failed_runs_24h: u64,
    /// The last successful run's end (from the runs table), Unix seconds.
    pub last_success: Option<i64>,
    /// The last run's end, and its error if it failed (from the runs table).
    pub last_run: Option<(i64, Option<String>)>,
}

/// A run that has ended, as a command that woke the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    /// Its id; later runs have larger ones.
    pub id: i64,
    /// The account.
    pub account: String,
    /// What it did.
    pub counts: crate::RunCounts,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

impl Store {
    /// How many runs and ledger rows the state holds.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn row_counts(&self) -> Result<(i64, i64), StoreError> {
        let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
            .fetch_one(&self.pool)
            .await?;
        let ledger: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
            .fetch_one(&self.pool)
            .await?;
        Ok((runs, ledger))
    }

    /// Run `id`, if it has ended.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn finished_run(&self, id: i64) -> Result<Option<FinishedRun>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account, fetched, delivered, skipped, failed, error FROM runs \
             WHERE id = ? AND finished_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(finished))
    }

    /// The runs started after run `after` that have ended, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn finished_after(&self, after: i64) -> Result<Vec<FinishedRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account, fetched, delivered, skipped, failed, error FROM runs \
             WHERE id > ? AND finished_at IS NOT NULL ORDER BY id",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(finished).collect())
    }

    /// Records what the daemon decided after a run of `account`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_schedule(&self, row: &ScheduleRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schedule (account, state, failures, next_run, last_run, last_success, last_error, last_hint, interval_s) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET state = excluded.state, \
             failures = excluded.failures, next_run = excluded.next_run, last_run = excluded.last_run, \
             last_success = COALESCE(excluded.last_success, schedule.last_success), \
             last_error = excluded.last_error, last_hint = excluded.last_hint, interval_s = excluded.interval_s",
        )
        .bind(&row.account)
        .bind(&row.state)
        .bind(i64::from(row.failures))
        .bind(row.next_run)
        .bind(row.last_run)
        .bind(row.last_success)
        .bind(&row.last_error)
        .bind(&row.last_hint)
        .bind(row.interval_s)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored schedule of every account.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, state, failures, next_run, last_run, last_success, last_error, last_hint, interval_s \
             FROM schedule ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ScheduleRow {
                account: r.get(0),
                state: r.get(1),
                failures: u32::try_from(r.get::<i64, _>(2)).unwrap_or(u32::MAX),
                next_run: r.get(3),
                last_run: r.get(4),
                last_success: r.get(5),
                last_error: r.get(6),
                last_hint: r.get(7),
                interval_s: r.get(8),
            })
            .collect())
    }

    /// What the user was last told about `account` (see the `notified` column).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn notified(&self, account: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT notified FROM schedule WHERE account = ?",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Records what the user was told about `account`.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn set_notified(&self, account: &str, what: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedule SET notified = ? WHERE account = ?")
            .bind(what)
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Totals of `account` from the ledger and the runs.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn totals(&self, account: &str) -> Result<Totals, StoreError> {
        let day_ago = now() - 24 * 3600;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        // The counts from `ledger_counts` (kept by triggers), the last day's deliveries
        // through the partial index `ledger_delivered_at`.
        let r = sqlx::query(
            "SELECT COALESCE((SELECT n FROM ledger_counts WHERE account = ?2 AND state = 'delivered'), 0), \
                    (SELECT COUNT(*) FROM ledger WHERE state = 'delivered' AND updated_at >= ?1 AND account = ?2), \
                    COALESCE((SELECT n FROM ledger_counts WHERE account = ?2 AND state = 'refused'), 0), \
                    COALESCE((SELECT n FROM ledger_counts WHERE account = ?2 AND state = 'deferred'), 0)",
        )
        .bind(day_ago)
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        // Each through an index (account, started_at / id): a few rows, not the history.
        let failed_runs_24h: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE account = ? AND started_at >= ? AND error IS NOT NULL",
        )
        .bind(account)
        .bind(day_ago)
        .fetch_one(&self.pool)
        .await?;
        let last_success: Option<i64> = sqlx::query_scalar(
            "SELECT finished_at FROM runs WHERE account = ? AND error IS NULL \
             AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        let pruned: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT delivered FROM pruned WHERE account = ?), 0)",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        let last_run: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT finished_at, error FROM runs WHERE account = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(Totals {
            last_run: last_run.and_then(|(t, e)| t.map(|t| (t, e))),
            delivered: count(r.get::<i64, _>(0) + pruned),
            delivered_24h: count(r.get(1)),
            refused: count(r.get(2)),
            deferred: count(r.get(3)),
            failed_runs_24h: count(failed_runs_24h),
            last_success,
        })
    }
}

impl Store {
    /// [`Store::totals`] of every account at once, in five queries whatever their number,
    /// without `last_success` and `last_run` (the service's `schedule` rows hold those).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn all_totals(&self) -> Result<HashMap<String, Totals>, StoreError> {
        let day_ago = now() - 24 * 3600;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut out: HashMap<String, Totals> = HashMap::new();
        for r in sqlx::query("SELECT account, state, n FROM ledger_counts")
            .fetch_all(&self.pool)
            .await?
        {
            let t = out.entry(r.get(0)).or_default();
            let n = count(r.get(2));
            match r.try_get::<LedgerState, _>(1) {
                Ok(LedgerState::Delivered) => t.delivered += n,
                Ok(LedgerState::Refused) => t.refused = n,
                Ok(LedgerState::Deferred) => t.deferred = n,
                _ => {}
            }
        }
        for r in sqlx::query("SELECT account, delivered FROM pruned")
            .fetch_all(&self.pool)
            .await?
        {
            out.entry(r.get(0)).or_default().delivered += count(r.get(1));
        }
        for r in sqlx::query(
            // The planner, knowing nothing of the bound time, would scan the whole ledger
            // in account order to save a sort; the last day's rows are few.
            "SELECT account, COUNT(*) FROM ledger INDEXED BY ledger_delivered_at \
             WHERE state = 'delivered' AND updated_at >= ? GROUP BY account",
        )
        .bind(day_ago)
        .fetch_all(&self.pool)
        .await?
        {
            out.entry(r.get(0)).or_default().delivered_24h = count(r.get(1));
        }
        for r in sqlx::query(
            "SELECT account, COUNT(*) FROM runs INDEXED BY runs_started \
             WHERE started_at >= ? AND error IS NOT NULL GROUP BY account",
        )
        .bind(day_ago)
        .fetch_all(&self.pool)
        .await?
        {
            out.entry(r.get(0)).or_default().failed_runs_24h = count(r.get(1));
        }
        Ok(out)
    }
}

/// A `runs` row read as `id, account, fetched, delivered, skipped, failed, error`.
fn finished(r: &sqlx::sqlite::SqliteRow) -> FinishedRun {
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    FinishedRun {
        id: r.get(0),
        account: r.get(1),
        counts: crate::RunCounts {
            fetched: count(r.get(2)),
            delivered: count(r.get(3)),
            skipped: count(r.get(4)),
            failed: count(r.get(5)),
        },
        error: r.get(6),
    }
}
