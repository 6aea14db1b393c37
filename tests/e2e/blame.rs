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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 3, skipped 0, failed 0",
        "{run:?}"
    );
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(submission.messages().len(), 2);
    assert!(
        submission
            .messages()
            .iter()
            .all(|m| m.mail_from == "me@home.example")
    );
}
