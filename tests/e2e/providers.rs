//! The real binary against servers that behave as public reports say Outlook.com
//! (Exchange Online), Yahoo and GMX behave (the testkit's provider profiles; DESIGN.md,
//! "What servers actually send", has the sources). Every refusal is seen and said; nothing
//! is silently skipped, nothing lost, nothing doubled.

use std::time::Duration;

use mailferry_testkit::{
    FakeImap, FakePop3, ImapCommand, ImapRefusal, ImapScript, Pop3Script, USER, fixtures,
};

use crate::misbehaving::age_fetch_failures;
use crate::util::{Bench, Run};

fn inbox(n: u32) -> Vec<(u32, Vec<u8>)> {
    (1..=n).map(|u| (u, fixtures::simple(u as usize))).collect()
}

fn account(b: &Bench, fake: &FakeImap, extra: &str) {
    let account = format!(
        "[[account]]\nname = \"prov\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n{extra}",
        fake.port
    );
    b.write_config(&[account]);
}

/// No message a user sees holds a library type's Debug rendering.
fn no_debug_text(run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        for bad in ["Outcome {", "Some(", "code: None", "info: "] {
            assert!(!text.contains(bad), "{bad:?} shown: {run:?}");
        }
    }
}

fn body_fetches(fake: &FakeImap) -> Vec<String> {
    fake.log()
        .commands
        .into_iter()
        .filter(|c| c.contains("BODY.PEEK[]"))
        .collect()
}

fn delivered(b: &Bench) -> usize {
    b.smtp.messages().len()
}

// Outlook.com: `BAD Request is throttled. Suggested Backoff Time: N milliseconds`, then
// the connection closed (emailengine and imapsync reports; DESIGN.md).
#[test]
fn outlook_throttling_mid_run_waits_as_asked_and_delivers_everything() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(100));
    script.refusals.push(ImapRefusal {
        skip: 1,
        hang_up: true,
        ..ImapRefusal::once(
            ImapCommand::Body,
            "BAD Request is throttled. Suggested Backoff Time: 1500 milliseconds",
        )
    });
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 100, delivered 100, skipped 0, failed 0);
    assert_eq!(delivered(&b), 100);
    assert!(
        run.stderr.contains("throttled by the server for 1.5 s"),
        "{run:?}"
    );
    // The next connection came no sooner than the server asked.
    let log = fake.log();
    let refused = log
        .commands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.contains("BODY.PEEK[]"))
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second body fetch");
    let next_login = log
        .commands
        .iter()
        .enumerate()
        .skip(refused)
        .find(|(_, c)| c.contains("LOGIN"))
        .map(|(i, _)| i)
        .expect("a new login");
    let waited = log.times[next_login] - log.times[refused];
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    no_debug_text(&run);
}

#[test]
fn outlook_throttling_at_login_and_server_unavailable_wait_and_park_nothing() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(3));
    script.refusals.push(ImapRefusal {
        hang_up: true,
        ..ImapRefusal::once(
            ImapCommand::Login,
            "NO Request is throttled. Suggested Backoff Time: 299910 milliseconds",
        )
    });
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("throttled by the server for 299.9 s"),
        "{run:?}"
    );
    let status = b.run(&["status"]);
    assert!(
        status.stdout.contains("throttled by the server"),
        "{status:?}"
    );
    assert!(!status.stdout.contains("parked"), "{status:?}");
    fake.script(|s| {
        s.refusals.push(ImapRefusal::once(
            ImapCommand::Open,
            "NO Server Unavailable. 15",
        ));
    });
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("throttled by the server for 60 s"),
        "{run:?}"
    );
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 3, delivered 3, skipped 0, failed 0);
    no_debug_text(&run);
}

// Exchange: `BAD User is authenticated but not connected.` (email-oauth2-proxy, MailKit).
#[test]
fn outlook_not_connected_is_temporary_and_names_the_real_causes() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(3));
    script.refusals.push(ImapRefusal::once(
        ImapCommand::Open,
        "BAD User is authenticated but not connected.",
    ));
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("BAD User is authenticated but not connected."),
        "{run:?}"
    );
    assert!(run.stdout.contains("IMAP is switched on"), "{run:?}");
    assert!(run.stdout.contains("IMAP.AccessAsUser.All"), "{run:?}");
    assert!(!run.stdout.contains("folders list"), "{run:?}");
    no_debug_text(&run);
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 3, delivered 3, skipped 0, failed 0);
}

// Exchange answers a message it cannot render yet with `* n FETCH (UID n)` and `OK`
// (OfflineIMAP/offlineimap #62, MailKit #1615, postalsys/emailengine #53).
#[test]
fn outlook_bodiless_answers_rest_then_arrive_and_are_refused_only_after_a_day() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(5));
    script.bodiless = vec![2, 4];
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 5, delivered 3, skipped 0, failed 2);
    // Rests: not asked for at the next poll.
    let before = body_fetches(&fake).len();
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(body_fetches(&fake).len(), before, "asked again at once");
    // UID 2 can be rendered now; UID 4 still cannot, after six tries over a day.
    fake.script(|s| s.bodiless = vec![4]);
    age_fetch_failures(&b);
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 2, delivered 1, skipped 0, failed 1);
    assert!(run.stdout.contains("refused INBOX UID 4"), "{run:?}");
    assert!(run.stdout.contains("mailferry retry"), "{run:?}");
    // It stays at the source; `retry` brings it back once the server has it.
    fake.script(|s| s.bodiless.clear());
    assert_eq!(b.run(&["retry", "--account", "prov", "4"]).code, 0);
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(delivered(&b), 5);
}

// Outlook.com ends a session whose token expired: `* BYE Session invalidated -
// AccessTokenExpired` (email-oauth2-proxy).
#[test]
fn outlook_token_expiry_mid_fetch_is_said_as_such_and_the_run_carries_on() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(60));
    script.bye_after = Some((25, "Session invalidated - AccessTokenExpired".into()));
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 60, delivered 60, skipped 0, failed 0);
    assert!(run.stderr.contains("access token expired"), "{run:?}");
    assert!(!run.stderr.contains("Broken pipe"), "{run:?}");
    assert!(!run.stdout.contains("Broken pipe"), "{run:?}");
    assert_eq!(delivered(&b), 60);
}

// Exchange's MaxCommandSize (about 10 KB): `BAD Command Error. 10` for long UID sets.
#[test]
fn outlook_long_uid_sets_are_split_and_seen_messages_are_not_flagged_again() {
    let b = Bench::start();
    // Every other UID from 1,000,000: no ranges, about 8 bytes a UID; 1,500 of them make
    // a set of about 12 KB.
    let messages: Vec<(u32, Vec<u8>)> = (0..1_500)
        .map(|i| (1_000_000 + 2 * i, fixtures::simple(i as usize)))
        .collect();
    let fake = FakeImap::start(ImapScript::outlook(messages));
    account(&b, &fake, "after-delivery = \"mark-seen\"\n");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 1500, delivered 1500, skipped 0, failed 0);
    let stores: Vec<String> = fake
        .log()
        .commands
        .into_iter()
        .filter(|c| c.contains("UID STORE"))
        .collect();
    assert!(stores.len() >= 2, "{} STORE commands", stores.len());
    assert!(stores.iter().all(|c| c.len() <= 8 * 1024));
    assert!(
        !fake.log().commands.iter().any(|c| c.len() > 8 * 1024),
        "a command over 8 KB"
    );
    // All were flagged; none is flagged again at the next run.
    assert_eq!(fake.log().commands.len(), fake.log().times.len());
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 0, delivered 0, skipped 0, failed 0);
    let again = fake
        .log()
        .commands
        .iter()
        .filter(|c| c.contains("UID STORE"))
        .count();
    assert_eq!(again, stores.len(), "already \\Seen messages flagged again");
}

// Yahoo refuses a listing under load: `NO [UNAVAILABLE] UID FETCH Server error - Please
// try again later` (emailjs-imap-client #60).
#[test]
fn yahoo_refused_listing_is_an_error_and_the_next_run_delivers_everything() {
    let b = Bench::start();
    let mut script = ImapScript::yahoo(inbox(60), &[]);
    script.refusals.push(ImapRefusal::once(
        ImapCommand::Listing,
        "NO [UNAVAILABLE] UID FETCH Server error - Please try again later",
    ));
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("[UNAVAILABLE] UID FETCH Server error - Please try again later"),
        "{run:?}"
    );
    let status = b.run(&["status"]);
    assert!(
        status
            .stdout
            .contains("last error: the server refused UID FETCH (listing): NO [UNAVAILABLE]"),
        "{status:?}"
    );
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 60, delivered 60, skipped 0, failed 0);
    assert_eq!(delivered(&b), 60);
    no_debug_text(&run);
}

// On a folder's first run with first-run = new-only, a refused listing records no
// baseline: what was there is still left alone, only new mail comes.
#[test]
fn yahoo_refused_first_listing_keeps_new_only_to_new_mail() {
    let b = Bench::start();
    let mut script = ImapScript::yahoo(inbox(10), &[]);
    script.refusals.push(ImapRefusal::once(
        ImapCommand::Listing,
        "NO [UNAVAILABLE] UID FETCH Server error - Please try again later",
    ));
    let fake = FakeImap::start(script);
    // mark-seen lists the whole folder at every run.
    account(
        &b,
        &fake,
        "first-run = \"new-only\"\nafter-delivery = \"mark-seen\"\n",
    );
    assert_eq!(b.run(&["once"]).code, 1);
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 0, delivered 0, skipped 0, failed 0);
    fake.script(|s| s.messages.push((11, fixtures::simple(11))));
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 1, delivered 1, skipped 0, failed 0);
    assert_eq!(delivered(&b), 1);
}

// Yahoo always refuses one particular message: `NO [UNAVAILABLE] UID FETCH Server error
// while fetching messages` (MailKit #358, imapsync #119).
#[test]
fn yahoo_messages_it_always_refuses_are_deferred_with_its_words_and_the_rest_flow() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript::yahoo(inbox(60), &[3, 5]));
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 60, delivered 58, skipped 0, failed 2);
    assert!(
        run.stdout.contains(
            "deferred INBOX UID 3: the source would not hand it out (tried again after a pause): the server refused to hand it out: NO [UNAVAILABLE] UID FETCH Server error while fetching messages"
        ),
        "{run:?}"
    );
    let status = b.run(&["status"]);
    assert!(status.stdout.contains("2 deferred"), "{status:?}");
    assert_eq!(delivered(&b), 58);
}

// GMX reports a UIDNEXT below the truth without a new UIDVALIDITY (deltachat core #2188).
#[test]
fn gmx_uidnext_going_backwards_lists_everything_and_delivers_the_gap() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript::gmx(inbox(10)));
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 10, delivered 10, skipped 0, failed 0);
    fake.script(|s| {
        s.messages
            .extend((11..=13).map(|u| (u, fixtures::simple(u as usize))));
        s.uidnext_behind = 5;
    });
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 3, delivered 3, skipped 0, failed 0);
    assert!(run.stderr.contains("UIDNEXT went backwards"), "{run:?}");
    assert_eq!(delivered(&b), 13);
}

// A refused `+FLAGS (\Deleted)` is not a deletion.
#[test]
fn a_refused_store_deletes_nothing_and_says_so() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(5));
    // Refused in the run's session and again in the one it reconnects with.
    script.refusals.push(ImapRefusal {
        times: Some(2),
        ..ImapRefusal::always(
            ImapCommand::Store,
            "NO [UNAVAILABLE] Server error - Please try again later",
        )
    });
    let fake = FakeImap::start(script);
    account(&b, &fake, "after-delivery = \"delete\"\n");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stdout.contains("deleted"), "{run:?}");
    assert!(
        run.stdout
            .contains("the server refused UID STORE: NO [UNAVAILABLE] Server error"),
        "{run:?}"
    );
    assert!(
        !fake.log().commands.iter().any(|c| c.contains("EXPUNGE")),
        "expunged after a refused STORE"
    );
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("deleted 5"), "{run:?}");
    assert_eq!(delivered(&b), 5);
}

// Gmail and Exchange limit connections per mailbox: `NO [UNAVAILABLE] ... Too many
// simultaneous connections` (DESIGN.md) is temporary, never a sign-in to redo.
#[test]
fn too_many_connections_is_temporary() {
    let b = Bench::start();
    let mut script = ImapScript::outlook(inbox(2));
    script.refusals.push(ImapRefusal::once(
        ImapCommand::Login,
        "NO [UNAVAILABLE] Too many simultaneous connections. (Failure)",
    ));
    let fake = FakeImap::start(script);
    account(&b, &fake, "");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("Too many simultaneous connections"),
        "{run:?}"
    );
    let status = b.run(&["status"]);
    assert!(!status.stdout.contains("parked"), "{status:?}");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 2, delivered 2, skipped 0, failed 0);
}

fn pop3_account(b: &Bench, fake: &FakePop3) {
    let account = format!(
        "[[account]]\nname = \"prov\"\nprotocol = \"pop3\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n",
        fake.port
    );
    b.write_config(&[account]);
}

// Exchange's POP3 `LIST` sizes are estimates (Microsoft KB Q191504; stalwartlabs/vandelay
// #12); a body whose terminator arrived is the message.
#[test]
fn outlook_pop3_estimated_sizes_deliver_every_message() {
    let b = Bench::start();
    let maildrop: Vec<(Vec<u8>, Vec<u8>)> = (0..60)
        .map(|i| (format!("AAQkA{i}").into_bytes(), fixtures::simple(i)))
        .collect();
    let fake = FakePop3::start(Pop3Script::outlook(maildrop));
    pop3_account(&b, &fake);
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 60, delivered 60, skipped 0, failed 0);
    let mut got: Vec<Vec<u8>> = b.smtp.messages().into_iter().map(|m| m.raw).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..60).map(fixtures::simple).collect();
    want.sort();
    assert!(got == want, "not each message once, unchanged");
}

// Exchange's POP3: `-ERR Server Unavailable. 21` (DESIGN.md).
#[test]
fn outlook_pop3_server_unavailable_is_throttling() {
    let b = Bench::start();
    let mut script = Pop3Script::outlook(vec![(b"A1".to_vec(), fixtures::simple(1))]);
    script.pass_err = Some((1, "-ERR Server Unavailable. 21".into()));
    let fake = FakePop3::start(script);
    pop3_account(&b, &fake);
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("throttled by the server for 60 s"),
        "{run:?}"
    );
    let status = b.run(&["status"]);
    assert!(!status.stdout.contains("parked"), "{status:?}");
    let run = b.run(&["once"]);
    assert_summary!(run, "prov", fetched 1, delivered 1, skipped 0, failed 0);
}
