//! Fetching and delivering overlap: a fetcher and a deliverer joined by a byte-bounded
//! queue; each message is recorded in the ledger before and after its delivery.

use mailferry_core::{ListedMessage, MessageKey, RawMessage, Source};
use mailferry_store::{FetchRetry, LedgerKey, Store};
use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::report::AccountReport;
use mailferry_core::Destination;

use super::Run;
use super::record::{Done, FETCH_RETRY, Outcome, deliver_one, fetch_failed, tally};
use super::streak::Streak;
use crate::report::Stop;

/// A fetch batch holds at most this many messages...
const BATCH_MESSAGES: usize = 64;
/// ...and at most this many announced bytes (but always at least one message).
const BATCH_BYTES: u64 = 1024 * 1024;
/// Fetched messages waiting for delivery hold at most this many bytes (a larger message
/// waits alone).
const QUEUE_BYTES: u32 = 2 * 1024 * 1024;

/// Fetches `new` and delivers it.
pub(super) async fn transfer<S: Source, D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    new: Vec<ListedMessage>,
    source: &mut S,
    report: &mut AccountReport,
) -> Result<bool, Stop> {
    let Run {
        account,
        store,
        cancel,
        ..
    } = *run;

    // Fetching and delivering overlap: the next batch is fetched while the current one is
    // delivered. The queue between them is bounded in bytes, so memory stays at about two
    // batches (or one message larger than that).
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES as usize));
    let (tx, rx) = mpsc::channel::<(MessageKey, Fetched, OwnedSemaphorePermit)>(BATCH_MESSAGES * 2);
    // Announced larger than max-message-size: refused at once, never fetched.
    let max = run.max_message;
    let planned = new.len() as u64;
    let (too_large, new): (Vec<ListedMessage>, Vec<ListedMessage>) =
        new.into_iter().partition(|m| m.size > max);
    // Both halves own their end of the queue: when the fetcher ends, the deliverer drains
    // what was fetched and ends; when the deliverer stops, the fetcher's next send fails.
    let incomplete = std::sync::atomic::AtomicBool::new(false);
    let incomplete = &incomplete;
    let fetcher = fetch_all(run, source, too_large, new, budget, tx, incomplete);
    // Deliveries run up to the destination's concurrency (SMTP: one at a time on its one
    // connection; the Gmail API: several, paced by its rate limiter).
    let tracker = tokio::sync::Mutex::new(
        super::progress::Tracker::start(store, &account.name, folder, planned).await,
    );
    let tracker = &tracker;
    let deliverer = deliver_all(run, folder, uidvalidity, rx, tracker, report);
    let (fetched, delivered) = tokio::join!(fetcher, deliverer);
    delivered?;
    fetched?;
    let complete = !incomplete.load(std::sync::atomic::Ordering::Relaxed);
    if complete
        && !cancel.is_cancelled()
        && let Some(t) = tracker.lock().await.as_ref()
    {
        t.finish().await;
    }
    Ok(complete)
}

/// The fetching half: refuses what is announced too large, then fetches `new` in
/// batches into the queue until it is all fetched, the slice ends, or the deliverer stops.
async fn fetch_all<S: Source, D: Destination>(
    run: &Run<'_, D>,
    source: &mut S,
    too_large: Vec<ListedMessage>,
    new: Vec<ListedMessage>,
    budget: Arc<Semaphore>,
    tx: mpsc::Sender<(MessageKey, Fetched, OwnedSemaphorePermit)>,
    incomplete: &std::sync::atomic::AtomicBool,
) -> Result<(), Stop> {
    let (max, cancel) = (run.max_message, run.cancel);
    for m in too_large {
        let Ok(permit) = Arc::clone(&budget).acquire_many_owned(0).await else {
            return Ok(());
        };
        let why = format!(
            "the server announces {} bytes, more than max-message-size ({max} bytes); not fetched",
            m.size
        );
        if tx
            .send((m.key, Fetched::TooLarge(why), permit))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    for batch in batches(&new) {
        if cancel.is_cancelled() {
            break;
        }
        if run.until.is_some_and(|u| tokio::time::Instant::now() >= u) {
            // The slice is used: the rest is the next run's, which starts at once.
            incomplete.store(true, std::sync::atomic::Ordering::Relaxed);
            break;
        }
        let keys: Vec<MessageKey> = batch.iter().map(|m| m.key.clone()).collect();
        // The batch's announced bytes are taken from the budget before it is fetched, not
        // after: else a large message arrives while the one before it is still being
        // delivered, and both are held at once.
        let Ok(reserved) = budget.acquire_many(reservation(batch)).await else {
            return Ok(());
        };
        let fetched = source.fetch(&keys).await.map_err(|e| Stop::source(&e))?;
        drop(reserved);
        if fetched.len() < keys.len() {
            // Gone meanwhile, or left for the next run.
            incomplete.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for (key, message) in fetched {
            let message = match message {
                Ok(m) => Fetched::Message(m),
                Err(f) if f.permanent => Fetched::TooLarge(f.reason),
                Err(f) => Fetched::Failed(f.reason),
            };
            let len = match &message {
                Fetched::Message(m) => m.len(),
                _ => 0,
            };
            let weight = u32::try_from(len.min(QUEUE_BYTES as usize)).unwrap_or(u32::MAX);
            let Ok(permit) = Arc::clone(&budget).acquire_many_owned(weight).await else {
                return Ok(());
            };
            if tx.send((key, message, permit)).await.is_err() {
                // The deliverer stopped (an error or shutdown): fetch no more.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The delivering half: takes fetched messages from the queue, up to the destination's
/// concurrency at once, each recording its own outcome; a run-ending error (or a streak
/// of alike refusals) stops taking new ones and lets those in flight finish.
async fn deliver_all<D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    mut rx: mpsc::Receiver<(MessageKey, Fetched, OwnedSemaphorePermit)>,
    tracker: &tokio::sync::Mutex<Option<super::progress::Tracker<'_>>>,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    let Run {
        account,
        store,
        destination,
        destination_name,
        observer,
        cancel,
        ..
    } = *run;
    let concurrency = destination.concurrency().max(1);
    let sha256_rows = store
        .has_sha256_rows(&account.name, folder, uidvalidity)
        .await
        .map_err(Stop::Store)?;
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    let mut stop: Option<Stop> = None;
    let mut streak = Streak::default();
    loop {
        let take = open && stop.is_none() && !cancel.is_cancelled() && inflight.len() < concurrency;
        tokio::select! {
            Some((size, done)) = inflight.next(), if !inflight.is_empty() => {
                let (size, done): (u64, Done) = (size, done);
                observer.done(&account.name, size);
                if let Some(t) = tracker.lock().await.as_mut() {
                    t.step().await;
                }
                if matches!(done.outcome, Ok(Outcome::Delivered)) {
                    report.bytes += size;
                }
                if let Some(e) = streak.count(&done.outcome, destination_name)
                    && stop.is_none()
                {
                    stop = Some(e);
                }
                if let Err(e) = tally(done, report)
                    && stop.is_none()
                {
                    stop = Some(e);
                }
            }
            item = rx.recv(), if take => match item {
                Some((key, message, permit)) => {
                    report.counts.fetched += 1;
                    let key = LedgerKey {
                        account: account.name.clone(),
                        folder: folder.to_owned(),
                        uidvalidity,
                        key,
                    };
                    inflight.push(one(key, message, permit, (destination, destination_name), store, sha256_rows));
                }
                None => open = false,
            },
            else => break,
        }
    }
    stop.map_or(Ok(()), Err)
}

/// One queued message's outcome, recorded: delivered (or not), or its fetch failure.
async fn one<D: Destination>(
    key: LedgerKey,
    message: Fetched,
    permit: OwnedSemaphorePermit,
    (destination, destination_name): (&D, &str),
    store: &Store,
    sha256_rows: bool,
) -> (u64, Done) {
    let (size, done) = match &message {
        Fetched::Message(m) => (
            m.len() as u64,
            deliver_one(&key, m, destination, destination_name, store, sha256_rows).await,
        ),
        Fetched::Failed(reason) => (
            0,
            fetch_failed(&key, reason, destination_name, store, FETCH_RETRY).await,
        ),
        Fetched::TooLarge(reason) => (
            0,
            fetch_failed(&key, reason, destination_name, store, FetchRetry::AT_ONCE).await,
        ),
    };
    drop((message, permit));
    (size, done)
}

/// What the fetcher hands the deliverer.
enum Fetched {
    Message(RawMessage),
    /// The source would not hand it out (its words).
    Failed(String),
    /// Larger than max-message-size (why).
    TooLarge(String),
}

/// What a batch takes from the queue's budget while it is fetched: its announced bytes,
/// at most the whole budget.
fn reservation(batch: &[ListedMessage]) -> u32 {
    let announced: u64 = batch.iter().map(|m| m.size).sum();
    u32::try_from(announced.min(u64::from(QUEUE_BYTES))).unwrap_or(QUEUE_BYTES)
}

/// Splits `messages` into fetch batches bounded by count and announced size.
fn batches(messages: &[ListedMessage]) -> impl Iterator<Item = &[ListedMessage]> {
    let mut rest = messages;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0u64;
        let mut n = 0;
        while n < rest.len() && n < BATCH_MESSAGES {
            let size = rest[n].size;
            if n > 0 && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(sizes: &[u64]) -> Vec<ListedMessage> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ListedMessage {
                key: MessageKey::Uid(u32::try_from(i).unwrap_or(0) + 1),
                size,
                received: None,
            })
            .collect()
    }

    #[test]
    fn batches_respect_count_and_bytes_but_always_progress() {
        let many = listed(&[10; 200]);
        let sizes: Vec<usize> = batches(&many).map(<[_]>::len).collect();
        assert_eq!(sizes, [64, 64, 64, 8]);
        let big = listed(&[5_000_000, 500_000, 500_000, 300_000]);
        let sizes: Vec<usize> = batches(&big).map(<[_]>::len).collect();
        assert_eq!(sizes, [1, 2, 1]);
        assert_eq!(batches(&[]).count(), 0);
    }
}
