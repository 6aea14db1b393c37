//! kill -9 in the middle of a delivery: nothing lost, nothing delivered twice except the
//! one message whose outcome was not yet recorded, and that one is reported.

use std::time::Duration;

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

    // Messages 1-3 delivered, the slow message 4 attempted: kill -9.
    b.kill_once_while_delivering(3);
    // Let the receiver finish its slow reply (it stores the message although nobody
    // listens any more: the at-least-once case).
    std::thread::sleep(Duration::from_millis(3500));

    let run = b.once_ok();
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
