//! A server without CAPA and without UIDL (old, but real): messages are recognised by a hash
//! of their headers, the same in every session, and fetched one by one.

use std::time::Duration;

use mailferry_core::{MessageKey, Source};
use mailferry_pop3::{ConnectOptions, Login, Pop3Source, TlsMode, codec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const HEADERS: [&str; 2] = [
    "Subject: one\r\nMessage-ID: <1@x>\r\n\r\n",
    "Subject: two\r\nMessage-ID: <2@x>\r\n\r\n",
];

/// Serves one session of an old POP3 server on `listener`.
async fn old_server(listener: &TcpListener) {
    let (socket, _) = listener.accept().await.expect("accept");
    let mut s = BufReader::new(socket);
    s.get_mut()
        .write_all(b"+OK old server\r\n")
        .await
        .expect("w");
    loop {
        let mut l = String::new();
        if s.read_line(&mut l).await.expect("read") == 0 {
            return;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        let reply: Vec<u8> = match words.as_slice() {
            ["CAPA"] | ["UIDL"] => b"-ERR unknown command\r\n".to_vec(),
            ["USER", _] | ["PASS", _] => b"+OK\r\n".to_vec(),
            ["LIST"] => b"+OK\r\n1 40\r\n2 40\r\n.\r\n".to_vec(),
            ["TOP", n, "0"] => [
                b"+OK\r\n".as_slice(),
                &codec::stuff(HEADERS[n.parse::<usize>().expect("n") - 1].as_bytes()),
            ]
            .concat(),
            ["RETR", n] => {
                let body = format!(
                    "{}body {n}\r\n",
                    HEADERS[n.parse::<usize>().expect("n") - 1]
                );
                [b"+OK\r\n".as_slice(), &codec::stuff(body.as_bytes())].concat()
            }
            ["QUIT"] => {
                s.get_mut().write_all(b"+OK bye\r\n").await.expect("w");
                return;
            }
            _ => b"-ERR what\r\n".to_vec(),
        };
        s.get_mut().write_all(&reply).await.expect("w");
    }
}

#[tokio::test]
async fn without_uidl_messages_are_keyed_by_their_headers_stably() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port: listener.local_addr().expect("addr").port(),
        tls: TlsMode::None,
        ca_pem: None,
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(5),
    };
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let server = old_server(&listener);
        let client = async {
            let mut src = Pop3Source::connect(
                &opts,
                Login::Password {
                    username: "u",
                    password: "p",
                },
                true,
            )
            .await
            .expect("login");
            let state = src.open("INBOX").await.expect("open");
            let keys: Vec<MessageKey> = state.messages.iter().map(|m| m.key.clone()).collect();
            let fetched = src.fetch(&keys).await.expect("fetch");
            src.close().await.expect("quit");
            (keys, fetched)
        };
        let ((keys, fetched), ()) = tokio::join!(client, server);
        assert_eq!(fetched.len(), 2);
        assert!(
            fetched[1]
                .1
                .as_ref()
                .expect("fetched")
                .as_bytes()
                .ends_with(b"body 2\r\n")
        );
        sessions.push(keys);
    }
    assert_eq!(
        sessions[0], sessions[1],
        "header keys must be stable across sessions"
    );
    assert_ne!(sessions[0][0], sessions[0][1]);
    assert!(matches!(&sessions[0][0], MessageKey::Uidl(k) if k.starts_with("mailferry-headers-")));
}
