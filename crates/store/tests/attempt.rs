//! A delivery recorded together with the next message's attempt, in one statement.

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, LedgerKey, LedgerState, MessageFacts, Store};

fn key(uidvalidity: u32, uid: u32) -> LedgerKey {
    LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity,
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

/// Opens the attempt of `key` (as the deliverer does before sending).
async fn begin(store: &Store, key: LedgerKey, hash: &str) {
    store
        .begin_attempt(&key, &facts(hash))
        .await
        .expect("begin");
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).await.expect("open");
    (dir, store)
}

#[tokio::test]
async fn the_delivery_is_recorded_and_the_next_attempt_begins() {
    let (_dir, store) = store().await;
    begin(&store, key(7, 1), "h1").await;
    let inserted = store
        .mark_delivered_and_begin(
            &key(7, 1),
            "250 2.0.0 queued as X",
            &key(7, 2),
            &facts("h2"),
        )
        .await
        .expect("record");
    assert_eq!(inserted, Some(LedgerState::Attempt));
    assert_eq!(
        store.state_of(&key(7, 1)).await.expect("state"),
        Some(LedgerState::Delivered)
    );
    assert_eq!(
        store
            .continue_attempt(&key(7, 2), &facts("h2"), inserted)
            .await
            .expect("go on"),
        Attempt::Fresh
    );
    assert_eq!(
        store.state_of(&key(7, 2)).await.expect("state"),
        Some(LedgerState::Attempt)
    );
    // Delivered as the source may now see it.
    let delivered = store.delivered_keys("a", "INBOX", 7).await.expect("keys");
    assert!(delivered.contains(&MessageKey::Uid(1)) && !delivered.contains(&MessageKey::Uid(2)));
}

#[tokio::test]
async fn a_next_message_whose_row_exists_is_left_to_the_attempts_other_paths() {
    let (_dir, store) = store().await;
    // Message 2 was left open by a crash; message 1 is being delivered now.
    begin(&store, key(7, 2), "h2").await;
    begin(&store, key(7, 1), "h1").await;
    let inserted = store
        .mark_delivered_and_begin(&key(7, 1), "250", &key(7, 2), &facts("h2"))
        .await
        .expect("record");
    assert_eq!(inserted, None, "the existing row is not an insert");
    assert_eq!(
        store.state_of(&key(7, 1)).await.expect("state"),
        Some(LedgerState::Delivered)
    );
    assert!(matches!(
        store
            .continue_attempt(&key(7, 2), &facts("h2"), inserted)
            .await
            .expect("go on"),
        Attempt::Interrupted { .. }
    ));
}

#[tokio::test]
async fn the_next_message_is_a_duplicate_when_its_bytes_were_delivered_under_another_uidvalidity() {
    let (_dir, store) = store().await;
    begin(&store, key(6, 9), "same").await;
    store
        .mark_delivered(&key(6, 9), "250")
        .await
        .expect("delivered");
    begin(&store, key(7, 1), "h1").await;
    let inserted = store
        .mark_delivered_and_begin(&key(7, 1), "250", &key(7, 2), &facts("same"))
        .await
        .expect("record");
    assert_eq!(inserted, Some(LedgerState::Duplicate));
    assert_eq!(
        store
            .continue_attempt(&key(7, 2), &facts("same"), inserted)
            .await
            .expect("go on"),
        Attempt::Duplicate
    );
}

#[tokio::test]
async fn a_key_listed_twice_is_recorded_delivered_then_found_settled() {
    let (_dir, store) = store().await;
    begin(&store, key(7, 1), "h1").await;
    let inserted = store
        .mark_delivered_and_begin(&key(7, 1), "250", &key(7, 1), &facts("h1"))
        .await
        .expect("record");
    assert_eq!(inserted, None);
    assert_eq!(
        store
            .continue_attempt(&key(7, 1), &facts("h1"), inserted)
            .await
            .expect("go on"),
        Attempt::Settled
    );
    assert_eq!(
        store.state_of(&key(7, 1)).await.expect("state"),
        Some(LedgerState::Delivered)
    );
}

#[tokio::test]
async fn a_delivery_whose_row_is_missing_writes_nothing_for_it() {
    let (_dir, store) = store().await;
    let inserted = store
        .mark_delivered_and_begin(&key(7, 1), "250", &key(7, 2), &facts("h2"))
        .await
        .expect("record");
    assert_eq!(inserted, Some(LedgerState::Attempt));
    assert_eq!(store.state_of(&key(7, 1)).await.expect("state"), None);
}
