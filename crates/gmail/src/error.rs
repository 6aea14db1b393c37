//! Gmail API failures, sorted by what the engine does about them.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};

/// A failed Gmail API call.
#[derive(Debug, thiserror::Error)]
pub enum GmailError {
    /// 401: the access token was refused. Refresh it and try once more.
    #[error("Gmail refused the access token (HTTP 401): {0}")]
    Unauthorized(String),
    /// 403 without a rate-limit reason: the token lacks a scope, or the API is off.
    #[error("Gmail refused the request (HTTP 403 {reason}): {message}")]
    Forbidden {
        /// `errors[0].reason`.
        reason: String,
        /// `error.message`.
        message: String,
    },
    /// Gmail refused this message for good (400: a blocked attachment, too large, not a
    /// message). Record it, report it, leave it at the source.
    #[error("Gmail refused the message (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Gmail's words.
        message: String,
    },
    /// Still throttled or failing (429, rate-limit 403, 5xx) after every retry.
    #[error(
        "Gmail is throttling or failing (HTTP {status}) and kept doing so for {waited:?}: {message}"
    )]
    Busy {
        /// The last HTTP status.
        status: u16,
        /// Gmail's words.
        message: String,
        /// How long mailferry retried.
        waited: Duration,
    },
    /// No answer. When the upload had started, Gmail may have imported the message.
    #[error("cannot reach the Gmail API ({step})")]
    Network {
        /// What was going on.
        step: &'static str,
        /// Whether the message may have arrived anyway.
        after_upload: bool,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Nothing moved on the connection for `io-timeout` (a slow upload that keeps moving
    /// is not this). When the whole upload had gone out, Gmail may have the message.
    #[error("the Gmail API went silent for {}s ({step})", .after.as_secs())]
    Silent {
        /// What was going on.
        step: &'static str,
        /// The limit.
        after: Duration,
        /// Whether the message may have arrived anyway.
        after_upload: bool,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from the Gmail API: {0}")]
    Protocol(String),
    /// The upload went out and Gmail answered with a server error, or with a success that
    /// does not parse: the message may be stored. The attempt stays open and is looked up
    /// (`rfc822msgid:`) before the message is sent again.
    #[error("Gmail may have stored the message ({what}); it is looked up before any new attempt")]
    Unconfirmed {
        /// What happened.
        what: String,
    },
    /// A label mailferry was told to set cannot be created (an invalid name): the
    /// configuration's fault, not the message's.
    #[error("Gmail refused to create the label {name:?} (HTTP {status}): {message}")]
    Label {
        /// The label's name.
        name: String,
        /// HTTP status.
        status: u16,
        /// Gmail's words.
        message: String,
    },
    /// The daily quota is used up: nothing goes in until Google resets it.
    #[error("Gmail's daily quota is used up (HTTP 403 {reason}): {message}")]
    Quota {
        /// `dailyLimitExceeded`, `quotaExceeded`.
        reason: String,
        /// Gmail's words.
        message: String,
    },
    /// No access token to send (the sign-in's own error, with its class and hint).
    #[error("{message}")]
    Token {
        /// What the token keeper said.
        message: String,
        /// Its class.
        class: ErrorClass,
        /// Its hint.
        hint: Option<&'static str>,
    },
}

impl Classify for GmailError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unauthorized(_) | Self::Forbidden { .. } => ErrorClass::Auth,
            Self::Refused { .. } => ErrorClass::Refused,
            Self::Busy { .. }
            | Self::Network { .. }
            | Self::Silent { .. }
            | Self::Protocol(_)
            | Self::Unconfirmed { .. }
            | Self::Quota { .. } => ErrorClass::Transient,
            Self::Label { .. } => ErrorClass::Config,
            Self::Token { class, .. } => *class,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized(_) => Some("sign in again with `mailferry auth NAME`"),
            Self::Forbidden { .. } => Some(
                "the sign-in lacks a Gmail scope, or the Gmail API is not enabled in your Google Cloud project: enable it, then run `mailferry auth NAME` and accept every scope",
            ),
            Self::Busy { .. } => {
                Some("Gmail's per-user quota is exhausted for now; the next run carries on")
            }
            Self::Quota { .. } => {
                Some("Gmail's daily quota is used up; mailferry carries on when Google resets it")
            }
            Self::Label { .. } => Some(
                "change the label's name in labels = [...] (of the destination NAME or the account): Gmail does not accept it",
            ),
            Self::Token { hint, .. } => *hint,
            _ => None,
        }
    }

    fn may_have_arrived(&self) -> bool {
        matches!(
            self,
            Self::Network {
                after_upload: true,
                ..
            } | Self::Silent {
                after_upload: true,
                ..
            } | Self::Unconfirmed { .. }
        )
    }
}
