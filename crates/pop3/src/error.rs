//! POP3 errors and their classes.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};

use crate::codec;

/// Everything that can go wrong with a POP3 source.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    /// TCP, TLS or a read/write failed.
    #[error("cannot talk to the POP3 server {server}")]
    Io {
        /// `host:port`
        server: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A network step took longer than the configured timeout.
    #[error("POP3 {step} timed out after {}s", .after.as_secs())]
    Timeout {
        /// What was being waited for.
        step: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The server's bytes are not POP3, or exceed the limits.
    #[error("the POP3 server sent an unusable reply")]
    Protocol(#[source] codec::Error),
    /// The server closed the connection.
    #[error("the POP3 server closed the connection during {0}")]
    Closed(&'static str),
    /// The server refused the login; `detail` carries what it said (for XOAUTH2, its JSON
    /// challenge too).
    #[error("the server refused the login: {detail}")]
    LoginRefused {
        /// The server's words.
        detail: String,
    },
    /// The server is temporarily unable to serve us: `[LOGIN-DELAY]`, `[IN-USE]`,
    /// `[SYS/TEMP]` or an `[UNAVAILABLE]`-style temporary failure.
    #[error("{}", busy_text(.0))]
    Busy(String),
    /// The server does not offer what the configuration needs.
    #[error("the POP3 server does not support {0}")]
    Unsupported(&'static str),
    /// The session ended at a reply longer than `max-message-size` (its bytes were still
    /// coming); a new session carries on.
    #[error("the POP3 session ended at a message longer than max-message-size")]
    Ended,
    /// A command was refused.
    #[error("the POP3 server refused {step}: {text}")]
    Refused {
        /// The command.
        step: &'static str,
        /// The server's words.
        text: String,
    },
}

/// How long the server asked to be left alone: a number it gave, or a minute for
/// Exchange's `Server Unavailable. 21`, which gives none.
fn pause(text: &str) -> Option<Duration> {
    mailferry_core::requested_wait(text).or_else(|| {
        text.contains("Server Unavailable")
            .then_some(Duration::from_secs(60))
    })
}

fn busy_text(text: &str) -> String {
    match pause(text) {
        Some(d) => format!(
            "throttled by the server for {} s: {text}",
            d.as_secs_f64().ceil()
        ),
        None => format!("the POP3 server cannot serve this account right now: {text}"),
    }
}

impl Classify for Pop3Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::LoginRefused { .. } => ErrorClass::Auth,
            Self::Unsupported(_) => ErrorClass::Config,
            Self::Io { .. }
            | Self::Timeout { .. }
            | Self::Protocol(_)
            | Self::Closed(_)
            | Self::Busy(_)
            | Self::Ended
            | Self::Refused { .. } => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Busy(t) => pause(t),
            Self::LoginRefused { detail: t } => mailferry_core::requested_wait(t),
            _ => None,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::LoginRefused { detail }
                if detail.contains("Basic authentication is disabled") =>
            {
                Some(
                    "this provider refuses passwords, app passwords included: the account needs OAuth2",
                )
            }
            Self::LoginRefused { .. } => Some(
                "check the user name and the password (or token) file; many providers need an app password and POP enabled in their settings",
            ),
            Self::Busy(_) => {
                Some("the server asks for a pause between logins; the next run will try again")
            }
            Self::Io { .. } => {
                Some("check host, port and tls in the account, and that the server is reachable")
            }
            _ => None,
        }
    }
}
