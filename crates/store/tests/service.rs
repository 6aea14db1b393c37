//! What commands and the running service tell each other: wake-up requests and the runs
//! that answer them, the service's name, and its last reading of the configuration file.

use mailferry_store::Store;

/// Two requests for the same account before its run (two `run-now`s whose signals
/// coalesce) are both answered by that run, and only by it: a run that began earlier, or a
/// push delivery, answers nobody.
#[tokio::test]
async fn each_request_is_answered_by_the_run_it_caused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    // A run of "b" already going when the requests come.
    let earlier = store.start_run("b").await.expect("run");
    let first = store.request_wakeup(&["b".to_owned()]).await.expect("ask");
    let second = store
        .request_wakeup(&["a".to_owned(), "b".to_owned()])
        .await
        .expect("ask");
    let counts = mailferry_store::RunCounts::default();
    store
        .finish_run(earlier, &counts, None)
        .await
        .expect("finish");
    assert_eq!(store.pending_wakeups().await.expect("pending"), ["b", "a"]);
    assert!(store.answers(&first).await.expect("answers").is_empty());
    // The service's run of "b" takes both requests as it starts; a push run ends meanwhile.
    let asked = store.wakeups_of("b").await.expect("asked");
    assert_eq!(asked.len(), 2);
    let run = store.start_run("b").await.expect("run");
    let push = store.start_run("b").await.expect("run");
    store.finish_run(push, &counts, None).await.expect("finish");
    assert!(store.answers(&first).await.expect("answers").is_empty());
    store
        .finish_run(run, &counts, Some("boom"))
        .await
        .expect("finish");
    store.answer_wakeups(&asked, run).await.expect("answer");
    let answered = store.answers(&first).await.expect("answers");
    assert_eq!(answered.len(), 1);
    assert_eq!(
        (answered[0].id, answered[0].error.as_deref()),
        (run, Some("boom"))
    );
    let both = store.answers(&second).await.expect("answers");
    assert_eq!(both.len(), 1, "a is not answered yet");
    assert_eq!(store.pending_wakeups().await.expect("pending"), ["a"]);
}

/// `run-now` signals only a live service: the name is taken back when the service ends,
/// and a name a killed service left behind names nobody, even while a `once` holds the
/// state.
#[tokio::test]
async fn the_service_is_named_only_while_it_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    assert_eq!(mailferry_store::service_pid(dir.path()), None);
    let mark = store.announce_service().expect("announce");
    assert_eq!(
        mailferry_store::service_pid(dir.path()),
        Some(std::process::id())
    );
    drop(mark);
    assert_eq!(mailferry_store::service_pid(dir.path()), None);
    // A file left by a killed service (no lock held), while the state is held by a `once`.
    std::fs::write(dir.path().join("service.pid"), "4194000").expect("write");
    assert_eq!(mailferry_store::service_pid(dir.path()), None);
}

#[tokio::test]
async fn each_reading_of_the_configuration_replaces_the_last_and_counts_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    assert_eq!(store.config_load().await.expect("read"), None);

    store
        .record_config_load(Some("account[0].auth.password-file: cannot read gmx.pass"))
        .await
        .expect("record");
    let failed = store.config_load().await.expect("read").expect("a reading");
    assert_eq!(failed.serial, 1);
    assert_eq!(
        failed.error.as_deref(),
        Some("account[0].auth.password-file: cannot read gmx.pass")
    );

    store.record_config_load(None).await.expect("record");
    let read = store.config_load().await.expect("read").expect("a reading");
    assert_eq!(read.serial, 2);
    assert_eq!(read.error, None);
    assert!(read.at >= failed.at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_opening_a_new_state_beside_the_starting_service_never_stop_it() {
    // `status` polled (or a container's health check) while the service creates its
    // database: the first opening switches the new file to WAL, which needs it alone.
    for _ in 0..20 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        let mut shared = Vec::new();
        for _ in 0..6 {
            let p = path.clone();
            shared.push(tokio::spawn(async move { Store::open_shared(&p).await }));
        }
        let service = Store::open(&path).await;
        assert!(
            service.is_ok(),
            "the service could not open: {:?}",
            service.err()
        );
        for s in shared {
            let opened = s.await.expect("join");
            assert!(
                opened.is_ok(),
                "a command could not open: {:?}",
                opened.err()
            );
        }
    }
}
