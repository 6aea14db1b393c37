//! OAuth2 settings: provider presets (endpoints, scopes per protocol) and their checks.

use super::Checker;
use crate::raw::RawAuth;

pub use mailferry_core::{OAuthClient, OAuthProvider};

/// How `mailferry auth` signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFlow {
    /// RFC 8628: a URL and a code, approved on any device (Microsoft's default).
    Device,
    /// Authorization code + PKCE with a loopback redirect, or a pasted URL (Google's only way
    /// for mail scopes).
    Browser,
}

/// What a token is for; picks the provider's default scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Reading mail over IMAP.
    Imap,
    /// Reading mail over POP3.
    Pop3,
    /// Sending over SMTP.
    Smtp,
    /// The Gmail API destination; `true` when exactly-once lookups need read access.
    GmailApi(bool),
}

/// A checked OAuth2 client registration.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthSettings {
    /// The user's app registration at the provider, with the scopes to ask for.
    pub client: OAuthClient,
    /// How `mailferry auth` signs in.
    pub flow: SignInFlow,
}

const MS_RESOURCE: &str = "https://outlook.office.com/";

fn default_scopes(provider: OAuthProvider, usage: TokenUse) -> Vec<String> {
    let mut scopes: Vec<String> = match (provider, usage) {
        (OAuthProvider::Microsoft, TokenUse::Imap) => {
            vec![format!("{MS_RESOURCE}IMAP.AccessAsUser.All")]
        }
        (OAuthProvider::Microsoft, TokenUse::Pop3) => {
            vec![format!("{MS_RESOURCE}POP.AccessAsUser.All")]
        }
        (OAuthProvider::Microsoft, TokenUse::Smtp) => vec![format!("{MS_RESOURCE}SMTP.Send")],
        (OAuthProvider::Google, TokenUse::GmailApi(lookups)) => {
            let mut v = vec![
                "https://www.googleapis.com/auth/gmail.insert".to_owned(),
                "https://www.googleapis.com/auth/gmail.labels".to_owned(),
            ];
            if lookups {
                v.push("https://www.googleapis.com/auth/gmail.readonly".into());
            }
            v
        }
        (OAuthProvider::Microsoft, TokenUse::GmailApi(_)) => return Vec::new(),
        (OAuthProvider::Google, _) => vec!["https://mail.google.com/".into()],
        (OAuthProvider::Custom, _) => return Vec::new(),
    };
    // offline_access: without it Microsoft issues no refresh token. openid + email: the ID
    // token names who signed in.
    if provider == OAuthProvider::Microsoft {
        scopes.push("offline_access".into());
    }
    scopes.extend(["openid".into(), "email".into()]);
    scopes
}

/// Token endpoints must be HTTPS; plain HTTP only to this machine (tests, a local proxy).
/// The URL is parsed, and its host (not a string prefix) decides: in
/// `http://localhost:1@evil.example/` the host is `evil.example`.
pub(crate) fn url_ok(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => matches!(
            u.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
        ),
        _ => false,
    }
}

impl Checker<'_> {
    /// Checks `auth = { method = "oauth2", ... }` at `key` (without the access-token-file
    /// form, which the caller handles).
    pub(crate) fn oauth(
        &mut self,
        key: &str,
        raw: RawAuth,
        implied: Option<OAuthProvider>,
        usage: TokenUse,
    ) -> Option<OAuthSettings> {
        let provider = self.oauth_provider(key, raw.provider.as_deref(), implied)?;
        let client_id = raw.client_id.clone().filter(|c| !c.trim().is_empty());
        if client_id.is_none() {
            self.err(
                format!("{key}.client-id"),
                "missing: set it to the application (client) id of your app registration (README: \"Outlook.com, Hotmail, Live, MSN (OAuth2)\" or \"Into Gmail, through the Gmail API (recommended for Gmail)\")".into(),
            );
        }
        let client_secret = if raw.client_secret_file.is_some() || raw.client_secret_env.is_some() {
            self.named_secret(
                &format!("{key}."),
                "client-secret",
                raw.client_secret_file.clone(),
                raw.client_secret_env.clone(),
            )
        } else {
            if provider == OAuthProvider::Google {
                self.err(
                    format!("{key}.client-secret-file"),
                    "missing: Google's token endpoint wants the client secret of your \"Desktop app\" client; save it in a file and name it here".into(),
                );
            }
            None
        };
        let (authorize_url, token_url, device_url) = self.endpoints(key, provider, &raw);
        if token_url.is_none() {
            self.err(
                format!("{key}.token-url"),
                "missing: a custom provider needs its token endpoint".into(),
            );
        }
        let scopes = raw
            .scopes
            .unwrap_or_else(|| default_scopes(provider, usage));
        if scopes.is_empty() {
            self.err(
                format!("{key}.scopes"),
                "missing: a custom provider needs the scopes to request".into(),
            );
        }
        let flow = self.flow(
            key,
            provider,
            raw.flow.as_deref(),
            &authorize_url,
            &device_url,
        );
        let redirect_uri = raw.redirect_uri.clone();
        if let Some(r) = &redirect_uri
            && url::Url::parse(r).is_err()
        {
            self.err(
                format!("{key}.redirect-uri"),
                format!("{r:?} is not a URL; write it as registered with the app, e.g. \"http://localhost\""),
            );
        }
        let authorize_params = if provider == OAuthProvider::Google {
            // A refresh token only with offline access, and only on fresh consent.
            vec![
                ("access_type".into(), "offline".into()),
                ("prompt".into(), "consent".into()),
            ]
        } else {
            Vec::new()
        };
        Some(OAuthSettings {
            client: OAuthClient {
                kind: provider,
                client_id: client_id?,
                client_secret,
                authorize_url: authorize_url.unwrap_or_default(),
                token_url: token_url?,
                device_url,
                scopes,
                authorize_params,
                redirect_uri,
            },
            flow,
        })
    }
    /// The OAuth2 provider: set, or implied by the account's provider.
    fn oauth_provider(
        &mut self,
        key: &str,
        provider: Option<&str>,
        implied: Option<OAuthProvider>,
    ) -> Option<OAuthProvider> {
        Some(match provider {
            Some("microsoft") => OAuthProvider::Microsoft,
            Some("google") => OAuthProvider::Google,
            Some("custom") => OAuthProvider::Custom,
            Some(other) => {
                self.err(
                    format!("{key}.provider"),
                    format!("{other:?} is not an OAuth2 provider; use \"microsoft\", \"google\" or \"custom\""),
                );
                return None;
            }
            None => match implied {
                Some(p) => p,
                None => {
                    self.err(
                        format!("{key}.provider"),
                        "missing: set it to \"microsoft\", \"google\" or \"custom\"".into(),
                    );
                    return None;
                }
            },
        })
    }

    /// The authorization, token and device endpoints: the provider's, or set (https, or
    /// http to 127.0.0.1).
    fn endpoints(
        &mut self,
        key: &str,
        provider: OAuthProvider,
        raw: &RawAuth,
    ) -> (Option<String>, Option<String>, Option<String>) {
        if raw.tenant.is_some() && provider != OAuthProvider::Microsoft {
            self.err(
                format!("{key}.tenant"),
                "only Microsoft has tenants; remove it".into(),
            );
        }
        let tenant = raw.tenant.clone().unwrap_or_else(|| "consumers".into());
        let (authorize, token, device) = match provider {
            OAuthProvider::Microsoft => {
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                (
                    Some(format!("{base}/authorize")),
                    Some(format!("{base}/token")),
                    Some(format!("{base}/devicecode")),
                )
            }
            OAuthProvider::Google => (
                Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
                Some("https://oauth2.googleapis.com/token".to_owned()),
                // Google's device flow does not allow mail scopes.
                None,
            ),
            OAuthProvider::Custom => (None, None, None),
        };
        let authorize_url = raw.authorize_url.clone().or(authorize);
        let token_url = raw.token_url.clone().or(token);
        let device_url = raw.device_url.clone().or(device);
        for (name, url) in [
            ("authorize-url", &authorize_url),
            ("token-url", &token_url),
            ("device-url", &device_url),
        ] {
            if let Some(u) = url
                && !url_ok(u)
            {
                self.err(
                    format!("{key}.{name}"),
                    format!("{u:?} must be an https:// URL (plain http only to 127.0.0.1)"),
                );
            }
        }
        (authorize_url, token_url, device_url)
    }

    /// The sign-in flow: set, or the device flow where the provider has one; each needs
    /// its endpoint.
    fn flow(
        &mut self,
        key: &str,
        provider: OAuthProvider,
        flow: Option<&str>,
        authorize_url: &Option<String>,
        device_url: &Option<String>,
    ) -> SignInFlow {
        let flow = match flow {
            Some("device") => SignInFlow::Device,
            Some("browser") => SignInFlow::Browser,
            Some(other) => {
                self.err(
                    format!("{key}.flow"),
                    format!("{other:?} is not a sign-in flow; use \"device\" or \"browser\""),
                );
                SignInFlow::Device
            }
            None if device_url.is_some() => SignInFlow::Device,
            None => SignInFlow::Browser,
        };
        if flow == SignInFlow::Device && device_url.is_none() {
            self.err(
                format!("{key}.flow"),
                match provider {
                    OAuthProvider::Google => {
                        "Google does not allow mail scopes in the device flow; use \"browser\""
                            .into()
                    }
                    _ => "\"device\" needs device-url".into(),
                },
            );
        }
        if flow == SignInFlow::Browser && authorize_url.is_none() {
            self.err(
                format!("{key}.authorize-url"),
                "missing: the browser flow needs the authorization endpoint".into(),
            );
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Sample;

    #[test]
    fn microsoft_scopes_follow_the_protocol_and_ask_for_offline_access() {
        let imap = default_scopes(OAuthProvider::Microsoft, TokenUse::Imap);
        assert_eq!(imap[0], "https://outlook.office.com/IMAP.AccessAsUser.All");
        assert!(imap.contains(&"offline_access".to_owned()));
        let pop = default_scopes(OAuthProvider::Microsoft, TokenUse::Pop3);
        assert_eq!(pop[0], "https://outlook.office.com/POP.AccessAsUser.All");
        let smtp = default_scopes(OAuthProvider::Microsoft, TokenUse::Smtp);
        assert_eq!(smtp[0], "https://outlook.office.com/SMTP.Send");
        let google = default_scopes(OAuthProvider::Google, TokenUse::Imap);
        assert_eq!(google[0], "https://mail.google.com/");
        assert!(!google.contains(&"offline_access".to_owned()));
    }

    #[test]
    fn token_urls_must_be_https_except_to_loopback() {
        assert!(url_ok("https://login.microsoftonline.com/x"));
        assert!(url_ok("http://127.0.0.1:8080/token"));
        assert!(url_ok("http://localhost/token"));
        assert!(!url_ok("http://example.org/token"));
        assert!(!url_ok("http://127.0.0.1.evil.example/token"));
        assert!(!url_ok("http://localhost:1@evil.example/"));
        assert!(!url_ok("http://127.0.0.1@evil.example/token"));
        assert!(!url_ok("http://localhost.evil.example/token"));
        assert!(url_ok("http://[::1]:8080/token"));
        assert!(!url_ok("ftp://127.0.0.1/token"));
        assert!(!url_ok("https://"));
    }

    #[test]
    fn outlook_oauth2_takes_microsoft_endpoints_and_scopes_per_protocol() {
        let config = Sample::new()
            .source("provider = \"outlook\"")
            .account("protocol = \"pop3\"")
            .auth("auth = { method = \"oauth2\", client-id = \"0000-app\" }")
            .load()
            .expect("valid");
        let crate::SourceAuth::OAuth2(o) = &config.accounts[0].auth else {
            panic!("expected OAuth2")
        };
        assert_eq!(o.client.kind, OAuthProvider::Microsoft);
        assert_eq!(o.flow, SignInFlow::Device);
        assert_eq!(
            o.client.token_url,
            "https://login.microsoftonline.com/consumers/oauth2/v2.0/token"
        );
        assert_eq!(
            o.client.device_url.as_deref(),
            Some("https://login.microsoftonline.com/consumers/oauth2/v2.0/devicecode")
        );
        assert_eq!(
            o.client.scopes[0],
            "https://outlook.office.com/POP.AccessAsUser.All"
        );
        assert!(o.client.scopes.iter().any(|s| s == "offline_access"));
        assert!(o.client.client_secret.is_none());
    }

    #[test]
    fn google_signs_in_in_the_browser_with_offline_access() {
        let config = Sample::new()
            .source("provider = \"gmail\"")
            .auth("auth = { method = \"oauth2\", client-id = \"app\", client-secret-file = \"client.secret\" }")
            .load()
            .expect("valid");
        let crate::SourceAuth::OAuth2(o) = &config.accounts[0].auth else {
            panic!("expected OAuth2")
        };
        assert_eq!(o.client.kind, OAuthProvider::Google);
        assert_eq!(o.flow, SignInFlow::Browser);
        assert!(
            o.client
                .authorize_params
                .contains(&("access_type".into(), "offline".into()))
        );
        assert!(
            o.client
                .client_secret
                .as_ref()
                .is_some_and(|s| s.expose() == "client-secret")
        );
    }

    #[test]
    fn oauth2_mistakes_are_named() {
        let shown = Sample::new()
            .source("provider = \"gmail\"")
            .auth("auth = { method = \"oauth2\", flow = \"device\", token-url = \"http://example.org/token\" }")
            .errors();
        for needle in [
            "account[0].auth.client-id: missing",
            "account[0].auth.client-secret-file: missing: Google's token endpoint wants the client secret",
            "account[0].auth.token-url: \"http://example.org/token\" must be an https:// URL",
            "account[0].auth.flow: Google does not allow mail scopes in the device flow",
        ] {
            assert!(shown.contains(needle), "{needle}\n{shown}");
        }
        Sample::new()
            .source("host = \"mail.example.org\"")
            .auth("auth = { method = \"oauth2\", provider = \"microsoft\", client-id = \"app\", flow = \"pigeon\" }")
            .refused("account[0].auth.flow", "is not a sign-in flow");
    }
}
