//! The ledger's fingerprint moved from SHA-256 to BLAKE3 (migration 20261206000005): a
//! ledger written before, upgraded in place, still recognises what it delivered.

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, DB_FILE, LedgerKey, MIGRATOR, MessageFacts, Store};
use sha2::Digest as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The last migration before the fingerprint changed.
const BEFORE_BLAKE3: i64 = 20_261_206_000_004;

fn key(uidvalidity: u32, uid: u32) -> LedgerKey {
    LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity,
        key: MessageKey::Uid(uid),
    }
}

const BODY: &[u8] = b"Message-ID: <m@x>\r\n\r\nhello\r\n";

fn sha256() -> String {
    hex::encode(sha2::Sha256::digest(BODY))
}

fn blake3() -> String {
    format!(
        "{}{}",
        mailferry_core::CONTENT_HASH_PREFIX,
        blake3::hash(BODY).to_hex()
    )
}

/// A state directory as mailferry left it before BLAKE3: the message delivered under
/// UIDVALIDITY 7, its row holding the SHA-256 in the column of that time.
async fn ledger_from_before(state: &std::path::Path) {
    std::fs::create_dir_all(state).expect("state dir");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(state.join(DB_FILE))
                .create_if_missing(true),
        )
        .await
        .expect("db");
    MIGRATOR
        .run_to(BEFORE_BLAKE3, &pool)
        .await
        .expect("old schema");
    sqlx::query(
        "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, sha256, size, state, \
         attempts, destination, first_seen, updated_at) \
         VALUES ('a', 'INBOX', 7, 1, '', 'm@x', ?, 30, 'delivered', 1, 'home', 1, 1)",
    )
    .bind(sha256())
    .execute(&pool)
    .await
    .expect("old row");
    pool.close().await;
}

#[tokio::test]
async fn a_message_delivered_before_blake3_is_still_a_duplicate_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    ledger_from_before(&state).await;
    let store = Store::open(&state).await.expect("upgrade");

    // Under the same UIDVALIDITY nothing needs the old hash.
    assert!(!store.has_sha256_rows("a", "INBOX", 7).await.expect("query"));
    // Under a new one the old row can only be matched by its SHA-256.
    assert!(store.has_sha256_rows("a", "INBOX", 8).await.expect("query"));
    assert!(store.has_sha256_rows("a", "INBOX", 6).await.expect("query"));
    assert!(!store.has_sha256_rows("a", "Other", 8).await.expect("query"));

    let (content_hash, sha256) = (blake3(), sha256());
    let facts = |sha256| MessageFacts {
        message_id: Some("m@x"),
        content_hash: &content_hash,
        sha256,
        size: BODY.len(),
        destination: "home",
    };
    // The BLAKE3 fingerprint alone does not recognise the old row...
    assert_eq!(
        store
            .begin_attempt(&key(9, 1), &facts(None))
            .await
            .expect("attempt"),
        Attempt::Fresh
    );
    // ...with the SHA-256 too it does.
    assert_eq!(
        store
            .begin_attempt(&key(8, 1), &facts(Some(&sha256)))
            .await
            .expect("attempt"),
        Attempt::Duplicate
    );
}

#[tokio::test]
async fn rows_with_blake3_fingerprints_need_no_sha256() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).await.expect("open");
    let content_hash = blake3();
    let facts = MessageFacts {
        message_id: Some("m@x"),
        content_hash: &content_hash,
        sha256: None,
        size: BODY.len(),
        destination: "home",
    };
    store
        .begin_attempt(&key(7, 1), &facts)
        .await
        .expect("attempt");
    store
        .mark_delivered(&key(7, 1), "250")
        .await
        .expect("delivered");
    assert!(!store.has_sha256_rows("a", "INBOX", 8).await.expect("query"));
    assert_eq!(
        store
            .begin_attempt(&key(8, 1), &facts)
            .await
            .expect("attempt"),
        Attempt::Duplicate
    );
}
