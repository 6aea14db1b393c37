//! A limit on silence, not on total time, for one HTTP request: an upload over a slow
//! uplink (6 MB at 100 KB/s is a minute) passes as long as bytes keep moving; a connection
//! on which nothing moves for `io-timeout` fails.
//!
//! Two watchers share the work. While the body goes out, the kernel knows best: the
//! connection's `TCP_USER_TIMEOUT` (set to `io-timeout`) closes it when sent data stays
//! unacknowledged that long; the application cannot tell, because the socket's buffer
//! takes megabytes at once and then drains at the link's pace, with no write for as long
//! as that takes. Before the body and once the answer begins, this watch counts: each
//! piece of the answer is a sign of life. Between the body's end and the answer, Gmail
//! may be storing a large message: up to ten minutes, as RFC 5321 allows an SMTP server
//! for the reply to the message data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// The body goes out in slices of this size.
const SLICE: usize = 64 * 1024;

/// The longest wait from the body's first slice to the answer.
const BODY_TO_ANSWER: Duration = Duration::from_secs(10 * 60);

/// Signs of life of one request.
#[derive(Debug)]
pub(crate) struct Watch {
    start: Instant,
    /// Milliseconds from `start` to the last sign of life.
    last: AtomicU64,
    /// Whether the connection took the body's first slice, and not yet answered.
    in_body: AtomicBool,
    /// Whether the connection took the body's last slice.
    sent_all: AtomicBool,
}

/// Nothing moved for the limit.
#[derive(Debug)]
pub(crate) struct Silent {
    /// Whether the whole body had gone out (the server may have what it needed).
    pub(crate) sent_all: bool,
}

impl Watch {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_body: AtomicBool::new(false),
            sent_all: AtomicBool::new(false),
        })
    }

    /// The answer began: from now on its pieces are the signs of life.
    pub(crate) fn answered(&self) {
        self.in_body.store(false, Ordering::Relaxed);
        self.alive();
    }

    /// Something moved.
    pub(crate) fn alive(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// `bytes` as a request body sent in slices, each one a sign of life.
    pub(crate) fn body(self: &Arc<Self>, bytes: Bytes) -> reqwest::Body {
        let watch = Arc::clone(self);
        let slices = futures_util::stream::unfold(0usize, move |at| {
            let watch = Arc::clone(&watch);
            let bytes = bytes.clone();
            async move {
                watch.in_body.store(true, Ordering::Relaxed);
                watch.alive();
                if at >= bytes.len() {
                    watch.sent_all.store(true, Ordering::Relaxed);
                    return None;
                }
                let end = (at + SLICE).min(bytes.len());
                Some((Ok::<Bytes, std::io::Error>(bytes.slice(at..end)), end))
            }
        });
        reqwest::Body::wrap_stream(slices)
    }

    /// Runs `request` until it ends or nothing moves for `limit` (for the body, see the
    /// module's words).
    pub(crate) async fn guard<T>(
        &self,
        limit: Duration,
        request: impl Future<Output = T>,
    ) -> Result<T, Silent> {
        let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let watchdog = async {
            loop {
                tokio::time::sleep(tick).await;
                let limit = if self.in_body.load(Ordering::Relaxed) {
                    limit.max(BODY_TO_ANSWER)
                } else {
                    limit
                };
                if self.silent_for() >= limit {
                    return;
                }
            }
        };
        tokio::select! {
            done = request => Ok(done),
            () = watchdog => Err(Silent {
                sent_all: self.sent_all.load(Ordering::Relaxed),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_that_keeps_moving_passes_a_silent_one_fails() {
        let w = Watch::new();
        let limit = Duration::from_secs(5);
        // 30 s in all, a sign of life every 2 s: passes.
        let moving = async {
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                w.alive();
            }
            "done"
        };
        assert_eq!(w.guard(limit, moving).await.ok(), Some("done"));
        let w = Watch::new();
        let started = Instant::now();
        let stuck = async {
            w.alive();
            std::future::pending::<()>().await;
        };
        let silent = w.guard(limit, stuck).await;
        assert!(silent.is_err_and(|s| !s.sent_all));
        let took = started.elapsed();
        assert!(
            took >= limit && took <= limit + Duration::from_secs(2),
            "{took:?}"
        );
    }
}
