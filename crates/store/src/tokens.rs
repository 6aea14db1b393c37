//! OAuth2 tokens: stored at sign-in, rotated at every refresh, parked when dead.
//!
//! A refresh that returns a new refresh token makes the old one invalid at the provider
//! (Microsoft, Google with rotation), so the new one is committed before the access token
//! it came with is used. Every update names the refresh token it replaces: if another
//! process (`mailferry auth` while the daemon runs) stored a newer one meanwhile, the update
//! changes nothing and the caller reads the newer one instead of overwriting it.

use mailferry_core::Secret;
use sqlx::Row;

use crate::{Store, StoreError, now};

/// One owner's tokens as stored.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// `account:NAME` or `destination:NAME`.
    pub owner: String,
    /// The client id the tokens were issued to.
    pub client_id: String,
    /// The token endpoint they are refreshed at.
    pub token_url: String,
    /// The newest refresh token.
    pub refresh_token: Secret,
    /// The current access token, if one was issued.
    pub access_token: Option<Secret>,
    /// Access token expiry, Unix seconds.
    pub expires_at: i64,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Who signed in.
    pub subject: Option<String>,
    /// When the user last signed in, Unix seconds.
    pub signed_in_at: i64,
    /// When the tokens were last refreshed (or signed in), Unix seconds.
    pub refreshed_at: i64,
    /// Why the refresh token is dead, when it is: the owner waits for `mailferry auth`.
    pub parked: Option<String>,
}

/// Tokens as a provider issued them. `Debug` shows everything but the tokens.
#[derive(Clone, Copy)]
pub struct IssuedTokens<'a> {
    /// Access token.
    pub access_token: &'a str,
    /// Refresh token (the new one after rotation, else the old one again).
    pub refresh_token: &'a str,
    /// Access token expiry, Unix seconds.
    pub expires_at: i64,
    /// Scopes granted.
    pub scopes: &'a [String],
    /// Who signed in, if known.
    pub subject: Option<&'a str>,
}

impl std::fmt::Debug for IssuedTokens<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("subject", &self.subject)
            .finish()
    }
}

impl Store {
    /// The tokens of `owner`, if it ever signed in.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn token(&self, owner: &str) -> Result<Option<StoredToken>, StoreError> {
        let row = sqlx::query(
            "SELECT owner, client_id, token_url, refresh_token, access_token, expires_at, scopes, \
             subject, signed_in_at, refreshed_at, parked FROM tokens WHERE owner = ?",
        )
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredToken {
            owner: r.get(0),
            client_id: r.get(1),
            token_url: r.get(2),
            refresh_token: Secret::new(r.get(3)),
            access_token: r.get::<Option<String>, _>(4).map(Secret::new),
            expires_at: r.get(5),
            scopes: r
                .get::<String, _>(6)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            subject: r.get(7),
            signed_in_at: r.get(8),
            refreshed_at: r.get(9),
            parked: r.get(10),
        }))
    }

    /// Every owner with stored tokens.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn token_owners(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM tokens ORDER BY owner")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Stores a fresh sign-in, replacing whatever `owner` had (and un-parking it).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_sign_in(
        &self,
        owner: &str,
        client_id: &str,
        token_url: &str,
        t: IssuedTokens<'_>,
    ) -> Result<(), StoreError> {
        let now = now();
        sqlx::query(
            "INSERT INTO tokens (owner, client_id, token_url, refresh_token, access_token, expires_at, \
             scopes, subject, signed_in_at, refreshed_at, parked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) \
             ON CONFLICT (owner) DO UPDATE SET client_id = excluded.client_id, \
             token_url = excluded.token_url, refresh_token = excluded.refresh_token, \
             access_token = excluded.access_token, expires_at = excluded.expires_at, \
             scopes = excluded.scopes, subject = excluded.subject, \
             signed_in_at = excluded.signed_in_at, refreshed_at = excluded.refreshed_at, parked = NULL",
        )
        .bind(owner)
        .bind(client_id)
        .bind(token_url)
        .bind(t.refresh_token)
        .bind(t.access_token)
        .bind(t.expires_at)
        .bind(t.scopes.join(" "))
        .bind(t.subject)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores the result of refreshing `previous`. Returns `false`, changing nothing, when
    /// the stored refresh token is no longer `previous` (someone signed in meanwhile).
    ///
    /// # Errors
    /// On a database failure.
    pub async fn save_refresh(
        &self,
        owner: &str,
        previous: &Secret,
        t: IssuedTokens<'_>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tokens SET refresh_token = ?, access_token = ?, expires_at = ?, scopes = ?, \
             subject = COALESCE(?, subject), refreshed_at = ?, parked = NULL \
             WHERE owner = ? AND refresh_token = ?",
        )
        .bind(t.refresh_token)
        .bind(t.access_token)
        .bind(t.expires_at)
        .bind(t.scopes.join(" "))
        .bind(t.subject)
        .bind(now())
        .bind(owner)
        .bind(previous.expose())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the refresh token `previous` of `owner` dead, with the provider's reason. Does
    /// nothing when a newer sign-in replaced it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn park_token(
        &self,
        owner: &str,
        previous: &Secret,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tokens SET parked = ? WHERE owner = ? AND refresh_token = ?")
            .bind(reason)
            .bind(owner)
            .bind(previous.expose())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IssuedTokens;

    #[test]
    fn debug_hides_the_tokens() {
        let scopes = vec!["imap".to_owned()];
        let t = IssuedTokens {
            access_token: "at-secret",
            refresh_token: "rt-secret",
            expires_at: 1,
            scopes: &scopes,
            subject: Some("me@example.org"),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("me@example.org"), "{shown}");
    }
}
