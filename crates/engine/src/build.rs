//! Turns configuration into adapters.

use mailferry_config::{AccountConfig, Daemon, Endpoint, OAuthSettings, SourceAuth};
use mailferry_core::{Classify, ErrorClass, Login, Secret};
use mailferry_imap::{ImapError, ImapSource};
use mailferry_pop3::{Pop3Error, Pop3Source};
use tracing::info;

use crate::report::ErrorReport;
use crate::report::Stop;
use crate::tokens::{TokenKeeper, account_owner};

fn connect_options(e: &Endpoint, daemon: &Daemon) -> mailferry_tls::ConnectOptions {
    mailferry_tls::ConnectOptions {
        host: e.host.clone(),
        port: e.port,
        tls: e.tls,
        ca_pem: e.ca_pem.clone(),
        connect_timeout: daemon.connect_timeout,
        io_timeout: daemon.io_timeout,
    }
}

/// An `access-token-file` that cannot be read: the user's token script has not written it
/// (yet), or the service may not read it. Nothing was sent to the server.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the access-token-file {}", .path.display())]
pub(crate) struct TokenFileError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

impl Classify for TokenFileError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Auth
    }

    fn hint(&self) -> Option<&'static str> {
        Some(
            "check that the token script writes this file and that the service's user may read it; `mailferry auth NAME` signs in without a script",
        )
    }
}

/// Reads the access token at every login, so a token refreshed in the file is used.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, TokenFileError> {
    match std::fs::read_to_string(path) {
        Ok(token) => Ok(token.trim().to_owned()),
        Err(source) => Err(TokenFileError {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What to check when a server refuses an access token that was just issued.
const OAUTH_LOGIN_REFUSED: &str = "the server refused a freshly issued access token: check that username is the mailbox you signed in as, that the scopes cover this protocol, and that IMAP/POP access is enabled in the mailbox's settings (Outlook.com: Settings > Mail > Forwarding and IMAP)";

/// Logs in with an OAuth2 access token from `tokens`; when the server refuses a token that
/// looked fresh, gets a new one and tries once more.
async fn with_token<T, E, F, Fut>(
    tokens: &TokenKeeper,
    owner: &str,
    settings: &OAuthSettings,
    login: F,
) -> Result<T, Stop>
where
    E: std::error::Error + Classify,
    F: Fn(Secret) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let token = tokens
        .access_token(owner, settings)
        .await
        .map_err(|e| Stop::source(&e))?;
    match login(token.clone()).await {
        Err(e) if e.class() == ErrorClass::Auth => {
            info!(cause = %e, "the server refused the access token; refreshing it and trying once more");
            let fresh = tokens
                .after_rejection(owner, settings, &token)
                .await
                .map_err(|e| Stop::source(&e))?;
            login(fresh).await.map_err(|e| {
                let mut report = ErrorReport::from_error(&e);
                if e.class() == ErrorClass::Auth {
                    report.hint = Some(OAUTH_LOGIN_REFUSED.into());
                }
                Stop::Source(report)
            })
        }
        other => other.map_err(|e| Stop::source(&e)),
    }
}

/// What differs between the source protocols when the engine logs in: how a session is
/// opened, and what is set on it afterwards. Everything else (which credentials, OAuth2
/// refresh and retry, error reports) is [`connect`]'s, once for both.
pub(crate) trait Connect: Sized {
    /// The adapter's error.
    type Error: std::error::Error + Classify;

    /// Opens a session and logs in.
    fn open(
        opts: &mailferry_tls::ConnectOptions,
        login: Login<&str>,
        account: &AccountConfig,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Applies the account's and the store's settings to a fresh session.
    fn prepare(&mut self, daemon: &Daemon, memo: Option<&str>);
}

impl Connect for ImapSource {
    type Error = ImapError;

    fn open(
        opts: &mailferry_tls::ConnectOptions,
        login: Login<&str>,
        _: &AccountConfig,
    ) -> impl Future<Output = Result<Self, ImapError>> + Send {
        ImapSource::connect(opts, login)
    }

    fn prepare(&mut self, daemon: &Daemon, _: Option<&str>) {
        self.limit_messages(daemon.max_message_size);
    }
}

impl Connect for Pop3Source {
    type Error = Pop3Error;

    fn open(
        opts: &mailferry_tls::ConnectOptions,
        login: Login<&str>,
        account: &AccountConfig,
    ) -> impl Future<Output = Result<Self, Pop3Error>> + Send {
        Pop3Source::connect(opts, login, account.pipelining)
    }

    /// The UIDL keys remembered from the last session (servers whose UIDL is slow).
    fn prepare(&mut self, daemon: &Daemon, memo: Option<&str>) {
        if let Some(keys) = memo.and_then(mailferry_pop3::Keys::from_memo) {
            self.remember(keys);
        }
        self.limit_messages(daemon.max_message_size);
    }
}

/// Connects to `account`'s source and logs in with its configured credentials.
pub(crate) async fn connect<S: Connect>(
    account: &AccountConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<S, Stop> {
    let memo = tokens
        .store()
        .memo(&account.name)
        .await
        .map_err(Stop::Store)?;
    let opts = connect_options(&account.endpoint, daemon);
    let username = account.username.as_str();
    let mut source = match &account.auth {
        SourceAuth::Password(password) => {
            let login = Login::Password {
                username,
                password: password.expose(),
            };
            S::open(&opts, login, account)
                .await
                .map_err(|e| Stop::source(&e))?
        }
        SourceAuth::OAuth2TokenFile(path) => {
            let token = read_token(path).map_err(|e| Stop::source(&e))?;
            let login = Login::OAuth2 {
                username,
                token: &token,
            };
            S::open(&opts, login, account)
                .await
                .map_err(|e| Stop::source(&e))?
        }
        SourceAuth::OAuth2(settings) => {
            let owner = account_owner(&account.name);
            with_token(tokens, &owner, settings, |token| {
                let opts = &opts;
                async move {
                    let login = Login::OAuth2 {
                        username,
                        token: token.expose(),
                    };
                    S::open(opts, login, account).await
                }
            })
            .await?
        }
    };
    source.prepare(daemon, memo.as_deref());
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration checks the file when it is loaded; the service reads it again at
    /// every login, when the user's token script may have removed it. That is the file's
    /// fault, said with its path, not the server's refusal.
    #[test]
    fn an_access_token_file_gone_since_loading_is_named_not_blamed_on_the_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outlook.token");
        std::fs::write(&path, "token-text\n").expect("write");
        assert_eq!(read_token(&path).expect("read"), "token-text");

        std::fs::remove_file(&path).expect("remove");
        let err = read_token(&path).expect_err("gone");
        let report = ErrorReport::from_error(&err);
        assert_eq!(report.class, ErrorClass::Auth);
        assert!(
            report
                .message
                .starts_with("cannot read the access-token-file ")
                && report.message.contains("outlook.token"),
            "{}",
            report.message
        );
        assert!(!report.message.contains("refused"), "{}", report.message);
        assert!(report.hint.is_some_and(|h| h.contains("token script")));
    }
}
