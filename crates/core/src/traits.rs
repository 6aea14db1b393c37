//! The capabilities the engine drives: a [`Source`] of messages and a [`Destination`].

use std::future::Future;

use crate::{Classify, RawMessage};

/// One message as listed by a source, before its bytes are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedMessage {
    /// The IMAP UID, unique within one UIDVALIDITY of one folder.
    pub uid: u32,
    /// The size the server announced (`RFC822.SIZE`), used to plan fetch batches.
    pub size: u32,
}

/// A folder opened for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderState {
    /// The folder's UIDVALIDITY. When it changes, every UID is new again.
    pub uidvalidity: u32,
    /// Every message in the folder, in ascending UID order.
    pub messages: Vec<ListedMessage>,
}

/// Where messages come from: an IMAP folder (later also a POP3 maildrop).
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

    /// Fetches the raw bytes of `uids` from the folder opened last, in the order given.
    /// A message that disappeared in the meantime is left out of the result.
    fn fetch(
        &mut self,
        uids: &[u32],
    ) -> impl Future<Output = Result<Vec<(u32, RawMessage)>, Self::Error>> + Send;

    /// Ends the session politely (IMAP LOGOUT). Errors are not interesting at this point.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// What a destination says when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The destination's own id or reply for the message (SMTP: the final reply text,
    /// which usually names the queue id).
    pub id: String,
}

/// Where messages go: an SMTP server (later also the Gmail API).
pub trait Destination: Send + Sync {
    /// The adapter's error type.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// Delivers one message. `Ok` means the destination has taken responsibility for it.
    fn deliver(
        &self,
        message: &RawMessage,
    ) -> impl Future<Output = Result<Receipt, Self::Error>> + Send;
}
