//! The SMTP destination: re-sends each message's raw bytes, unchanged but for what SMTP
//! itself requires ([RFC 5321 §2.3.8] CRLF line ends, [§4.5.2] dot-stuffing, a final
//! CRLF), to a fixed envelope recipient.
//!
//! lettre supplies the commands and reads the replies; this crate drives its connection
//! command by command, because what a reply means depends on when it comes: a 5xx to
//! `AUTH` is the account's problem, a 5xx to `RCPT` or after `DATA` is this one message's.
//! The connection is mailferry's: TLS (at once or after STARTTLS) through mailferry-tls,
//! and the message data written straight to it in long runs (`wire`).
//!
//! [RFC 5321 §2.3.8]: https://www.rfc-editor.org/rfc/rfc5321#section-2.3.8
//! [§4.5.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2

#![warn(missing_docs)]

mod destination;
mod error;
mod hello;
mod lettre_stream;
mod replies;
mod starttls;
mod wire;

pub use destination::{Sender, SmtpDestination, SmtpOptions, TlsMode};
pub use error::{EnvelopeCause, SmtpError, SmtpStep};
pub use mailferry_core::Login;
pub use wire::{DataPieces, write_data};
