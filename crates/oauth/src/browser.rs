//! The authorization code flow with PKCE for a headless machine: the user opens a URL in
//! any browser; the provider redirects to `http://127.0.0.1:PORT/`, where this process
//! listens. When the browser runs on another machine, that redirect fails to load there,
//! and the user pastes the URL from its address bar instead.

use oauth2::{CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::client::OAuth;
use crate::{OAuthClient, OAuthError, TokenSet};

/// The request line and headers of a redirect are far below this.
const MAX_REQUEST: usize = 16 * 1024;

/// How long a loopback connection may stay silent before it is dropped (browsers open
/// connections ahead of time and may never use them).
const IDLE: Duration = Duration::from_secs(10);

/// One browser sign-in in progress. `Debug` hides the PKCE verifier and the state.
pub struct BrowserSignIn {
    url: String,
    redirect_uri: String,
    state: String,
    verifier: String,
    listener: Option<TcpListener>,
}

impl std::fmt::Debug for BrowserSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSignIn")
            .field("redirect_uri", &self.redirect_uri)
            .field("listening", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl BrowserSignIn {
    /// Prepares the authorization URL with a fresh PKCE verifier and state. With `listen`,
    /// the redirect is caught on a random port of 127.0.0.1; without it (`--paste`), the
    /// port is only named in the redirect URI and the user pastes the URL.
    ///
    /// # Errors
    /// When the loopback port cannot be opened or the provider's URLs are malformed.
    pub async fn new(p: &OAuthClient, listen: bool) -> Result<Self, OAuthError> {
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
        let (redirect_uri, listen) = redirect_for(p.redirect_uri.as_deref(), port, listen);
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
        p: &OAuthClient,
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

/// The redirect URI to send, and whether the loopback listener can catch it. The default
/// is `http://127.0.0.1:PORT/`. A registered `http://localhost` (or `127.0.0.1`, `[::1]`)
/// without a port gets this sign-in's port: Microsoft and Google ignore the port of a
/// loopback redirect. Any other registered URI is sent as it is, and the user pastes the
/// address the browser ends on.
fn redirect_for(registered: Option<&str>, port: u16, listen: bool) -> (String, bool) {
    let Some(r) = registered else {
        return (format!("http://127.0.0.1:{port}/"), listen);
    };
    match url::Url::parse(r) {
        Ok(mut u)
            if u.scheme() == "http"
                && matches!(
                    u.host(),
                    Some(url::Host::Domain("localhost"))
                        | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
                        | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
                )
                && u.port().is_none() =>
        {
            let _ = u.set_port(Some(port));
            (u.to_string(), listen)
        }
        _ => (r.to_owned(), false),
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

/// Serves the loopback port until the redirect of this sign-in arrives. Connections are
/// served side by side, each dropped after [`IDLE`] of silence, so a browser's idle
/// pre-connection cannot hold up the real redirect. Only a redirect carrying this
/// sign-in's `state` ends the wait (with its code, or its `error`); anything else (a
/// favicon, another page's forged redirect) gets an error page and changes nothing.
async fn catch_redirect(listener: &TcpListener, state: &str) -> Result<String, OAuthError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted.map_err(|source| OAuthError::Local {
                    what: "accept the sign-in redirect",
                    source,
                })?;
                debug!(%peer, "loopback connection");
                let (tx, state) = (tx.clone(), state.to_owned());
                connections.spawn(async move {
                    if let Some(answer) = serve_one(stream, &state).await {
                        let _ = tx.send(answer).await;
                    }
                });
            }
            Some(answer) = rx.recv() => return answer,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one loopback connection: `Some` with the outcome for this sign-in's redirect.
async fn serve_one(mut stream: TcpStream, state: &str) -> Option<Result<String, OAuthError>> {
    let target = tokio::time::timeout(IDLE, read_target(&mut stream))
        .await
        .ok()
        .flatten()?;
    if !(target.starts_with("/?") || target == "/") {
        respond(&mut stream, "404 Not Found", "Not found.").await;
        return None;
    }
    let url = format!("http://127.0.0.1{target}");
    if !state_matches(&url, state) {
        respond(
            &mut stream,
            "400 Bad Request",
            "mailferry: this is not the redirect of the sign-in in progress (its state does not match); the sign-in goes on.",
        )
        .await;
        return None;
    }
    let answer = parse_redirect(&url, state);
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
    Some(answer)
}

/// Whether `url` carries this sign-in's `state`.
fn state_matches(url: &str, state: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.query_pairs()
            .any(|(name, value)| name == "state" && value == state)
    })
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
    // The state first: an `error` from a redirect that is not this sign-in's must not end
    // it (any local page can send the browser to the loopback port).
    if get("state").as_deref() != Some(state) {
        return Err(OAuthError::Redirect(
            "its state does not match (is it from an older attempt?)".into(),
        ));
    }
    if let Some(error) = get("error") {
        let detail = get("error_description")
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        return Err(OAuthError::Declined(format!("{error}{detail}")));
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
        // An error with another sign-in's state is a state mismatch, not a refusal.
        assert!(matches!(
            parse_redirect("http://127.0.0.1/?error=access_denied&state=forged", "s1"),
            Err(OAuthError::Redirect(_))
        ));
    }

    async fn get(port: u16, target: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.expect("read");
        reply
    }

    #[tokio::test]
    async fn an_idle_connection_and_a_forged_error_do_not_stop_the_real_redirect() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let waiting = tokio::spawn(async move { catch_redirect(&listener, "s1").await });
        // A browser's pre-connection that never sends anything.
        let _idle = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // Another local page aborting the sign-in with a forged error.
        let forged = get(port, "/?error=access_denied&state=forged").await;
        assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");
        assert!(get(port, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        // The real redirect, well within the idle limit.
        let ok = get(port, "/?state=s1&code=the-code").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let code = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("the redirect ended the wait")
            .expect("join");
        assert_eq!(code.ok().as_deref(), Some("the-code"));
    }

    #[test]
    fn a_registered_redirect_is_used_with_this_sign_ins_port_when_loopback() {
        assert_eq!(
            redirect_for(None, 4711, true),
            ("http://127.0.0.1:4711/".to_owned(), true)
        );
        assert_eq!(
            redirect_for(Some("http://localhost"), 4711, true),
            ("http://localhost:4711/".to_owned(), true)
        );
        assert_eq!(
            redirect_for(Some("http://localhost/callback"), 4711, true),
            ("http://localhost:4711/callback".to_owned(), true)
        );
        // Not loopback, or a fixed port: sent as registered, and pasted back.
        let native = "https://login.microsoftonline.com/common/oauth2/nativeclient";
        assert_eq!(
            redirect_for(Some(native), 4711, true),
            (native.to_owned(), false)
        );
        assert_eq!(
            redirect_for(Some("http://localhost:8400/"), 4711, true),
            ("http://localhost:8400/".to_owned(), false)
        );
    }

    #[tokio::test]
    async fn debug_hides_the_verifier_and_state() {
        let p = crate::OAuthClient {
            kind: crate::OAuthProvider::Custom,
            client_id: "c".into(),
            client_secret: None,
            authorize_url: "http://127.0.0.1/authorize".into(),
            token_url: "http://127.0.0.1/token".into(),
            device_url: None,
            scopes: vec!["imap".into()],
            authorize_params: Vec::new(),
            redirect_uri: None,
        };
        let s = BrowserSignIn::new(&p, false).await.expect("sign-in");
        let shown = format!("{s:?}");
        assert!(!shown.contains(&s.verifier), "{shown}");
        assert!(!shown.contains(&s.state), "{shown}");
    }
}
