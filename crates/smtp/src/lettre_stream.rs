//! The session's stream, shared: lettre writes the commands and reads every reply through
//! one handle, the message data is written through the other ([`crate::wire::write_data`]),
//! below lettre's own DATA writer (which copies and dot-stuffs byte by byte, and cannot
//! write the data and its terminator together).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use mailferry_tls::{Idle, Io};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One connection, reachable from lettre and from the data writer. Only one of them uses
/// it at a time (the session is driven step by step), so the lock is never contended; it
/// is held for one poll, never across a wait.
#[derive(Clone)]
pub(crate) struct Shared {
    inner: Arc<Mutex<Inner>>,
    peer: SocketAddr,
}

struct Inner {
    /// Bytes the server sent before TLS that lettre still has to read: its greeting, when
    /// mailferry did STARTTLS itself.
    replay: Vec<u8>,
    stream: Idle<Box<dyn Io>>,
}

impl Shared {
    /// `stream` (plain, or TLS at once or after STARTTLS), lettre reading `replay` first.
    pub(crate) fn new(stream: Idle<Box<dyn Io>>, replay: Vec<u8>, peer: SocketAddr) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner { replay, stream })),
            peer,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|inner| {
            if inner.replay.is_empty() {
                return Pin::new(&mut inner.stream).poll_read(cx, buf);
            }
            let n = inner.replay.len().min(buf.remaining());
            buf.put_slice(&inner.replay[..n]);
            inner.replay.drain(..n);
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|inner| Pin::new(&mut inner.stream).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|inner| Pin::new(&mut inner.stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|inner| Pin::new(&mut inner.stream).poll_shutdown(cx))
    }
}

impl AsyncTokioStream for Shared {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}
