//! A long import's progress, written as it goes for `status` and `/metrics`: a first run
//! that brings 100,000 old messages into Gmail takes hours at Google's quota.

use std::time::Duration;

use mailferry_store::Store;
use tokio::time::Instant;
use tracing::warn;

/// Imports of at least this many messages are tracked.
const LONG: u64 = 100;
/// Written every this many messages...
const EVERY: u64 = 25;
/// ...or after this long, whichever comes first.
const OR_AFTER: Duration = Duration::from_secs(5);

/// One folder's import in progress.
pub(super) struct Tracker<'a> {
    store: &'a Store,
    account: &'a str,
    folder: &'a str,
    total: u64,
    done: u64,
    started_at: i64,
    saved: Instant,
}

impl<'a> Tracker<'a> {
    /// `total` messages to go in `folder`; tracked when it is a long import.
    pub(super) async fn start(
        store: &'a Store,
        account: &'a str,
        folder: &'a str,
        total: u64,
    ) -> Option<Self> {
        if total < LONG {
            return None;
        }
        let t = Self {
            store,
            account,
            folder,
            total,
            done: 0,
            started_at: mailferry_core::unix_now(),
            saved: Instant::now(),
        };
        t.save().await;
        Some(t)
    }

    /// One more message done with.
    pub(super) async fn step(&mut self) {
        self.done += 1;
        if self.done.is_multiple_of(EVERY) || self.saved.elapsed() >= OR_AFTER {
            self.save().await;
            self.saved = Instant::now();
        }
    }

    /// The folder's import is over.
    pub(super) async fn finish(&self) {
        if let Err(e) = self.store.clear_progress(self.account, self.folder).await {
            warn!(cause = %e, "cannot record the end of the import's progress");
        }
    }

    async fn save(&self) {
        if let Err(e) = self
            .store
            .save_progress(
                self.account,
                self.folder,
                self.total,
                self.done,
                self.started_at,
            )
            .await
        {
            warn!(cause = %e, "cannot record the import's progress");
        }
    }
}
