//! IMAP errors and their classes.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};

/// Everything that can go wrong with an IMAP source.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// DNS, TCP or the TLS handshake failed.
    #[error("cannot connect to {server}")]
    Connect {
        /// `host:port`
        server: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A network step took longer than the configured timeout.
    #[error("{step} timed out after {}s", .after.as_secs())]
    Timeout {
        /// What was being waited for.
        step: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The server refused the login.
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    /// The server is temporarily unable to log us in (`[UNAVAILABLE]`, throttling).
    #[error("the server cannot log in right now: {0}")]
    LoginUnavailable(String),
    /// The server does not offer what the configuration asks for (e.g. STARTTLS).
    #[error("the server does not support {0}")]
    Unsupported(&'static str),
    /// The folder cannot be opened.
    #[error("cannot open folder {folder:?}: {reason}")]
    Folder {
        /// The folder.
        folder: String,
        /// The server's words.
        reason: String,
    },
    /// The server sent something that does not fit the protocol.
    #[error("unexpected IMAP response: {0}")]
    Protocol(String),
    /// The connection failed mid-session.
    #[error("the IMAP session failed")]
    Session(#[source] async_imap::error::Error),
}

impl Classify for ImapError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::LoginRefused(_) => ErrorClass::Auth,
            Self::Unsupported(_) | Self::Folder { .. } => ErrorClass::Config,
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::LoginUnavailable(_)
            | Self::Protocol(_)
            | Self::Session(_) => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::LoginRefused(t) | Self::LoginUnavailable(t) => mailferry_core::requested_wait(t),
            _ => None,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::LoginRefused(text) if text.contains("Basic authentication is disabled") => Some(
                "this provider refuses passwords, app passwords included: the account needs OAuth2",
            ),
            Self::LoginRefused(text) if text.contains("via a web browser") => Some(
                "the provider wants a security check: sign in once on its web site, then retry",
            ),
            Self::LoginRefused(_) => Some(
                "check the user name and the password file; many providers need an app password and IMAP enabled in their settings",
            ),
            Self::Connect { .. } => {
                Some("check host, port and tls in the account, and that the server is reachable")
            }
            Self::Folder { .. } => {
                Some("check the account's folders list against the folder names on the server")
            }
            _ => None,
        }
    }
}
