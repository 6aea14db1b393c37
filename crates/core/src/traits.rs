//! The capabilities the engine drives: a [`Source`] of messages and a [`Destination`].

use std::fmt;
use std::future::Future;

use crate::{Classify, RawMessage};

/// What identifies a message at its source, within one folder and UIDVALIDITY.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKey {
    /// An IMAP UID.
    Uid(u32),
    /// A POP3 unique-id listing (`UIDL`) value.
    Uidl(String),
}

impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(uid) => write!(f, "UID {uid}"),
            Self::Uidl(uidl) => write!(f, "UIDL {uidl}"),
        }
    }
}

/// One message as listed by a source, before its bytes are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMessage {
    /// Its key at the source.
    pub key: MessageKey,
    /// The size the server announced, used to plan fetch batches.
    pub size: u64,
    /// When the server received it (IMAP INTERNALDATE), Unix seconds, when known.
    pub received: Option<i64>,
}

/// A folder opened for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderState {
    /// The folder's UIDVALIDITY (IMAP); 0 for POP3, whose UIDLs are stable on their own.
    pub uidvalidity: u32,
    /// The messages listed, in the server's order: every message, or with a
    /// [`ListFrom`], only those from its UIDNEXT on and those it names.
    pub messages: Vec<ListedMessage>,
    /// The UID the next message will get (IMAP `UIDNEXT`), when the server said.
    pub uidnext: Option<u32>,
    /// Whether every message of the folder was listed (not only what can be new): what a
    /// complete listing leaves out is gone from the source.
    pub complete: bool,
}

/// What a previous complete run of a folder saw: enough to list only what can be new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFrom {
    /// The folder's UIDVALIDITY then; another one means a full listing.
    pub uidvalidity: u32,
    /// The folder's UIDNEXT then: UIDs from here on are new.
    pub uidnext: u32,
    /// Messages below it that are still unsettled (deferred, attempted): listed too.
    pub also: Vec<MessageKey>,
}

/// What happens at the source to a message whose delivery is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAction {
    /// Set `\Seen` (IMAP).
    MarkSeen,
    /// Move to this folder (IMAP: `UID MOVE`, or COPY + `\Deleted` + `UID EXPUNGE`).
    Move(String),
    /// Remove (IMAP: `\Deleted` + `UID EXPUNGE`; POP3: `DELE`, committed by `QUIT`).
    Delete,
}

/// Why a source would not hand out one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// The source's words, or what was wrong.
    pub reason: String,
    /// Whether trying again cannot help (larger than the limit): then it is refused at
    /// once; otherwise it is tried again at later runs.
    pub permanent: bool,
}

impl FetchFailure {
    /// A failure that may pass (a NIL body, `RETR` answered `-ERR`).
    #[must_use]
    pub fn temporary(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: false,
        }
    }

    /// A failure that will not pass (the message is larger than allowed).
    #[must_use]
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// One fetched message: its bytes, or why the source would not hand it out.
pub type Fetched = Result<RawMessage, FetchFailure>;

/// Where messages come from: an IMAP folder or a POP3 maildrop.
///
/// A source never changes a message's flags or bytes while listing or fetching.
pub trait Source: Send {
    /// The adapter's error type.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// Opens `folder` read-only and lists its messages.
    fn open(
        &mut self,
        folder: &str,
    ) -> impl Future<Output = Result<FolderState, Self::Error>> + Send;

    /// Like [`Source::open`], but lists only what can be new since `from` when the source
    /// can tell (IMAP: UIDNEXT under the same UIDVALIDITY); a full listing otherwise.
    fn open_from(
        &mut self,
        folder: &str,
        from: &ListFrom,
    ) -> impl Future<Output = Result<FolderState, Self::Error>> + Send {
        let _ = from;
        self.open(folder)
    }

    /// Fetches the raw bytes of `keys` from the folder opened last, in the order given.
    /// A message that disappeared in the meantime is left out of the result. A message the
    /// server would not hand out (a NIL body, `RETR` answered `-ERR`) is `Err` with the
    /// server's words: its own trouble, which must not stop the others. `Err` of the whole
    /// call is the session's trouble.
    fn fetch(
        &mut self,
        keys: &[MessageKey],
    ) -> impl Future<Output = Result<Vec<(MessageKey, Fetched)>, Self::Error>> + Send;

    /// Applies the after-delivery policy to `keys` of `folder`, whose UIDVALIDITY must still
    /// be `uidvalidity`. The engine calls this only for messages whose delivery is
    /// committed in the ledger. (POP3 removes at `QUIT`, so a cut session removes nothing.)
    fn settle(
        &mut self,
        folder: &str,
        uidvalidity: u32,
        keys: &[MessageKey],
        action: &SourceAction,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Checks, before anything is delivered, that `action` can be applied in this
    /// session (the server has what it needs, a target folder exists), so that a policy
    /// that cannot work is a configuration error at once, not after every delivery.
    fn check_settle(
        &mut self,
        action: &SourceAction,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = action;
        async { Ok(()) }
    }

    /// The header blocks of `keys` (for `once --dry-run`'s preview), without changing a
    /// flag; messages that are gone are left out. None, by default.
    fn headers(
        &mut self,
        keys: &[MessageKey],
    ) -> impl Future<Output = Result<Vec<(MessageKey, RawMessage)>, Self::Error>> + Send {
        let _ = keys;
        async { Ok(Vec::new()) }
    }

    /// The handle through which the run lets this source's reads wait for its next wake
    /// ([`crate::LazyReads`]); `None` where the source's reads cannot (the default).
    fn lazy_reads(&self) -> Option<crate::LazyReads> {
        None
    }

    /// What this source wants remembered for its next session, after [`Source::open`]
    /// (POP3: whether messages are keyed by UIDL or by a header hash). The engine stores it
    /// and hands it back through the adapter's constructor.
    fn memo(&self) -> Option<String> {
        None
    }

    /// Ends the session (IMAP LOGOUT, POP3 QUIT). For POP3 this commits deletions.
    fn close(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What a destination says when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The destination's own id or reply for the message (SMTP: the final reply text,
    /// which usually names the queue id).
    pub id: String,
}

/// What a destination knows about an earlier delivery that was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It arrived: the destination's id.
    Found(String),
    /// It did not (or the destination cannot tell): deliver again.
    Absent,
    /// Too early to tell (a search that lags): leave the attempt open.
    TooEarly,
}

/// Where messages go: an SMTP server, the Gmail API, a test's recorder. The engine's
/// pipeline is generic over it. Its futures need not be `Send`: deliveries run on their
/// account's task.
pub trait Destination: Sync {
    /// The adapter's error type.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// How many deliveries may be in flight at once.
    fn concurrency(&self) -> usize {
        1
    }

    /// Delivers one message from `folder`. `Ok` means the destination has taken
    /// responsibility for it.
    fn deliver(
        &self,
        message: &RawMessage,
        folder: &str,
    ) -> impl Future<Output = Result<Receipt, Self::Error>>;

    /// Whether [`Destination::lookup`] can tell if an unconfirmed delivery arrived.
    fn can_look_up(&self) -> bool {
        false
    }

    /// For an earlier attempt (begun at `since`, Unix seconds) that was not confirmed:
    /// whether it arrived. [`Lookup::Absent`] by default (deliver again: at least once).
    fn lookup(
        &self,
        message: &RawMessage,
        folder: &str,
        since: i64,
    ) -> impl Future<Output = Result<Lookup, Self::Error>> {
        let _ = (message, folder, since);
        async { Ok(Lookup::Absent) }
    }

    /// Ends what is open (an SMTP session).
    fn close(&self) -> impl Future<Output = ()> {
        async {}
    }
}
