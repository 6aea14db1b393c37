//! The ledger's CHECK on `state` became comparisons (migration 20261208000001), edited in
//! the schema in place: a ledger written before keeps every row, and the check still
//! refuses what it refused.

use mailferry_store::{DB_FILE, MIGRATOR, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// The last migration before the edit.
const BEFORE: i64 = 20_261_207_000_001;

const STATES: [&str; 5] = ["attempt", "delivered", "deferred", "refused", "duplicate"];

async fn pool(state: &std::path::Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(state.join(DB_FILE))
                .create_if_missing(true),
        )
        .await
        .expect("db")
}

async fn insert(pool: &SqlitePool, uid: i64, state: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, \
         state, attempts, destination, first_seen, updated_at) \
         VALUES ('a', 'INBOX', 7, ?, '', NULL, 'blake3:00', 10, ?, 1, 'home', 1, 1)",
    )
    .bind(uid)
    .bind(state)
    .execute(pool)
    .await
    .map(|_| ())
}

async fn schema_version(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("PRAGMA schema_version")
        .fetch_one(pool)
        .await
        .expect("schema_version")
}

#[tokio::test]
async fn the_state_check_is_edited_in_place_and_refuses_what_it_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let old = pool(&state).await;
    MIGRATOR.run_to(BEFORE, &old).await.expect("old schema");
    for (uid, s) in (1..).zip(STATES) {
        insert(&old, uid, s).await.expect("a row of each state");
    }
    let version = schema_version(&old).await;
    old.close().await;

    let store = Store::open(&state).await.expect("upgrade");
    let db = pool(&state).await;
    let sql: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'ledger'",
    )
    .fetch_one(&db)
    .await
    .expect("definition");
    assert!(
        sql.contains("CHECK (state = 'attempt' OR state = 'delivered'") && !sql.contains(" IN ("),
        "the ledger's definition after the upgrade: {sql}"
    );
    // Connections that parsed the schema before read it again.
    assert!(schema_version(&db).await > version);
    let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&db)
        .await
        .expect("integrity_check");
    assert_eq!(check, ["ok"]);
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT uid, state FROM ledger ORDER BY uid")
        .fetch_all(&db)
        .await
        .expect("rows");
    assert_eq!(
        rows,
        (1..)
            .zip(STATES.map(String::from))
            .collect::<Vec<(i64, String)>>()
    );

    let refused = insert(&db, 10, "sent")
        .await
        .expect_err("a state not in the list");
    assert!(
        refused.to_string().contains("CHECK constraint failed"),
        "{refused}"
    );
    let update = sqlx::query("UPDATE ledger SET state = 'Delivered' WHERE uid = 1")
        .execute(&db)
        .await
        .expect_err("an update to a state not in the list");
    assert!(
        update.to_string().contains("CHECK constraint failed"),
        "{update}"
    );
    for (uid, s) in (20..).zip(STATES) {
        insert(&db, uid, s)
            .await
            .expect("every state is still taken");
    }
    db.close().await;
    drop(store);
}
