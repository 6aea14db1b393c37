//! The state stays bounded over years (`prune.rs`): what a complete listing no longer
//! shows leaves the ledger after 30 days and still counts, runs older than 30 days go, and
//! `status`' queries stay fast with a year of history.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, KEEP_FOR, LedgerKey, LedgerState, MessageFacts, Store};

fn key(uidl: &str) -> LedgerKey {
    LedgerKey {
        account: "pop".into(),
        folder: "INBOX".into(),
        uidvalidity: 0,
        key: MessageKey::Uidl(uidl.into()),
    }
}

fn listing(uidls: &[&str]) -> HashSet<MessageKey> {
    uidls
        .iter()
        .map(|u| MessageKey::Uidl((*u).into()))
        .collect()
}

#[tokio::test]
async fn a_message_gone_from_the_source_for_30_days_leaves_the_ledger_and_still_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    for u in ["a", "b", "c", "d", "e"] {
        let facts = MessageFacts {
            message_id: None,
            content_hash: u,
            sha256: None,
            size: 10,
            destination: "home",
        };
        assert_eq!(
            store.begin_attempt(&key(u), &facts).await.expect("begin"),
            Attempt::Fresh
        );
        store.mark_delivered(&key(u), "250 ok").await.expect("mark");
    }
    // An attempt left open is never dropped, gone or not.
    let open = MessageFacts {
        message_id: None,
        content_hash: "f",
        sha256: None,
        size: 10,
        destination: "home",
    };
    store.begin_attempt(&key("f"), &open).await.expect("begin");
    let day = 86_400;
    let t0 = 2_000_000_000;
    let p = store
        .note_listing("pop", "INBOX", 0, &listing(&["a", "b", "c"]), t0)
        .await
        .expect("note");
    assert_eq!((p.marked, p.dropped), (2, 0));
    // d comes back (a server that showed a partial maildrop once): unmarked.
    store
        .note_listing(
            "pop",
            "INBOX",
            0,
            &listing(&["a", "b", "c", "d"]),
            t0 + 10 * day,
        )
        .await
        .expect("note");
    let p = store
        .note_listing(
            "pop",
            "INBOX",
            0,
            &listing(&["a", "b", "c"]),
            t0 + KEEP_FOR + day,
        )
        .await
        .expect("note");
    assert_eq!((p.marked, p.dropped), (1, 1), "d marked anew, e dropped");
    assert_eq!(store.state_of(&key("e")).await.expect("state"), None);
    assert_eq!(
        store.state_of(&key("d")).await.expect("state"),
        Some(LedgerState::Delivered)
    );
    assert_eq!(
        store.state_of(&key("f")).await.expect("state"),
        Some(LedgerState::Attempt)
    );
    // Still five delivered in `status`.
    assert_eq!(store.totals("pop").await.expect("totals").delivered, 5);
}

#[tokio::test]
async fn a_year_of_runs_is_pruned_to_30_days_and_status_stays_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("mailferry.db").display()
    ))
    .await
    .expect("pool");
    // 20 accounts every 10 minutes for a year (1,051,200 runs); one in 50 failed.
    let now = mailferry_core::unix_now();
    let inserted = std::time::Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1051199) \
         INSERT INTO runs (account, started_at, finished_at, fetched, delivered, skipped, failed, error) \
         SELECT 'a' || (i % 20), ?1 - 31536000 + (i / 20) * 600, ?1 - 31536000 + (i / 20) * 600 + 5, \
                1, 1, 0, 0, CASE WHEN i % 50 = 7 THEN 'boom' ELSE NULL END FROM n",
    )
    .bind(now)
    .execute(&pool)
    .await
    .expect("insert a year");
    eprintln!("a year of runs inserted in {:?}", inserted.elapsed());
    pool.close().await;
    let pruned = store.prune_runs(now).await.expect("prune");
    // 30 days of 144 runs a day for 20 accounts stay: 86,400.
    assert_eq!(pruned, 1_051_200 - 86_400);
    // Twice: nothing more.
    assert_eq!(store.prune_runs(now).await.expect("prune"), 0);
    let started = Instant::now();
    for a in 0..20 {
        let t = store.totals(&format!("a{a}")).await.expect("totals");
        assert!(t.last_run.is_some() && t.last_success.is_some());
    }
    store.schedules().await.expect("schedules");
    let took = started.elapsed();
    eprintln!("status' queries for 20 accounts after a year: {took:?}");
    assert!(
        took < Duration::from_millis(100),
        "status' queries for 20 accounts took {took:?}"
    );
}

/// A long import's progress: written, read with its rate and expected end, cleared.
#[tokio::test]
async fn an_import_in_progress_is_read_with_its_rate_and_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let started = mailferry_core::unix_now() - 100;
    store
        .save_progress("a", "INBOX", 20_000, 400, started)
        .await
        .expect("save");
    let p = store.progress(Some("a")).await.expect("read");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].remaining(), 19_600);
    let rate = p[0].rate().expect("a rate");
    assert!((3.9..=4.1).contains(&rate), "{rate}");
    let eta = p[0].eta().expect("an end");
    assert!((4_700..=5_000).contains(&eta), "{eta}");
    assert!(store.progress(Some("b")).await.expect("read").is_empty());
    store.clear_progress("a", "INBOX").await.expect("clear");
    assert!(store.progress(None).await.expect("read").is_empty());
}
