//! The IMAP session as a [`Source`].

use std::collections::HashMap;
use std::time::Duration;

use async_imap::{Client, Session};
use futures_util::StreamExt;
use mailferry_core::{FolderState, MessageKey, RawMessage, Source, SourceAction};
use tracing::{debug, warn};

use crate::completion::{checked, outcome};
use crate::connect::{self, ConnectOptions, Stream, TlsMode, timed};
use crate::error::{ImapError, Refusal};

use crate::login::{Login, capabilities, greeting, oauth2_login, password_login};
use crate::uid_set::{sequence_set, sequence_sets};

/// A logged-in IMAP session reading one folder at a time.
pub struct ImapSource {
    pub(crate) session: Session<Stream>,
    pub(crate) io_timeout: Duration,
    /// Sizes the last listing announced, by UID.
    pub(crate) announced: HashMap<u32, u64>,
    /// Largest message fetched.
    pub(crate) max_message: u64,
    /// Set when the session ended in the middle of an answer (a reply that could not be
    /// read, a `BYE`, a throttled command the server then hung up on): what arrived
    /// before is used, and every later request says why it ended (the engine then opens
    /// a new session, after the pause the server asked for).
    pub(crate) ended: Option<ImapError>,
    /// The tagged completions and `BYE` the reader saw (completion.rs).
    pub(crate) replies: crate::completion::Replies,
    /// UIDs the last listing showed as `\Seen` (mark-seen leaves them alone).
    pub(crate) seen: std::collections::HashSet<u32>,
    /// The stream's silence limit: IDLE raises it while it waits.
    pub(crate) limit: mailferry_tls::IdleLimit,
    /// The UIDNEXT each folder had when it was last listed (IDLE compares).
    pub(crate) listed_uidnext: HashMap<String, Option<u32>>,
    /// Whether the socket's reads may wait for the run's next wake.
    pub(crate) lazy: mailferry_core::LazyReads,
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
    pub async fn connect(opts: &ConnectOptions, login: Login<&str>) -> Result<Self, ImapError> {
        let io = opts.io_timeout;
        let (tcp, low_water) = mailferry_tls::Watermarked::new(connect::tcp(opts).await?);
        let lazy = low_water.lazy_reads();
        // Every read and write fails after io-timeout of silence (not of total time): a
        // large literal trickling in slowly is fine, a server that stops is not.
        // Binary literals (`~{n}`) are read as plain ones (see literal8.rs), and the
        // server's completions are seen (completion.rs).
        let replies = crate::completion::Replies::default();
        let (stream, limit) = match opts.tls {
            TlsMode::Implicit => watched(
                Box::new(connect::tls(opts, tcp).await?),
                io,
                &replies,
                low_water,
            ),
            TlsMode::None => watched(Box::new(tcp), io, &replies, low_water),
            TlsMode::StartTls => {
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
                watched(
                    Box::new(connect::tls(opts, plain.into_inner()).await?),
                    io,
                    &replies,
                    low_water,
                )
            }
        };
        let mut client = Client::new(stream);
        if opts.tls != TlsMode::StartTls {
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
            ended: None,
            replies,
            seen: std::collections::HashSet::new(),
            limit,
            listed_uidnext: HashMap::new(),
            lazy,
        })
    }

    /// Sets the largest message fetched (`max-message-size`).
    pub fn limit_messages(&mut self, bytes: u64) {
        self.max_message = bytes.max(1024);
    }

    /// An error when the session ended mid-answer: it cannot go on.
    pub(crate) fn usable(&self) -> Result<(), ImapError> {
        match &self.ended {
            Some(e) => Err(e.again()),
            None => Ok(()),
        }
    }

    pub(crate) fn drain_unsolicited(&mut self) {
        while self.session.unsolicited_responses.try_recv().is_ok() {}
    }
}

/// The stream a session reads: an inactivity limit (whose handle is returned), binary
/// literals read as plain ones (see literal8.rs), completions seen into `replies`.
fn watched(
    inner: Stream,
    io: Duration,
    replies: &crate::completion::Replies,
    low_water: mailferry_tls::LowWater,
) -> (Stream, mailferry_tls::IdleLimit) {
    let idle = mailferry_tls::Idle::new(inner, io);
    let limit = idle.limit();
    let stream = crate::literal8::Literal8::new(idle, replies.clone(), low_water);
    (Box::new(stream), limit)
}

impl Source for ImapSource {
    type Error = ImapError;

    fn lazy_reads(&self) -> Option<mailferry_core::LazyReads> {
        Some(self.lazy.clone())
    }

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
            if full && cap < max && self.ended.is_some() {
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
        self.usable()?;
        let io = self.io_timeout;
        let set = sequence_set(&uids);
        let mut by_uid = HashMap::new();
        {
            let mut stream = checked(
                "UID FETCH headers",
                io,
                &self.replies,
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
        outcome("UID FETCH headers", &self.replies)?;
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
            let status = self.session.status(to, "(MESSAGES)");
            if let Err(e) = checked("STATUS", io, &self.replies, status).await {
                return Err(match e {
                    ImapError::Refused { status, words, .. }
                        if status == "NO" && !Refusal::of(&words).is_temporary() =>
                    {
                        let naming = self.naming(to).await.unwrap_or_default();
                        ImapError::Folder {
                            folder: to.clone(),
                            reason: format!(
                                "after-delivery moves mail there, but the server says: {status} {words}{naming}"
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
                // What the listing showed as \Seen needs no mark-seen again.
                MessageKey::Uid(uid)
                    if !(*action == SourceAction::MarkSeen && self.seen.contains(uid)) =>
                {
                    Some(*uid)
                }
                _ => None,
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
        let mailbox = checked("SELECT", io, &self.replies, self.session.select(folder)).await?;
        if mailbox.uid_validity != Some(uidvalidity) {
            return Err(ImapError::Protocol(format!(
                "the UIDVALIDITY of {folder:?} changed since it was listed; nothing was changed"
            )));
        }
        let needs_uidplus = matches!(action, SourceAction::Delete)
            || matches!(action, SourceAction::Move(_) if !has("MOVE"));
        if needs_uidplus && !has("UIDPLUS") {
            // Plain EXPUNGE would also remove messages the user marked \Deleted.
            return Err(ImapError::Unsupported(
                "UID EXPUNGE (UIDPLUS), which deleting or moving safely needs",
            ));
        }
        // Each command names at most MAX_SET bytes of UIDs (Exchange refuses long ones).
        for set in sequence_sets(&uids) {
            match action {
                SourceAction::MarkSeen => self.store(&set, "+FLAGS.SILENT (\\Seen)").await?,
                SourceAction::Move(to) if has("MOVE") => {
                    checked("UID MOVE", io, &self.replies, self.session.uid_mv(&set, to)).await?;
                }
                SourceAction::Move(to) => {
                    let copy = self.session.uid_copy(&set, to);
                    checked("UID COPY", io, &self.replies, copy).await?;
                    self.store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                    self.expunge(&set).await?;
                }
                SourceAction::Delete => {
                    self.store(&set, "+FLAGS.SILENT (\\Deleted)").await?;
                    self.expunge(&set).await?;
                }
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
