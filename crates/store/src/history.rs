//! The last 30 days per account and local day, for the status page's charts: messages
//! delivered, failed runs, and pushed mail's slowest arrival-to-delivery time. Kept in
//! `daily` as runs end, so a page with 1,000 accounts reads one small table.

use std::collections::HashMap;

use crate::{Store, StoreError};

/// One account's day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    /// Days since the Unix epoch, in the machine's time zone ([`local_day`]).
    pub day: i64,
    /// Messages delivered.
    pub delivered: u64,
    /// Runs that ended early.
    pub failed_runs: u64,
    /// Pushed mail delivered after an announcement: the slowest, in milliseconds.
    pub worst_latency_ms: Option<u64>,
}

/// The local day (days since the epoch, in the machine's time zone) of Unix time `t`.
#[must_use]
pub fn local_day(t: i64) -> i64 {
    use chrono::{Local, TimeZone as _};
    let offset = Local
        .timestamp_opt(t, 0)
        .single()
        .map_or(0, |d| i64::from(d.offset().local_minus_utc()));
    (t + offset).div_euclid(86_400)
}

/// One `day:delivered:failed:latency` of [`Store::history`]'s packing.
fn unpack(text: &str) -> Option<Day> {
    let mut f = text.split(':');
    let mut next = || f.next();
    Some(Day {
        day: next()?.parse().ok()?,
        delivered: next()?.parse().ok()?,
        failed_runs: next()?.parse().ok()?,
        worst_latency_ms: next().and_then(|l| l.parse().ok()),
    })
}

impl Store {
    /// Per account, its days from `first_day` on that had runs or pushed deliveries,
    /// oldest first.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn history(&self, first_day: i64) -> Result<HashMap<String, Vec<Day>>, StoreError> {
        // One row per account, its days packed as `day:delivered:failed:latency,...`:
        // every row is a hop from SQLite's thread, and 1,000 accounts have 30,000 days.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT account, group_concat(day || ':' || delivered || ':' || failed_runs || ':' \
             || IFNULL(worst_latency_ms, ''), ',') FROM (SELECT * FROM daily INDEXED BY daily_day \
             WHERE day >= ? ORDER BY account, day) GROUP BY account",
        )
        .bind(first_day)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<Day>> = HashMap::new();
        for (account, packed) in rows {
            let mut days: Vec<Day> = packed.split(',').filter_map(unpack).collect();
            days.sort_by_key(|d| d.day);
            out.insert(account, days);
        }
        Ok(out)
    }

    /// Adds run `id`'s deliveries and failure to its account's day.
    pub(crate) async fn count_day(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO daily (account, day, delivered, failed_runs) \
             SELECT account, ?, delivered, error IS NOT NULL FROM runs WHERE id = ? \
             ON CONFLICT (account, day) DO UPDATE SET delivered = delivered + excluded.delivered, \
             failed_runs = failed_runs + excluded.failed_runs",
        )
        .bind(local_day(crate::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that pushed mail of `account` was delivered `latency_ms` after the server
    /// announced it (the day keeps the slowest).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn record_push_latency(
        &self,
        account: &str,
        at: i64,
        latency_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO daily (account, day, worst_latency_ms) VALUES (?, ?, ?) \
             ON CONFLICT (account, day) DO UPDATE SET worst_latency_ms = \
             MAX(COALESCE(worst_latency_ms, 0), excluded.worst_latency_ms)",
        )
        .bind(account)
        .bind(local_day(at))
        .bind(i64::try_from(latency_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
