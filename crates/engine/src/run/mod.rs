//! `run_once`: every selected account, once, side by side.

use mailferry_config::{AccountConfig, Config};
use mailferry_core::{ErrorClass, Source};
use mailferry_store::Store;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::deliver::{AnyDestination, DeliveryError};
use crate::report::AccountReport;
use crate::source::AnySource;
use crate::tokens::TokenKeeper;
use mailferry_core::Destination;

mod folder;
mod inflight;
mod lazy;
mod progress;
mod record;
mod streak;
mod transfer;

pub(crate) use crate::report::Stop;
pub(crate) use folder::{gather_folder, settle_action};

/// How often one run opens a new session after the previous one died mid-run.
const MAX_RECONNECTS: u32 = 5;

/// A pause the server asks for is waited out within the run up to this long; a longer one
/// ends the run, and the schedule waits it out (the account lock is not held meanwhile).
const MAX_PAUSE_IN_RUN: std::time::Duration = std::time::Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only this account (by name); all accounts when `None`.
    pub account: Option<String>,
    /// List what is new, fetch and deliver nothing, record nothing.
    pub dry_run: bool,
    /// Take no new batch after this long: the rest is left for the next run, which the
    /// service starts at once (new mail that arrived meanwhile goes first). The service
    /// uses `min-interval`, so a long first import logs in no more often than a poll
    /// would; `None` (`once`) runs until everything is done.
    pub slice: Option<std::time::Duration>,
}

/// Progress callbacks, for a progress bar. Called from the accounts' tasks.
pub trait Observer: Send + Sync {
    /// `messages` new messages totalling `bytes` are about to be fetched from `folder`.
    fn planned(&self, account: &str, folder: &str, messages: usize, bytes: u64) {
        let _ = (account, folder, messages, bytes);
    }
    /// One message of `bytes` is done with (delivered, skipped or failed).
    fn done(&self, account: &str, bytes: u64) {
        let _ = (account, bytes);
    }
}

impl Observer for () {}

/// Runs every account of `config` (or the one named in `opts`) once, concurrently, and
/// returns one report per account in configuration order. Stops between messages when
/// `cancel` fires.
pub async fn run_once(
    config: &Config,
    store: &Store,
    tokens: &TokenKeeper,
    opts: &RunOptions,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Vec<AccountReport> {
    // Disabled accounts never run, not even by name.
    let accounts = config
        .accounts
        .iter()
        .filter(|a| a.enabled && opts.account.as_ref().is_none_or(|n| *n == a.name));
    let runs = accounts.map(|account| {
        let span = info_span!("account", account = %account.name);
        run_account(config, account, store, tokens, opts, observer, cancel).instrument(span)
    });
    futures_util::future::join_all(runs).await
}

async fn run_account(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
    tokens: &TokenKeeper,
    opts: &RunOptions,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> AccountReport {
    let mut report = AccountReport {
        account: account.name.clone(),
        ..AccountReport::default()
    };
    let started = std::time::Instant::now();
    let run_id = if opts.dry_run {
        None
    } else {
        store.start_run(&account.name).await.ok()
    };
    let outcome = pipeline(
        config,
        account,
        store,
        tokens,
        opts,
        observer,
        cancel,
        &mut report,
    )
    .await;
    if let Err(stop) = outcome {
        // A hint names whoever must act: the destination for its own trouble (its
        // envelope, its sign-in), else the account.
        let owner = match &stop {
            Stop::Destination(_) => &account.destination,
            _ => &account.name,
        };
        let mut r = stop.report().naming(owner);
        r.blames_destination = matches!(stop, Stop::Destination(_));
        warn!(cause = %r.message, class = ?r.class, "run ended early");
        report.error = Some(r);
    }
    report.elapsed = started.elapsed();
    report.run_id = run_id;
    if let Some(id) = run_id {
        let error = report.error.as_ref().map(|e| e.message.as_str());
        if let Err(e) = store.finish_run(id, &report.counts, error).await {
            warn!(cause = %e, "cannot record the run");
        }
    }
    info!(
        fetched = report.counts.fetched,
        delivered = report.counts.delivered,
        skipped = report.counts.skipped,
        failed = report.counts.failed,
        "run finished"
    );
    report
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
    tokens: &TokenKeeper,
    opts: &RunOptions,
    observer: &dyn Observer,
    cancel: &CancellationToken,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    let dest_config = config.destination(&account.destination).ok_or_else(|| {
        Stop::destination(&DeliveryError::Smtp(mailferry_smtp::SmtpError::Address {
            what: "destination",
            value: account.destination.clone(),
        }))
    })?;
    let destination = AnyDestination::new(dest_config, account, &config.daemon, tokens)
        .await
        .map_err(|e| Stop::destination(&e))?;
    let run = Run {
        account,
        max_message: config.daemon.max_message_size,
        store,
        destination: &destination,
        destination_name: &dest_config.name,
        opts,
        observer,
        cancel,
        until: opts.slice.map(|s| tokio::time::Instant::now() + s),
    };
    // A session that dies after making progress (Outlook.com ends IMAP sessions when their
    // access token expires; connections get cut) is opened again, with a fresh token, and
    // the run carries on where the ledger says it is. Without progress, the run ends.
    let mut reconnects = 0;
    let result = loop {
        let before = report.counts.fetched;
        let result = match AnySource::open(account, &config.daemon, tokens).await {
            Ok(source) => gather_all(&run, source, report).await,
            Err(e) => Err(e),
        };
        if let Err(Stop::Source(r)) = &result
            && r.retry_after.is_some()
        {
            report.throttled += 1;
        }
        match result {
            Err(Stop::Source(r))
                if r.class == ErrorClass::Transient
                    && report.counts.fetched > before
                    && reconnects < MAX_RECONNECTS
                    && r.retry_after.is_none_or(|w| w <= MAX_PAUSE_IN_RUN)
                    && !cancel.is_cancelled() =>
            {
                reconnects += 1;
                warn!(cause = %r.message, reconnects, "the session ended mid-run; reconnecting to carry on");
                // Never at once after the server asked for a pause (Exchange throttles,
                // then hangs up): the next connection waits at least as long.
                if let Some(wait) = r.retry_after {
                    info!(wait = %humantime::format_duration(wait), "waiting as the server asked before connecting again");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => break Err(Stop::Source(r)),
                    }
                }
            }
            other => break other,
        }
    };
    destination.close().await;
    result
}

/// What every step of one account's run needs.
pub(crate) struct Run<'a, D> {
    pub(crate) account: &'a AccountConfig,
    /// `max-message-size`.
    pub(crate) max_message: u64,
    pub(crate) store: &'a Store,
    pub(crate) destination: &'a D,
    pub(crate) destination_name: &'a str,
    pub(crate) opts: &'a RunOptions,
    pub(crate) observer: &'a dyn Observer,
    pub(crate) cancel: &'a CancellationToken,
    /// When the run's slice ends ([`RunOptions::slice`]).
    pub(crate) until: Option<tokio::time::Instant>,
}

/// Gathers every folder, then ends the session (for POP3, `QUIT` commits deletions).
async fn gather_all<S: Source, D: Destination>(
    run: &Run<'_, D>,
    mut source: S,
    report: &mut AccountReport,
) -> Result<(), Stop> {
    let mut result = Ok(());
    if let Some(action) = settle_action(run.account)
        && !run.opts.dry_run
        && let Err(e) = source.check_settle(&action).await
    {
        // Nothing is delivered while the policy cannot be applied.
        let _ = source.close().await;
        return Err(Stop::source(&e));
    }
    for folder in &run.account.folders {
        if run.cancel.is_cancelled() {
            break;
        }
        match gather_folder(run, folder, &mut source, report).await {
            Ok(()) => {}
            // A folder's own trouble (it does not exist, a policy it cannot take) does not
            // keep the others, Junk say, from being fetched; the run still reports it.
            Err(Stop::Source(r)) if r.class == ErrorClass::Config => {
                warn!(folder, cause = %r.message, "this folder failed; carrying on with the others");
                if result.is_ok() {
                    result = Err(Stop::Source(r));
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let closed = source.close().await.map_err(|e| Stop::source(&e));
    result.and(closed)
}

#[cfg(test)]
mod pipeline_fakes;
#[cfg(test)]
mod pipeline_tests;
