//! The commands behind the source: listing, fetching, flag and expunge, folder names.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::StreamExt;
use mailferry_core::{FolderState, ListedMessage, MessageKey, RawMessage};
use tracing::{debug, warn};

use crate::connect::timed;
use crate::error::ImapError;

use crate::source::ImapSource;
use crate::uid_set::sequence_set;

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

    /// `EXAMINE` and the listing: everything, or with `from` (same UIDVALIDITY) only the
    /// UIDs from its UIDNEXT on and those it names; nothing at all when UIDNEXT did not
    /// move and nothing is named.
    pub(crate) async fn list(
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
                    reason: crate::error::server_words(&reason),
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
    pub(crate) async fn fetch_capped(
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

    pub(crate) async fn store(&mut self, set: &str, query: &str) -> Result<(), ImapError> {
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

    pub(crate) async fn expunge(&mut self, set: &str) -> Result<(), ImapError> {
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
