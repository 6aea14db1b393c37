//! The checks of `[[account]]` (model/account.rs), each through the shared sample.

use std::time::Duration;

use crate::testing::Sample;
use crate::{AfterDelivery, FirstRun, Protocol, SourceAuth, TlsMode};

#[test]
fn a_provider_fills_host_port_and_tls_and_the_rest_has_defaults() {
    let config = Sample::new().load().expect("valid");
    let a = &config.accounts[0];
    assert_eq!(a.protocol, Protocol::Imap);
    assert_eq!(
        (a.endpoint.host.as_str(), a.endpoint.port, a.endpoint.tls),
        ("imap.gmx.net", 993, TlsMode::Implicit)
    );
    assert_eq!(a.folders, ["INBOX"]);
    assert_eq!(a.interval, Duration::from_secs(600));
    assert_eq!(a.after_delivery, AfterDelivery::Keep);
    assert_eq!(a.first_run, FirstRun::All);
    assert!(a.enabled && a.pipelining && a.push.is_none());
    assert!(a.is_spam_folder("junk") && a.is_spam_folder("[Gmail]/Spam"));
    assert!(matches!(&a.auth, SourceAuth::Password(p) if p.expose() == crate::testing::PASSWORD));
}

#[test]
fn without_a_provider_the_port_follows_protocol_and_tls() {
    for (lines, port) in [
        ("host = \"mail.example.org\"", 993),
        ("host = \"mail.example.org\"\ntls = \"starttls\"", 143),
        ("host = \"mail.example.org\"\nprotocol = \"pop3\"", 995),
        (
            "host = \"mail.example.org\"\nprotocol = \"pop3\"\ntls = \"starttls\"",
            110,
        ),
        ("host = \"mail.example.org\"\nport = 1993", 1993),
    ] {
        let config = Sample::new().source(lines).load().expect(lines);
        assert_eq!(config.accounts[0].endpoint.port, port, "{lines}");
    }
}

#[test]
fn pop3_accounts_take_the_pop3_preset_and_refuse_folders() {
    let config = Sample::new()
        .account("protocol = \"pop3\"\nafter-delivery = \"delete\"")
        .load()
        .expect("valid");
    let a = &config.accounts[0];
    assert_eq!(
        (a.endpoint.host.as_str(), a.endpoint.port),
        ("pop.gmx.net", 995)
    );
    assert_eq!(a.after_delivery, AfterDelivery::Delete);
    assert!(a.pipelining);

    let icloud = Sample::new()
        .source("provider = \"icloud\"")
        .account("protocol = \"pop3\"\nfolders = [\"Junk\"]");
    icloud.refused("account[0].protocol", "icloud offers no POP3");
    icloud.refused("account[0].folders", "POP3 has one maildrop");
    for policy in ["move:Archive", "mark-seen"] {
        Sample::new()
            .account(&format!(
                "protocol = \"pop3\"\nafter-delivery = \"{policy}\""
            ))
            .refused("account[0].after-delivery", "needs IMAP");
    }
    Sample::new()
        .account("protocol = \"pop3\"\nfirst-run = \"since:2025-01-01\"")
        .refused(
            "account[0].first-run",
            "POP3 does not say when mail arrived",
        );
}

#[test]
fn after_delivery_and_first_run_are_read_into_their_policies() {
    let config = Sample::new()
        .account("after-delivery = \"move:Archive\"\nfirst-run = \"since:2025-01-01\"")
        .load()
        .expect("valid");
    let a = &config.accounts[0];
    assert_eq!(a.after_delivery, AfterDelivery::Move("Archive".into()));
    // 2025-01-01T00:00:00Z.
    assert_eq!(a.first_run, FirstRun::Since(1_735_689_600));
    let config = Sample::new()
        .account("after-delivery = \"mark-seen\"\nfirst-run = \"new-only\"")
        .load()
        .expect("valid");
    assert_eq!(config.accounts[0].after_delivery, AfterDelivery::MarkSeen);
    assert_eq!(config.accounts[0].first_run, FirstRun::NewOnly);
}

#[test]
fn moving_into_a_folder_that_is_read_is_refused() {
    Sample::new()
        .account("folders = [\"INBOX\", \"Archive\"]\nafter-delivery = \"move:archive\"")
        .refused(
            "account[0].after-delivery",
            "\"archive\" is also in folders",
        );
}

#[test]
fn account_mistakes_name_their_key_and_say_what_to_write() {
    for (lines, key, why) in [
        ("protocol = \"smtp\"", "account[0].protocol", "\"imap\""),
        ("tls = \"maybe\"", "account[0].tls", "\"implicit\""),
        (
            "folders = []",
            "account[0].folders",
            "list at least one folder",
        ),
        (
            "after-delivery = \"archive\"",
            "account[0].after-delivery",
            "\"move:FOLDER\"",
        ),
        (
            "after-delivery = \"move: \"",
            "account[0].after-delivery",
            "e.g. \"move:Archive\"",
        ),
        (
            "first-run = \"since:yesterday\"",
            "account[0].first-run",
            "since:YYYY-MM-DD",
        ),
        (
            "first-run = \"later\"",
            "account[0].first-run",
            "\"new-only\"",
        ),
        (
            "interval = \"often\"",
            "account[0].interval",
            "is not a duration",
        ),
    ] {
        Sample::new().account(lines).refused(key, why);
    }
    Sample::new()
        .source("provider = \"hotmale\"")
        .refused("account[0].provider", "is not a known provider; use one of");
    Sample::new()
        .source("port = 993")
        .refused("account[0].host", "missing");
}

#[test]
fn names_are_short_words() {
    Sample::new()
        .edit("name = \"gmx\"", "name = \"my mail\"")
        .refused(
            "account[0].name",
            "may hold only letters, digits, '-', '_' and '.'",
        );
}

#[test]
fn sign_in_mistakes_name_their_key() {
    Sample::new()
        .auth("auth = { method = \"kerberos\" }")
        .refused("account[0].auth.method", "use \"password\" or \"oauth2\"");
    Sample::new()
        .auth("auth = { password-file = \"gmx.pass\" }")
        .refused("account[0].auth.method", "missing");
    Sample::new()
        .auth(
            "auth = { method = \"oauth2\", client-id = \"app\", access-token-file = \"gmx.pass\" }",
        )
        .refused("account[0].auth.access-token-file", "not both");
    Sample::new()
        .auth("auth = { method = \"oauth2\", access-token-file = \"none.token\" }")
        .refused("account[0].auth.access-token-file", "cannot read");
    Sample::new().auth("").refused(
        "account[0].auth",
        "missing: set it to { method = \"password\"",
    );
}

#[test]
fn an_interval_below_the_floor_is_raised_with_a_warning() {
    let config = Sample::new()
        .account("interval = \"5m\"")
        .load()
        .expect("valid");
    assert_eq!(config.accounts[0].interval, Duration::from_secs(600));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("account[0].interval is below daemon.min-interval; using 10m")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_provider_that_refuses_passwords_is_warned_about() {
    let config = Sample::new()
        .source("provider = \"outlook\"")
        .load()
        .expect("valid, with a warning");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("outlook refuses password logins")),
        "{:?}",
        config.warnings
    );
}
