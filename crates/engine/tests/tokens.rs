//! The token keeper against the fake IdP, in process: one refresh for many concurrent
//! users of one token, and the rotated refresh token committed.

use std::time::Duration;

use mailferry_config::{OAuthClient, OAuthProvider, OAuthSettings, SignInFlow};
use mailferry_engine::tokens::{self, TokenKeeper};
use mailferry_store::Store;
use mailferry_testkit::FakeIdp;

fn settings(idp: &FakeIdp) -> OAuthSettings {
    OAuthSettings {
        client: OAuthClient {
            kind: OAuthProvider::Custom,
            client_id: "engine-test".into(),
            client_secret: None,
            authorize_url: idp.url("/authorize"),
            token_url: idp.url("/token"),
            device_url: Some(idp.url("/devicecode")),
            scopes: vec!["smtp".into(), "offline_access".into()],
            authorize_params: Vec::new(),
            redirect_uri: None,
        },
        flow: SignInFlow::Device,
    }
}

/// Signs `owner` in at the IdP with access tokens declared to live `ttl` seconds.
async fn sign_in(idp: &FakeIdp, keeper: &TokenKeeper, store: &Store, owner: &str, ttl: &str) {
    let s = settings(idp);
    let p = tokens::provider(&s);
    idp.set("declared_ttl", ttl);
    let code = keeper.oauth().start_device(p).await.expect("device code");
    idp.approve(code.user_code(), "me@example.org");
    let set = keeper
        .oauth()
        .finish_device(p, &code)
        .await
        .expect("sign-in");
    tokens::save_sign_in(store, owner, &s, &set)
        .await
        .expect("save");
}

fn count(idp: &FakeIdp, what: &str) -> u64 {
    idp.stats()[what].as_u64().expect("counter")
}

#[test]
fn the_margin_is_five_minutes_or_half_the_lifetime() {
    assert_eq!(tokens::refresh_margin(0, 3600), 300);
    assert_eq!(tokens::refresh_margin(0, 600), 300);
    assert_eq!(tokens::refresh_margin(0, 60), 30);
    assert_eq!(tokens::refresh_margin(0, 1), 0);
    assert_eq!(tokens::refresh_margin(10, 0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_reused_and_one_refusal_by_many_is_one_refresh() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("store");
    let keeper = TokenKeeper::new(store.clone(), Duration::from_secs(10)).expect("keeper");
    let s = settings(&idp);
    // A token that lives one minute: used as it is for its first half.
    sign_in(&idp, &keeper, &store, "destination:home", "60").await;
    let first = keeper
        .access_token("destination:home", &s)
        .await
        .expect("token");
    let again = keeper
        .access_token("destination:home", &s)
        .await
        .expect("token");
    assert_eq!(first, again);
    assert_eq!(
        count(&idp, "refreshes"),
        0,
        "a fresh one-minute token was refreshed"
    );

    // Eight deliveries refused with that token at once: one refresh, one new token.
    let users = (0..8).map(|_| keeper.after_rejection("destination:home", &s, &first));
    let got: Vec<_> = futures_util::future::join_all(users)
        .await
        .into_iter()
        .map(|r| r.expect("token"))
        .collect();
    assert_eq!(count(&idp, "refreshes"), 1, "one refusal, many refreshes");
    assert!(got.iter().all(|t| *t == got[0] && *t != first));
    assert_eq!(count(&idp, "refresh_failures"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_use_one_refresh_token_twice() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The service and a `check` beside it: two stores, two keepers, no shared memory.
    let service = Store::open(dir.path()).await.expect("store");
    let beside = Store::open_shared(dir.path()).await.expect("shared store");
    let k1 = TokenKeeper::new(service.clone(), Duration::from_secs(10)).expect("keeper");
    let k2 = TokenKeeper::new(beside.clone(), Duration::from_secs(10)).expect("keeper");
    let s = settings(&idp);
    sign_in(&idp, &k1, &service, "account:a", "0").await;
    idp.set("declared_ttl", "3600");

    let users = (0..4)
        .map(|_| k1.access_token("account:a", &s))
        .chain((0..4).map(|_| k2.access_token("account:a", &s)));
    let got: Vec<_> = futures_util::future::join_all(users)
        .await
        .into_iter()
        .map(|r| r.expect("token"))
        .collect();
    assert_eq!(
        count(&idp, "refresh_failures"),
        0,
        "a refresh token was used twice"
    );
    assert_eq!(count(&idp, "refreshes"), 1);
    assert!(got.iter().all(|t| *t == got[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_users_of_one_token_refresh_it_once() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("store");
    let keeper = TokenKeeper::new(store.clone(), Duration::from_secs(10)).expect("keeper");
    let s = settings(&idp);
    // Sign in with an access token that has expired, so every user wants a new one.
    sign_in(&idp, &keeper, &store, "destination:home", "0").await;
    let signed = store
        .token("destination:home")
        .await
        .expect("read")
        .expect("row")
        .access_token
        .expect("access token");
    idp.set("declared_ttl", "3600");

    let users = (0..8).map(|_| keeper.access_token("destination:home", &s));
    let got: Vec<_> = futures_util::future::join_all(users)
        .await
        .into_iter()
        .map(|r| r.expect("token").expose().to_owned())
        .collect();
    assert_eq!(idp.stats()["refreshes"], 1, "a stampede of refreshes");
    assert!(
        got.iter().all(|t| *t == got[0]),
        "users got different tokens"
    );
    assert_ne!(got[0], signed.expose());

    let row = store
        .token("destination:home")
        .await
        .expect("read")
        .expect("row");
    let live = idp.stats()["live_refresh_tokens"].clone();
    assert_eq!(live, serde_json::json!([row.refresh_token.expose()]));
}
