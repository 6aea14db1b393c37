//! How mailferry opens connections, for every adapter alike: TCP with `TCP_NODELAY`
//! (mail protocols send a small command or terminator right after bulk data; with Nagle's
//! algorithm that small write waits for the peer's delayed ACK, about 40 ms per message),
//! and TLS through rustls on the ring provider, trusting the Mozilla roots plus an
//! optional private CA.
//!
//! rustls asks its transport for at most 4 KB at a time; a 100 MB mailbox would take
//! 25,000 reads of the socket, each a system call and often a wake of the runtime. The
//! socket is read through a 64 KB buffer instead ([`TlsStream`]), which takes whatever
//! the kernel holds in one call (a quarter of the CPU a gigabyte took went to those reads).

#![warn(missing_docs)]

mod idle;
mod lowat;

pub use idle::{Idle, Limit as IdleLimit};
pub use lowat::{LowWater, MAX_MARK, Watermarked};

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A TLS client session over `S`, whose reads of `S` go through a [`READ_AHEAD`] buffer.
pub type TlsStream<S> = tokio_rustls::client::TlsStream<tokio::io::BufReader<S>>;

/// How much of the socket one read takes (a TLS record is at most 16 KB; more arrive
/// together when the peer sends in bulk).
pub const READ_AHEAD: usize = 64 * 1024;

pub use mailferry_core::TlsMode;

/// Where and how a source connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or IP address; the certificate must match it.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificates (PEM) to trust besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Limit for DNS + TCP + TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for every later network step.
    pub io_timeout: Duration,
}

impl ConnectOptions {
    /// `host:port`, for messages.
    #[must_use]
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A byte stream a session can run over: plain TCP or TLS over TCP, boxed so that one
/// session type serves every TLS mode.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

/// A rustls client configuration on the ring provider, trusting the Mozilla roots plus
/// every certificate in `ca_pem`.
///
/// # Errors
/// When `ca_pem` holds something that is not a usable certificate.
pub fn client_config(ca_pem: Option<&[u8]>) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.map_err(invalid)?).map_err(invalid)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `host:port` within `limit`, with `TCP_NODELAY` set.
///
/// # Errors
/// The connection error, or `TimedOut` after `limit`.
pub async fn tcp(host: &str, port: u16, limit: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {}s", limit.as_secs()),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs the TLS handshake over `stream` within `limit`, checking the certificate against
/// `host`.
///
/// # Errors
/// A handshake or certificate error, or `TimedOut` after `limit`.
pub async fn handshake<S>(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    stream: S,
    limit: Duration,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::io::BufReader::with_capacity(READ_AHEAD, stream);
    tokio::time::timeout(limit, connector.connect(name, stream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake within {}s", limit.as_secs()),
            )
        })?
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
