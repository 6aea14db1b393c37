//! POP3 on the wire, without I/O: commands are encoded into a buffer, replies are parsed
//! from bytes fed in chunks of any size. Nothing here touches a socket or a clock.
//!
//! - Status lines: `+OK text`, `-ERR [CODE] text` ([RFC 1939 §3], extended codes
//!   [RFC 2449 §8]), and SASL continuations `+ base64` ([RFC 5034 §4]).
//! - Multi-line replies (CAPA, LIST, UIDL, RETR): lines up to a line holding only `.`, with
//!   one leading `.` removed from every other line that starts with one (dot-unstuffing).
//!
//! Memory is bounded: a status line longer than [`MAX_LINE`] or a multi-line reply longer
//! than the parser's limit is an error, whatever the input.
//!
//! [RFC 1939 §3]: https://www.rfc-editor.org/rfc/rfc1939#section-3
//! [RFC 2449 §8]: https://www.rfc-editor.org/rfc/rfc2449#section-8
//! [RFC 5034 §4]: https://www.rfc-editor.org/rfc/rfc5034#section-4

use std::fmt;

/// Longest status line accepted, CRLF included (RFC 2449 allows 512 octets; servers add
/// long texts in practice).
pub const MAX_LINE: usize = 8 * 1024;

/// A command to the server.
#[derive(Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `CAPA` (multi-line reply).
    Capa,
    /// `STLS`
    Stls,
    /// `USER name`
    User(&'a str),
    /// `PASS secret`; never shown by `Debug`.
    Pass(&'a str),
    /// `AUTH mechanism [initial-response]`
    Auth {
        /// SASL mechanism name.
        mechanism: &'a str,
        /// Base64 initial response, sent on the same line.
        initial: Option<&'a str>,
    },
    /// A base64 SASL response line (may be empty); never shown by `Debug`.
    SaslResponse(&'a str),
    /// `STAT`
    Stat,
    /// `LIST` for all messages (multi-line reply).
    List,
    /// `UIDL` for all messages (multi-line reply).
    Uidl,
    /// `RETR n` (multi-line reply).
    Retr(u32),
    /// `TOP n 0`: the header block only (multi-line reply).
    TopHeaders(u32),
    /// `DELE n`
    Dele(u32),
    /// `NOOP`
    Noop,
    /// `QUIT`: commits deletions.
    Quit,
}

impl Command<'_> {
    /// Appends the command line, CRLF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            Self::Capa => "CAPA".to_owned(),
            Self::Stls => "STLS".to_owned(),
            Self::User(u) => format!("USER {u}"),
            Self::Pass(p) => format!("PASS {p}"),
            Self::Auth {
                mechanism,
                initial: None,
            } => format!("AUTH {mechanism}"),
            Self::Auth {
                mechanism,
                initial: Some(i),
            } => format!("AUTH {mechanism} {i}"),
            Self::SaslResponse(r) => (*r).to_owned(),
            Self::Stat => "STAT".to_owned(),
            Self::List => "LIST".to_owned(),
            Self::Uidl => "UIDL".to_owned(),
            Self::Retr(n) => format!("RETR {n}"),
            Self::TopHeaders(n) => format!("TOP {n} 0"),
            Self::Dele(n) => format!("DELE {n}"),
            Self::Noop => "NOOP".to_owned(),
            Self::Quit => "QUIT".to_owned(),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// What kind of reply this command gets.
    #[must_use]
    pub fn expects(&self) -> Expect {
        match self {
            Self::Capa | Self::List | Self::Uidl | Self::Retr(_) | Self::TopHeaders(_) => {
                Expect::MultiLine
            }
            Self::Auth { .. } | Self::SaslResponse(_) => Expect::SaslOrStatus,
            _ => Expect::Status,
        }
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass(_) => f.write_str("PASS <redacted>"),
            Self::SaslResponse(_) => f.write_str("<SASL response redacted>"),
            Self::Auth { mechanism, initial } => {
                write!(
                    f,
                    "AUTH {mechanism}{}",
                    if initial.is_some() { " <redacted>" } else { "" }
                )
            }
            other => {
                let mut line = Vec::new();
                other.encode(&mut line);
                f.write_str(String::from_utf8_lossy(&line).trim_end())
            }
        }
    }
}

/// What reply the parser should look for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One status line.
    Status,
    /// A status line; after `+OK`, lines up to the `.` terminator.
    MultiLine,
    /// A SASL continuation (`+ ...`) or a status line.
    SaslOrStatus,
}

/// A `+OK` or `-ERR` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `+OK` (true) or `-ERR` (false).
    pub ok: bool,
    /// The RFC 2449 extended response code, e.g. `AUTH`, `LOGIN-DELAY`, `SYS/TEMP`.
    pub code: Option<String>,
    /// The rest of the line, lossily decoded.
    pub text: String,
}

/// One parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A single status line (also a `-ERR` to a multi-line command).
    Status(Status),
    /// A SASL continuation with its (base64) data, possibly empty.
    Continue(String),
    /// `+OK` followed by lines; `body` is dot-unstuffed, every line ending in CRLF.
    MultiLine {
        /// The `+OK` line.
        status: Status,
        /// The lines between the status line and the terminator.
        body: Vec<u8>,
    },
}

/// Why bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The reply is not complete yet: feed more bytes.
    #[error("incomplete reply")]
    NeedsMoreData,
    /// A status line longer than [`MAX_LINE`].
    #[error("a reply line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A multi-line reply longer than the parser's limit.
    #[error("a multi-line reply is longer than {0} bytes")]
    TooLarge(usize),
    /// The line is not a POP3 status line.
    #[error("not a POP3 reply: {0:?}")]
    Invalid(String),
}

/// Parses replies from bytes that arrive in chunks of any size.
///
/// Bytes come in through [`Self::feed`], or are read straight into the parser's own buffer
/// ([`Self::read_buffer`]). A message that arrives over many reads is gathered at the front
/// of that buffer, which then becomes the body: its bytes are not copied on the way.
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    /// Where the unconsumed bytes begin in `buf`: consuming a reply moves this offset
    /// instead of moving the bytes after it (pipelined replies can be many).
    start: usize,
    /// Offset (from `start`) up to which the buffer was already searched for a terminator.
    scanned: usize,
    /// The status line of a multi-line reply whose body is still arriving, at `start`.
    open: Option<Status>,
    /// Longest multi-line reply accepted.
    limit: usize,
}

impl Parser {
    /// A parser accepting multi-line replies of up to `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            open: None,
            limit,
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into, at its end (`AsyncReadExt::read_buf`): what is read there
    /// counts as fed. Its room is what [`Self::reserve`] made for the reply; only when that
    /// is (nearly) used up does it grow, by [`READ_ROOM`]: growing moves what is buffered,
    /// and a message whose size was known should fill its room without moving.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(READ_ROOM);
        }
        &mut self.buf
    }

    /// Drops consumed bytes from the front once they are all there is or have piled up.
    fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= COMPACT_AT) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Makes room for a reply of about `size` bytes at once, when its size is known (a
    /// `LIST` size before `RETR`), instead of growing step by step and copying. What was
    /// consumed goes first, and what is buffered of it already counts, so that replies read
    /// back to back (pipelining) do not grow the buffer by a message each time.
    pub fn reserve(&mut self, size: usize) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let size = size.min(self.limit);
        self.buf.reserve(size.saturating_sub(self.buf.len()));
    }

    /// Bytes fed but not yet consumed by a reply.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the next complete reply of kind `expect` from the buffer.
    ///
    /// # Errors
    /// [`Error::NeedsMoreData`] until a whole reply is buffered; the other variants when
    /// the bytes are not POP3 or exceed the limits (the connection is then unusable).
    pub fn parse(&mut self, expect: Expect) -> Result<Reply, Error> {
        let status = match self.open.take() {
            Some(status) => status,
            None => match self.status_line(expect)? {
                Ok(reply) => return Ok(reply),
                Err(status) => status,
            },
        };
        // The body, from `start`: the terminator is a line holding only `.`, after any line
        // end: a server that serves stored LF-only mail as it is (Cyrus) ends it
        // `...\n.\r\n`, and stuffs the dots of lines after a bare LF too.
        let data = &self.buf[self.start..];
        let end = if data.starts_with(b".\r\n") {
            Some((0, 3))
        } else {
            find(data, b"\n.\r\n", self.scanned.saturating_sub(3)).map(|i| (i + 1, i + 4))
        };
        let Some((body_end, reply_end)) = end else {
            if data.len() > self.limit {
                return Err(Error::TooLarge(self.limit));
            }
            self.scanned = data.len();
            if self.start > 0 {
                // More is coming: gather the body at the front of the buffer, where it
                // grows into the room reserved for it and is taken whole at the end. Only
                // what has arrived moves, once.
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.open = Some(status);
            return Err(Error::NeedsMoreData);
        };
        // Whole already (it came in one read): still longer than the limit.
        if body_end > self.limit {
            return Err(Error::TooLarge(self.limit));
        }
        let after = data.len() - reply_end;
        let take = if self.start == 0 {
            after <= body_end.max(COMPACT_AT)
        } else {
            // It came whole in one read, after its status line (and perhaps replies taken
            // already): a large one moves over them in place rather than being copied
            // out, which would hold it twice and leave its room with the parser.
            body_end >= COMPACT_AT && after <= body_end
        };
        let mut body = if take {
            // The buffer becomes the body: what follows the reply (pipelined replies, no
            // more than the body) moves to a new buffer.
            let mut body = std::mem::take(&mut self.buf);
            body.drain(..self.start);
            self.start = 0;
            self.buf = body.split_off(reply_end);
            body.truncate(body_end);
            body
        } else {
            // Among other replies (they came in one read): copy it out.
            let body = data[..body_end].to_vec();
            self.start += reply_end;
            body
        };
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        unstuff_in_place(&mut body);
        Ok(Reply::MultiLine { status, body })
    }

    /// Reads the status line at `start`: a whole reply, or (`Err`) the status of a
    /// multi-line one whose body follows at the new `start`.
    fn status_line(&mut self, expect: Expect) -> Result<Result<Reply, Status>, Error> {
        let data = &self.buf[self.start..];
        let Some(line_end) = find(data, b"\r\n", 0) else {
            return if data.len() > MAX_LINE {
                Err(Error::LineTooLong)
            } else {
                Err(Error::NeedsMoreData)
            };
        };
        if line_end + 2 > MAX_LINE {
            return Err(Error::LineTooLong);
        }
        let line = &data[..line_end];
        if expect == Expect::SaslOrStatus && (line == b"+" || line.starts_with(b"+ ")) {
            let data = String::from_utf8_lossy(line.get(2..).unwrap_or_default()).into_owned();
            self.consume(line_end + 2);
            return Ok(Ok(Reply::Continue(data)));
        }
        let status = parse_status(line)?;
        if expect != Expect::MultiLine || !status.ok {
            self.consume(line_end + 2);
            return Ok(Ok(Reply::Status(status)));
        }
        self.start += line_end + 2;
        self.scanned = 0;
        Ok(Err(status))
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

/// How much [`Parser::read_buffer`] grows by when it has to.
pub const READ_ROOM: usize = 64 * 1024;

/// Less room than this and [`Parser::read_buffer`] grows (reads smaller than this are not
/// worth their system call).
const MIN_ROOM: usize = 512;

/// Consumed bytes are dropped from the buffer's front once this many have piled up.
const COMPACT_AT: usize = 64 * 1024;

fn parse_status(line: &[u8]) -> Result<Status, Error> {
    let text = String::from_utf8_lossy(line);
    let (ok, rest) = if let Some(rest) = strip_prefix_ci(&text, "+OK") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ci(&text, "-ERR") {
        (false, rest)
    } else {
        let shown: String = text.chars().take(80).collect();
        return Err(Error::Invalid(shown));
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Err(Error::Invalid(text.chars().take(80).collect()));
    }
    let rest = rest.trim_start();
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code.to_owned()), text.trim_start().to_owned()),
        None => (None, rest.to_owned()),
    };
    Ok(Status { ok, code, text })
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Removes one leading `.` from every line that starts with one (RFC 1939 §3), in place.
/// A line starts after any LF: servers that keep bare LFs stuff the lines after them.
/// The runs between stuffed dots are found with `memmem` and moved whole: most messages
/// have none, and this runs over every byte of every message.
fn unstuff_in_place(body: &mut Vec<u8>) {
    let mut read = usize::from(body.first() == Some(&b'.'));
    let mut write = 0;
    loop {
        // The next stuffed dot: the one after an LF.
        let dot = memchr::memmem::find(&body[read..], b"\n.").map(|i| read + i + 1);
        let end = dot.unwrap_or(body.len());
        if write != read {
            body.copy_within(read..end, write);
        }
        write += end - read;
        match dot {
            Some(d) => read = d + 1,
            None => break,
        }
    }
    body.truncate(write);
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|i| i + from)
}

/// The server's side of a multi-line body: dot-stuffing plus terminator. For tests and
/// fakes.
#[must_use]
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !(out.is_empty() || out.ends_with(b"\n")) {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A parsed multi-line listing, and the lines that could not be read (for a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// What was read.
    pub entries: Vec<T>,
    /// Lines that are not `number value`, as text (lossy).
    pub skipped: Vec<String>,
}

/// Parses `UIDL` lines: `msg-number unique-id`, line by line. A unique id that is not
/// UTF-8 (RFC 1939 allows only printable ASCII; servers do not always keep to it) is kept
/// as `x-` and the hex of its bytes, stable from one session to the next.
#[must_use]
pub fn uidl_lines(body: &[u8]) -> Listing<(u32, String)> {
    let mut out = Listing {
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    for (line, pair) in pairs(body) {
        match pair {
            Some((n, v)) => out.entries.push((
                n,
                std::str::from_utf8(v).map_or_else(|_| format!("x-{}", hex(v)), str::to_owned),
            )),
            None => out.skipped.push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    out
}

/// Parses `LIST` lines: `msg-number size`, line by line.
#[must_use]
pub fn list_lines(body: &[u8]) -> Listing<(u32, u64)> {
    let mut out = Listing {
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    for (line, pair) in pairs(body) {
        match pair.and_then(|(n, v)| Some((n, std::str::from_utf8(v).ok()?.parse().ok()?))) {
            Some(entry) => out.entries.push(entry),
            None => out.skipped.push(String::from_utf8_lossy(line).into_owned()),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses `CAPA` lines into upper-cased capability lines.
#[must_use]
pub fn capa_lines(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| l.trim().to_ascii_uppercase())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Each non-empty line of `body` with its `(number, value)` when it has that shape. One bad
/// line spoils only itself.
fn pairs(body: &[u8]) -> impl Iterator<Item = (&[u8], Option<(u32, &[u8])>)> {
    body.split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let pair = line.iter().position(|&b| b == b' ').and_then(|i| {
                let n = std::str::from_utf8(&line[..i]).ok()?.parse().ok()?;
                let v = line[i + 1..].trim_ascii();
                (!v.is_empty()).then_some((n, v))
            });
            (line, pair)
        })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
