//! The deliveries in flight, up to the destination's concurrency.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

/// The deliveries in flight. One at a time (SMTP) is polled as it is, within the run's
/// own poll, rather than through a [`FuturesUnordered`]: that set wakes its task again
/// whenever it has polled every future it holds and one is still pending (futures-util
/// does so not to starve other tasks), and with one delivery in it that is after every
/// step of an SMTP session: one more poll of the whole run, and one more `epoll_wait`, for
/// every round trip to the server.
pub(super) enum Inflight<F> {
    /// Up to one (a concurrency of one).
    One(Option<Pin<Box<F>>>),
    /// Several at once (the Gmail API).
    Many(FuturesUnordered<Pin<Box<F>>>),
}

impl<F: Future> Inflight<F> {
    /// Room for `concurrency` deliveries at once.
    pub(super) fn new(concurrency: usize) -> Self {
        if concurrency <= 1 {
            Self::One(None)
        } else {
            Self::Many(FuturesUnordered::new())
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::One(slot) => usize::from(slot.is_some()),
            Self::Many(set) => set.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a delivery. A second one while one is in flight (never with a concurrency of
    /// one) turns this into a set rather than losing either.
    pub(super) fn push(&mut self, future: F) {
        let future = Box::pin(future);
        match self {
            Self::One(slot) => match slot.take() {
                None => *slot = Some(future),
                Some(first) => *self = Self::Many([first, future].into_iter().collect()),
            },
            Self::Many(set) => set.push(future),
        }
    }

    /// The next delivery to finish; `None` when none is in flight. Cancel-safe (a branch
    /// of `select!`): a delivery stays in flight until it finishes.
    pub(super) async fn next(&mut self) -> Option<F::Output> {
        match self {
            Self::One(slot) => {
                let out = slot.as_mut()?.await;
                *slot = None;
                Some(out)
            }
            Self::Many(set) => set.next().await,
        }
    }
}
