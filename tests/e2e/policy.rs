//! After-delivery policies on IMAP: mark-seen, move:FOLDER, delete, each applied only to
//! messages whose delivery is recorded; a refused message stays as it was.

use mailferry_testkit::fixtures;

use crate::util::{Bench, summary};

fn bench_with(policy: &str) -> Bench {
    let b = Bench::start();
    b.write_config(&[b
        .account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        .replace(
            "destination = \"home\"\n",
            &format!("destination = \"home\"\nafter-delivery = \"{policy}\"\n"),
        )]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(2, "550"));
    b.dovecot.add_message("INBOX", &fixtures::simple(3));
    b
}

/// Maildir flags of the files in `folder`'s cur/, sorted (`""` for none).
fn flags(b: &Bench, folder: &str) -> Vec<String> {
    let mut f: Vec<String> = b
        .dovecot
        .message_files(folder)
        .iter()
        .map(|n| n.rsplit_once(":2,").map_or("", |(_, f)| f).to_owned())
        .collect();
    f.sort();
    f
}

#[test]
fn mark_seen_flags_only_delivered_messages() {
    let b = bench_with("mark-seen");
    assert_eq!(flags(&b, "INBOX"), ["", "", ""]);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 2, skipped 0, failed 1"
    );
    // Two seen, the refused one untouched.
    assert_eq!(flags(&b, "INBOX"), ["", "S", "S"]);
}

#[test]
fn move_to_a_folder_moves_only_delivered_messages() {
    let b = bench_with("move:Archive");
    b.dovecot.add_message("Archive", &fixtures::simple(9));
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 2, skipped 0, failed 1, moved 2"
    );
    assert_eq!(
        b.dovecot.message_files("INBOX").len(),
        1,
        "the refused one stays"
    );
    assert_eq!(b.dovecot.maildrop("Archive").len(), 3);
    assert!(
        b.dovecot.maildrop("INBOX")[0].contains("X-Test-Smtp: 550"),
        "the wrong message stayed"
    );
    // A second run finds nothing new and moves nothing.
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 0, delivered 0, skipped 0, failed 0"
    );
}

#[test]
fn delete_expunges_only_delivered_messages() {
    let b = bench_with("delete");
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 2, skipped 0, failed 1, deleted 2"
    );
    let left = b.dovecot.maildrop("INBOX");
    assert_eq!(left.len(), 1);
    assert!(left[0].contains("X-Test-Smtp: 550"));
    assert_eq!(b.smtp.messages().len(), 2);
}

fn with_first_run(account: String, first_run: &str) -> String {
    account.replace(
        "destination = \"home\"\n",
        &format!("destination = \"home\"\nfirst-run = \"{first_run}\"\n"),
    )
}

#[test]
fn first_run_new_only_records_what_is_there_and_delivers_only_later_mail() {
    let b = Bench::start();
    b.write_config(&[
        with_first_run(
            b.account("imap", b.dovecot.imaps_port, "implicit", "src.pass"),
            "new-only",
        ),
        with_first_run(
            b.pop3_account(
                "pop",
                b.dovecot.pop3s_port,
                "implicit",
                r#"{ method = "password", password-file = "src.pass" }"#,
                "",
            ),
            "new-only",
        ),
    ]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "imap"),
        "imap: fetched 0, delivered 0, skipped 0, failed 0"
    );
    assert_eq!(
        summary(&run, "pop"),
        "pop: fetched 0, delivered 0, skipped 0, failed 0"
    );
    b.dovecot.add_message("INBOX", &fixtures::simple(3));
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "imap"),
        "imap: fetched 1, delivered 1, skipped 0, failed 0"
    );
    assert_eq!(
        summary(&run, "pop"),
        "pop: fetched 1, delivered 1, skipped 0, failed 0"
    );
    let got = b.smtp.messages();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.raw == fixtures::simple(3)));
}

#[test]
fn first_run_since_a_day_skips_older_mail_by_internaldate() {
    let b = Bench::start();
    b.write_config(&[with_first_run(
        b.account("src", b.dovecot.imaps_port, "implicit", "src.pass"),
        "since:2025-01-01",
    )]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    // The first message arrived in 2020 (Dovecot takes INTERNALDATE from the file's mtime).
    let old = b
        .dovecot
        .folder_dir("INBOX")
        .join("cur")
        .join(&b.dovecot.message_files("INBOX")[0]);
    let touched = std::process::Command::new("touch")
        .args(["-d", "2020-06-01 12:00:00 UTC"])
        .arg(&old)
        .status()
        .expect("touch");
    assert!(touched.success());
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0"
    );
    assert_eq!(b.smtp.messages()[0].raw, fixtures::simple(2));
    // The old one stays skipped on later runs.
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 0, delivered 0, skipped 0, failed 0"
    );
}

#[test]
fn a_uidvalidity_change_keeps_excluded_mail_excluded_and_delivers_only_new_mail() {
    let b = Bench::start();
    b.write_config(&[with_first_run(
        b.account("imap", b.dovecot.imaps_port, "implicit", "src.pass"),
        "new-only",
    )]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    let run = b.run(&["once"]);
    assert_summary!(run, "imap", fetched 0, delivered 0, skipped 0, failed 0);
    b.dovecot.add_message("INBOX", &fixtures::simple(3));
    let run = b.run(&["once"]);
    assert_summary!(run, "imap", fetched 1, delivered 1, skipped 0, failed 0);

    // Outlook.com-style reset: a new UIDVALIDITY, every UID new. Then one new message.
    let before = crate::util::sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT uidvalidity FROM folders_seen",
    );
    b.dovecot.reset_uidvalidity("INBOX");
    b.dovecot.add_message("INBOX", &fixtures::simple(4));
    let run = b.once_ok();
    let after = crate::util::sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT uidvalidity FROM folders_seen",
    );
    assert_ne!(before, after, "the UIDVALIDITY did not change");
    let got: Vec<Vec<u8>> = b.smtp.messages().into_iter().map(|m| m.raw).collect();
    assert_eq!(
        got,
        [fixtures::simple(3), fixtures::simple(4)],
        "excluded mail was delivered, or delivered mail again: {run:?}"
    );
    assert!(run.stderr.contains("UIDVALIDITY changed"), "{run:?}");
}

#[test]
fn a_move_target_that_does_not_exist_is_a_configuration_error_before_any_delivery() {
    let b = bench_with("move:NoSuchFolder");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("\"NoSuchFolder\""), "{run:?}");
    assert!(
        run.stdout.contains("after-delivery moves mail there"),
        "{run:?}"
    );
    assert_eq!(
        b.smtp.messages().len(),
        0,
        "delivered without a way to move it"
    );
    assert_eq!(b.dovecot.message_files("INBOX").len(), 3);
}

#[test]
fn a_folder_that_fails_does_not_keep_the_others_from_being_fetched() {
    let b = Bench::start();
    b.write_config(&[b
        .account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        .replace(r#"folders = ["INBOX"]"#, r#"folders = ["Gone", "INBOX"]"#)]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("\"Gone\""), "{run:?}");
    assert_eq!(b.smtp.messages().len(), 1, "INBOX was not fetched: {run:?}");
}
