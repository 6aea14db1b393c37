//! `mailferry check`: each account's way in, step by step, against the real Dovecot.

use mailferry_testkit::fixtures;

use crate::util::Bench;

#[test]
fn check_names_the_failing_step_for_each_account() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("wrong.pass"), "not the password\n").expect("write");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    b.dovecot
        .disable_service("pop3", "POP_access_is_disabled_for_this_account");
    b.write_config(&[
        b.account("good", b.dovecot.imaps_port, "implicit", "src.pass"),
        b.account("wrongpw", b.dovecot.imaps_port, "implicit", "wrong.pass"),
        b.account("closed", closed, "implicit", "src.pass"),
        b.pop3_account(
            "nopop",
            b.dovecot.pop3s_port,
            "implicit",
            r#"{ method = "password", password-file = "src.pass" }"#,
            "",
        ),
    ]);

    let run = b.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    // The indented lines under "NAME:".
    let section = |name: &str| -> String {
        let header = format!("{name}:");
        run.stdout
            .lines()
            .skip_while(|l| *l != header)
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect()
    };

    let good = section("good");
    for line in [
        "  ok    dns: 127.0.0.1 -> 127.0.0.1",
        "  ok    tcp: connected to 127.0.0.1:",
        "  ok    tls: handshake done; the certificate is valid for 127.0.0.1",
        "  ok    login: logged in as alice@test.example",
        "  ok    folder INBOX: 1 messages",
    ] {
        assert!(good.contains(line), "{line}\n{good}");
    }
    assert!(
        good.contains("  ok    capabilities: ") && good.contains("IDLE"),
        "{good}"
    );
    assert!(!good.contains("FAIL"), "{good}");

    let wrong = section("wrongpw");
    assert!(
        wrong.contains("  FAIL  login: the server refused the login"),
        "{wrong}"
    );
    assert!(
        wrong.contains("hint: check the user name and the password file"),
        "{wrong}"
    );
    assert!(
        !run.stdout.contains("not the password"),
        "the password leaked"
    );

    let closed = section("closed");
    assert!(
        closed.contains("  FAIL  tcp: cannot connect to 127.0.0.1:"),
        "{closed}"
    );
    assert!(closed.contains("hint: check host and port"), "{closed}");
    assert!(!closed.contains("login"), "{closed}");

    let nopop = section("nopop");
    assert!(nopop.contains("  ok    tls:"), "{nopop}");
    assert!(
        nopop.contains("  FAIL  login: the server refused the login")
            && nopop.contains("POP_access_is_disabled_for_this_account"),
        "{nopop}"
    );

    let one = b.run(&["check", "good"]);
    assert_eq!(one.code, 0, "{one:?}");
    assert!(!one.stdout.contains("wrongpw"), "{one:?}");
}

#[test]
fn check_walks_the_way_out_and_finds_a_refused_envelope() {
    let b = Bench::start();
    let strict = mailferry_testkit::SmtpReceiver::start_with_policy(
        &b.dovecot.pki,
        &[crate::util::RCPT],
        None,
    );
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    b.write_raw(
        &b.smtp_destination("home", strict.port),
        std::slice::from_ref(&account),
    );
    let good = b.run(&["check", "src"]);
    assert_eq!(good.code, 0, "{good:?}");
    assert!(good.stdout.contains("destination home:"), "{good:?}");
    assert!(
        good.stdout
            .contains("ok    envelope: MAIL FROM and RCPT TO accepted"),
        "{good:?}"
    );

    let typo = b
        .smtp_destination("home", strict.port)
        .replace(crate::util::RCPT, "gathred@home.example");
    b.write_raw(&typo, &[account]);
    let bad = b.run(&["check", "home"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("FAIL  probe:"), "{bad:?}");
    assert!(bad.stdout.contains("(550): 5.1.1"), "{bad:?}");
    assert!(
        bad.stdout
            .contains("check envelope-to of the destination home"),
        "{bad:?}"
    );
    assert!(strict.messages().is_empty(), "check sent a message");
}
