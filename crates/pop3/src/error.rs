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
    #[error("the POP3 server cannot serve this account right now: {0}")]
    Busy(String),
    /// The server does not offer what the configuration needs.
    #[error("the POP3 server does not support {0}")]
    Unsupported(&'static str),
    /// A command was refused.
    #[error("the POP3 server refused {step}: {text}")]
    Refused {
        /// The command.
        step: &'static str,
        /// The server's words.
        text: String,
    },
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
            | Self::Refused { .. } => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Busy(t) | Self::LoginRefused { detail: t } => mailferry_core::requested_wait(t),
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
