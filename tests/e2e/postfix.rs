//! Postfix as the destination: what aiosmtpd lets pass. Postfix prepends its trace headers
//! (Return-Path names the envelope sender it got), refuses bare LFs with
//! `smtpd_forbid_bare_newline = reject`, judges `SIZE=` at `MAIL FROM`, and knows SMTPUTF8
//! only when it is switched on.

use mailferry_testkit::{POSTFIX_DOMAIN, Postfix, fixtures, holds_unchanged};

use crate::util::{Bench, RCPT, summary};

/// The bench's Dovecot as the source, `postfix` as the destination "home"; `extra` lines
/// for the destination block.
fn deliver_to(b: &Bench, postfix: &Postfix, extra: &str) {
    let destination = format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\ntls-ca-file = \"{}\"\nenvelope-to = [\"{RCPT}\"]\n{extra}\n",
        postfix.port,
        postfix.pki.ca_pem.display()
    );
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    b.write_raw(&destination, &[account]);
}

fn mailbox() -> &'static str {
    assert!(RCPT.ends_with(POSTFIX_DOMAIN));
    RCPT
}

/// The `Return-Path:` line Postfix wrote: the envelope sender it was given.
fn return_path(stored: &[u8]) -> String {
    String::from_utf8_lossy(stored)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn postfix_gets_the_bytes_unchanged_and_bounces_go_to_the_user_by_default() {
    let b = Bench::start();
    let postfix = Postfix::start(&[mailbox()], &[]);
    let mut originals: Vec<Vec<u8>> = (0..5).map(fixtures::simple).collect();
    // Bare LF and bare CR inside: Postfix refuses bare LFs in SMTP, so mailferry must send
    // CRLF (and never trips `smtpd_forbid_bare_newline = reject`).
    originals.push(
        b"From: odd@origin.example\r\nSubject: bare ends\r\nMessage-ID: <bare@x>\r\n\r\nline\nbare lf\r\nend\r\n"
            .to_vec(),
    );
    for m in &originals {
        b.dovecot.add_message("INBOX", m);
    }
    deliver_to(&b, &postfix, "");
    let check = b.run(&["check", "home"]);
    assert!(
        check.stdout.contains("tls") && check.stdout.contains("STARTTLS done"),
        "{check:?}"
    );
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 6, delivered 6, skipped 0, failed 0",
        "{run:?}\n{}",
        postfix.log()
    );
    let stored = postfix.wait_delivered(mailbox(), 6);
    assert_eq!(stored.len(), 6, "{}", postfix.log());
    for original in &originals[..5] {
        assert!(
            stored.iter().any(|s| holds_unchanged(s, original)),
            "changed on the way: {}",
            String::from_utf8_lossy(original)
        );
    }
    // The envelope sender is the user's own address: a bounce Postfix makes after its 250
    // (a forwarding loop, a full mailbox) comes back to the user, not to a third party.
    for s in &stored {
        assert_eq!(return_path(s), format!("Return-Path: <{RCPT}>"));
    }
    let log = postfix.log_when(|l| l.contains(" quit=1 "));
    assert!(!log.contains("bare <LF>"), "{log}");
}

#[test]
fn envelope_from_return_path_keeps_each_senders_address_and_null_sender_is_possible() {
    let b = Bench::start();
    let postfix = Postfix::start(&[mailbox()], &[]);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    deliver_to(&b, &postfix, "envelope-from = \"return-path\"");
    b.once_ok();
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    deliver_to(&b, &postfix, "envelope-from = \"<>\"");
    b.once_ok();
    let mut paths: Vec<String> = postfix
        .wait_delivered(mailbox(), 2)
        .iter()
        .map(|s| return_path(s))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "Return-Path: <>".to_owned(),
            "Return-Path: <bounces+1@origin.example>".to_owned()
        ]
    );
}

/// A message whose Return-Path is an internationalised address.
fn utf8_sender() -> Vec<u8> {
    "Return-Path: <jörg@bücher.example>\r\nFrom: Jörg <jörg@bücher.example>\r\nSubject: grüße\r\nMessage-ID: <utf8@bücher.example>\r\n\r\nHallo\r\n"
        .as_bytes()
        .to_vec()
}

#[test]
fn without_smtputf8_a_utf8_sender_becomes_the_null_sender_and_with_it_stays() {
    let b = Bench::start();
    let off = Postfix::start(&[mailbox()], &["smtputf8_enable = no"]);
    b.dovecot.add_message("INBOX", &utf8_sender());
    deliver_to(&b, &off, "envelope-from = \"return-path\"");
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0",
        "{run:?}\n{}",
        off.log()
    );
    let stored = off.wait_delivered(mailbox(), 1);
    assert_eq!(stored.len(), 1);
    assert_eq!(return_path(&stored[0]), "Return-Path: <>");
    assert!(holds_unchanged(&stored[0], &utf8_sender()));

    let on = Postfix::start(&[mailbox()], &["smtputf8_enable = yes"]);
    b.dovecot.add_message("INBOX", &utf8_sender());
    deliver_to(&b, &on, "envelope-from = \"return-path\"");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", on.log());
    let stored = on.wait_delivered(mailbox(), 1);
    assert_eq!(stored.len(), 1, "{}", on.log());
    assert_eq!(
        return_path(&stored[0]),
        "Return-Path: <jörg@bücher.example>"
    );
}

#[test]
fn a_message_over_the_size_limit_is_refused_at_mail_from_without_sending_it() {
    let b = Bench::start();
    let postfix = Postfix::start(&[mailbox()], &["message_size_limit = 200000"]);
    b.dovecot.add_message("INBOX", &fixtures::sized(1, 600_000));
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    deliver_to(&b, &postfix, "");
    let run = b.run(&["once"]);
    assert_summary!(run, "src", fetched 2, delivered 1, skipped 0, failed 1);
    assert!(run.stdout.contains("5.3.4"), "{run:?}");
    // SIZE= let Postfix refuse at MAIL FROM: the 600 KB never went over the wire.
    let log = postfix.log_when(|l| l.contains("reject: MAIL from"));
    assert!(
        log.contains("reject: MAIL from") && log.contains("552 5.3.4"),
        "{log}"
    );
    assert!(!log.contains("reject: END-OF-MESSAGE"), "{log}");
    assert_eq!(postfix.wait_delivered(mailbox(), 1).len(), 1);
}

#[test]
fn a_destination_that_defers_everything_is_left_after_five_alike_replies() {
    let b = Bench::start();
    // Every message refused for now after its data, as a broken content filter does.
    let postfix = Postfix::start(
        &[mailbox()],
        &["smtpd_end_of_data_restrictions = defer", "defer_code = 451"],
    );
    for n in 0..30 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    deliver_to(&b, &postfix, "");
    let started = std::time::Instant::now();
    let run = b.run(&["once"]);
    let took = started.elapsed();
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("refused 5 messages in a row with the same reply"),
        "{run:?}"
    );
    // Five offered, not thirty (Postfix pauses a second after each error).
    // The session ended (QUIT logged) once mailferry left: every refusal is in the log then.
    let log = postfix.log_when(|l| l.contains(" quit=1 "));
    let offered = log.matches("reject: END-OF-MESSAGE").count();
    assert_eq!(offered, 5, "{}", postfix.log());
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let states = b.ledger_states();
    assert_eq!(states, [("deferred".to_owned(), 5)], "{states:?}");
    assert!(postfix.delivered(mailbox()).is_empty());
}

#[test]
fn greylisting_at_rcpt_settles_nothing_and_the_next_run_delivers() {
    let b = Bench::start();
    // A greylisting policy answers 450 at RCPT until the sender retries later.
    let greylist = format!(
        "smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ {RCPT} = 450 4.2.0 Greylisted, see https://grey.example }} }}, permit_mynetworks, reject"
    );
    let postfix = Postfix::start(&[mailbox()], &[&greylist]);
    for n in 0..3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    deliver_to(&b, &postfix, "");
    let run = b.run(&["once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("450 4.2.0") || run.stdout.contains("(450)"),
        "{run:?}"
    );
    let states = b.ledger_states();
    assert!(
        states.iter().all(|(s, _)| s == "deferred"),
        "a greylisting reply settled a message: {states:?}"
    );
    // Later the greylist lets the sender through.
    postfix.reconfigure(&[]);
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 3, delivered 3, skipped 0, failed 0",
        "{run:?}\n{}",
        postfix.log()
    );
    assert_eq!(postfix.wait_delivered(mailbox(), 3).len(), 3);
}

/// A message whose own sender is `sender` (used with `envelope-from = "return-path"`).
fn from_sender(n: usize, sender: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{sender}>\r\nFrom: {sender}\r\nTo: {RCPT}\r\nSubject: from {sender}\r\nMessage-ID: <sender-{n}@x>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

/// Postfix `reject_unknown_sender_domain` answers 450 for a forged sender domain, an SPF
/// policy 550; both come at RCPT under Postfix's default `smtpd_delay_reject = yes`
/// (DESIGN.md, "What servers actually send"). Each is about that one message: it waits,
/// the messages after it are delivered, at every run.
#[test]
fn a_forged_sender_in_one_message_never_stops_the_others() {
    let b = Bench::start();
    let senders = "smtpd_sender_restrictions = check_sender_access inline:{ { forged.example = 450 4.1.8 Domain not found }, { spf.example = 550 5.7.23 Message rejected due to: SPF fail } }";
    let postfix = Postfix::start(&[mailbox()], &[senders]);
    let messages = [
        from_sender(1, "friend@origin.example"),
        from_sender(2, "spam@forged.example"),
        from_sender(3, "friend@origin.example"),
        from_sender(4, "phish@spf.example"),
        from_sender(5, "friend@origin.example"),
    ];
    for m in &messages {
        b.dovecot.add_message("INBOX", m);
    }
    deliver_to(&b, &postfix, "envelope-from = \"return-path\"");
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 5, delivered 3, skipped 0, failed 2",
        "{run:?}\n{}",
        postfix.log()
    );
    assert!(run.stdout.contains("Sender address rejected"), "{run:?}");
    assert_eq!(postfix.wait_delivered(mailbox(), 3).len(), 3);
    let mut states = b.ledger_states();
    states.sort();
    assert_eq!(
        states,
        [("deferred".to_owned(), 2), ("delivered".to_owned(), 3)],
        "a sender's refusal settled a message or stopped the run"
    );
    // The next run offers the greylisted-like 450 again and delivers nothing twice; the
    // 550 rests (it is refused only after a day of tries).
    let again = b.run(&["once"]);
    assert_eq!(
        summary(&again, "src"),
        "src: fetched 1, delivered 0, skipped 0, failed 1",
        "{again:?}"
    );
    assert_eq!(postfix.delivered(mailbox()).len(), 3);
}

/// A 5xx to DATA (Postfix `smtpd_data_restrictions`, Exim `acl_smtp_predata`) answers
/// every message alike: the destination's problem. The run stops after five alike
/// replies and no message is settled as refused.
#[test]
fn a_policy_refusing_every_data_command_settles_nothing() {
    let b = Bench::start();
    let postfix = Postfix::start(&[mailbox()], &["smtpd_data_restrictions = reject"]);
    for n in 0..12 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    deliver_to(&b, &postfix, "");
    let run = b.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("refused 5 messages in a row with the same reply"),
        "{run:?}"
    );
    assert!(run.stdout.contains("<DATA>"), "{run:?}");
    let states = b.ledger_states();
    assert_eq!(states, [("deferred".to_owned(), 5)], "{states:?}");
}

/// Postfix with `reject_non_fqdn_helo_hostname` refuses `EHLO localhost` and bare names
/// (at RCPT, by default). mailferry gives the kernel's name when it is a full one, else
/// the address literal RFC 5321 asks for.
#[test]
fn postfix_refusing_bare_helo_names_takes_mail_from_mailferry() {
    let b = Bench::start();
    let postfix = Postfix::start(
        &[mailbox()],
        &[
            "smtpd_helo_required = yes",
            "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname",
        ],
    );
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    deliver_to(&b, &postfix, "");
    let run = b.run(&["once"]);
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0",
        "{run:?}\n{}",
        postfix.log()
    );
    let kernel = kernel_name();
    let expected = if kernel.contains('.') {
        kernel
    } else {
        "[127.0.0.1]".to_owned()
    };
    let stored = postfix.wait_delivered(mailbox(), 1);
    let text = String::from_utf8_lossy(&stored[0]).into_owned();
    assert!(
        text.contains(&format!("Received: from {expected} (")),
        "{text}"
    );
}

/// The host name as the kernel reports it, read the test's way.
fn kernel_name() -> String {
    std::process::Command::new("uname")
        .arg("-n")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
