//! Turns configuration into adapters.

use mailferry_config::{AccountConfig, Daemon, Endpoint, OAuthSettings, SourceAuth};
use mailferry_core::{Classify, ErrorClass, Secret};
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

/// Reads the access token at every login, so a token refreshed in the file is used.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the access-token-file {}: {e}", path.display()))
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

pub(crate) async fn connect_imap(
    account: &AccountConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<ImapSource, Stop> {
    let mut source = connect_imap_session(account, daemon, tokens).await?;
    source.limit_messages(daemon.max_message_size);
    Ok(source)
}

async fn connect_imap_session(
    account: &AccountConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<ImapSource, Stop> {
    use mailferry_imap::Login;
    let opts = connect_options(&account.endpoint, daemon);
    let username = account.username.as_str();
    match &account.auth {
        SourceAuth::Password(password) => {
            let login = Login::Password {
                username,
                password: password.expose(),
            };
            ImapSource::connect(&opts, login)
                .await
                .map_err(|e| Stop::source(&e))
        }
        SourceAuth::OAuth2TokenFile(path) => {
            let token = read_token(path).map_err(|e| Stop::source(&ImapError::LoginRefused(e)))?;
            let login = Login::OAuth2 {
                username,
                token: token.trim(),
            };
            ImapSource::connect(&opts, login)
                .await
                .map_err(|e| Stop::source(&e))
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
                    ImapSource::connect(opts, login).await
                }
            })
            .await
        }
    }
}

pub(crate) async fn connect_pop3(
    account: &AccountConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<Pop3Source, Stop> {
    let remembered = tokens
        .store()
        .memo(&account.name)
        .await
        .map_err(Stop::Store)?
        .and_then(|m| mailferry_pop3::Keys::from_memo(&m));
    let mut source = connect_pop3_session(account, daemon, tokens).await?;
    if let Some(keys) = remembered {
        source.remember(keys);
    }
    Ok(source)
}

async fn connect_pop3_session(
    account: &AccountConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<Pop3Source, Stop> {
    use mailferry_pop3::Login;
    let opts = connect_options(&account.endpoint, daemon);
    let username = account.username.as_str();
    let pipelining = account.pipelining;
    match &account.auth {
        SourceAuth::Password(p) => {
            let login = Login::Password {
                username,
                password: p.expose(),
            };
            Pop3Source::connect(&opts, login, pipelining)
                .await
                .map_err(|e| Stop::source(&e))
        }
        SourceAuth::OAuth2TokenFile(path) => {
            let token = read_token(path)
                .map_err(|detail| Stop::source(&Pop3Error::LoginRefused { detail }))?;
            let login = Login::OAuth2 {
                username,
                token: token.trim(),
            };
            Pop3Source::connect(&opts, login, pipelining)
                .await
                .map_err(|e| Stop::source(&e))
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
                    Pop3Source::connect(opts, login, pipelining).await
                }
            })
            .await
        }
    }
}
