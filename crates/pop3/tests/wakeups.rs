//! How often the reader waits while a large message arrives in small pieces, and what a
//! `LIST` size that is too large costs.

use std::time::{Duration, Instant};

use mailferry_core::{MessageKey, Source as _};
use mailferry_pop3::{ConnectOptions, Login, Pop3Source, TlsMode};
use mailferry_testkit::{FakePop3, Pop3Script, waits_of_this_thread};

/// A message of about 1 MiB.
fn large() -> Vec<u8> {
    let mut body = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while body.len() < 1024 * 1024 {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n",
        );
    }
    body
}

/// Fetches the one message of `script`, sent in 4 KB pieces as Dovecot sends it; returns
/// it, how often this thread waited meanwhile, and how long it took.
async fn fetch_in_pieces(mut script: Pop3Script) -> (Vec<u8>, u64, Duration) {
    script.capa = vec!["UIDL".into(), "USER".into()];
    script.pieces = Some((4096, Duration::from_micros(200)));
    let fake = FakePop3::start(script);
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
    let mut source = Pop3Source::connect(&opts, login, false)
        .await
        .expect("connect");
    let state = source.open("INBOX").await.expect("open");
    let keys: Vec<MessageKey> = state.messages.iter().map(|m| m.key.clone()).collect();
    let (before, started) = (waits_of_this_thread(), Instant::now());
    let fetched = source.fetch(&keys).await.expect("fetch");
    let (waits, took) = (waits_of_this_thread() - before, started.elapsed());
    let [(_, Ok(message))] = fetched.as_slice() else {
        panic!("one message expected, got {fetched:?}");
    };
    (message.as_bytes().to_vec(), waits, took)
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_message_wakes_the_reader_once_per_64_kb_not_per_piece() {
    let body = large();
    let (got, waits, _) = fetch_in_pieces(Pop3Script {
        messages: vec![(b"one".to_vec(), body.clone())],
        ..Pop3Script::default()
    })
    .await;
    assert_eq!(got, body, "the message, unchanged");
    // 257 pieces: woken for each of them before; now when 64 KB are there (16), plus the
    // pieces of the last 17 KB.
    assert!(
        waits <= 40,
        "the reader waited {waits} times for 257 pieces of 4 KB"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_list_size_three_times_too_large_costs_a_moment_not_a_stall() {
    // Exchange's sizes are estimates (DESIGN.md: bodies a third of the size announced).
    let body = large();
    let (got, waits, took) = fetch_in_pieces(Pop3Script {
        messages: vec![(b"one".to_vec(), body.clone())],
        list_scale: Some((3, 1)),
        ..Pop3Script::default()
    })
    .await;
    assert_eq!(got, body, "the message, unchanged");
    // The pieces take 257 x 0.2 ms and more; the mark that waits for bytes that never
    // come is given up after its patience (20 ms), not after io-timeout (30 s).
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(waits <= 60, "the reader waited {waits} times");
}
