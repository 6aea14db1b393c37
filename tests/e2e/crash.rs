//! kill -9 in the middle of a delivery: nothing lost, nothing delivered twice except the
//! one message whose outcome was not yet recorded, and that one is reported.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::fixtures;

use crate::util::{Bench, summary};

#[test]
fn kill_during_delivery_loses_nothing_and_reports_the_resend() {
    let b = Bench::start();
    for n in 1..=3 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    // The receiver holds its reply to this one for 3 s: the process dies while waiting.
    b.dovecot
        .add_message("INBOX", &fixtures::with_smtp_mode(4, "slow"));
    for n in 5..=7 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["once", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until the three messages before the slow one are recorded as delivered.
    let db = b.state_dir().join("mailferry.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the first messages were never delivered"
        );
        // One snapshot: messages 1-3 delivered, the slow message 4 attempted.
        if db.exists()
            && b.ledger_states() == [("attempt".to_owned(), 1), ("delivered".to_owned(), 3)]
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    // Let the receiver finish its slow reply (it stores the message although nobody
    // listens any more: the at-least-once case).
    std::thread::sleep(Duration::from_millis(3500));

    let run = b.run(&["once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 4, delivered 4, skipped 0, failed 0 (1 re-sent after an interrupted attempt)",
        "{run:?}"
    );
    let got = b.smtp.messages();
    for n in [1, 2, 3, 5, 6, 7] {
        let copies = got.iter().filter(|r| r.raw == fixtures::simple(n)).count();
        assert_eq!(copies, 1, "message {n} arrived {copies} times");
    }
    let slow = got
        .iter()
        .filter(|r| r.raw == fixtures::with_smtp_mode(4, "slow"))
        .count();
    assert!(
        (1..=2).contains(&slow),
        "the interrupted message arrived {slow} times"
    );
    assert_eq!(b.ledger_states(), [("delivered".to_owned(), 7)]);
}
