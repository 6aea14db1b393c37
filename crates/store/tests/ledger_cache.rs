//! The ledger's connection keeps a small cache. What a message touches is the right-most
//! pages of the ledger and its indexes and one leaf of the content index, at random; at
//! SQLite's default (2 MB) the cache filled with such leaves, visited once, and
//! `scripts/bench`'s peak RSS grew by 2 to 4 MB (to 26 MB) once no other connection's
//! write emptied it. Its own binary: SQLite's count of the memory it holds is the whole
//! process'.

use mailferry_core::MessageKey;
use mailferry_store::{LedgerKey, MessageFacts, Store};

#[tokio::test(flavor = "current_thread")]
async fn five_thousand_messages_leave_sqlite_holding_little_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let record = async |uid: u32| {
        let key = LedgerKey {
            account: "a".into(),
            folder: "INBOX".into(),
            uidvalidity: 7,
            key: MessageKey::Uid(uid),
        };
        // A fingerprint as random as BLAKE3's: the content index's leaves at random.
        let hash = format!(
            "blake3:{:064x}",
            u128::from(uid).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
        );
        let facts = MessageFacts {
            message_id: None,
            content_hash: &hash,
            sha256: None,
            size: 10,
            destination: "home",
        };
        store.begin_attempt(&key, &facts).await.expect("attempt");
        store
            .mark_delivered(&key, "250 ok")
            .await
            .expect("delivered");
    };
    for uid in 1..=10 {
        record(uid).await;
    }
    let before = mailferry_sys::wal::sqlite_memory_used();
    for uid in 100..5_100 {
        record(uid).await;
    }
    let grown = mailferry_sys::wal::sqlite_memory_used() - before;
    eprintln!("5,000 messages: SQLite holds {grown} bytes more");
    assert!(
        grown < 700 * 1024,
        "SQLite holds {grown} bytes more after 5,000 messages"
    );
    store.close().await;
}
