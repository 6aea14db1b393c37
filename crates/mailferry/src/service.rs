//! `run`: the service, with signals (SIGTERM, SIGINT, SIGHUP, SIGUSR1) and sd_notify.

use std::time::Duration;

use mailferry_config::Config;
use mailferry_engine::TokenKeeper;
use mailferry_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tracing::{error, info, warn};

use crate::*;

/// Longest wait for the runs in progress after SIGTERM; under systemd's default
/// `TimeoutStopSec=90s`. A message still in flight then stays "attempted" in the ledger and
/// is looked up or sent again next time: never lost, never inconsistent.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// The service: every account on its schedule until SIGTERM/SIGINT; SIGHUP reloads the
/// configuration (added, removed, changed accounts) without a restart.
pub(crate) async fn service(
    path: &std::path::Path,
    config: Config,
    store: &Store,
    tokens: &TokenKeeper,
    cancel: &CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    info!(accounts = config.accounts.len(), "mailferry started");
    let metrics = Arc::new(metrics::Metrics::default());
    let shared_config = Arc::new(std::sync::Mutex::new(Arc::new(config)));
    let current = || {
        shared_config
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    };
    if let Some(addr) = current().daemon.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(metrics::serve(
                    listener,
                    Arc::clone(&metrics),
                    store.clone(),
                    Arc::clone(&shared_config),
                    cancel.clone(),
                ));
            }
            Err(e) => warn!(%addr, cause = %e, "cannot serve metrics"),
        }
    }
    if let Some(every) = notify::watchdog_interval() {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                notify::notify("WATCHDOG=1");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(every / 2) => {}
                }
            }
        });
    }
    notify::notify(&format!(
        "READY=1\nSTATUS=gathering {} accounts",
        current().accounts.len()
    ));
    let mut hangup = signal(SignalKind::hangup()).ok();
    // SIGUSR1 (`mailferry run-now`, `mailferry auth`): the accounts they asked for, or all,
    // run now.
    let wakeups = Arc::new(mailferry_engine::daemon::Wakeups::default());
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            let (bells, requests, shared) = (
                Arc::clone(&wakeups),
                store.clone(),
                Arc::clone(&shared_config),
            );
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    let asked = requests.take_wakeups().await.unwrap_or_default();
                    let names: Vec<String> = if asked.is_empty() {
                        shared
                            .lock()
                            .map(|c| c.accounts.iter().map(|a| a.name.clone()).collect())
                            .unwrap_or_default()
                    } else {
                        asked
                    };
                    info!(accounts = %names.join(", "), "SIGUSR1: running now");
                    for n in &names {
                        bells.ring(n);
                    }
                }
            });
            if let Err(e) = store.announce_service() {
                warn!(cause = %e, "cannot name this process for `mailferry run-now`");
            }
        }
        Err(e) => warn!(cause = %e, "cannot listen for SIGUSR1; `mailferry run-now` will not work"),
    }
    // SIGHUP: a new configuration, between messages (engine::daemon::serve_reloading).
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    if let Some(mut hangup) = hangup.take() {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                info!("SIGHUP: reloading the configuration after the messages in flight");
                if reload_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
    }
    let changed = |outcome: mailferry_engine::daemon::Reload<'_>| match outcome {
        mailferry_engine::daemon::Reload::Applied(new) => {
            notify::notify(&format!(
                "STATUS=reloaded: gathering {} accounts",
                new.accounts.len()
            ));
            if let Ok(mut c) = shared_config.lock() {
                *c = Arc::new(new.clone());
            }
        }
        mailferry_engine::daemon::Reload::Refused(e) => {
            error!("the new configuration is not valid; keeping the old one: {e}");
            notify::notify(
                "STATUS=reload failed: configuration not valid; still running the old one",
            );
        }
    };
    mailferry_engine::daemon::serve_reloading(
        (*current()).clone(),
        reloads,
        || mailferry_config::load(path).map_err(|e| e.to_string()),
        changed,
        store,
        tokens,
        cancel,
        &*metrics,
        &wakeups,
    )
    .await;
    notify::notify("STOPPING=1");
    info!("mailferry stopped");
}

pub(crate) async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("stopping after the message in flight");
    cancel.cancel();
}
