//! A rate limiter per Gmail mailbox, shared by every task of the process that delivers to
//! it: requests are spaced evenly at the configured rate (a schedule, not a sleep after
//! each request), and a `Retry-After` pushes the whole schedule back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Spaces requests `1 / rate` seconds apart.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

static SHARED: OnceLock<Mutex<HashMap<String, Arc<RateLimiter>>>> = OnceLock::new();

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second.
    #[must_use]
    pub fn new(per_second: f64) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// The process-wide limiter called `key`, created at `per_second` on first use.
    #[must_use]
    pub fn shared(key: &str, per_second: f64) -> Arc<Self> {
        let map = SHARED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            map.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Self::new(per_second))),
        )
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Holds every request back for `wait` from now (the server asked for it).
    pub async fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut next = self.next.lock().await;
        if *next < until {
            *next = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_rate_and_pauses_hold_everyone() {
        let l = Arc::new(RateLimiter::new(10.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let l = Arc::clone(&l);
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task") - start);
        }
        times.sort();
        // 20 requests at 10/s: the last starts 1.9 s after the first.
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[19], Duration::from_millis(1900));

        l.pause(Duration::from_secs(5)).await;
        let before = Instant::now();
        l.acquire().await;
        assert!(Instant::now() - before >= Duration::from_secs(5));
    }
}
