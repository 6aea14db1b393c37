//! Fetching and delivering overlap: a fetcher and a deliverer joined by a byte-bounded
//! queue; each message is recorded in the ledger before and after its delivery.

use mailferry_core::{ListedMessage, MessageKey, RawMessage, Source};
use mailferry_store::{FetchRetry, LedgerKey, LedgerState, Store};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::report::AccountReport;
use mailferry_core::Destination;

use super::Run;
use super::inflight::Inflight;
use super::lazy::WhileDelivering;
use super::record::{
    Accepted, Done, FETCH_RETRY, Outcome, Prepared, deliver_one, fetch_failed, record_accepted,
    tally,
};
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
    let lazy = WhileDelivering::new(source.lazy_reads());
    let fetcher = fetch_all(run, source, too_large, new, budget, tx, incomplete);
    // Deliveries run up to the destination's concurrency (SMTP: one at a time on its one
    // connection; the Gmail API: several, paced by its rate limiter).
    let tracker = tokio::sync::Mutex::new(
        super::progress::Tracker::start(store, &account.name, folder, planned).await,
    );
    let tracker = &tracker;
    let deliverer = deliver_all(run, folder, uidvalidity, rx, tracker, report, &lazy);
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
    lazy: &WhileDelivering,
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
    let mut inflight = Inflight::new(concurrency);
    let mut open = true;
    let mut stop: Option<Stop> = None;
    let mut streak = Streak::default();
    loop {
        lazy.delivering(!inflight.is_empty()).await;
        let take = open && stop.is_none() && !cancel.is_cancelled() && inflight.len() < concurrency;
        tokio::select! {
            Some((size, done)) = inflight.next(), if !inflight.is_empty() => {
                let (size, mut done): (u64, Done) = (size, done);
                if let Ok(Outcome::Accepted(accepted)) = &done.outcome {
                    // Recorded at once (here only with one delivery at a time: nothing
                    // else is in flight to hold the ledger's connection meanwhile); the
                    // next message's attempt goes in the same transaction when that message
                    // is waiting already.
                    let more = open && stop.is_none() && !cancel.is_cancelled();
                    let next = if more { rx.try_recv().ok() } else { None };
                    let (outcome, next) = record(accepted, next, run, folder, uidvalidity, sha256_rows).await;
                    done.outcome = outcome;
                    if let Some((key, message, permit, begun)) = next {
                        report.counts.fetched += 1;
                        inflight.push(one(key, message, permit, (destination, destination_name), store, (sha256_rows, begun)));
                    }
                }
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
                    let key = ledger_key(account, folder, uidvalidity, key);
                    inflight.push(one(key, message, permit, (destination, destination_name), store, (sha256_rows, None)));
                }
                None => open = false,
            },
            else => break,
        }
    }
    stop.map_or(Ok(()), Err)
}

/// A queued message whose attempt may have begun: its first step's result.
type Next = (
    LedgerKey,
    Fetched,
    OwnedSemaphorePermit,
    Option<(Prepared, Option<LedgerState>)>,
);

/// Records an accepted delivery, with the attempt of `next` (the message waiting in the
/// queue, if any) in the same transaction; returns the outcome, and `next` to deliver.
async fn record<D: Destination>(
    accepted: &Accepted,
    next: Option<Queued>,
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    sha256_rows: bool,
) -> (Result<Outcome, Stop>, Option<Next>) {
    let Some((key, message, permit)) = next else {
        let recorded = record_accepted(accepted, None, run.store).await;
        return (recorded.map(|_| Outcome::Delivered), None);
    };
    let key = ledger_key(run.account, folder, uidvalidity, key);
    let (recorded, prepared) = match &message {
        Fetched::Message(m) => {
            let prepared = Prepared::of(m, sha256_rows);
            let facts = prepared.facts(m.len(), run.destination_name);
            let recorded = record_accepted(accepted, Some((&key, &facts)), run.store).await;
            (recorded, Some(prepared))
        }
        // A fetch failure has no attempt: recorded alone.
        Fetched::Failed(_) | Fetched::TooLarge(_) => {
            (record_accepted(accepted, None, run.store).await, None)
        }
    };
    match recorded {
        Ok(inserted) => {
            let begun = prepared.zip(inserted);
            (Ok(Outcome::Delivered), Some((key, message, permit, begun)))
        }
        // The transaction failed as a whole: nothing of `next` was written; the run stops,
        // and it waits at the source for the next one.
        Err(stop) => (Err(stop), None),
    }
}

/// What the fetcher queues for the deliverer.
type Queued = (MessageKey, Fetched, OwnedSemaphorePermit);

fn ledger_key(
    account: &mailferry_config::AccountConfig,
    folder: &str,
    uidvalidity: u32,
    key: MessageKey,
) -> LedgerKey {
    LedgerKey {
        account: account.name.clone(),
        folder: folder.to_owned(),
        uidvalidity,
        key,
    }
}

/// One queued message's outcome, recorded: delivered (or not), or its fetch failure.
/// `begun`: the first step of its attempt ran already, with this result.
async fn one<D: Destination>(
    key: LedgerKey,
    message: Fetched,
    permit: OwnedSemaphorePermit,
    (destination, destination_name): (&D, &str),
    store: &Store,
    (sha256_rows, begun): (bool, Option<(Prepared, Option<LedgerState>)>),
) -> (u64, Done) {
    let (size, done) = match &message {
        Fetched::Message(m) => {
            let (prepared, inserted) = match begun {
                Some((prepared, inserted)) => (prepared, Some(inserted)),
                None => (Prepared::of(m, sha256_rows), None),
            };
            // One at a time: nothing else in flight, so the deliverer can record it,
            // with the next message's attempt.
            let defer_record = destination.concurrency() <= 1;
            let done = deliver_one(
                &key,
                m,
                (destination, destination_name),
                store,
                (&prepared, inserted, defer_record),
            )
            .await;
            (m.len() as u64, done)
        }
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
