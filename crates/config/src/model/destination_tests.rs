//! The destination checks, with the sample file varied.

use crate::testing::Sample;
use crate::{DestinationKind, GmailAuth, GmailMode, SmtpAuth, SmtpSender, TlsMode};

fn smtp(lines: &str) -> crate::SmtpConfig {
    let config = Sample::new().destination(lines).load().expect("valid");
    match &config.destinations[0].kind {
        DestinationKind::Smtp(s) => s.clone(),
        DestinationKind::Gmail(_) => panic!("expected SMTP"),
    }
}

#[test]
fn smtp_bounces_go_to_the_user_unless_told_otherwise() {
    assert_eq!(smtp("").envelope_from, SmtpSender::Recipient);
    assert_eq!(
        smtp("envelope-from = \"return-path\"").envelope_from,
        SmtpSender::FromMessage
    );
    assert_eq!(
        smtp("envelope-from = \"<>\"").envelope_from,
        SmtpSender::Null
    );
    assert_eq!(
        smtp("envelope-from = \"bounces@home.example\"").envelope_from,
        SmtpSender::Fixed("bounces@home.example".into())
    );
    let s = smtp("username = \"me\"\npassword-file = \"gmx.pass\"");
    assert!(
        matches!(&s.auth, SmtpAuth::Password { username, password } if username == "me" && password.expose() == crate::testing::PASSWORD)
    );
}

#[test]
fn the_smtp_port_follows_tls() {
    let endpoint = |tls: &str| {
        let config = Sample::new()
            .edit("port = 2525\ntls = \"none\"", &format!("tls = \"{tls}\""))
            .load()
            .expect(tls);
        match &config.destinations[0].kind {
            DestinationKind::Smtp(s) => (s.endpoint.tls, s.endpoint.port),
            DestinationKind::Gmail(_) => panic!("expected SMTP"),
        }
    };
    assert_eq!(endpoint("starttls"), (TlsMode::StartTls, 587));
    assert_eq!(endpoint("implicit"), (TlsMode::Implicit, 465));
    assert_eq!(endpoint("none"), (TlsMode::None, 25));
}

#[test]
fn smtp_mistakes_name_their_key_and_say_what_to_write() {
    for (lines, key, why) in [
        (
            "envelope-from = \"nobody\"",
            "destination[0].envelope-from",
            "\"return-path\" or \"<>\"",
        ),
        (
            "labels = [\"x\"]",
            "destination[0].labels",
            "belongs to kind = \"gmail-api\"",
        ),
        (
            "password-file = \"gmx.pass\"",
            "destination[0].username",
            "set the SMTP user name too",
        ),
        (
            "username = \"me\"\npassword-file = \"gmx.pass\"\nauth = { method = \"oauth2\", client-id = \"x\" }",
            "destination[0].auth",
            "not both",
        ),
    ] {
        Sample::new().destination(lines).refused(key, why);
    }
    Sample::new()
        .edit("tls = \"none\"\nenvelope-to", "tls = \"yes\"\nenvelope-to")
        .refused("destination[0].tls", "\"starttls\"");
    Sample::new()
        .edit("[\"me@home.example\"]", "[\"me\"]")
        .refused(
            "destination[0].envelope-to[0]",
            "\"me\" is not an email address",
        );
    Sample::new()
        .edit("envelope-to = [\"me@home.example\"]", "")
        .refused("destination[0].envelope-to", "missing");
    Sample::new()
        .edit("kind = \"smtp\"", "kind = \"mbox\"")
        .refused("destination[0].kind", "\"mbox\" is not a destination kind");
}

const GMAIL_AUTH: &str = "auth = { method = \"oauth2\", client-id = \"app.apps.googleusercontent.com\", client-secret-file = \"client.secret\" }";

#[test]
fn a_gmail_destination_imports_into_the_inbox_unread_by_default() {
    let config = Sample::new().gmail(GMAIL_AUTH).load().expect("valid");
    let DestinationKind::Gmail(g) = &config.destinations[0].kind else {
        panic!("expected Gmail")
    };
    assert_eq!(g.mode, GmailMode::Import);
    assert_eq!(g.labels, ["INBOX", "UNREAD"]);
    assert_eq!(g.internal_date_source, "dateHeader");
    assert_eq!(g.api_url, "https://gmail.googleapis.com");
    assert!(g.exactly_once && !g.never_mark_spam && !g.process_for_calendar);
    assert!((g.max_rate - 10.0).abs() < f64::EPSILON);
    assert_eq!(g.concurrency, 10);
    let GmailAuth::OAuth2(o) = &g.auth else {
        panic!("expected OAuth2")
    };
    assert_eq!(o.client.kind, crate::OAuthProvider::Google);
    assert!(
        o.client
            .client_secret
            .as_ref()
            .is_some_and(|s| s.expose() == "client-secret")
    );
}

#[test]
fn gmail_mistakes_name_their_key_and_say_what_to_write() {
    for (lines, key, why) in [
        (
            "host = \"smtp.gmail.com\"",
            "destination[0].host",
            "belongs to kind = \"smtp\"",
        ),
        ("mode = \"append\"", "destination[0].mode", "\"import\""),
        (
            "internal-date-source = \"now\"",
            "destination[0].internal-date-source",
            "\"receivedTime\"",
        ),
        (
            "max-rate = 0.0",
            "destination[0].max-rate",
            "between 0 and 100",
        ),
        (
            "concurrency = 99",
            "destination[0].concurrency",
            "between 1 and 50",
        ),
        (
            "api-url = \"http://example.org\"",
            "destination[0].api-url",
            "https://",
        ),
    ] {
        Sample::new()
            .gmail(&format!("{GMAIL_AUTH}\n{lines}"))
            .refused(key, why);
    }
    Sample::new().gmail("").refused(
        "destination[0].auth",
        "README: \"Into Gmail, through the Gmail API",
    );
    Sample::new()
        .gmail("auth = { method = \"password\", password-file = \"gmx.pass\" }")
        .refused("destination[0].auth.method", "takes only OAuth2");
}
