//! The per-account pipeline: list what is new at the source, fetch it in bounded batches,
//! record an attempt, deliver, record the outcome. The ledger entry is committed before the
//! next message is touched, so a crash at any point loses nothing and re-sends at most the
//! one message whose outcome was not yet recorded.
//!
//! Failures are handled by their [`ErrorClass`]: a per-message refusal is recorded and the
//! run carries on; anything else ends this account's run and leaves the other accounts
//! alone.

#![warn(missing_docs)]

mod build;
pub mod check;
pub mod daemon;
mod deliver;
pub mod notice;
mod push;
mod report;
mod run;
pub mod schedule;
mod source;
pub mod tokens;

pub use push::LOGINS_PER_HOUR;
pub use report::{AccountReport, ErrorReport, FolderPreview, MessageProblem};
pub use run::{Observer, RunOptions, run_once};
pub use tokens::{TokenError, TokenKeeper};

pub use mailferry_core::ErrorClass;
