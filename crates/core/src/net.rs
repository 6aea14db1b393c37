//! Plain values about connections and time that every crate speaks of.

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (IMAP 993, POP3 995, SMTP 465).
    Implicit,
    /// Plain text, then STARTTLS/STLS before anything else is sent (IMAP 143, POP3 110,
    /// SMTP 587).
    StartTls,
    /// No TLS at all. Only for loopback tests; the configuration warns about it.
    None,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
