//! What a poll reads of a large folder's ledger (the settled keys) and what a complete
//! listing compares with it (note_listing) come row by row: the memory they take is the
//! keys', not the rows'. Measured here with 50,000 rows: the settled keys 6.3 MB at most
//! before (the rows, then the set), 2.5 MB now (the set); a complete listing 16.1 MB
//! before (320 bytes a row), 22 KB now.
//!
//! One test in this binary: the allocator's counts are the whole process'.

use std::collections::HashSet;

use mailferry_core::MessageKey;
use mailferry_store::Store;
use mailferry_sys::counting::Counting;

#[global_allocator]
static ALLOC: Counting = Counting;

const ROWS: u32 = 50_000;

#[tokio::test]
async fn reading_a_large_folders_ledger_holds_its_keys_not_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("mailferry.db").display()
    ))
    .await
    .expect("pool");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, attempts, destination, first_seen, updated_at) \
         SELECT 'a', 'INBOX', 1, i, '', '<m' || i || '@example.com>', 'blake3:' || hex(randomblob(32)), 1000, 'delivered', 1, 'home', 1, 1 FROM n",
    )
    .bind(ROWS)
    .execute(&raw)
    .await
    .expect("ledger");
    raw.close().await;
    // The pool's connections are open and their statements prepared before counting.
    store
        .settled_keys("a", "INBOX", 2)
        .await
        .expect("warm settled_keys");
    let present: HashSet<MessageKey> = (1..=ROWS).map(MessageKey::Uid).collect();

    // A poll: the settled keys, kept (the set is what the run needs).
    let before = Counting::reset_peak();
    let settled = store
        .settled_keys("a", "INBOX", 1)
        .await
        .expect("settled_keys");
    let set_bytes = Counting::peak() - before;
    eprintln!("settled_keys: {set_bytes} bytes at most");
    assert_eq!(settled.len(), ROWS as usize);
    // The set and its last growth (old and new tables side by side): about 50 bytes a
    // key; with the rows held as well, 125.
    assert!(
        set_bytes < 80 * ROWS as usize,
        "reading {ROWS} keys took {set_bytes} bytes at most"
    );
    drop(settled);

    // A complete listing that finds every row present: nothing to keep at all.
    let before = Counting::reset_peak();
    let pruned = store
        .note_listing("a", "INBOX", 1, &present, 1_000)
        .await
        .expect("note_listing");
    let listing_bytes = Counting::peak() - before;
    eprintln!("note_listing: {listing_bytes} bytes at most");
    assert_eq!((pruned.marked, pruned.dropped), (0, 0));
    assert!(
        listing_bytes < 2_000_000,
        "comparing {ROWS} rows with the listing took {listing_bytes} bytes at most"
    );
}
