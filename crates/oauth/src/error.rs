//! What can go wrong while signing in or refreshing, and what the user can do about it.

use mailferry_core::{Classify, ErrorClass};

use crate::OAuthProvider;

/// Why the sign-in server said no, sorted by what the user has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The refresh token expired (Microsoft: 90 days unused, `AADSTS700082`), was revoked,
    /// or the password changed (`invalid_grant`). Sign in again.
    Expired,
    /// The user (or an administrator) has not consented to the scopes (`AADSTS65001`).
    Consent,
    /// The app registration cannot be used this way: unknown or disabled client id, public
    /// client flows off, a secret missing or wrong (`unauthorized_client`, `invalid_client`,
    /// `AADSTS7000112`, `AADSTS7000218`, `AADSTS700016`).
    Registration,
    /// A scope the registration does not allow (`invalid_scope`).
    Scope,
    /// The server is busy or failing (`temporarily_unavailable`, `server_error`).
    Unavailable,
    /// Anything else the server refused.
    Other,
}

impl Refusal {
    /// Sorts an OAuth error response (RFC 6749 5.2) by the `error` code and, for Microsoft,
    /// the `AADSTS` number at the start of the description.
    #[must_use]
    pub fn of(error: &str, description: Option<&str>) -> Self {
        let aad = description
            .and_then(|d| d.trim_start().strip_prefix("AADSTS"))
            .map(|d| {
                d.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        match aad.as_str() {
            "700082" | "70008" | "50173" | "700084" => return Self::Expired,
            "65001" => return Self::Consent,
            "7000112" | "7000218" | "700016" | "700025" | "7000215" | "50011" | "50020"
            | "90023" | "70011" => {
                return Self::Registration;
            }
            _ => {}
        }
        match error {
            "invalid_grant" => Self::Expired,
            "consent_required" | "interaction_required" => Self::Consent,
            "unauthorized_client" | "invalid_client" | "unsupported_grant_type" => {
                Self::Registration
            }
            "invalid_scope" => Self::Scope,
            "temporarily_unavailable" | "server_error" => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// A failed sign-in or refresh.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint answered with an OAuth error.
    #[error("the sign-in server refused: {error}{}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), skew_note(*.skew))]
    Refused {
        /// Whose server.
        provider: OAuthProvider,
        /// The `error` code.
        error: String,
        /// The `error_description`, first line.
        description: Option<String>,
        /// What it means.
        refusal: Refusal,
        /// Local clock minus the server's `Date`, in seconds, when they differ by minutes.
        skew: Option<i64>,
    },
    /// No answer: DNS, connect, TLS or a timeout.
    #[error("cannot reach the sign-in server {url}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what RFC 6749 describes (an HTML error page, a 5xx).
    #[error("unexpected answer from the sign-in server: {0}")]
    BadReply(String),
    /// Sign-in succeeded but no refresh token came with it, so mailferry could work for an
    /// hour only.
    #[error("the sign-in server issued no refresh token: {why}")]
    NoRefreshToken {
        /// Provider-specific reason.
        why: &'static str,
    },
    /// The device code expired before the user approved it.
    #[error("the sign-in code expired before it was approved (codes last 15 minutes)")]
    DeviceExpired,
    /// The user declined, or the browser came back with an error.
    #[error("sign-in was not completed: {0}")]
    Declined(String),
    /// The redirected URL does not belong to this sign-in (a stale tab, a forged request).
    #[error("the redirected URL is not the answer to this sign-in: {0}")]
    Redirect(String),
    /// The local side: the loopback listener, the terminal.
    #[error("cannot {what}")]
    Local {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Settings that cannot work (a malformed URL, a flow the provider does not offer).
    #[error("{0}")]
    Config(String),
}

fn skew_note(skew: Option<i64>) -> String {
    match skew {
        Some(s) if s > 0 => {
            format!("; this machine's clock is {s} s ahead of the sign-in server's")
        }
        Some(s) => format!(
            "; this machine's clock is {} s behind the sign-in server's",
            s.unsigned_abs()
        ),
        None => String::new(),
    }
}

impl OAuthError {
    /// The refusal, when the server refused.
    #[must_use]
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    /// Whether this refresh token is dead for good (expired, revoked, consent withdrawn):
    /// its owner must be parked until the user signs in again. A registration problem or
    /// a wrong clock is not: fixing those revives the same token.
    #[must_use]
    pub fn token_dead(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                refusal: Refusal::Expired | Refusal::Consent,
                skew: None,
                ..
            }
        )
    }
}

impl Classify for OAuthError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Refused { refusal, .. } => match refusal {
                Refusal::Unavailable | Refusal::Other => ErrorClass::Transient,
                Refusal::Expired | Refusal::Consent | Refusal::Registration | Refusal::Scope => {
                    ErrorClass::Auth
                }
            },
            Self::Unreachable { .. } | Self::BadReply(_) => ErrorClass::Transient,
            Self::NoRefreshToken { .. }
            | Self::DeviceExpired
            | Self::Declined(_)
            | Self::Redirect(_) => ErrorClass::Auth,
            Self::Local { .. } | Self::Config(_) => ErrorClass::Config,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        let Self::Refused {
            provider,
            refusal,
            skew,
            ..
        } = self
        else {
            return match self {
                Self::DeviceExpired => {
                    Some("run `mailferry auth` again and approve the code within 15 minutes")
                }
                _ => None,
            };
        };
        if skew.is_some() {
            return Some(
                "fix this machine's clock (enable NTP: `timedatectl set-ntp true`); tokens are judged by time",
            );
        }
        Some(match (refusal, provider) {
            (Refusal::Expired, OAuthProvider::Google) => {
                "the refresh token expired or was revoked: sign in again with `mailferry auth NAME`. If this happens every 7 days, your Google Cloud app is in \"Testing\": publish it (OAuth consent screen > Publish app) so refresh tokens last"
            }
            (Refusal::Expired, _) => {
                "the refresh token expired or was revoked (a password change, 90 days unused, or a revoked app): sign in again with `mailferry auth NAME`"
            }
            (Refusal::Consent, _) => {
                "the account has not consented to the scopes mailferry asks for: run `mailferry auth NAME` and accept them (a work account may need its administrator's consent)"
            }
            (Refusal::Registration, OAuthProvider::Microsoft) => {
                "the app registration cannot be used like this (a client-id Microsoft does not know, public client flows off, personal accounts not allowed, a redirect URI or scope it was not registered with): see README \"Outlook.com, Hotmail, Live, MSN (OAuth2)\" for both ways to get a registration, \"Allow public client flows\" = Yes, personal Microsoft accounts allowed, and redirect-uri as registered"
            }
            (Refusal::Registration, _) => {
                "the app registration cannot be used like this: check client-id and client-secret-file against the provider's console"
            }
            (Refusal::Scope, _) => {
                "a requested scope is not allowed for this app: add it to the app registration (API permissions / OAuth consent screen), or fix `scopes`"
            }
            (Refusal::Unavailable | Refusal::Other, _) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(error: &str, description: &str, skew: Option<i64>) -> OAuthError {
        OAuthError::Refused {
            provider: OAuthProvider::Microsoft,
            error: error.into(),
            description: Some(description.into()),
            refusal: Refusal::of(error, Some(description)),
            skew,
        }
    }

    #[test]
    fn refusals_are_sorted_by_code_and_aadsts_number() {
        for (error, description, want) in [
            (
                "invalid_grant",
                "AADSTS700082: The refresh token has expired due to inactivity.",
                Refusal::Expired,
            ),
            (
                "invalid_grant",
                "AADSTS65001: The user or administrator has not consented.",
                Refusal::Consent,
            ),
            (
                "invalid_client",
                "AADSTS7000218: The request body must contain 'client_secret'.",
                Refusal::Registration,
            ),
            (
                "unauthorized_client",
                "AADSTS7000112: Application is disabled.",
                Refusal::Registration,
            ),
            (
                "invalid_request",
                "AADSTS700016: Application with identifier 'x' was not found.",
                Refusal::Registration,
            ),
            (
                "invalid_grant",
                "Token has been expired or revoked.",
                Refusal::Expired,
            ),
            ("invalid_scope", "bad scope", Refusal::Scope),
            ("temporarily_unavailable", "", Refusal::Unavailable),
            ("weird", "", Refusal::Other),
        ] {
            assert_eq!(Refusal::of(error, Some(description)), want, "{description}");
        }
    }

    #[test]
    fn only_dead_tokens_park_and_skew_is_named_first() {
        let expired = refused("invalid_grant", "AADSTS700082: expired", None);
        assert!(expired.token_dead());
        assert_eq!(expired.class(), ErrorClass::Auth);
        assert!(
            expired
                .hint()
                .is_some_and(|h| h.contains("mailferry auth NAME"))
        );
        let registration = refused("invalid_client", "AADSTS7000218: no secret", None);
        assert!(!registration.token_dead());
        assert_eq!(registration.class(), ErrorClass::Auth);
        assert!(
            registration
                .hint()
                .is_some_and(|h| h.contains("Allow public client flows"))
        );
        let skewed = refused("invalid_grant", "AADSTS700082: expired", Some(-900));
        assert!(!skewed.token_dead(), "a wrong clock must not park");
        assert!(
            skewed
                .to_string()
                .ends_with("clock is 900 s behind the sign-in server's")
        );
        assert!(skewed.hint().is_some_and(|h| h.contains("clock")));
        let busy = refused("temporarily_unavailable", "try later", None);
        assert_eq!(busy.class(), ErrorClass::Transient);
    }

    #[test]
    fn google_expiry_mentions_testing_mode() {
        let e = OAuthError::Refused {
            provider: OAuthProvider::Google,
            error: "invalid_grant".into(),
            description: Some("Token has been expired or revoked.".into()),
            refusal: Refusal::Expired,
            skew: None,
        };
        assert!(
            e.hint()
                .is_some_and(|h| h.contains("7 days") && h.contains("Testing"))
        );
    }
}
