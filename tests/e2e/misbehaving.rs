//! Sources that misbehave the way real ones do, served by the testkit's scriptable POP3
//! server (Dovecot cannot be made to): `-ERR` to `UIDL` from a server that has it, unique
//! ids listed twice, listing lines that are not UTF-8 or not lines, a CAPA that changes.

use mailferry_testkit::{FakeImap, FakePop3, ImapScript, Pop3Script, USER, fixtures};

use crate::util::{Bench, sqlite};

fn maildrop(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("uid-{i}").into_bytes(), fixtures::simple(i)))
        .collect()
}

fn pop3_config(b: &Bench, fake: &FakePop3) {
    let account = format!(
        "[[account]]\nname = \"old\"\nprotocol = \"pop3\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n",
        fake.port
    );
    b.write_config(&[account]);
}

#[test]
fn an_err_to_uidl_from_a_server_that_has_uidl_is_temporary_and_re_delivers_nothing() {
    let b = Bench::start();
    let fake = FakePop3::start(Pop3Script {
        messages: maildrop(3),
        capa: vec!["USER".into(), "UIDL".into()],
        ..Pop3Script::default()
    });
    pop3_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 3, delivered 3, skipped 0, failed 0);

    fake.script(|s| s.uidl_err = 1);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[SYS/TEMP]"), "{run:?}");
    assert_eq!(
        b.smtp.messages().len(),
        3,
        "the maildrop was delivered again"
    );
    assert!(
        !fake.commands().iter().any(|c| c.starts_with("TOP")),
        "fell back to header hashes"
    );

    // The server drops UIDL from CAPA but still answers it: the keys stay UIDLs.
    fake.script(|s| s.capa = vec!["USER".into()]);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 3);
}

#[test]
fn messages_listed_under_one_unique_id_are_each_delivered_once() {
    let b = Bench::start();
    let mut messages = maildrop(3);
    messages[1].0 = b"same".to_vec();
    messages[2].0 = b"same".to_vec();
    let fake = FakePop3::start(Pop3Script {
        messages,
        capa: vec!["USER".into(), "UIDL".into()],
        ..Pop3Script::default()
    });
    pop3_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 3, delivered 3, skipped 0, failed 0);
    let mut got: Vec<Vec<u8>> = b.smtp.messages().into_iter().map(|m| m.raw).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..3).map(fixtures::simple).collect();
    want.sort();
    assert!(got == want, "not each message once");
    assert!(
        run.stderr
            .contains("lists this unique id for more than one message"),
        "{run:?}"
    );
    let again = b.run(&["once"]);
    assert_summary!(again, "old", fetched 0, delivered 0, skipped 0, failed 0);
}

#[test]
fn a_listing_line_that_is_not_utf8_or_not_a_line_spoils_only_itself() {
    let b = Bench::start();
    let mut messages = maildrop(3);
    messages[1].0 = b"caf\xe9".to_vec();
    let fake = FakePop3::start(Pop3Script {
        messages,
        capa: vec!["USER".into(), "UIDL".into()],
        extra_uidl_lines: vec![b"this is not a listing line".to_vec()],
        ..Pop3Script::default()
    });
    pop3_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 3, delivered 3, skipped 0, failed 0);
    assert!(run.stderr.contains("this is not a listing line"), "{run:?}");
    let again = b.run(&["once"]);
    assert_summary!(again, "old", fetched 0, delivered 0, skipped 0, failed 0);
}

#[test]
fn a_message_the_server_will_not_hand_out_is_deferred_then_refused_and_stops_nothing() {
    let b = Bench::start();
    let fake = FakePop3::start(Pop3Script {
        messages: maildrop(3),
        capa: vec!["USER".into(), "UIDL".into(), "PIPELINING".into()],
        retr_err: vec![2],
        ..Pop3Script::default()
    });
    pop3_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 3, delivered 2, skipped 0, failed 1);
    assert!(
        run.stdout.contains("(tried again after a pause)"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("message is corrupt on this server"),
        "{run:?}"
    );
    assert_eq!(b.smtp.messages().len(), 2);
    // It rests meanwhile: the next run does not ask for it.
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 0, delivered 0, skipped 0, failed 0);
    // After six tries over a day (aged here), it is refused with the server's words.
    age_fetch_failures(&b);
    let run = b.run(&["once"]);
    assert!(
        run.stdout
            .contains("refused INBOX UIDL uid-1: the source would not hand it out at 6 tries over a day or more"),
        "{run:?}"
    );
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 0, delivered 0, skipped 0, failed 0);
    // Once the server is fixed, `retry` brings it back.
    fake.script(|s| s.retr_err.clear());
    assert_eq!(b.run(&["retry", "--account", "old", "uid-1"]).code, 0);
    let run = b.run(&["once"]);
    assert_summary!(run, "old", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 3);
}

fn imap_config(b: &Bench, fake: &FakeImap) {
    let account = format!(
        "[[account]]\nname = \"odd\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n",
        fake.port
    );
    b.write_config(&[account]);
}

fn inbox(n: u32) -> Vec<(u32, Vec<u8>)> {
    (1..=n).map(|u| (u, fixtures::simple(u as usize))).collect()
}

#[test]
fn another_clients_flag_change_during_a_fetch_stops_nothing() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: inbox(3),
        unsolicited_flags: true,
        ..ImapScript::default()
    });
    imap_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 3, delivered 3, skipped 0, failed 0);
}

/// Lets the failed fetches of the bench's state look six tries old and a day old, due now.
pub(crate) fn age_fetch_failures(b: &Bench) {
    sqlite(
        &b.state_dir().join("mailferry.db"),
        "UPDATE ledger SET not_before = NULL, attempts = 5, first_seen = first_seen - 100000 WHERE state = 'deferred'",
    );
}

#[test]
fn a_nil_body_fails_only_its_message_rests_and_is_refused_after_a_day() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: inbox(3),
        nil_body: vec![2],
        ..ImapScript::default()
    });
    imap_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 3, delivered 2, skipped 0, failed 1);
    assert!(
        run.stdout.contains("without the body (NIL or missing"),
        "{run:?}"
    );
    let second = b.run(&["once"]);
    assert_summary!(second, "odd", fetched 0, delivered 0, skipped 0, failed 0);
    age_fetch_failures(&b);
    let third = b.run(&["once"]);
    assert!(
        third.stdout.contains(
            "refused INBOX UID 2: the source would not hand it out at 6 tries over a day or more"
        ),
        "{third:?}"
    );
    assert!(third.stdout.contains("mailferry retry"), "{third:?}");
    let fourth = b.run(&["once"]);
    assert_summary!(fourth, "odd", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(b.smtp.messages().len(), 2);
    let _ = fake;
}

#[test]
fn lying_sizes_cannot_raise_memory_past_the_limit_and_too_large_is_refused_with_the_reason() {
    let b = Bench::start();
    // Announced as 1 KB each: 12 messages of 8 MB, one of 40 MB (over the 32 MB limit), and
    // one small one announced as 200 MB (refused without being fetched).
    let mut messages: Vec<(u32, Vec<u8>)> = (1..=12)
        .map(|u| (u, fixtures::sized(u as usize, 8 << 20)))
        .collect();
    messages.push((13, fixtures::sized(13, 40 << 20)));
    messages.push((14, fixtures::simple(14)));
    let mut announced: Vec<(u32, u64)> = (1..=13).map(|u| (u, 1024)).collect();
    announced.push((14, 200 << 20));
    let fake = FakeImap::start(ImapScript {
        messages: messages.clone(),
        announced,
        ..ImapScript::default()
    });
    imap_config(&b, &fake);
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config.replace("[daemon]\n", "[daemon]\nmax-message-size = \"32MiB\"\n"),
    )
    .expect("config");

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"));
    cmd.args(["once", "--config"]).arg(b.config_path());
    let (out, peak) = mailferry_testkit::run_measuring_peak(cmd);
    let peak_kb = peak / 1024;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let peak_mb = peak_kb >> 10;
    eprintln!("peak RSS with a lying server: {peak_mb} MB");
    // 12 x 8 MB + 40 MB arrive; the limit is 32 MB: the peak stays near limit + a message.
    assert!(peak_mb < 32 + 8 + 48, "peak RSS {peak_mb} MB");
    assert!(
        stdout.contains("refused INBOX UID 14: the server announces 209715200 bytes"),
        "{stdout}"
    );
    assert!(!stdout.contains("deferred INBOX UID 14"), "{stdout}");
    // The rest come in the next runs (a run holds at most the limit of liars' bodies).
    let mut said = stdout.into_owned();
    for _ in 0..6 {
        said.push_str(&b.run(&["once"]).stdout);
    }
    assert!(
        said.contains("refused INBOX UID 13: the message is larger than max-message-size"),
        "{said}"
    );
    assert!(
        !said.contains("deferred INBOX UID 13"),
        "refused at once: {said}"
    );
    let got = b.smtp.messages();
    assert_eq!(got.len(), 12, "{said}");
    let whole: Vec<Vec<u8>> = (1..=12).map(|u| fixtures::sized(u, 8 << 20)).collect();
    for m in &got {
        assert!(
            whole.contains(&m.raw),
            "a message was cut ({} bytes)",
            m.raw.len()
        );
    }
}

/// The UID FETCH commands of the listing (not of bodies) the fake received.
fn listings(fake: &FakeImap) -> Vec<String> {
    fake.log()
        .commands
        .into_iter()
        .filter(|c| c.contains("UID FETCH") && c.contains("RFC822.SIZE"))
        .map(|c| c.split_whitespace().nth(3).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_poll_lists_only_what_can_be_new_and_still_retries_what_is_unsettled() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: inbox(3),
        nil_body: vec![2],
        ..ImapScript::default()
    });
    imap_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 3, delivered 2, skipped 0, failed 1);
    assert_eq!(listings(&fake), ["1:*"]);

    // Nothing new, but UID 2 is still deferred: it alone is listed (and, its pause over,
    // tried again).
    fake.script(|s| s.nil_body.clear());
    age_fetch_failures(&b);
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(listings(&fake), ["1:*", "2"]);

    // Unchanged, nothing unsettled: EXAMINE only, no listing at all.
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(listings(&fake).len(), 2, "an unchanged folder was listed");

    // New mail: only from the last UIDNEXT on.
    fake.script(|s| s.messages.push((4, fixtures::simple(4))));
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(listings(&fake).last().map(String::as_str), Some("4:*"));
    assert_eq!(b.smtp.messages().len(), 4);
}

#[test]
fn a_listing_line_without_uid_is_reported_and_the_rest_flows() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: inbox(2),
        listing_without_uid: true,
        ..ImapScript::default()
    });
    imap_config(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "odd", fetched 2, delivered 2, skipped 0, failed 0);
    assert!(
        run.stderr.contains("FETCH responses without a UID"),
        "dropped silently: {run:?}"
    );
}
