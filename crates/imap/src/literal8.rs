//! Binary literals (`~{n}`, [RFC 3516]) read as plain literals.
//!
//! A server may answer `BODY.PEEK[]` with a binary literal when the message holds a NUL
//! byte (Cyrus does; Dovecot replaces the NUL instead). The parser async-imap uses knows
//! only `{n}`, fails on `~{n}`, and the session ends, so one such message would block its
//! folder forever. The bytes of a literal are taken as they are either way, so the
//! announcement alone is rewritten: this reader drops the `~` of a `~{n}` that ends a
//! line, and passes the `n` bytes that follow through untouched, whatever they hold.
//!
//! Only what the server sends is rewritten; writes pass through. Every response line
//! (never a literal's bytes) is also shown to [`Lines`], which records tagged completions
//! and `BYE` (see completion.rs). While a literal's bytes pass, the socket is told how many
//! are still to come ([`LowWater`]): it wakes the reader once per 64 KB of a large message,
//! not once per TLS record the server writes.
//!
//! [RFC 3516]: https://www.rfc-editor.org/rfc/rfc3516

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use mailferry_tls::LowWater;

use crate::completion::{Lines, Replies};

/// Where the reader is in the server's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a response line, outside any literal announcement.
    Line,
    /// Just after a `~` (held back until it is known whether a literal follows).
    Tilde,
    /// Inside `{digits`; `binary` when a held-back `~` came first.
    Count { binary: bool, n: u64, digits: u8 },
    /// After `{n}`.
    Close { binary: bool, n: u64 },
    /// After `{n}\r`.
    Cr { binary: bool, n: u64 },
    /// Inside a literal: this many bytes pass through untouched.
    Literal(u64),
}

/// The rewriting state machine, without I/O.
#[derive(Debug)]
pub(crate) struct Rewriter {
    state: State,
    /// A `~` and what followed it, until the announcement is complete or proven not one.
    held: Vec<u8>,
    /// Sees every byte outside literals.
    lines: Lines,
}

impl Rewriter {
    pub(crate) fn new(replies: Replies) -> Self {
        Self {
            state: State::Line,
            held: Vec::new(),
            lines: Lines::new(replies),
        }
    }

    /// Appends the rewritten form of `input` to `out`. Bytes of an incomplete `~{n}` are
    /// held back until the next call decides what they are.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if let State::Literal(left) = self.state {
                // The literal's bytes go through in one piece.
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::Line
                } else {
                    State::Literal(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.step(b, out);
        }
    }

    /// Bytes of a literal still to come, when the reader is inside one (nothing held).
    fn literal_left(&self) -> Option<u64> {
        match self.state {
            State::Literal(left) => Some(left),
            _ => None,
        }
    }

    /// `n` bytes of the current literal went past without [`Self::feed`].
    fn passed(&mut self, n: usize) {
        if let State::Literal(left) = self.state {
            let left = left.saturating_sub(n as u64);
            self.state = if left == 0 {
                State::Line
            } else {
                State::Literal(left)
            };
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        self.lines
            .byte(b, b == b'\n' && matches!(self.state, State::Cr { .. }));
        let binary = matches!(
            self.state,
            State::Tilde
                | State::Count { binary: true, .. }
                | State::Close { binary: true, .. }
                | State::Cr { binary: true, .. }
        );
        let next = match (self.state, b) {
            (State::Line, b'~') => Some(State::Tilde),
            (State::Line | State::Tilde, b'{') => Some(State::Count {
                binary,
                n: 0,
                digits: 0,
            }),
            (State::Count { binary, n, digits }, b'0'..=b'9') if digits < 19 => {
                Some(State::Count {
                    binary,
                    n: n * 10 + u64::from(b - b'0'),
                    digits: digits + 1,
                })
            }
            (State::Count { binary, n, digits }, b'}') if digits > 0 => {
                Some(State::Close { binary, n })
            }
            (State::Close { binary, n }, b'\r') => Some(State::Cr { binary, n }),
            (State::Cr { binary, n }, b'\n') => {
                // A complete announcement at the end of a line: a literal follows.
                if binary {
                    // Drop the `~`, keep `{n}` and the line end.
                    out.extend_from_slice(self.held.get(1..).unwrap_or_default());
                    self.held.clear();
                }
                out.push(b'\n');
                self.state = if n == 0 {
                    State::Line
                } else {
                    State::Literal(n)
                };
                return;
            }
            _ => None,
        };
        match next {
            Some(state) => {
                if binary || state == State::Tilde {
                    self.held.push(b);
                } else {
                    out.push(b);
                }
                self.state = state;
            }
            None => {
                // Not an announcement after all: what was held back goes out as it came,
                // and this byte starts over in a line.
                out.append(&mut self.held);
                self.state = State::Line;
                if b == b'~' {
                    self.state = State::Tilde;
                    self.held.push(b);
                } else if b == b'{' {
                    self.state = State::Count {
                        binary: false,
                        n: 0,
                        digits: 0,
                    };
                    out.push(b);
                } else {
                    out.push(b);
                }
            }
        }
    }
}

/// A stream whose server bytes pass through a [`Rewriter`].
#[derive(Debug)]
pub(crate) struct Literal8<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the reader.
    ready: Vec<u8>,
    /// How much of `ready` was handed out.
    taken: usize,
    scratch: Vec<u8>,
    /// Where the socket is told how much of a literal is still to come.
    low_water: LowWater,
}

impl<S> Literal8<S> {
    pub(crate) fn new(inner: S, replies: Replies, low_water: LowWater) -> Self {
        Self {
            inner,
            rewriter: Rewriter::new(replies),
            ready: Vec::new(),
            taken: 0,
            scratch: vec![0; 64 * 1024],
            low_water,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Literal8<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.taken < this.ready.len() {
                let n = (this.ready.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.ready[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.ready.len() {
                    this.ready.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(left) = this.rewriter.literal_left() {
                // A literal's bytes pass untouched: read straight into the reader's
                // buffer, not through `scratch` and `ready` (two copies of every message
                // byte before).
                let left = usize::try_from(left).unwrap_or(usize::MAX);
                // Not woken before most of it is there.
                this.low_water.expect(left);
                let want = left.min(buf.remaining());
                let mut direct = ReadBuf::new(buf.initialize_unfilled_to(want));
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut direct))?;
                let n = direct.filled().len();
                buf.advance(n);
                this.rewriter.passed(n);
                return Poll::Ready(Ok(()));
            }
            // No more than the reader asked for: what it is not given waits below, in the
            // stream's buffer, for the literal path. (64 KB at a time took the start of the
            // next message along with every response line: async-imap copies what follows
            // a response into a new buffer, so most of a small message was copied five times.)
            this.low_water.expect(0);
            let want = buf.remaining().clamp(1, this.scratch.len());
            let mut raw = ReadBuf::new(&mut this.scratch[..want]);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                // End of stream; a held-back `~` is still a byte the server sent.
                this.ready.append(&mut this.rewriter.held);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.rewriter.feed(raw.filled(), &mut this.ready);
            // All of it may be held back (a `~{12` at the end of a read): read on.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Literal8<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite_in_chunks(input: &[u8], size: usize) -> Vec<u8> {
        let mut r = Rewriter::new(Replies::default());
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            r.feed(chunk, &mut out);
        }
        out.append(&mut r.held);
        out
    }

    #[test]
    fn a_binary_literal_becomes_a_plain_one_at_every_chunk_size() {
        let input: &[u8] = b"* 2 FETCH (UID 2 BODY[] ~{13}\r\nab\0cd~{3}\r\nxy)\r\nc OK done\r\n";
        let want: &[u8] = b"* 2 FETCH (UID 2 BODY[] {13}\r\nab\0cd~{3}\r\nxy)\r\nc OK done\r\n";
        for size in 1..=input.len() {
            assert_eq!(rewrite_in_chunks(input, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn plain_literals_and_their_contents_pass_untouched() {
        // The literal's own bytes hold what looks like a binary announcement: untouched.
        let input: &[u8] =
            b"* 1 FETCH (UID 1 BODY[] {15}\r\nx ~{2}\r\nyz ~{\r\n)\r\n* 3 FETCH (BODY[]<0> ~{0}\r\n)\r\n";
        let want: &[u8] =
            b"* 1 FETCH (UID 1 BODY[] {15}\r\nx ~{2}\r\nyz ~{\r\n)\r\n* 3 FETCH (BODY[]<0> {0}\r\n)\r\n";
        for size in 1..=input.len() {
            assert_eq!(rewrite_in_chunks(input, size), want, "chunk size {size}");
        }
    }

    /// Hands out at most `chunk` bytes per read.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .chunk
                .min(self.data.len() - self.at)
                .min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_reader_passes_literals_straight_through_at_every_read_size() {
        use tokio::io::AsyncReadExt as _;
        let input: &[u8] = b"* 2 FETCH (UID 2 BODY[] ~{13}\r\nab\0cd~{3}\r\nxy)\r\n* 3 FETCH (BODY[] {4}\r\n{1}\r\n)\r\nc OK ~\r\n";
        let want: &[u8] = b"* 2 FETCH (UID 2 BODY[] {13}\r\nab\0cd~{3}\r\nxy)\r\n* 3 FETCH (BODY[] {4}\r\n{1}\r\n)\r\nc OK ~\r\n";
        for chunk in 1..=input.len() {
            for size in 1..=9 {
                let inner = Chunks {
                    data: input.to_vec(),
                    at: 0,
                    chunk,
                };
                let mut reader = Literal8::new(inner, Replies::default(), LowWater::default());
                let mut out = Vec::new();
                let mut buf = vec![0; size];
                loop {
                    let n = reader.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                assert_eq!(out, want, "reads of {chunk}, buffer of {size}");
            }
        }
    }

    #[tokio::test]
    async fn a_response_line_takes_from_the_stream_no_more_than_the_reader_asked_for() {
        use tokio::io::AsyncReadExt as _;
        let mut input = b"* 2 FETCH (UID 2 BODY[] {5000}\r\n".to_vec();
        input.resize(input.len() + 5000, b'x');
        input.extend_from_slice(b")\r\nc OK done\r\n");
        let inner = Chunks {
            data: input.clone(),
            at: 0,
            chunk: usize::MAX,
        };
        let mut reader = Literal8::new(inner, Replies::default(), LowWater::default());
        let mut buf = vec![0; 100];
        let n = reader.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], &input[..n]);
        // The rest of the message stays in the stream for the literal path.
        assert!(reader.inner.at <= 100, "took {} bytes", reader.inner.at);
        let mut out = buf[..n].to_vec();
        reader.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, input);
    }

    #[test]
    fn tildes_that_announce_nothing_are_kept() {
        let input: &[u8] = b"* OK ~user ~~{ ~{x} ~{5} ~{} {7 ~\r\na OK ~";
        for size in 1..=input.len() {
            assert_eq!(rewrite_in_chunks(input, size), input, "chunk size {size}");
        }
    }
}
