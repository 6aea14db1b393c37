//! TCP + TLS setup, generic over what follows.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::ImapError;

pub use mailferry_tls::{ConnectOptions, TlsMode};

/// A boxed stream, so that one session type serves every TLS mode.
pub(crate) type Stream = Box<dyn mailferry_tls::Io>;

/// Runs `fut` under `limit`, naming `step` when it runs out.
pub(crate) async fn timed<T, E>(
    step: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ImapError>
where
    ImapError: From<E>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(ImapError::from),
        Err(_) => Err(ImapError::Timeout { step, after: limit }),
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        crate::error::sanitize(e)
    }
}

impl From<std::io::Error> for ImapError {
    fn from(e: std::io::Error) -> Self {
        crate::error::sanitize(e.into())
    }
}

pub(crate) async fn tcp(opts: &ConnectOptions) -> Result<TcpStream, ImapError> {
    mailferry_tls::tcp(&opts.host, opts.port, opts.connect_timeout)
        .await
        .map_err(|source| connect_error(opts, source, "connect"))
}

/// Wraps `stream` in TLS, checking the certificate against the public roots and `ca_pem`.
pub(crate) async fn tls<S>(
    opts: &ConnectOptions,
    stream: S,
) -> Result<mailferry_tls::TlsStream<S>, ImapError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = mailferry_tls::client_config(opts.ca_pem.as_deref())
        .map_err(|e| connect_error(opts, e, "TLS handshake"))?;
    mailferry_tls::handshake(config, &opts.host, stream, opts.connect_timeout)
        .await
        .map_err(|e| connect_error(opts, e, "TLS handshake"))
}

fn connect_error(opts: &ConnectOptions, source: std::io::Error, step: &'static str) -> ImapError {
    if source.kind() == std::io::ErrorKind::TimedOut {
        ImapError::Timeout {
            step,
            after: opts.connect_timeout,
        }
    } else {
        ImapError::Connect {
            server: opts.server(),
            source,
        }
    }
}
