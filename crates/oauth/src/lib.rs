//! OAuth2 for mail: signing in once on a headless server, and keeping the tokens fresh.
//!
//! - [`OAuth::start_device`] + [`OAuth::finish_device`]: the device code flow (Microsoft's
//!   default): print a URL and a code, poll until the user approved it on any device.
//! - [`BrowserSignIn`]: the authorization code flow with PKCE and a loopback redirect on
//!   127.0.0.1 (Google's only choice for Gmail scopes), or the user pastes the URL the
//!   browser ended on when the browser runs on another machine.
//! - [`OAuth::refresh`]: a new access token (and, with rotation, a new refresh token).
//!
//! The crate keeps nothing: the caller stores what [`TokenSet`] holds. Every failure is an
//! [`OAuthError`] with a class and a hint, so that an expired or revoked refresh token parks
//! an account instead of being retried in a loop.

#![warn(missing_docs)]

mod browser;
mod client;
mod error;

pub use browser::{BrowserSignIn, parse_redirect};
pub use client::{DeviceCode, OAuth};
pub use error::{OAuthError, Refusal};
pub use mailferry_core::{OAuthClient, OAuthProvider, Secret};

/// What a successful sign-in or refresh returns.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token for IMAP, POP3, SMTP or an API.
    pub access_token: Secret,
    /// The token that gets new access tokens. A refresh may return a new one (rotation):
    /// then the old one is dead and only this one must be kept.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, in seconds since the Unix epoch (local clock).
    pub expires_at: i64,
    /// The scopes granted, when the server said.
    pub scopes: Vec<String>,
    /// Who signed in (from the ID token's `email` or `preferred_username`), when known.
    pub subject: Option<String>,
}
