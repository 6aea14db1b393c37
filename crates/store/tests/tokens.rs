//! Token rows: rotation only replaces the refresh token it names; parking and sign-in.

use mailferry_core::Secret;
use mailferry_store::{IssuedTokens, Store};

fn issued<'a>(access: &'a str, refresh: &'a str, scopes: &'a [String]) -> IssuedTokens<'a> {
    IssuedTokens {
        access_token: access,
        refresh_token: refresh,
        expires_at: 4_000_000_000,
        scopes,
        subject: Some("me@example.org"),
    }
}

#[tokio::test]
async fn rotation_replaces_only_the_refresh_token_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let scopes = vec!["imap".to_owned(), "offline_access".to_owned()];
    assert!(store.token("account:a").await.expect("read").is_none());
    store
        .save_sign_in(
            "account:a",
            "cid",
            "https://t",
            issued("at1", "rt1", &scopes),
        )
        .await
        .expect("sign in");

    let rt1 = Secret::new("rt1".into());
    assert!(
        store
            .save_refresh("account:a", &rt1, issued("at2", "rt2", &scopes))
            .await
            .expect("refresh")
    );
    // A second refresher still holding rt1 lost the race: nothing changes.
    assert!(
        !store
            .save_refresh("account:a", &rt1, issued("at3", "rt3", &scopes))
            .await
            .expect("stale refresh")
    );
    let t = store.token("account:a").await.expect("read").expect("row");
    assert_eq!(t.refresh_token.expose(), "rt2");
    assert_eq!(t.access_token.as_ref().map(Secret::expose), Some("at2"));
    assert_eq!(t.scopes, scopes);
    assert_eq!(t.subject.as_deref(), Some("me@example.org"));

    // Parking names the dead token too; a stale park does nothing.
    store
        .park_token("account:a", &rt1, "invalid_grant")
        .await
        .expect("stale park");
    assert!(
        store
            .token("account:a")
            .await
            .expect("read")
            .expect("row")
            .parked
            .is_none()
    );
    let rt2 = Secret::new("rt2".into());
    store
        .park_token("account:a", &rt2, "invalid_grant")
        .await
        .expect("park");
    let t = store.token("account:a").await.expect("read").expect("row");
    assert_eq!(t.parked.as_deref(), Some("invalid_grant"));

    // Signing in again un-parks.
    store
        .save_sign_in(
            "account:a",
            "cid",
            "https://t",
            issued("at9", "rt9", &scopes),
        )
        .await
        .expect("sign in again");
    let t = store.token("account:a").await.expect("read").expect("row");
    assert!(t.parked.is_none());
    assert_eq!(t.refresh_token.expose(), "rt9");
    assert_eq!(store.token_owners().await.expect("owners"), ["account:a"]);
}

#[tokio::test]
async fn a_shared_store_opens_beside_the_locked_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = Store::open(dir.path()).await.expect("open");
    assert!(
        Store::open(dir.path()).await.is_err(),
        "a second runner is refused"
    );
    let auth = Store::open_shared(dir.path()).await.expect("shared");
    let scopes = vec!["s".to_owned()];
    auth.save_sign_in("account:a", "cid", "https://t", issued("a", "r", &scopes))
        .await
        .expect("write beside the daemon");
}
