//! What commands and the running service tell each other: wake-up requests, taken once,
//! and the service's last reading of the configuration file.

use mailferry_store::Store;

#[tokio::test]
async fn wakeups_are_taken_once_in_the_order_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).await.expect("open");
    store.request_wakeup(&["b".to_owned()]).await.expect("ask");
    store
        .request_wakeup(&["a".to_owned(), "b".to_owned()])
        .await
        .expect("ask");
    let mut taken = store.take_wakeups().await.expect("take");
    taken.sort();
    assert_eq!(taken, ["a", "b"]);
    assert!(store.take_wakeups().await.expect("take").is_empty());
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
