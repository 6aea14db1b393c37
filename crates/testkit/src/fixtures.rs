//! Message bytes for tests.

/// A plain, well-formed message with CRLF line ends and a unique Message-ID.
#[must_use]
pub fn simple(n: usize) -> Vec<u8> {
    format!(
        "Return-Path: <bounces+{n}@origin.example>\r\n\
         From: Sender {n} <sender{n}@origin.example>\r\n\
         To: alice@test.example\r\n\
         Subject: test message {n}\r\n\
         Message-ID: <msg{n}@origin.example>\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         \r\n\
         Hello number {n}.\r\n\
         .A line starting with a dot.\r\n\
         .\r\n\
         Last line.\r\n"
    )
    .into_bytes()
}

/// A message of about `size` bytes, body lines of 76 characters.
#[must_use]
pub fn sized(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bulk@origin.example\r\nTo: alice@test.example\r\nSubject: bulk {n}\r\nMessage-ID: <bulk{n}@origin.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    while m.len() + line.len() <= size.max(m.len() + line.len()) && m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// A message that the test SMTP receiver answers according to `mode`
/// (`451-once`, `550`, `slow`).
#[must_use]
pub fn with_smtp_mode(n: usize, mode: &str) -> Vec<u8> {
    format!(
        "From: sender{n}@origin.example\r\nSubject: mode {mode}\r\nMessage-ID: <mode{n}@origin.example>\r\nX-Test-Smtp: {mode}\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

/// A message that the fake Gmail API answers according to `mode` (`400`, `slow`).
#[must_use]
pub fn with_gmail_mode(n: usize, mode: &str) -> Vec<u8> {
    format!(
        "From: sender{n}@origin.example\r\nSubject: gmail {mode}\r\nMessage-ID: <gmail{n}@origin.example>\r\nX-Test-Gmail: {mode}\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}
