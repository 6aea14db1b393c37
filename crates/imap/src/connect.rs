//! TCP + TLS setup, generic over what follows.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::ImapError;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain text, then `STARTTLS` before login (port 143).
    StartTls,
    /// No TLS (loopback tests only).
    None,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or IP address; the certificate must match it.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: Tls,
    /// Extra CA certificates (PEM) to trust besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Limit for DNS + TCP + TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for every later network step.
    pub io_timeout: Duration,
}

impl ConnectOptions {
    pub(crate) fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The byte stream under the IMAP session: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

/// A boxed stream, so that one session type serves every TLS mode.
pub(crate) type Stream = Box<dyn Io>;

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
        Self::Session(e)
    }
}

pub(crate) async fn tcp(opts: &ConnectOptions) -> Result<TcpStream, ImapError> {
    let server = opts.server();
    let connect = TcpStream::connect((opts.host.as_str(), opts.port));
    match tokio::time::timeout(opts.connect_timeout, connect).await {
        Ok(Ok(s)) => {
            s.set_nodelay(true).map_err(|source| ImapError::Connect {
                server: server.clone(),
                source,
            })?;
            Ok(s)
        }
        Ok(Err(source)) => Err(ImapError::Connect { server, source }),
        Err(_) => Err(ImapError::Timeout {
            step: "connect",
            after: opts.connect_timeout,
        }),
    }
}

/// Wraps `stream` in TLS, checking the certificate against the public roots and `ca_pem`.
pub(crate) async fn tls<S>(
    opts: &ConnectOptions,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, ImapError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = opts.server();
    let io_err = |source| ImapError::Connect {
        server: server.clone(),
        source,
    };
    let config = client_config(opts.ca_pem.as_deref()).map_err(io_err)?;
    let name = ServerName::try_from(opts.host.clone())
        .map_err(|e| io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(opts.connect_timeout, connector.connect(name, stream)).await {
        Ok(r) => r.map_err(io_err),
        Err(_) => Err(ImapError::Timeout {
            step: "TLS handshake",
            after: opts.connect_timeout,
        }),
    }
}

/// A rustls client configuration on the ring provider, trusting the Mozilla roots plus
/// the certificates in `ca_pem`.
fn client_config(ca_pem: Option<&[u8]>) -> std::io::Result<rustls::ClientConfig> {
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(&e))?;
            roots.add(cert).map_err(|e| invalid(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
