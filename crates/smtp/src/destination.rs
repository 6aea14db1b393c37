//! One SMTP connection, reused across messages, driven command by command.

use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Ehlo, Mail, Rset};
use lettre::transport::smtp::extension::Extension;
use mailferry_core::{Destination, Login, RawMessage, Receipt};
use tokio::sync::Mutex;
use tracing::debug;

use crate::error::{EnvelopeCause, SmtpError, SmtpStep, within};
use crate::hello::{hello_name, kernel_hostname};
use crate::lettre_stream::Shared;

mod transaction;

pub use mailferry_tls::TlsMode;

/// Settings of an SMTP destination.
#[derive(Clone)]
pub struct SmtpOptions {
    /// Host name or IP address; the certificate must match it.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificates (PEM) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// How to `AUTH`, if at all.
    pub login: Option<Login>,
    /// Envelope recipients.
    pub envelope_to: Vec<String>,
    /// The envelope sender.
    pub envelope_from: Sender,
    /// EHLO name; the host name when `None`.
    pub hello_name: Option<String>,
    /// Limit for connect + greeting + EHLO + TLS.
    pub connect_timeout: Duration,
    /// Limit for each later command round trip (and for sending one message's data).
    pub io_timeout: Duration,
}

impl std::fmt::Debug for SmtpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "user",
                &self.login.as_ref().map(|l| match l {
                    Login::Password { username, .. } | Login::OAuth2 { username, .. } => username,
                }),
            )
            .finish_non_exhaustive()
    }
}

/// Where the envelope sender (`MAIL FROM`) comes from: whoever it names gets the bounces
/// of messages the destination accepts and cannot deliver later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The first envelope recipient: bounces reach the mailbox mailferry fills (the default).
    Recipient,
    /// Always this address.
    Address(String),
    /// The null sender `<>`: nobody gets bounces.
    Null,
    /// Each message's own `Return-Path` (else `From`, else `<>`): bounces go to the original
    /// sender. When the sender is not ASCII and the server does not offer SMTPUTF8, `<>`.
    FromMessage,
}

/// Delivers messages over one SMTP connection at a time, opened lazily and reused.
pub struct SmtpDestination {
    opts: SmtpOptions,
    to: Vec<Address>,
    /// `None`: each message's own sender.
    from: Option<Option<Address>>,
    /// Whose the sender is, for the hint when the server refuses it.
    sender_cause: EnvelopeCause,
    /// The kernel's host name, read once.
    kernel_name: String,
    /// TLS settings (implicit or STARTTLS), built once.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The login, replaceable between connections (a refreshed OAuth2 token).
    login: std::sync::Mutex<Option<Login>>,
    conn: Mutex<Option<Session>>,
}

/// An open connection, and what its EHLO said beyond what lettre keeps.
struct Session {
    conn: AsyncSmtpConnection,
    /// The connection's stream, for writing the message data.
    wire: Shared,
    /// The server takes `SIZE=` on `MAIL FROM` (RFC 1870).
    size: bool,
    /// The server takes `MAIL`, `RCPT` and `DATA` in one go (RFC 2920).
    pipelining: bool,
    /// The server waits for message data that will not come: the connection is dropped.
    broken: bool,
}

impl std::fmt::Debug for SmtpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpDestination")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl SmtpDestination {
    /// Checks the addresses and TLS settings; connects only on the first delivery.
    ///
    /// # Errors
    /// [`SmtpError::Address`] for an unusable address, [`SmtpError::Connect`] for bad TLS
    /// settings.
    pub fn new(opts: SmtpOptions) -> Result<Self, SmtpError> {
        let to = opts
            .envelope_to
            .iter()
            .map(|a| {
                a.parse::<Address>().map_err(|_| SmtpError::Address {
                    what: "envelope-to",
                    value: a.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from = match &opts.envelope_from {
            Sender::FromMessage => None,
            Sender::Recipient => Some(to.first().cloned()),
            Sender::Null => Some(None),
            Sender::Address(a) => Some(Some(a.parse::<Address>().map_err(|_| {
                SmtpError::Address {
                    what: "envelope-from",
                    value: a.clone(),
                }
            })?)),
        };
        // TLS, at once or after STARTTLS, is mailferry-tls's before lettre sees the stream.
        let tls = match opts.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::StartTls => Some(
                mailferry_tls::client_config(opts.ca_pem.as_deref()).map_err(|source| {
                    SmtpError::Network {
                        server: server(&opts),
                        source,
                    }
                })?,
            ),
        };
        let sender_cause = match &opts.envelope_from {
            Sender::FromMessage => EnvelopeCause::SenderFromMessage,
            Sender::Recipient => EnvelopeCause::DefaultSender,
            Sender::Null | Sender::Address(_) => EnvelopeCause::ConfiguredSender,
        };
        let login = std::sync::Mutex::new(opts.login.clone());
        Ok(Self {
            login,
            opts,
            to,
            from,
            sender_cause,
            kernel_name: kernel_hostname(),
            tls,
            conn: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Session, SmtpError> {
        let o = &self.opts;
        let network = |source| SmtpError::Network {
            server: server(o),
            source,
        };
        let tcp = mailferry_tls::tcp(&o.host, o.port, o.connect_timeout)
            .await
            .map_err(network)?;
        let hello = hello_name(
            o.hello_name.as_deref(),
            &self.kernel_name,
            tcp.local_addr().ok().map(|a| a.ip()),
        );
        debug!(%hello, "EHLO name");
        let wire = self.stream(tcp, &hello).await?;
        let connect_err = |source| SmtpError::Connect {
            server: server(o),
            source,
        };
        let greeting = AsyncSmtpConnection::connect_with_transport(Box::new(wire.clone()), &hello);
        let mut conn = within(SmtpStep::Greeting, o.connect_timeout, greeting)
            .await?
            .map_err(connect_err)?;
        // lettre keeps only the extensions it uses; SIZE and PIPELINING are read from a
        // second EHLO.
        let ehlo = within(
            SmtpStep::Ehlo,
            o.connect_timeout,
            conn.command(Ehlo::new(hello.clone())),
        )
        .await?
        .map_err(connect_err)?;
        let offers = |name: &str| {
            ehlo.message().skip(1).any(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(name))
            })
        };
        let (size, pipelining) = (offers("SIZE"), offers("PIPELINING"));
        self.login(&mut conn).await?;
        debug!(server = %server(o), tls = ?o.tls, size, pipelining, "SMTP session ready");
        Ok(Session {
            conn,
            wire,
            size,
            pipelining,
            broken: false,
        })
    }

    /// The session's stream over `tcp`: TLS at once, or after mailferry's own STARTTLS
    /// (lettre then reads the greeting it kept), or none.
    async fn stream(
        &self,
        tcp: tokio::net::TcpStream,
        hello: &lettre::transport::smtp::extension::ClientId,
    ) -> Result<Shared, SmtpError> {
        let o = &self.opts;
        let network = |source| SmtpError::Network {
            server: server(o),
            source,
        };
        let peer = tcp.peer_addr().map_err(network)?;
        // After mailferry's own STARTTLS, lettre reads the greeting it kept.
        let mut greeting = Vec::new();
        let inner: Box<dyn mailferry_tls::Io> = match (o.tls, self.tls.clone()) {
            (TlsMode::Implicit, Some(config)) => Box::new(
                mailferry_tls::handshake(config, &o.host, tcp, o.connect_timeout)
                    .await
                    .map_err(network)?,
            ),
            (TlsMode::StartTls, Some(config)) => {
                let server = server(o);
                let upgrade = crate::starttls::upgrade(
                    tcp,
                    &server,
                    &o.host,
                    hello,
                    config,
                    o.connect_timeout,
                );
                let (tls, said) = upgrade.await?;
                greeting = said;
                Box::new(tls)
            }
            _ => Box::new(tcp),
        };
        // A limit of silence, not of total time: a large message sent slowly passes, a
        // server that stops does not hang the session. Commands keep io-timeout as their
        // total; the message data has none, and its final reply may take RFC 5321's ten
        // minutes (servers scan the message first), so silence counts from there.
        let silence = o.io_timeout.max(DATA_REPLY);
        Ok(Shared::new(
            mailferry_tls::Idle::new(inner, silence),
            greeting,
            peer,
        ))
    }

    /// `AUTH` with the login, if there is one.
    async fn login(&self, conn: &mut AsyncSmtpConnection) -> Result<(), SmtpError> {
        let login = self
            .login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(login) = login {
            let (creds, mechanisms): (_, &[Mechanism]) = match login {
                Login::Password { username, password } => (
                    Credentials::new(username, password),
                    &[Mechanism::Plain, Mechanism::Login],
                ),
                Login::OAuth2 { username, token } => {
                    (Credentials::new(username, token), &[Mechanism::Xoauth2])
                }
            };
            within(
                SmtpStep::Auth,
                self.opts.io_timeout,
                conn.auth(mechanisms, &creds),
            )
            .await?
            .map_err(|e| {
                if e.is_permanent() {
                    SmtpError::Auth(e)
                } else {
                    SmtpError::Session {
                        step: SmtpStep::Auth,
                        source: e,
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Walks the way out without sending anything: connects (TLS, EHLO, AUTH), then offers
    /// the envelope (`MAIL FROM` with `envelope-from`, or the first recipient when each
    /// message's own sender is used; `RCPT TO` each recipient) and takes it back with
    /// `RSET`. Returns the extensions the server announced.
    ///
    /// # Errors
    /// Where the way fails, classified like a delivery's errors ([`SmtpError::Envelope`]
    /// for a refused envelope).
    pub async fn probe(&self) -> Result<Vec<String>, SmtpError> {
        let Session { mut conn, size, .. } = self.connect().await?;
        let info = conn.server_info();
        let mut features: Vec<String> = [
            (Extension::StartTls, "STARTTLS"),
            (Extension::EightBitMime, "8BITMIME"),
            (Extension::SmtpUtfEight, "SMTPUTF8"),
        ]
        .into_iter()
        .filter(|(e, _)| info.supports_feature(*e))
        .map(|(_, n)| n.to_owned())
        .collect();
        if size {
            features.push("SIZE".to_owned());
        }
        for m in [Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2] {
            if info.supports_auth_mechanism(m) {
                features.push(format!("AUTH={m}"));
            }
        }
        let io = self.opts.io_timeout;
        let from = match &self.from {
            Some(f) => f.clone(),
            None => self.to.first().cloned(),
        };
        self.offer_envelope(
            &mut conn,
            Mail::new(from, Vec::new()),
            self.sender_cause,
            false,
        )
        .await?;
        let _ = within(SmtpStep::Rset, io, conn.command(Rset)).await;
        let _ = within(SmtpStep::Quit, io, conn.quit()).await;
        Ok(features)
    }

    /// The TLS mode and host name, for `check`'s report.
    #[must_use]
    pub fn tls(&self) -> (TlsMode, &str) {
        (self.opts.tls, &self.opts.host)
    }

    /// Replaces the OAuth2 access token used by the next connection (after a refresh).
    pub fn set_token(&self, new: &str) {
        let mut login = self
            .login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Login::OAuth2 { token, .. }) = login.as_mut() {
            new.clone_into(token);
        }
    }

    /// Ends the session politely, if one is open.
    pub async fn close(&self) {
        if let Some(mut session) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(self.opts.io_timeout, session.conn.quit()).await;
        }
    }
}

impl Destination for SmtpDestination {
    type Error = SmtpError;

    async fn deliver(&self, message: &RawMessage, _folder: &str) -> Result<Receipt, SmtpError> {
        if message.is_empty() {
            return Err(SmtpError::Refused {
                reply: "the message is empty (0 bytes); SMTP has no way to carry an empty message"
                    .into(),
            });
        }
        let mut guard = self.conn.lock().await;
        let reused = guard
            .as_ref()
            .is_some_and(|s| !s.conn.has_broken() && !s.broken);
        if !reused {
            *guard = Some(self.connect().await?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(SmtpError::Refused {
                reply: "internal: no SMTP connection".into(),
            });
        };
        let mut result = self.transaction(conn, message).await;
        // A reused connection may have been closed by the server while idle. Nothing of this
        // message was accepted if MAIL already failed on the network, so one retry is safe.
        if reused
            && matches!(
                &result,
                Err(SmtpError::Session {
                    step: SmtpStep::Mail,
                    ..
                } | SmtpError::Stream {
                    step: SmtpStep::Mail,
                    ..
                })
            )
        {
            *guard = Some(self.connect().await?);
            if let Some(conn) = guard.as_mut() {
                result = self.transaction(conn, message).await;
            }
        }
        match &result {
            Ok(_) => {}
            Err(
                SmtpError::Deferred { .. }
                | SmtpError::Refused { .. }
                | SmtpError::Doubtful { .. }
                | SmtpError::Envelope { .. },
            ) => {
                let reset = match guard.as_mut() {
                    Some(session) if session.broken => false,
                    Some(session) => matches!(
                        tokio::time::timeout(self.opts.io_timeout, session.conn.command(Rset))
                            .await,
                        Ok(Ok(_))
                    ),
                    None => false,
                };
                if !reset {
                    *guard = None;
                }
            }
            Err(_) => *guard = None,
        }
        result
    }
}

/// RFC 5321 4.5.3.2.6: the time to allow for the reply to the end of the message data.
const DATA_REPLY: Duration = Duration::from_secs(10 * 60);

fn server(o: &SmtpOptions) -> String {
    format!("{}:{}", o.host, o.port)
}
