//! The authorization code flow with PKCE for a headless machine: the user opens a URL in
//! any browser; the provider redirects to `http://127.0.0.1:PORT/`, where this process
//! listens. When the browser runs on another machine, that redirect fails to load there,
//! and the user pastes the URL from its address bar instead.

use oauth2::{CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::client::OAuth;
use crate::{OAuthError, Provider, TokenSet};

/// The request line and headers of a redirect are far below this.
const MAX_REQUEST: usize = 16 * 1024;

/// One browser sign-in in progress.
#[derive(Debug)]
pub struct BrowserSignIn {
    url: String,
    redirect_uri: String,
    state: String,
    verifier: String,
    listener: Option<TcpListener>,
}

impl BrowserSignIn {
    /// Prepares the authorization URL with a fresh PKCE verifier and state. With `listen`,
    /// the redirect is caught on a random port of 127.0.0.1; without it (`--paste`), the
    /// port is only named in the redirect URI and the user pastes the URL.
    ///
    /// # Errors
    /// When the loopback port cannot be opened or the provider's URLs are malformed.
    pub async fn new(p: &Provider, listen: bool) -> Result<Self, OAuthError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| OAuthError::Local {
                what: "open a port on 127.0.0.1 for the sign-in redirect",
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| OAuthError::Local {
                what: "read the loopback port",
                source,
            })?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/");
        let redirect = RedirectUrl::new(redirect_uri.clone())
            .map_err(|e| OAuthError::Config(e.to_string()))?;
        let client = OAuth::client_for(p)?.set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .map_err(|e| OAuthError::Config(e.to_string()))?
            .add_scopes(p.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        for (k, v) in &p.authorize_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, state) = request.url();
        Ok(Self {
            url: url.to_string(),
            redirect_uri,
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            listener: listen.then_some(listener),
        })
    }

    /// The URL the user opens.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the redirect is caught here (else only a pasted URL completes the sign-in).
    #[must_use]
    pub fn listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Waits for the redirect (on the loopback port) or a pasted URL (a line of `pasted`),
    /// whichever comes first, checks its state, and trades the code for tokens.
    ///
    /// # Errors
    /// When the user declined, the state does not match, or the code exchange fails.
    pub async fn finish<R>(
        self,
        oauth: &OAuth,
        p: &Provider,
        pasted: R,
    ) -> Result<TokenSet, OAuthError>
    where
        R: AsyncBufRead + Unpin,
    {
        let code = {
            let from_browser = async {
                match &self.listener {
                    Some(l) => catch_redirect(l, &self.state).await,
                    None => std::future::pending().await,
                }
            };
            let from_paste = read_pasted(pasted, &self.state);
            tokio::select! {
                code = from_browser => code?,
                code = from_paste => code?,
            }
        };
        oauth
            .exchange_code(p, &code, &self.verifier, &self.redirect_uri)
            .await
    }
}

/// Reads lines until one is a redirect URL; EOF waits forever (the browser may still come).
async fn read_pasted<R: AsyncBufRead + Unpin>(
    mut input: R,
    state: &str,
) -> Result<String, OAuthError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .await
            .map_err(|source| OAuthError::Local {
                what: "read the pasted URL",
                source,
            })?;
        if n == 0 {
            return std::future::pending().await;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        return parse_redirect(text, state);
    }
}

/// Serves the loopback port until the redirect arrives. Other requests (a favicon) get 404.
async fn catch_redirect(listener: &TcpListener, state: &str) -> Result<String, OAuthError> {
    loop {
        let (mut stream, peer) = listener
            .accept()
            .await
            .map_err(|source| OAuthError::Local {
                what: "accept the sign-in redirect",
                source,
            })?;
        debug!(%peer, "loopback connection");
        let Some(target) = read_target(&mut stream).await else {
            continue;
        };
        let url = format!("http://127.0.0.1{target}");
        let answer = if target.starts_with("/?") || target == "/" {
            parse_redirect(&url, state)
        } else {
            respond(&mut stream, "404 Not Found", "Not found.").await;
            continue;
        };
        match &answer {
            Ok(_) => {
                respond(
                    &mut stream,
                    "200 OK",
                    "mailferry received the sign-in. You can close this tab.",
                )
                .await;
            }
            Err(e) => respond(&mut stream, "400 Bad Request", &format!("mailferry: {e}")).await,
        }
        return answer;
    }
}

/// The request target of an HTTP/1.x GET, or `None` for anything else.
async fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(target.to_owned()),
        _ => None,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>mailferry</title><p>{}</p>\n",
        text.replace('&', "&amp;").replace('<', "&lt;")
    );
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The sign-in goes on whether or not the browser gets this page.
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The authorization code in a redirected URL, after checking its `state`.
///
/// # Errors
/// When the URL carries an `error` (the user declined), no code, or another sign-in's state.
pub fn parse_redirect(url: &str, state: &str) -> Result<String, OAuthError> {
    let parsed = url::Url::parse(url.trim()).map_err(|_| {
        OAuthError::Redirect(
            "that is not a URL; paste the whole address from the browser's address bar".into(),
        )
    })?;
    let get = |k: &str| {
        parsed
            .query_pairs()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = get("error") {
        let detail = get("error_description")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return Err(OAuthError::Declined(format!("{error}{detail}")));
    }
    if get("state").as_deref() != Some(state) {
        return Err(OAuthError::Redirect(
            "its state does not match (is it from an older attempt?)".into(),
        ));
    }
    get("code").ok_or_else(|| OAuthError::Redirect("it holds no code".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_checked() {
        let ok = "http://127.0.0.1:4711/?state=s1&code=abc&scope=x";
        assert_eq!(parse_redirect(ok, "s1").ok().as_deref(), Some("abc"));
        assert!(matches!(
            parse_redirect(ok, "other"),
            Err(OAuthError::Redirect(_))
        ));
        assert!(matches!(
            parse_redirect("http://127.0.0.1/?error=access_denied&state=s1", "s1"),
            Err(OAuthError::Declined(m)) if m == "access_denied"
        ));
        assert!(matches!(
            parse_redirect("abc", "s1"),
            Err(OAuthError::Redirect(_))
        ));
    }
}
