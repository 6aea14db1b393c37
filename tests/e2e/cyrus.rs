//! Cyrus imapd as the source: what Dovecot hides. Messages that came into a Cyrus mailbox
//! by a restore may hold NUL bytes (served as binary literals `~{n}` over IMAP, cut short
//! over POP3) and bare LFs (served as they are over POP3); folders live under `INBOX.`.

use std::path::{Path, PathBuf};

use mailferry_testkit::{
    CYRUS_USER, Cyrus, FakeImap, ImapScript, PASSWORD, SmtpReceiver, fixtures,
};

use crate::util::{DAEMON, RCPT, Run, once_ok_with_config, run_with_config, sqlite, summary};

/// A config dir with the password file; the config is written by [`write`].
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("src.pass"), format!("{PASSWORD}\n")).expect("password");
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("mailferry.toml")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state").join("mailferry.db")
    }

    fn write(&self, destination: &str, account: &str) {
        // A short io-timeout: a reply that never ends shows up as a failure, not a hang.
        let daemon = DAEMON.replace("io-timeout = \"30s\"", "io-timeout = \"10s\"");
        std::fs::write(self.config(), format!("{daemon}\n{destination}\n{account}"))
            .expect("config");
    }

    fn run(&self, args: &[&str]) -> Run {
        run_with_config(&self.config(), args)
    }

    fn once_ok(&self) -> Run {
        once_ok_with_config(&self.config())
    }
}

fn destination(port: u16, ca: &Path) -> String {
    format!(
        "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"localhost\"\nport = {port}\ntls = \"starttls\"\ntls-ca-file = \"{}\"\nenvelope-to = [\"{RCPT}\"]\n",
        ca.display()
    )
}

fn cyrus_account(cyrus: &Cyrus, protocol: &str, port: u16, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"cyrus\"\nprotocol = \"{protocol}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"implicit\"\ntls-ca-file = \"{}\"\nusername = \"{CYRUS_USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n{extra}\n",
        cyrus.pki.ca_pem.display()
    )
}

/// A message as a restore leaves it in a Cyrus mailbox: a NUL byte in the body.
fn with_nul(n: usize) -> Vec<u8> {
    format!(
        "From: nul{n}@origin.example\r\nSubject: has a NUL\r\nMessage-ID: <nul{n}@origin.example>\r\n\r\nbefore\0after\r\nlast line\r\n"
    )
    .into_bytes()
}

/// Stored with LF line ends only, a line starting with a dot among them.
fn lf_only(n: usize) -> Vec<u8> {
    format!(
        "From: lf{n}@origin.example\nSubject: LF only\nMessage-ID: <lf{n}@origin.example>\n\n.a dotted line\nlast line\n"
    )
    .into_bytes()
}

fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[test]
fn a_message_with_a_nul_byte_is_delivered_from_cyrus_and_blocks_nothing() {
    let cyrus = Cyrus::start();
    let smtp = SmtpReceiver::start(Some(&cyrus.pki));
    for n in 0..3 {
        cyrus.append("INBOX", &fixtures::simple(n));
    }
    // Cyrus answers BODY.PEEK[] for this one with a binary literal (~{n}); the ones after
    // it are in the same fetch batch.
    cyrus.spool(
        "INBOX",
        &[with_nul(1), fixtures::simple(10), fixtures::simple(11)],
    );
    let s = Setup::new();
    s.write(
        &destination(smtp.port, &cyrus.pki.ca_pem),
        &cyrus_account(&cyrus, "imap", cyrus.imaps_port, ""),
    );
    let run = s.once_ok();
    assert_summary!(run, "cyrus", fetched 6, delivered 6, skipped 0, failed 0);
    let got = smtp.messages();
    assert_eq!(got.len(), 6);
    assert!(
        got.iter().any(|m| m.raw == with_nul(1)),
        "the NUL message did not arrive byte-identical"
    );
    // Nothing left for the next run, nothing sent twice.
    let again = s.run(&["once"]);
    assert_summary!(again, "cyrus", fetched 0, delivered 0, skipped 0, failed 0);
    assert_eq!(smtp.messages().len(), 6);
}

#[test]
fn an_unreadable_reply_fails_its_message_only_and_no_error_quotes_message_content() {
    // Where Cyrus' binary literal used to end the session, a reply no parser knows still
    // does: the scriptable server sends one for UID 2, its body following.
    let smtp = SmtpReceiver::start(None);
    let messages: Vec<(u32, Vec<u8>)> =
        (1..=5).map(|u| (u, fixtures::simple(u as usize))).collect();
    let fake = FakeImap::start(ImapScript {
        messages,
        garbled: vec![2],
        ..ImapScript::default()
    });
    let s = Setup::new();
    s.write(
        &format!(
            "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nenvelope-to = [\"{RCPT}\"]\n",
            smtp.port
        ),
        &format!(
            "[[account]]\nname = \"odd\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"u\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\n",
            fake.port
        ),
    );
    let first = s.run(&["once"]);
    // The others arrive in the same run (a new session after the unreadable reply); the
    // unreadable one is deferred, rests, and is refused with a short excerpt once it has
    // failed 6 times over a day (aged here).
    let mut got: Vec<Vec<u8>> = smtp.messages().into_iter().map(|m| m.raw).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = [1, 3, 4, 5].iter().map(|&n| fixtures::simple(n)).collect();
    want.sort();
    assert!(got == want, "{first:?}");
    assert!(
        first.stdout.contains("deferred INBOX UID 2")
            && first
                .stdout
                .contains("the server's answer for this message cannot be read"),
        "{first:?}"
    );
    sqlite(
        &s.db(),
        "UPDATE ledger SET not_before = NULL, attempts = 5, first_seen = first_seen - 100000 WHERE state = 'deferred'",
    );
    let run = s.run(&["once"]);
    assert!(
        run.stdout.contains("refused INBOX UID 2")
            && run
                .stdout
                .contains("the server's answer for this message cannot be read"),
        "{run:?}"
    );
    let ledger = sqlite(&s.db(), "SELECT state, last_error FROM ledger ORDER BY uid");
    let runs = sqlite(&s.db(), "SELECT error FROM runs");
    for text in [
        &first.stdout,
        &first.stderr,
        &run.stdout,
        &run.stderr,
        &ledger,
        &runs,
    ] {
        assert!(
            !text.contains("Hello number 2") && !text.contains("sender2@origin.example"),
            "message content in an error: {text}"
        );
        assert!(text.len() < 20_000, "an error grew to {} bytes", text.len());
    }
    // Settled: the next run does not fetch it again.
    let again = s.run(&["once"]);
    assert_summary!(again, "odd", fetched 0, delivered 0, skipped 0, failed 0);
}

#[test]
fn pop3_from_cyrus_ends_lf_only_messages_and_reports_a_cut_one() {
    let cyrus = Cyrus::start();
    let smtp = SmtpReceiver::start(Some(&cyrus.pki));
    cyrus.append("INBOX", &fixtures::simple(1));
    // Over POP3 Cyrus serves the LF-only message as stored (ending `\n.\r\n`, its dotted
    // line stuffed) and cuts the NUL message short at the NUL.
    cyrus.spool("INBOX", &[lf_only(2), with_nul(3), fixtures::simple(4)]);
    let s = Setup::new();
    s.write(
        &destination(smtp.port, &cyrus.pki.ca_pem),
        &cyrus_account(&cyrus, "pop3", cyrus.pop3s_port, ""),
    );
    let started = std::time::Instant::now();
    let run = s.run(&["once"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "a message waited for the timeout: {run:?}"
    );
    assert_summary!(run, "cyrus", fetched 4, delivered 3, skipped 0, failed 1);
    assert!(
        run.stdout.contains("bytes of the") && run.stdout.contains("that LIST announced"),
        "{run:?}"
    );
    let got = smtp.messages();
    assert_eq!(got.len(), 3);
    // SMTP carries CRLF; the dotted line has its one dot.
    assert!(
        got.iter().any(|m| m.raw == crlf(&lf_only(2))),
        "{:?}",
        got.iter()
            .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(got.iter().all(|m| !m.raw.starts_with(b"From: nul3")));
    assert_eq!(
        sqlite(&s.db(), "SELECT state FROM ledger WHERE uidl LIKE '%.3'").trim(),
        "deferred"
    );
}

#[test]
fn a_move_target_missing_on_cyrus_names_the_folder_it_means_and_check_finds_it() {
    let cyrus = Cyrus::start();
    let smtp = SmtpReceiver::start(Some(&cyrus.pki));
    cyrus.create_folder("Archive");
    for n in 0..2 {
        cyrus.append("INBOX", &fixtures::simple(n));
    }
    let s = Setup::new();
    let dest = destination(smtp.port, &cyrus.pki.ca_pem);
    s.write(
        &dest,
        &cyrus_account(
            &cyrus,
            "imap",
            cyrus.imaps_port,
            "after-delivery = \"move:Archive\"",
        ),
    );
    let run = s.run(&["once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("\"Archive\"")
            && run.stdout.contains("separates folder levels with \".\"")
            && run
                .stdout
                .contains("did you mean after-delivery = \"move:INBOX.Archive\"?"),
        "{run:?}"
    );
    assert!(
        smtp.messages().is_empty(),
        "delivered before the policy could be applied"
    );
    let check = s.run(&["check", "cyrus"]);
    assert_ne!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("after-delivery") && check.stdout.contains("move:INBOX.Archive"),
        "{check:?}"
    );

    s.write(
        &dest,
        &cyrus_account(
            &cyrus,
            "imap",
            cyrus.imaps_port,
            "after-delivery = \"move:INBOX.Archive\"",
        ),
    );
    let check = s.run(&["check", "cyrus"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains("move:INBOX.Archive: the folder exists"),
        "{check:?}"
    );
    s.once_ok();
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(cyrus.count("INBOX"), 0);
    assert_eq!(cyrus.count("INBOX.Archive"), 2);
}

#[test]
fn the_odd_mail_set_passes_through_cyrus_over_imap_and_pop3_with_starttls() {
    let cyrus = Cyrus::start();
    let smtp = SmtpReceiver::start(Some(&cyrus.pki));
    // Cyrus refuses most of these at APPEND; a restored mailbox holds them anyway.
    let cases = crate::odd_mail::cases();
    cyrus.spool(
        "INBOX",
        &cases
            .iter()
            .map(|(_, stored, _)| stored.clone())
            .collect::<Vec<_>>(),
    );
    let s = Setup::new();
    let dest = destination(smtp.port, &cyrus.pki.ca_pem);
    let account = |protocol: &str, port: u16| {
        cyrus_account(&cyrus, protocol, port, "")
            .replace("tls = \"implicit\"", "tls = \"starttls\"")
    };
    s.write(&dest, &account("imap", cyrus.imap_port));
    let check = s.run(&["check", "cyrus"]);
    assert!(
        check
            .stdout
            .contains("tls: STARTTLS done; the certificate is valid for 127.0.0.1"),
        "{check:?}"
    );
    let run = s.once_ok();
    // Cyrus sends what it stores (the NUL too, in a binary literal); SMTP's own rules give
    // CRLF line ends and a final line break.
    let want = |name: &str, expected: &[u8], stored: &[u8]| -> Vec<u8> {
        if name == "nul" {
            stored.to_vec()
        } else {
            expected.to_vec()
        }
    };
    let got = smtp.messages();
    assert_eq!(got.len(), cases.len(), "{run:?}");
    for (name, stored, expected) in &cases {
        assert!(
            got.iter().any(|m| m.raw == want(name, expected, stored)),
            "IMAP, case {name}: not received as expected"
        );
    }

    // The same mailbox over POP3 (STLS) into a fresh state: all but the NUL one, which
    // Cyrus cuts short there, and which is reported instead.
    let pop = Setup::new();
    pop.write(&dest, &account("pop3", cyrus.pop3_port));
    let run = pop.run(&["once"]);
    assert_eq!(
        summary(&run, "cyrus"),
        format!(
            "cyrus: fetched {}, delivered {}, skipped 0, failed 1",
            cases.len(),
            cases.len() - 1
        ),
        "{run:?}"
    );
    let got = smtp.messages();
    for (name, _, expected) in cases.iter().filter(|(n, _, _)| *n != "nul") {
        assert_eq!(
            got.iter().filter(|m| m.raw == *expected).count(),
            2,
            "POP3, case {name}: not received as expected"
        );
    }
}
