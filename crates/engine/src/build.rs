//! Turns configuration into adapters.

use mailferry_config::{
    AccountConfig, Daemon, DestinationConfig, DestinationKind, Endpoint, OAuthSettings, SmtpAuth,
    SmtpSender, SourceAuth, TlsMode,
};
use mailferry_core::{Classify, Destination as _, ErrorClass, RawMessage, Receipt, Secret};
use mailferry_imap::{ImapError, ImapSource};
use mailferry_pop3::{Pop3Error, Pop3Source};
use mailferry_smtp::{SmtpDestination, SmtpError, SmtpLogin, SmtpOptions};
use tracing::info;

use crate::report::ErrorReport;
use crate::run::Stop;
use crate::tokens::{TokenError, TokenKeeper, account_owner, destination_owner};

/// The one place where the configuration's TLS mode becomes the adapters'.
fn tls_mode(tls: TlsMode) -> mailferry_tls::TlsMode {
    match tls {
        TlsMode::Implicit => mailferry_tls::TlsMode::Implicit,
        TlsMode::StartTls => mailferry_tls::TlsMode::StartTls,
        TlsMode::None => mailferry_tls::TlsMode::None,
    }
}

fn connect_options(e: &Endpoint, daemon: &Daemon) -> mailferry_tls::ConnectOptions {
    mailferry_tls::ConnectOptions {
        host: e.host.clone(),
        port: e.port,
        tls: tls_mode(e.tls),
        ca_pem: e.ca_pem.clone(),
        connect_timeout: daemon.connect_timeout,
        io_timeout: daemon.io_timeout,
    }
}

/// Reads the access token at every login, so a token refreshed in the file is used.
fn read_token(path: &std::path::Path) -> Result<String, String> {
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
    use mailferry_imap::Login;
    let opts = connect_options(&account.endpoint, daemon);
    let username = &account.username;
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
    use mailferry_pop3::Login;
    let opts = connect_options(&account.endpoint, daemon);
    let username = &account.username;
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
            let login = Login::XOAuth2 {
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
                    let login = Login::XOAuth2 {
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

/// A destination, with what it needs to renew its OAuth2 token.
pub(crate) struct Delivery<'a> {
    name: String,
    smtp: SmtpDestination,
    /// Owner, registration, and the token the current login uses.
    oauth: Option<(String, &'a OAuthSettings, std::sync::Mutex<Secret>)>,
    tokens: &'a TokenKeeper,
}

impl Delivery<'_> {
    /// Delivers `message`; when the server refuses the OAuth2 token, renews it and tries
    /// once more.
    pub(crate) async fn deliver(&self, message: &RawMessage) -> Result<Receipt, DeliveryError> {
        match self.smtp.deliver(message).await {
            Err(e) if e.class() == ErrorClass::Auth => {
                let Some((owner, settings, current)) = &self.oauth else {
                    return Err(e.into());
                };
                info!(cause = %e, "the SMTP server refused the access token; refreshing it and trying once more");
                let rejected = current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let fresh = self
                    .tokens
                    .after_rejection(owner, settings, &rejected)
                    .await
                    .map_err(|source| DeliveryError::Token {
                        destination: self.name.clone(),
                        source,
                    })?;
                self.smtp.set_token(fresh.expose());
                *current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                Ok(self.smtp.deliver(message).await?)
            }
            other => Ok(other?),
        }
    }

    pub(crate) async fn close(&self) {
        self.smtp.close().await;
    }
}

/// A failed delivery: the destination's error, or no token to log in with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error("destination {destination:?}: {source}")]
    Token {
        destination: String,
        #[source]
        source: TokenError,
    },
}

impl Classify for DeliveryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Smtp(e) => e.class(),
            Self::Token { source, .. } => source.class(),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Smtp(e) => e.hint(),
            Self::Token { source, .. } => source.hint(),
        }
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            Self::Smtp(e) => e.may_have_arrived(),
            Self::Token { .. } => false,
        }
    }
}

pub(crate) async fn destination<'a>(
    dest: &'a DestinationConfig,
    daemon: &Daemon,
    tokens: &'a TokenKeeper,
) -> Result<Delivery<'a>, DeliveryError> {
    let DestinationKind::Smtp(s) = &dest.kind;
    let (login, oauth) = match &s.auth {
        SmtpAuth::None => (None, None),
        SmtpAuth::Password { username, password } => (
            Some(SmtpLogin::Password {
                username: username.clone(),
                password: password.expose().to_owned(),
            }),
            None,
        ),
        SmtpAuth::OAuth2 { username, settings } => {
            let owner = destination_owner(&dest.name);
            let token = tokens
                .access_token(&owner, settings)
                .await
                .map_err(|source| DeliveryError::Token {
                    destination: dest.name.clone(),
                    source,
                })?;
            (
                Some(SmtpLogin::XOAuth2 {
                    username: username.clone(),
                    token: token.expose().to_owned(),
                }),
                Some((owner, settings, std::sync::Mutex::new(token))),
            )
        }
    };
    let smtp = SmtpDestination::new(SmtpOptions {
        host: s.endpoint.host.clone(),
        port: s.endpoint.port,
        tls: tls_mode(s.endpoint.tls),
        ca_pem: s.endpoint.ca_pem.clone(),
        login,
        envelope_to: s.envelope_to.clone(),
        envelope_from: match &s.envelope_from {
            SmtpSender::FromMessage => None,
            SmtpSender::Fixed(a) => Some(a.clone()),
        },
        hello_name: s.hello_name.clone(),
        connect_timeout: daemon.connect_timeout,
        io_timeout: daemon.io_timeout,
    })?;
    Ok(Delivery {
        name: dest.name.clone(),
        smtp,
        oauth,
        tokens,
    })
}
