//! The page rendered from a real store: what it says, and that nothing it shows runs.

use super::{Sources, render};
use mailferry_core::MessageKey;
use mailferry_store::{LedgerKey, MessageFacts, Store};

/// The page for `config` (read from `dir`'s m.toml) and `store`.
async fn page(dir: &tempfile::TempDir, config: &mailferry_config::Config, store: &Store) -> String {
    render(&Sources {
        config,
        config_path: &dir.path().join("m.toml"),
        store,
    })
    .await
    .expect("page")
}

async fn setup() -> (tempfile::TempDir, mailferry_config::Config, Store) {
    setup_with("").await
}

/// The one-account configuration, `extra` lines added to the account.
async fn setup_with(extra: &str) -> (tempfile::TempDir, mailferry_config::Config, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p"), "pw").expect("pass");
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        format!("[daemon]\nstate-dir = \"state\"\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n[[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\nauth = {{ method = \"password\", password-file = \"p\" }}\ndestination = \"home\"\n{extra}"),
    )
    .expect("config");
    let config = mailferry_config::load(&path).expect("valid");
    let store = Store::open(&dir.path().join("state")).await.expect("store");
    (dir, config, store)
}

#[tokio::test]
async fn with_no_accounts_the_page_says_what_to_do_first() {
    let (dir, mut config, store) = setup().await;
    config.accounts.clear();
    let page = page(&dir, &config, &store).await;
    assert!(page.contains("No accounts yet"), "{page}");
    assert!(page.contains("mailferry init"), "{page}");
    assert!(page.contains("systemctl reload mailferry"), "{page}");
}

#[tokio::test]
async fn a_pushed_account_whose_push_is_connected_is_ok_before_any_poll() {
    // Every folder pushed and no poll run yet (none is due for an hour): no schedule row,
    // no runs. Its connected push is its run, so it is ok, not "not run yet".
    let (dir, config, store) = setup_with("push = \"idle\"\ninterval = \"1h\"\n").await;
    store
        .save_push(&mailferry_store::PushRow {
            account: "a".into(),
            folder: "INBOX".into(),
            state: "connected".into(),
            connected_since: Some(mailferry_core::unix_now()),
            last_event: None,
            last_latency_ms: None,
            last_error: None,
            logins_24h: 1,
        })
        .await
        .expect("push");
    let page = page(&dir, &config, &store).await;
    assert!(!page.contains("not run yet"), "{page}");
    assert!(page.contains(">ok<"), "{page}");
}

#[tokio::test]
async fn a_hostile_message_id_and_reason_come_out_as_text() {
    let (dir, config, store) = setup().await;
    let key = LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity: 1,
        key: MessageKey::Uid(7),
    };
    let id = "x\"><script>document.title='owned'</script>@evil.example";
    store
        .begin_attempt(
            &key,
            &MessageFacts {
                message_id: Some(id),
                content_hash: "00",
                sha256: None,
                size: 1,
                destination: "home",
            },
        )
        .await
        .expect("attempt");
    store
        .mark_refused(&key, "550 <img src=x onerror=alert(1)> & more")
        .await
        .expect("refused");
    let page = page(&dir, &config, &store).await;
    assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains(
            "x&quot;&gt;&lt;script&gt;document.title='owned'&lt;/script&gt;@evil.example"
        ),
        "{page}"
    );
    assert!(
        page.contains("550 &lt;img src=x onerror=alert(1)&gt; &amp; more"),
        "{page}"
    );
    assert!(
        page.contains("mailferry retry --account a --refused"),
        "{page}"
    );
}

#[tokio::test]
async fn a_long_list_of_refusals_shows_the_most_recent_and_says_where_the_rest_are() {
    let (dir, config, store) = setup().await;
    for uid in 1..=25 {
        let key = LedgerKey {
            account: "a".into(),
            folder: "INBOX".into(),
            uidvalidity: 1,
            key: MessageKey::Uid(uid),
        };
        let sha = uid.to_string();
        let facts = MessageFacts {
            message_id: None,
            content_hash: &sha,
            sha256: None,
            size: 1,
            destination: "home",
        };
        store.begin_attempt(&key, &facts).await.expect("attempt");
        store.mark_refused(&key, "550 no").await.expect("refused");
    }
    let page = page(&dir, &config, &store).await;
    assert_eq!(page.matches("<td>UID ").count(), 20, "{page}");
    assert!(page.contains("The 20 most recent of 25"), "{page}");
}

#[test]
fn the_policy_allows_the_pages_own_style_and_nothing_else() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(super::STYLE));
    let csp = &*super::CONTENT_SECURITY_POLICY;
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
}
