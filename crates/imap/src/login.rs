//! Logging in: the greeting, LOGIN, and SASL OAUTHBEARER/XOAUTH2 with a bearer token.

use std::time::Duration;

use async_imap::{Client, Session};
use tracing::debug;

use crate::connect::{Stream, timed};
use crate::error::ImapError;

pub use mailferry_core::Login;

/// Reads the server greeting. It must be read before the first command, or the first
/// command's response parsing would see it.
pub(crate) async fn greeting<T>(client: &mut Client<T>, io: Duration) -> Result<(), ImapError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    match tokio::time::timeout(io, client.read_response()).await {
        Err(_) => Err(ImapError::Timeout {
            step: "greeting",
            after: io,
        }),
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(ImapError::Protocol(
            "the server closed the connection before greeting".into(),
        )),
        Ok(Err(e)) => Err(ImapError::from(e)),
    }
}

pub(crate) async fn password_login(
    client: Client<Stream>,
    username: &str,
    password: &str,
    io: Duration,
) -> Result<Session<Stream>, ImapError> {
    match tokio::time::timeout(io, client.login(username, password)).await {
        Err(_) => Err(ImapError::Timeout {
            step: "login",
            after: io,
        }),
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(text), _))) => Err(login_refusal(text)),
        Ok(Err((async_imap::error::Error::Validate(_), _))) => Err(ImapError::LoginRefused(
            "the user name or password holds a character IMAP LOGIN cannot carry".into(),
        )),
        Ok(Err((e, _))) => Err(ImapError::from(e)),
    }
}

/// The server's capabilities, upper-cased (`AUTH=XOAUTH2`, `IDLE`, ...).
pub(crate) async fn capabilities(
    client: &mut Client<Stream>,
    io: Duration,
) -> Result<Vec<String>, ImapError> {
    use async_imap::imap_proto::{Capability, Response};
    use tokio::io::AsyncWriteExt;
    // async-imap keeps its command writer to itself before login, so the command goes
    // straight to the stream; the tag cannot clash with async-imap's numbered ones.
    let write = async {
        let stream = client.get_mut();
        stream.write_all(b"MFCAP CAPABILITY\r\n").await?;
        stream.flush().await
    };
    timed("CAPABILITY", io, write).await?;
    let mut out = Vec::new();
    loop {
        let response = match tokio::time::timeout(io, client.read_response()).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    step: "CAPABILITY",
                    after: io,
                });
            }
            Ok(Err(e)) => return Err(ImapError::from(e)),
            Ok(Ok(None)) => {
                return Err(ImapError::Protocol(
                    "the server closed the connection".into(),
                ));
            }
            Ok(Ok(Some(r))) => r,
        };
        match response.parsed() {
            Response::Capabilities(caps) => out.extend(caps.iter().map(|c| match c {
                Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
                Capability::Auth(m) => format!("AUTH={}", m.to_ascii_uppercase()),
                Capability::Atom(a) => a.to_ascii_uppercase(),
            })),
            Response::Done { .. } => return Ok(out),
            _ => {}
        }
    }
}

/// SASL for OAuth2 bearer tokens. Also keeps the server's error challenge (a base64 JSON
/// document) when the token is refused, for the error message.
struct BearerSasl<'a> {
    initial: String,
    sent: bool,
    error: &'a mut Option<String>,
}

impl async_imap::Authenticator for BearerSasl<'_> {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if self.sent {
            // A second challenge is the error report; an empty response ends the exchange.
            *self.error = Some(String::from_utf8_lossy(challenge).into_owned());
            Vec::new()
        } else {
            self.sent = true;
            self.initial.as_bytes().to_vec()
        }
    }
}

pub(crate) async fn oauth2_login(
    client: Client<Stream>,
    capabilities: &[String],
    username: &str,
    token: &str,
    io: Duration,
) -> Result<Session<Stream>, ImapError> {
    let (mechanism, initial) = if capabilities.iter().any(|c| c == "AUTH=OAUTHBEARER") {
        (
            "OAUTHBEARER",
            format!("n,a={username},\x01auth=Bearer {token}\x01\x01"),
        )
    } else if capabilities.iter().any(|c| c == "AUTH=XOAUTH2") {
        (
            "XOAUTH2",
            format!("user={username}\x01auth=Bearer {token}\x01\x01"),
        )
    } else {
        return Err(ImapError::Unsupported("OAUTHBEARER or XOAUTH2"));
    };
    debug!(mechanism, "authenticating");
    let mut error = None;
    let sasl = BearerSasl {
        initial,
        sent: false,
        error: &mut error,
    };
    let result = tokio::time::timeout(io, client.authenticate(mechanism, sasl)).await;
    match result {
        Err(_) => Err(ImapError::Timeout {
            step: "AUTHENTICATE",
            after: io,
        }),
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(text), _))) => {
            Err(match (login_refusal(text), error) {
                (ImapError::LoginRefused(t), Some(challenge)) => {
                    ImapError::LoginRefused(format!("{t} (server said: {challenge})"))
                }
                (other, _) => other,
            })
        }
        Ok(Err((e, _))) => Err(ImapError::from(e)),
    }
}

/// A `NO` to LOGIN: refused for good, or only for now (RFC 5530 `[UNAVAILABLE]`,
/// Microsoft's throttling).
pub(crate) fn login_refusal(text: String) -> ImapError {
    let text = crate::error::server_words(&text);
    let temporary = [
        "[UNAVAILABLE]",
        "[INUSE]",
        "throttled",
        "Temporary",
        "temporarily",
    ];
    if temporary.iter().any(|t| text.contains(t)) || crate::error::Refusal::of(&text).is_temporary()
    {
        ImapError::LoginUnavailable(text)
    } else {
        ImapError::LoginRefused(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_refusals_are_classified() {
        use mailferry_core::{Classify, ErrorClass};
        assert_eq!(
            login_refusal("[AUTHENTICATIONFAILED] Authentication failed.".into()).class(),
            ErrorClass::Auth
        );
        assert_eq!(
            login_refusal(
                "[UNAVAILABLE] Temporary authentication failure. [host:2026-11-22]".into()
            )
            .class(),
            ErrorClass::Transient
        );
        let basic = login_refusal("LOGIN failed. Basic authentication is disabled.".into());
        assert!(basic.hint().is_some_and(|h| h.contains("OAuth2")));
    }
}
