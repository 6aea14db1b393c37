//! The ledger against a real SQLite file.

use std::os::unix::fs::PermissionsExt;

use mailferry_core::MessageKey;
use mailferry_store::{Attempt, DB_FILE, FetchRetry, LedgerKey, LedgerState, MessageFacts, Store};

fn key(uidvalidity: u32, uid: u32) -> LedgerKey {
    LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity,
        key: MessageKey::Uid(uid),
    }
}

fn facts(sha: &str) -> MessageFacts<'_> {
    MessageFacts {
        message_id: Some("m@x"),
        content_hash: sha,
        sha256: None,
        size: 10,
        destination: "home",
    }
}

#[tokio::test]
async fn state_file_and_directory_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let store = Store::open(&state).await.expect("open");
    store
        .begin_attempt(&key(1, 1), &facts("h"))
        .await
        .expect("attempt");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(DB_FILE)), 0o600);
    assert_eq!(mode(&state.join(format!("{DB_FILE}-wal"))), 0o600);
}

#[tokio::test]
async fn delivered_and_refused_are_settled_deferred_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    for uid in 1..=4 {
        assert_eq!(
            store
                .begin_attempt(&key(7, uid), &facts(&format!("h{uid}")))
                .await
                .expect("a"),
            Attempt::Fresh
        );
    }
    store.mark_delivered(&key(7, 1), "250 ok").await.expect("d");
    store.mark_refused(&key(7, 2), "550 no").await.expect("r");
    store
        .mark_deferred(&key(7, 3), "451 later")
        .await
        .expect("t");
    let settled = store.settled_keys("a", "INBOX", 7).await.expect("settled");
    assert_eq!(
        settled,
        [MessageKey::Uid(1), MessageKey::Uid(2)]
            .into_iter()
            .collect()
    );
    assert!(
        store
            .settled_keys("a", "INBOX", 8)
            .await
            .expect("other")
            .is_empty()
    );
    let refusals = store.refusals("a").await.expect("refusals");
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].reason, "550 no");
    // A deferred message is retried as a fresh attempt; an unfinished one is reported.
    assert_eq!(
        store
            .begin_attempt(&key(7, 3), &facts("h3"))
            .await
            .expect("a"),
        Attempt::Fresh
    );
    assert!(matches!(
        store
            .begin_attempt(&key(7, 4), &facts("h4"))
            .await
            .expect("a"),
        Attempt::Interrupted { .. }
    ));
}

#[tokio::test]
async fn same_content_under_new_uidvalidity_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    store
        .begin_attempt(&key(1, 10), &facts("same"))
        .await
        .expect("a");
    store.mark_delivered(&key(1, 10), "ok").await.expect("d");
    assert_eq!(
        store
            .begin_attempt(&key(2, 1), &facts("same"))
            .await
            .expect("a"),
        Attempt::Duplicate
    );
    assert!(
        store
            .settled_keys("a", "INBOX", 2)
            .await
            .expect("s")
            .contains(&MessageKey::Uid(1))
    );
    // Different bytes, or the same bytes twice within one UIDVALIDITY, are delivered.
    assert_eq!(
        store
            .begin_attempt(&key(2, 2), &facts("other"))
            .await
            .expect("a"),
        Attempt::Fresh
    );
    assert_eq!(
        store
            .begin_attempt(&key(1, 11), &facts("same"))
            .await
            .expect("a"),
        Attempt::Fresh
    );
}

#[tokio::test]
async fn reopening_keeps_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).await.expect("open");
        store
            .begin_attempt(&key(1, 1), &facts("h"))
            .await
            .expect("a");
        store.mark_delivered(&key(1, 1), "ok").await.expect("d");
        store.close().await;
    }
    let store = Store::open(dir.path()).await.expect("reopen");
    assert!(
        store
            .settled_keys("a", "INBOX", 1)
            .await
            .expect("s")
            .contains(&MessageKey::Uid(1))
    );
}

#[tokio::test]
async fn a_second_process_cannot_use_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path()).await.expect("open");
    let second = Store::open(dir.path()).await;
    assert!(
        matches!(&second, Err(mailferry_store::StoreError::Busy(_))),
        "{second:?}"
    );
    drop(first);
    Store::open(dir.path())
        .await
        .expect("free again once the first is gone");
}

#[tokio::test]
async fn pop3_uidls_are_keys_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let pop = |uidl: &str| LedgerKey {
        account: "p".into(),
        folder: "INBOX".into(),
        uidvalidity: 0,
        key: MessageKey::Uidl(uidl.into()),
    };
    for u in ["a1", "b2"] {
        store
            .begin_attempt(&pop(u), &facts(u))
            .await
            .expect("attempt");
    }
    store
        .mark_delivered(&pop("a1"), "ok")
        .await
        .expect("delivered");
    let delivered = store.delivered_keys("p", "INBOX", 0).await.expect("keys");
    assert_eq!(
        delivered,
        [MessageKey::Uidl("a1".into())].into_iter().collect()
    );
    assert_eq!(
        store.settled_keys("p", "INBOX", 0).await.expect("keys"),
        delivered
    );
}

#[tokio::test]
async fn a_settled_row_is_never_reopened_by_a_new_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    for uid in 1..=2 {
        store
            .begin_attempt(&key(7, uid), &facts(&format!("s{uid}")))
            .await
            .expect("a");
    }
    store.mark_delivered(&key(7, 1), "250 ok").await.expect("d");
    store.mark_refused(&key(7, 2), "550 no").await.expect("r");
    // The same keys again (listed twice, or a listing that straddled the commit).
    for uid in 1..=2 {
        assert_eq!(
            store
                .begin_attempt(&key(7, uid), &facts(&format!("s{uid}")))
                .await
                .expect("a"),
            Attempt::Settled
        );
    }
    let settled = store.settled_keys("a", "INBOX", 7).await.expect("settled");
    assert!(settled.contains(&MessageKey::Uid(1)) && settled.contains(&MessageKey::Uid(2)));
    assert_eq!(store.refusals("a").await.expect("refusals").len(), 1);
}

/// Exchange holds a new message back for about 30 minutes and some for days (body-less
/// FETCH; postalsys/emailengine #53, MailKit #1615): such a message rests for a growing
/// pause between tries and is refused only after `tries` failures over `for_at_least`.
#[tokio::test]
async fn a_message_the_source_will_not_hand_out_rests_longer_each_time_and_is_refused_after_a_day()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let rule = FetchRetry {
        tries: 6,
        for_at_least: 86_400,
    };
    let k = key(7, 3);
    let resting = |t: i64| {
        let store = &store;
        async move {
            store
                .resting_keys("a", "INBOX", 7, t)
                .await
                .expect("resting")
                .contains(&MessageKey::Uid(3))
        }
    };
    let start = 1_000_000;
    let mut t = start;
    let mut pauses = Vec::new();
    let mut tries = 0;
    loop {
        tries += 1;
        let refused = store
            .record_fetch_failure(&k, "home", "no body yet", rule, t)
            .await
            .expect("record");
        if refused {
            break;
        }
        // Not asked for during its pause; due right after it.
        let mut pause = 1;
        while resting(t + pause).await {
            pause += 60;
        }
        assert!(resting(t + pause - 61).await);
        pauses.push(pause - 1);
        t += pause;
        assert!(tries < 20, "never refused");
    }
    // 10 minutes, doubling, at most 6 hours; refused at the first failure past a day and
    // the sixth try.
    assert_eq!(&pauses[..4], &[600, 1_200, 2_400, 4_800]);
    assert!(pauses.iter().all(|p| *p <= 6 * 3600), "{pauses:?}");
    assert!(tries >= 6, "{tries}");
    assert!(t - start >= 86_400, "refused after {} s", t - start);
    assert!(
        t - start < 86_400 + 6 * 3600 + 60,
        "refused only after {} s",
        t - start
    );
    assert!(
        !resting(t).await,
        "a refused message is settled, not resting"
    );
    assert!(
        store
            .settled_keys("a", "INBOX", 7)
            .await
            .expect("settled")
            .contains(&MessageKey::Uid(3))
    );
    // `mailferry retry` brings it back, due at once.
    assert_eq!(
        store
            .retry_refused(Some("a"), None, None)
            .await
            .expect("retry"),
        1
    );
    assert_eq!(
        store.state_of(&k).await.expect("state"),
        Some(LedgerState::Deferred)
    );
    assert!(!resting(t).await);
    // Refused at once where the rule says so (a message over max-message-size).
    assert!(
        store
            .record_fetch_failure(&key(7, 4), "home", "too large", FetchRetry::AT_ONCE, t)
            .await
            .expect("record")
    );
}

/// An open attempt may be an upload Gmail stored without confirming it: a later fetch
/// failure of the same message must leave it open (so the next run looks it up by
/// Message-ID instead of importing it again), and never refuse it.
#[tokio::test]
async fn a_fetch_failure_leaves_an_open_attempt_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let k = key(7, 9);
    assert_eq!(
        store.begin_attempt(&k, &facts("s9")).await.expect("begin"),
        Attempt::Fresh
    );
    let rule = FetchRetry {
        tries: 3,
        for_at_least: 0,
    };
    for i in 0..5 {
        let refused = store
            .record_fetch_failure(&k, "home", "NO [UNAVAILABLE] try later", rule, 1_000 + i)
            .await
            .expect("record");
        assert!(!refused, "an open attempt was refused at failure {i}");
    }
    assert_eq!(
        store.state_of(&k).await.expect("state"),
        Some(LedgerState::Attempt)
    );
    assert!(matches!(
        store.begin_attempt(&k, &facts("s9")).await.expect("begin"),
        Attempt::Interrupted { .. }
    ));
}

/// A refusal that may be the destination's (a 5xx to DATA, a refused own sender) rests
/// and is retried; it settles as refused only after the rule's tries over its time.
#[tokio::test]
async fn a_doubtful_refusal_rests_and_is_refused_only_by_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    let k = key(7, 11);
    let rule = FetchRetry {
        tries: 3,
        for_at_least: 3_600,
    };
    let mut t = mailferry_core::unix_now();
    for i in 0..4 {
        store.begin_attempt(&k, &facts("s11")).await.expect("begin");
        let refused = store
            .record_doubtful_refusal(&k, "554 5.7.1 <DATA>: Data command rejected", rule, t)
            .await
            .expect("record");
        // Tries 1 and 2 rest; try 3 is too soon (under an hour); try 4 refuses.
        assert_eq!(refused, i == 3, "try {}", i + 1);
        if !refused {
            assert!(
                store
                    .resting_keys("a", "INBOX", 7, t + 1)
                    .await
                    .expect("resting")
                    .contains(&MessageKey::Uid(11))
            );
        }
        t += if i == 2 { 3_600 } else { 600 };
    }
    assert_eq!(
        store.state_of(&k).await.expect("state"),
        Some(LedgerState::Refused)
    );
}
