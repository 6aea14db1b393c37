//! `mailferry run`: polls on its timer, picks up new mail, stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::fixtures;

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
