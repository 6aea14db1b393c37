//! The walking skeleton's promises: IMAP in, SMTP out, each message once, byte-identical.

use mailferry_testkit::fixtures;

use crate::util::{Bench, RCPT, summary};

#[test]
fn delivers_every_message_once_byte_identical_and_leaves_flags_alone() {
    let b = Bench::start();
    let originals: Vec<Vec<u8>> = (0..25).map(fixtures::simple).collect();
    for m in &originals {
        b.dovecot.add_message("INBOX", m);
    }
    let files_before = b.dovecot.message_files("INBOX");

    let run = b.once_ok();
    assert_summary!(run, "src", fetched 25, delivered 25, skipped 0, failed 0);

    let got = b.smtp.messages();
    assert_eq!(got.len(), 25);
    let mut raws: Vec<&Vec<u8>> = got.iter().map(|r| &r.raw).collect();
    let mut want: Vec<&Vec<u8>> = originals.iter().collect();
    raws.sort();
    want.sort();
    assert!(raws == want, "received bytes differ from the originals");
    for r in &got {
        assert_eq!(r.rcpt_tos, [RCPT]);
        // Bounces of a personal forwarder go to its user: by default the envelope sender
        // is the mailbox it fills, not the original sender.
        assert_eq!(r.mail_from, RCPT, "the envelope sender is not the user's");
    }
    // BODY.PEEK[]: still unread, no flag added.
    assert_eq!(b.dovecot.message_files("INBOX"), files_before);
    assert!(files_before.iter().all(|f| f.ends_with(":2,")));

    // Nothing new: nothing delivered.
    let again = b.once_ok();
    assert_summary!(again, "src", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 25);

    // One new message: exactly that one.
    let extra = fixtures::simple(1000);
    b.dovecot.add_message("INBOX", &extra);
    let third = b.run(&["once"]);
    assert_summary!(third, "src", fetched 1, delivered 1, skipped 0, failed 0);
    let got = b.smtp.messages();
    assert_eq!(got.len(), 26);
    assert_eq!(got[25].raw, extra);
}

#[test]
fn uidvalidity_reset_delivers_nothing_twice() {
    let b = Bench::start();
    for n in 0..5 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    assert_eq!(b.run(&["once"]).code, 0);
    assert_eq!(b.smtp.messages().len(), 5);

    b.dovecot.reset_uidvalidity("INBOX");
    let run = b.once_ok();
    assert_summary!(run, "src", fetched 5, delivered 0, skipped 5, failed 0);
    assert_eq!(
        b.smtp.messages().len(),
        5,
        "re-delivered after a UIDVALIDITY change"
    );
    let uidvalidities = crate::util::sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT COUNT(DISTINCT uidvalidity) FROM ledger",
    );
    assert_eq!(
        uidvalidities.trim(),
        "2",
        "the folder's UIDVALIDITY did not change"
    );
}

#[test]
fn temporary_refusal_is_delivered_on_the_next_run() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "451-once"));
    b.dovecot.add_message("INBOX", &fixtures::simple(3));

    let first = b.run(&["once"]);
    assert_eq!(first.code, 1, "{first:?}");
    assert_summary!(first, "src", fetched 3, delivered 2, skipped 0, failed 1);
    assert!(
        first
            .stdout
            .contains("deferred INBOX UID 2 <mode2@origin.example>: "),
        "{first:?}"
    );
    assert!(first.stdout.contains("451"), "{first:?}");
    assert_eq!(b.smtp.messages().len(), 2);

    let second = b.once_ok();
    assert_summary!(second, "src", fetched 1, delivered 1, skipped 0, failed 0);
    let got = b.smtp.messages();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].raw, fixtures::with_smtp_mode(2, "451-once"));
}

#[test]
fn permanent_refusal_is_recorded_reported_and_the_rest_delivered() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "550"));
    b.dovecot.add_message("INBOX", &fixtures::simple(3));

    let first = b.run(&["once"]);
    assert_eq!(first.code, 1, "{first:?}");
    assert_summary!(first, "src", fetched 3, delivered 2, skipped 0, failed 1);
    assert!(
        first
            .stdout
            .contains("refused INBOX UID 2 <mode2@origin.example>: "),
        "{first:?}"
    );
    assert!(
        first.stdout.contains("Message rejected by test policy"),
        "{first:?}"
    );
    assert_eq!(b.smtp.messages().len(), 2);
    assert!(
        b.ledger_states().contains(&("refused".into(), 1)),
        "{:?}",
        b.ledger_states()
    );
    // Still at the source, untouched.
    assert_eq!(b.dovecot.message_files("INBOX").len(), 3);

    // Not retried in a loop: the next run has nothing to do.
    let second = b.run(&["once"]);
    assert_summary!(second, "src", fetched 0, delivered 0, skipped 0, failed 0);
}

#[test]
fn wrong_password_names_the_account_and_hides_the_password() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("bad.pass"), "not-the-password-xyzzy\n").expect("write");
    b.write_config(&[b.account("typo", b.dovecot.imaps_port, "implicit", "bad.pass")]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("error: account \"typo\": the server refused the login"),
        "{run:?}"
    );
    assert!(run.stdout.contains("AUTHENTICATIONFAILED"), "{run:?}");
    assert!(run.stdout.contains("hint: "), "{run:?}");
    assert!(
        !run.stdout.contains("xyzzy") && !run.stderr.contains("xyzzy"),
        "the password leaked: {run:?}"
    );
    assert!(b.smtp.messages().is_empty());
}

#[test]
fn unreachable_server_fails_alone_and_other_accounts_still_run() {
    let b = Bench::start();
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    b.write_config(&[
        b.account("down", 1, "implicit", "src.pass"),
        b.account("up", b.dovecot.imaps_port, "implicit", "src.pass"),
    ]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("error: account \"down\": cannot connect to 127.0.0.1:1"),
        "{run:?}"
    );
    assert_summary!(run, "up", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 1);
}

#[test]
fn starttls_imap_and_single_account_selection() {
    let b = Bench::start();
    b.write_config(&[
        b.account("plainport", b.dovecot.imap_port, "starttls", "src.pass"),
        b.account("other", 1, "implicit", "src.pass"),
    ]);
    b.dovecot.add_message("INBOX", &fixtures::simple(7));
    let run = b.run(&["once", "--account", "plainport"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_summary!(run, "plainport", fetched 1, delivered 1, skipped 0, failed 0);
    assert!(!run.stdout.contains("other:"), "{run:?}");
    assert_eq!(b.smtp.messages()[0].raw, fixtures::simple(7));
}

#[test]
fn dry_run_lists_without_fetching_delivering_or_recording() {
    let b = Bench::start();
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.run(&["once", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: 3 would be delivered (dry run: nothing fetched, delivered or recorded)",
        "{run:?}"
    );
    assert!(run.stdout.contains("  INBOX: 3\n"), "{run:?}");
    assert!(
        run.stdout
            .contains("Sender 0 <sender0@origin.example>  test message 0"),
        "{run:?}"
    );
    assert!(b.smtp.messages().is_empty());
    assert!(b.ledger_states().is_empty());
}

#[test]
fn a_dry_run_answers_will_this_flood_my_inbox_beside_the_service() {
    let b = Bench::start();
    for n in 0..7 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    let second = b
        .account("fresh", b.dovecot.imaps_port, "implicit", "src.pass")
        .replace(
            "destination = \"home\"\n",
            "destination = \"home\"\nfirst-run = \"new-only\"\n",
        );
    std::fs::write(b.config_path(), config + &second).expect("config");
    // The state is held, as by the running service.
    let _held = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(mailferry_store::Store::open(&b.state_dir()))
        .expect("hold the state");
    let run = b.run(&["once", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    // All of it for first-run = all, with the first five shown...
    assert!(run.stdout.contains("src: 7 would be delivered"), "{run:?}");
    assert!(run.stdout.contains("    ... and 2 more"), "{run:?}");
    // ...and nothing for new-only: what is there now is not delivered.
    assert!(
        run.stdout.contains("fresh: 0 would be delivered"),
        "{run:?}"
    );
    assert!(b.smtp.messages().is_empty());
}

#[test]
fn smtp_login_failure_stops_the_run_and_settles_nothing() {
    let b = Bench::start_with_smtp_auth(Some(("relay", "relay-secret")));
    std::fs::write(b.dir.path().join("smtp.pass"), "wrong-relay-pw\n").expect("write");
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("error: account \"src\": the SMTP server refused the login"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("refused INBOX"),
        "a login failure was blamed on a message: {run:?}"
    );
    assert!(
        !format!("{run:?}").contains("wrong-relay-pw"),
        "the password leaked: {run:?}"
    );
    assert!(b.smtp.messages().is_empty());
    assert!(
        !b.ledger_states()
            .iter()
            .any(|(s, _)| s == "refused" || s == "delivered"),
        "{:?}",
        b.ledger_states()
    );

    std::fs::write(b.dir.path().join("smtp.pass"), "relay-secret\n").expect("write");
    let run = b.once_ok();
    assert_summary!(run, "src", fetched 3, delivered 3, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 3);
}

#[test]
fn status_after_once_reads_naturally_and_config_warnings_follow_every_commands_output() {
    let b = Bench::start();
    // A warning-worthy setting: an interval below the floor.
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config.replace(
            "destination = \"home\"\n",
            "destination = \"home\"\ninterval = \"1m\"\n",
        ),
    )
    .expect("config");
    b.dovecot
        .add_message("INBOX", &mailferry_testkit::fixtures::simple(1));
    assert_eq!(b.run(&["once"]).code, 0);
    let status = b.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let first = status.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("src: ok, last success just now")
            || first.starts_with("src: ok, last success 1s ago")
            || first.starts_with("src: ok, last success 2s ago"),
        "{status:?}"
    );
    assert!(!status.stdout.contains("not run yet"), "{status:?}");
    assert!(!status.stdout.contains("in 0s"), "{status:?}");
    // The warning comes with status too, on stderr, not mixed into its output.
    assert!(
        status
            .stderr
            .contains("mailferry: warning: account[0].interval is below daemon.min-interval"),
        "{status:?}"
    );
    assert!(!status.stdout.contains("warning"), "{status:?}");
}

#[test]
fn implicit_tls_smtp_with_a_login_delivers_byte_identical() {
    // Port 465 (RFC 8314): TLS from the first byte, then AUTH PLAIN inside it.
    let b = Bench::start();
    let receiver = mailferry_testkit::SmtpReceiver::start_implicit_tls(
        &b.dovecot.pki,
        Some(("relay", "relay-secret")),
    );
    std::fs::write(b.dir.path().join("smtp.pass"), "relay-secret\n").expect("write");
    let originals: Vec<Vec<u8>> = (0..3).map(fixtures::simple).collect();
    for m in &originals {
        b.dovecot.add_message("INBOX", m);
    }
    let destination = format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\ntls-ca-file = \"{}\"\nusername = \"relay\"\npassword-file = \"smtp.pass\"\nenvelope-to = [\"{RCPT}\"]\n",
        receiver.port,
        b.dovecot.pki.ca_pem.display()
    );
    b.write_raw(
        &destination,
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    let run = b.once_ok();
    assert_summary!(run, "src", fetched 3, delivered 3, skipped 0, failed 0);
    let mut got: Vec<Vec<u8>> = receiver.messages().into_iter().map(|r| r.raw).collect();
    let mut want = originals;
    got.sort();
    want.sort();
    assert!(got == want, "received bytes differ from the originals");
    // The destination's check walks the same way: TLS at once, the login, the envelope.
    let check = b.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("AUTH=PLAIN"), "{check:?}");
}
