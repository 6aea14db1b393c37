//! Access tokens for logins: reused while fresh, refreshed ahead of expiry, refreshed once
//! more when a server refuses one early, rotated refresh tokens committed before use, and
//! one refresh at a time per owner (accounts delivering to one destination share its token).
//!
//! A refresh token the provider declares dead parks its owner: the store remembers why, and
//! every later login fails at once, without a request to the provider, until
//! `mailferry auth NAME` stores a new sign-in (the daemon picks it up at its next tick).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailferry_config::{Config, OAuthSettings, SourceAuth};
use mailferry_core::{Classify, ErrorClass, Secret};
use mailferry_oauth::{OAuth, OAuthClient, OAuthError, TokenSet};
use mailferry_store::{IssuedTokens, Store, StoreError};
use tracing::{debug, info, warn};

/// An access token expiring sooner than this is refreshed before it is used: a login or a
/// message upload must not start with a token about to lapse. A token that lives shorter
/// than twice this is refreshed at half its life instead ([`refresh_margin`]).
pub const REFRESH_MARGIN: i64 = 5 * 60;

/// How long before its expiry a token issued at `issued_at` is refreshed:
/// `min(REFRESH_MARGIN, lifetime / 2)`. With a flat five minutes a token that lives less
/// than that would be refreshed at every use: more refreshes, more rotations, more chances
/// to lose a sign-in to a crash between the answer and its commit.
#[must_use]
pub fn refresh_margin(issued_at: i64, expires_at: i64) -> i64 {
    REFRESH_MARGIN.min((expires_at - issued_at).max(0) / 2)
}

/// Refresh tokens are refreshed at least this often, mail or not: Microsoft's die after
/// 90 days unused.
pub const KEEPALIVE_AFTER: i64 = 30 * 24 * 3600;

/// The store key of an account's tokens.
#[must_use]
pub fn account_owner(name: &str) -> String {
    format!("account:{name}")
}

/// The store key of a destination's tokens.
#[must_use]
pub fn destination_owner(name: &str) -> String {
    format!("destination:{name}")
}

/// Every OAuth2 registration in `config`, with the owner key its tokens are stored under.
#[must_use]
pub fn oauth_owners(config: &Config) -> Vec<(String, &OAuthSettings)> {
    let accounts = config.accounts.iter().filter_map(|a| match &a.auth {
        SourceAuth::OAuth2(s) => Some((account_owner(&a.name), s)),
        _ => None,
    });
    let destinations = config
        .destinations
        .iter()
        .filter_map(|d| d.oauth().map(|(s, _)| (destination_owner(&d.name), s)));
    accounts.chain(destinations).collect()
}

/// The sign-in server's view of a registration: the configured client itself.
#[must_use]
pub fn provider(s: &OAuthSettings) -> &OAuthClient {
    &s.client
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `mailferry auth` never ran for this owner.
    #[error("not signed in yet")]
    NotSignedIn,
    /// The stored sign-in belongs to another app registration than the configured one.
    #[error(
        "the stored sign-in was made with client id {stored}, but the configuration now says {configured}"
    )]
    ClientChanged {
        /// Client id of the stored tokens.
        stored: String,
        /// Client id in the configuration.
        configured: String,
    },
    /// The refresh token died earlier; waiting for a new sign-in.
    #[error("parked until signed in again: {0}")]
    Parked(String),
    /// The sign-in server failed or refused.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The state database failed.
    #[error("cannot read or store tokens")]
    Store(#[from] StoreError),
}

impl Classify for TokenError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotSignedIn | Self::ClientChanged { .. } | Self::Parked(_) => ErrorClass::Auth,
            Self::OAuth(e) => e.class(),
            Self::Store(_) => ErrorClass::Transient,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::NotSignedIn | Self::ClientChanged { .. } => {
                Some("sign in once with `mailferry auth NAME`")
            }
            Self::Parked(_) => Some(
                "sign in again with `mailferry auth NAME`; until then this account is skipped without contacting the provider",
            ),
            Self::OAuth(e) => e.hint(),
            Self::Store(_) => Some("check the state directory's disk space and permissions"),
        }
    }
}

/// Hands out access tokens. One per process; cheap to share by reference.
#[derive(Debug)]
pub struct TokenKeeper {
    store: Store,
    oauth: OAuth,
    /// One lock per owner: a refresh happens once, the others wait and reuse it.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenKeeper {
    /// A keeper over `store`, talking to token endpoints within `timeout`.
    ///
    /// # Errors
    /// When the HTTPS client cannot be set up.
    pub fn new(store: Store, timeout: Duration) -> Result<Self, OAuthError> {
        Ok(Self {
            store,
            oauth: OAuth::new(timeout)?,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The state database the tokens live in.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sign-in client (for `mailferry auth` and `check`).
    #[must_use]
    pub fn oauth(&self) -> &OAuth {
        &self.oauth
    }

    fn lock_of(&self, owner: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(owner.to_owned()).or_default())
    }

    /// A usable access token for `owner`: the stored one while it has more than
    /// [`REFRESH_MARGIN`] left, else a refreshed one.
    ///
    /// # Errors
    /// See [`TokenError`]; a dead refresh token also parks `owner`.
    pub async fn access_token(
        &self,
        owner: &str,
        settings: &OAuthSettings,
    ) -> Result<Secret, TokenError> {
        self.get(owner, settings, None).await
    }

    /// A server refused `rejected` although it looked fresh (revoked, or the clocks
    /// disagree): a new access token, unless another task already got one meanwhile.
    ///
    /// # Errors
    /// As [`TokenKeeper::access_token`].
    pub async fn after_rejection(
        &self,
        owner: &str,
        settings: &OAuthSettings,
        rejected: &Secret,
    ) -> Result<Secret, TokenError> {
        self.get(owner, settings, Some(rejected)).await
    }

    async fn get(
        &self,
        owner: &str,
        settings: &OAuthSettings,
        rejected: Option<&Secret>,
    ) -> Result<Secret, TokenError> {
        let lock = self.lock_of(owner);
        let _guard = lock.lock().await;
        self.get_unlocked(owner, settings, rejected).await
    }

    /// Refreshes with `refresh_token` and commits the result before returning it. Call with
    /// the owner's lock held.
    async fn refresh(
        &self,
        owner: &str,
        settings: &OAuthSettings,
        refresh_token: &Secret,
    ) -> Result<Secret, TokenError> {
        debug!(owner, "refreshing the access token");
        match self.oauth.refresh(provider(settings), refresh_token).await {
            Ok(set) => {
                let rotated = set.refresh_token.as_ref() != Some(refresh_token);
                let stored = self
                    .store
                    .save_refresh(owner, refresh_token, issued(&set, refresh_token))
                    .await?;
                if !stored {
                    // A new sign-in replaced the token we refreshed; use that one.
                    info!(owner, "a new sign-in arrived during a refresh; using it");
                    let row = self
                        .store
                        .token(owner)
                        .await?
                        .ok_or(TokenError::NotSignedIn)?;
                    return row.access_token.ok_or(TokenError::NotSignedIn);
                }
                debug!(
                    owner,
                    rotated,
                    expires_at = set.expires_at,
                    "access token refreshed"
                );
                Ok(set.access_token)
            }
            Err(e) if e.token_dead() => {
                warn!(owner, cause = %e, "the refresh token is dead; parking until `mailferry auth`");
                self.store
                    .park_token(owner, refresh_token, &e.to_string())
                    .await?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`TokenKeeper::get`] for a caller that holds the owner's lock.
    ///
    /// The stored access token is used while it is fresh and is not the one a server just
    /// refused: N deliveries refused with the same token cause one refresh, and the others
    /// take its result. A refresh happens under the store's refresh lock, and the row is
    /// read again once it is held: another process (the service, a `check` beside it) may
    /// have refreshed meanwhile, and a refresh token is never used twice.
    async fn get_unlocked(
        &self,
        owner: &str,
        settings: &OAuthSettings,
        rejected: Option<&Secret>,
    ) -> Result<Secret, TokenError> {
        if let Some(access) = self.usable(owner, settings, rejected).await? {
            return Ok(access);
        }
        let _held = self.store.refresh_lock().await?;
        if let Some(access) = self.usable(owner, settings, rejected).await? {
            debug!(owner, "another process refreshed the token meanwhile");
            return Ok(access);
        }
        let row = self
            .store
            .token(owner)
            .await?
            .ok_or(TokenError::NotSignedIn)?;
        self.refresh(owner, settings, &row.refresh_token).await
    }

    /// The stored access token if it can be used as it is; errors for a parked or foreign
    /// sign-in.
    async fn usable(
        &self,
        owner: &str,
        settings: &OAuthSettings,
        rejected: Option<&Secret>,
    ) -> Result<Option<Secret>, TokenError> {
        let row = self
            .store
            .token(owner)
            .await?
            .ok_or(TokenError::NotSignedIn)?;
        if let Some(reason) = row.parked {
            return Err(TokenError::Parked(reason));
        }
        if row.client_id != settings.client.client_id {
            return Err(TokenError::ClientChanged {
                stored: row.client_id,
                configured: settings.client.client_id.clone(),
            });
        }
        let issued_at = row.refreshed_at.max(row.signed_in_at);
        let margin = refresh_margin(issued_at, row.expires_at);
        Ok(row.access_token.filter(|access| {
            row.expires_at - mailferry_core::unix_now() > margin && rejected != Some(access)
        }))
    }

    /// [`TokenKeeper::keepalive`] now, with each failure logged (a warning per owner).
    pub async fn keepalive_logged(&self, config: &Config) {
        for (owner, result) in self.keepalive(config, mailferry_core::unix_now()).await {
            if let Err(e) = result {
                tracing::warn!(owner, cause = %e, "cannot keep the sign-in alive");
            }
        }
    }

    /// Refreshes every configured token not refreshed for [`KEEPALIVE_AFTER`] (as of
    /// `now`), so that refresh tokens of idle accounts and destinations do not expire.
    /// Parked and never signed-in owners are left alone. Returns what it did per owner.
    pub async fn keepalive(
        &self,
        config: &Config,
        now: i64,
    ) -> Vec<(String, Result<(), TokenError>)> {
        let mut done = Vec::new();
        for (owner, settings) in oauth_owners(config) {
            let lock = self.lock_of(&owner);
            let _guard = lock.lock().await;
            let row = match self.store.token(&owner).await {
                Ok(Some(row)) => row,
                Ok(None) => continue,
                Err(e) => {
                    done.push((owner, Err(e.into())));
                    continue;
                }
            };
            if row.parked.is_some()
                || row.client_id != settings.client.client_id
                || now - row.refreshed_at < KEEPALIVE_AFTER
            {
                continue;
            }
            info!(owner, "refreshing an idle refresh token to keep it alive");
            let result = match self.store.refresh_lock().await {
                Ok(_held) => match self.store.token(&owner).await {
                    // Re-read under the lock: another process may have refreshed it.
                    Ok(Some(row)) if now - row.refreshed_at >= KEEPALIVE_AFTER => self
                        .refresh(&owner, settings, &row.refresh_token)
                        .await
                        .map(drop),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            };
            done.push((owner, result));
        }
        done
    }
}

/// The store's view of a token response. Without a new refresh token the old one stays.
fn issued<'a>(set: &'a TokenSet, previous: &'a Secret) -> IssuedTokens<'a> {
    IssuedTokens {
        access_token: set.access_token.expose(),
        refresh_token: set.refresh_token.as_ref().unwrap_or(previous).expose(),
        expires_at: set.expires_at,
        scopes: &set.scopes,
        subject: set.subject.as_deref(),
    }
}

/// Stores a completed sign-in for `owner`.
///
/// # Errors
/// When the response has no refresh token or the store fails.
pub async fn save_sign_in(
    store: &Store,
    owner: &str,
    settings: &OAuthSettings,
    set: &TokenSet,
) -> Result<(), TokenError> {
    let refresh = set
        .refresh_token
        .as_ref()
        .ok_or(OAuthError::NoRefreshToken {
            why: "the provider sent none",
        })?;
    store
        .save_sign_in(
            owner,
            &settings.client.client_id,
            &settings.client.token_url,
            issued(set, refresh),
        )
        .await?;
    Ok(())
}
