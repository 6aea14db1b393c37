//! The stream lettre drives: implicit TLS from mailferry-tls, the inactivity limit around it.

use lettre::transport::smtp::client::AsyncTokioStream;

/// A stream lettre can drive: lettre wants its own stream trait, which the orphan rule
/// keeps us from implementing on rustls' and mailferry-tls' types directly. Wraps the TLS
/// stream of implicit TLS, and the inactivity limit around whatever lettre is given.
#[derive(Debug)]
pub(crate) struct Lettre<T>(pub(crate) T);

/// The peer of a stream, for lettre.
trait Peer {
    fn peer(&self) -> std::io::Result<std::net::SocketAddr>;
}

impl Peer for mailferry_tls::TlsStream<tokio::net::TcpStream> {
    fn peer(&self) -> std::io::Result<std::net::SocketAddr> {
        self.get_ref().0.get_ref().peer_addr()
    }
}

impl Peer for mailferry_tls::Idle<Box<dyn AsyncTokioStream>> {
    fn peer(&self) -> std::io::Result<std::net::SocketAddr> {
        self.get_ref().peer_addr()
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Lettre<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Lettre<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T> AsyncTokioStream for Lettre<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Peer + Unpin + Send + Sync + std::fmt::Debug,
{
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.peer()
    }
}
