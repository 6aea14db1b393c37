//! Who is refusing: a refusal of the envelope (a recipient the server does not know, a
//! sender the login may not use) is the destination's, the same for every message: the
//! run stops with a hint and settles nothing, and once the configuration is fixed every
//! message is delivered. Only a refusal of the message itself settles it.

use mailferry_testkit::{SmtpReceiver, fixtures};

use crate::util::{Bench, RCPT, sqlite, summary};

fn refused_rows(b: &Bench) -> String {
    sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT COUNT(*) FROM ledger WHERE state = 'refused'",
    )
    .trim()
    .to_owned()
}

#[test]
fn a_recipient_the_server_does_not_know_settles_nothing_and_says_to_check_envelope_to() {
    let b = Bench::start();
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let strict = SmtpReceiver::start_with_policy(&b.dovecot.pki, &[RCPT], None);
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    let typo = b
        .smtp_destination("home", strict.port)
        .replace(RCPT, "gathred@home.example");
    b.write_raw(&typo, std::slice::from_ref(&account));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("(550): 5.1.1"), "{run:?}");
    assert!(
        run.stdout
            .contains("check envelope-to of the destination home"),
        "{run:?}"
    );
    assert_eq!(
        refused_rows(&b),
        "0",
        "an envelope refusal settled a message"
    );
    assert!(!run.stdout.contains("refused INBOX"), "{run:?}");
    let status = b.run(&["status"]);
    assert!(status.stdout.contains("0 refused"), "{status:?}");

    // Fixed: everything flows.
    b.write_raw(&b.smtp_destination("home", strict.port), &[account]);
    let run = b.once_ok();
    assert_summary!(run, "src", fetched 3, delivered 3, skipped 0, failed 0);
    assert_eq!(strict.messages().len(), 3);
}

#[test]
fn a_sender_the_login_may_not_use_settles_nothing_and_says_to_set_envelope_from() {
    let b = Bench::start();
    for n in 0..2 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let submission =
        SmtpReceiver::start_with_policy(&b.dovecot.pki, &[RCPT], Some("me@home.example"));
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    let destination = b.smtp_destination("home", submission.port);
    b.write_raw(&destination, std::slice::from_ref(&account));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("(553): 5.7.1"), "{run:?}");
    assert!(
        run.stdout
            .contains("set envelope-from on the destination home"),
        "{run:?}"
    );
    assert_eq!(
        refused_rows(&b),
        "0",
        "an envelope refusal settled a message"
    );

    b.write_raw(
        &format!("{destination}envelope-from = \"me@home.example\"\n"),
        &[account],
    );
    b.once_ok();
    assert_eq!(submission.messages().len(), 2);
    assert!(
        submission
            .messages()
            .iter()
            .all(|m| m.mail_from == "me@home.example")
    );
}

#[test]
fn refused_messages_come_back_with_mailferry_retry_after_the_cause_is_fixed() {
    let b = Bench::start();
    // The receiver refuses these two for good (550 after DATA)...
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(1, "550"));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "550"));
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(refused_rows(&b), "2");
    let status = b.run(&["status"]);
    assert!(
        status
            .stdout
            .contains("once the cause is fixed: mailferry retry --account src --refused"),
        "{status:?}"
    );
    // ...and are never retried on their own.
    let again = b.run(&["once"]);
    assert_eq!(
        summary(&again, "src"),
        "src: fetched 0, delivered 0, skipped 0, failed 0"
    );

    // The user moves to a destination that takes them, and returns one by its UID...
    let other = mailferry_testkit::LenientSmtp::start();
    b.write_raw(
        &format!(
            "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nenvelope-to = [\"{RCPT}\"]\n",
            other.port
        ),
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    let one = b.run(&["retry", "--account", "src", "1"]);
    assert_eq!(one.code, 0, "{one:?}");
    assert!(
        one.stdout
            .starts_with("1 refused message back in the queue"),
        "{one:?}"
    );
    let run = b.run(&["once"]);
    assert_summary!(run, "src", fetched 1, delivered 1, skipped 0, failed 0);
    // ...then the rest.
    let rest = b.run(&["retry", "--account", "src", "--refused"]);
    assert_eq!(rest.code, 0, "{rest:?}");
    let run = b.run(&["once"]);
    assert_summary!(run, "src", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(other.messages().len(), 2);
    assert_eq!(refused_rows(&b), "0");
    // Nothing left to retry says so.
    assert_eq!(b.run(&["retry", "--refused"]).code, 1);
    // Without a message or --refused, clap refuses.
    assert_eq!(b.run(&["retry"]).code, 2);
}
