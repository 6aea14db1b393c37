//! POP3 sources against Dovecot's POP3 server: UIDL dedup, bytes intact, keep and delete,
//! POP3's own rule that nothing is deleted without QUIT, USER/PASS and two-step XOAUTH2.

use std::time::Duration;

use mailferry_testkit::{USER, fixtures};

use crate::util::{Bench, summary};

const PASSWORD_AUTH: &str = r#"{ method = "password", password-file = "src.pass" }"#;

#[test]
fn pop3_delivers_each_message_once_byte_identical() {
    let b = Bench::start();
    let mut want: Vec<Vec<u8>> = (0..10).map(fixtures::simple).collect();
    for m in &want {
        b.dovecot.add_message("INBOX", m);
    }
    // Dot lines and a bare-LF message: Dovecot serves Maildir LF as CRLF.
    let dots = b"Subject: dots\r\nMessage-ID: <pdots@x>\r\n\r\n.\r\n..\r\n.leading\r\n".to_vec();
    b.dovecot.add_message("INBOX", &dots);
    want.push(dots);
    b.dovecot
        .add_message("INBOX", b"Subject: lf\nMessage-ID: <plf@x>\n\nbare\nlf\n");
    want.push(b"Subject: lf\r\nMessage-ID: <plf@x>\r\n\r\nbare\r\nlf\r\n".to_vec());
    b.write_config(&[b.pop3_account("pop", b.dovecot.pop3s_port, "implicit", PASSWORD_AUTH, "")]);

    let run = b.once_ok();
    assert_summary!(run, "pop", fetched 12, delivered 12, skipped 0, failed 0);
    let mut got: Vec<Vec<u8>> = b.smtp.messages().into_iter().map(|r| r.raw).collect();
    got.sort();
    want.sort();
    assert!(
        got == want,
        "POP3 bytes differ:\n{:#?}",
        got.iter()
            .map(|g| String::from_utf8_lossy(g).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b.dovecot.message_files("INBOX").len() + b.dovecot.new_files("INBOX"),
        12,
        "keep mode removed mail"
    );

    let again = b.run(&["once"]);
    assert_summary!(again, "pop", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 12);
}

#[test]
fn pop3_stls_without_pipelining_works_too() {
    let b = Bench::start();
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    b.write_config(&[b.pop3_account(
        "pop",
        b.dovecot.pop3_port,
        "starttls",
        PASSWORD_AUTH,
        "pipelining = false",
    )]);
    let run = b.once_ok();
    assert_summary!(run, "pop", fetched 3, delivered 3, skipped 0, failed 0);
}

#[test]
fn pop3_delete_removes_only_delivered_messages() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "550"));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(3, "451-once"));
    b.dovecot.add_message("INBOX", &fixtures::simple(4));
    b.write_config(&[b.pop3_account(
        "pop",
        b.dovecot.pop3s_port,
        "implicit",
        PASSWORD_AUTH,
        "after-delivery = \"delete\"",
    )]);

    let first = b.run(&["once"]);
    assert_eq!(first.code, 1, "{first:?}");
    assert_eq!(
        summary(&first, "pop"),
        "pop: fetched 4, delivered 2, skipped 0, failed 2, deleted 2",
        "{first:?}"
    );
    let left = b.dovecot.maildrop("INBOX");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|m| m.contains("X-Test-Smtp: 550"))
            && left.iter().any(|m| m.contains("451-once"))
    );

    let second = b.run(&["once"]);
    assert_eq!(
        summary(&second, "pop"),
        "pop: fetched 1, delivered 1, skipped 0, failed 0, deleted 1",
        "{second:?}"
    );
    let left = b.dovecot.maildrop("INBOX");
    assert_eq!(left.len(), 1, "only the refused message stays: {left:?}");
    assert!(left[0].contains("X-Test-Smtp: 550"));
    assert_eq!(b.smtp.messages().len(), 3);
}

#[test]
fn pop3_killed_before_quit_deletes_nothing_and_loses_nothing() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "slow"));
    b.dovecot.add_message("INBOX", &fixtures::simple(3));
    b.write_config(&[b.pop3_account(
        "pop",
        b.dovecot.pop3s_port,
        "implicit",
        PASSWORD_AUTH,
        "after-delivery = \"delete\"",
    )]);

    // Message 1 delivered, the slow message 2 attempted: kill -9, so no QUIT is sent.
    b.kill_once_while_delivering(1);
    assert_eq!(
        b.dovecot.maildrop("INBOX").len(),
        3,
        "a session without QUIT deleted mail"
    );
    std::thread::sleep(Duration::from_millis(3500));

    let run = b.once_ok();
    assert!(
        summary(&run, "pop").ends_with("deleted 3 (1 re-sent after an interrupted attempt)"),
        "{run:?}"
    );
    assert!(b.dovecot.maildrop("INBOX").is_empty());
    for n in [1, 3] {
        assert_eq!(
            b.smtp
                .messages()
                .iter()
                .filter(|r| r.raw == fixtures::simple(n))
                .count(),
            1
        );
    }
}

#[test]
fn pop3_wrong_password_is_a_clear_error() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("bad.pass"), "wrong-pop-pw\n").expect("write");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.write_config(&[b.pop3_account(
        "pop",
        b.dovecot.pop3s_port,
        "implicit",
        r#"{ method = "password", password-file = "bad.pass" }"#,
        "",
    )]);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("error: account \"pop\": the server refused the login: [AUTH]"),
        "{run:?}"
    );
    assert!(!format!("{run:?}").contains("wrong-pop-pw"), "{run:?}");
}

#[test]
fn pop3_xoauth2_two_step_with_a_valid_and_a_bad_token() {
    let b = Bench::start();
    b.dovecot.idp.grant("good-token-123", USER);
    std::fs::write(b.dir.path().join("good.token"), "good-token-123\n").expect("write");
    std::fs::write(b.dir.path().join("bad.token"), "revoked-token-456\n").expect("write");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.write_config(&[
        b.pop3_account(
            "good",
            b.dovecot.pop3s_port,
            "implicit",
            r#"{ method = "oauth2", access-token-file = "good.token" }"#,
            "",
        ),
        b.pop3_account(
            "bad",
            b.dovecot.pop3s_port,
            "implicit",
            r#"{ method = "oauth2", access-token-file = "bad.token" }"#,
            "",
        ),
    ]);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_summary!(run, "good", fetched 1, delivered 1, skipped 0, failed 0);
    let out = &run.stdout;
    assert!(
        out.contains("error: account \"bad\": the server refused the login: [AUTH]"),
        "{run:?}"
    );
    // Dovecot's XOAUTH2 error challenge (base64 JSON) is kept for the user.
    assert!(
        out.contains("server said: {") && out.contains("\"status\""),
        "{run:?}"
    );
    assert!(
        !format!("{run:?}").contains("revoked-token-456"),
        "the token leaked: {run:?}"
    );
}

#[test]
fn an_empty_message_is_refused_with_the_same_reason_over_pop3_as_over_imap() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", b"");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.write_config(&[
        b.account("imap", b.dovecot.imaps_port, "implicit", "src.pass"),
        b.pop3_account("pop", b.dovecot.pop3s_port, "implicit", PASSWORD_AUTH, ""),
    ]);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    for account in ["imap", "pop"] {
        assert_eq!(
            summary(&run, account),
            format!("{account}: fetched 2, delivered 1, skipped 0, failed 1"),
            "{run:?}"
        );
    }
    let reasons: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("refused INBOX"))
        .map(|l| l.split(": ").skip(1).collect::<Vec<_>>().join(": ").leak() as &str)
        .collect();
    assert_eq!(reasons.len(), 2, "{run:?}");
    assert_eq!(reasons[0], reasons[1], "{run:?}");
    assert!(
        reasons[0].contains("the message is empty (no header, no body)"),
        "{run:?}"
    );
    // Only the real message went out, once per account.
    assert_eq!(b.smtp.messages().len(), 2);
    assert!(b.smtp.messages().iter().all(|m| !m.raw.is_empty()));
}
