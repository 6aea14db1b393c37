//! The statements every message makes run on the calling thread (they were handed to
//! sqlx's worker thread and back, two thread switches each), without ever blocking it:
//! a writer elsewhere makes them wait asynchronously, and the WAL is still checkpointed.

use std::time::{Duration, Instant};

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, LedgerKey, LedgerState, MessageFacts, Store};
use mailferry_testkit::{reads_of_this_thread, waits_of_this_thread, writes_of_this_thread};

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

/// The pool's own writes (a run's start and end, a token, a notice) leave the WAL to the
/// ledger's checkpoint every 200 writes. With SQLite's default they checkpointed it
/// whenever it held over 1,000 pages, which the ledger's writes pass within 200 messages:
/// about three checkpoints (six fsyncs) where one was meant (`scripts/bench`, 2,000
/// messages: 70 fsyncs).
#[tokio::test(flavor = "current_thread")]
async fn a_write_through_the_pool_leaves_the_checkpoint_to_the_ledger() {
    let (dir, store) = store().await;
    // 150 messages: about 900 WAL frames of the ledger's, fewer than 200 writes.
    deliver(&store, 1, 150).await;
    store.start_run("a").await.expect("a run");
    let db = || {
        std::fs::metadata(dir.path().join("mailferry.db"))
            .expect("db")
            .len()
    };
    let before = db();
    for _ in 0..9 {
        store.start_run("a").await.expect("a run");
    }
    deliver(&store, 1_000, 30).await;
    store.start_run("a").await.expect("a run");
    // A checkpoint would have copied the ledger's pages into the database file.
    assert_eq!(
        db(),
        before,
        "a write through the pool checkpointed the WAL"
    );
    store.close().await;
}

/// A long import saves its progress every 25 messages. Through the pool each save waited
/// for sqlx's worker thread, and, written by another connection, made the ledger's
/// connection read its pages again at the next message (about a dozen reads a save).
#[tokio::test(flavor = "current_thread")]
async fn an_imports_progress_is_saved_without_another_thread_or_stale_pages() {
    let (_dir, store) = store().await;
    deliver(&store, 1, 10).await;
    store
        .save_progress("a", "INBOX", 10_000, 0, 1)
        .await
        .expect("progress");
    deliver(&store, 20, 10).await;
    // 1,000 messages, as 40 runs of 25, without saves and then with one after each: the
    // waits and reads of the first (the pool's checkpoint every 200 writes) are the
    // second's too.
    let import = async |first: u32, save: bool| {
        let (waits, reads) = (waits_of_this_thread(), reads_of_this_thread());
        for n in 1..=40u32 {
            deliver(&store, first + n * 25, 25).await;
            if save {
                store
                    .save_progress("a", "INBOX", 10_000, u64::from(n) * 25, 1)
                    .await
                    .expect("progress");
            }
        }
        (
            waits_of_this_thread() - waits,
            reads_of_this_thread() - reads,
        )
    };
    let (waits, reads) = import(100, false).await;
    let (saving_waits, saving_reads) = import(10_000, true).await;
    eprintln!(
        "1,000 messages: {waits} waits, {reads} reads; with 40 progress saves {saving_waits} and {saving_reads}"
    );
    assert!(
        saving_waits < waits + 10,
        "40 progress saves waited {} times more for another thread",
        saving_waits.saturating_sub(waits)
    );
    assert!(
        saving_reads < reads + 40,
        "the ledger's connection read {} times more over 40 progress saves",
        saving_reads.saturating_sub(reads)
    );
    let progress = store.progress(Some("a")).await.expect("progress");
    assert_eq!(progress.len(), 1);
    assert_eq!((progress[0].done, progress[0].total), (1_000, 10_000));
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
