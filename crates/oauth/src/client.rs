//! The token endpoint: device code, authorization code and refresh grants, over reqwest
//! (rustls with ring), through the `oauth2` crate's request and response types.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::http;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, DeviceAuthorizationUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, ErrorResponse, ExtraTokenFields,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, StandardErrorResponse, StandardRevocableToken,
    StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::{OAuthError, Refusal};
use crate::{OAuthClient, OAuthProvider, Secret, TokenSet};
use mailferry_core::unix_now as now;

/// A clock difference larger than this is worth telling the user about.
const SKEW_LIMIT: i64 = 300;

/// The OpenID Connect ID token, when the server sends one; only read for who signed in.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct IdToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdToken {}

pub(crate) type Response = StandardTokenResponse<IdToken, BasicTokenType>;

pub(crate) type Client = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A device code to show the user.
#[derive(Debug)]
pub struct DeviceCode {
    inner: StandardDeviceAuthorizationResponse,
}

impl DeviceCode {
    /// Where the user goes (`https://microsoft.com/devicelogin`).
    #[must_use]
    pub fn verification_uri(&self) -> &str {
        self.inner.verification_uri()
    }

    /// The code the user types there.
    #[must_use]
    pub fn user_code(&self) -> &str {
        self.inner.user_code().secret()
    }

    /// How long the code is valid.
    #[must_use]
    pub fn expires_in(&self) -> Duration {
        self.inner.expires_in()
    }
}

/// Talks to token endpoints. Cheap to share; one per process is enough.
#[derive(Debug)]
pub struct OAuth {
    /// Built on first use: a process that never refreshes a token (password accounts only)
    /// does not load TLS roots for it.
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    /// Local clock minus the last answer's `Date` header, in seconds.
    skew: Mutex<Option<i64>>,
}

/// The error of one HTTP exchange, for the `oauth2` crate.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(transparent)]
    Reqwest(reqwest::Error),
    #[error("cannot pass the answer on: {0}")]
    Rebuild(http::Error),
}

impl OAuth {
    /// A client whose every request ends within `timeout`.
    ///
    /// # Errors
    /// When the TLS setup fails.
    pub fn new(timeout: Duration) -> Result<Self, OAuthError> {
        Ok(Self {
            http: std::sync::OnceLock::new(),
            timeout,
            skew: Mutex::new(None),
        })
    }

    fn http(&self) -> Result<&reqwest::Client, HttpError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            // A token endpoint never redirects; following one could leak the client secret.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("mailferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HttpError::Reqwest)?;
        Ok(self.http.get_or_init(|| client))
    }

    /// Asks `url` (a token endpoint) for its `Date` and returns the local clock minus the
    /// server's, in seconds. Any answer will do: a GET to a token endpoint is refused, but
    /// dated.
    ///
    /// # Errors
    /// When the server cannot be reached or sends no `Date`.
    pub async fn measure_skew(&self, url: &str) -> Result<i64, OAuthError> {
        let unreachable = |source| OAuthError::Unreachable {
            url: url.to_owned(),
            source,
        };
        let client = self.http().map_err(|e| match e {
            HttpError::Reqwest(r) => unreachable(r),
            HttpError::Rebuild(r) => OAuthError::BadReply(r.to_string()),
        })?;
        let response = client.get(url).send().await.map_err(unreachable)?;
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(httpdate)
            .ok_or_else(|| OAuthError::BadReply("no Date header".into()))?;
        let skew = now() - date;
        if let Ok(mut s) = self.skew.lock() {
            *s = Some(skew);
        }
        Ok(skew)
    }

    /// Local clock minus the sign-in server's, in seconds, as of the last answer.
    #[must_use]
    pub fn clock_skew(&self) -> Option<i64> {
        self.skew.lock().ok().and_then(|s| *s)
    }

    async fn send(&self, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request).map_err(HttpError::Reqwest)?;
        let response = self
            .http()?
            .execute(request)
            .await
            .map_err(HttpError::Reqwest)?;
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(httpdate);
        if let (Some(date), Ok(mut skew)) = (date, self.skew.lock()) {
            *skew = Some(now() - date);
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response.bytes().await.map_err(HttpError::Reqwest)?;
        builder.body(body.to_vec()).map_err(HttpError::Rebuild)
    }

    pub(crate) fn client_for(p: &OAuthClient) -> Result<Client, OAuthError> {
        let bad =
            |what: &str, url: &str| OAuthError::Config(format!("the {what} {url:?} is not a URL"));
        let token_url =
            TokenUrl::new(p.token_url.clone()).map_err(|_| bad("token URL", &p.token_url))?;
        let auth_url = AuthUrl::new(p.authorize_url.clone())
            .map_err(|_| bad("authorize URL", &p.authorize_url))?;
        let device = match &p.device_url {
            Some(u) => {
                Some(DeviceAuthorizationUrl::new(u.clone()).map_err(|_| bad("device URL", u))?)
            }
            None => None,
        };
        let mut client = oauth2::Client::new(ClientId::new(p.client_id.clone()))
            .set_auth_uri_option(Some(auth_url))
            .set_device_authorization_url_option(device)
            .set_token_uri(token_url)
            // Public clients must not authenticate; Google's desktop clients send their
            // secret in the body, which every provider accepts.
            .set_auth_type(AuthType::RequestBody);
        if let Some(secret) = &p.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        Ok(client)
    }

    /// Asks for a device code (RFC 8628 3.1).
    ///
    /// # Errors
    /// When the provider offers no device flow or refuses.
    pub async fn start_device(&self, p: &OAuthClient) -> Result<DeviceCode, OAuthError> {
        let client = Self::client_for(p)?;
        let request = client.exchange_device_code().map_err(|_| {
            OAuthError::Config("this provider has no device code flow; use the browser flow".into())
        })?;
        let http = |r| self.send(r);
        let inner = request
            .add_scopes(p.scopes.iter().cloned().map(Scope::new))
            .request_async(&http)
            .await
            .map_err(|e| self.refused(p, e))?;
        debug!(
            uri = inner.verification_uri().as_str(),
            "device code issued"
        );
        Ok(DeviceCode { inner })
    }

    /// Polls until the user approved the device code, honouring `slow_down`.
    ///
    /// # Errors
    /// When the code expires, the user declines, or the server refuses.
    pub async fn finish_device(
        &self,
        p: &OAuthClient,
        code: &DeviceCode,
    ) -> Result<TokenSet, OAuthError> {
        let client = Self::client_for(p)?;
        let http = |r| self.send(r);
        let response = client
            .exchange_device_access_token(&code.inner)
            .request_async(&http, tokio::time::sleep, None)
            .await
            .map_err(|e| match &e {
                RequestTokenError::ServerResponse(r) => match r.error() {
                    oauth2::DeviceCodeErrorResponseType::ExpiredToken => OAuthError::DeviceExpired,
                    oauth2::DeviceCodeErrorResponseType::AccessDenied => {
                        OAuthError::Declined("the request was declined".into())
                    }
                    _ => self.refused(p, e),
                },
                _ => self.refused(p, e),
            })?;
        token_set(p, &response, None, true)
    }

    /// Trades an authorization code for tokens (RFC 6749 4.1.3, RFC 7636).
    ///
    /// # Errors
    /// When the server refuses the code or the verifier.
    pub async fn exchange_code(
        &self,
        p: &OAuthClient,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, OAuthError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| OAuthError::Config(format!("bad redirect URI {redirect_uri:?}")))?;
        let client = Self::client_for(p)?.set_redirect_uri(redirect);
        let http = |r| self.send(r);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| self.refused(p, e))?;
        token_set(p, &response, None, true)
    }

    /// Uses `refresh_token` for a new access token. When the server rotates refresh tokens
    /// the result holds the new one; otherwise it holds `refresh_token` again.
    ///
    /// # Errors
    /// [`OAuthError::token_dead`] tells a dead refresh token from a passing failure.
    pub async fn refresh(
        &self,
        p: &OAuthClient,
        refresh_token: &Secret,
    ) -> Result<TokenSet, OAuthError> {
        let client = Self::client_for(p)?;
        let http = |r| self.send(r);
        let rt = RefreshToken::new(refresh_token.expose().to_owned());
        let response = client
            .exchange_refresh_token(&rt)
            .request_async(&http)
            .await
            .map_err(|e| self.refused(p, e))?;
        token_set(p, &response, Some(refresh_token), false)
    }

    fn refused<T>(
        &self,
        p: &OAuthClient,
        e: RequestTokenError<HttpError, StandardErrorResponse<T>>,
    ) -> OAuthError
    where
        T: oauth2::ErrorResponseType + std::fmt::Display + 'static,
        StandardErrorResponse<T>: ErrorResponse,
    {
        match e {
            RequestTokenError::ServerResponse(r) => {
                let error = r.error().to_string();
                let description = r
                    .error_description()
                    .map(|d| d.lines().next().unwrap_or_default().trim().to_owned());
                let refusal = Refusal::of(&error, description.as_deref());
                let skew = self.clock_skew().filter(|s| s.abs() > SKEW_LIMIT);
                OAuthError::Refused {
                    provider: p.kind,
                    error,
                    description,
                    refusal,
                    skew,
                }
            }
            RequestTokenError::Request(HttpError::Reqwest(source)) => OAuthError::Unreachable {
                url: p.token_url.clone(),
                source,
            },
            RequestTokenError::Request(e @ HttpError::Rebuild(_)) => {
                OAuthError::BadReply(e.to_string())
            }
            // A body that does not parse may still hold tokens (a 2xx with one field of the
            // wrong type): only where it failed is told, never the body or serde's message,
            // which quotes values.
            RequestTokenError::Parse(e, body) => OAuthError::BadReply(format!(
                "the answer ({} bytes, not shown: it may hold tokens) does not parse as a token response at `{}` ({:?} error)",
                body.len(),
                e.path(),
                e.inner().classify()
            )),
            RequestTokenError::Other(m) => OAuthError::BadReply(m),
        }
    }
}

/// Builds the stored form of a token response.
fn token_set(
    p: &OAuthClient,
    r: &Response,
    previous_refresh: Option<&Secret>,
    first: bool,
) -> Result<TokenSet, OAuthError> {
    let refresh_token = match r.refresh_token() {
        Some(t) => Some(Secret::new(t.secret().clone())),
        None if first => {
            return Err(OAuthError::NoRefreshToken {
                why: match p.kind {
                    OAuthProvider::Microsoft => {
                        "the offline_access scope was not granted; mailferry asks for it, so check that the app registration allows it"
                    }
                    OAuthProvider::Google => {
                        "Google sends one only with access_type=offline and fresh consent; remove mailferry's access at https://myaccount.google.com/permissions and sign in again"
                    }
                    OAuthProvider::Custom => {
                        "add the scope your provider needs for refresh tokens (often offline_access) to scopes"
                    }
                },
            });
        }
        None => previous_refresh.cloned(),
    };
    let lifetime = r
        .expires_in()
        .map_or(3600, |d| i64::try_from(d.as_secs()).unwrap_or(3600));
    let scopes = r
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_else(|| p.scopes.clone());
    let subject = r.extra_fields().id_token.as_deref().and_then(subject_of);
    Ok(TokenSet {
        access_token: Secret::new(r.access_token().secret().clone()),
        refresh_token,
        expires_at: now() + lifetime,
        scopes,
        subject,
    })
}

/// Who an ID token is about: its `email`, else `preferred_username`, else `upn`. The token
/// is only displayed, never trusted, so its signature is not checked.
fn subject_of(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["email", "preferred_username", "upn"]
        .iter()
        .find_map(|k| claims.get(k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// Parses an HTTP `Date` header (IMF-fixdate, RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37
/// GMT", which is RFC 2822's syntax) into Unix seconds.
fn httpdate(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(httpdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(
            httpdate("Sun, 22 Nov 2026 05:00:00 GMT"),
            Some(1_795_323_600)
        );
        assert_eq!(httpdate("yesterday"), None);
    }

    #[test]
    fn id_token_names_the_user() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"preferred_username":"me@outlook.com","sub":"x"}"#);
        assert_eq!(
            subject_of(&format!("e30.{claims}.sig")).as_deref(),
            Some("me@outlook.com")
        );
        assert_eq!(subject_of("garbage"), None);
    }
}
