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
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    system.saturating_add(CLOCK_SHIFT.load(std::sync::atomic::Ordering::Relaxed))
}

/// Seconds added to the system clock by [`shift_clock`]: zero, unless a simulation moves
/// time on.
static CLOCK_SHIFT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Moves mailferry's clock ([`unix_now`], which the store, the token keeper, notices and
/// pruning read) `seconds` ahead, for the whole process. Only a simulation calls this (the
/// simulated year runs in a test process of its own); the service never does.
pub fn shift_clock(seconds: i64) {
    CLOCK_SHIFT.fetch_add(seconds, std::sync::atomic::Ordering::Relaxed);
}

/// How a session logs in: one vocabulary for IMAP, POP3 and SMTP. `S` is `&str` where the
/// login is only passed through (IMAP, POP3), `String` where it is kept and its token
/// replaced after a refresh (SMTP). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Login<S = String> {
    /// A password (app passwords too): IMAP `LOGIN`, POP3 `USER`/`PASS` or `AUTH PLAIN`,
    /// SMTP `AUTH PLAIN`/`LOGIN`.
    Password {
        /// Login name.
        username: S,
        /// The password.
        password: S,
    },
    /// An OAuth2 access token: IMAP OAUTHBEARER or XOAUTH2, POP3 two-step `AUTH XOAUTH2`,
    /// SMTP `AUTH XOAUTH2`.
    OAuth2 {
        /// Login name (the mailbox's address).
        username: S,
        /// The access token.
        token: S,
    },
}

impl<S: AsRef<str>> Login<S> {
    /// The login name.
    pub fn username(&self) -> &str {
        match self {
            Self::Password { username, .. } | Self::OAuth2 { username, .. } => username.as_ref(),
        }
    }
}

impl<S: AsRef<str>> std::fmt::Debug for Login<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Password { .. } => "Password",
            Self::OAuth2 { .. } => "OAuth2",
        };
        f.debug_struct(kind)
            .field("username", &self.username())
            .finish_non_exhaustive()
    }
}
