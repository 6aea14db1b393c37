//! How often the reader waits while a large message arrives in small pieces.

use std::time::Duration;

use mailferry_core::{MessageKey, Source as _};
use mailferry_imap::{ConnectOptions, ImapSource, Login, TlsMode};
use mailferry_testkit::{FakeImap, ImapScript, waits_of_this_thread};

/// A 1 MiB message, sent as Dovecot sends one: 4 KB writes.
#[tokio::test(flavor = "current_thread")]
async fn a_large_message_wakes_the_reader_once_per_64_kb_not_per_piece() {
    let mut body = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while body.len() < 1024 * 1024 {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n",
        );
    }
    let fake = FakeImap::start(ImapScript {
        messages: vec![(1, body.clone())],
        pieces: Some((4096, Duration::from_micros(200))),
        ..ImapScript::default()
    });
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port: fake.port,
        tls: TlsMode::None,
        ca_pem: None,
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(30),
    };
    let login = Login::Password {
        username: "user",
        password: "secret",
    };
    let mut source = ImapSource::connect(&opts, login).await.expect("connect");
    source.open("INBOX").await.expect("open");

    let before = waits_of_this_thread();
    let fetched = source.fetch(&[MessageKey::Uid(1)]).await.expect("fetch");
    let waits = waits_of_this_thread() - before;

    let [(_, Ok(message))] = fetched.as_slice() else {
        panic!("one message expected, got {fetched:?}");
    };
    assert_eq!(
        &message.bytes()[..],
        body.as_slice(),
        "the message, unchanged"
    );
    // 256 pieces: woken for each of them before; now only when 64 KB are there (16),
    // plus the piece at the start and end of the literal.
    assert!(
        waits <= 40,
        "the reader waited {waits} times for 256 pieces of 4 KB"
    );
}
