//! SMTP errors and their classes.

use std::time::Duration;

use mailferry_core::{Classify, ErrorClass};

/// The phase of an SMTP session a reply or a failure belongs to: what it means depends on
/// it (a 5xx to `AUTH` is the login's, one after the message data the message's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpStep {
    /// The server's greeting.
    Greeting,
    /// `STARTTLS` and the handshake.
    StartTls,
    /// `EHLO`.
    Ehlo,
    /// `AUTH`.
    Auth,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA` (the command, before the message).
    Data,
    /// The message itself and the reply to its end: after this, it may have arrived.
    MessageData,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
}

impl std::fmt::Display for SmtpStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Greeting => "greeting",
            Self::StartTls => "STARTTLS",
            Self::Ehlo => "EHLO",
            Self::Auth => "AUTH",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::MessageData => "message data",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
        })
    }
}

/// What an envelope refusal is about, for the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeCause {
    /// The server wants a login first (530, 5.7.0).
    NeedsLogin,
    /// The sender taken from the message's Return-Path or From (`envelope-from = "return-path"`).
    SenderFromMessage,
    /// The configured `envelope-from`.
    ConfiguredSender,
    /// The default sender, the first `envelope-to` (no `envelope-from` set).
    DefaultSender,
    /// A recipient (`envelope-to`).
    Recipient,
    /// The name mailferry gave in `EHLO` (Postfix `reject_non_fqdn_helo_hostname`, told at
    /// `RCPT` by default).
    HeloName,
    /// Temporarily (4xx): greylisting, a full mailbox, a busy server.
    Temporary,
}

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
    /// The server refused to set up the session before lettre took over (a refusing
    /// greeting, `EHLO` or `STARTTLS`, no STARTTLS offered, plain text after its reply).
    #[error("cannot set up the SMTP session with {server} at {step}: {reply}")]
    Setup {
        /// `host:port`
        server: String,
        /// Greeting, EHLO or STARTTLS.
        step: SmtpStep,
        /// The server's reply, or what was wrong with it.
        reply: String,
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
        step: SmtpStep,
        /// The limit.
        after: Duration,
    },
    /// The connection broke or the server closed it (including 421).
    #[error("the SMTP session failed during {step}")]
    Session {
        /// The command or phase.
        step: SmtpStep,
        /// The cause.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// Writing to the connection failed (the message data, written by mailferry).
    #[error("the SMTP session failed during {step}")]
    Stream {
        /// The command or phase.
        step: SmtpStep,
        /// The cause.
        #[source]
        source: std::io::Error,
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
    /// A refusal that may be meant for every message rather than this one: a 5xx to
    /// `DATA` (Exim `acl_smtp_predata`, Postfix `smtpd_data_restrictions`, a policy
    /// service), or a refusal of the sender taken from this message (`envelope-from =
    /// "return-path"`: a forged domain, SPF). The message rests and is tried again; the
    /// same reply to several messages in a row stops the run.
    #[error("the SMTP server refused the message at {step}: {reply}")]
    Doubtful {
        /// `MAIL`, `RCPT` or `DATA`.
        step: SmtpStep,
        /// The server's reply.
        reply: String,
    },
    /// The server refused the envelope (MAIL or RCPT) for a reason that is not about this
    /// message: a recipient it does not know, a sender the login may not use, a relay
    /// that wants a login. Every message would get the same answer, so the run stops and
    /// no message is settled.
    #[error("the SMTP server refused the envelope at {step}: {reply}")]
    Envelope {
        /// `MAIL` or `RCPT`.
        step: SmtpStep,
        /// The server's reply.
        reply: String,
        /// Why, as far as the reply tells.
        cause: EnvelopeCause,
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

/// `fut`, or [`SmtpError::Timeout`] at `step` after `limit`.
pub(crate) async fn within<T>(
    step: SmtpStep,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, SmtpError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| SmtpError::Timeout { step, after: limit })
}

impl Classify for SmtpError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { .. }
            | Self::Setup { .. }
            | Self::Network { .. }
            | Self::Timeout { .. }
            | Self::Session { .. }
            | Self::Stream { .. } => ErrorClass::Transient,
            Self::Auth(_) => ErrorClass::Auth,
            Self::Deferred { .. } => ErrorClass::Deferred,
            Self::Refused { .. } => ErrorClass::Refused,
            Self::Doubtful { .. } => ErrorClass::Doubtful,
            Self::Address { .. } => ErrorClass::Config,
            Self::Envelope {
                cause: EnvelopeCause::Temporary,
                ..
            } => ErrorClass::Transient,
            Self::Envelope { .. } => ErrorClass::Config,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Connect { .. } | Self::Setup { .. } | Self::Network { .. } => {
                Some("check the destination's host, port and tls settings")
            }
            Self::Auth(_) => Some("check the destination's username and password file"),
            Self::Refused { .. } => Some("the message stays at the source; see the reason"),
            Self::Doubtful { .. } => Some(
                "the message stays at the source and is tried again; if every message gets this answer, the destination's policy refuses them (see its log)",
            ),
            Self::Envelope { cause, .. } => Some(match cause {
                EnvelopeCause::NeedsLogin => {
                    "the SMTP server wants a login before it takes mail: set username and password-file (or auth) on the destination NAME"
                }
                EnvelopeCause::SenderFromMessage => {
                    "the server refuses each message's own sender (its Return-Path or From, used with envelope-from = \"return-path\"): set envelope-from on the destination NAME to an address this login may use"
                }
                EnvelopeCause::DefaultSender => {
                    "the server refuses the envelope sender mailferry uses unless told otherwise (the first envelope-to, so that bounces reach you): set envelope-from on the destination NAME to an address this login may use"
                }
                EnvelopeCause::ConfiguredSender => {
                    "the server refuses envelope-from of the destination NAME: set it to an address this login may use"
                }
                EnvelopeCause::Recipient => {
                    "check envelope-to of the destination NAME: the server does not take mail for that address (a typo, or a server that does not relay for you without a login)"
                }
                EnvelopeCause::HeloName => {
                    "the server refuses the name mailferry gives in EHLO: set hello-name on the destination NAME to this machine's full domain name"
                }
                EnvelopeCause::Temporary => {
                    "the server refused the envelope for now; mailferry tries again at the next run"
                }
            }),
            _ => None,
        }
    }

    fn may_have_arrived(&self) -> bool {
        matches!(
            self,
            Self::Session {
                step: SmtpStep::MessageData,
                ..
            } | Self::Stream {
                step: SmtpStep::MessageData,
                ..
            } | Self::Timeout {
                step: SmtpStep::MessageData,
                ..
            }
        )
    }
}
