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
    #[error("{}", unavailable_text(.0))]
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
    /// The server sent a reply the parser cannot read; the session is over. Only a short
    /// excerpt of the reply's first line is kept: never message content.
    #[error("the server sent a reply that cannot be read, beginning {excerpt:?}")]
    Unreadable {
        /// The first bytes of the reply's first line, printable.
        excerpt: String,
    },
    /// The server ended the session (`BYE`, or the connection closed while idling).
    #[error("the server ended the session: {0}")]
    Closed(String),
    /// The server answered a command with `NO` or `BAD` (its words kept, bounded).
    #[error("{}", refused_text(.step, .status, .words))]
    Refused {
        /// The command.
        step: &'static str,
        /// `NO` or `BAD`.
        status: &'static str,
        /// What the server said after the status (response code included).
        words: String,
    },
    /// The access token expired while the session was open: Outlook.com ends it with
    /// `* BYE Session invalidated - AccessTokenExpired`. A new session signs in afresh.
    #[error("the access token expired during the session (the server said {0:?})")]
    TokenExpired(String),
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
            | Self::Unreadable { .. }
            | Self::Closed(_)
            | Self::Refused { .. }
            | Self::TokenExpired(_)
            | Self::Session(_) => ErrorClass::Transient,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::LoginRefused(t) | Self::LoginUnavailable(t) | Self::Closed(t) => {
                Refusal::of(t).pause()
            }
            Self::Refused { words, .. } => Refusal::of(words).pause(),
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
            Self::Refused { words, .. } | Self::LoginUnavailable(words) | Self::Closed(words) => {
                Refusal::of(words).hint()
            }
            Self::TokenExpired(_) => Some(
                "nothing to do: mailferry signs in again with a fresh access token and carries on",
            ),
            Self::Unreadable { .. } => Some(
                "the message it belongs to is retried, then reported as refused; the others are fetched",
            ),
            _ => None,
        }
    }
}

/// What a server's refusal means, read from its words (DESIGN.md, "What servers actually
/// send", has the sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Request is throttled. Suggested Backoff Time: N milliseconds` (Exchange, as `NO`
    /// or `BAD`), or `Server Unavailable. NN` (Exchange; no time given): stay away this long.
    Throttled(Duration),
    /// `User is authenticated but not connected.` (Exchange: its back end is not ready,
    /// the token lacks the IMAP scope, or too many reconnects).
    NotConnected,
    /// Busy or failing for now: `[UNAVAILABLE]`, `[OVERQUOTA]`, `[LIMIT]`, `[INUSE]`,
    /// `Too many simultaneous connections`, `Please try again later`, `System Error`.
    Busy,
    /// Anything else: read by the command it answers.
    Other,
}

/// How long to stay away after `Server Unavailable`, which names no time.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(60);

impl Refusal {
    /// Reads `words`.
    pub(crate) fn of(words: &str) -> Self {
        let lower = words.to_ascii_lowercase();
        if let Some(wait) = mailferry_core::requested_wait(words) {
            Self::Throttled(wait)
        } else if lower.contains("server unavailable") {
            Self::Throttled(UNAVAILABLE_PAUSE)
        } else if lower.contains("authenticated but not connected") {
            Self::NotConnected
        } else if [
            "[unavailable]",
            "[overquota]",
            "[limit]",
            "[inuse]",
            "too many simultaneous connections",
            "try again later",
            "system error",
            "throttl",
        ]
        .iter()
        .any(|w| lower.contains(w))
        {
            Self::Busy
        } else {
            Self::Other
        }
    }

    /// Whether the server's state (not one folder) is why it refused.
    pub(crate) fn is_temporary(self) -> bool {
        self != Self::Other
    }

    /// Whether the refusal is about the session, never one message: Yahoo answers a
    /// message it cannot serve with `NO [UNAVAILABLE] UID FETCH Server error while
    /// fetching messages` (MailKit #358, imapsync #119), so `[UNAVAILABLE]` alone does not
    /// tell; throttling and "not connected" do.
    pub(crate) fn is_session_wide(self) -> bool {
        matches!(self, Self::Throttled(_) | Self::NotConnected)
    }

    /// The least time to stay away from the server.
    pub(crate) fn pause(self) -> Option<Duration> {
        match self {
            Self::Throttled(d) => Some(d),
            Self::NotConnected => Some(UNAVAILABLE_PAUSE),
            Self::Busy | Self::Other => None,
        }
    }

    fn hint(self) -> Option<&'static str> {
        match self {
            Self::Throttled(_) => Some(
                "the provider asked mailferry to slow down; it waits at least as long as asked before it connects again",
            ),
            Self::NotConnected => Some(
                "Exchange says this while the mailbox is not ready, and mailferry tries again after a pause; if it lasts: check that IMAP is switched on for the mailbox (Outlook.com: Settings > Mail > Forwarding and IMAP), that the sign-in asked for the IMAP scope (https://outlook.office.com/IMAP.AccessAsUser.All; run mailferry auth NAME again after changing it), and that fewer programs connect to the mailbox at once",
            ),
            Self::Busy => Some(
                "the server is busy or limiting this mailbox; mailferry tries again later, nothing is lost meanwhile",
            ),
            Self::Other => None,
        }
    }
}

/// A wait as a person reads it: `1.5 s`, `300 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn unavailable_text(words: &str) -> String {
    match Refusal::of(words) {
        Refusal::Throttled(d) => {
            format!(
                "throttled by the server for {} (at login: {words})",
                seconds(d)
            )
        }
        _ => format!("the server cannot log in right now: {words}"),
    }
}

fn refused_text(step: &str, status: &str, words: &str) -> String {
    match Refusal::of(words) {
        Refusal::Throttled(d) => {
            format!(
                "throttled by the server for {} ({step} answered {status} {words})",
                seconds(d)
            )
        }
        _ => format!("the server refused {step}: {status} {words}"),
    }
}

impl ImapError {
    /// The error for a session the server ended with `BYE text`.
    pub(crate) fn ended(text: String) -> Self {
        if text.contains("AccessTokenExpired") {
            Self::TokenExpired(text)
        } else {
            Self::Closed(text)
        }
    }

    /// The same error again, for a session that ended at it: every later request says so.
    pub(crate) fn again(&self) -> Self {
        match self {
            Self::Unreadable { excerpt } => Self::Unreadable {
                excerpt: excerpt.clone(),
            },
            Self::Refused {
                step,
                status,
                words,
            } => Self::Refused {
                step,
                status,
                words: words.clone(),
            },
            Self::TokenExpired(t) => Self::TokenExpired(t.clone()),
            Self::Timeout { step, after } => Self::Timeout {
                step,
                after: *after,
            },
            other => Self::Closed(other.to_string()),
        }
    }
}

/// At most this many characters of a server's reply are quoted in an error.
const EXCERPT: usize = 80;

/// The first line of `text`, at most [`EXCERPT`] characters, printable ASCII only.
pub(crate) fn excerpt(text: &str) -> String {
    let line = text.split(['\r', '\n']).next().unwrap_or_default();
    let mut out: String = line
        .chars()
        .take(EXCERPT)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if line.chars().count() > EXCERPT {
        out.push_str("...");
    }
    out
}

/// async-imap's errors, without the raw bytes some of them carry: its parse errors quote
/// the whole unparsed buffer (message headers and bodies included), which must not reach
/// logs, the ledger or a summary.
pub(crate) fn sanitize(e: async_imap::error::Error) -> ImapError {
    use async_imap::error::{Error, ParseError};
    match e {
        Error::Io(io) => {
            let text = io.to_string();
            match text.split_once(" during parsing of ") {
                Some((_, buffer)) => {
                    // The buffer comes as a Debug string: quoted, with escapes. Its first
                    // line is the response's own syntax (`* 71 FETCH (UID 71 BODY[] ~{1082}`).
                    let buffer = buffer.trim_start_matches('"');
                    let first = buffer.split("\\r\\n").next().unwrap_or_default();
                    ImapError::Unreadable {
                        excerpt: excerpt(first),
                    }
                }
                None if text.len() > 4 * EXCERPT => {
                    ImapError::Session(Error::Io(std::io::Error::new(io.kind(), excerpt(&text))))
                }
                None => ImapError::Session(Error::Io(io)),
            }
        }
        Error::Parse(ParseError::Invalid(bytes)) => ImapError::Unreadable {
            excerpt: excerpt(&String::from_utf8_lossy(&bytes)),
        },
        Error::Parse(ParseError::DataNotUtf8(..)) => {
            ImapError::Protocol("the server sent text that is not UTF-8 where text belongs".into())
        }
        Error::Parse(ParseError::Unexpected(what)) => {
            // A Debug rendering of the response: its kind only, never its data.
            let kind: String = what
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .take(40)
                .collect();
            ImapError::Protocol(format!("an unexpected {kind} response"))
        }
        Error::No(text) => ImapError::Session(Error::No(bounded(server_words(&text)))),
        Error::Bad(text) => ImapError::Session(Error::Bad(bounded(server_words(&text)))),
        other => ImapError::Session(other),
    }
}

/// The server's own words in async-imap's rendering of a tagged `NO` or `BAD`
/// (`code: Some(Alert), info: Some("text")`): `[ALERT] text`. Other text is kept.
pub(crate) fn server_words(text: &str) -> String {
    // Two renderings: `code: .., info: ..` (checked commands) and `outcome: Outcome {
    // code: .., information: .. }` (EXAMINE, SELECT, STATUS).
    let text = text
        .strip_prefix("outcome: Outcome { ")
        .and_then(|t| t.strip_suffix(" }"))
        .map_or_else(
            || text.to_owned(),
            |t| t.replacen(", information: ", ", info: ", 1),
        );
    let Some((code, info)) = text
        .strip_prefix("code: ")
        .and_then(|rest| rest.split_once(", info: "))
    else {
        return text;
    };
    let info = info
        .strip_prefix("Some(\"")
        .and_then(|i| i.strip_suffix("\")"))
        .map(|i| i.replace("\\\"", "\"").replace("\\\\", "\\"))
        .unwrap_or_default();
    let code = code
        .strip_prefix("Some(")
        .and_then(|c| c.strip_suffix(')'))
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(|c| format!("[{}] ", c.to_ascii_uppercase()))
        .unwrap_or_default();
    let words = format!("{code}{info}");
    if words.trim().is_empty() {
        "(no reason given)".to_owned()
    } else {
        words.trim().to_owned()
    }
}

/// A server's status text, cut to a few hundred characters.
fn bounded(text: String) -> String {
    if text.len() <= 4 * EXCERPT {
        text
    } else {
        excerpt(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_keep_only_the_first_line_of_the_reply() {
        // What async-imap's stream reports when imap-proto fails on a binary literal.
        let body = "Subject: secret plans\r\n\r\nthe body".to_owned();
        let io = std::io::Error::other(format!(
            "Error(Error {{ input: [126, 123], code: TakeWhile1 }}) during parsing of {:?}",
            format!("* 71 FETCH (UID 71 BODY[] ~{{1082}}\r\n{body}")
        ));
        let e = sanitize(async_imap::error::Error::Io(io));
        let shown = format!("{e}");
        assert!(matches!(e, ImapError::Unreadable { .. }), "{e:?}");
        assert!(
            shown.contains("* 71 FETCH (UID 71 BODY[] ~{1082}"),
            "{shown}"
        );
        assert!(
            !shown.contains("secret") && !shown.contains("TakeWhile"),
            "{shown}"
        );
    }

    #[test]
    fn long_server_texts_are_cut() {
        let e = sanitize(async_imap::error::Error::No("x".repeat(10_000)));
        assert!(format!("{e:?}").len() < 400);
    }

    #[test]
    fn a_refusal_reads_in_the_servers_words_not_as_a_debug_rendering() {
        assert_eq!(
            server_words(
                "code: None, info: Some(\"[AUTHENTICATIONFAILED] Authentication failed.\")"
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(
            server_words("code: Some(Alert), info: Some(\"Say \\\"hi\\\" first\")"),
            "[ALERT] Say \"hi\" first"
        );
        assert_eq!(server_words("code: None, info: None"), "(no reason given)");
        assert_eq!(server_words("plain words"), "plain words");
        assert_eq!(
            server_words(
                "outcome: Outcome { code: None, information: Some(\"User is authenticated but not connected.\") }"
            ),
            "User is authenticated but not connected."
        );
        let e = sanitize(async_imap::error::Error::No(
            "code: None, info: Some(\"Mailbox doesn't exist: Archive\")".into(),
        ));
        // The session error's cause carries the words (the engine prints the chain).
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        let cause = cause.unwrap_or_default();
        assert!(cause.contains("Mailbox doesn't exist: Archive"), "{cause}");
        assert!(!cause.contains("info:"), "{cause}");
    }
}
