//! STARTTLS ([RFC 3207]), done before lettre sees the connection: the greeting, `EHLO`,
//! `STARTTLS`, the handshake through mailferry-tls. lettre then reads the server's
//! greeting again (kept for it) and sends `EHLO` over TLS, as after its own STARTTLS; the
//! session's one stream stays mailferry's, so the message data can be written to it
//! directly, and every TLS mode has the same TLS stack.
//!
//! Nothing the server sent before the handshake survives it: bytes after the reply to
//! `STARTTLS` are plain text anyone on the path could have put there (the "STARTTLS
//! command injection" of CVE-2011-0411 and its client-side kin, Poddebniak et al., USENIX
//! Security 2021), and end the session.
//!
//! [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::error::{SmtpError, SmtpStep, within};

/// A server reply longer than this is not SMTP (Postfix's `smtp_response_limit` is
/// 100,000 bytes; an EHLO reply is a few hundred).
const MAX_REPLY: usize = 100_000;

/// One reply: its code and its lines (without CRLF).
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Reads the greeting, says `EHLO` and `STARTTLS`, and runs the handshake. Returns the TLS
/// stream and the greeting's bytes (for lettre to read).
///
/// # Errors
/// [`SmtpError::Setup`] for a refusal or a server without STARTTLS, [`SmtpError::Network`]
/// for the connection or the handshake, [`SmtpError::Timeout`] after `limit` per step.
pub(crate) async fn upgrade(
    mut tcp: TcpStream,
    server: &str,
    host: &str,
    hello: &ClientId,
    config: Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Result<(mailferry_tls::TlsStream<TcpStream>, Vec<u8>), SmtpError> {
    let mut buf = Vec::new();
    let setup = |step, reply: String| SmtpError::Setup {
        server: server.to_owned(),
        step,
        reply,
    };
    let network = |source| SmtpError::Network {
        server: server.to_owned(),
        source,
    };
    let (greeting, raw) = within(SmtpStep::Greeting, limit, read_reply(&mut tcp, &mut buf))
        .await?
        .map_err(network)?;
    if !(200..300).contains(&greeting.code) {
        return Err(setup(SmtpStep::Greeting, greeting.text()));
    }
    let ehlo = ask(
        &mut tcp,
        &mut buf,
        &format!("EHLO {hello}\r\n"),
        limit,
        SmtpStep::Ehlo,
    )
    .await?
    .map_err(network)?;
    if ehlo.code != 250 {
        return Err(setup(SmtpStep::Ehlo, ehlo.text()));
    }
    let offered = ehlo.lines.iter().skip(1).any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    });
    if !offered {
        return Err(setup(
            SmtpStep::StartTls,
            format!(
                "the server does not offer STARTTLS (its EHLO reply: {}); if this port speaks TLS at once (465), set tls = \"implicit\"",
                ehlo.text()
            ),
        ));
    }
    let go = ask(
        &mut tcp,
        &mut buf,
        "STARTTLS\r\n",
        limit,
        SmtpStep::StartTls,
    )
    .await?
    .map_err(network)?;
    if go.code != 220 {
        return Err(setup(SmtpStep::StartTls, go.text()));
    }
    if !buf.is_empty() {
        return Err(setup(
            SmtpStep::StartTls,
            format!(
                "the server sent {} bytes after its reply to STARTTLS, before TLS began: plain text that anyone on the path could have put there; the session is ended",
                buf.len()
            ),
        ));
    }
    let tls = mailferry_tls::handshake(config, host, tcp, limit)
        .await
        .map_err(network)?;
    Ok((tls, raw))
}

async fn ask(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    command: &str,
    limit: Duration,
    step: SmtpStep,
) -> Result<std::io::Result<Reply>, SmtpError> {
    within(step, limit, async {
        tcp.write_all(command.as_bytes()).await?;
        read_reply(tcp, buf).await.map(|(reply, _)| reply)
    })
    .await
}

/// Reads one whole reply: lines `NNN-text` up to the last, `NNN text` (or `NNN`). What
/// follows it stays in `buf`. Returns the reply and its bytes.
async fn read_reply(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(Reply, Vec<u8>)> {
    loop {
        if let Some(end) = reply_end(buf)? {
            let raw: Vec<u8> = buf.drain(..end).collect();
            return Ok((parse(&raw)?, raw));
        }
        if buf.len() > MAX_REPLY {
            return Err(invalid("the server's reply is longer than 100,000 bytes"));
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the first whole reply in `buf` ends, if it is all there.
fn reply_end(buf: &[u8]) -> std::io::Result<Option<usize>> {
    let mut start = 0;
    while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + nl];
        start += nl + 1;
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(invalid(format!(
                "the server's reply is not SMTP: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )));
        }
        if line.get(3) != Some(&b'-') {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

fn parse(raw: &[u8]) -> std::io::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let lines: Vec<String> = text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_end_matches('\r')
                .get(4..)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let code = text
        .get(..3)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("the server's reply has no code"))?;
    Ok(Reply { code, lines })
}

fn invalid(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_ends_at_its_last_line() {
        assert_eq!(reply_end(b"250-a\r\n250-b\r\n").expect("test"), None);
        assert_eq!(
            reply_end(b"250-a\r\n250 b\r\nrest").expect("test"),
            Some(14)
        );
        assert_eq!(reply_end(b"220\r\n").expect("test"), Some(5));
        assert!(reply_end(b"HTTP/1.1 400\r\n").is_err());
        let r = parse(b"250-mx.example\r\n250-SIZE 10\r\n250 STARTTLS\r\n").expect("test");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["mx.example", "SIZE 10", "STARTTLS"]);
    }
}
