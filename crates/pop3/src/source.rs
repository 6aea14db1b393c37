//! The POP3 maildrop as a [`Source`]: one folder (`INBOX`), messages keyed by UIDL.

use std::collections::HashMap;

use mailferry_core::{FolderState, ListedMessage, MessageKey, RawMessage, Source, SourceAction};
use tracing::{debug, warn};

use crate::client::{Client, Retrieved};
use crate::error::Pop3Error;
use crate::sasl;

pub use mailferry_tls::{ConnectOptions, TlsMode};

pub use mailferry_core::Login;

use mailferry_tls::Io;

/// A logged-in POP3 session.
#[derive(Debug)]
pub struct Pop3Source {
    client: Client<Box<dyn Io>>,
    pipelining: bool,
    /// UIDL -> message number, valid for this session only.
    numbers: HashMap<String, u32>,
    /// Message number -> LIST size, valid for this session only.
    sizes: HashMap<u32, u64>,
    /// The CAPA lines the server sent before login.
    capa: Vec<String>,
    /// How messages are keyed, once known (remembered from earlier sessions, or decided at
    /// the first listing).
    keys: Option<Keys>,
    /// Largest message kept (`max-message-size`): bytes received, whatever `LIST` said.
    max_message: usize,
    /// Bodies this session that were exactly as long as `LIST` announced: evidence that
    /// the server's sizes are exact, so that a shorter body was cut (see [`whole`]).
    exact: u32,
    /// Whether the socket's reads may wait for the run's next wake.
    lazy: mailferry_core::LazyReads,
}

/// How a maildrop's messages are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// By `UIDL`.
    Uidl,
    /// By a hash of the header block (`TOP n 0`), for servers without UIDL.
    Headers,
}

impl Keys {
    /// The memo form.
    #[must_use]
    pub fn as_memo(self) -> &'static str {
        match self {
            Self::Uidl => "uidl",
            Self::Headers => "headers",
        }
    }

    /// From a memo; `None` for anything else.
    #[must_use]
    pub fn from_memo(memo: &str) -> Option<Self> {
        match memo {
            "uidl" => Some(Self::Uidl),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }
}

impl Pop3Source {
    /// Connects, secures the connection as `opts.tls` says, and logs in.
    ///
    /// # Errors
    /// Network failures, [`Pop3Error::LoginRefused`], [`Pop3Error::Busy`],
    /// [`Pop3Error::Unsupported`].
    /// With `pipelining`, RETR commands go out together when the server offers PIPELINING.
    pub async fn connect(
        opts: &ConnectOptions,
        login: Login<&str>,
        pipelining: bool,
    ) -> Result<Self, Pop3Error> {
        let server = opts.server();
        let io_err = |source| Pop3Error::Io {
            server: server.clone(),
            source,
        };
        let tcp = mailferry_tls::tcp(&opts.host, opts.port, opts.connect_timeout)
            .await
            .map_err(io_err)?;
        let (tcp, low_water) = mailferry_tls::Watermarked::new(tcp);
        let lazy = low_water.lazy_reads();
        let config = || mailferry_tls::client_config(opts.ca_pem.as_deref()).map_err(io_err);
        let mut client: Client<Box<dyn Io>> = match opts.tls {
            TlsMode::None => {
                Client::greet(
                    Box::new(tcp) as Box<dyn Io>,
                    server.clone(),
                    opts.io_timeout,
                )
                .await?
            }
            TlsMode::Implicit => {
                let tls =
                    mailferry_tls::handshake(config()?, &opts.host, tcp, opts.connect_timeout)
                        .await
                        .map_err(io_err)?;
                Client::greet(
                    Box::new(tls) as Box<dyn Io>,
                    server.clone(),
                    opts.io_timeout,
                )
                .await?
            }
            TlsMode::StartTls => {
                let mut plain = Client::greet(tcp, server.clone(), opts.io_timeout).await?;
                plain.stls().await?;
                let tls = mailferry_tls::handshake(
                    config()?,
                    &opts.host,
                    plain.into_inner(),
                    opts.connect_timeout,
                )
                .await
                .map_err(io_err)?;
                Client::resume(Box::new(tls), server.clone(), opts.io_timeout)
            }
        };
        client.watch_socket(low_water);
        let capa = client.capa().await?;
        let sasl: Vec<&str> = capa
            .iter()
            .find_map(|l| l.strip_prefix("SASL "))
            .map(|m| m.split_whitespace().collect())
            .unwrap_or_default();
        let pipelining = pipelining && capa.iter().any(|l| l == "PIPELINING");
        debug!(%server, ?capa, "POP3 capabilities");
        match login {
            Login::Password { username, password } => {
                if capa.is_empty() || capa.iter().any(|l| l == "USER") || !sasl.contains(&"PLAIN") {
                    client.user_pass(username, password).await?;
                } else {
                    client
                        .authenticate("PLAIN", &sasl::plain(username, password))
                        .await?;
                }
            }
            Login::OAuth2 { username, token } => {
                if !capa.is_empty() && !sasl.contains(&"XOAUTH2") {
                    return Err(Pop3Error::Unsupported("AUTH XOAUTH2"));
                }
                client
                    .authenticate("XOAUTH2", &sasl::xoauth2(username, token))
                    .await?;
            }
        }
        Ok(Self {
            client,
            pipelining,
            numbers: HashMap::new(),
            sizes: HashMap::new(),
            capa,
            keys: None,
            max_message: crate::MAX_MESSAGE,
            exact: 0,
            lazy,
        })
    }

    /// Keys as an earlier session chose them: kept, because switching would make every
    /// message look new.
    pub fn remember(&mut self, keys: Keys) {
        self.keys = Some(keys);
    }

    /// Sets the largest message kept (`max-message-size`), counted in the bytes that
    /// arrive: a `LIST` that announces less cannot let a larger reply through.
    pub fn limit_messages(&mut self, bytes: u64) {
        let bytes = usize::try_from(bytes.max(1024)).unwrap_or(usize::MAX);
        self.max_message = bytes;
        // Room for dot-stuffing and CRLF line ends on top of the message itself.
        self.client
            .limit_messages(bytes.saturating_add(bytes / 16).saturating_add(64 * 1024));
    }

    /// The capabilities the server announced before login (`CAPA`).
    #[must_use]
    pub fn capabilities(&self) -> &[String] {
        &self.capa
    }
}

impl Pop3Source {
    /// Keys from header hashes (one `TOP n 0` per message).
    async fn header_keys(
        &mut self,
        listed: &[(u32, u64)],
    ) -> Result<Vec<(u32, String)>, Pop3Error> {
        warn!(
            "recognising messages by a hash of their headers (the server has no UIDL; \
             one TOP per message and run; identical header blocks count as one message)"
        );
        self.keys = Some(Keys::Headers);
        let mut keys = Vec::with_capacity(listed.len());
        for (n, _) in listed {
            let headers = self.client.top_headers(*n).await?;
            keys.push((*n, header_key(headers)));
        }
        Ok(keys)
    }
}

/// A body whose terminator arrived is the message, whatever `LIST` said: Exchange's sizes
/// are estimates unless an admin switched `EnableExactRFC822Size` on (Microsoft KB Q191504;
/// one report saw bodies a third of the size announced), and Yahoo's do not match either
/// (Dovecot's pop3-migration skips its size check "at least with Yahoo").
///
/// One case stays visible by another rule: a server whose sizes are exact and that cuts a
/// message short (Cyrus stops at a NUL byte). When another message of this session was
/// exactly as long as `LIST` said (`exact_elsewhere`), the sizes are taken as exact and
/// a shorter body as cut: it is not delivered, and is reported. Longer is always fine
/// (servers count stored LF line ends that go out as CRLF).
fn whole(
    body: Vec<u8>,
    announced: u64,
    exact_elsewhere: bool,
) -> Result<RawMessage, mailferry_core::FetchFailure> {
    let got = body.len() as u64;
    if got < announced && exact_elsewhere {
        return Err(mailferry_core::FetchFailure::temporary(format!(
            "the server sent {got} bytes of the {announced} that LIST announced, though its other sizes are exact (servers cut a message short at a NUL byte, for one); not delivered"
        )));
    }
    Ok(RawMessage::new(body))
}

/// Tells apart messages a server lists under one unique id (old servers do): the second
/// gets ` (2)`, the third ` (3)`, in the server's order, with a warning. Each message is
/// then fetched and delivered once, not one of them twice and the others never.
fn distinct(listing: Vec<(u32, String)>) -> Vec<(u32, String)> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    listing
        .into_iter()
        .map(|(n, key)| {
            let count = seen.entry(key.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                (n, key)
            } else {
                warn!(key, message = n, "the POP3 server lists this unique id for more than one message; telling them apart by their order");
                (n, format!("{key} ({count})"))
            }
        })
        .collect()
}

/// The stand-in for a UIDL: a hash of the message's header block.
fn header_key(headers: Vec<u8>) -> String {
    let hash = RawMessage::new(headers).sha256_hex();
    format!("mailferry-headers-{}", &hash[..32])
}

impl Source for Pop3Source {
    type Error = Pop3Error;

    fn lazy_reads(&self) -> Option<mailferry_core::LazyReads> {
        Some(self.lazy.clone())
    }

    async fn open(&mut self, _folder: &str) -> Result<FolderState, Pop3Error> {
        let listed = self.client.list().await?;
        // Header hashes only for a server that has no UIDL: one that announces it (or that
        // was keyed by UIDL before) and answers -ERR once is failing for now, and falling
        // back would make every message look new.
        let has_uidl = match self.keys {
            Some(k) => k == Keys::Uidl,
            None => self.capa.is_empty() || self.capa.iter().any(|l| l == "UIDL"),
        };
        let uidl = if has_uidl {
            match self.client.uidl().await {
                Ok(uidl) => {
                    self.keys = Some(Keys::Uidl);
                    uidl
                }
                Err(Pop3Error::Refused { text, .. })
                    if self.keys.is_none() && self.capa.is_empty() =>
                {
                    // No CAPA and no UIDL: an old server. Decided once, remembered.
                    warn!(server_said = %text, "the POP3 server has no UIDL");
                    self.header_keys(&listed).await?
                }
                Err(e) => return Err(e),
            }
        } else {
            self.header_keys(&listed).await?
        };
        let uidl = distinct(uidl);
        self.sizes = listed.into_iter().collect();
        self.numbers = uidl.iter().map(|(n, u)| (u.clone(), *n)).collect();
        let sizes = &self.sizes;
        let messages = uidl
            .into_iter()
            .map(|(n, u)| ListedMessage {
                key: MessageKey::Uidl(u),
                size: sizes.get(&n).copied().unwrap_or(0),
                received: None,
            })
            .collect();
        Ok(FolderState {
            uidvalidity: 0,
            messages,
            uidnext: None,
            complete: true,
        })
    }

    async fn fetch(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, mailferry_core::Fetched)>, Pop3Error> {
        let wanted: Vec<(MessageKey, u32)> = keys
            .iter()
            .filter_map(|k| match k {
                MessageKey::Uidl(u) => self.numbers.get(u).map(|n| (k.clone(), *n)),
                MessageKey::Uid(_) => None,
            })
            .collect();
        let numbers: Vec<(u32, u64)> = wanted
            .iter()
            .map(|(_, n)| (*n, self.sizes.get(n).copied().unwrap_or(0)))
            .collect();
        // Kept bodies of one batch stay under max-message-size in all (plus one message).
        let budget = self.max_message;
        let bodies = self
            .client
            .retr_many(&numbers, self.pipelining, budget)
            .await?;
        let exact_here = numbers
            .iter()
            .zip(&bodies)
            .filter(
                |((_, size), b)| matches!(b, Retrieved::Body(body) if body.len() as u64 == *size),
            )
            .count();
        let mut out = Vec::with_capacity(wanted.len());
        for (((key, _), (_, announced)), got) in wanted.into_iter().zip(&numbers).zip(bodies) {
            let result = match got {
                Retrieved::Body(body) if body.len() > self.max_message => {
                    Err(mailferry_core::FetchFailure::permanent(format!(
                        "the message is larger than max-message-size ({} bytes; LIST announced {announced}); not delivered",
                        self.max_message
                    )))
                }
                Retrieved::Body(body) => {
                    let exact = body.len() as u64 == *announced;
                    let others = self.exact as usize + exact_here - usize::from(exact);
                    whole(body, *announced, others > 0)
                }
                Retrieved::Refused(words) => Err(mailferry_core::FetchFailure::temporary(words)),
                Retrieved::TooLarge => Err(mailferry_core::FetchFailure::permanent(format!(
                    "the message is larger than max-message-size ({} bytes; LIST announced {announced}); not fetched whole",
                    self.max_message
                ))),
                Retrieved::Later => continue,
            };
            out.push((key, result));
        }
        self.exact = self
            .exact
            .saturating_add(u32::try_from(exact_here).unwrap_or(u32::MAX));
        Ok(out)
    }

    async fn settle(
        &mut self,
        _folder: &str,
        _uidvalidity: u32,
        keys: &[MessageKey],
        action: &SourceAction,
    ) -> Result<(), Pop3Error> {
        if *action != SourceAction::Delete {
            return Err(Pop3Error::Unsupported(
                "flags and folders (POP3 can only delete)",
            ));
        }
        let numbers: Vec<u32> = keys
            .iter()
            .filter_map(|k| match k {
                MessageKey::Uidl(u) => self.numbers.get(u).copied(),
                MessageKey::Uid(_) => None,
            })
            .collect();
        self.client.dele_many(&numbers).await
    }

    async fn headers(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, RawMessage)>, Pop3Error> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let MessageKey::Uidl(u) = k else { continue };
            let Some(n) = self.numbers.get(u).copied() else {
                continue;
            };
            out.push((
                k.clone(),
                RawMessage::new(self.client.top_headers(n).await?),
            ));
        }
        Ok(out)
    }

    fn memo(&self) -> Option<String> {
        self.keys.map(|k| k.as_memo().to_owned())
    }

    async fn close(mut self) -> Result<(), Pop3Error> {
        self.client.quit().await
    }
}
