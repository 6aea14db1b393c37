//! `push = "idle"`: one IMAP connection per pushed folder, held open in IDLE. When the
//! server announces a change, the new mail is delivered on that same connection, through
//! the same pipeline as a poll (ledger, dedup, after-delivery, Gmail pacing), under the
//! account's lock so that a poll and a push never deliver the same message. No login per
//! message: providers throttle accounts that log in often, not quiet connections.
//!
//! The login budget (per pushed folder): at most [`LOGINS_PER_HOUR`] logins in any hour;
//! after a failure, a wait that doubles from [`FIRST_BACKOFF`] up to the account's
//! `interval`; after a throttling reply (Outlook.com's "Suggested Backoff Time"), at least
//! what it asks and never less than `min-interval`; a sign-in or configuration problem
//! waits `interval` (the poll reports it). A session Outlook.com ends because its access
//! token expired (`BYE ... AccessTokenExpired`) is reopened at once with a fresh token and
//! not counted as a failure (it still counts against the budget). A connection that lived
//! [`STABLE`] resets the backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailferry_config::{AccountConfig, Config};
use mailferry_core::{ErrorClass, Source};
use mailferry_imap::{IdleEvent, ImapError, ImapSource};
use mailferry_store::{PushRow, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::build;
use crate::deliver::{AnyDestination, DeliveryError};
use crate::report::Hooks;
use crate::report::Stop;
use crate::report::{AccountReport, ErrorReport};
use crate::run::{Run, RunOptions, gather_folder, settle_action};
use crate::tokens::TokenKeeper;

/// Logins per pushed folder in any hour, at most.
pub const LOGINS_PER_HOUR: usize = 12;
/// The first wait after a failed connection.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5 * 60);

/// One pushed folder and what watching it needs.
pub(crate) struct Watch<'a> {
    pub(crate) config: &'a Config,
    pub(crate) account: &'a AccountConfig,
    pub(crate) folder: &'a str,
    pub(crate) store: &'a Store,
    pub(crate) tokens: &'a TokenKeeper,
    /// The connection limits a push connection holds a place in while it lives: the
    /// account's (`max-connections-per-account`) and the host's safety limit.
    pub(crate) limits: Vec<(&'static str, Arc<Semaphore>)>,
    /// The account's lock: one delivery at a time, poll or push.
    pub(crate) lock: &'a tokio::sync::Mutex<()>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) hooks: &'a dyn Hooks,
}

/// Why a connection ended.
enum Ended {
    Cancelled,
    /// The server ended the session because its access token expired: not a failure.
    TokenExpired(String),
    /// The connection failed; `idled` when it had been watching (a kick, a restart, a cut
    /// after a while), not failing from the start.
    Failed {
        report: ErrorReport,
        idled: bool,
    },
}

impl Watch<'_> {
    /// Watches until cancelled (or for good when the server has no IDLE: the folder is
    /// then polled like any other).
    pub(crate) async fn run(&self) {
        let Some(push) = &self.account.push else {
            return;
        };
        let mut failures: u32 = 0;
        let mut wait = Duration::ZERO;
        let mut last_error: Option<String> = None;
        loop {
            if self.pause(wait).await {
                break;
            }
            if let Some(budget) = self.over_budget().await {
                let why = format!(
                    "login budget: {LOGINS_PER_HOUR} logins in the last hour; next in {}s",
                    budget.as_secs()
                );
                info!(account = %self.account.name, folder = self.folder, "{why}");
                self.save("reconnecting", None, Some(why)).await;
                wait = budget;
                continue;
            }
            let Some(_permits) = self.slot().await else {
                break;
            };
            let now = mailferry_core::unix_now();
            if let Err(e) = self
                .store
                .record_push_login(&self.account.name, self.folder, now)
                .await
            {
                warn!(cause = %e, "cannot record a push login");
            }
            let connected = Instant::now();
            let ended = match build::connect::<ImapSource>(
                self.account,
                &self.config.daemon,
                self.tokens,
            )
            .await
            {
                Err(stop) => Ended::Failed {
                    report: stop.report(),
                    idled: false,
                },
                Ok(mut source) => match source.can_idle().await {
                    Ok(false) => {
                        info!(account = %self.account.name, folder = self.folder, "the server does not offer IDLE; this folder is polled every interval instead");
                        self.save("no idle", None, None).await;
                        let _ = source.close().await;
                        return;
                    }
                    Err(e) => Ended::Failed {
                        report: ErrorReport::from_error(&e),
                        idled: false,
                    },
                    Ok(true) => {
                        info!(account = %self.account.name, folder = self.folder, "watching with IDLE");
                        self.save("connected", Some(now), None).await;
                        self.session(source, push.refresh).await
                    }
                },
            };
            if connected.elapsed() >= STABLE {
                failures = 0;
            }
            match ended {
                Ended::Cancelled => break,
                Ended::TokenExpired(text) => {
                    info!(account = %self.account.name, folder = self.folder, reason = %text, "the server ended the session as its access token expired; reconnecting with a fresh one");
                    wait = Duration::ZERO;
                    last_error = Some(text);
                }
                Ended::Failed { report: r, idled } => {
                    // A connection that was watching fine is reopened at once the first
                    // time (a server restart, an admin's kick); failures in a row back off.
                    wait = if idled && failures == 0 && r.retry_after.is_none() {
                        Duration::from_secs(1)
                    } else {
                        self.backoff(failures + 1, &r)
                    };
                    failures += 1;
                    warn!(account = %self.account.name, folder = self.folder, cause = %r.message, next_in = wait.as_secs(), "the push connection ended; reconnecting");
                    last_error = Some(r.message);
                }
            }
            self.save("reconnecting", None, last_error.clone()).await;
        }
        self.save("stopped", None, last_error).await;
    }

    /// A place in every limit (the account's, the host's), always leaving one for the
    /// polls (which would otherwise never run once pushes took every connection); `None`
    /// when cancelled while waiting.
    async fn slot(&self) -> Option<Vec<tokio::sync::OwnedSemaphorePermit>> {
        let mut said = false;
        loop {
            let full = self
                .limits
                .iter()
                .find(|(_, s)| s.available_permits() <= 1)
                .map(|(name, _)| *name);
            if full.is_none() {
                let permits: Option<Vec<_>> = self
                    .limits
                    .iter()
                    .map(|(_, s)| Arc::clone(s).try_acquire_owned().ok())
                    .collect();
                if let Some(permits) = permits {
                    return Some(permits);
                }
            }
            if !said && let Some(name) = full {
                said = true;
                warn!(account = %self.account.name, folder = self.folder, limit = name, "the connection limit is taken: this folder waits for a connection to push (it is polled meanwhile)");
                self.save(
                    "reconnecting",
                    None,
                    Some(format!("waiting for a connection: {name} is taken")),
                )
                .await;
            }
            if self.pause(Duration::from_secs(5)).await {
                return None;
            }
        }
    }

    /// Sleeps `wait`; `true` when cancelled meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        if wait.is_zero() {
            return self.cancel.is_cancelled();
        }
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// How long to wait when the last hour already had [`LOGINS_PER_HOUR`] logins.
    async fn over_budget(&self) -> Option<Duration> {
        let now = mailferry_core::unix_now();
        let logins = self
            .store
            .push_logins(&self.account.name, self.folder, now - 3600)
            .await
            .ok()?;
        if logins.len() < LOGINS_PER_HOUR {
            return None;
        }
        // The oldest login of the hour leaves it at `oldest + 3600`.
        let oldest = logins[logins.len() - LOGINS_PER_HOUR];
        Some(Duration::from_secs(
            u64::try_from(oldest + 3600 - now).unwrap_or(0).max(1),
        ))
    }

    /// The wait after the `failures`-th failure in a row.
    fn backoff(&self, failures: u32, r: &ErrorReport) -> Duration {
        let interval = self.account.interval;
        if let Some(asked) = r.retry_after {
            // A throttling reply: what it asks, and never sooner than min-interval.
            return asked.max(self.config.daemon.min_interval);
        }
        if matches!(r.class, ErrorClass::Auth | ErrorClass::Config) {
            return interval;
        }
        FIRST_BACKOFF
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(interval)
    }

    /// Delivers what is new, idles, and again, until the connection ends.
    async fn session(&self, mut source: ImapSource, refresh: Duration) -> Ended {
        // The first pass delivers what came while no connection was watching.
        let mut deliver = true;
        let mut announced: Option<Instant> = None;
        let mut idled = false;
        // Passes in a row that the destination failed.
        let mut refused: u32 = 0;
        loop {
            if deliver {
                let report = {
                    let _one_at_a_time = self.lock.lock().await;
                    pass(self, &mut source).await
                };
                self.hooks.after_push(&report);
                if report.counts.delivered > 0
                    && let Some(at) = announced
                {
                    let latency = at.elapsed();
                    debug!(
                        folder = self.folder,
                        latency_ms = latency.as_millis(),
                        "pushed mail delivered"
                    );
                    self.save_latency(latency).await;
                }
                match report.error {
                    Some(e) if !e.blames_destination => {
                        return Ended::Failed { report: e, idled };
                    }
                    Some(e) => {
                        // The destination's trouble (not signed in yet, parked, down): the
                        // messages wait like after a failed poll, backing off up to the
                        // interval, and the connection stays. No IDLE meanwhile: with the
                        // mail not taken, the server would report it again at once.
                        refused += 1;
                        let wait = self.backoff(refused, &e);
                        warn!(account = %self.account.name, cause = %e.message, next_in = wait.as_secs(), "pushed mail could not be delivered; it waits");
                        if self.pause(wait).await {
                            return Ended::Cancelled;
                        }
                        continue;
                    }
                    None => refused = 0,
                }
            }
            if self.cancel.is_cancelled() {
                return Ended::Cancelled;
            }
            let waited = tokio::select! {
                () = self.cancel.cancelled() => return Ended::Cancelled,
                r = source.idle(self.folder, refresh) => r,
            };
            idled = true;
            match waited {
                Ok((s, IdleEvent::Changed)) => {
                    source = s;
                    deliver = true;
                    announced = Some(Instant::now());
                    self.save_event().await;
                }
                Ok((s, IdleEvent::Refreshed)) => {
                    source = s;
                    deliver = false;
                }
                Err(ImapError::Closed(text)) if text.contains("AccessTokenExpired") => {
                    return Ended::TokenExpired(text);
                }
                Err(e) => {
                    return Ended::Failed {
                        report: ErrorReport::from_error(&e),
                        idled,
                    };
                }
            }
        }
    }

    async fn save(&self, state: &str, connected_since: Option<i64>, error: Option<String>) {
        let row = PushRow {
            account: self.account.name.clone(),
            folder: self.folder.to_owned(),
            state: state.to_owned(),
            connected_since,
            last_error: error,
            ..PushRow::default()
        };
        if let Err(e) = self.store.save_push(&row).await {
            warn!(cause = %e, "cannot record the push state");
        }
    }

    async fn save_event(&self) {
        self.update(|row| row.last_event = Some(mailferry_core::unix_now()))
            .await;
    }

    async fn save_latency(&self, latency: Duration) {
        let ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        self.update(|row| row.last_latency_ms = Some(ms)).await;
        let (at, ms) = (mailferry_core::unix_now(), ms.unsigned_abs());
        if let Err(e) = self
            .store
            .record_push_latency(&self.account.name, at, ms)
            .await
        {
            warn!(cause = %e, "cannot record the push latency");
        }
    }

    /// Changes the stored row of this folder (keeping the rest).
    async fn update(&self, change: impl FnOnce(&mut PushRow)) {
        let now = mailferry_core::unix_now();
        let Ok(rows) = self.store.pushes(Some(&self.account.name), now).await else {
            return;
        };
        let Some(mut row) = rows.into_iter().find(|r| r.folder == self.folder) else {
            return;
        };
        change(&mut row);
        if let Err(e) = self.store.save_push(&row).await {
            warn!(cause = %e, "cannot record the push state");
        }
    }
}

/// One delivery pass over the watched folder on the push connection; recorded as a run
/// when it fetched something or failed.
async fn pass(w: &Watch<'_>, source: &mut ImapSource) -> AccountReport {
    let account = w.account;
    let mut report = AccountReport {
        account: account.name.clone(),
        ..AccountReport::default()
    };
    let started = Instant::now();
    let opts = RunOptions {
        account: Some(account.name.clone()),
        dry_run: false,
        slice: None,
    };
    let result = async {
        let dest_config = w.config.destination(&account.destination).ok_or_else(|| {
            Stop::destination(&DeliveryError::Smtp(mailferry_smtp::SmtpError::Address {
                what: "destination",
                value: account.destination.clone(),
            }))
        })?;
        if let Some(action) = settle_action(account) {
            source
                .check_settle(&action)
                .await
                .map_err(|e| Stop::source(&e))?;
        }
        let destination = AnyDestination::new(dest_config, account, &w.config.daemon, w.tokens)
            .await
            .map_err(|e| Stop::destination(&e))?;
        let run = Run {
            account,
            max_message: w.config.daemon.max_message_size,
            store: w.store,
            destination: &destination,
            destination_name: &dest_config.name,
            opts: &opts,
            observer: &(),
            cancel: w.cancel,
            until: None,
        };
        let r = gather_folder(&run, w.folder, source, &mut report).await;
        destination.close().await;
        r
    }
    .await;
    if let Err(stop) = result {
        let owner = match &stop {
            Stop::Destination(_) => &account.destination,
            _ => &account.name,
        };
        let mut r = stop.report().naming(owner);
        r.blames_destination = matches!(stop, Stop::Destination(_));
        report.error = Some(r);
    }
    report.elapsed = started.elapsed();
    if report.counts.fetched > 0 || report.error.is_some() {
        match w.store.start_run(&account.name).await {
            Ok(id) => {
                let error = report.error.as_ref().map(|e| e.message.as_str());
                if let Err(e) = w.store.finish_run(id, &report.counts, error).await {
                    warn!(cause = %e, "cannot record the run");
                }
            }
            Err(e) => warn!(cause = %e, "cannot record the run"),
        }
        info!(
            account = %account.name,
            folder = w.folder,
            fetched = report.counts.fetched,
            delivered = report.counts.delivered,
            failed = report.counts.failed,
            "push delivery"
        );
    }
    report
}
