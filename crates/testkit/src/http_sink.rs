//! An HTTP endpoint on 127.0.0.1 that records every request and answers 200: a stand-in
//! for a notification webhook (ntfy, healthchecks.io) in tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// The body, as text.
    pub body: String,
}

/// The endpoint; its thread ends with the test process.
#[derive(Debug)]
pub struct HttpSink {
    /// The port it listens on.
    pub port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl HttpSink {
    /// Starts listening.
    #[must_use]
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(mut out) = stream.try_clone() else {
                    continue;
                };
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or_default().to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                );
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = r.read_exact(&mut body);
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Request {
                        method,
                        path,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Self { port, seen }
    }

    /// `http://127.0.0.1:PORT/path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    #[must_use]
    pub fn requests(&self) -> Vec<Request> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
