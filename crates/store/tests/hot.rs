//! The statements every message makes run on the calling thread (they were handed to
//! sqlx's worker thread and back, two thread switches each), without ever blocking it:
//! a writer elsewhere makes them wait asynchronously, and the WAL is still checkpointed.

use std::time::{Duration, Instant};

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, LedgerKey, LedgerState, MessageFacts, Store};
use mailferry_testkit::{waits_of_this_thread, writes_of_this_thread};

fn key(uid: u32) -> LedgerKey {
    LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity: 7,
        key: MessageKey::Uid(uid),
    }
}

fn facts(hash: &str) -> MessageFacts<'_> {
    MessageFacts {
        message_id: Some("m@x"),
        content_hash: hash,
        sha256: None,
        size: 10,
        destination: "home",
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    (dir, store)
}

/// Delivers `n` messages as the deliverer does: each recorded with the next's attempt.
async fn deliver(store: &Store, first: u32, n: u32) {
    let hash = |uid: u32| format!("blake3:{uid:064x}");
    let first_hash = hash(first);
    assert_eq!(
        store
            .begin_attempt(&key(first), &facts(&first_hash))
            .await
            .expect("begin"),
        Attempt::Fresh
    );
    for uid in first + 1..first + n {
        let h = hash(uid);
        let inserted = store
            .mark_delivered_and_begin(&key(uid - 1), "250 ok", &key(uid), &facts(&h))
            .await
            .expect("record");
        assert_eq!(inserted, Some(LedgerState::Attempt));
    }
    store
        .mark_delivered(&key(first + n - 1), "250 ok")
        .await
        .expect("last");
}

#[tokio::test(flavor = "current_thread")]
async fn the_per_message_statements_run_on_the_calling_thread_without_waiting_for_another() {
    let (_dir, store) = store().await;
    // The first statements open the connection and prepare the statements.
    deliver(&store, 1, 10).await;
    let before = waits_of_this_thread();
    deliver(&store, 100, 1000).await;
    let waits = waits_of_this_thread() - before;
    eprintln!("1,000 messages: {waits} waits");
    // Through sqlx's worker thread every statement waited for its answer: at least 1,000.
    // Here only the passive checkpoint every 200 writes goes through the pool.
    assert!(
        waits < 100,
        "1,000 messages' statements waited {waits} times for another thread"
    );
    assert_eq!(
        store.state_of(&key(1099)).await.expect("state"),
        Some(LedgerState::Delivered)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_statement_waits_for_another_writer_without_blocking_the_thread() {
    let (dir, store) = store().await;
    // Another process (say, `mailferry auth` storing a token) holds the write lock.
    let other = another_writer(dir.path()).await;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        other.commit().await.expect("commit");
    });
    let started = Instant::now();
    let attempt = store
        .begin_attempt(&key(1), &facts("blake3:01"))
        .await
        .expect("begin waits for the lock, then succeeds");
    let waited = started.elapsed();
    ticker.abort();
    release.await.expect("release");
    assert_eq!(attempt, Attempt::Fresh);
    assert!(
        waited >= Duration::from_millis(350),
        "it did not wait: {waited:?}"
    );
    // The thread went on with other work meanwhile: the ticker ran about 40 times.
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticks >= 20,
        "the thread was blocked: {ticks} ticks in {waited:?}"
    );
    assert_eq!(
        store.state_of(&key(1)).await.expect("state"),
        Some(LedgerState::Attempt)
    );
}

/// A transaction on another connection that holds the database's write lock.
async fn another_writer(dir: &std::path::Path) -> sqlx::Transaction<'static, sqlx::Sqlite> {
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("mailferry.db").display()))
            .await
            .expect("pool");
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    sqlx::query("INSERT INTO runs (account, started_at) VALUES ('other', 1)")
        .execute(&mut *tx)
        .await
        .expect("write");
    tx
}

#[tokio::test(flavor = "current_thread")]
async fn the_wal_is_checkpointed_while_messages_are_recorded() {
    let (dir, store) = store().await;
    deliver(&store, 1, 3000).await;
    let wal = std::fs::metadata(dir.path().join("mailferry.db-wal"))
        .expect("wal")
        .len();
    eprintln!("WAL after 3,000 messages: {wal} bytes");
    // 3,000 messages write about 15,000 pages (60 MB) to the WAL; checkpointed every 200
    // writes it is used again from its start.
    assert!(
        wal < 16 << 20,
        "the WAL grew to {wal} bytes over 3,000 messages"
    );
    store.close().await;
}

/// The pool's own writes (a long import's progress, every 25 messages) leave the WAL to
/// the ledger's checkpoint every 200 writes. With SQLite's default they checkpointed it
/// whenever it held over 1,000 pages, which the ledger's writes pass within 200 messages:
/// about three checkpoints (six fsyncs) where one was meant (`scripts/bench`, 2,000
/// messages: 70 fsyncs).
#[tokio::test(flavor = "current_thread")]
async fn a_write_through_the_pool_leaves_the_checkpoint_to_the_ledger() {
    let (dir, store) = store().await;
    // 150 messages: about 900 WAL frames of the ledger's, fewer than 200 writes.
    deliver(&store, 1, 150).await;
    store
        .save_progress("a", "INBOX", 1_000, 10, 1)
        .await
        .expect("progress");
    let db = || {
        std::fs::metadata(dir.path().join("mailferry.db"))
            .expect("db")
            .len()
    };
    let before = db();
    for done in 11..20 {
        store
            .save_progress("a", "INBOX", 1_000, done, 1)
            .await
            .expect("progress");
    }
    deliver(&store, 1_000, 30).await;
    store
        .save_progress("a", "INBOX", 1_000, 20, 1)
        .await
        .expect("progress");
    // A checkpoint would have copied the ledger's pages into the database file.
    assert_eq!(
        db(),
        before,
        "a write through the pool checkpointed the WAL"
    );
    store.close().await;
}

/// SQLite appends each WAL frame with two writes, its header and its page: a message's
/// transaction (about five frames) was ten `pwrite` calls. The ledger's connection gathers
/// a transaction's frames and writes them at once (crates/sys `wal`).
#[tokio::test(flavor = "current_thread")]
async fn a_message_is_recorded_with_one_write() {
    let (_dir, store) = store().await;
    deliver(&store, 1, 10).await;
    let before = writes_of_this_thread();
    // 150 messages: fewer than the 200 writes between checkpoints, which are the pool's.
    deliver(&store, 100, 150).await;
    let writes = writes_of_this_thread() - before;
    eprintln!("150 messages: {writes} write calls");
    assert!(
        writes <= 160,
        "150 messages took {writes} write calls on the ledger's thread"
    );
    assert_eq!(
        store.state_of(&key(249)).await.expect("state"),
        Some(LedgerState::Delivered)
    );
    store.close().await;
}
