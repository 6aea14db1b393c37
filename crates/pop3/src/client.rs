//! A POP3 client over any async byte stream: drives [`crate::codec`] with reads and
//! writes, each under a timeout. Plain TCP, TLS and test duplex streams all fit.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use mailferry_tls::LowWater;

use crate::codec::{self, Command, Expect, Parser, Reply, Status};
use crate::error::Pop3Error;

/// Largest message accepted (Gmail's own limit is 150 MB).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A POP3 session in any state (authorization or transaction).
pub struct Client<S> {
    stream: S,
    parser: Parser,
    server: String,
    io_timeout: Duration,
    out: Vec<u8>,
    /// Told how much of a message is still to come, when the stream is a socket's.
    low_water: Option<LowWater>,
    /// A reply was longer than the limit: the rest of it is still coming, so the session
    /// cannot go on.
    ended: bool,
}

/// What one `RETR` brought.
#[derive(Debug)]
pub enum Retrieved {
    /// The message (unstuffed).
    Body(Vec<u8>),
    /// The server refused it (`-ERR`, its words).
    Refused(String),
    /// Longer than the limit: not kept.
    TooLarge,
    /// Not fetched this time (memory budget reached, or the session ended).
    Later,
}

/// Names the server only: the buffers hold the last command (`PASS ...`, an XOAUTH2
/// line) and the last reply.
impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("io_timeout", &self.io_timeout)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Client<S> {
    /// Reads the greeting. `server` names the peer in errors.
    ///
    /// # Errors
    /// When the greeting does not arrive in time or is `-ERR`.
    pub async fn greet(stream: S, server: String, io_timeout: Duration) -> Result<Self, Pop3Error> {
        let mut client = Self::resume(stream, server, io_timeout);
        let greeting = client.read("greeting", Expect::Status).await?;
        client.status("greeting", greeting)?;
        Ok(client)
    }

    /// Continues a session on a new stream (after the TLS upgrade that follows `STLS`):
    /// no greeting is sent again.
    pub fn resume(stream: S, server: String, io_timeout: Duration) -> Self {
        Self {
            stream,
            parser: Parser::new(MAX_MESSAGE),
            server,
            io_timeout,
            out: Vec::new(),
            low_water: None,
            ended: false,
        }
    }

    /// Tells the socket under the stream how much of a message is still to come (a
    /// [`mailferry_tls::Watermarked`] socket's handle), so that it wakes the reader less
    /// often while a message arrives.
    pub fn watch_socket(&mut self, low_water: LowWater) {
        self.low_water = Some(low_water);
    }

    /// The stream, for a TLS upgrade after `STLS`.
    pub fn into_inner(self) -> S {
        self.stream
    }

    async fn write_commands(
        &mut self,
        step: &'static str,
        commands: &[Command<'_>],
    ) -> Result<(), Pop3Error> {
        self.out.clear();
        for c in commands {
            debug!(command = ?c, "POP3 >");
            c.encode(&mut self.out);
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.io_timeout, write).await {
            Err(_) => Err(Pop3Error::Timeout {
                step,
                after: self.io_timeout,
            }),
            Ok(Err(source)) => Err(Pop3Error::Io {
                server: self.server.clone(),
                source,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn read(&mut self, step: &'static str, expect: Expect) -> Result<Reply, Pop3Error> {
        self.read_message(step, expect, 0).await
    }

    /// [`Self::read`] of a reply about `announced` bytes long (a `LIST` size, which may be
    /// an estimate: the socket is told so).
    async fn read_message(
        &mut self,
        step: &'static str,
        expect: Expect,
        announced: usize,
    ) -> Result<Reply, Pop3Error> {
        loop {
            match self.parser.parse(expect) {
                Ok(reply) => return Ok(reply),
                Err(codec::Error::NeedsMoreData) => {}
                Err(e) => return Err(Pop3Error::Protocol(e)),
            }
            if let Some(low) = &self.low_water {
                low.estimate(announced.saturating_sub(self.parser.buffered()));
            }
            // Straight into the parser's buffer, where a message is gathered whole.
            let read = self.stream.read_buf(self.parser.read_buffer());
            let n = match tokio::time::timeout(self.io_timeout, read).await {
                Err(_) => {
                    return Err(Pop3Error::Timeout {
                        step,
                        after: self.io_timeout,
                    });
                }
                Ok(Err(source)) => {
                    return Err(Pop3Error::Io {
                        server: self.server.clone(),
                        source,
                    });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(Pop3Error::Closed(step));
            }
        }
    }

    async fn command(
        &mut self,
        step: &'static str,
        command: Command<'_>,
    ) -> Result<Reply, Pop3Error> {
        let expect = command.expects();
        self.write_commands(step, &[command]).await?;
        self.read(step, expect).await
    }

    /// `+OK` passes; `-ERR` becomes [`Pop3Error::Refused`], or [`Pop3Error::Busy`] for the
    /// RFC 2449 temporary codes.
    fn status(&self, step: &'static str, reply: Reply) -> Result<Status, Pop3Error> {
        match reply {
            Reply::Status(s) | Reply::MultiLine { status: s, .. } if s.ok => Ok(s),
            Reply::Status(s) | Reply::MultiLine { status: s, .. } => Err(refusal(step, &s)),
            Reply::Continue(_) => Err(Pop3Error::Refused {
                step,
                text: "unexpected SASL continuation".into(),
            }),
        }
    }

    fn multi(&self, step: &'static str, reply: Reply) -> Result<Vec<u8>, Pop3Error> {
        match reply {
            Reply::MultiLine { body, .. } => Ok(body),
            other => self.status(step, other).map(|_| Vec::new()),
        }
    }

    /// `CAPA`: the capability lines, upper-cased; empty when the server has no CAPA.
    ///
    /// # Errors
    /// Network failures.
    pub async fn capa(&mut self) -> Result<Vec<String>, Pop3Error> {
        match self.command("CAPA", Command::Capa).await? {
            Reply::MultiLine { body, .. } => Ok(codec::capa_lines(&body)),
            _ => Ok(Vec::new()),
        }
    }

    /// `STLS`; on `+OK` the caller upgrades [`Client::into_inner`] to TLS.
    ///
    /// # Errors
    /// [`Pop3Error::Unsupported`] when the server refuses.
    pub async fn stls(&mut self) -> Result<(), Pop3Error> {
        let reply = self.command("STLS", Command::Stls).await?;
        self.status("STLS", reply)
            .map(|_| ())
            .map_err(|_| Pop3Error::Unsupported("STLS"))
    }

    /// `USER` + `PASS`.
    ///
    /// # Errors
    /// [`Pop3Error::LoginRefused`] or [`Pop3Error::Busy`].
    pub async fn user_pass(&mut self, user: &str, password: &str) -> Result<(), Pop3Error> {
        let reply = self.command("USER", Command::User(user)).await?;
        self.status("USER", reply).map_err(login_error)?;
        let reply = self.command("PASS", Command::Pass(password)).await?;
        self.status("PASS", reply).map(|_| ()).map_err(login_error)
    }

    /// `AUTH <mechanism>` with `response` (base64) sent after the server's `+`, as RFC 5034
    /// and Microsoft's POP3 require for XOAUTH2 (no initial response on the AUTH line). On
    /// failure a server may first send a base64 error challenge: it is answered with an
    /// empty line and its decoded text kept for the error.
    ///
    /// # Errors
    /// [`Pop3Error::LoginRefused`] (with the server's words), [`Pop3Error::Busy`].
    pub async fn authenticate(
        &mut self,
        mechanism: &'static str,
        response: &str,
    ) -> Result<(), Pop3Error> {
        match self
            .command(
                "AUTH",
                Command::Auth {
                    mechanism,
                    initial: None,
                },
            )
            .await?
        {
            Reply::Continue(_) => {}
            Reply::Status(s) if !s.ok && s.text.to_ascii_lowercase().contains("unsupported") => {
                return Err(Pop3Error::Unsupported(mechanism));
            }
            other => return self.status("AUTH", other).map(|_| ()).map_err(login_error),
        }
        let mut challenge = None;
        let mut reply = self
            .command("AUTH", Command::SaslResponse(response))
            .await?;
        if let Reply::Continue(data) = reply {
            // The error challenge (XOAUTH2: base64 JSON). An empty response ends the exchange.
            challenge = Some(decode_base64_text(&data));
            reply = self.command("AUTH", Command::SaslResponse("")).await?;
        }
        match self.status("AUTH", reply) {
            Ok(_) => Ok(()),
            Err(e) => Err(match (login_error(e), challenge) {
                (Pop3Error::LoginRefused { detail }, Some(c)) => Pop3Error::LoginRefused {
                    detail: format!("{detail} (server said: {c})"),
                },
                (other, _) => other,
            }),
        }
    }

    /// `UIDL` for all messages: (message number, unique id).
    ///
    /// # Errors
    /// Network failures; [`Pop3Error::Refused`] when the server has no UIDL.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        let reply = self.command("UIDL", Command::Uidl).await?;
        let listing = codec::uidl_lines(&self.multi("UIDL", reply)?);
        for line in &listing.skipped {
            tracing::warn!(server = %self.server, line, "a UIDL line that is not `number id`; ignoring that line");
        }
        Ok(listing.entries)
    }

    /// `TOP n 0`: the header block of message `n`.
    ///
    /// # Errors
    /// Network failures, or a refused `TOP`.
    pub async fn top_headers(&mut self, n: u32) -> Result<Vec<u8>, Pop3Error> {
        let reply = self.command("TOP", Command::TopHeaders(n)).await?;
        self.multi("TOP", reply)
    }

    /// `LIST` for all messages: (message number, size).
    ///
    /// # Errors
    /// Network failures.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        let reply = self.command("LIST", Command::List).await?;
        let listing = codec::list_lines(&self.multi("LIST", reply)?);
        for line in &listing.skipped {
            tracing::warn!(server = %self.server, line, "a LIST line that is not `number size`; its message is sized as unknown");
        }
        Ok(listing.entries)
    }

    /// `RETR` for each of `numbers` (message number, `LIST` size), returning in order each
    /// body, or the server's refusal of it (`-ERR`), or [`Retrieved::Later`]. With
    /// `pipelined`, all commands go out in one write and the replies are read afterwards
    /// (RFC 2449 PIPELINING); otherwise one round trip per message.
    ///
    /// Memory follows the bytes that arrive, not the sizes `LIST` announced (estimates on
    /// Exchange, and a server may lie): once the bodies kept reach `budget` bytes, the
    /// rest are read and dropped (pipelined) or not asked for, and come [`Retrieved::Later`].
    /// A body longer than the parser's limit (`max-message-size`) is
    /// [`Retrieved::TooLarge`]; the session cannot go on after it (its bytes are still
    /// coming), so the rest come `Later` and the next command says the session ended.
    ///
    /// # Errors
    /// Network failures.
    pub async fn retr_many(
        &mut self,
        numbers: &[(u32, u64)],
        pipelined: bool,
        budget: usize,
    ) -> Result<Vec<Retrieved>, Pop3Error> {
        self.usable()?;
        // Room for each message at its LIST size (plus stuffing), so that a large message
        // is received into one allocation rather than a doubling series of copies.
        let room = |size: u64| {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            size.saturating_add(size / 64).saturating_add(1024)
        };
        let mut out = Vec::with_capacity(numbers.len());
        let mut kept = 0usize;
        if pipelined {
            let commands: Vec<Command<'_>> =
                numbers.iter().map(|(n, _)| Command::Retr(*n)).collect();
            self.write_commands("RETR", &commands).await?;
        }
        for (n, size) in numbers {
            if self.ended {
                out.push(Retrieved::Later);
                continue;
            }
            if kept >= budget && !pipelined {
                out.push(Retrieved::Later);
                continue;
            }
            self.parser.reserve(room(*size));
            if !pipelined {
                self.write_commands("RETR", &[Command::Retr(*n)]).await?;
            }
            let announced = usize::try_from(*size).unwrap_or(0);
            let reply = self
                .read_message("RETR", Expect::MultiLine, announced)
                .await;
            let got = match reply {
                Err(Pop3Error::Protocol(codec::Error::TooLarge(_))) => {
                    self.ended = true;
                    Retrieved::TooLarge
                }
                Err(e) => return Err(e),
                Ok(reply) => match self.one_message(reply)? {
                    Ok(body) if kept >= budget => {
                        drop(body);
                        Retrieved::Later
                    }
                    Ok(body) => {
                        kept += body.len();
                        Retrieved::Body(body)
                    }
                    Err(words) => Retrieved::Refused(words),
                },
            };
            out.push(got);
        }
        Ok(out)
    }

    /// Sets the longest message accepted (bytes received, whatever `LIST` said).
    pub fn limit_messages(&mut self, bytes: usize) {
        self.parser = Parser::new(bytes);
    }

    /// An error once the session cannot go on (a reply was longer than the limit).
    fn usable(&self) -> Result<(), Pop3Error> {
        if self.ended {
            Err(Pop3Error::Ended)
        } else {
            Ok(())
        }
    }

    /// A `RETR` reply: the message, or the server's refusal of it.
    fn one_message(&self, reply: Reply) -> Result<Result<Vec<u8>, String>, Pop3Error> {
        match self.multi("RETR", reply) {
            Ok(body) => Ok(Ok(body)),
            Err(Pop3Error::Refused { text, .. }) => Ok(Err(format!("RETR: -ERR {text}"))),
            Err(e) => Err(e),
        }
    }

    /// `DELE` for each of `numbers` (marked only; `QUIT` commits).
    ///
    /// # Errors
    /// Network failures, or a refused `DELE`.
    pub async fn dele_many(&mut self, numbers: &[u32]) -> Result<(), Pop3Error> {
        self.usable()?;
        for n in numbers {
            let reply = self.command("DELE", Command::Dele(*n)).await?;
            self.status("DELE", reply)?;
        }
        Ok(())
    }

    /// `QUIT`: the server commits the deletions and closes.
    ///
    /// # Errors
    /// When the server refuses to commit (`-ERR` to QUIT: nothing was deleted).
    pub async fn quit(&mut self) -> Result<(), Pop3Error> {
        self.usable()?;
        let reply = self.command("QUIT", Command::Quit).await?;
        self.status("QUIT", reply).map(|_| ())
    }
}

fn refusal(step: &'static str, s: &Status) -> Pop3Error {
    let text = match &s.code {
        Some(code) => format!("[{code}] {}", s.text),
        None => s.text.clone(),
    };
    let temporary = matches!(
        s.code.as_deref(),
        Some("LOGIN-DELAY" | "IN-USE" | "SYS/TEMP")
    ) || s.text.contains("[UNAVAILABLE]")
        || s.text.contains("Temporary authentication failure")
        // Exchange: `-ERR Server Unavailable. 21` (DESIGN.md, "What servers actually send").
        || s.text.contains("Server Unavailable");
    if temporary {
        Pop3Error::Busy(text)
    } else {
        Pop3Error::Refused { step, text }
    }
}

/// A refusal during login is a login refusal, unless it is temporary.
fn login_error(e: Pop3Error) -> Pop3Error {
    match e {
        Pop3Error::Refused { text, .. } => Pop3Error::LoginRefused { detail: text },
        other => other,
    }
}

/// Decodes a base64 challenge for display; falls back to the raw text.
fn decode_base64_text(data: &str) -> String {
    crate::sasl::decode_base64(data)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| data.to_owned())
}
