//! The server's tagged completions (`A12 OK`, `A12 NO ...`, `A12 BAD ...`) and its `BYE`,
//! seen where its bytes are read.
//!
//! async-imap ends the response stream of `UID FETCH`, `UID STORE`, `UID EXPUNGE` and the
//! listing at the tagged line without looking at its status (its `parse_fetches` filters on
//! the tag alone: async-imap issue 95), so a `NO` or a `BAD` reads as "the server had
//! nothing", and a connection that closes mid-answer ends the stream like a completion.
//! The reader that already rewrites binary literals (`literal8.rs`) sees every byte the
//! server sends and knows where literals begin and end; it hands each response line (never
//! a literal's bytes) to [`Lines`], which keeps the last tagged completion and any `BYE` in
//! a [`Replies`] handle that the session shares. Before each command the session forgets
//! the last completion ([`Replies::begin`]); after its stream ends it reads the new one
//! ([`Replies::take`]): `OK` carries on, `NO`/`BAD` become errors in the server's words,
//! and none at all means the connection ended before the server answered.
//!
//! Why here and not another client: the observation costs a few comparisons per line, it
//! covers every command async-imap sends (those it checks itself too), and it needs no fork
//! of async-imap or move to another parser.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::ImapError;

/// How a command ended ([RFC 3501 §7.1]).
///
/// [RFC 3501 §7.1]: https://www.rfc-editor.org/rfc/rfc3501#section-7.1
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `OK`: done.
    Ok,
    /// `NO`: the server would not do it.
    No,
    /// `BAD`: the server did not accept the command (Exchange also throttles with it).
    Bad,
}

impl Status {
    /// The word as the server sends it.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::No => "NO",
            Self::Bad => "BAD",
        }
    }
}

/// A tagged completion: its status and the text after it (response code included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) status: Status,
    /// The server's words, printable, at most [`TEXT`] characters.
    pub(crate) text: String,
}

impl Completion {
    /// The error this completion means: `NO`/`BAD` in the server's words.
    pub(crate) fn refusal(&self, step: &'static str) -> ImapError {
        ImapError::Refused {
            step,
            status: self.status.word(),
            words: if self.text.is_empty() {
                "(no reason given)".to_owned()
            } else {
                self.text.clone()
            },
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    tagged: Option<Completion>,
    bye: Option<String>,
}

/// What the reader saw, shared between the stream and the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replies(Arc<Mutex<Seen>>);

impl Replies {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the last completion: called before a command is sent.
    pub(crate) fn begin(&self) {
        self.seen().tagged = None;
    }

    /// The completion read since [`Self::begin`], if one arrived.
    pub(crate) fn take(&self) -> Option<Completion> {
        self.seen().tagged.take()
    }

    /// The text of a `BYE` the server sent on this connection, if it did.
    pub(crate) fn bye(&self) -> Option<String> {
        self.seen().bye.clone()
    }
}

/// What the completion of the command `step` means, once its response stream ended: `OK`
/// carries on, `NO`/`BAD` are [`ImapError::Refused`], and no completion at all means the
/// connection ended first (after a `BYE`, in its words).
pub(crate) fn outcome(step: &'static str, replies: &Replies) -> Result<(), ImapError> {
    match replies.take() {
        Some(c) if c.status == Status::Ok => Ok(()),
        Some(c) => Err(c.refusal(step)),
        None => Err(cut_short(step, replies)),
    }
}

/// The error for a connection that ended before `step` was answered.
pub(crate) fn cut_short(step: &'static str, replies: &Replies) -> ImapError {
    replies.bye().map_or_else(
        || {
            ImapError::Closed(format!(
                "the connection closed before the server answered {step}"
            ))
        },
        ImapError::ended,
    )
}

/// Runs a command whose completion async-imap checks itself (EXAMINE, SELECT, STATUS,
/// UID COPY, UID MOVE, starting a stream) under `limit`. A refusal is told in the server's
/// words as seen on the wire, not in async-imap's rendering of them; a connection lost
/// after a `BYE` is told as that `BYE`.
pub(crate) async fn checked<T>(
    step: &'static str,
    limit: Duration,
    replies: &Replies,
    fut: impl Future<Output = Result<T, async_imap::error::Error>>,
) -> Result<T, ImapError> {
    use async_imap::error::Error;
    replies.begin();
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(ImapError::Timeout { step, after: limit }),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ (Error::No(_) | Error::Bad(_)))) => match replies.take() {
            Some(c) if c.status != Status::Ok => Err(c.refusal(step)),
            _ => Err(ImapError::from(e)),
        },
        Ok(Err(Error::ConnectionLost | Error::Io(_))) if replies.bye().is_some() => {
            Err(cut_short(step, replies))
        }
        Ok(Err(Error::ConnectionLost)) => Err(cut_short(step, replies)),
        Ok(Err(e)) => Err(ImapError::from(e)),
    }
}

/// A response line is looked at up to this many bytes (tagged lines and `BYE` are short).
const HEAD: usize = 512;
/// At most this many characters of the server's words are kept.
const TEXT: usize = 300;

/// Collects response lines from the bytes outside literals and records completions.
#[derive(Debug)]
pub(crate) struct Lines {
    head: Vec<u8>,
    /// The response announced a literal: it is data (a FETCH), not a completion.
    continued: bool,
    replies: Replies,
}

impl Lines {
    pub(crate) fn new(replies: Replies) -> Self {
        Self {
            head: Vec::with_capacity(128),
            continued: false,
            replies,
        }
    }

    /// One byte of a response line; `literal_follows` when it is the `\n` that ends a
    /// literal's announcement (the response goes on after the literal).
    pub(crate) fn byte(&mut self, b: u8, literal_follows: bool) {
        if literal_follows {
            self.continued = true;
        } else if b == b'\n' {
            if !std::mem::take(&mut self.continued) {
                self.line_ended();
            }
            self.head.clear();
        } else if self.head.len() < HEAD && !self.continued {
            self.head.push(b);
        }
    }

    fn line_ended(&mut self) {
        let line = String::from_utf8_lossy(&self.head);
        let line = line.trim_end_matches('\r');
        let Some((tag, rest)) = line.split_once(' ') else {
            return;
        };
        let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if tag == "*" {
            if word.eq_ignore_ascii_case("BYE") {
                self.replies.seen().bye = Some(printable(text));
            }
            return;
        }
        if tag == "+" {
            return;
        }
        let status = match word.to_ascii_uppercase().as_str() {
            "OK" => Status::Ok,
            "NO" => Status::No,
            "BAD" => Status::Bad,
            _ => return,
        };
        self.replies.seen().tagged = Some(Completion {
            status,
            text: printable(text),
        });
    }
}

/// The server's words as they may be shown: printable ASCII, at most [`TEXT`] characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .take(TEXT)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.trim().chars().count() > TEXT {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &mut Lines, bytes: &[u8], literal_at: &[usize]) {
        for (i, b) in bytes.iter().enumerate() {
            lines.byte(*b, literal_at.contains(&i));
        }
    }

    #[test]
    fn a_tagged_refusal_is_kept_with_its_words() {
        let replies = Replies::default();
        let mut lines = Lines::new(replies.clone());
        feed(
            &mut lines,
            b"* 1 FETCH (UID 1 RFC822.SIZE 5)\r\nA7 NO [UNAVAILABLE] UID FETCH Server error - Please try again later\r\n",
            &[],
        );
        assert_eq!(
            replies.take(),
            Some(Completion {
                status: Status::No,
                text: "[UNAVAILABLE] UID FETCH Server error - Please try again later".into()
            })
        );
        assert_eq!(replies.take(), None, "taken once");
    }

    #[test]
    fn lines_after_a_literal_are_data_and_bye_is_remembered() {
        let replies = Replies::default();
        let mut lines = Lines::new(replies.clone());
        // The reader passes literal bytes around the observer: only the line parts come.
        let first = b"* 1 FETCH (UID 1 BODY[] {5}\r\n";
        feed(&mut lines, first, &[first.len() - 1]);
        feed(&mut lines, b" A9 NO not a completion)\r\n", &[]);
        assert_eq!(replies.take(), None);
        feed(
            &mut lines,
            b"* BYE Session invalidated - AccessTokenExpired\r\n",
            &[],
        );
        assert_eq!(
            replies.bye().as_deref(),
            Some("Session invalidated - AccessTokenExpired")
        );
        feed(&mut lines, b"a3 bad Command Error. 10\r\n", &[]);
        assert_eq!(
            replies.take().map(|c| (c.status, c.text)),
            Some((Status::Bad, "Command Error. 10".into()))
        );
    }

    #[test]
    fn begin_forgets_and_long_or_odd_text_is_bounded() {
        let replies = Replies::default();
        let mut lines = Lines::new(replies.clone());
        let mut long = b"A1 NO ".to_vec();
        long.extend(std::iter::repeat_n(b'\x07', 2000));
        long.extend_from_slice(b"\r\n");
        feed(&mut lines, &long, &[]);
        let c = replies.take().map(|c| c.text).unwrap_or_default();
        assert!(c.len() <= TEXT + 3 && c.starts_with('?'), "{c}");
        feed(&mut lines, b"A2 OK done\r\n", &[]);
        replies.begin();
        assert_eq!(replies.take(), None);
    }
}
