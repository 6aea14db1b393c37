//! The IMAP source: connects over TLS (implicit or STARTTLS), logs in, opens folders
//! read-only (`EXAMINE`), lists UIDs with their sizes, and fetches messages with
//! `BODY.PEEK[]` so that no flag changes ([RFC 3501 §6.4.5]).
//!
//! Every network step runs under a timeout. Protocol parsing is async-imap's (imap-proto);
//! this crate owns connection setup, error classification and batching.
//!
//! [RFC 3501 §6.4.5]: https://www.rfc-editor.org/rfc/rfc3501#section-6.4.5

#![warn(missing_docs)]

mod commands;
mod completion;
mod connect;
mod error;
mod idle;
mod literal8;
mod login;
mod source;
mod uid_set;

pub use connect::{ConnectOptions, TlsMode};
pub use error::ImapError;
pub use idle::IdleEvent;
pub use login::Login;
pub use source::ImapSource;
