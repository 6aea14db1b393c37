//! `run`: the service, with signals (SIGTERM, SIGINT, SIGHUP, SIGUSR1) and sd_notify.

use std::time::Duration;

use mailferry_config::Config;
use mailferry_engine::TokenKeeper;
use mailferry_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use tracing::{error, info, warn};

use crate::{http, metrics, notify, state};

/// Longest wait for the runs in progress after SIGTERM; under systemd's default
/// `TimeoutStopSec=90s`. A message still in flight then stays "attempted" in the ledger and
/// is looked up or sent again next time: never lost, never inconsistent.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// `mailferry run`: the state, the token keeper and the service until a signal stops it
/// (within [`STOP_DEADLINE`] of SIGTERM).
pub(crate) async fn command(
    path: &std::path::Path,
    config: Config,
) -> anyhow::Result<std::process::ExitCode> {
    let store = state::open_exclusive(&config).await?;
    let tokens = TokenKeeper::new(store.clone(), config.daemon.io_timeout)?;
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let run = service(path, config, &store, &tokens, &cancel);
    tokio::pin!(run);
    tokio::select! {
        () = &mut run => {}
        () = async { cancel.cancelled().await; tokio::time::sleep(STOP_DEADLINE).await } => {
            warn!("the runs in progress did not stop within {STOP_DEADLINE:?}; exiting anyway (the ledger stays consistent)");
        }
    }
    store.close().await;
    Ok(std::process::ExitCode::SUCCESS)
}

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
    // A start reads the file afresh: an earlier reading that failed is history.
    record_config_load(store, None).await;
    let metrics = Arc::new(metrics::Metrics::default());
    let shared_config = Arc::new(std::sync::Mutex::new(Arc::new(config)));
    let current = || Arc::clone(&lock(&shared_config));
    serve_http(path, &metrics, store, &shared_config, cancel).await;
    keep_watchdog(cancel);
    notify::notify(&format!(
        "READY=1\nSTATUS=gathering {} accounts",
        current().accounts.len()
    ));
    let hangup = signal(SignalKind::hangup());
    // SIGHUP: a new configuration, between messages (engine::daemon::serve_reloading).
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    // Accounts asked to run by a SIGUSR1 that found the configuration changed on disk: they
    // are rung once the reload is in force (a ring before could start a round with the old
    // configuration, which the reload would then stop).
    let after_reload: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    // SIGUSR1 (`mailferry run-now`, `mailferry auth`): the accounts they asked for, or all,
    // run now, with the configuration as it is on disk: the fix they follow may be a new
    // password file or a changed account, and the service reads those only when it loads.
    let wakeups = Arc::new(mailferry_engine::daemon::Wakeups::default());
    // Named as the service (for `run-now`) while listening for SIGUSR1.
    let _named = listen_usr1(
        path,
        store,
        &wakeups,
        &shared_config,
        &after_reload,
        &reload_tx,
    );
    if let Ok(mut hangup) = hangup {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                info!("SIGHUP: reloading the configuration after the messages in flight");
                if reload_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
    }
    let changed = |outcome: mailferry_engine::daemon::Reload<'_>| {
        match outcome {
            mailferry_engine::daemon::Reload::Applied(new) => {
                notify::notify(&format!(
                    "STATUS=reloaded: gathering {} accounts",
                    new.accounts.len()
                ));
                *lock(&shared_config) = Arc::new(new.clone());
            }
            mailferry_engine::daemon::Reload::Refused(e) => {
                error!("the new configuration is not valid; keeping the old one: {e}");
                notify::notify(
                    "STATUS=reload failed: configuration not valid; still running the old one",
                );
            }
        }
        let error = match outcome {
            mailferry_engine::daemon::Reload::Applied(_) => None,
            mailferry_engine::daemon::Reload::Refused(e) => Some(e.to_owned()),
        };
        let records = store.clone();
        tokio::spawn(async move { record_config_load(&records, error.as_deref()).await });
        // Between the rounds: the new one takes these at once.
        for n in std::mem::take(&mut *lock(&after_reload)) {
            wakeups.ring(&n);
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

/// What `m` guards, also after a panic elsewhere (a configuration or a list of names is
/// replaced whole, never left half-written).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records what the service made of the configuration file, for `run-now` and `status`.
async fn record_config_load(store: &Store, error: Option<&str>) {
    if let Err(e) = store.record_config_load(error).await {
        warn!(cause = %e, "cannot record the configuration's reading");
    }
}

/// Serves the status page, `/metrics` and `/healthz` when `metrics-listen` is set.
async fn serve_http(
    path: &std::path::Path,
    metrics: &Arc<metrics::Metrics>,
    store: &Store,
    shared_config: &Arc<std::sync::Mutex<Arc<Config>>>,
    cancel: &CancellationToken,
) {
    let listen = lock(shared_config).daemon.metrics_listen;
    if let Some(addr) = listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(http::serve(
                    listener,
                    Arc::clone(metrics),
                    store.clone(),
                    Arc::clone(shared_config),
                    Arc::from(path),
                    cancel.clone(),
                ));
            }
            Err(e) => warn!(%addr, cause = %e, "cannot serve metrics"),
        }
    }
}

/// Tells systemd's watchdog we live, at half its interval, until `cancel`.
fn keep_watchdog(cancel: &CancellationToken) {
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
}

/// SIGUSR1 (`mailferry run-now`, `mailferry auth`): rings the accounts asked for (or all
/// enabled ones), after a reload when the file on disk changed. Returns the mark that
/// names this process as the service while it lives.
fn listen_usr1(
    path: &std::path::Path,
    store: &Store,
    wakeups: &Arc<mailferry_engine::daemon::Wakeups>,
    shared_config: &Arc<std::sync::Mutex<Arc<Config>>>,
    after_reload: &Arc<std::sync::Mutex<Vec<String>>>,
    reload_tx: &tokio::sync::mpsc::Sender<()>,
) -> Option<mailferry_store::ServiceMark> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut _named = None;
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            let (bells, requests, shared, pending, reload_tx, path) = (
                Arc::clone(wakeups),
                store.clone(),
                Arc::clone(shared_config),
                Arc::clone(after_reload),
                reload_tx.clone(),
                path.to_path_buf(),
            );
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    // The requests stay until the runs they cause answer them.
                    let asked = requests.pending_wakeups().await.unwrap_or_default();
                    let running = Arc::clone(&lock(&shared));
                    let names: Vec<String> = if asked.is_empty() {
                        running
                            .accounts
                            .iter()
                            .filter(|a| a.enabled)
                            .map(|a| a.name.clone())
                            .collect()
                    } else {
                        asked
                    };
                    let on_disk = mailferry_config::load(&path).map_err(|e| e.to_string());
                    record_config_load(&requests, on_disk.as_ref().err().map(String::as_str)).await;
                    match on_disk {
                        Ok(on_disk) if on_disk != *running => {
                            info!(accounts = %names.join(", "), "SIGUSR1: the configuration changed on disk; reloading it, then running");
                            lock(&pending).extend(names);
                            if reload_tx.send(()).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => warn!(
                            "SIGUSR1: the configuration on disk is not valid, running with the one loaded: {e}"
                        ),
                    }
                    info!(accounts = %names.join(", "), "SIGUSR1: running now");
                    for n in &names {
                        bells.ring(n);
                    }
                }
            });
            match store.announce_service() {
                Ok(mark) => _named = Some(mark),
                Err(e) => warn!(cause = %e, "cannot name this process for `mailferry run-now`"),
            }
        }
        Err(e) => warn!(cause = %e, "cannot listen for SIGUSR1; `mailferry run-now` will not work"),
    }
    _named
}
