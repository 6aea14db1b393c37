//! `push = "idle"`: new mail delivered within seconds over a held IMAP IDLE connection,
//! which is looked after (refresh, reconnect, login budget), against Dovecot and, for what
//! Dovecot cannot do (a silent drop, Outlook.com's BYE when a token expires), the fake
//! IMAP server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::{FakeImap, ImapScript, USER, fixtures};

use crate::util::{Bench, summary};

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The bench's account pushed (`extra` more account lines), polled only hourly: what
/// arrives within seconds came by push.
fn pushed_config(b: &Bench, extra: &str) {
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        + &format!("push = \"idle\"\ninterval = \"1h\"\n{extra}");
    b.write_config(&[account]);
}

/// `mailferry run`, its log in `run.log` beside the config.
fn spawn_run(config: &std::path::Path) -> Child {
    let log = std::fs::File::create(config.with_file_name("run.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(config)
        .env("MAILFERRY_LOG", "info,mailferry_engine=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn")
}

fn run_log(b: &Bench) -> String {
    std::fs::read_to_string(b.config_path().with_file_name("run.log")).unwrap_or_default()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// `status` text once a pushed folder shows `connected`.
fn wait_connected(b: &Bench) -> String {
    let started = Instant::now();
    loop {
        let text = b.run(&["status"]).stdout;
        if text.contains("push INBOX: connected") {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no push connection; status:\n{text}\nlog:\n{}",
            run_log(b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mail_appended_while_idling_is_delivered_within_seconds_and_status_shows_the_push() {
    let b = Bench::start();
    b.dovecot.add_message("INBOX", &fixtures::simple(0));
    pushed_config(&b, "");
    let config = std::fs::read_to_string(b.config_path()).expect("read");
    std::fs::write(
        b.config_path(),
        config.replace("[daemon]\n", "[daemon]\nmetrics-listen = \"127.0.0.1:0\"\n"),
    )
    .expect("write");
    let child = spawn_run(&b.config_path());
    // The first pass delivers what is there; then the connection idles.
    wait_for("the first message", Duration::from_secs(20), || {
        b.smtp.messages().len() == 1
    });
    wait_connected(&b);
    for n in 1..=3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
        let took = wait_for("pushed mail", Duration::from_secs(15), || {
            b.smtp.messages().len() == 1 + n
        });
        assert!(
            took < Duration::from_secs(5),
            "message {n} took {took:?} (polling is hourly: only push can be this fast)"
        );
    }
    let status = b.run(&["status"]).stdout;
    assert!(
        status.contains("push INBOX: connected")
            && status.contains("last new mail")
            && status.contains("after the announcement")
            && status.contains("1 logins in 24 h"),
        "{status}"
    );
    let json = b.run(&["status", "--json"]).stdout;
    assert!(json.contains("\"last_latency_ms\""), "{json}");
    let log = run_log(&b);
    let port: u16 = log
        .lines()
        .filter(|l| l.contains("serving /metrics"))
        .find_map(|l| {
            l.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let (code, metrics) = mailferry_testkit::http_request(port, "GET", "/metrics");
    assert_eq!(code, 200);
    for line in [
        "mailferry_push_connected{account=\"src\",folder=\"INBOX\"} 1",
        "mailferry_push_logins_24h{account=\"src\",folder=\"INBOX\"} 1",
        "mailferry_push_last_latency_seconds{account=\"src\",folder=\"INBOX\"} ",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    stop(child);
    assert_eq!(b.smtp.messages().len(), 4);
}

#[test]
fn a_kicked_connection_comes_back_and_mail_added_meanwhile_arrives_once() {
    let b = Bench::start();
    pushed_config(&b, "");
    let child = spawn_run(&b.config_path());
    wait_connected(&b);
    b.dovecot.kick(USER);
    // Added while the connection is gone (or just coming back).
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    wait_for("mail after the kick", Duration::from_secs(15), || {
        b.smtp.messages().len() == 1
    });
    let status = wait_connected(&b);
    assert!(status.contains("2 logins in 24 h"), "{status}");
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    wait_for(
        "pushed mail after the reconnect",
        Duration::from_secs(5),
        || b.smtp.messages().len() == 2,
    );
    stop(child);
    assert_eq!(b.smtp.messages().len(), 2, "delivered twice");
}

#[test]
fn a_flood_of_1000_appends_while_idling_is_delivered_exactly_once() {
    let b = Bench::start();
    pushed_config(&b, "");
    let child = spawn_run(&b.config_path());
    wait_connected(&b);
    for n in 0..1000 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    wait_for("1000 pushed messages", Duration::from_secs(120), || {
        b.smtp.messages().len() >= 1000
    });
    std::thread::sleep(Duration::from_millis(500));
    stop(child);
    let got = b.smtp.messages();
    assert_eq!(got.len(), 1000);
    let mut ids: Vec<&Vec<u8>> = got.iter().map(|m| &m.raw).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "a message was delivered twice");
    assert_eq!(b.ledger_states(), [("delivered".to_owned(), 1000)]);
}

/// The fake server as the pushed account's source; `interval` of the poll.
fn fake_config(b: &Bench, fake: &FakeImap, interval: &str, extra: &str) {
    let account = format!(
        "[[account]]\nname = \"odd\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"src.pass\" }}\ndestination = \"home\"\npush = \"idle\"\ninterval = \"{interval}\"\n{extra}",
        fake.port
    );
    b.write_config(&[account]);
    let config = std::fs::read_to_string(b.config_path()).expect("read");
    std::fs::write(
        b.config_path(),
        config.replace(
            "[daemon]\n",
            "[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\n",
        ),
    )
    .expect("write");
}

fn logins(fake: &FakeImap) -> usize {
    fake.log()
        .commands
        .iter()
        .filter(|c| c.to_ascii_uppercase().contains(" LOGIN "))
        .count()
}

#[test]
fn a_server_without_idle_is_polled_and_status_says_so() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: vec![(1, fixtures::simple(1))],
        ..ImapScript::default()
    });
    fake_config(&b, &fake, "2s", "");
    let child = spawn_run(&b.config_path());
    wait_for("the polled message", Duration::from_secs(20), || {
        b.smtp.messages().len() == 1
    });
    let mut status = String::new();
    wait_for("status", Duration::from_secs(10), || {
        status = b.run(&["status"]).stdout;
        status.contains("push INBOX: the server offers no IDLE; polled every interval")
    });
    fake.script(|s| s.messages.push((2, fixtures::simple(2))));
    wait_for("the next poll", Duration::from_secs(20), || {
        b.smtp.messages().len() == 2
    });
    stop(child);
}

#[test]
fn a_bye_for_an_expired_token_reconnects_at_once_and_the_login_budget_holds() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: vec![(1, fixtures::simple(1))],
        idle: true,
        idle_bye: Some("Session invalidated - AccessTokenExpired".into()),
        ..ImapScript::default()
    });
    fake_config(&b, &fake, "1h", "");
    let child = spawn_run(&b.config_path());
    // Each session ends 300 ms into its IDLE; the next opens at once (no backoff), until
    // the budget of 12 logins an hour is spent; then nothing.
    wait_for("twelve logins", Duration::from_secs(20), || {
        logins(&fake) >= 12
    });
    std::thread::sleep(Duration::from_secs(3));
    // The poll logs in too (once, at start, hourly after that).
    let total = logins(&fake);
    assert!(total <= 12 + 1, "{total} logins: the budget did not hold");
    let status = b.run(&["status"]).stdout;
    assert!(status.contains("login budget"), "{status}");
    stop(child);
    assert_eq!(b.smtp.messages().len(), 1, "delivered more than once");
}

#[test]
fn a_silently_dropped_connection_is_noticed_by_the_refresh_and_replaced() {
    let b = Bench::start();
    let fake = FakeImap::start(ImapScript {
        messages: vec![(1, fixtures::simple(1))],
        idle: true,
        idle_silent: true,
        ..ImapScript::default()
    });
    // Refresh every 2 s; the DONE goes unanswered, io-timeout 30 s... shortened here.
    fake_config(&b, &fake, "1h", "idle-refresh = \"2s\"\n");
    let config = std::fs::read_to_string(b.config_path()).expect("read");
    std::fs::write(
        b.config_path(),
        config.replace("io-timeout = \"30s\"", "io-timeout = \"2s\""),
    )
    .expect("write");
    let child = spawn_run(&b.config_path());
    let push_logins = |fake: &FakeImap| {
        // The poll's login is followed by a FETCH; the push ones by IDLE.
        fake.log()
            .commands
            .iter()
            .filter(|c| c.to_ascii_uppercase().ends_with(" IDLE"))
            .count()
    };
    let took = wait_for("a second IDLE connection", Duration::from_secs(20), || {
        push_logins(&fake) >= 2
    });
    // Noticed within refresh + io-timeout (+ the reconnect's second).
    assert!(took < Duration::from_secs(10), "{took:?}");
    stop(child);
}

#[test]
fn push_on_pop3_is_a_configuration_error_that_says_why() {
    let b = Bench::start();
    let account = b.pop3_account(
        "pop",
        b.dovecot.pop3s_port,
        "implicit",
        r#"{ method = "password", password-file = "src.pass" }"#,
        "push = \"idle\"\n",
    );
    b.write_config(&[account]);
    let run = b.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("account[0].push") || run.stdout.contains("account[0].push"),
        "{run:?}"
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("POP3 has no push"),
        "{run:?}"
    );
    let _ = summary;
}

#[test]
fn an_oauth2_push_connection_kicked_after_its_token_expired_comes_back_with_a_fresh_one() {
    let b = Bench::start();
    // Access tokens say they live 0 s (really 10 s): every login needs a fresh one.
    b.dovecot.idp.set("access_ttl", "10");
    b.dovecot.idp.set("declared_ttl", "0");
    let account =
        crate::oauth::oauth_account(&b, "src", "") + "push = \"idle\"\ninterval = \"1h\"\n";
    b.write_config(&[account]);
    assert_eq!(crate::oauth::sign_in_by_device(&b, "src").code, 0);
    let child = spawn_run(&b.config_path());
    wait_connected(&b);
    let before = crate::oauth::count(&b, "refreshes");
    // The session outlives its token (Dovecot checks tokens at login only); then it ends.
    std::thread::sleep(Duration::from_secs(11));
    b.dovecot.kick(USER);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    wait_for(
        "mail over the new connection",
        Duration::from_secs(20),
        || b.smtp.messages().len() == 1,
    );
    assert!(
        crate::oauth::count(&b, "refreshes") > before,
        "the new connection logged in without refreshing the expired token"
    );
    let status = wait_connected(&b);
    assert!(status.contains("push INBOX: connected"), "{status}");
    stop(child);
}

/// The README's order: start the service, then `mailferry auth`. Until the SMTP
/// destination's OAuth2 sign-in exists, building the delivery fails at once; a pushed
/// folder must then wait like a failed poll (backing off up to the interval), not go
/// EXAMINE, fail, EXAMINE in a loop that fills the log and the state database.
#[test]
fn a_pushed_folder_whose_destination_cannot_be_built_waits_instead_of_spinning() {
    let b = Bench::start();
    let idp = &b.dovecot.idp;
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let destination = b.smtp_destination("home", b.smtp.port)
        + &format!(
            "username = \"{USER}\"\nauth = {{ method = \"oauth2\", provider = \"custom\", client-id = \"mailferry-test-client\", token-url = \"{}\", device-url = \"{}\", authorize-url = \"{}\", scopes = [\"smtp\", \"offline_access\"] }}\n",
            idp.url("/token"),
            idp.url("/devicecode"),
            idp.url("/authorize"),
        );
    let account = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")
        + "push = \"idle\"\ninterval = \"1h\"\n";
    b.write_raw(&destination, &[account]);
    let child = spawn_run(&b.config_path());
    wait_for("the push connection", Duration::from_secs(30), || {
        run_log(&b).contains("watching with IDLE")
    });
    std::thread::sleep(Duration::from_secs(6));
    let log = run_log(&b);
    let db = b.state_dir().join("mailferry.db");
    let runs: i64 = crate::util::sqlite(&db, "SELECT COUNT(*) FROM runs")
        .trim()
        .parse()
        .expect("count");
    stop(child);
    let failed_passes = log.matches("pushed mail could not be delivered").count();
    // The first pass fails; the next waits at least the first backoff. On the code that
    // spun, thousands of passes a minute.
    assert!(
        (1..=3).contains(&failed_passes),
        "{failed_passes} failed passes in 6 s:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(runs <= 5, "{runs} runs recorded in 6 s");
    assert!(b.smtp.messages().is_empty());
}

/// Providers limit connections per mailbox (Outlook.com and Gmail: about 15-20 each), not
/// per host: 25 accounts on one host, all pushed, all get their IDLE connection (with a
/// per-host limit of 20 for all accounts together, six never did).
#[test]
fn twenty_five_pushed_accounts_on_one_host_all_connect() {
    let b = Bench::start();
    let accounts: Vec<String> = (0..25)
        .map(|n| {
            b.account(
                &format!("a{n}"),
                b.dovecot.imaps_port,
                "implicit",
                "src.pass",
            ) + "push = \"idle\"\ninterval = \"1h\"\n"
        })
        .collect();
    b.write_config(&accounts);
    let child = spawn_run(&b.config_path());
    let mut connected = 0;
    let took = wait_for("25 push connections", Duration::from_secs(90), || {
        connected = b
            .run(&["status"])
            .stdout
            .matches("push INBOX: connected")
            .count();
        connected == 25
    });
    stop(child);
    assert_eq!(connected, 25, "{}", run_log(&b));
    eprintln!("25 pushed accounts connected in {took:?}");
}
