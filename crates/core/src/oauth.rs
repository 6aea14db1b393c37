//! An OAuth2 client registration: the same plain data for the configuration (which reads
//! it) and the sign-in code (which uses it).

use crate::Secret;

/// Whose sign-in server this is; only changes hints and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthProvider {
    /// Microsoft identity platform (Outlook.com, Microsoft 365).
    Microsoft,
    /// Google accounts.
    Google,
    /// Any other server with the standard endpoints.
    Custom,
}

/// One OAuth2 client registration at one provider, with the scopes to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthClient {
    /// Whose server this is.
    pub kind: OAuthProvider,
    /// The application (client) id registered by the user.
    pub client_id: String,
    /// The client secret, for providers that require one (Google "Desktop app" clients).
    pub client_secret: Option<Secret>,
    /// Authorization endpoint (browser flow).
    pub authorize_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// Device authorization endpoint, when the provider offers the device flow.
    pub device_url: Option<String>,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// Extra query parameters of the authorization URL (Google: `access_type=offline`).
    pub authorize_params: Vec<(String, String)>,
    /// The registered redirect URI of the browser flow, when not `http://127.0.0.1:PORT/`.
    pub redirect_uri: Option<String>,
}
