//! The POP3 source. [`codec`] is the protocol without I/O (commands, replies,
//! dot-unstuffing, fed in chunks of any size); [`Client`] drives it over any async stream
//! under timeouts; [`Pop3Source`] is the engine's view: one maildrop keyed by UIDL.
//!
//! POP3's own rule protects the mail: `DELE` only marks, and nothing is removed unless the
//! session ends with `QUIT`. mailferry marks only messages whose delivery is committed, and a
//! connection that drops before `QUIT` deletes nothing.

#![warn(missing_docs)]

mod client;
pub mod codec;
mod error;
pub mod sasl;
mod source;

pub use client::{Client, MAX_MESSAGE, Retrieved};
pub use error::Pop3Error;
pub use source::Keys;
pub use source::{ConnectOptions, Login, Pop3Source, TlsMode};
