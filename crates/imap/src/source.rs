//! The IMAP session as a [`Source`].

use std::collections::HashMap;
use std::time::Duration;

use async_imap::{Client, Session};
use bytes::Bytes;
use futures_util::StreamExt;
use mailferry_core::{FolderState, ListedMessage, MessageKey, RawMessage, Source, SourceAction};
use tracing::{debug, warn};

use crate::connect::{self, ConnectOptions, Stream, Tls, timed};
use crate::error::ImapError;

/// How to log in.
pub enum Login<'a> {
    /// SASL with an OAuth2 access token: `OAUTHBEARER` ([RFC 7628]) when the server offers
    /// it, else `XOAUTH2` (all Microsoft offers).
    ///
    /// [RFC 7628]: https://www.rfc-editor.org/rfc/rfc7628
    OAuth2 {
        /// Login name.
        username: &'a str,
        /// The access token; never logged.
        token: &'a str,
    },
    /// `LOGIN user password` (also app passwords).
    Password {
        /// Login name.
        username: &'a str,
        /// The password; never logged.
        password: &'a str,
    },
}

/// A logged-in IMAP session reading one folder at a time.
pub struct ImapSource {
    pub(crate) session: Session<Stream>,
    pub(crate) io_timeout: Duration,
    /// Sizes the last listing announced, by UID.
    pub(crate) announced: HashMap<u32, u64>,
    /// Largest message fetched.
    pub(crate) max_message: u64,
    /// Set when the server sent a reply that could not be read: the session is over, and
    /// every later request says so (the engine then opens a new one).
    pub(crate) broken: Option<String>,
    /// The stream's silence limit: IDLE raises it while it waits.
    pub(crate) limit: mailferry_tls::IdleLimit,
    /// The UIDNEXT each folder had when it was last listed (IDLE compares).
    pub(crate) listed_uidnext: HashMap<String, Option<u32>>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource").finish_non_exhaustive()
    }
}

impl ImapSource {
    /// The capabilities of the logged-in session (`IDLE`, `UIDPLUS`, `MOVE`, ...).
    ///
    /// # Errors
    /// When the server does not answer.
    pub async fn capabilities(&mut self) -> Result<Vec<String>, ImapError> {
        let caps =
            connect::timed("CAPABILITY", self.io_timeout, self.session.capabilities()).await?;
        Ok(caps
            .iter()
            .map(|c| match c {
                async_imap::types::Capability::Imap4rev1 => "IMAP4rev1".to_owned(),
                async_imap::types::Capability::Auth(m) => format!("AUTH={m}"),
                async_imap::types::Capability::Atom(a) => a.to_string(),
            })
            .collect())
    }

    /// Connects, secures the connection as `opts.tls` says, and logs in.
    ///
    /// # Errors
    /// [`ImapError::Connect`]/[`ImapError::Timeout`] for network trouble,
    /// [`ImapError::LoginRefused`] when the credentials are rejected.
    pub async fn connect(opts: &ConnectOptions, login: Login<'_>) -> Result<Self, ImapError> {
        let io = opts.io_timeout;
        let tcp = connect::tcp(opts).await?;
        // Every read and write fails after io-timeout of silence (not of total time): a
        // large literal trickling in slowly is fine, a server that stops is not.
        // Binary literals (`~{n}`) are read as plain ones (see literal8.rs).
        let (stream, limit) = match opts.tls {
            Tls::Implicit => watched(Box::new(connect::tls(opts, tcp).await?), io),
            Tls::None => watched(Box::new(tcp), io),
            Tls::StartTls => {
                let mut plain = Client::new(tcp);
                greeting(&mut plain, io).await?;
                timed(
                    "STARTTLS",
                    io,
                    plain.run_command_and_check_ok("STARTTLS", None),
                )
                .await
                .map_err(|e| match e {
                    ImapError::Session(
                        async_imap::error::Error::Bad(_) | async_imap::error::Error::No(_),
                    ) => ImapError::Unsupported("STARTTLS"),
                    other => other,
                })?;
                watched(Box::new(connect::tls(opts, plain.into_inner()).await?), io)
            }
        };
        let mut client = Client::new(stream);
        if opts.tls != Tls::StartTls {
            greeting(&mut client, io).await?;
        }
        debug!(server = %opts.server(), "logging in");
        let session = match login {
            Login::Password { username, password } => {
                password_login(client, username, password, io).await?
            }
            Login::OAuth2 { username, token } => {
                let capabilities = capabilities(&mut client, io).await?;
                oauth2_login(client, &capabilities, username, token, io).await?
            }
        };
        Ok(Self {
            session,
            io_timeout: io,
            announced: HashMap::new(),
            max_message: 150 * 1024 * 1024,
            broken: None,
            limit,
            listed_uidnext: HashMap::new(),
        })
    }

    /// Sets the largest message fetched (`max-message-size`).
    pub fn limit_messages(&mut self, bytes: u64) {
        self.max_message = bytes.max(1024);
    }

    /// How the server names folders, said so that a missing `wanted` can be found: its
    /// hierarchy separator, and the folders whose last part is `wanted` (Cyrus keeps
    /// personal folders under `INBOX.`, so `Archive` is `INBOX.Archive` there).
    async fn naming(&mut self, wanted: &str) -> Result<String, ImapError> {
        let io = self.io_timeout;
        let mut names = Vec::new();
        let mut separator = None;
        {
            let stream = timed("LIST", io, self.session.list(Some(""), Some("*"))).await?;
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = timed("LIST", io, async {
                Ok::<_, ImapError>(stream.next().await)
            })
            .await?
            {
                let name = item?;
                separator = separator.or_else(|| name.delimiter().map(str::to_owned));
                names.push(name.name().to_owned());
            }
        }
        self.drain_unsolicited();
        let sep = separator.unwrap_or_default();
        let last = |n: &str| {
            if sep.is_empty() {
                n.to_owned()
            } else {
                n.rsplit(sep.as_str()).next().unwrap_or(n).to_owned()
            }
        };
        let matches: Vec<&String> = names
            .iter()
            .filter(|n| last(n).eq_ignore_ascii_case(last(wanted).as_str()))
            .collect();
        let mut out = format!(". The server separates folder levels with {sep:?}");
        match matches.as_slice() {
            [] => {
                names.sort();
                let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
                out.push_str(&format!(
                    " and has no folder named like {wanted:?}; its folders: {}{}",
                    shown.join(", "),
                    if names.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ));
            }
            found => {
                let found: Vec<String> = found.iter().map(|n| format!("move:{n}")).collect();
                out.push_str(&format!(
                    "; did you mean after-delivery = {:?}?",
                    found.join(" or ")
                ));
            }
        }
        Ok(out)
    }

    /// An error when an earlier reply could not be read: the session cannot go on.
    fn usable(&self) -> Result<(), ImapError> {
        match &self.broken {
            Some(excerpt) => Err(ImapError::Unreadable {
                excerpt: excerpt.clone(),
            }),
            None => Ok(()),
        }
    }

    fn drain_unsolicited(&mut self) {
        while self.session.unsolicited_responses.try_recv().is_ok() {}
    }
}

/// The stream a session reads: an inactivity limit (whose handle is returned) and binary
/// literals read as plain ones (see literal8.rs).
fn watched(inner: Stream, io: Duration) -> (Stream, mailferry_tls::IdleLimit) {
    let idle = mailferry_tls::Idle::new(inner, io);
    let limit = idle.limit();
    (Box::new(crate::literal8::Literal8::new(idle)), limit)
}

/// Reads the server greeting. It must be read before the first command, or the first
/// command's response parsing would see it.
async fn greeting<T>(client: &mut Client<T>, io: Duration) -> Result<(), ImapError>
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

async fn password_login(
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
async fn capabilities(client: &mut Client<Stream>, io: Duration) -> Result<Vec<String>, ImapError> {
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

async fn oauth2_login(
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
fn login_refusal(text: String) -> ImapError {
    let temporary = [
        "[UNAVAILABLE]",
        "[INUSE]",
        "throttled",
        "Temporary",
        "temporarily",
    ];
    if temporary.iter().any(|t| text.contains(t)) {
        ImapError::LoginUnavailable(text)
    } else {
        ImapError::LoginRefused(text)
    }
}

/// Formats UIDs as an IMAP sequence set, merging runs: `1:3,7,9:10`.
/// The UID a FETCH reply names in its first line (`* 71 FETCH (UID 71 BODY[] ...`).
fn blamed_uid(first_line: &str) -> Option<u32> {
    let upper = first_line.to_ascii_uppercase();
    let at = upper.find("UID ")? + 4;
    let digits: String = upper[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn sequence_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// A FETCH response viewed as the bytes of its `BODY[]`.
struct FetchedBody(async_imap::types::Fetch);

impl AsRef<[u8]> for FetchedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.body().unwrap_or_default()
    }
}

impl ImapSource {
    /// `EXAMINE` and the listing: everything, or with `from` (same UIDVALIDITY) only the
    /// UIDs from its UIDNEXT on and those it names; nothing at all when UIDNEXT did not
    /// move and nothing is named.
    async fn list(
        &mut self,
        folder: &str,
        from: Option<&mailferry_core::ListFrom>,
    ) -> Result<FolderState, ImapError> {
        let io = self.io_timeout;
        let mailbox = match tokio::time::timeout(io, self.session.examine(folder)).await {
            Err(_) => {
                return Err(ImapError::Timeout {
                    step: "EXAMINE",
                    after: io,
                });
            }
            Ok(Err(
                async_imap::error::Error::No(reason) | async_imap::error::Error::Bad(reason),
            )) => {
                return Err(ImapError::Folder {
                    folder: folder.to_owned(),
                    reason,
                });
            }
            Ok(Err(e)) => return Err(ImapError::from(e)),
            Ok(Ok(m)) => m,
        };
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| ImapError::Protocol(format!("no UIDVALIDITY for folder {folder:?}")))?;
        let uidnext = mailbox.uid_next;
        self.listed_uidnext.insert(folder.to_owned(), uidnext);
        let from = from.filter(|f| f.uidvalidity == uidvalidity && uidnext.is_some());
        // What to list: "1:*", or "UIDNEXT:*" plus the unsettled UIDs, or nothing.
        let set = match from {
            None => Some("1:*".to_owned()),
            Some(f) => {
                let also: Vec<u32> = f
                    .also
                    .iter()
                    .filter_map(|k| match k {
                        MessageKey::Uid(u) if *u < f.uidnext => Some(*u),
                        _ => None,
                    })
                    .collect();
                let grew = uidnext.is_some_and(|n| n > f.uidnext);
                match (grew, also.is_empty()) {
                    (false, true) => None,
                    (false, false) => Some(sequence_set(&also)),
                    (true, true) => Some(format!("{}:*", f.uidnext)),
                    (true, false) => Some(format!("{},{}:*", sequence_set(&also), f.uidnext)),
                }
            }
        };
        // "N:*" names the highest UID even when it is below N: keep only what was asked.
        let wanted = |uid: u32| {
            from.is_none_or(|f| uid >= f.uidnext || f.also.contains(&MessageKey::Uid(uid)))
        };
        let mut messages = Vec::with_capacity(usize::try_from(mailbox.exists).unwrap_or(0));
        let mut without_uid = 0usize;
        if let (true, Some(set)) = (mailbox.exists > 0, set) {
            let mut stream = timed(
                "UID FETCH sizes",
                io,
                self.session
                    .uid_fetch(&set, "(UID RFC822.SIZE INTERNALDATE)"),
            )
            .await?;
            while let Some(item) = timed("UID FETCH sizes", io, async {
                Ok::<_, ImapError>(stream.next().await)
            })
            .await?
            {
                let fetch = item?;
                if let Some(uid) = fetch.uid {
                    if !wanted(uid) {
                        continue;
                    }
                    messages.push(ListedMessage {
                        key: MessageKey::Uid(uid),
                        size: u64::from(fetch.size.unwrap_or(0)),
                        received: fetch.internal_date().map(|d| d.timestamp()),
                    });
                } else {
                    without_uid += 1;
                }
            }
        }
        if without_uid > 0 {
            // Unsolicited flag updates, or a server that leaves out the UID: either way
            // nothing to key a message by. Said, not silently dropped.
            warn!(
                folder,
                count = without_uid,
                "the listing held FETCH responses without a UID; they are not messages mailferry can track"
            );
        }
        self.drain_unsolicited();
        messages.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        self.announced = messages
            .iter()
            .filter_map(|m| match m.key {
                MessageKey::Uid(u) => Some((u, m.size)),
                MessageKey::Uidl(_) => None,
            })
            .collect();
        debug!(
            folder,
            uidvalidity,
            count = messages.len(),
            incremental = from.is_some(),
            "folder opened"
        );
        Ok(FolderState {
            uidvalidity,
            messages,
            uidnext,
        })
    }

    /// `UID FETCH uids (UID BODY.PEEK[]<0.cap>)`: each body, at most `cap` bytes of it.
    async fn fetch_capped(
        &mut self,
        uids: &[u32],
        cap: u64,
    ) -> Result<Vec<(u32, mailferry_core::Fetched)>, ImapError> {
        self.usable()?;
        let io = self.io_timeout;
        let set = sequence_set(uids);
        let wanted: std::collections::HashSet<u32> = uids.iter().copied().collect();
        let mut by_uid = HashMap::with_capacity(uids.len());
        // UIDs the server answered for without a body (BODY[] NIL, or only FLAGS).
        let mut bodiless = std::collections::HashSet::new();
        {
            let mut stream = timed(
                "UID FETCH",
                io,
                self.session
                    .uid_fetch(&set, format!("(UID BODY.PEEK[]<0.{cap}>)")),
            )
            .await?;
            // No total limit per item: a body is one item however large; the stream's
            // inactivity limit (io-timeout of silence) is what applies.
            while let Some(item) = stream.next().await {
                let fetch = match item.map_err(ImapError::from) {
                    Ok(fetch) => fetch,
                    Err(ImapError::Unreadable { excerpt }) => {
                        self.broken = Some(excerpt);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let Some(uid) = fetch.uid else {
                    // A FETCH without UID cannot be a reply to UID FETCH (RFC 3501 says
                    // the UID comes with every one): an unsolicited flag update.
                    debug!(seq = fetch.message, "a FETCH without UID; ignored");
                    continue;
                };
                if !wanted.contains(&uid) {
                    // Not asked for: not kept (memory is for the messages requested).
                    debug!(uid, "a FETCH for a UID not requested; ignored");
                    continue;
                }
                if fetch.body().is_none() {
                    // Another client changed its flags (an unsolicited FETCH), or a NIL
                    // body: the body may still come in its own FETCH.
                    bodiless.insert(uid);
                    continue;
                }
                // The response buffer becomes the message: no copy of its bytes.
                by_uid.insert(uid, RawMessage::new(Bytes::from_owner(FetchedBody(fetch))));
            }
        }
        if let Some(excerpt) = &self.broken {
            // The session is over. What arrived before the unreadable reply is kept; the
            // reply belongs to the UID it names, else to the first one not answered (servers
            // answer in UID order). That message alone is the failure: the others come with
            // the next session.
            let blamed = blamed_uid(excerpt)
                .filter(|u| wanted.contains(u) && !by_uid.contains_key(u))
                .or_else(|| uids.iter().copied().find(|u| !by_uid.contains_key(u)));
            let reason = format!(
                "the server's answer for this message cannot be read (it begins {excerpt:?})"
            );
            return Ok(uids
                .iter()
                .filter_map(|uid| match by_uid.remove(uid) {
                    Some(m) => Some((*uid, Ok(m))),
                    None if Some(*uid) == blamed => Some((
                        *uid,
                        Err(mailferry_core::FetchFailure::temporary(reason.clone())),
                    )),
                    None => None,
                })
                .collect());
        }
        self.drain_unsolicited();
        Ok(uids
            .iter()
            .filter_map(|uid| match by_uid.remove(uid) {
                Some(m) => Some((*uid, Ok(m))),
                None if bodiless.contains(uid) => Some((
                    *uid,
                    Err(mailferry_core::FetchFailure::temporary(
                        "the server answered UID FETCH BODY.PEEK[] without the body (NIL or missing)",
                    )),
                )),
                // No answer at all: expunged meanwhile; it will not be listed again.
                None => None,
            })
            .collect())
    }

    async fn store(&mut self, set: &str, query: &str) -> Result<(), ImapError> {
        let io = self.io_timeout;
        let mut stream = timed("UID STORE", io, self.session.uid_store(set, query)).await?;
        while let Some(item) = timed("UID STORE", io, async {
            Ok::<_, ImapError>(stream.next().await)
        })
        .await?
        {
            item?;
        }
        Ok(())
    }

    async fn expunge(&mut self, set: &str) -> Result<(), ImapError> {
        let io = self.io_timeout;
        let stream = timed("UID EXPUNGE", io, self.session.uid_expunge(set)).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = timed("UID EXPUNGE", io, async {
            Ok::<_, ImapError>(stream.next().await)
        })
        .await?
        {
            item?;
        }
        Ok(())
    }
}

impl Source for ImapSource {
    type Error = ImapError;

    async fn open(&mut self, folder: &str) -> Result<FolderState, ImapError> {
        self.usable()?;
        self.list(folder, None).await
    }

    async fn open_from(
        &mut self,
        folder: &str,
        from: &mailferry_core::ListFrom,
    ) -> Result<FolderState, ImapError> {
        self.usable()?;
        self.list(folder, Some(from)).await
    }

    async fn fetch(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, mailferry_core::Fetched)>, ImapError> {
        let uids: Vec<u32> = keys
            .iter()
            .filter_map(|k| match k {
                MessageKey::Uid(uid) => Some(*uid),
                MessageKey::Uidl(_) => None,
            })
            .collect();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        // Memory follows the bytes that arrive, not the sizes announced: each body is
        // fetched partially, up to twice the largest announced size in the batch (at least
        // 1 MiB, at most max-message-size). A body that fills its cap is fetched again alone
        // up to max-message-size; one that fills that is refused as too large. A server that
        // announces 1 KB and sends 200 MB cannot make mailferry hold more than the limit
        // plus a batch of capped bodies.
        let max = self.max_message;
        let largest = uids
            .iter()
            .filter_map(|u| self.announced.get(u))
            .copied()
            .max()
            .unwrap_or(0);
        let cap = largest
            .saturating_mul(2)
            .saturating_add(64 * 1024)
            .max(1 << 20)
            .min(max);
        let got = self.fetch_capped(&uids, cap).await?;
        let mut out = Vec::with_capacity(got.len());
        // Bytes of bodies fetched again alone: beyond max-message-size of them, the rest
        // wait for the next run (they stay unsettled), so that one batch of liars cannot
        // hold many large messages at once.
        let mut refetched: u64 = 0;
        for (uid, mut result) in got {
            let full = matches!(&result, Ok(m) if m.len() as u64 >= cap);
            if full && cap < max && self.broken.is_some() {
                // Cannot fetch it again in this session: the next one will.
                continue;
            }
            if full && cap < max {
                if refetched >= max {
                    warn!(uid, "larger than announced; fetched at the next run");
                    continue;
                }
                // More than its announced size came: fetch it alone, up to the limit.
                let mut again = self.fetch_capped(&[uid], max).await?;
                result = again.pop().map_or_else(
                    || {
                        Err(mailferry_core::FetchFailure::temporary(
                            "the message disappeared",
                        ))
                    },
                    |(_, r)| r,
                );
                refetched += result.as_ref().map_or(0, |m| m.len() as u64);
            }
            if matches!(&result, Ok(m) if m.len() as u64 >= max) {
                result = Err(mailferry_core::FetchFailure::permanent(format!(
                    "the message is larger than max-message-size ({max} bytes); not fetched whole"
                )));
            }
            out.push((MessageKey::Uid(uid), result));
        }
        Ok(out)
    }

    async fn headers(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, RawMessage)>, ImapError> {
        let uids: Vec<u32> = keys
            .iter()
            .filter_map(|k| match k {
                MessageKey::Uid(uid) => Some(*uid),
                MessageKey::Uidl(_) => None,
            })
            .collect();
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let io = self.io_timeout;
        let set = sequence_set(&uids);
        let mut by_uid = HashMap::new();
        {
            let mut stream = timed(
                "UID FETCH headers",
                io,
                self.session.uid_fetch(&set, "(UID BODY.PEEK[HEADER])"),
            )
            .await?;
            while let Some(item) = timed("UID FETCH headers", io, async {
                Ok::<_, ImapError>(stream.next().await)
            })
            .await?
            {
                let fetch = item?;
                if let (Some(uid), Some(h)) = (fetch.uid, fetch.header()) {
                    by_uid.insert(uid, RawMessage::new(h.to_vec()));
                }
            }
        }
        self.drain_unsolicited();
        Ok(uids
            .iter()
            .filter_map(|u| by_uid.remove(u).map(|m| (MessageKey::Uid(*u), m)))
            .collect())
    }

    async fn check_settle(&mut self, action: &SourceAction) -> Result<(), ImapError> {
        let caps = self.capabilities().await?;
        let has = |c: &str| caps.iter().any(|x| x.eq_ignore_ascii_case(c));
        let needs_uidplus = matches!(action, SourceAction::Delete)
            || matches!(action, SourceAction::Move(_) if !has("MOVE"));
        if needs_uidplus && !has("UIDPLUS") {
            return Err(ImapError::Unsupported(
                "UID EXPUNGE (UIDPLUS), which after-delivery = delete or move needs (a plain EXPUNGE would also remove what you marked deleted); use keep or mark-seen",
            ));
        }
        if let SourceAction::Move(to) = action {
            let io = self.io_timeout;
            if let Err(e) = timed("STATUS", io, self.session.status(to, "(MESSAGES)")).await {
                return Err(match e {
                    ImapError::Session(async_imap::error::Error::No(reason)) => {
                        let naming = self.naming(to).await.unwrap_or_default();
                        ImapError::Folder {
                            folder: to.clone(),
                            reason: format!(
                                "after-delivery moves mail there, but the server says: {reason}{naming}"
                            ),
                        }
                    }
                    other => other,
                });
            }
            self.drain_unsolicited();
        }
        Ok(())
    }

    async fn settle(
        &mut self,
        folder: &str,
        uidvalidity: u32,
        keys: &[MessageKey],
        action: &SourceAction,
    ) -> Result<(), ImapError> {
        let uids: Vec<u32> = keys
            .iter()
            .filter_map(|k| match k {
                MessageKey::Uid(uid) => Some(*uid),
                MessageKey::Uidl(_) => None,
            })
            .collect();
        if uids.is_empty() {
            return Ok(());
        }
        self.usable()?;
        let io = self.io_timeout;
        let caps = self.capabilities().await?;
        let has = |c: &str| caps.iter().any(|x| x.eq_ignore_ascii_case(c));
        // EXAMINE was read-only: changing anything needs SELECT, and the same UIDVALIDITY,
        // or the UIDs would name other messages.
        let mailbox = timed("SELECT", io, self.session.select(folder)).await?;
        if mailbox.uid_validity != Some(uidvalidity) {
            return Err(ImapError::Protocol(format!(
                "the UIDVALIDITY of {folder:?} changed since it was listed; nothing was changed"
            )));
        }
        let set = sequence_set(&uids);
        let needs_uidplus = matches!(action, SourceAction::Delete)
            || matches!(action, SourceAction::Move(_) if !has("MOVE"));
        if needs_uidplus && !has("UIDPLUS") {
            // Plain EXPUNGE would also remove messages the user marked \Deleted.
            return Err(ImapError::Unsupported(
                "UID EXPUNGE (UIDPLUS), which deleting or moving safely needs",
            ));
        }
        match action {
            SourceAction::MarkSeen => self.store(&set, "+FLAGS.SILENT (\\Seen)").await?,
            SourceAction::Move(to) if has("MOVE") => {
                timed("UID MOVE", io, self.session.uid_mv(&set, to)).await?;
            }
            SourceAction::Move(to) => {
                timed("UID COPY", io, self.session.uid_copy(&set, to)).await?;
                self.store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                self.expunge(&set).await?;
            }
            SourceAction::Delete => {
                self.store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                self.expunge(&set).await?;
            }
        }
        self.drain_unsolicited();
        debug!(
            folder,
            count = uids.len(),
            ?action,
            "after-delivery policy applied"
        );
        Ok(())
    }

    async fn close(mut self) -> Result<(), ImapError> {
        // A session that ended at an unreadable reply says so: the messages after it were
        // not fetched, and the engine opens a new session for them.
        self.usable()?;
        // LOGOUT commits nothing on a read-only session; a failure here changes nothing.
        let _ = tokio::time::timeout(self.io_timeout, self.session.logout()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_sets_merge_runs() {
        assert_eq!(sequence_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(sequence_set(&[5]), "5");
        assert_eq!(sequence_set(&[3, 1, 2, 2]), "1:3");
    }

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
