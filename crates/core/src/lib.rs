//! The vocabulary every other mailferry crate shares: raw messages, where a message came
//! from, how an error should be handled, and the [`Source`] and [`Destination`] traits.
//!
//! This crate does no I/O. Adapters (IMAP, SMTP, ...) implement the traits; the engine drives
//! them and decides what to do with a failure by its [`ErrorClass`], never by its text.

#![warn(missing_docs)]

mod error;
mod lazy;
mod message;
mod net;
mod oauth;
mod secret;
mod traits;

pub use error::{Classify, ErrorClass, requested_wait};
pub use lazy::LazyReads;
pub use message::{CONTENT_HASH_PREFIX, RawMessage};
pub use net::{Login, TlsMode, shift_clock, unix_now};
pub use oauth::{OAuthClient, OAuthProvider};
pub use secret::Secret;
pub use traits::{
    Destination, FetchFailure, Fetched, FolderState, ListFrom, ListedMessage, Lookup, MessageKey,
    Receipt, Source, SourceAction,
};
