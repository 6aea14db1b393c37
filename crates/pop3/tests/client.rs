//! The POP3 client against a scripted server over an in-memory duplex stream: the
//! exchanges real servers have but Dovecot cannot be made to produce on demand.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};
use mailferry_pop3::{Client, Pop3Error, Retrieved, codec, sasl};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

const T: Duration = Duration::from_secs(5);

/// Reads one command line from the client.
async fn line(r: &mut BufReader<DuplexStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).await.expect("read command");
    l.trim_end().to_owned()
}

async fn client_and_server() -> (Client<DuplexStream>, BufReader<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut server = BufReader::new(b);
    server
        .get_mut()
        .write_all(b"+OK ready\r\n")
        .await
        .expect("greet");
    let client = Client::greet(a, "fake:110".into(), T)
        .await
        .expect("greeting");
    (client, server)
}

#[tokio::test]
async fn login_delay_is_temporary_and_keeps_the_servers_words() {
    let (mut client, mut server) = client_and_server().await;
    let script = tokio::spawn(async move {
        assert_eq!(line(&mut server).await, "USER u");
        server.get_mut().write_all(b"+OK\r\n").await.expect("w");
        assert_eq!(line(&mut server).await, "PASS p");
        server
            .get_mut()
            .write_all(b"-ERR [LOGIN-DELAY] minimum time between logins is 900 seconds\r\n")
            .await
            .expect("w");
        server
    });
    let err = client.user_pass("u", "p").await.expect_err("refused");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(
        err.to_string()
            .contains("[LOGIN-DELAY] minimum time between logins is 900 seconds"),
        "{err}"
    );
    script.await.expect("script");
}

#[tokio::test]
async fn in_use_is_temporary_and_a_plain_err_to_pass_is_an_auth_failure() {
    let (mut client, mut server) = client_and_server().await;
    let script = tokio::spawn(async move {
        for reply in [
            &b"-ERR [IN-USE] mailbox locked\r\n"[..],
            b"-ERR [AUTH] bad password\r\n",
        ] {
            assert_eq!(line(&mut server).await, "USER u");
            server.get_mut().write_all(b"+OK\r\n").await.expect("w");
            line(&mut server).await;
            server.get_mut().write_all(reply).await.expect("w");
        }
    });
    let busy = client.user_pass("u", "p").await.expect_err("in use");
    assert!(
        matches!(busy, Pop3Error::Busy(ref t) if t.contains("[IN-USE] mailbox locked")),
        "{busy}"
    );
    let bad = client.user_pass("u", "p").await.expect_err("auth");
    assert_eq!(bad.class(), ErrorClass::Auth);
    script.await.expect("script");
}

#[tokio::test]
async fn xoauth2_is_two_step_and_keeps_the_error_challenge() {
    let (mut client, mut server) = client_and_server().await;
    let token = sasl::xoauth2("me@outlook.com", "tok");
    let expected = token.clone();
    let script = tokio::spawn(async move {
        // No initial response on the AUTH line: the token only after "+".
        assert_eq!(line(&mut server).await, "AUTH XOAUTH2");
        server.get_mut().write_all(b"+ \r\n").await.expect("w");
        assert_eq!(line(&mut server).await, expected);
        // eyJzdGF0dXMiOiI0MDEifQ== is {"status":"401"}
        server
            .get_mut()
            .write_all(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
            .await
            .expect("w");
        assert_eq!(
            line(&mut server).await,
            "",
            "the challenge is answered with an empty line"
        );
        server
            .get_mut()
            .write_all(b"-ERR [AUTH] Authentication failed.\r\n")
            .await
            .expect("w");
    });
    let err = client
        .authenticate("XOAUTH2", &token)
        .await
        .expect_err("refused");
    assert_eq!(err.class(), ErrorClass::Auth);
    let text = err.to_string();
    assert!(
        text.contains("[AUTH] Authentication failed.") && text.contains("{\"status\":\"401\"}"),
        "{text}"
    );
    script.await.expect("script");
}

#[tokio::test]
async fn pipelined_retr_sends_every_command_before_reading_a_reply() {
    let (mut client, mut server) = client_and_server().await;
    let bodies: Vec<Vec<u8>> = (1..=5)
        .map(|n| format!("Subject: {n}\r\n\r\n.dot {n}\r\n").into_bytes())
        .collect();
    let served = bodies.clone();
    let script = tokio::spawn(async move {
        // The server reads all five commands before it answers any: without pipelining
        // the client would wait for the first reply and this would never finish.
        for n in 1..=5 {
            assert_eq!(line(&mut server).await, format!("RETR {n}"));
        }
        for body in &served {
            let mut reply = b"+OK\r\n".to_vec();
            reply.extend(codec::stuff(body));
            server.get_mut().write_all(&reply).await.expect("w");
        }
    });
    let got = tokio::time::timeout(
        T,
        client.retr_many(
            &[(1, 30), (2, 30), (3, 30), (4, 30), (5, 30)],
            true,
            usize::MAX,
        ),
    )
    .await
    .expect("no deadlock")
    .expect("retr");
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .filter_map(|r| match r {
            Retrieved::Body(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(got, bodies);
    script.await.expect("script");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let (a, _b) = tokio::io::duplex(64);
    let err = Client::greet(a, "fake:110".into(), Duration::from_millis(50))
        .await
        .expect_err("timeout");
    assert!(
        matches!(
            err,
            Pop3Error::Timeout {
                step: "greeting",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn debug_never_shows_the_last_command() {
    let (mut client, mut server) = client_and_server().await;
    let script = tokio::spawn(async move {
        assert_eq!(line(&mut server).await, "USER u");
        server.get_mut().write_all(b"+OK\r\n").await.expect("w");
        assert_eq!(line(&mut server).await, "PASS hunter2-secret");
        server.get_mut().write_all(b"+OK in\r\n").await.expect("w");
        server
    });
    client
        .user_pass("u", "hunter2-secret")
        .await
        .expect("login");
    let shown = format!("{client:?} {client:#?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("fake:110"), "{shown}");
    script.await.expect("script");
}

/// A `LIST` that announces little cannot make the client hold more than the budget: the
/// bodies after it are read and dropped, and come back as not fetched.
#[tokio::test]
async fn kept_bodies_stay_within_the_budget_whatever_list_announced() {
    let (mut client, mut server) = client_and_server().await;
    let script = tokio::spawn(async move {
        for n in 1..=3 {
            assert_eq!(line(&mut server).await, format!("RETR {n}"));
        }
        for n in 1..=3 {
            let body = format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(5_000));
            let mut reply = b"+OK\r\n".to_vec();
            reply.extend(codec::stuff(body.as_bytes()));
            server.get_mut().write_all(&reply).await.expect("w");
        }
    });
    let got = client
        .retr_many(&[(1, 10), (2, 10), (3, 10)], true, 4_000)
        .await
        .expect("retr");
    assert!(matches!(got[0], Retrieved::Body(_)), "{got:?}");
    assert!(matches!(got[1], Retrieved::Later), "{got:?}");
    assert!(matches!(got[2], Retrieved::Later), "{got:?}");
    script.await.expect("script");
}

/// A reply longer than the limit is too large, whatever `LIST` said; the session then
/// cannot go on (the rest of that reply is still coming), and says so.
#[tokio::test]
async fn a_reply_longer_than_the_limit_is_too_large_and_ends_the_session() {
    let (mut client, mut server) = client_and_server().await;
    client.limit_messages(2_000);
    let script = tokio::spawn(async move {
        assert_eq!(line(&mut server).await, "RETR 1");
        assert_eq!(line(&mut server).await, "RETR 2");
        let mut reply = b"+OK\r\n".to_vec();
        reply.extend(codec::stuff(
            format!("{}\r\n", "y".repeat(50_000)).as_bytes(),
        ));
        reply.extend(b"+OK\r\nSubject: 2\r\n\r\nsmall\r\n.\r\n");
        let _ = server.get_mut().write_all(&reply).await;
    });
    let got = client
        .retr_many(&[(1, 100), (2, 100)], true, usize::MAX)
        .await
        .expect("retr");
    assert!(matches!(got[0], Retrieved::TooLarge), "{got:?}");
    assert!(matches!(got[1], Retrieved::Later), "{got:?}");
    let err = client.quit().await.expect_err("the session ended");
    assert!(matches!(err, Pop3Error::Ended), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    script.await.expect("script");
}
