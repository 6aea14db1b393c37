//! Malformed mail, as real mailboxes hold it, passes through untouched: delivered
//! byte-identical (but for what SMTP itself requires), or refused with the reason and
//! reported, never dropped silently and never rewritten.

use mailferry_testkit::fixtures;

use crate::util::{Bench, summary};

/// (name, bytes stored in the Maildir, bytes expected at the receiver)
pub(crate) fn cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    // Dovecot serves Maildir files with LF line ends as CRLF over IMAP.
    v.push((
        "bare-lf",
        b"Subject: bare-lf\nMessage-ID: <lf@x>\n\nline one\nline two\n".to_vec(),
        b"Subject: bare-lf\r\nMessage-ID: <lf@x>\r\n\r\nline one\r\nline two\r\n".to_vec(),
    ));
    // A bare CR ends its line too: receivers that take it for a line end must not see a
    // different message than the others (and no "." line can hide behind it).
    v.push((
        "bare-cr",
        b"Subject: bare-cr\r\nMessage-ID: <cr@x>\r\n\r\nbefore\rafter\r\n".to_vec(),
        b"Subject: bare-cr\r\nMessage-ID: <cr@x>\r\n\r\nbefore\r\nafter\r\n".to_vec(),
    ));
    // IMAP cannot carry NUL; Dovecot sends 0x80 in its place (DESIGN.md).
    v.push((
        "nul",
        b"Subject: nul\r\nMessage-ID: <nul@x>\r\n\r\nzero\x00byte\r\n".to_vec(),
        b"Subject: nul\r\nMessage-ID: <nul@x>\r\n\r\nzero\x80byte\r\n".to_vec(),
    ));
    let latin1 = b"Subject: caf\xe9 8bit\r\nFrom: Ren\xe9 <rene@x.example>\r\nMessage-ID: <latin1@x>\r\n\r\nna\xefve body \xff\r\n".to_vec();
    v.push(("latin1", latin1.clone(), latin1));
    let no_colon = b"Subject: no-colon\r\nMessage-ID: <nocolon@x>\r\nThis header line has no colon\r\n\r\nbody\r\n".to_vec();
    v.push(("no-colon", no_colon.clone(), no_colon));
    let no_id = b"From: anon@x.example\r\nSubject: no-message-id\r\n\r\nbody\r\n".to_vec();
    v.push(("no-id", no_id.clone(), no_id));
    // SMTP needs a final line break; it is the only byte added.
    v.push((
        "no-final-newline",
        b"Subject: no-final-newline\r\nMessage-ID: <nofinal@x>\r\n\r\nno newline at the end"
            .to_vec(),
        b"Subject: no-final-newline\r\nMessage-ID: <nofinal@x>\r\n\r\nno newline at the end\r\n"
            .to_vec(),
    ));
    let dots =
        b"Subject: dots\r\nMessage-ID: <dots@x>\r\n\r\n.\r\n..\r\n.leading\r\n . \r\n".to_vec();
    v.push(("dots", dots.clone(), dots));
    v
}

#[test]
fn odd_messages_arrive_untouched_or_are_refused_with_a_reason() {
    let b = Bench::start();
    // Each message's own sender, so that the fallback to From is seen.
    b.write_raw(
        &(b.smtp_destination("home", b.smtp.port) + "envelope-from = \"return-path\"\n"),
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    for (_, stored, _) in cases() {
        b.dovecot.add_message("INBOX", &stored);
    }
    // A strict RFC 5321 receiver (aiosmtpd) refuses lines over 1,000 bytes...
    let mut long = b"Subject: long-line\r\nMessage-ID: <long@x>\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1500));
    long.extend_from_slice(b"\r\n");
    b.dovecot.add_message("INBOX", &long);
    // ...and there is no way to send an empty message.
    b.dovecot.add_message("INBOX", b"");

    let run = b.run(&["once"]);
    let n = cases().len();
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        format!("src: fetched {}, delivered {n}, skipped 0, failed 2", n + 2),
        "{run:?}"
    );

    let got = b.smtp.messages();
    assert_eq!(got.len(), n, "{run:?}");
    for (name, _, want) in cases() {
        let found = got.iter().any(|r| r.raw == want);
        assert!(
            found,
            "case {name}: not received byte-identical; received:\n{:#?}",
            got.iter()
                .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
                .collect::<Vec<_>>()
        );
    }
    let latin = got
        .iter()
        .find(|r| r.raw.starts_with(b"Subject: caf"))
        .expect("latin1 message");
    assert!(
        latin.mail_options.iter().any(|o| o == "BODY=8BITMIME"),
        "{:?}",
        latin.mail_options
    );
    let no_id = got
        .iter()
        .find(|r| r.raw.ends_with(b"Subject: no-message-id\r\n\r\nbody\r\n"))
        .expect("no-id message");
    assert_eq!(no_id.mail_from, "anon@x.example");

    assert!(
        run.stdout.contains("refused INBOX UID 9 <long@x>: ")
            && run.stdout.contains("Line too long"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("refused INBOX UID 10: the message is empty (no header, no body)"),
        "{run:?}"
    );
    // Refused messages stay at the source and are not retried in a loop.
    assert_eq!(b.dovecot.message_files("INBOX").len(), n + 2);
    let again = b.run(&["once"]);
    assert_summary!(again, "src", fetched 0, delivered 0, skipped 0, failed 0);
}

#[test]
fn a_large_message_passes_byte_identical() {
    let b = Bench::start();
    let big = fixtures::sized(1, 6 * 1024 * 1024);
    b.dovecot.add_message("INBOX", &big);
    b.once_ok();
    let got = b.smtp.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].raw == big, "the 6 MB message changed on the way");
}

#[test]
fn bare_cr_and_lf_cannot_end_data_early_at_a_lenient_receiver() {
    // A message whose body would end DATA at a receiver that takes a bare CR or LF for a
    // line end, followed by a second transaction smuggled into mailferry's session.
    let smuggled = b"Subject: smuggle\r\nMessage-ID: <smuggle@x>\r\n\r\nhello\r.\rMAIL FROM:<evil@attacker.example>\rRCPT TO:<victim@home.example>\rDATA\rSubject: forged\r\r.\rthen LF\n.\nMAIL FROM:<evil2@attacker.example>\nRCPT TO:<victim@home.example>\nDATA\nforged\n.\n";
    let b = Bench::start();
    b.dovecot.add_message("INBOX", smuggled);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let lenient = mailferry_testkit::LenientSmtp::start();
    let destination = format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nenvelope-to = [\"{}\"]\n",
        lenient.port,
        crate::util::RCPT
    );
    b.write_raw(
        &destination,
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    b.once_ok();
    let commands = lenient.commands();
    let mails: Vec<&String> = commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL FROM"))
        .collect();
    assert_eq!(
        mails.len(),
        2,
        "one MAIL per message, none smuggled: {commands:#?}"
    );
    assert!(
        !commands.iter().any(|c| c.contains("attacker.example")),
        "a smuggled command ran: {commands:#?}"
    );
    let got = lenient.messages();
    assert_eq!(got.len(), 2, "{got:?}");
    // The whole body arrived as data, its bare CR and LF now CRLF, its dot lines stuffed.
    let first = String::from_utf8_lossy(&got[0]);
    assert!(
        first.contains("hello\r\n..\r\nMAIL FROM:<evil@attacker.example>\r\n"),
        "{first}"
    );
    assert!(
        first.contains("then LF\r\n..\r\nMAIL FROM:<evil2@attacker.example>\r\n"),
        "{first}"
    );
}

#[test]
fn plain_text_injected_after_the_reply_to_starttls_ends_the_session_and_nothing_is_sent() {
    // The receiver answers STARTTLS with "220" and, in the same plain-text packet, a "250"
    // for the EHLO the client has not sent yet (response injection, Poddebniak et al.,
    // USENIX Security 2021). Read ahead and kept, that line answers the EHLO over TLS and
    // every later reply belongs to the command before: a session nobody can trust.
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let lenient = mailferry_testkit::LenientSmtp::start_injecting_after_starttls(&b.dovecot.pki);
    let destination = format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\ntls-ca-file = \"{}\"\nenvelope-to = [\"{}\"]\n",
        lenient.port,
        b.dovecot.pki.ca_pem.display(),
        crate::util::RCPT
    );
    b.write_raw(
        &destination,
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    let run = b.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("after its reply to STARTTLS, before TLS began"),
        "{run:?}"
    );
    assert!(lenient.messages().is_empty(), "a message went out");
    let commands = lenient.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "the session went on past STARTTLS: {commands:#?}"
    );
    // The message stays for the next run.
    assert!(b.smtp.messages().is_empty());
}

#[test]
fn with_pipelining_the_envelope_goes_in_one_write_and_data_taken_after_a_refused_recipient_sends_nothing()
 {
    // RFC 2920: MAIL, RCPT and DATA in one write, the replies read in order.
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let lenient = mailferry_testkit::LenientSmtp::start_pipelining();
    let destination = |to: &str| {
        format!(
            "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nenvelope-to = [{to}]\n",
            lenient.port,
        )
    };
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    b.write_raw(
        &destination(&format!("\"{}\"", crate::util::RCPT)),
        std::slice::from_ref(&account),
    );
    b.once_ok();
    assert_eq!(lenient.messages().len(), 1);
    let reads = lenient.lines_per_read();
    assert!(
        reads.contains(&3),
        "MAIL, RCPT and DATA did not come in one read: lines per read {reads:?}"
    );
    // A second recipient the server refuses, though it takes DATA (354) for the first, as
    // Postfix does: the message must not go out (no terminator, the connection dropped),
    // and the refusal is reported.
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    b.write_raw(
        &destination(&format!(
            "\"{}\", \"refused@home.example\"",
            crate::util::RCPT
        )),
        &[account],
    );
    let run = b.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("Recipient address rejected"), "{run:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        lenient.messages().len(),
        1,
        "a message went out after its recipient was refused"
    );
}

#[test]
fn io_timeout_limits_silence_not_size_a_large_message_over_a_slow_link_passes() {
    let b = Bench::start();
    let big = fixtures::sized(1, 6 * 1024 * 1024);
    b.dovecot.add_message("INBOX", &big);
    // About 1.5 MB/s both ways, in front of Dovecot and of the receiver: each transfer of
    // the message takes about 4 s, twice the io-timeout of 2 s.
    let imap = mailferry_testkit::Trickle::start(b.dovecot.imaps_port, 1_500_000);
    let smtp = mailferry_testkit::Trickle::start(b.smtp.port, 1_500_000);
    let destination = b.smtp_destination("home", smtp.port);
    let account = b.account("src", imap.port, "implicit", "src.pass");
    b.write_raw(&destination, &[account]);
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config.replace("io-timeout = \"30s\"", "io-timeout = \"2s\""),
    )
    .expect("config");
    let started = std::time::Instant::now();
    b.once_ok();
    assert!(
        started.elapsed() > std::time::Duration::from_secs(4),
        "the link was not slow"
    );
    let got = b.smtp.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].raw == big, "the message changed on the way");
}

#[test]
fn starttls_asked_of_a_server_without_it_says_so_and_names_the_setting() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let plain = mailferry_testkit::LenientSmtp::start();
    let destination = format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nenvelope-to = [\"{}\"]\n",
        plain.port,
        crate::util::RCPT
    );
    b.write_raw(
        &destination,
        &[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")],
    );
    let run = b.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("does not offer STARTTLS"), "{run:?}");
    assert!(all.contains("tls = \"implicit\""), "{run:?}");
    assert!(plain.messages().is_empty());
    assert!(
        !plain
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "the session went on in plain text: {:?}",
        plain.commands()
    );
}
