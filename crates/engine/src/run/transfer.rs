//! Fetching and delivering overlap: a fetcher and a deliverer joined by a byte-bounded
//! queue; each message is recorded in the ledger before and after its delivery.

use mailferry_core::{Classify, ErrorClass, ListedMessage, MessageKey, RawMessage, Source};
use mailferry_store::{Attempt, FetchRetry, LedgerKey, MessageFacts, Store};
use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::report::{AccountReport, ErrorReport, MessageProblem};
use mailferry_core::{Destination, Lookup};

use super::Run;
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
        let fetched = source.fetch(&keys).await.map_err(|e| Stop::source(&e))?;
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
                    inflight.push(one(key, message, permit, destination, destination_name, store));
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
    destination: &D,
    destination_name: &str,
    store: &Store,
) -> (u64, Done) {
    let (size, done) = match &message {
        Fetched::Message(m) => (
            m.len() as u64,
            deliver_one(&key, m, destination, destination_name, store).await,
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

/// What became of one message.
pub(super) enum Outcome {
    Delivered,
    /// An interrupted delivery had arrived after all.
    Found,
    Duplicate,
    Deferred(MessageProblem),
    /// The destination answered "not now" (4xx) to this message.
    DestinationDeferred(MessageProblem),
    Refused(MessageProblem),
    /// The destination may hold it; the attempt stays open until it can tell.
    Pending(MessageProblem),
}

/// One message's outcome, and whether this was a second attempt after an interruption.
struct Done {
    outcome: Result<Outcome, Stop>,
    resent: bool,
}

/// Adds one message's outcome to the report; a run-ending error is passed on.
fn tally(done: Done, report: &mut AccountReport) -> Result<(), Stop> {
    if done.resent {
        report.resent += 1;
    }
    match done.outcome {
        Ok(Outcome::Delivered) => report.counts.delivered += 1,
        Ok(Outcome::Found) => {
            report.found += 1;
            report.counts.skipped += 1;
        }
        Ok(Outcome::Duplicate) => report.counts.skipped += 1,
        Ok(Outcome::Deferred(p) | Outcome::DestinationDeferred(p) | Outcome::Pending(p)) => {
            report.counts.failed += 1;
            report.deferred.push(p);
        }
        Ok(Outcome::Refused(p)) => {
            report.counts.failed += 1;
            report.refused.push(p);
        }
        Err(stop) => {
            if matches!(stop, Stop::Destination(_)) {
                report.counts.failed += 1;
            }
            return Err(stop);
        }
    }
    Ok(())
}

/// When a message the source will not hand out is refused: after 6 tries over at least a
/// day. Exchange holds a new message back for about 30 minutes, some for days
/// (postalsys/emailengine #53, MailKit #1615), so a few tries at the poll interval are
/// far too few; between tries the message rests for a growing pause (10 minutes,
/// doubling, at most 6 hours), so that it costs no fetch at every poll meanwhile.
const FETCH_RETRY: FetchRetry = FetchRetry {
    tries: 6,
    for_at_least: 24 * 3600,
};

/// What the fetcher hands the deliverer.
enum Fetched {
    Message(RawMessage),
    /// The source would not hand it out (its words).
    Failed(String),
    /// Larger than max-message-size (why).
    TooLarge(String),
}

/// A message the source would not hand out: deferred, and once `rule` says so refused
/// with the server's words. The others go on.
async fn fetch_failed(
    key: &LedgerKey,
    reason: &str,
    destination_name: &str,
    store: &Store,
    rule: FetchRetry,
) -> Done {
    let outcome = match store
        .record_fetch_failure(
            key,
            destination_name,
            reason,
            rule,
            mailferry_core::unix_now(),
        )
        .await
    {
        Ok(refused) => {
            let p = MessageProblem {
                folder: key.folder.clone(),
                key: key.key.clone(),
                message_id: None,
                reason: if refused && rule == FetchRetry::AT_ONCE {
                    reason.to_owned()
                } else if refused {
                    format!(
                        "the source would not hand it out at {} tries over a day or more: {reason}; it stays at the source (mailferry retry brings it back)",
                        rule.tries
                    )
                } else {
                    format!(
                        "the source would not hand it out (tried again after a pause): {reason}"
                    )
                },
            };
            warn!(key = %key.key, reason, refused, "cannot fetch this message; carrying on with the others");
            Ok(if refused {
                Outcome::Refused(p)
            } else {
                Outcome::Deferred(p)
            })
        }
        Err(e) => Err(Stop::Store(e)),
    };
    Done {
        outcome,
        resent: false,
    }
}

/// Records the attempt, delivers, records the outcome.
async fn deliver_one<D: Destination>(
    key: &LedgerKey,
    message: &RawMessage,
    destination: &D,
    destination_name: &str,
    store: &Store,
) -> Done {
    let mut resent = false;
    let outcome = deliver_and_record(
        key,
        message,
        destination,
        destination_name,
        store,
        &mut resent,
    )
    .await;
    Done { outcome, resent }
}

async fn deliver_and_record<D: Destination>(
    key: &LedgerKey,
    message: &RawMessage,
    destination: &D,
    destination_name: &str,
    store: &Store,
    resent: &mut bool,
) -> Result<Outcome, Stop> {
    let message_id = message.message_id();
    let sha256 = message.sha256_hex();
    let facts = MessageFacts {
        message_id: message_id.as_deref(),
        sha256: &sha256,
        size: message.len(),
        destination: destination_name,
    };
    if let Some(done) = begin(key, message, &facts, destination, store, resent).await? {
        return Ok(done);
    }
    if message.is_blank() {
        // One rule for every source and destination: SMTP cannot carry an empty message,
        // and the Gmail API refuses one.
        let p = MessageProblem {
            folder: key.folder.clone(),
            key: key.key.clone(),
            message_id,
            reason: "the message is empty (no header, no body): there is nothing to deliver; it stays at the source".into(),
        };
        warn!(key = %key.key, "the message is empty; recorded as refused");
        store
            .mark_refused(key, &p.reason)
            .await
            .map_err(Stop::Store)?;
        return Ok(Outcome::Refused(p));
    }
    match destination.deliver(message, &key.folder).await {
        Ok(receipt) => {
            store
                .mark_delivered(key, &receipt.id)
                .await
                .map_err(Stop::Store)?;
            debug!(key = %key.key, reply = %receipt.id, "delivered");
            Ok(Outcome::Delivered)
        }
        Err(e) if e.class().is_per_message() => refused(key, &e, message_id, store).await,
        Err(e) if e.may_have_arrived() && destination.can_look_up() => {
            // The destination may hold it and can tell later: the attempt stays open, the
            // others carry on.
            warn!(key = %key.key, cause = %ErrorReport::from_error(&e).message, "the delivery is unconfirmed; it is looked up before any new attempt");
            Ok(Outcome::Pending(pending(key, message_id)))
        }
        Err(e) => {
            // The destination itself failed. Unless the data may have gone out, the message
            // is known undelivered: record that, so the next run does not count a re-send.
            if !e.may_have_arrived() {
                let reason = ErrorReport::from_error(&e).message;
                store
                    .mark_deferred(key, &reason)
                    .await
                    .map_err(Stop::Store)?;
            }
            Err(Stop::destination(&e))
        }
    }
}

/// Records the attempt before anything is sent. `Some` when the message needs no
/// delivery: a duplicate, settled already, or an interrupted delivery that the destination
/// says arrived (or cannot tell yet). An interrupted one that did not arrive is renewed
/// and sent again (`resent`).
async fn begin<D: Destination>(
    key: &LedgerKey,
    message: &RawMessage,
    facts: &MessageFacts<'_>,
    destination: &D,
    store: &Store,
    resent: &mut bool,
) -> Result<Option<Outcome>, Stop> {
    let message_id = facts.message_id.map(str::to_owned);
    match store.begin_attempt(key, facts).await.map_err(Stop::Store)? {
        Attempt::Duplicate => {
            debug!(key = %key.key, "already delivered under an earlier UIDVALIDITY");
            return Ok(Some(Outcome::Duplicate));
        }
        Attempt::Settled => {
            debug!(key = %key.key, "settled already; not delivered again");
            return Ok(Some(Outcome::Duplicate));
        }
        Attempt::Interrupted { since } => {
            // Did it arrive before the interruption? A destination that can tell (the
            // Gmail API, by Message-ID) makes this exactly once; SMTP cannot, so the
            // message is sent again (at least once) and counted.
            match destination
                .lookup(message, &key.folder, since)
                .await
                .map_err(|e| Stop::destination(&e))?
            {
                Lookup::Found(id) => {
                    info!(key = %key.key, id, "an interrupted delivery had arrived; not sending it again");
                    store.mark_delivered(key, &id).await.map_err(Stop::Store)?;
                    return Ok(Some(Outcome::Found));
                }
                Lookup::TooEarly => {
                    info!(key = %key.key, "an unconfirmed delivery is not found yet, but it is too recent for Gmail's search to be sure; looking again at a later run");
                    return Ok(Some(Outcome::Pending(pending(key, message_id))));
                }
                Lookup::Absent => {}
            }
            warn!(
                key = %key.key,
                "an earlier delivery of this message was interrupted; sending it again"
            );
            store.renew_attempt(key).await.map_err(Stop::Store)?;
            *resent = true;
        }
        Attempt::Fresh => {}
    }
    Ok(None)
}

/// The destination refused this message (not the run): deferred, doubtful (rests and is
/// retried over a day; the streak stops the run when the others get the same answer), or
/// refused for good. It stays at the source either way.
async fn refused<E: std::error::Error + Classify>(
    key: &LedgerKey,
    e: &E,
    message_id: Option<String>,
    store: &Store,
) -> Result<Outcome, Stop> {
    let p = MessageProblem {
        folder: key.folder.clone(),
        key: key.key.clone(),
        message_id,
        reason: ErrorReport::from_error(e).message,
    };
    if e.class() == ErrorClass::Doubtful {
        // Maybe the destination's answer to every message: rest and retry it over a
        // day; the streak stops the run when the others get the same answer.
        let refused = store
            .record_doubtful_refusal(key, &p.reason, FETCH_RETRY, mailferry_core::unix_now())
            .await
            .map_err(Stop::Store)?;
        warn!(key = %key.key, reason = %p.reason, refused, "the destination refused this message; it stays at the source");
        return Ok(if refused {
            Outcome::Refused(MessageProblem {
                reason: format!(
                    "refused at {} tries over a day or more: {}; it stays at the source (mailferry retry brings it back)",
                    FETCH_RETRY.tries, p.reason
                ),
                ..p
            })
        } else {
            Outcome::DestinationDeferred(p)
        });
    }
    if e.class() == ErrorClass::Deferred {
        warn!(key = %key.key, reason = %p.reason, "delivery deferred; will retry next run");
        store
            .mark_deferred(key, &p.reason)
            .await
            .map_err(Stop::Store)?;
        Ok(Outcome::DestinationDeferred(p))
    } else {
        warn!(key = %key.key, reason = %p.reason, "delivery refused; the message stays at the source");
        store
            .mark_refused(key, &p.reason)
            .await
            .map_err(Stop::Store)?;
        Ok(Outcome::Refused(p))
    }
}

/// The report line of a delivery left open until the destination can tell.
fn pending(key: &LedgerKey, message_id: Option<String>) -> MessageProblem {
    MessageProblem {
        folder: key.folder.clone(),
        key: key.key.clone(),
        message_id,
        reason:
            "the destination may have stored it; it is looked up (not sent again) at a later run"
                .into(),
    }
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
