//! The fake OAuth2 identity provider, and small HTTP helpers the tests use with it.

use std::process::Child;

use crate::spawn_python;

/// A fake OAuth2 identity provider (`py/fake_idp.py`) on 127.0.0.1: token, device code
/// and authorize endpoints in Microsoft's shapes, and the tokeninfo endpoint Dovecot's
/// oauth2 passdb asks.
pub struct FakeIdp {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl FakeIdp {
    /// Starts the fake with no valid token.
    #[must_use]
    pub fn start() -> Self {
        let (child, port) = spawn_python("fake_idp.py", &[]);
        Self { child, port }
    }

    /// `http://127.0.0.1:PORT{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Calls a control endpoint; panics unless it answers 200.
    fn control(&self, what: &str, query: &[(&str, &str)]) -> String {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect();
        let (status, body) = http_request(
            self.port,
            "POST",
            &format!("/control/{what}?{}", query.join("&")),
        );
        assert_eq!(status, 200, "fake IdP control {what}: {body}");
        body
    }

    /// Makes `token` a live access token of `email`.
    pub fn grant(&self, token: &str, email: &str) {
        self.control("grant", &[("token", token), ("email", email)]);
    }

    /// Approves the device code `user_code` as `email`, as the user would in a browser.
    pub fn approve(&self, user_code: &str, email: &str) {
        self.control("approve", &[("user_code", user_code), ("email", email)]);
    }

    /// Kills every token of `email`, refresh tokens included.
    pub fn revoke(&self, email: &str) {
        self.control("revoke", &[("email", email)]);
    }

    /// Sets a knob: `access_ttl`, `declared_ttl`, `browser_email`, `slow_down`,
    /// `date_offset`, `interval`.
    pub fn set(&self, key: &str, value: &str) {
        self.control("set", &[(key, value)]);
    }

    /// The next token request fails with this OAuth error.
    pub fn fail_next(&self, error: &str, description: &str) {
        self.control(
            "fail_next",
            &[("error", error), ("description", description)],
        );
    }

    /// Tokens for `email` as a finished sign-in of `client_id` gets them (a refresh token
    /// included): the token response's JSON.
    #[must_use]
    pub fn mint(&self, email: &str, client_id: &str, scope: &str) -> serde_json::Value {
        let query = format!(
            "/control/mint?email={}&client_id={}&scope={}",
            percent(email),
            percent(client_id),
            percent(scope)
        );
        let (status, body) = http_request(self.port, "POST", &query);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("token json")
    }

    /// Counters and the live refresh tokens.
    #[must_use]
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_request(self.port, "GET", "/control/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats json")
    }
}

/// Percent-encodes a query value.
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request to 127.0.0.1:`port` without a body; returns the status and body.
#[must_use]
pub fn http_request(port: u16, method: &str, target: &str) -> (u16, String) {
    http_request_with_body(port, method, target, b"")
}

/// Like [`http_request`], with a request body.
pub fn http_request_with_body(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // One write: a request split over several segments is legal, but there is no need.
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The headers and body of one HTTP GET of `url` (http://127.0.0.1:PORT/...), without
/// following redirects.
#[must_use]
pub fn http_get_raw(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n",
        if path.is_empty() { "/" } else { path }
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
