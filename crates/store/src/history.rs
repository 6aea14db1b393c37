//! The last 30 days per account and day, for the status page's charts: messages delivered
//! and failed runs (from `runs`), and pushed mail's arrival-to-delivery time. One query
//! for all accounts each, so a page with 1,000 accounts costs two queries, not 2,000.

use std::collections::HashMap;

use sqlx::Row as _;

use crate::{Store, StoreError};

/// One account's day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    /// Days since the Unix epoch, in the time zone of `offset` given to the query.
    pub day: i64,
    /// Messages delivered.
    pub delivered: u64,
    /// Runs that ended early.
    pub failed_runs: u64,
    /// Pushed mail delivered after an announcement: the slowest, in milliseconds.
    pub worst_latency_ms: Option<u64>,
}

impl Store {
    /// Per account, the days since `since` (Unix seconds) that had runs or pushed
    /// deliveries, oldest first. `offset` (seconds east of UTC) sets where days begin.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn history(
        &self,
        since: i64,
        offset: i64,
    ) -> Result<HashMap<String, Vec<Day>>, StoreError> {
        let runs = sqlx::query(
            "SELECT account, (started_at + ?2) / 86400 AS day, SUM(delivered), \
             SUM(error IS NOT NULL) FROM runs WHERE started_at >= ?1 \
             GROUP BY account, day ORDER BY account, day",
        )
        .bind(since)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let latency = sqlx::query(
            "SELECT account, (at + ?2) / 86400 AS day, MAX(latency_ms) FROM push_latency \
             WHERE at >= ?1 GROUP BY account, day",
        )
        .bind(since)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut out: HashMap<String, Vec<Day>> = HashMap::new();
        for r in &runs {
            out.entry(r.get(0)).or_default().push(Day {
                day: r.get(1),
                delivered: count(r.get(2)),
                failed_runs: count(r.get(3)),
                worst_latency_ms: None,
            });
        }
        for r in &latency {
            let days = out.entry(r.get(0)).or_default();
            let day: i64 = r.get(1);
            let ms = Some(count(r.get(2)));
            match days.iter_mut().find(|d| d.day == day) {
                Some(d) => d.worst_latency_ms = ms,
                None => days.push(Day {
                    day,
                    worst_latency_ms: ms,
                    ..Day::default()
                }),
            }
        }
        for days in out.values_mut() {
            days.sort_by_key(|d| d.day);
        }
        Ok(out)
    }

    /// Records that pushed mail in `folder` was delivered `latency_ms` after the server
    /// announced it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_push_latency(
        &self,
        account: &str,
        folder: &str,
        at: i64,
        latency_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO push_latency (account, folder, at, latency_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(account)
        .bind(folder)
        .bind(at)
        .bind(i64::try_from(latency_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
