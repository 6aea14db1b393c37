//! What `status`, /metrics and the status page read for every account stays one query per
//! table: the ledger's counts are kept by triggers (`ledger_counts`), the charts' days in
//! `daily`, so 1,000 accounts with a month of runs and 200,000 messages answer fast.

use std::time::{Duration, Instant};

use mailferry_core::MessageKey;
use mailferry_store::{LedgerKey, MessageFacts, RunCounts, Store, local_day};

fn key(account: &str, uid: u32) -> LedgerKey {
    LedgerKey {
        account: account.into(),
        folder: "INBOX".into(),
        uidvalidity: 1,
        key: MessageKey::Uid(uid),
    }
}

async fn pool(dir: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("mailferry.db").display()))
        .await
        .expect("pool")
}

#[tokio::test]
async fn the_kept_counts_follow_every_change_of_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    for uid in 1..=6 {
        let sha = uid.to_string();
        let facts = MessageFacts {
            message_id: None,
            content_hash: &sha,
            sha256: None,
            size: 10,
            destination: "home",
        };
        store
            .begin_attempt(&key("a", uid), &facts)
            .await
            .expect("begin");
    }
    for uid in 1..=2 {
        store
            .mark_delivered(&key("a", uid), "250 ok")
            .await
            .expect("delivered");
    }
    // A delivery recorded with the next message's attempt, in one statement.
    let next = MessageFacts {
        message_id: None,
        content_hash: "7",
        sha256: None,
        size: 10,
        destination: "home",
    };
    store
        .mark_delivered_and_begin(&key("a", 3), "250 ok", &key("a", 7), &next)
        .await
        .expect("delivered and begun");
    store
        .mark_refused(&key("a", 4), "550 no")
        .await
        .expect("refused");
    store
        .mark_deferred(&key("a", 5), "451 later")
        .await
        .expect("deferred");
    // A deferred message tried again (the ledger's upsert), a refusal sent back to the
    // queue, and a row deleted (as pruning does).
    let again = MessageFacts {
        message_id: None,
        content_hash: "5",
        sha256: None,
        size: 10,
        destination: "home",
    };
    store
        .begin_attempt(&key("a", 5), &again)
        .await
        .expect("again");
    assert_eq!(
        store
            .retry_refused(Some("a"), None, None)
            .await
            .expect("retry"),
        1
    );
    let raw = pool(dir.path()).await;
    sqlx::query("DELETE FROM ledger WHERE uid = 1")
        .execute(&raw)
        .await
        .expect("delete");
    let direct: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM ledger GROUP BY state ORDER BY state")
            .fetch_all(&raw)
            .await
            .expect("count");
    let kept: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, n FROM ledger_counts WHERE n > 0 ORDER BY state")
            .fetch_all(&raw)
            .await
            .expect("kept");
    assert_eq!(kept, direct);
    let all = store.all_totals().await.expect("all");
    let one = store.totals("a").await.expect("one");
    let a = &all["a"];
    assert_eq!(
        (a.delivered, a.delivered_24h, a.refused, a.deferred),
        (one.delivered, one.delivered_24h, one.refused, one.deferred)
    );
    assert_eq!((a.delivered, a.refused, a.deferred), (2, 0, 1));
}

#[tokio::test]
async fn a_run_counts_into_its_day_and_a_push_keeps_the_days_slowest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    for (delivered, error) in [(3, None), (2, Some("boom")), (4, None)] {
        let id = store.start_run("a").await.expect("start");
        let counts = RunCounts {
            fetched: delivered,
            delivered,
            ..RunCounts::default()
        };
        store.finish_run(id, &counts, error).await.expect("finish");
    }
    let now = mailferry_core::unix_now();
    store
        .record_push_latency("a", now, 800)
        .await
        .expect("latency");
    store
        .record_push_latency("a", now, 300)
        .await
        .expect("latency");
    let today = local_day(now);
    let days = store.history(today - 29).await.expect("history");
    let d = days["a"].last().copied().expect("today");
    assert_eq!(
        (d.day, d.delivered, d.failed_runs, d.worst_latency_ms),
        (today, 9, 1, Some(800))
    );
}

#[tokio::test]
async fn status_for_1000_accounts_with_a_month_of_runs_reads_one_query_per_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let raw = pool(dir.path()).await;
    let now = mailferry_core::unix_now();
    let started = Instant::now();
    // 1,000 accounts polled hourly for 30 days (720,000 runs, one in 50 failed); 200
    // messages each (200,000 ledger rows, one in 97 refused); 30 days of charts each.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 719999) \
         INSERT INTO runs (account, started_at, finished_at, fetched, delivered, error) \
         SELECT 'a' || (i % 1000), ?1 - 2592000 + (i / 1000) * 3600, ?1 - 2592000 + (i / 1000) * 3600 + 5, \
                1, 1, CASE WHEN i % 50 = 7 THEN 'boom' ELSE NULL END FROM n",
    )
    .bind(now)
    .execute(&raw)
    .await
    .expect("runs");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199999) \
         INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, attempts, destination, first_seen, updated_at, last_error) \
         SELECT 'a' || (i % 1000), 'INBOX', 1, i, '', 'm' || i || '@x', 'h' || i, 1000, \
                CASE WHEN i % 97 = 3 THEN 'refused' ELSE 'delivered' END, 1, 'home', ?1 - i * 10, ?1 - i * 10, \
                CASE WHEN i % 97 = 3 THEN '550 no' ELSE NULL END FROM n",
    )
    .bind(now)
    .execute(&raw)
    .await
    .expect("ledger");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29999) \
         INSERT INTO daily (account, day, delivered, failed_runs) \
         SELECT 'a' || (i % 1000), ?1 - (i / 1000), 24, 1 FROM n",
    )
    .bind(local_day(now))
    .execute(&raw)
    .await
    .expect("daily");
    eprintln!(
        "a month of 1,000 accounts written in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let lap = |what: &str, t: &mut Instant| {
        eprintln!("  {what}: {:?}", t.elapsed());
        *t = Instant::now();
    };
    let mut t = Instant::now();
    let totals = store.all_totals().await.expect("totals");
    lap("totals", &mut t);
    let refusals = store.refusals_of(None).await.expect("refusals");
    lap("refusals", &mut t);
    let history = store.history(local_day(now) - 29).await.expect("history");
    lap("history", &mut t);
    store.schedules().await.expect("schedules");
    store.pushes(None, now).await.expect("pushes");
    store.progress(None).await.expect("progress");
    lap("the rest", &mut t);
    let took = started.elapsed();
    eprintln!("status' queries for 1,000 accounts: {took:?}");
    assert_eq!(
        (totals.len(), refusals.len(), history.len()),
        (1000, 1000, 1000)
    );
    assert_eq!(totals["a7"].delivered, 198);
    assert_eq!(refusals["a3"].len(), 3);
    assert!(
        took < Duration::from_millis(500),
        "status' queries for 1,000 accounts took {took:?}"
    );
}
