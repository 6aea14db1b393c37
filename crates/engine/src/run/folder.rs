//! One folder: list, apply first-run, fetch and deliver what is new, settle at the source.

use mailferry_config::{AccountConfig, AfterDelivery, FirstRun};
use mailferry_core::{ListedMessage, MessageKey, Source, SourceAction};

use tracing::{debug, info, warn};

use crate::report::AccountReport;
use mailferry_core::Destination;

use super::Run;
use super::transfer::transfer;
use crate::report::Stop;

pub(crate) async fn gather_folder<S: Source, D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    source: &mut S,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    let mut state = list(run, folder, source).await?;
    let uidvalidity = state.uidvalidity;
    let uidnext = state.uidnext;
    first_run(run, folder, &mut state).await?;
    let present: Vec<MessageKey> = state.messages.iter().map(|m| m.key.clone()).collect();
    let complete = state.complete;
    let new = newest_first_when_long(unsettled(run, folder, uidvalidity, state.messages).await?);
    report.new += new.len() as u64;
    if run.opts.dry_run {
        return preview(folder, &new, source, report).await;
    }
    if !new.is_empty() {
        run.observer.planned(
            &run.account.name,
            folder,
            new.len(),
            new.iter().map(|m| m.size).sum(),
        );
        let complete = transfer(run, folder, uidvalidity, new, source, report).await?;
        if !complete && run.until.is_some_and(|u| tokio::time::Instant::now() >= u) {
            // Stopped at the slice: the service runs the account again at once.
            report.more = true;
        }
        if !complete || run.cancel.is_cancelled() {
            // Something listed got no outcome this run (stopped, or left for the next
            // one): the next listing must be complete.
            return Ok(());
        }
    }
    if !run.cancel.is_cancelled() {
        run.store
            .save_listed_up_to(&run.account.name, folder, uidvalidity, uidnext)
            .await
            .map_err(Stop::Store)?;
    }
    if complete && !run.cancel.is_cancelled() {
        note_listing(run, folder, uidvalidity, &present).await?;
    }
    settle(run, folder, uidvalidity, present, source, report).await
}

/// Opens `folder` and lists it: after a complete run with after-delivery = keep, only
/// what can be new (UIDs from the last UIDNEXT on, and the messages still unsettled: an
/// unchanged folder costs one EXAMINE); under other policies everything, since what they
/// settle is what the folder still holds. A key listed twice is kept once.
async fn list<S: Source, D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    source: &mut S,
) -> Result<mailferry_core::FolderState, Stop> {
    let Run {
        account,
        store,
        opts,
        ..
    } = *run;
    let from = if opts.dry_run || account.after_delivery != AfterDelivery::Keep {
        None
    } else {
        match store
            .listed_up_to(&account.name, folder)
            .await
            .map_err(Stop::Store)?
        {
            Some((uidvalidity, uidnext)) => Some(mailferry_core::ListFrom {
                uidvalidity,
                uidnext,
                also: store
                    .unsettled_keys(&account.name, folder, uidvalidity)
                    .await
                    .map_err(Stop::Store)?
                    .into_iter()
                    .collect(),
            }),
            None => None,
        }
    };
    let mut state = match &from {
        Some(f) => source.open_from(folder, f).await,
        None => source.open(folder).await,
    }
    .map_err(|e| Stop::source(&e))?;
    if !opts.dry_run
        && let Some(memo) = source.memo()
    {
        store
            .save_memo(&account.name, &memo)
            .await
            .map_err(Stop::Store)?;
    }
    // A key listed twice is fetched and delivered once.
    let mut seen = std::collections::HashSet::new();
    let listed = state.messages.len();
    state.messages.retain(|m| seen.insert(m.key.clone()));
    if state.messages.len() < listed {
        warn!(
            folder,
            dropped = listed - state.messages.len(),
            "the server listed a message more than once; each is delivered once"
        );
    }
    Ok(state)
}

/// Applies `first-run` to what a folder holds when it is first seen (or seen under a new
/// UIDVALIDITY): what it excludes is recorded as seen, not delivered. A dry run records
/// nothing but leaves out of `state` what the first run would skip.
async fn first_run<D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    state: &mut mailferry_core::FolderState,
) -> Result<(), Stop> {
    let Run {
        account,
        store,
        opts,
        ..
    } = *run;
    let uidvalidity = state.uidvalidity;
    let sight = if opts.dry_run {
        None
    } else {
        Some(
            store
                .folder_sight(&account.name, folder)
                .await
                .map_err(Stop::Store)?,
        )
    };
    let first_look = if opts.dry_run {
        store
            .folder_sight(&account.name, folder)
            .await
            .map_err(Stop::Store)?
            .is_none()
    } else {
        false
    };
    match sight {
        // Dry run: nothing is recorded, but first-run is applied to what is shown.
        None => {
            if first_look {
                state.messages.retain(|m| match account.first_run {
                    FirstRun::All => true,
                    FirstRun::NewOnly => false,
                    FirstRun::Since(t) => m.received.is_none_or(|r| r >= t),
                });
            }
        }
        Some(None) => {
            // The folder's first run: first-run decides what of its present content to skip.
            let skipped: Vec<MessageKey> = state
                .messages
                .iter()
                .filter(|m| match account.first_run {
                    FirstRun::All => false,
                    FirstRun::NewOnly => true,
                    FirstRun::Since(t) => m.received.is_some_and(|r| r < t),
                })
                .map(|m| m.key.clone())
                .collect();
            if !skipped.is_empty() {
                info!(
                    folder,
                    skipped = skipped.len(),
                    "first run: recording what is there without delivering it (first-run)"
                );
            }
            store
                .record_first_sight(&account.name, folder, uidvalidity, &skipped)
                .await
                .map_err(Stop::Store)?;
        }
        Some(Some((since, last))) if last != Some(uidvalidity) => {
            // A new UIDVALIDITY (Outlook.com resets them): every UID is new. What first-run
            // excluded stays excluded, by arrival date: for new-only what had arrived by
            // the folder's first listing, for since:DATE what arrived before DATE. (Mail
            // delivered before is recognised by its content; new mail is delivered.) A
            // message without an arrival date counts as excluded: nothing excluded may
            // slip through, and with after-delivery = delete, be removed at the source.
            let skipped = still_excluded(&state.messages, account.first_run, since, last);
            if let Some(old) = last {
                warn!(
                    folder,
                    old,
                    new = uidvalidity,
                    excluded = skipped.len(),
                    "the folder's UIDVALIDITY changed: every message looks new to IMAP; what first-run excluded stays excluded, what was delivered is recognised by its content"
                );
            }
            store
                .record_first_sight(&account.name, folder, uidvalidity, &skipped)
                .await
                .map_err(Stop::Store)?;
        }
        Some(Some(_)) => {}
    }
    Ok(())
}

/// Under a new UIDVALIDITY, what first-run excluded stays excluded, by arrival date: for
/// new-only what had arrived by the folder's first listing (`since`), for since:DATE what
/// arrived before DATE. A message without an arrival date counts as excluded. Nothing,
/// when no UIDVALIDITY was recorded before (`last`) or first-run is all.
fn still_excluded(
    messages: &[ListedMessage],
    first_run: FirstRun,
    since: i64,
    last: Option<u32>,
) -> Vec<MessageKey> {
    let cutoff = match (last, first_run) {
        (None, _) | (_, FirstRun::All) => None,
        (Some(_), FirstRun::NewOnly) => Some((since, true)),
        (Some(_), FirstRun::Since(t)) => Some((t, false)),
    };
    match cutoff {
        None => Vec::new(),
        Some((t, inclusive)) => messages
            .iter()
            .filter(|m| m.received.is_none_or(|r| r < t || (inclusive && r == t)))
            .map(|m| m.key.clone())
            .collect(),
    }
}

/// What of the listing still needs delivering: not settled in the ledger, and not resting
/// (what the source would not hand out lately waits, its pause growing with each failure).
async fn unsettled<D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    messages: Vec<ListedMessage>,
) -> Result<Vec<ListedMessage>, Stop> {
    let Run {
        account,
        store,
        opts,
        ..
    } = *run;
    let settled = store
        .settled_keys(&account.name, folder, uidvalidity)
        .await
        .map_err(Stop::Store)?;
    // What the source would not hand out lately rests (its pause grows with each failure).
    let resting = if opts.dry_run {
        std::collections::HashSet::new()
    } else {
        store
            .resting_keys(
                &account.name,
                folder,
                uidvalidity,
                mailferry_core::unix_now(),
            )
            .await
            .map_err(Stop::Store)?
    };
    let new: Vec<ListedMessage> = messages
        .into_iter()
        .filter(|m| !settled.contains(&m.key) && !resting.contains(&m.key))
        .collect();
    if !resting.is_empty() {
        debug!(
            folder,
            resting = resting.len(),
            "messages the source would not hand out rest until later"
        );
    }
    debug!(folder, new = new.len(), settled = settled.len(), "listed");
    Ok(new)
}

/// A dry run's view of `folder`: how many are new, and the first few's headers.
async fn preview<S: Source>(
    folder: &str,
    new: &[ListedMessage],
    source: &mut S,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    const PREVIEW: usize = 5;
    let keys: Vec<MessageKey> = new.iter().take(PREVIEW).map(|m| m.key.clone()).collect();
    let first = source
        .headers(&keys)
        .await
        .map_err(|e| Stop::source(&e))?
        .into_iter()
        .map(|(_, h)| h.summary())
        .collect();
    report.preview.push(crate::report::FolderPreview {
        folder: folder.to_owned(),
        count: new.len() as u64,
        first,
    });
    Ok(())
}

/// Applies after-delivery to what the ledger says is delivered (POP3 removes it at QUIT,
/// not before).
async fn settle<S: Source, D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    present: Vec<MessageKey>,
    source: &mut S,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    let Run { account, store, .. } = *run;
    if let Some(action) = settle_action(account) {
        // Only what the ledger says is delivered; POP3 removes it at QUIT, not before.
        let delivered = store
            .delivered_keys(&account.name, folder, uidvalidity)
            .await
            .map_err(Stop::Store)?;
        let done: Vec<MessageKey> = present
            .into_iter()
            .filter(|k| delivered.contains(k))
            .collect();
        if !done.is_empty() && !run.cancel.is_cancelled() {
            source
                .settle(folder, uidvalidity, &done, &action)
                .await
                .map_err(|e| Stop::source(&e))?;
            match action {
                SourceAction::Delete => report.deleted += done.len() as u64,
                SourceAction::Move(_) => report.moved += done.len() as u64,
                SourceAction::MarkSeen => {}
            }
        }
    }
    Ok(())
}

/// A complete listing tells the ledger what the source no longer holds (the state stays
/// bounded: mailferry_store's prune.rs).
async fn note_listing<D: Destination>(
    run: &Run<'_, D>,
    folder: &str,
    uidvalidity: u32,
    present: &[MessageKey],
) -> Result<(), Stop> {
    let present: std::collections::HashSet<MessageKey> = present.iter().cloned().collect();
    let pruned = run
        .store
        .note_listing(
            &run.account.name,
            folder,
            uidvalidity,
            &present,
            mailferry_core::unix_now(),
        )
        .await
        .map_err(Stop::Store)?;
    if pruned.marked > 0 || pruned.dropped > 0 {
        debug!(
            folder,
            gone = pruned.marked,
            dropped = pruned.dropped,
            "messages gone from the source noted in the ledger"
        );
    }
    Ok(())
}

/// More new messages than this make a backlog (a first import, a long absence).
pub(crate) const BACKLOG: usize = 100;

/// A few new messages go in the order they arrived. A backlog goes newest first: the
/// service takes a backlog in slices ([`super::RunOptions::slice`]) and lists again
/// between them, so mail that arrives during a long import is the newest of the next
/// listing and is delivered first, not after hours of old mail; and a person watching a
/// long import sees this month's mail before last decade's.
fn newest_first_when_long(mut new: Vec<ListedMessage>) -> Vec<ListedMessage> {
    if new.len() > BACKLOG {
        // IMAP lists by UID, POP3 in maildrop order: both oldest first.
        new.sort_by(|a, b| match (&a.key, &b.key) {
            (MessageKey::Uid(x), MessageKey::Uid(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
        new.reverse();
    }
    new
}

/// What `after-delivery` asks the source to do with a delivered message.
pub(crate) fn settle_action(account: &AccountConfig) -> Option<SourceAction> {
    match &account.after_delivery {
        AfterDelivery::Keep => None,
        AfterDelivery::MarkSeen => Some(SourceAction::MarkSeen),
        AfterDelivery::Move(to) => Some(SourceAction::Move(to.clone())),
        AfterDelivery::Delete => Some(SourceAction::Delete),
    }
}
