//! The commands behind the source: listing, fetching, flag and expunge, folder names.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::StreamExt;
use mailferry_core::{FolderState, ListedMessage, MessageKey, RawMessage};
use tracing::{debug, warn};

use crate::completion::{checked, outcome};
use crate::connect::timed;
use crate::error::{ImapError, Refusal};

use crate::source::ImapSource;
use crate::uid_set::{sequence_set, sequence_sets};

/// The UID a FETCH reply names in its first line (`* 71 FETCH (UID 71 BODY[] ...`).
pub(crate) fn blamed_uid(first_line: &str) -> Option<u32> {
    let upper = first_line.to_ascii_uppercase();
    let at = upper.find("UID ")? + 4;
    let digits: String = upper[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A FETCH response viewed as the bytes of its `BODY[]`.
pub(crate) struct FetchedBody(async_imap::types::Fetch);

impl AsRef<[u8]> for FetchedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.body().unwrap_or_default()
    }
}

impl ImapSource {
    /// How the server names folders, said so that a missing `wanted` can be found: its
    /// hierarchy separator, and the folders whose last part is `wanted` (Cyrus keeps
    /// personal folders under `INBOX.`, so `Archive` is `INBOX.Archive` there).
    pub(crate) async fn naming(&mut self, wanted: &str) -> Result<String, ImapError> {
        let io = self.io_timeout;
        let mut names = Vec::new();
        let mut separator = None;
        {
            let stream = checked(
                "LIST",
                io,
                &self.replies,
                self.session.list(Some(""), Some("*")),
            )
            .await?;
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
        outcome("LIST", &self.replies)?;
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

    /// `EXAMINE`: a refusal that is not about the server's state (throttled, busy, not
    /// connected) is about the folder.
    pub(crate) async fn examine(
        &mut self,
        folder: &str,
    ) -> Result<async_imap::types::Mailbox, ImapError> {
        let io = self.io_timeout;
        let opened = checked("EXAMINE", io, &self.replies, self.session.examine(folder)).await;
        match opened {
            Err(ImapError::Refused { status, words, .. })
                if !Refusal::of(&words).is_temporary() =>
            {
                Err(ImapError::Folder {
                    folder: folder.to_owned(),
                    reason: format!("{status} {words}"),
                })
            }
            other => other,
        }
    }

    /// `EXAMINE` and the listing: everything, or with `from` (same UIDVALIDITY) only the
    /// UIDs from its UIDNEXT on and those it names; nothing at all when UIDNEXT did not
    /// move and nothing is named. A UIDNEXT below `from`'s (GMX has been seen to report
    /// one: deltachat core #2188) cannot be trusted: everything is listed.
    pub(crate) async fn list(
        &mut self,
        folder: &str,
        from: Option<&mailferry_core::ListFrom>,
    ) -> Result<FolderState, ImapError> {
        let mailbox = self.examine(folder).await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| ImapError::Protocol(format!("no UIDVALIDITY for folder {folder:?}")))?;
        let uidnext = mailbox.uid_next;
        let from = from.filter(|f| f.uidvalidity == uidvalidity && uidnext.is_some());
        let from = match from {
            Some(f) if uidnext.is_some_and(|n| n < f.uidnext) => {
                warn!(
                    folder,
                    saved = f.uidnext,
                    now = uidnext.unwrap_or_default(),
                    "the server's UIDNEXT went backwards without a new UIDVALIDITY; listing the whole folder"
                );
                None
            }
            other => other,
        };
        let sets = listing_sets(from, uidnext);
        // "N:*" names the highest UID even when it is below N: keep only what was asked.
        let wanted = |uid: u32| {
            from.is_none_or(|f| uid >= f.uidnext || f.also.contains(&MessageKey::Uid(uid)))
        };
        let mut messages = Vec::with_capacity(usize::try_from(mailbox.exists).unwrap_or(0));
        let mut without_uid = 0usize;
        self.seen.clear();
        if mailbox.exists > 0 {
            for set in sets {
                without_uid += self.list_set(&set, &wanted, &mut messages).await?;
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
        // Only a listing the server completed counts (IDLE compares with it).
        self.listed_uidnext.insert(folder.to_owned(), uidnext);
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
            complete: from.is_none() && without_uid == 0,
        })
    }

    /// One `UID FETCH set (UID RFC822.SIZE INTERNALDATE FLAGS)` of the listing, into
    /// `messages`; returns how many answers had no UID. The server must complete it with
    /// `OK`: a `NO` (Yahoo under load) is an error, never an empty folder.
    async fn list_set(
        &mut self,
        set: &str,
        wanted: &impl Fn(u32) -> bool,
        messages: &mut Vec<ListedMessage>,
    ) -> Result<usize, ImapError> {
        const STEP: &str = "UID FETCH (listing)";
        let io = self.io_timeout;
        let mut without_uid = 0;
        let mut stream = checked(
            STEP,
            io,
            &self.replies,
            self.session
                .uid_fetch(set, "(UID RFC822.SIZE INTERNALDATE FLAGS)"),
        )
        .await?;
        while let Some(item) =
            timed(STEP, io, async { Ok::<_, ImapError>(stream.next().await) }).await?
        {
            let fetch = item?;
            let Some(uid) = fetch.uid else {
                without_uid += 1;
                continue;
            };
            if !wanted(uid) {
                continue;
            }
            if fetch
                .flags()
                .any(|f| matches!(f, async_imap::types::Flag::Seen))
            {
                self.seen.insert(uid);
            }
            messages.push(ListedMessage {
                key: MessageKey::Uid(uid),
                size: u64::from(fetch.size.unwrap_or(0)),
                received: fetch.internal_date().map(|d| d.timestamp()),
            });
        }
        drop(stream);
        outcome(STEP, &self.replies)?;
        Ok(without_uid)
    }

    /// One `UID FETCH uids (UID BODY.PEEK[]<0.cap>)`: what arrived, and how it ended.
    async fn fetch_batch(&mut self, uids: &[u32], cap: u64) -> Result<Batch, ImapError> {
        const STEP: &str = "UID FETCH";
        let io = self.io_timeout;
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let mut batch = Batch::default();
        let mut stream = checked(
            STEP,
            io,
            &self.replies,
            self.session
                .uid_fetch(sequence_set(uids), format!("(UID BODY.PEEK[]<0.{cap}>)")),
        )
        .await?;
        // No total limit per item: a body is one item however large; the stream's
        // inactivity limit (io-timeout of silence) is what applies.
        let mut end = Ok(());
        while let Some(item) = stream.next().await {
            let fetch = match item {
                Ok(fetch) => fetch,
                Err(e) => {
                    end = Err(e);
                    break;
                }
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
                // Another client changed its flags (an unsolicited FETCH), a NIL body, or
                // Exchange's `* 7 FETCH (UID 7)` for a message it cannot render yet: the
                // body may still come in its own FETCH.
                batch.bodiless.insert(uid);
                continue;
            }
            // The response buffer becomes the message: no copy of its bytes.
            batch
                .bodies
                .insert(uid, RawMessage::new(Bytes::from_owner(FetchedBody(fetch))));
        }
        drop(stream);
        batch.end = match end {
            Ok(()) => outcome(STEP, &self.replies),
            Err(e) if self.replies.bye().is_some() => {
                let _ = e;
                Err(crate::completion::cut_short(STEP, &self.replies))
            }
            Err(e) => Err(ImapError::from(e)),
        };
        Ok(batch)
    }

    /// `UID FETCH uids (UID BODY.PEEK[]<0.cap>)`: each body, at most `cap` bytes of it.
    ///
    /// A batch the server refuses (`NO`, not a throttle) is asked for again one message at
    /// a time: Yahoo refuses one particular message for good (MailKit #358), and that
    /// message alone is then a failure, in the server's words; the others arrive. A
    /// session that ends mid-answer (throttled and hung up on, `BYE`, cut) keeps what
    /// arrived; the rest waits for the next session.
    pub(crate) async fn fetch_capped(
        &mut self,
        uids: &[u32],
        cap: u64,
    ) -> Result<Vec<(u32, mailferry_core::Fetched)>, ImapError> {
        self.usable()?;
        let mut batch = self.fetch_batch(uids, cap).await?;
        let per_message = |e: &Result<(), ImapError>| match e {
            Err(ImapError::Refused { words, .. }) => !Refusal::of(words).is_session_wide(),
            _ => false,
        };
        if per_message(&batch.end) && uids.len() > 1 {
            debug!("a batch was refused; asking for its messages one by one");
            let first = std::mem::replace(&mut batch.end, Ok(()));
            let mut arrived = 0usize;
            for uid in uids {
                if batch.bodies.contains_key(uid) {
                    continue;
                }
                let one = self.fetch_batch(&[*uid], cap).await?;
                arrived += one.bodies.len();
                batch.bodies.extend(one.bodies);
                batch.bodiless.extend(one.bodiless);
                match one.end {
                    Ok(()) => {}
                    Err(ImapError::Refused { status, words, .. })
                        if !Refusal::of(&words).is_session_wide() =>
                    {
                        batch.refused.insert(*uid, format!("{status} {words}"));
                    }
                    Err(e) => {
                        batch.end = Err(e);
                        break;
                    }
                }
            }
            if arrived == 0 && batch.refused.len() > 1 && batch.end.is_ok() {
                // Every message refused alone too: the server, not the messages.
                batch.refused.clear();
                batch.end = first;
            }
        } else if per_message(&batch.end)
            && let (Err(ImapError::Refused { status, words, .. }), [uid]) = (&batch.end, uids)
        {
            batch.refused.insert(*uid, format!("{status} {words}"));
            batch.end = Ok(());
        }
        match std::mem::replace(&mut batch.end, Ok(())) {
            Ok(()) => {
                self.drain_unsolicited();
                Ok(batch.results(uids, None))
            }
            Err(e @ ImapError::Unreadable { .. }) => {
                // The reply belongs to the UID it names, else to the first one not
                // answered (servers answer in UID order). That message alone is the
                // failure: the others come with the next session.
                let ImapError::Unreadable { excerpt } = &e else {
                    unreachable!("matched above")
                };
                let blamed = blamed_uid(excerpt)
                    .filter(|u| uids.contains(u) && !batch.bodies.contains_key(u))
                    .or_else(|| uids.iter().copied().find(|u| !batch.bodies.contains_key(u)));
                let reason = format!(
                    "the server's answer for this message cannot be read (it begins {excerpt:?})"
                );
                self.ended = Some(e);
                Ok(batch.results(uids, blamed.map(|u| (u, reason))))
            }
            Err(e) if batch.bodies.is_empty() && batch.refused.is_empty() => Err(e),
            Err(e) => {
                // What arrived is used; the session says why it ended at the next request.
                warn!(cause = %e, arrived = batch.bodies.len(), "the session ended during a fetch; what arrived is delivered, the rest waits for the next session");
                self.ended = Some(e);
                Ok(batch.results(uids, None))
            }
        }
    }

    /// `UID STORE set query`; the server must complete it with `OK`.
    pub(crate) async fn store(&mut self, set: &str, query: &str) -> Result<(), ImapError> {
        const STEP: &str = "UID STORE";
        let io = self.io_timeout;
        let mut stream =
            checked(STEP, io, &self.replies, self.session.uid_store(set, query)).await?;
        while let Some(item) =
            timed(STEP, io, async { Ok::<_, ImapError>(stream.next().await) }).await?
        {
            item?;
        }
        drop(stream);
        outcome(STEP, &self.replies)
    }

    /// `UID EXPUNGE set`; the server must complete it with `OK`.
    pub(crate) async fn expunge(&mut self, set: &str) -> Result<(), ImapError> {
        const STEP: &str = "UID EXPUNGE";
        let io = self.io_timeout;
        let stream = checked(STEP, io, &self.replies, self.session.uid_expunge(set)).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) =
            timed(STEP, io, async { Ok::<_, ImapError>(stream.next().await) }).await?
        {
            item?;
        }
        outcome(STEP, &self.replies)
    }
}

/// What one body fetch brought.
struct Batch {
    bodies: HashMap<u32, RawMessage>,
    /// UIDs answered without a body.
    bodiless: HashSet<u32>,
    /// UIDs the server refused when asked for alone, with its words.
    refused: HashMap<u32, String>,
    /// How the command ended.
    end: Result<(), ImapError>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            bodies: HashMap::new(),
            bodiless: HashSet::new(),
            refused: HashMap::new(),
            end: Ok(()),
        }
    }
}

impl Batch {
    /// Each of `uids` that got an answer, in order; `blamed` fails with its reason. A UID
    /// with no answer at all was expunged meanwhile, or waits for the next session.
    fn results(
        mut self,
        uids: &[u32],
        blamed: Option<(u32, String)>,
    ) -> Vec<(u32, mailferry_core::Fetched)> {
        use mailferry_core::FetchFailure;
        uids.iter()
            .filter_map(|uid| {
                let failed = |why: String| Some((*uid, Err(FetchFailure::temporary(why))));
                if let Some(m) = self.bodies.remove(uid) {
                    Some((*uid, Ok(m)))
                } else if let Some((_, why)) = blamed.as_ref().filter(|(b, _)| b == uid) {
                    failed(why.clone())
                } else if let Some(words) = self.refused.remove(uid) {
                    failed(format!("the server refused to hand it out: {words}"))
                } else if self.bodiless.contains(uid) {
                    failed(
                        "the server answered UID FETCH BODY.PEEK[] without the body (NIL or missing; Exchange does this for a message it cannot render yet)"
                            .to_owned(),
                    )
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The UID sets a listing asks for: everything, or (incremental) the unsettled UIDs below
/// the saved UIDNEXT and everything from it on, or nothing when nothing can be new. Each
/// set fits a command of at most [`crate::uid_set::MAX_SET`] bytes.
fn listing_sets(from: Option<&mailferry_core::ListFrom>, uidnext: Option<u32>) -> Vec<String> {
    let Some(f) = from else {
        return vec!["1:*".to_owned()];
    };
    let also: Vec<u32> = f
        .also
        .iter()
        .filter_map(|k| match k {
            MessageKey::Uid(u) if *u < f.uidnext => Some(*u),
            _ => None,
        })
        .collect();
    let mut sets = sequence_sets(&also);
    if uidnext.is_some_and(|n| n > f.uidnext) {
        sets.push(format!("{}:*", f.uidnext));
    }
    sets
}
