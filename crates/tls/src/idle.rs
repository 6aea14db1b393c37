//! A stream whose reads and writes fail after a stretch of silence, not after a total
//! time: a 100 MB message trickling in at 1 MB/s passes, a peer that stops sending does
//! not hang the session.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Wraps `S`: a read or write that makes no progress for `limit` fails with
/// [`io::ErrorKind::TimedOut`]. Only waiting counts: between commands nobody reads.
#[derive(Debug)]
pub struct Idle<S> {
    inner: S,
    limit: Limit,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Idle<S> {
    /// `inner`, failing after `limit` without progress.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit: Limit::new(limit),
            read_timer: None,
            write_timer: None,
        }
    }

    /// A handle that changes the limit from outside (while the stream is owned by a
    /// session): an IMAP IDLE waits far longer than a command may.
    #[must_use]
    pub fn limit(&self) -> Limit {
        self.limit.clone()
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The silence an [`Idle`] stream allows, changeable through clones of this handle. A
/// change applies from the next wait on.
#[derive(Debug, Clone)]
pub struct Limit(Arc<AtomicU64>);

impl Limit {
    fn new(d: Duration) -> Self {
        Self(Arc::new(AtomicU64::new(millis(d))))
    }

    /// Sets the limit.
    pub fn set(&self, d: Duration) {
        self.0.store(millis(d), Ordering::Relaxed);
    }

    /// The limit now.
    #[must_use]
    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Progress disarms the timer; waiting arms it (once) and polls it.
fn watch<T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match polled {
        Poll::Ready(r) => {
            *timer = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            if t.as_mut().poll(cx).is_ready() {
                *timer = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data for {}s", limit.as_secs()),
                )));
            }
            Poll::Pending
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        watch(&mut this.read_timer, this.limit.get(), cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        watch(&mut this.write_timer, this.limit.get(), cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        watch(&mut this.write_timer, this.limit.get(), cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_trickle_passes_silence_fails() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut idle = Idle::new(client, Duration::from_secs(2));
        // One byte a second for ten seconds: never two seconds of silence.
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                server.write_all(b"x").await.expect("write");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(server);
        });
        let mut got = Vec::new();
        while got.len() < 10 {
            let mut b = [0u8; 1];
            idle.read_exact(&mut b)
                .await
                .expect("a trickle is not silence");
            got.push(b[0]);
        }
        let mut b = [0u8; 1];
        let err = idle.read_exact(&mut b).await.expect_err("silence");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        writer.abort();
    }
}
