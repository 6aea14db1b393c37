//! mailferry's configuration: one TOML file, read in two stages.
//!
//! 1. [`raw`] mirrors the file with serde (through the `config` crate, which also layers
//!    `MAILFERRY__`-prefixed environment variables on top). Keys the program does not know
//!    are collected, not fatal on the first one.
//! 2. [`Config::from_raw`] applies provider presets, parses durations, reads `*-file`
//!    secrets, checks cross-references, and returns *every* problem at once, each naming its
//!    key path and, where the file has it, its line.
//!
//! Secrets live in [`Secret`], which never prints its content.

#![warn(missing_docs)]

mod error;
mod load;
mod model;
mod presets;
pub mod raw;
#[cfg(test)]
mod testing;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load, load_scoped};
pub use mailferry_core::Secret;
pub use model::oauth::{OAuthClient, OAuthProvider, OAuthSettings, SignInFlow, TokenUse};
pub use model::push::Push;
pub use model::{
    AccountConfig, AfterDelivery, Config, DEFAULT_SPAM_FOLDERS, Daemon, DestinationConfig,
    DestinationKind, Endpoint, FirstRun, GmailAuth, GmailConfig, GmailMode, Notify, Protocol,
    SecretScope, SmtpAuth, SmtpConfig, SmtpSender, SourceAuth, TlsMode, url_origin,
};
pub use presets::{Preset, preset};
