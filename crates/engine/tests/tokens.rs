//! The token keeper against the fake IdP, in process: one refresh for many concurrent
//! users of one token, and the rotated refresh token committed.

use std::time::Duration;

use mailferry_config::{OAuthProvider, OAuthSettings, SignInFlow};
use mailferry_engine::tokens::{self, TokenKeeper};
use mailferry_store::Store;
use mailferry_testkit::FakeIdp;

fn settings(idp: &FakeIdp) -> OAuthSettings {
    OAuthSettings {
        provider: OAuthProvider::Custom,
        client_id: "engine-test".into(),
        client_secret: None,
        authorize_url: idp.url("/authorize"),
        token_url: idp.url("/token"),
        device_url: Some(idp.url("/devicecode")),
        scopes: vec!["smtp".into(), "offline_access".into()],
        authorize_params: Vec::new(),
        flow: SignInFlow::Device,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_users_of_one_token_refresh_it_once() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("store");
    let keeper = TokenKeeper::new(store.clone(), Duration::from_secs(10)).expect("keeper");
    let s = settings(&idp);
    let p = tokens::provider(&s);

    // Sign in with an access token inside the refresh margin, so every user wants a new one.
    idp.set("declared_ttl", "1");
    let code = keeper.oauth().start_device(&p).await.expect("device code");
    idp.approve(code.user_code(), "me@example.org");
    let set = keeper
        .oauth()
        .finish_device(&p, &code)
        .await
        .expect("sign-in");
    tokens::save_sign_in(&store, "destination:home", &s, &set)
        .await
        .expect("save");
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
    assert_ne!(got[0], set.access_token.expose());

    let row = store
        .token("destination:home")
        .await
        .expect("read")
        .expect("row");
    let live = idp.stats()["live_refresh_tokens"].clone();
    assert_eq!(live, serde_json::json!([row.refresh_token.expose()]));
}
