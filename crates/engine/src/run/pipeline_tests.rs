//! The pipeline in process: a fake source and a fake destination over a real ledger
//! (SQLite in a temporary directory), no servers. Every ledger transition, and a crash
//! between each step (an attempt left open, found or not at the destination).

use mailferry_core::{Lookup, RawMessage};
use mailferry_store::{LedgerState, MessageFacts};

use super::pipeline_fakes::{
    FakeDestination, FakeSource, bench, key, message, peer_answering_later, source,
};

#[tokio::test]
async fn delivered_deferred_refused_and_settled_rows_are_never_reopened() {
    let b = bench().await;
    let dest = FakeDestination::default();
    let msgs = vec![
        (1, message(1, "")),
        (2, message(2, "defer")),
        (3, message(3, "refuse")),
    ];
    let r = b.run(source(msgs.clone()), &dest).await;
    assert_eq!((r.counts.delivered, r.counts.failed), (1, 2));
    assert_eq!(
        b.states().await,
        [
            (1, LedgerState::Delivered),
            (2, LedgerState::Deferred),
            (3, LedgerState::Refused)
        ]
    );
    // The next run: only the deferred one is tried again (and now accepted).
    let mut msgs2 = msgs.clone();
    msgs2[1].1 = message(2, "");
    let r = b.run(source(msgs2), &dest).await;
    assert_eq!((r.counts.fetched, r.counts.delivered), (1, 1));
    assert_eq!(b.states().await[1], (2, LedgerState::Delivered));
    assert_eq!(dest.held().len(), 2);
    // A listing that names a key twice delivers it once.
    let mut twice = msgs.clone();
    twice.push((1, message(1, "")));
    let r = b.run(source(twice), &dest).await;
    assert_eq!(r.counts.delivered, 0);
    assert_eq!(dest.held().len(), 2);
}

#[tokio::test]
async fn one_at_a_time_each_delivery_is_recorded_with_the_next_attempt_and_none_is_lost() {
    let b = bench().await;
    let dest = FakeDestination {
        one_at_a_time: true,
        ..FakeDestination::default()
    };
    // Message 8 was left open by a crash (re-sent); 6 is not handed out; 3 and 4 are
    // refused; 9 holds the bytes of 1 under another UIDVALIDITY below.
    b.store
        .begin_attempt(
            &key(7, 8),
            &MessageFacts {
                message_id: Some("m8@x"),
                content_hash: &RawMessage::new(message(8, "")).content_hash(),
                sha256: None,
                size: 10,
                destination: "home",
            },
        )
        .await
        .expect("attempt");
    let msgs = vec![
        (1, message(1, "")),
        (2, message(2, "")),
        (3, message(3, "defer")),
        (4, message(4, "refuse")),
        (5, message(5, "")),
        (6, message(6, "")),
        (7, message(7, "")),
        (8, message(8, "")),
        (2, message(2, "")),
    ];
    let src = FakeSource {
        uidvalidity: 7,
        messages: msgs,
        broken: vec![6],
        lazy: None,
    };
    let r = b.run(src, &dest).await;
    assert_eq!((r.counts.delivered, r.resent), (5, 1));
    assert_eq!(
        b.states().await,
        [
            (1, LedgerState::Delivered),
            (2, LedgerState::Delivered),
            (3, LedgerState::Deferred),
            (4, LedgerState::Refused),
            (5, LedgerState::Delivered),
            (6, LedgerState::Deferred),
            (7, LedgerState::Delivered),
            (8, LedgerState::Delivered),
        ]
    );
    assert_eq!(dest.held().len(), 5, "each delivered once");
    // Under a new UIDVALIDITY: a new message, then the bytes of 1 (begun in the same
    // statement that records the new one): a duplicate.
    let again = FakeSource {
        uidvalidity: 8,
        messages: vec![(1, message(10, "")), (2, message(1, ""))],
        broken: Vec::new(),
        lazy: None,
    };
    let r = b.run(again, &dest).await;
    assert_eq!((r.counts.delivered, r.counts.skipped), (1, 1));
    assert_eq!(
        b.store.state_of(&key(8, 2)).await.expect("state"),
        Some(LedgerState::Duplicate)
    );
    assert_eq!(dest.held().len(), 6);
}

#[tokio::test]
async fn the_same_bytes_under_a_new_uidvalidity_are_a_duplicate() {
    let b = bench().await;
    let dest = FakeDestination::default();
    b.run(source(vec![(1, message(1, ""))]), &dest).await;
    let again = FakeSource {
        uidvalidity: 8,
        messages: vec![(5, message(1, ""))],
        broken: Vec::new(),
        lazy: None,
    };
    let r = b.run(again, &dest).await;
    assert_eq!((r.counts.delivered, r.counts.skipped), (0, 1));
    assert_eq!(dest.held().len(), 1);
    assert_eq!(
        b.store.state_of(&key(8, 5)).await.expect("state"),
        Some(LedgerState::Duplicate)
    );
}

#[tokio::test]
async fn a_message_recorded_with_its_sha256_before_blake3_is_a_duplicate_under_a_new_uidvalidity() {
    // The row as a ledger written before BLAKE3 holds it: the SHA-256 as the fingerprint.
    let b = bench().await;
    let dest = FakeDestination::default();
    let old = RawMessage::new(message(1, ""));
    let sha256 = old.sha256_hex();
    let facts = MessageFacts {
        message_id: Some("m1@x"),
        content_hash: &sha256,
        sha256: None,
        size: old.len(),
        destination: "home",
    };
    b.store
        .begin_attempt(&key(7, 1), &facts)
        .await
        .expect("attempt");
    b.store
        .mark_delivered(&key(7, 1), "250")
        .await
        .expect("delivered");
    let again = FakeSource {
        uidvalidity: 8,
        messages: vec![(5, message(1, ""))],
        broken: Vec::new(),
        lazy: None,
    };
    let r = b.run(again, &dest).await;
    assert_eq!((r.counts.delivered, r.counts.skipped), (0, 1));
    assert!(dest.held().is_empty(), "delivered a second time");
    assert_eq!(
        b.store.state_of(&key(8, 5)).await.expect("state"),
        Some(LedgerState::Duplicate)
    );
}

#[tokio::test]
async fn a_crash_after_the_attempt_is_recorded_resends_or_finds_never_loses() {
    let b = bench().await;
    let facts = |sha: &'static str| MessageFacts {
        message_id: Some("m1@x"),
        content_hash: sha,
        sha256: None,
        size: 10,
        destination: "home",
    };
    // Crash between "attempt" and the delivery: nothing arrived.
    let m1 = RawMessage::new(message(1, ""));
    let sha = m1.content_hash();
    b.store
        .begin_attempt(&key(7, 1), &facts(Box::leak(sha.into_boxed_str())))
        .await
        .expect("attempt");
    let smtp_like = FakeDestination::default();
    let r = b.run(source(vec![(1, message(1, ""))]), &smtp_like).await;
    assert_eq!(
        (r.counts.delivered, r.resent),
        (1, 1),
        "re-sent and counted"
    );
    assert_eq!(b.states().await, [(1, LedgerState::Delivered)]);

    // Crash between the delivery and its record: a destination that can look it up
    // finds it and nothing is sent twice.
    let gmail_like = FakeDestination {
        looks_up: true,
        ..FakeDestination::default()
    };
    let m2 = message(2, "");
    gmail_like.held.lock().expect("lock").push(m2.clone());
    let sha2 = RawMessage::new(m2.clone()).content_hash();
    b.store
        .begin_attempt(&key(7, 2), &facts(Box::leak(sha2.into_boxed_str())))
        .await
        .expect("attempt");
    let r = b
        .run(source(vec![(1, message(1, "")), (2, m2)]), &gmail_like)
        .await;
    assert_eq!((r.counts.delivered, r.found), (0, 1));
    assert_eq!(gmail_like.held().len(), 1, "delivered twice");
    assert_eq!(b.states().await[1], (2, LedgerState::Delivered));
}

#[tokio::test]
async fn an_unconfirmed_delivery_stays_open_until_the_destination_can_tell() {
    let b = bench().await;
    let dest = FakeDestination {
        looks_up: true,
        missing: Some(Lookup::TooEarly),
        ..FakeDestination::default()
    };
    let msgs = vec![(1, message(1, "unconfirmed")), (2, message(2, ""))];
    let r = b.run(source(msgs.clone()), &dest).await;
    // The others go on; the unconfirmed one is neither re-sent nor settled.
    assert_eq!((r.counts.delivered, r.counts.failed), (1, 1));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(b.states().await[0], (1, LedgerState::Attempt));
    // Next run: the destination holds it; found, recorded, not sent again.
    let r = b.run(source(msgs), &dest).await;
    assert_eq!(r.found, 1);
    assert_eq!(dest.held().len(), 2);
    assert_eq!(b.states().await[0], (1, LedgerState::Delivered));
}

#[tokio::test]
async fn a_destination_that_fails_stops_the_run_and_settles_nothing() {
    let b = bench().await;
    let dest = FakeDestination::default();
    let msgs = vec![(1, message(1, "down")), (2, message(2, ""))];
    let r = b.run(source(msgs), &dest).await;
    let e = r.error.expect("the run stopped");
    assert!(
        e.blames_destination || e.message.contains("connection refused"),
        "{e:?}"
    );
    // Known not to have arrived: deferred (tried again), never refused.
    assert_eq!(b.states().await[0], (1, LedgerState::Deferred));
    assert!(
        b.states()
            .await
            .iter()
            .all(|(_, s)| *s != LedgerState::Refused)
    );
}

#[tokio::test]
async fn a_message_the_source_will_not_hand_out_is_deferred_and_rests_before_its_next_try() {
    let b = bench().await;
    let dest = FakeDestination::default();
    for round in 1..=3 {
        let src = FakeSource {
            uidvalidity: 7,
            messages: vec![(1, message(1, "")), (2, message(2, ""))],
            broken: vec![2],
            lazy: None,
        };
        let r = b.run(src, &dest).await;
        // Deferred at its failure; then resting (not asked for, not counted) meanwhile.
        let want = if round == 1 { (1, 1) } else { (0, 0) };
        assert_eq!(
            (r.counts.fetched - r.counts.delivered, r.counts.failed),
            want,
            "round {round}: {r:?}"
        );
        assert_eq!(
            b.states().await[1],
            (2, LedgerState::Deferred),
            "round {round}: {r:?}"
        );
    }
    assert_eq!(dest.held().len(), 1);
}

#[tokio::test]
async fn a_few_new_messages_go_oldest_first_and_a_backlog_newest_first() {
    let b = bench().await;
    let dest = FakeDestination::default();
    let few: Vec<(u32, Vec<u8>)> = (1..=3).map(|n| (n, message(n, ""))).collect();
    b.run(source(few), &dest).await;
    let backlog: Vec<(u32, Vec<u8>)> = (1..=150).map(|n| (n, message(n, ""))).collect();
    b.run(source(backlog), &dest).await;
    let order: Vec<Vec<u8>> = dest.held();
    let expected: Vec<Vec<u8>> = [1, 2, 3]
        .into_iter()
        .chain((4..=150).rev())
        .map(|n| message(n, ""))
        .collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn one_delivery_at_a_time_polls_the_run_once_for_each_step_of_its_session() {
    // An SMTP session is a few round trips a message, each a wake-up of the run by its
    // socket. A FuturesUnordered of one woke the run a second time after each (it yields
    // whenever it has polled all it holds): twice the polls (810 here), and an
    // `epoll_wait` each.
    let b = bench().await;
    let (messages, steps) = (20, 20);
    let dest = FakeDestination {
        one_at_a_time: true,
        steps,
        peer: Some(peer_answering_later()),
        ..FakeDestination::default()
    };
    let msgs = (1..=messages).map(|n| (n, message(n, ""))).collect();
    let (r, polls) = b.run_polled(source(msgs), &dest).await;
    assert_eq!(r.counts.delivered, u64::from(messages));
    let wakes = messages * steps;
    assert!(
        polls < wakes * 5 / 4,
        "{polls} polls of the run for {wakes} wake-ups by the destination"
    );
}
