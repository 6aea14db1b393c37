//! SMTP errors and their classes.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};

/// Everything that can go wrong delivering over SMTP.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The server could not be reached or the session could not be set up (greeting,
    /// EHLO, STARTTLS).
    #[error("cannot connect to the SMTP server {server}")]
    Connect {
        /// `host:port`
        server: String,
        /// The cause.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// TCP or the TLS handshake failed.
    #[error("cannot connect to the SMTP server {server}")]
    Network {
        /// `host:port`
        server: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server refused our credentials.
    #[error("the SMTP server refused the login")]
    Auth(#[source] lettre::transport::smtp::Error),
    /// A network step took too long.
    #[error("SMTP {step} timed out after {}s", .after.as_secs())]
    Timeout {
        /// What was being waited for.
        step: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The connection broke or the server closed it (including 421).
    #[error("the SMTP session failed during {step}")]
    Session {
        /// The command or phase.
        step: &'static str,
        /// The cause.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The server refused this message for now (4xx).
    #[error("the SMTP server deferred the message: {reply}")]
    Deferred {
        /// The server's reply.
        reply: String,
    },
    /// The server refused this message for good (5xx), or the message cannot be carried
    /// by SMTP at all.
    #[error("the message was refused: {reply}")]
    Refused {
        /// The server's reply, or why SMTP cannot carry it.
        reply: String,
    },
    /// The configuration holds an address lettre cannot use.
    #[error("{what} {value:?} is not a usable address")]
    Address {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl Classify for SmtpError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { .. }
            | Self::Network { .. }
            | Self::Timeout { .. }
            | Self::Session { .. } => ErrorClass::Transient,
            Self::Auth(_) => ErrorClass::Auth,
            Self::Deferred { .. } => ErrorClass::Deferred,
            Self::Refused { .. } => ErrorClass::Refused,
            Self::Address { .. } => ErrorClass::Config,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Connect { .. } | Self::Network { .. } => {
                Some("check the destination's host, port and tls settings")
            }
            Self::Auth(_) => Some("check the destination's username and password file"),
            Self::Refused { .. } => Some("the message stays at the source; see the reason"),
            _ => None,
        }
    }

    fn may_have_arrived(&self) -> bool {
        matches!(
            self,
            Self::Session {
                step: "message data",
                ..
            } | Self::Timeout {
                step: "message data",
                ..
            }
        )
    }
}
