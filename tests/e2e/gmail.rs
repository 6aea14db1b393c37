//! The Gmail API destination end to end: the real Dovecot -> `mailferry once` -> the fake
//! Gmail API (documented REST shapes, bearer tokens checked at the fake IdP).

use std::time::Duration;

use mailferry_testkit::{FakeGmail, USER, fixtures};

use crate::util::{Bench, sqlite, summary};

const TOKEN: &str = "gmail-access-token";

/// A bench whose account "src" (folder INBOX, label "Outlook") delivers to the
/// fake Gmail API with a granted access token in a file. `dest_extra`: more destination
/// lines.
fn gmail_bench(dest_extra: &str) -> (Bench, FakeGmail) {
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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

    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let auth = format!(
        r#"auth = {{ method = "oauth2", provider = "custom", client-id = "gmail-client", token-url = "{}", device-url = "{}", authorize-url = "{}", scopes = ["https://www.googleapis.com/auth/gmail.insert", "https://www.googleapis.com/auth/gmail.labels", "https://www.googleapis.com/auth/gmail.readonly", "offline_access"] }}"#,
        idp.url("/token"),
        idp.url("/devicecode"),
        idp.url("/authorize"),
    );
    write_gmail_config(&b, &gmail, "", &auth);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

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
    let signed = crate::oauth::sign_in_by_device(&b, "gmail");
    assert_eq!(signed.code, 0, "{signed:?}");
    std::thread::sleep(Duration::from_secs(3));
    idp.set("access_ttl", "60");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["once", "--config"])
        .arg(b.config_path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb: u64 = 0;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let digests = gmail.digests();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests[0], (size, want, "resumable".to_owned()));
    let peak = peak_kb * 1024;
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
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
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
