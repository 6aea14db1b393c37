//! The Gmail API destination end to end: the real Dovecot -> `mailferry once` -> the fake
//! Gmail API (documented REST shapes, bearer tokens checked at the fake IdP).

use std::time::Duration;

use mailferry_testkit::{FakeGmail, USER, fixtures};

use crate::util::{Bench, sqlite, summary};

const TOKEN: &str = "gmail-access-token";

/// A bench whose account "src" (folder INBOX, label "Outlook") delivers to the
/// fake Gmail API with a granted access token in a file. `dest_extra`: more destination
/// lines.
pub(crate) fn gmail_bench(dest_extra: &str) -> (Bench, FakeGmail) {
    let b = Bench::start();
    let gmail = FakeGmail::start(&b.dovecot.idp);
    b.dovecot.idp.grant(TOKEN, USER);
    std::fs::write(b.dir.path().join("gmail.token"), format!("{TOKEN}\n")).expect("token");
    write_gmail_config(
        &b,
        &gmail,
        dest_extra,
        r#"auth = { method = "oauth2", access-token-file = "gmail.token" }"#,
    );
    (b, gmail)
}

fn write_gmail_config(b: &Bench, gmail: &FakeGmail, dest_extra: &str, auth: &str) {
    let account = b
        .account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        .replace(
            "destination = \"home\"",
            "destination = \"gmail\"\nlabels = [\"Outlook\"]",
        );
    let destination = format!(
        "[[destination]]\nname = \"gmail\"\nkind = \"gmail-api\"\napi-url = \"{}\"\n{auth}\n{dest_extra}\n",
        gmail.url()
    );
    b.write_raw(&destination, &[account]);
}

fn labels_of(gmail: &FakeGmail, subject: &str) -> Vec<String> {
    let m = gmail
        .messages()
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.raw).contains(subject))
        .unwrap_or_else(|| panic!("no message with {subject}"));
    m.label_ids
}

#[test]
fn every_message_is_imported_once_byte_identical_with_its_labels_and_junk_as_spam() {
    let (b, gmail) = gmail_bench("");
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config.replace(r#"folders = ["INBOX"]"#, r#"folders = ["INBOX", "Junk"]"#),
    )
    .expect("config");
    let mut sent = Vec::new();
    for n in 0..5 {
        let m = fixtures::simple(n);
        b.dovecot.add_message("INBOX", &m);
        sent.push(m);
    }
    for n in 5..7 {
        let m = fixtures::simple(n);
        b.dovecot.add_message("Junk", &m);
        sent.push(m);
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 7, delivered 7, skipped 0, failed 0"
    );
    let got = gmail.messages();
    assert_eq!(got.len(), 7);
    let mut raws: Vec<Vec<u8>> = got.iter().map(|m| m.raw.clone()).collect();
    raws.sort();
    sent.sort();
    assert_eq!(raws, sent, "bytes changed on the way");
    for m in &got {
        assert_eq!(m.mode, "import");
        assert_eq!(m.upload_type, "multipart");
        assert_eq!(m.internal_date_source.as_deref(), Some("dateHeader"));
    }
    // The account's label is created once; Junk gets SPAM instead of INBOX.
    let stats = gmail.stats();
    assert_eq!(stats["label_creates"], 1, "{stats}");
    let outlook = labels_of(&gmail, "test message 0")[2].clone();
    assert!(outlook.starts_with("Label_"), "{outlook}");
    assert_eq!(
        labels_of(&gmail, "test message 0"),
        ["INBOX", "UNREAD", outlook.as_str()]
    );
    assert_eq!(
        labels_of(&gmail, "test message 6"),
        ["SPAM", "UNREAD", outlook.as_str()]
    );
    // The ledger records Gmail's ids.
    let ids = sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT COUNT(*) FROM ledger WHERE state = 'delivered' AND destination_id LIKE '18c%'",
    );
    assert_eq!(ids.trim(), "7");

    // Nothing twice.
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 0, delivered 0, skipped 0, failed 0"
    );
    assert_eq!(gmail.messages().len(), 7);
}

#[test]
fn a_storm_of_429_and_rate_limit_403_is_ridden_out_without_an_error() {
    let (b, gmail) = gmail_bench("mode = \"insert\"");
    gmail.set("storm", "6");
    for n in 0..4 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 4, delivered 4, skipped 0, failed 0"
    );
    assert_eq!(gmail.stats()["throttled"], 6);
    let got = gmail.messages();
    assert_eq!(
        got.len(),
        4,
        "a throttled message was imported twice or not at all"
    );
    assert!(got.iter().all(|m| m.mode == "insert"));
}

#[test]
fn a_message_gmail_refuses_is_reported_left_at_the_source_and_not_retried() {
    let (b, gmail) = gmail_bench("");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .add_message("INBOX", &fixtures::with_gmail_mode(2, "400"));
    b.dovecot.add_message("INBOX", &fixtures::simple(3));
    let files_before = b.dovecot.message_files("INBOX");

    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 2, skipped 0, failed 1"
    );
    assert!(
        run.stdout.contains(
            "refused INBOX UID 2 <gmail2@origin.example>: Gmail refused the message (HTTP 400): Message blocked"
        ),
        "{run:?}"
    );
    assert_eq!(gmail.messages().len(), 2);
    assert_eq!(
        b.dovecot.message_files("INBOX"),
        files_before,
        "the source changed"
    );

    let uploads = gmail.stats()["uploads"].clone();
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 0, delivered 0, skipped 0, failed 0"
    );
    assert_eq!(
        gmail.stats()["uploads"],
        uploads,
        "the refused message was retried"
    );
}

#[test]
fn kill_9_during_an_import_then_a_new_run_imports_nothing_twice() {
    let (b, gmail) = gmail_bench("");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    // Gmail stores this one, then takes 3 s to answer: the kill lands in between.
    b.dovecot
        .add_message("INBOX", &fixtures::with_gmail_mode(2, "slow"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["once", "--config"])
        .arg(b.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill once Gmail holds the message but before mailferry heard so.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while gmail.digests().len() < 2
        || b.ledger_states() != [("attempt".to_owned(), 1), ("delivered".to_owned(), 1)]
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow import never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(
        b.ledger_states(),
        [("attempt".to_owned(), 1), ("delivered".to_owned(), 1)],
        "the kill came too late"
    );

    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 0, skipped 1, failed 0 (1 found already delivered after an interrupted attempt)"
    );
    assert_eq!(gmail.messages().len(), 2, "a duplicate reached Gmail");
    assert!(gmail.stats()["searches"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(
        b.ledger_states(),
        [("delivered".to_owned(), 2)],
        "the found message is recorded as delivered"
    );
}

#[test]
fn a_large_message_goes_through_a_resumable_session_in_chunks() {
    let (b, gmail) = gmail_bench("");
    let big = fixtures::sized(1, 12 * 1024 * 1024);
    b.dovecot.add_message("INBOX", &big);
    b.once_ok();
    let got = gmail.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].upload_type, "resumable");
    assert!(got[0].raw == big, "the large message changed on the way");
    let stats = gmail.stats();
    assert_eq!(stats["chunks"], 2, "{stats}");
    assert_eq!(stats["max_chunk"], 8 * 1024 * 1024, "{stats}");
}

#[test]
fn signed_in_with_oauth_a_token_gmail_refuses_is_refreshed_once_and_the_import_completes() {
    let b = Bench::start();
    let gmail = FakeGmail::start(&b.dovecot.idp);
    let idp = &b.dovecot.idp;
    write_gmail_config(&b, &gmail, "", &oauth_auth(&b));
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    signed_in_refresh_test(&b, &gmail, idp);
}

/// `auth = ...` of a Gmail destination that signs in at the bench's fake IdP.
fn oauth_auth(b: &Bench) -> String {
    let idp = &b.dovecot.idp;
    format!(
        r#"auth = {{ method = "oauth2", provider = "custom", client-id = "gmail-client", token-url = "{}", device-url = "{}", authorize-url = "{}", scopes = ["https://www.googleapis.com/auth/gmail.insert", "https://www.googleapis.com/auth/gmail.labels", "https://www.googleapis.com/auth/gmail.readonly", "offline_access"] }}"#,
        idp.url("/token"),
        idp.url("/devicecode"),
        idp.url("/authorize"),
    )
}

fn signed_in_refresh_test(b: &Bench, gmail: &FakeGmail, idp: &mailferry_testkit::FakeIdp) {
    let before = b.run(&["once"]);
    assert_eq!(before.code, 1, "{before:?}");
    assert!(
        before
            .stdout
            .contains("destination \"gmail\": not signed in yet"),
        "{before:?}"
    );
    assert!(
        before.stdout.contains("`mailferry auth gmail`"),
        "{before:?}"
    );

    // Tokens say an hour but die in 2 s: the stored one looks fresh and Gmail refuses it.
    idp.set("access_ttl", "2");
    let signed = crate::oauth::sign_in_by_device(b, "gmail");
    assert_eq!(signed.code, 0, "{signed:?}");
    std::thread::sleep(Duration::from_secs(3));
    idp.set("access_ttl", "60");
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0"
    );
    assert_eq!(gmail.messages().len(), 1);
    assert!(gmail.stats()["unauthorized"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(idp.stats()["refreshes"], 1);
}

#[test]
fn a_100_mb_message_is_imported_with_peak_memory_well_under_three_times_its_size() {
    use sha2::Digest as _;
    let (b, gmail) = gmail_bench("");
    let big = fixtures::sized(1, 100 * 1024 * 1024);
    let want = hex::encode(sha2::Sha256::digest(&big));
    b.dovecot.add_message("INBOX", &big);
    let size = big.len() as u64;
    drop(big);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"));
    cmd.args(["once", "--config"]).arg(b.config_path());
    let (out, peak) = mailferry_testkit::run_measuring_peak(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let digests = gmail.digests();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests[0], (size, want, "resumable".to_owned()));
    eprintln!("peak RSS {} MB for a {} MB message", peak >> 20, size >> 20);
    assert!(
        peak < 3 * size,
        "peak RSS {} MB is not under 3x the message's {} MB",
        peak >> 20,
        size >> 20
    );
}

#[test]
fn imports_are_paced_at_the_quota_and_never_throttled() {
    let (b, gmail) = gmail_bench("max-rate = 10");
    // The fake enforces Gmail's per-user quota (a bucket of 10, refilled at 10/s).
    gmail.set("rate", "10");
    for n in 0..30 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 30, delivered 30, skipped 0, failed 0"
    );
    let stats = gmail.stats();
    assert_eq!(
        stats["throttled"], 0,
        "mailferry went faster than the quota: {stats}"
    );
    let times: Vec<f64> = stats["upload_times"]
        .as_array()
        .expect("times")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let span = times[29] - times[0];
    // 30 uploads at 10/s: 29 intervals of 100 ms.
    assert!(span >= 2.8, "faster than 10/s: {span:.2} s");
    assert!(
        span < 6.0,
        "far below the quota: {span:.2} s for 30 uploads"
    );
}

/// Makes every open attempt look `secs` older (as if the next run came that much later).
fn age_attempts(b: &Bench, secs: i64) {
    sqlite(
        &b.state_dir().join("mailferry.db"),
        &format!("UPDATE ledger SET updated_at = updated_at - {secs} WHERE state = 'attempt'"),
    );
}

fn copies_of(gmail: &FakeGmail, message_id: &str) -> usize {
    gmail
        .messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.raw).contains(message_id))
        .count()
}

#[test]
fn an_import_gmail_may_have_stored_is_looked_up_not_repeated_even_while_search_lags() {
    let (b, gmail) = gmail_bench("");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    // Gmail stores the first import, then answers 500; its search lags 30 s behind.
    gmail.set("fail500_after_store", "1");
    gmail.set("index_lag", "30");
    let run = b.run(&["once"]);
    assert_summary!(run, "src", fetched 2, delivered 1, skipped 0, failed 1);
    assert!(run.stdout.contains("looked up (not sent again)"), "{run:?}");
    assert_eq!(copies_of(&gmail, "<msg1@origin.example>"), 1);

    // Right after, the search does not find it yet: too early to decide; nothing sent.
    let run = b.run(&["once"]);
    assert_eq!(copies_of(&gmail, "<msg1@origin.example>"), 1, "{run:?}");
    assert!(b.ledger_states().contains(&("attempt".to_owned(), 1)));

    // Later the search finds the copy: recorded as delivered, not imported again.
    gmail.set("index_lag", "0");
    let run = b.once_ok();
    assert!(run.stdout.contains("1 found already delivered"), "{run:?}");
    assert_eq!(copies_of(&gmail, "<msg1@origin.example>"), 1);
    assert_eq!(b.ledger_states(), [("delivered".to_owned(), 2)]);
}

#[test]
fn an_unconfirmed_import_that_did_not_arrive_is_sent_again_once_gmail_has_had_time() {
    let (b, gmail) = gmail_bench("");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    // A 500 for the upload (nothing stored), and the user's own sent copy with the same
    // Message-ID in the mailbox: not mailferry's copy.
    gmail.set("fail500", "1");
    gmail.add(&fixtures::simple(1), &["SENT"]);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(gmail.stats()["uploads"], 0);
    // Young: no answer yet, no import.
    let run = b.run(&["once"]);
    assert_eq!(gmail.stats()["uploads"], 0, "{run:?}");
    // Old enough: the search finds only the sent copy, so it is imported now, once.
    age_attempts(&b, 11 * 60);
    b.once_ok();
    assert_eq!(gmail.stats()["uploads"], 1);
    assert_eq!(
        copies_of(&gmail, "<msg1@origin.example>"),
        2,
        "sent copy + import"
    );
    assert_eq!(b.ledger_states(), [("delivered".to_owned(), 1)]);
}

#[test]
fn a_success_that_does_not_parse_is_unconfirmed_not_imported_twice() {
    let (b, gmail) = gmail_bench("");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    gmail.set("garble_2xx", "1");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    let run = b.once_ok();
    assert!(run.stdout.contains("1 found already delivered"), "{run:?}");
    assert_eq!(copies_of(&gmail, "<msg1@origin.example>"), 1);
}

#[test]
fn an_expired_or_short_resumable_session_is_followed_and_restarted() {
    let (b, gmail) = gmail_bench("");
    let big = fixtures::sized(1, 20 * 1024 * 1024);
    b.dovecot.add_message("INBOX", &big);
    // The server keeps only half of one chunk (its Range says so), and one session
    // expires (404) mid-way.
    gmail.set("short_chunk", "1");
    gmail.set("expire_sessions", "1");
    b.once_ok();
    let got = gmail.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].raw == big, "the message changed on the way");
    assert_eq!(gmail.stats()["sessions"], 2, "{}", gmail.stats());
}

#[test]
fn labels_are_matched_case_insensitively_and_created_once_for_every_account() {
    let (b, gmail) = gmail_bench("");
    // The user has "Outlook"; the configuration says "outlook" (Gmail compares names
    // case-insensitively and answers 409 to creating it again). "NewLabel" is new, and
    // two accounts delivering to this mailbox at once need it.
    let outlook = gmail.label("Outlook");
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    let config = config.replace(
        "labels = [\"Outlook\"]",
        "labels = [\"outlook\", \"NewLabel\"]",
    );
    let second = b
        .pop3_account(
            "second",
            b.dovecot.pop3s_port,
            "implicit",
            r#"{ method = "password", password-file = "src.pass" }"#,
            "labels = [\"NewLabel\"]",
        )
        .replace("destination = \"home\"", "destination = \"gmail\"");
    std::fs::write(b.config_path(), config + &second).expect("config");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    b.once_ok();
    // Labels are listed once per run of each account (a label the user deletes is found
    // missing at the next run); the two runs creating "NewLabel" at once meet at Gmail's
    // 409, and the loser takes the winner's label.
    let stats = gmail.stats();
    assert!(stats["label_creates"].as_u64() <= Some(2), "{stats}");
    assert!(stats["label_lists"].as_u64() <= Some(3), "{stats}");
    let news: Vec<String> = gmail
        .messages()
        .iter()
        .flat_map(|m| m.label_ids.clone())
        .filter(|l| l.starts_with("Label_") && *l != outlook)
        .collect();
    assert_eq!(news.len(), 2, "{news:?}");
    assert_eq!(news[0], news[1], "two labels called NewLabel: {news:?}");
    assert_eq!(
        copies_of(&gmail, "<msg1@origin.example>"),
        2,
        "one per account"
    );
    assert_eq!(b.ledger_states(), [("delivered".to_owned(), 2)]);
    // The IMAP account's copy carries the user's own "Outlook" label.
    let labelled = gmail
        .messages()
        .into_iter()
        .filter(|m| m.label_ids.contains(&outlook))
        .count();
    assert_eq!(
        labelled,
        1,
        "{:?}",
        gmail
            .messages()
            .iter()
            .map(|m| m.label_ids.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_label_gmail_will_not_create_stops_the_run_and_refuses_no_message() {
    let (b, gmail) = gmail_bench("");
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    // "Chats" is a name Gmail keeps for itself: 400 at labels.create.
    std::fs::write(
        b.config_path(),
        config.replace("labels = [\"Outlook\"]", "labels = [\"Chats\"]"),
    )
    .expect("config");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("refused to create the label \"Chats\""),
        "{run:?}"
    );
    assert!(run.stdout.contains("change the label's name"), "{run:?}");
    assert!(!run.stdout.contains("refused INBOX"), "{run:?}");
    assert_eq!(gmail.stats()["uploads"], 0);
}

#[test]
fn quota_403s_are_temporary_and_too_many_at_once_narrows_concurrency() {
    let (b, gmail) = gmail_bench("");
    for n in 0..6 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    gmail.set("daily_limit", "1");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("daily quota"), "{run:?}");
    assert!(
        !run.stdout.contains("mailferry auth"),
        "a quota is not a sign-in: {run:?}"
    );
    let status = b.run(&["status"]);
    assert!(!status.stdout.contains("parked"), "{status:?}");

    gmail.set("concurrent", "3");
    let run = b.once_ok();
    assert!(
        run.stderr.contains("Gmail wants fewer concurrent uploads")
            || gmail.stats()["throttled"].as_u64() >= Some(3),
        "{run:?}"
    );
    assert_eq!(gmail.messages().len(), 6);
}

#[test]
fn retries_that_outlast_the_access_token_take_a_fresh_one_and_never_say_sign_in_again() {
    let b = Bench::start();
    let gmail = FakeGmail::start(&b.dovecot.idp);
    let idp = &b.dovecot.idp;
    write_gmail_config(&b, &gmail, "", &oauth_auth(&b));
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    // Access tokens live 3 s (and say so); Gmail throttles the import for about 8 s.
    idp.set("access_ttl", "3");
    idp.set("declared_ttl", "3");
    assert_eq!(crate::oauth::sign_in_by_device(&b, "gmail").code, 0);
    gmail.set("retry_after", "1");
    gmail.set("storm", "8");
    let run = b.once_ok();
    assert!(!run.stdout.contains("mailferry auth"), "{run:?}");
    assert_eq!(copies_of(&gmail, "<msg1@origin.example>"), 1);
    assert!(
        idp.stats()["refreshes"].as_u64().unwrap_or(0) >= 2,
        "the token was not renewed during the retries: {}",
        idp.stats()
    );
}

#[test]
fn check_finds_a_missing_gmail_scope_and_status_shows_the_destination_sign_in() {
    let b = Bench::start();
    let gmail = FakeGmail::start(&b.dovecot.idp);
    // Signed in without gmail.readonly, which exactly-once (the default) needs.
    let auth = oauth_auth(&b).replace(r#", "https://www.googleapis.com/auth/gmail.readonly""#, "");
    write_gmail_config(&b, &gmail, "", &auth);
    assert_eq!(crate::oauth::sign_in_by_device(&b, "gmail").code, 0);
    let check = b.run(&["check", "gmail"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains(
            "FAIL  scopes: the sign-in lacks https://www.googleapis.com/auth/gmail.readonly"
        ),
        "{check:?}"
    );
    assert!(check.stdout.contains("`mailferry auth gmail`"), "{check:?}");
    let status = b.run(&["status"]);
    assert!(
        status.stdout.contains("destination gmail: signed in as "),
        "{status:?}"
    );

    // With every scope: the API answers and the labels are named.
    write_gmail_config(&b, &gmail, "", &oauth_auth(&b));
    assert_eq!(crate::oauth::sign_in_by_device(&b, "gmail").code, 0);
    let check = b.run(&["check", "gmail"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains("ok    api: the Gmail API answers for"),
        "{check:?}"
    );
    assert!(
        check
            .stdout
            .contains("created at the first import: Outlook"),
        "{check:?}"
    );
}

#[test]
fn a_notice_goes_into_gmail_once_when_an_account_cannot_log_in() {
    let (b, gmail) = gmail_bench("");
    let hook = mailferry_testkit::HttpSink::start();
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config
            .replace(
                "[daemon]\n",
                "[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\n",
            )
            .replace(
                "destination = \"gmail\"\n",
                "destination = \"gmail\"\ninterval = \"1s\"\n",
            )
            + &format!("\n[notify]\nwebhook = \"{}\"\n", hook.url("/hook")),
    )
    .expect("config");
    std::fs::write(b.dir.path().join("src.pass"), "wrong\n").expect("pass");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hook.requests().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no notice");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several more runs, still parked: still one notice.
    std::thread::sleep(Duration::from_secs(4));
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let notices: Vec<_> = gmail
        .messages()
        .into_iter()
        .filter(|m| String::from_utf8_lossy(&m.raw).contains("Auto-Submitted: auto-generated"))
        .collect();
    assert_eq!(notices.len(), 1, "{} notices", notices.len());
    let text = String::from_utf8_lossy(&notices[0].raw).into_owned();
    assert!(
        text.contains("Subject: mailferry: src cannot log in"),
        "{text}"
    );
    assert!(
        text.contains("fix the password file, then: mailferry run-now src"),
        "{text}"
    );
    assert!(notices[0].label_ids.contains(&"INBOX".to_owned()));
    assert_eq!(hook.requests().len(), 1);
}
