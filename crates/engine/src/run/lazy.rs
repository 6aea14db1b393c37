//! The source's reads are lazy while a delivery is in flight (see
//! [`mailferry_core::LazyReads`]): its reply wakes the run soon, and the fetcher's socket
//! need not wake it meanwhile for every few kilobytes of the next message.

use mailferry_core::LazyReads;

/// Turns a source's lazy reads on while a delivery is in flight, and off when none is and
/// when dropped (the session is then used for other commands, which nothing else wakes).
pub(super) struct WhileDelivering(Option<LazyReads>);

impl WhileDelivering {
    pub(super) fn new(lazy: Option<LazyReads>) -> Self {
        Self(lazy)
    }

    /// Lazy reads while `delivering`. Turning them off lets the rest of the run (the
    /// fetcher, in the same task) be polled once more at once: its socket is then told to
    /// wake the run for what the fetcher needs, not only for much.
    pub(super) async fn delivering(&self, delivering: bool) {
        let Some(lazy) = &self.0 else {
            return;
        };
        if lazy.is_on() == delivering {
            return;
        }
        lazy.set(delivering);
        if !delivering {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for WhileDelivering {
    fn drop(&mut self) {
        if let Some(lazy) = &self.0 {
            lazy.set(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use mailferry_core::LazyReads;

    use super::super::pipeline_fakes::{
        FakeDestination, bench, message, peer_answering_later, source,
    };

    /// Every delivery runs with the source's reads lazy (its reply wakes the run); the
    /// first fetch, with nothing in flight, finds them off (nothing else would wake the
    /// run); a later one, while a delivery is in flight, on; after the run they are off
    /// (the session's next commands have nothing else to wake them).
    #[tokio::test]
    async fn reads_are_lazy_only_while_a_delivery_is_in_flight() {
        let b = bench().await;
        let lazy = LazyReads::default();
        let fetches = Arc::new(Mutex::new(Vec::new()));
        // Messages of 300 KB: a fetch batch holds three (1 MiB), the queue two batches
        // (2 MiB), so later batches are fetched as deliveries free room.
        let big = |n| {
            let mut m = message(n, "");
            m.extend(std::iter::repeat_n(b'x', 300_000));
            m.extend_from_slice(b"\r\n");
            m
        };
        let mut src = source((1..=30).map(|n| (n, big(n))).collect());
        src.lazy = Some((lazy.clone(), Arc::clone(&fetches)));
        // Each delivery waits twice for a server that answers from another thread.
        let dest = FakeDestination {
            one_at_a_time: true,
            steps: 2,
            peer: Some(peer_answering_later()),
            lazy: Some((lazy.clone(), Mutex::new(Vec::new()))),
            ..FakeDestination::default()
        };
        let r = b.run(src, &dest).await;
        assert_eq!(r.counts.delivered, 30);
        let deliveries = dest
            .lazy
            .as_ref()
            .map(|(_, seen)| seen.lock().expect("lock").clone())
            .unwrap_or_default();
        assert_eq!(deliveries, vec![true; 30]);
        let fetches = fetches.lock().expect("lock").clone();
        assert_eq!(fetches.first(), Some(&false), "{fetches:?}");
        assert!(fetches.iter().skip(1).any(|&on| on), "{fetches:?}");
        assert!(!lazy.is_on(), "lazy after the run");
    }
}
