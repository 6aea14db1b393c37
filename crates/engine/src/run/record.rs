//! One message, between the queue and the report: the ledger's attempt before anything
//! is sent, the delivery, the outcome recorded after it, and what a refusal or a fetch
//! failure means for the message.

use mailferry_core::{Classify, ErrorClass, RawMessage};
use mailferry_store::{Attempt, FetchRetry, LedgerKey, LedgerState, MessageFacts, Store};
use tracing::{debug, info, warn};

use crate::report::{AccountReport, ErrorReport, MessageProblem, Stop};
use mailferry_core::{Destination, Lookup};

/// A delivery the destination accepted, not recorded yet: the deliverer records it at
/// once, with the next message's attempt when that one is waiting ([`record_accepted`]).
pub(super) struct Accepted {
    pub(super) key: LedgerKey,
    /// The destination's id for it (its reply).
    pub(super) id: String,
}

/// What became of one message.
pub(super) enum Outcome {
    /// Accepted and recorded.
    Delivered,
    /// Accepted, to be recorded (turns into `Delivered` once it is).
    Accepted(Accepted),
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
pub(super) struct Done {
    pub(super) outcome: Result<Outcome, Stop>,
    pub(super) resent: bool,
}

/// Adds one message's outcome to the report; a run-ending error is passed on.
pub(super) fn tally(done: Done, report: &mut AccountReport) -> Result<(), Stop> {
    if done.resent {
        report.resent += 1;
    }
    match done.outcome {
        // The deliverer records an accepted delivery before it is counted: `Accepted`
        // does not get here, and would count as what the destination said it was.
        Ok(Outcome::Delivered | Outcome::Accepted(_)) => report.counts.delivered += 1,
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
pub(super) const FETCH_RETRY: FetchRetry = FetchRetry {
    tries: 6,
    for_at_least: 24 * 3600,
};

/// A message the source would not hand out: deferred, and once `rule` says so refused
/// with the server's words. The others go on.
pub(super) async fn fetch_failed(
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

/// What the ledger records of a message with its attempt, worked out once.
pub(super) struct Prepared {
    message_id: Option<String>,
    content_hash: String,
    sha256: Option<String>,
}

impl Prepared {
    /// `sha256_rows`: the folder holds fingerprints written before BLAKE3 under another
    /// UIDVALIDITY ([`Store::has_sha256_rows`]), so the SHA-256 is compared too.
    pub(super) fn of(message: &RawMessage, sha256_rows: bool) -> Self {
        Self {
            message_id: message.message_id(),
            content_hash: message.content_hash(),
            sha256: sha256_rows.then(|| message.sha256_hex()),
        }
    }

    pub(super) fn facts<'a>(&'a self, size: usize, destination: &'a str) -> MessageFacts<'a> {
        MessageFacts {
            message_id: self.message_id.as_deref(),
            content_hash: &self.content_hash,
            sha256: self.sha256.as_deref(),
            size,
            destination,
        }
    }
}

/// Records the attempt (unless `inserted` says its first step ran already, with
/// that result), delivers, records the outcome. With `defer_record` an accepted delivery
/// comes back as [`Outcome::Accepted`] for the deliverer to record ([`record_accepted`]):
/// only where nothing else is in flight, which could hold the ledger's connection.
pub(super) async fn deliver_one<D: Destination>(
    key: &LedgerKey,
    message: &RawMessage,
    (destination, destination_name): (&D, &str),
    store: &Store,
    (prepared, inserted, defer_record): (&Prepared, Option<Option<LedgerState>>, bool),
) -> Done {
    let mut resent = false;
    let facts = prepared.facts(message.len(), destination_name);
    let outcome = deliver_and_record(
        key,
        message,
        destination,
        store,
        (&facts, inserted, defer_record),
        &mut resent,
    )
    .await;
    Done { outcome, resent }
}

/// Records `accepted` as delivered; with `next`'s attempt in the same transaction when
/// given, whose insert result comes back (see `Store::mark_delivered_and_begin`).
pub(super) async fn record_accepted(
    accepted: &Accepted,
    next: Option<(&LedgerKey, &MessageFacts<'_>)>,
    store: &Store,
) -> Result<Option<Option<LedgerState>>, Stop> {
    let inserted = match next {
        Some((key, facts)) => Some(
            store
                .mark_delivered_and_begin(&accepted.key, &accepted.id, key, facts)
                .await
                .map_err(Stop::Store)?,
        ),
        None => {
            store
                .mark_delivered(&accepted.key, &accepted.id)
                .await
                .map_err(Stop::Store)?;
            None
        }
    };
    debug!(key = %accepted.key.key, reply = %accepted.id, "delivered");
    Ok(inserted)
}

async fn deliver_and_record<D: Destination>(
    key: &LedgerKey,
    message: &RawMessage,
    destination: &D,
    store: &Store,
    (facts, inserted, defer_record): (&MessageFacts<'_>, Option<Option<LedgerState>>, bool),
    resent: &mut bool,
) -> Result<Outcome, Stop> {
    let message_id = facts.message_id.map(str::to_owned);
    if let Some(done) = begin(key, message, (facts, inserted), destination, store, resent).await? {
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
            let accepted = Accepted {
                key: key.clone(),
                id: receipt.id,
            };
            if defer_record {
                return Ok(Outcome::Accepted(accepted));
            }
            record_accepted(&accepted, None, store).await?;
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
    (facts, inserted): (&MessageFacts<'_>, Option<Option<LedgerState>>),
    destination: &D,
    store: &Store,
    resent: &mut bool,
) -> Result<Option<Outcome>, Stop> {
    let message_id = facts.message_id.map(str::to_owned);
    let attempt = match inserted {
        Some(inserted) => store.continue_attempt(key, facts, inserted).await,
        None => store.begin_attempt(key, facts).await,
    };
    match attempt.map_err(Stop::Store)? {
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
