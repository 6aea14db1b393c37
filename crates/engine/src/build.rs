//! Turns configuration into adapters.

use mailferry_config::{
    AccountConfig, Daemon, DestinationConfig, DestinationKind, Endpoint, SmtpSender, SourceAuth,
    TlsMode,
};
use mailferry_imap::{ImapError, ImapSource};
use mailferry_pop3::{Pop3Error, Pop3Source};
use mailferry_smtp::{SmtpDestination, SmtpError, SmtpOptions};

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

pub(crate) async fn connect_imap(
    account: &AccountConfig,
    daemon: &Daemon,
) -> Result<ImapSource, ImapError> {
    let opts = connect_options(&account.endpoint, daemon);
    match &account.auth {
        SourceAuth::Password(password) => {
            let login = mailferry_imap::Login::Password {
                username: &account.username,
                password: password.expose(),
            };
            ImapSource::connect(&opts, login).await
        }
        SourceAuth::OAuth2TokenFile(path) => {
            let token = read_token(path).map_err(ImapError::LoginRefused)?;
            let login = mailferry_imap::Login::OAuth2 {
                username: &account.username,
                token: token.trim(),
            };
            ImapSource::connect(&opts, login).await
        }
    }
}

pub(crate) async fn connect_pop3(
    account: &AccountConfig,
    daemon: &Daemon,
) -> Result<Pop3Source, Pop3Error> {
    use mailferry_pop3::Login;
    let opts = connect_options(&account.endpoint, daemon);
    match &account.auth {
        SourceAuth::Password(p) => {
            let login = Login::Password {
                username: &account.username,
                password: p.expose(),
            };
            Pop3Source::connect(&opts, login, account.pipelining).await
        }
        SourceAuth::OAuth2TokenFile(path) => {
            let token = read_token(path).map_err(|detail| Pop3Error::LoginRefused { detail })?;
            let login = Login::XOAuth2 {
                username: &account.username,
                token: token.trim(),
            };
            Pop3Source::connect(&opts, login, account.pipelining).await
        }
    }
}

pub(crate) fn destination(
    dest: &DestinationConfig,
    daemon: &Daemon,
) -> Result<SmtpDestination, SmtpError> {
    let DestinationKind::Smtp(s) = &dest.kind;
    SmtpDestination::new(SmtpOptions {
        host: s.endpoint.host.clone(),
        port: s.endpoint.port,
        tls: tls_mode(s.endpoint.tls),
        ca_pem: s.endpoint.ca_pem.clone(),
        credentials: s
            .credentials
            .as_ref()
            .map(|(u, p)| (u.clone(), p.expose().to_owned())),
        envelope_to: s.envelope_to.clone(),
        envelope_from: match &s.envelope_from {
            SmtpSender::FromMessage => None,
            SmtpSender::Fixed(a) => Some(a.clone()),
        },
        hello_name: s.hello_name.clone(),
        connect_timeout: daemon.connect_timeout,
        io_timeout: daemon.io_timeout,
    })
}
