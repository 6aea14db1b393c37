//! IMAP with an OAuth2 access token against Dovecot's oauth2 passdb: the mechanism is chosen
//! from the server's capabilities (OAUTHBEARER when offered), and a refused token is a clear
//! error carrying the server's reason.

use mailferry_testkit::{USER, fixtures};

use crate::util::Bench;

fn oauth2_account(b: &Bench, name: &str, token_file: &str) -> String {
    b.account(name, b.dovecot.imaps_port, "implicit", "unused")
        .replace(
            r#"auth = { method = "password", password-file = "unused" }"#,
            &format!(r#"auth = {{ method = "oauth2", access-token-file = "{token_file}" }}"#),
        )
}

#[test]
fn imap_oauth2_with_a_valid_and_a_refused_token() {
    let b = Bench::start();
    b.dovecot.idp.grant("imap-good-token", USER);
    std::fs::write(b.dir.path().join("good.token"), "imap-good-token\n").expect("write");
    std::fs::write(b.dir.path().join("bad.token"), "imap-revoked-token\n").expect("write");
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    b.write_config(&[
        oauth2_account(&b, "good", "good.token"),
        oauth2_account(&b, "bad", "bad.token"),
    ]);

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_summary!(run, "good", fetched 3, delivered 3, skipped 0, failed 0);
    assert!(
        run.stdout
            .contains("error: account \"bad\": the server refused the login"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("server said: {"),
        "the error challenge is missing: {run:?}"
    );
    assert!(
        !format!("{run:?}").contains("imap-revoked-token"),
        "the token leaked: {run:?}"
    );
    // Dovecot offers both; OAUTHBEARER is preferred.
    let log = b.dovecot.log();
    assert!(
        log.contains("oauthbearer") || log.contains("OAUTHBEARER"),
        "{log}"
    );
}
