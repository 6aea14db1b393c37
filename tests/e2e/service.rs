//! `mailferry run`: polls on its timer, picks up new mail, stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::{USER, fixtures};

use crate::util::Bench;

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn service_picks_up_new_mail_on_its_next_tick_and_stops_on_sigterm() {
    let b = Bench::start();
    // A deliberately short interval for the test; the default floor is 10 minutes.
    let config = std::fs::read_to_string(b.config_path()).expect("read config");
    let config = config
        .replace(
            "[daemon]\n",
            "[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\n",
        )
        .replace(
            "destination = \"home\"\n",
            "destination = \"home\"\ninterval = \"1s\"\n",
        );
    std::fs::write(b.config_path(), config).expect("write config");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));

    let child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for("the first message", Duration::from_secs(20), || {
        b.smtp.messages().len() == 1
    });
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    wait_for("the second message", Duration::from_secs(20), || {
        b.smtp.messages().len() == 2
    });

    let stopped = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "exit status {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        stopped.elapsed()
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("mailferry stopped"), "{log}");
    assert_eq!(b.smtp.messages().len(), 2);
    assert_eq!(b.smtp.messages()[1].raw, fixtures::simple(2));
}

/// Rewrites the bench's config for a 1-second schedule (with the explicit override) and
/// optional `[daemon]` lines.
fn short_schedule(b: &Bench, daemon_extra: &str) {
    let config = std::fs::read_to_string(b.config_path()).expect("read config");
    let config = config
        .replace(
            "[daemon]\n",
            &format!(
                "[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\n{daemon_extra}"
            ),
        )
        .replace(
            "destination = \"home\"\n",
            "destination = \"home\"\ninterval = \"1s\"\n",
        );
    std::fs::write(b.config_path(), config).expect("write config");
}

fn spawn_run(b: &Bench) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// `mailferry run` with its log in `service.log` (read with [`service_log`]).
fn spawn_logged(b: &Bench) -> std::process::Child {
    let log = std::fs::File::create(b.dir.path().join("service.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn")
}

/// The Message-ID lines of what the SMTP receiver got, in arrival order.
fn received_message_ids(b: &Bench) -> Vec<String> {
    b.smtp
        .messages()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.raw)
                .lines()
                .find(|l| l.starts_with("Message-ID"))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn service_log(b: &Bench) -> String {
    std::fs::read_to_string(b.dir.path().join("service.log")).unwrap_or_default()
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn sighup_adds_an_account_without_a_restart_and_status_shows_both() {
    let b = Bench::start();
    short_schedule(&b, "");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let child = spawn_run(&b);
    wait_for(
        "the first account's message",
        Duration::from_secs(20),
        || b.smtp.messages().len() == 1,
    );

    // A second account on the same mailbox over POP3: it finds the same message anew.
    let config = std::fs::read_to_string(b.config_path()).expect("read");
    let pop = b.pop3_account(
        "second",
        b.dovecot.pop3s_port,
        "implicit",
        r#"{ method = "password", password-file = "src.pass" }"#,
        "interval = \"1s\"",
    );
    std::fs::write(b.config_path(), config + &pop).expect("write");
    signal(&child, "HUP");
    wait_for(
        "the added account's message",
        Duration::from_secs(20),
        || b.smtp.messages().len() == 2,
    );

    let status = b.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let src = crate::util::summary(&status, "src");
    assert!(src.starts_with("src: ok, last success "), "{status:?}");
    assert!(status.stdout.contains("second: ok"), "{status:?}");
    assert!(
        status
            .stdout
            .contains("  delivered 1 (1 in the last 24 h), 0 deferred, 0 refused"),
        "{status:?}"
    );
    let json = b.run(&["status", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    let accounts = v.as_array().expect("array");
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["account"], "src");
    assert_eq!(accounts[0]["state"], "ok");
    assert_eq!(accounts[0]["delivered_total"], 1);
    assert!(accounts[0]["next_run"].as_i64().is_some());
    assert_eq!(accounts[1]["account"], "second");

    signal(&child, "TERM");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn metrics_parse_as_prometheus_text_and_healthz_and_status_health_report_a_parked_account() {
    let b = Bench::start();
    // Port 0: the service binds a free port itself and logs it.
    short_schedule(&b, "metrics-listen = \"127.0.0.1:0\"\n");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let mut child = spawn_run(&b);
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        // Keeps reading, so that the service never blocks on a full pipe.
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line
                .split("addr=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
                && line.contains("serving /metrics")
            {
                let _ = tx.send(addr);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the service logs the metrics address");
    // The counters change when the run is recorded, just after the message arrives.
    wait_for("the run in /metrics", Duration::from_secs(20), || {
        mailferry_testkit::http_request(port, "GET", "/metrics")
            .1
            .contains("mailferry_runs_total{account=\"src\",result=\"ok\"} 1")
    });
    let (code, text) = mailferry_testkit::http_request(port, "GET", "/metrics");
    assert_eq!(code, 200, "{text}");
    check_prometheus_text(&text);
    assert!(
        text.contains("mailferry_messages_delivered_total{account=\"src\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mailferry_last_success_timestamp_seconds{account=\"src\"} "),
        "{text}"
    );
    let (code, body) = mailferry_testkit::http_request(port, "GET", "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // The container health check says the same, from the state database.
    let health = b.run(&["status", "--health"]);
    assert_eq!(
        (health.code, health.stdout.as_str()),
        (0, "healthy\n"),
        "{health:?}"
    );

    // A wrong password parks the account: /healthz fails and names it.
    std::fs::write(b.dir.path().join("src.pass"), "wrong\n").expect("write");
    signal(&child, "HUP");
    wait_for("/healthz to fail", Duration::from_secs(30), || {
        mailferry_testkit::http_request(port, "GET", "/healthz").0 == 503
    });
    let (_, body) = mailferry_testkit::http_request(port, "GET", "/healthz");
    assert!(body.contains("src: parked: needs auth"), "{body}");
    let health = b.run(&["status", "--health"]);
    assert_eq!(health.code, 1, "{health:?}");
    assert!(
        health.stdout.contains("unhealthy: src: parked: needs auth"),
        "{health:?}"
    );
    // The password file is not read by `status`: removing it changes nothing.
    std::fs::remove_file(b.dir.path().join("src.pass")).expect("remove");
    assert_eq!(b.run(&["status", "--health"]).code, 1);
    signal(&child, "TERM");
    let _ = child.wait_with_output();
}

/// Checks the Prometheus text exposition format (0.0.4) line by line.
fn check_prometheus_text(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("name");
            let kind = parts.next().expect("type");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let base = name.trim_end_matches("_sum").trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(base),
            "no TYPE for {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
    }
}

#[test]
fn sigterm_in_the_middle_of_a_1000_message_import_then_restart_loses_and_doubles_nothing() {
    let b = Bench::start();
    short_schedule(&b, "");
    for n in 0..1000 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let child = spawn_run(&b);
    wait_for(
        "the import to be under way",
        Duration::from_secs(60),
        || b.smtp.messages().len() >= 200,
    );
    let stopped = Instant::now();
    signal(&child, "TERM");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopped.elapsed()
    );
    let at_stop = b.smtp.messages().len();
    assert!(
        at_stop < 1000,
        "the import finished before SIGTERM; nothing was tested"
    );
    // Every message that arrived is recorded; nothing is left "attempted".
    assert_eq!(
        b.ledger_states(),
        [(
            "delivered".to_owned(),
            i64::try_from(at_stop).expect("fits")
        )]
    );

    let child = spawn_run(&b);
    wait_for("the rest of the import", Duration::from_secs(120), || {
        b.smtp.messages().len() >= 1000
    });
    signal(&child, "TERM");
    let _ = child.wait_with_output();
    let mut ids = received_message_ids(&b);
    assert_eq!(ids.len(), 1000, "a message arrived twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "a message arrived twice");
}

#[test]
fn the_systemd_unit_verifies_and_scores_as_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mailferry.service"),
    )
    .expect("read the unit");
    assert!(
        unit.contains("Type=notify"),
        "the unit must wait for READY=1"
    );
    // verify checks that the binaries and the man page exist: point it at the binary just
    // built; the man page is checked where the package installed it (tests/e2e/systemd.rs
    // runs verify on the installed unit too).
    let unit = unit
        .replace("/usr/bin/mailferry", env!("CARGO_BIN_EXE_mailferry"))
        .replace("man:mailferry(1) ", "");
    let path = dir.path().join("mailferry.service");
    std::fs::write(&path, unit).expect("write");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{said}");
    assert!(
        !said.contains("mailferry.service:"),
        "systemd-analyze verify complained: {said}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for mailferry.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score: {text}"));
    assert!(
        score <= 2.0,
        "exposure {score} (README promises 1.2): {text}"
    );
}

#[test]
fn the_service_tells_systemd_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let b = Bench::start();
    short_schedule(&b, "");
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let socket_path = b.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["run", "--config"])
        .arg(b.config_path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen
        .iter()
        .any(|m: &String| m.starts_with("STATUS=1/1 accounts ok"))
    {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; seen {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        seen[0].starts_with("READY=1") || seen[1].starts_with("READY=1"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    signal(&child, "TERM");
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; seen {seen:?}"));
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m == "STOPPING=1" {
            break;
        }
    }
    let _ = child.wait_with_output();
}

#[test]
fn log_json_writes_one_json_object_per_line_without_secrets() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("src.pass"), "hunter2-wrong\n").expect("write");
    let run = b.run(&["--log-json", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "{run:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("run ended early")),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("hunter2"),
        "the password leaked: {run:?}"
    );
}

/// Notices into the receiver would count as mail in these tests: off.
fn no_notices_into_the_receiver(b: &Bench) {
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config + "\n[notify]\nin-destination = false\n",
    )
    .expect("config");
}

#[test]
fn a_new_sign_in_and_run_now_make_the_service_run_an_account_at_once() {
    let b = Bench::start();
    // The default schedule: ten minutes between runs, so nothing below is the timer.
    b.write_config(&[crate::oauth::oauth_account(&b, "src", "")]);
    no_notices_into_the_receiver(&b);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let mut child = spawn_logged(&b);
    let service_log = || service_log(&b);
    // Never signed in: parked at the first run (which the service logs).
    wait_for("the account's first run", Duration::from_secs(30), || {
        service_log().contains("run finished")
    });
    assert!(
        b.run(&["status"])
            .stdout
            .contains("src: parked: needs auth")
    );

    // Signing in wakes the service: the account runs within seconds, not in ten minutes,
    // and `auth` says how that run went (so it has ended when `auth` returns).
    let signed = Instant::now();
    let auth = crate::oauth::sign_in_by_device(&b, "src");
    assert_eq!(auth.code, 0, "{auth:?}");
    assert!(
        auth.stdout.contains("The service runs src now...")
            && auth
                .stdout
                .contains("src: ran: 1 delivered, 0 already there, 0 failed."),
        "{auth:?}"
    );
    assert_eq!(b.smtp.messages().len(), 1);
    assert!(signed.elapsed() < Duration::from_secs(30));
    let status = b.run(&["status"]);
    assert!(status.stdout.starts_with("src: ok"), "{status:?}");

    // New mail, and `run-now` instead of waiting for the interval: it returns once the
    // run has ended, and says how it went.
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    let now = b.run(&["run-now", "src"]);
    assert_eq!(now.code, 0, "{now:?}");
    assert!(
        now.stdout
            .contains("src: ran: 1 delivered, 0 already there, 0 failed."),
        "{now:?}"
    );
    assert_eq!(b.smtp.messages().len(), 2);
    // `once` beside the service points at run-now.
    let once = b.run(&["once"]);
    assert_eq!(once.code, 1, "{once:?}");
    assert!(once.stderr.contains("mailferry run-now"), "{once:?}");

    signal(&child, "TERM");
    let _ = child.wait();
    assert!(
        service_log().contains("asked to run now"),
        "{}",
        service_log()
    );
    // Without the service, run-now says so.
    let alone = b.run(&["run-now"]);
    assert_eq!(alone.code, 1, "{alone:?}");
    assert!(
        alone.stderr.contains("the service is not running"),
        "{alone:?}"
    );
    let _ = child.kill();
}

#[test]
fn a_sign_in_as_the_wrong_mailbox_is_caught_by_the_run_auth_waits_for() {
    let b = Bench::start();
    b.write_config(&[crate::oauth::oauth_account(&b, "src", "")]);
    no_notices_into_the_receiver(&b);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let mut child = spawn_logged(&b);
    wait_for("the account's first run", Duration::from_secs(30), || {
        service_log(&b).contains("run finished")
    });

    // The sign-in itself succeeds (the IdP issues tokens for bob), but the mailbox is
    // alice's: the server refuses them. `auth` reports that run, and exits 1.
    let auth = crate::oauth::sign_in_by_device_as(&b, "src", "bob@test.example");
    assert_eq!(auth.code, 1, "{auth:?}");
    assert!(
        auth.stdout.contains("you signed in as bob@test.example"),
        "{auth:?}"
    );
    assert!(
        auth.stdout.contains("src: the run failed: ")
            && auth.stdout.contains("`mailferry status` says what to do"),
        "{auth:?}"
    );
    assert!(b.smtp.messages().is_empty());
    // In the server's words, not a Debug rendering of them.
    assert!(
        auth.stdout.contains(
            "src: the run failed: the server refused the login: [AUTHENTICATIONFAILED] Authentication failed."
        ),
        "{auth:?}"
    );

    signal(&child, "TERM");
    let _ = child.wait();
    let _ = child.kill();
}

#[test]
fn a_revoked_sign_in_gets_one_notice_and_one_webhook_call_and_one_more_on_recovery() {
    let b = Bench::start();
    let hook = mailferry_testkit::HttpSink::start();
    let account = crate::oauth::oauth_account(&b, "src", "");
    b.write_config(&[account]);
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    // Runs every second (the override), so that the account is parked run after run.
    let config = config
        .replace(
            "[daemon]\n",
            "[daemon]\nmin-interval = \"1s\"\nallow-short-intervals = true\n",
        )
        .replace(
            "destination = \"home\"\n",
            "destination = \"home\"\ninterval = \"1s\"\n",
        )
        + &format!(
            "\n[notify]\nwebhook = \"{}\"\nping-url = \"{}\"\n",
            hook.url("/hook"),
            hook.url("/ping")
        );
    std::fs::write(b.config_path(), config).expect("config");
    assert_eq!(crate::oauth::sign_in_by_device(&b, "src").code, 0);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let mut child = spawn_logged(&b);
    wait_for("the first delivery", Duration::from_secs(20), || {
        b.smtp.messages().len() == 1
    });
    let hooks = |hook: &mailferry_testkit::HttpSink| -> Vec<String> {
        hook.requests()
            .into_iter()
            .filter(|r| r.path == "/hook")
            .map(|r| r.body)
            .collect()
    };
    assert!(hooks(&hook).is_empty(), "a notice while all is well");
    wait_for("a ping after a good run", Duration::from_secs(10), || {
        hook.requests().iter().any(|r| r.path == "/ping")
    });

    // The sign-in dies: parked, and told exactly once, however many runs follow.
    b.dovecot.idp.set("declared_ttl", "0");
    b.dovecot.idp.revoke(USER);
    wait_for("the webhook notice", Duration::from_secs(30), || {
        hooks(&hook).len() == 1
    });
    std::thread::sleep(Duration::from_secs(4));
    let notices = |b: &Bench| -> Vec<String> {
        b.smtp
            .messages()
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
            .filter(|m| m.contains("Auto-Submitted: auto-generated"))
            .collect()
    };
    assert_eq!(hooks(&hook).len(), 1, "{:?}", hooks(&hook));
    assert_eq!(notices(&b).len(), 1, "{:?}", notices(&b));
    let notice = &notices(&b)[0];
    assert!(
        notice.contains("Subject: mailferry: src needs a new sign-in"),
        "{notice}"
    );
    assert!(notice.contains("mailferry auth src"), "{notice}");
    let v: serde_json::Value = serde_json::from_str(&hooks(&hook)[0]).expect("json");
    assert_eq!(v["event"], "parked");
    assert_eq!(v["account"], "src");

    // Signed in again: one recovery notice, one more webhook call.
    b.dovecot.idp.set("declared_ttl", "3600");
    assert_eq!(crate::oauth::sign_in_by_device(&b, "src").code, 0);
    wait_for("the recovery notice", Duration::from_secs(30), || {
        hooks(&hook).len() == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks(&hook).len(), 2);
    let v: serde_json::Value = serde_json::from_str(&hooks(&hook)[1]).expect("json");
    assert_eq!(v["event"], "recovered");
    assert_eq!(notices(&b).len(), 2);
    assert!(notices(&b)[1].contains("Subject: mailferry: src works again"));

    signal(&child, "TERM");
    let _ = child.wait();
    let _ = child.kill();
}

#[test]
fn run_now_after_a_password_fix_uses_the_new_password_and_says_how_the_run_went() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("src.pass"), "not-the-password\n").expect("password");
    let off = b.account("off", b.dovecot.imaps_port, "implicit", "src.pass") + "enabled = false\n";
    b.write_config(&[
        b.account("src", b.dovecot.imaps_port, "implicit", "src.pass"),
        off,
    ]);
    no_notices_into_the_receiver(&b);
    b.dovecot.add_message("INBOX", &fixtures::simple(1));
    let mut child = spawn_logged(&b);
    wait_for("the account's first run", Duration::from_secs(30), || {
        service_log(&b).contains("run finished")
    });

    // The wrong password: run-now waits for the run, says why it failed, and exits 1.
    let refused = b.run(&["run-now", "src"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stdout
            .contains("src: the run failed: the server refused the login")
            && refused
                .stdout
                .contains("`mailferry status` says what to do"),
        "{refused:?}"
    );
    assert!(b.smtp.messages().is_empty());

    // The fix is the password file and one command: no restart, no reload. The service
    // reads the changed file before it runs.
    std::fs::write(
        b.dir.path().join("src.pass"),
        format!("{}\n", mailferry_testkit::PASSWORD),
    )
    .expect("password");
    let fixed = b.run(&["run-now"]);
    assert_eq!(fixed.code, 0, "{fixed:?}");
    assert!(
        fixed
            .stdout
            .contains("src: ran: 1 delivered, 0 already there, 0 failed."),
        "{fixed:?}"
    );
    assert!(
        !fixed.stdout.contains("off:"),
        "a disabled account ran: {fixed:?}"
    );
    assert_eq!(b.smtp.messages().len(), 1);
    assert_eq!(b.smtp.messages()[0].raw, fixtures::simple(1));
    assert!(
        service_log(&b).contains("the configuration changed on disk; reloading it"),
        "{}",
        service_log(&b)
    );

    // Nothing changed on disk: the accounts run without a reload; --no-wait returns at once.
    b.dovecot.add_message("INBOX", &fixtures::simple(2));
    let quick = b.run(&["run-now", "--no-wait", "src"]);
    assert_eq!(quick.code, 0, "{quick:?}");
    assert!(
        quick
            .stdout
            .contains("`mailferry status` shows how it went")
            && !quick.stdout.contains("src: ran:"),
        "{quick:?}"
    );
    wait_for("the --no-wait run", Duration::from_secs(20), || {
        b.smtp.messages().len() == 2
    });
    assert_eq!(
        service_log(&b).matches("configuration reloaded").count(),
        1,
        "{}",
        service_log(&b)
    );

    // A fix the service cannot use: the configuration names a password file that is not
    // there. `run-now` reads no secrets and asks; the service cannot use the file, keeps
    // the configuration it has, and `run-now` and `status` say so.
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    std::fs::write(
        b.config_path(),
        config.replace(
            "password-file = \"src.pass\"",
            "password-file = \"renamed.pass\"",
        ),
    )
    .expect("config");
    let unusable = b.run(&["run-now", "src"]);
    assert_eq!(unusable.code, 1, "{unusable:?}");
    assert!(
        unusable.stdout.contains("src: ran: 0 delivered")
            && unusable.stdout.contains(
                "The service could not use the configuration as it is now, so it ran with the one it had:"
            )
            && unusable.stdout.contains("renamed.pass"),
        "{unusable:?}"
    );
    let status = b.run(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(
        status
            .stdout
            .contains("service: still runs the configuration it read before")
            && status.stdout.contains("renamed.pass"),
        "{status:?}"
    );

    // A disabled account is named as such, not waited for.
    let disabled = b.run(&["run-now", "off"]);
    assert_eq!(disabled.code, 2, "{disabled:?}");
    assert!(
        disabled
            .stderr
            .contains("account \"off\" is disabled (enabled = false)"),
        "{disabled:?}"
    );

    signal(&child, "TERM");
    let _ = child.wait();
    let _ = child.kill();
}

/// Webhook and ping URLs are credentials (a Slack or Discord webhook path, an ntfy topic,
/// a healthchecks.io UUID): when they fail, the log names their host only.
#[test]
fn failing_webhook_and_ping_urls_are_never_printed() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("wrong.pass"), "not-the-password\n").expect("pass");
    let good = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    let bad = b.account("bad", b.dovecot.imaps_port, "implicit", "wrong.pass");
    b.write_config(&[good, bad]);
    short_schedule(&b, "");
    // Nothing listens on port 1: both fail to connect.
    let config = std::fs::read_to_string(b.config_path()).expect("config")
        + "\n[notify]\nin-destination = false\nnotify-after = 1\n\
           webhook = \"http://127.0.0.1:1/services/T0SECRET/B0SECRET/xoxSECRET\"\n\
           ping-url = \"http://127.0.0.1:1/ping/5f2a-SECRET-uuid\"\n";
    std::fs::write(b.config_path(), config).expect("config");
    let mut child = spawn_logged(&b);
    wait_for("both failures in the log", Duration::from_secs(30), || {
        let log = service_log(&b);
        log.contains("cannot reach the notify webhook") && log.contains("cannot reach the ping URL")
    });
    signal(&child, "TERM");
    let _ = child.wait();
    let _ = child.kill();
    let log = service_log(&b);
    assert!(!log.contains("SECRET"), "{log}");
    assert!(log.contains("http://127.0.0.1:1/…"), "{log}");
    let status = b.run(&["status"]);
    assert!(!status.stdout.contains("SECRET"), "{status:?}");
}

/// Disabled means never run, by any path: a bare SIGUSR1 (the README's `systemctl kill -s
/// USR1`), two of them, and `once --account` leave a disabled account (here with a wrong
/// password) alone.
#[test]
fn a_disabled_account_never_runs_by_any_path() {
    let b = Bench::start();
    std::fs::write(b.dir.path().join("wrong.pass"), "not-the-password\n").expect("pass");
    let good = b.account("src", b.dovecot.imaps_port, "implicit", "src.pass");
    let off =
        b.account("off", b.dovecot.imaps_port, "implicit", "wrong.pass") + "enabled = false\n";
    b.write_config(&[good, off]);
    let mut child = spawn_logged(&b);
    let db = b.state_dir().join("mailferry.db");
    let runs_of = |account: &str| -> i64 {
        crate::util::try_sqlite(
            &db,
            &format!("SELECT COUNT(*) FROM runs WHERE account = '{account}'"),
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
    };
    wait_for("the first run of src", Duration::from_secs(30), || {
        runs_of("src") >= 1
    });
    signal(&child, "USR1");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "USR1");
    wait_for(
        "the runs SIGUSR1 asked for",
        Duration::from_secs(30),
        || runs_of("src") >= 2,
    );
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    let _ = child.wait();
    let _ = child.kill();
    assert_eq!(runs_of("off"), 0, "{}", service_log(&b));
    let once = b.run(&["once", "--account", "off"]);
    assert_eq!(once.code, 2, "{once:?}");
    assert!(once.stderr.contains("is disabled"), "{once:?}");
    assert_eq!(runs_of("off"), 0);
    let status = b.run(&["status"]);
    assert!(status.stdout.contains("off: disabled"), "{status:?}");
}

/// `run-now` signals only a live service: after the service was killed (its name left in
/// the state), while another process holds the state (a `once`), it says the service is
/// not running instead of signalling a process id that names nobody, or somebody else.
#[test]
fn run_now_never_signals_a_dead_service() {
    let b = Bench::start();
    short_schedule(&b, "");
    let mut child = spawn_logged(&b);
    let pid_file = b.state_dir().join("service.pid");
    wait_for(
        "the service to name itself",
        Duration::from_secs(30),
        || pid_file.exists(),
    );
    signal(&child, "KILL");
    let _ = child.wait();
    assert!(pid_file.exists(), "a killed service cannot clean up");
    // What a `once` does: hold the state's lock.
    // (-o: the lock stays with flock itself, so killing it frees the state.)
    let mut holder = Command::new("flock")
        .args(["-x", "-o"])
        .arg(b.state_dir().join("lock"))
        .args(["sleep", "20"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let now = b.run(&["run-now", "--no-wait"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(now.code, 1, "{now:?}");
    assert!(now.stderr.contains("the service is not running"), "{now:?}");

    // A service that stops cleanly takes its name back.
    let child = spawn_logged(&b);
    let me = child.id().to_string();
    wait_for(
        "the service to name itself",
        Duration::from_secs(30),
        || std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == me),
    );
    signal(&child, "TERM");
    let mut child = child;
    let _ = child.wait();
    assert!(!pid_file.exists(), "service.pid outlived the service");
}

/// A long import does not hold new mail back: the service takes a backlog in slices of
/// `min-interval` (here 1 s) and lists again between them, newest first, so a message
/// that arrives during the import is delivered within about a slice, not after the
/// backlog. Nothing is lost or doubled across the slices.
#[test]
fn new_mail_during_a_long_import_is_delivered_before_the_backlog() {
    const BACKLOG: usize = 800;
    let b = Bench::start();
    short_schedule(&b, "");
    for n in 0..BACKLOG {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let child = spawn_run(&b);
    wait_for(
        "the import to be under way",
        Duration::from_secs(60),
        || b.smtp.messages().len() >= 50,
    );
    let at_arrival = b.smtp.messages().len();
    b.dovecot.add_message("INBOX", &fixtures::simple(99_999));
    wait_for("the whole import", Duration::from_secs(180), || {
        b.smtp.messages().len() > BACKLOG
    });
    signal(&child, "TERM");
    let _ = child.wait_with_output();
    let ids = received_message_ids(&b);
    let position = ids
        .iter()
        .position(|id| id.contains("msg99999@"))
        .expect("the new message arrived");
    assert!(
        at_arrival < BACKLOG / 2,
        "the import was nearly done when the new message came ({at_arrival} of {BACKLOG}); nothing was tested"
    );
    assert!(
        position + 200 < BACKLOG,
        "the new message (arrived after {at_arrival} deliveries) was delivered {position}th of {}: held back behind the backlog",
        BACKLOG + 1
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (BACKLOG + 1, BACKLOG + 1),
        "lost or doubled"
    );
    // More than one run did it, each ending at its slice.
    let runs: i64 = crate::util::sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT COUNT(*) FROM runs WHERE delivered > 0",
    )
    .trim()
    .parse()
    .expect("count");
    assert!(runs >= 2, "{runs} runs delivered the import");
}
