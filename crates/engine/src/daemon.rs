//! `mailferry run`: every account on its own schedule, connections per server host bounded,
//! the outcome of every run stored for `mailferry status`, sign-ins kept alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailferry_config::{AccountConfig, Config};
use mailferry_store::{ScheduleRow, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::report::AccountReport;
use crate::run::{RunOptions, run_once};
use crate::schedule::{self, AccountState, Runner, Slot, Verdict};
use crate::tokens::TokenKeeper;

/// How often idle sign-ins are checked for their 30-day refresh.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(6 * 3600);

pub use crate::report::Hooks;

/// Wake-up calls for accounts, by name: `mailferry run-now`, SIGUSR1, a new sign-in.
/// Shared between the signal handler and the scheduler; survives reloads.
#[derive(Debug, Default)]
pub struct Wakeups {
    bells: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Wakeups {
    fn bell(&self, account: &str) -> Arc<tokio::sync::Notify> {
        let mut bells = self
            .bells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(bells.entry(account.to_owned()).or_default())
    }

    /// Asks `account` to run at once (now if it is waiting, else right after its run).
    pub fn ring(&self, account: &str) {
        self.bell(account).notify_one();
    }
}

struct Daemon<'a> {
    config: &'a Config,
    wakeups: &'a Wakeups,
    store: &'a Store,
    tokens: &'a TokenKeeper,
    cancel: &'a CancellationToken,
    hooks: &'a dyn Hooks,
    /// One semaphore per server host: a safety limit over all its accounts.
    hosts: HashMap<String, Arc<Semaphore>>,
    /// One per account: its poll and its pushed folders (providers limit connections per
    /// mailbox: about 15-20 at Outlook.com and Gmail).
    own: Vec<Arc<Semaphore>>,
    last: Mutex<HashMap<usize, AccountReport>>,
    /// One per account: a poll and a push delivery never run at once.
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Daemon<'_> {
    fn account(&self, i: usize) -> &AccountConfig {
        &self.config.accounts[i]
    }
}

impl Runner for Daemon<'_> {
    async fn run(&self, i: usize) -> Verdict {
        let account = self.account(i);
        let host = &account.endpoint.host;
        let _permit = match self.hosts.get(host) {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        let _own = Arc::clone(&self.own[i]).acquire_owned().await.ok();
        let _one_at_a_time = self.locks[i].lock().await;
        let opts = RunOptions {
            account: Some(account.name.clone()),
            dry_run: false,
            slice: Some(self.config.daemon.min_interval),
        };
        // `run-now` and `auth` asked before this run began: this run answers them.
        let asked = self
            .store
            .wakeups_of(&account.name)
            .await
            .unwrap_or_default();
        let mut reports = run_once(
            self.config,
            self.store,
            self.tokens,
            &opts,
            &(),
            self.cancel,
        )
        .await;
        let report = reports.pop().unwrap_or_default();
        // A run a reload cut short answers nobody: the new round runs the account again.
        if !asked.is_empty()
            && !self.cancel.is_cancelled()
            && let Some(run) = report.run_id
            && let Err(e) = self.store.answer_wakeups(&asked, run).await
        {
            warn!(cause = %e, "cannot record which run answered `run-now`");
        }
        let verdict = match &report.error {
            None if report.more => Verdict::Continue,
            None => Verdict::Success,
            Some(e) => {
                warn!(account = %account.name, cause = %e.message, hint = e.hint.as_deref().unwrap_or(""), "run failed");
                Verdict::Failed {
                    class: e.class,
                    retry_after: e.retry_after,
                }
            }
        };
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(i, report);
        verdict
    }

    async fn scheduled(&self, i: usize, state: AccountState, failures: u32, pause: Duration) {
        let account = self.account(i);
        let report = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&i)
            .unwrap_or_default();
        record_run(
            self.config,
            self.store,
            self.tokens,
            account,
            &report,
            (state, failures, pause),
        )
        .await;
        info!(
            account = %account.name,
            delivered = report.counts.delivered,
            failed = report.counts.failed,
            state = state.as_str(),
            next_in = %humantime_secs(pause),
            "run finished"
        );
        self.hooks.after_run(&report, state, pause);
    }

    fn unit(&self) -> f64 {
        schedule::random_unit()
    }

    async fn woken(&self, i: usize) {
        let account = self.account(i);
        if !account.enabled {
            // Disabled means never run, by any path: a bare SIGUSR1 rings every name.
            return std::future::pending().await;
        }
        let bell = self.wakeups.bell(&account.name);
        bell.notified().await;
        info!(account = %account.name, "asked to run now");
    }
}

fn humantime_secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Runs every account of `config` on its schedule until `cancel` fires, then returns once
/// the runs in progress have stopped between messages. Where a stored schedule says an
/// account is not due yet (a restart, a reload), it waits for that, except that after a
/// reload (`reloaded`) an account that was failing runs within a minute with its backoff
/// reset: the reload may be the fix. `wakeups` rings accounts that must run at once.
pub async fn serve(
    config: &Config,
    store: &Store,
    tokens: &TokenKeeper,
    cancel: &CancellationToken,
    hooks: &dyn Hooks,
    wakeups: &Wakeups,
    reloaded: bool,
) {
    let stored: HashMap<String, ScheduleRow> = match store.schedules().await {
        Ok(rows) => rows.into_iter().map(|r| (r.account.clone(), r)).collect(),
        Err(e) => {
            warn!(cause = %e, "cannot read the stored schedule; every account runs now");
            HashMap::new()
        }
    };
    let slots = first_slots(
        config,
        &stored,
        mailferry_core::unix_now(),
        reloaded,
        schedule::random_unit,
    );
    let mut hosts = HashMap::new();
    for a in &config.accounts {
        hosts
            .entry(a.endpoint.host.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(config.daemon.max_connections_per_host)));
    }
    let daemon = Daemon {
        config,
        wakeups,
        store,
        tokens,
        cancel,
        hooks,
        hosts,
        own: config
            .accounts
            .iter()
            .map(|_| Arc::new(Semaphore::new(config.daemon.max_connections_per_account)))
            .collect(),
        last: Mutex::new(HashMap::new()),
        locks: config
            .accounts
            .iter()
            .map(|_| tokio::sync::Mutex::new(()))
            .collect(),
    };
    // Requests a reload cut short (or that came while no round ran) are run now.
    for account in store.pending_wakeups().await.unwrap_or_default() {
        if config.account(&account).is_some_and(|a| a.enabled) {
            wakeups.ring(&account);
        }
    }
    // Pushed folders: one watcher each, beside the schedule (which still polls every
    // folder at its interval, as a safety net).
    let watches = watches(&daemon);
    let pushing = futures_util::future::join_all(watches.iter().map(crate::push::Watch::run));
    let keepalive = async {
        loop {
            tokens.keepalive_logged(config).await;
            // Old runs go, off the hot path (mailferry_store's prune.rs says what stays).
            match store.prune_runs(mailferry_core::unix_now()).await {
                Ok(0) => {}
                Ok(n) => debug!(runs = n, "old runs pruned"),
                Err(e) => warn!(cause = %e, "cannot prune old runs"),
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(KEEPALIVE_EVERY) => {}
            }
        }
    };
    tokio::join!(schedule::drive(&slots, &daemon, cancel), keepalive, pushing);
}

/// One watcher per pushed folder of every enabled account, each held to its account's and
/// its host's connection limits and its account's one-delivery-at-a-time lock.
fn watches<'a>(daemon: &'a Daemon<'a>) -> Vec<crate::push::Watch<'a>> {
    let Daemon {
        config,
        store,
        tokens,
        cancel,
        hooks,
        ..
    } = *daemon;
    config
        .accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.enabled)
        .flat_map(|(i, a)| {
            a.push.iter().flat_map(move |p| {
                p.folders.iter().map(move |folder| crate::push::Watch {
                    config,
                    account: a,
                    folder,
                    store,
                    tokens,
                    limits: [
                        Some(("max-connections-per-account", Arc::clone(&daemon.own[i]))),
                        daemon
                            .hosts
                            .get(&a.endpoint.host)
                            .map(|h| ("max-connections-per-host", Arc::clone(h))),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                    lock: &daemon.locks[i],
                    cancel,
                    hooks,
                })
            })
        })
        .collect()
}

/// What the service does after each scheduled run of `account`: the schedule row `status`
/// reads (its state, `failures` in a row, the next run after `pause`), then notices on a
/// change of condition (`notice::after_run`).
pub async fn record_run(
    config: &Config,
    store: &Store,
    tokens: &TokenKeeper,
    account: &AccountConfig,
    report: &AccountReport,
    (state, failures, pause): (AccountState, u32, Duration),
) {
    let now = mailferry_core::unix_now();
    let row = ScheduleRow {
        account: account.name.clone(),
        state: state.token().to_owned(),
        failures,
        next_run: Some(now + i64::try_from(pause.as_secs()).unwrap_or(i64::MAX / 2)),
        last_run: Some(now),
        last_success: report.error.is_none().then_some(now),
        last_error: report.error.as_ref().map(|e| e.message.clone()),
        last_hint: report.error.as_ref().and_then(|e| e.hint.clone()),
        interval_s: i64::try_from(account.interval.as_secs()).unwrap_or(i64::MAX),
    };
    if let Err(e) = store.save_schedule(&row).await {
        warn!(cause = %e, "cannot record the schedule");
    }
    crate::notice::after_run(config, account, store, tokens, report, state, failures).await;
}

/// Each account's slot when the service starts or a reload applies: it resumes the stored
/// schedule (next run, failures in a row), so a restart neither runs every account at once
/// nor forgets a backoff. After a reload, a failing account is due within a minute with its
/// backoff reset, since the new file may be the fix. Accounts that are due start up to 10 s
/// (a tenth of their interval at most) apart, by `unit()` in 0..1. Disabled accounts are
/// never due.
pub fn first_slots(
    config: &Config,
    stored: &HashMap<String, ScheduleRow>,
    now: i64,
    reloaded: bool,
    mut unit: impl FnMut() -> f64,
) -> Vec<Slot> {
    config
        .accounts
        .iter()
        .map(|a| {
            if !a.enabled {
                return Slot {
                    interval: Duration::MAX / 4,
                    first: Duration::MAX / 4,
                    failures: 0,
                };
            }
            let row = stored.get(&a.name);
            let mut due_in = row.and_then(|r| r.next_run).map_or(0, |n| (n - now).max(0));
            let mut failures = row.map_or(0, |r| r.failures);
            if reloaded && failures > 0 {
                due_in = due_in.min(60);
                failures = 0;
            }
            let spread = Duration::from_secs(10).min(a.interval / 10).mul_f64(unit());
            Slot {
                interval: a.interval,
                first: Duration::from_secs(u64::try_from(due_in).unwrap_or(0)).max(spread),
                failures,
            }
        })
        .collect()
}

/// What became of a reload request.
#[derive(Debug)]
pub enum Reload<'a> {
    /// The new configuration is in force (the accounts restarted between messages).
    Applied(&'a Config),
    /// The file was not valid (the reason); the old configuration keeps running.
    Refused(&'a str),
}

/// [`serve`], restarted with a new configuration at every request on `reloads` (the
/// binary forwards SIGHUP there) until `cancel` fires. A request cancels the round between
/// messages, then `load` reads the configuration again: a valid one replaces the running
/// one (and failing accounts run within a minute, their backoff reset), an invalid one is
/// refused and the old one keeps running. `changed` hears of each outcome (the binary
/// updates what its signal handlers and `/metrics` read, and tells systemd).
#[allow(clippy::too_many_arguments)]
pub async fn serve_reloading<L, C>(
    config: Config,
    mut reloads: tokio::sync::mpsc::Receiver<()>,
    load: L,
    mut changed: C,
    store: &Store,
    tokens: &TokenKeeper,
    cancel: &CancellationToken,
    hooks: &dyn Hooks,
    wakeups: &Wakeups,
) where
    L: Fn() -> Result<Config, String>,
    C: FnMut(Reload<'_>),
{
    let mut config = config;
    let mut reloaded = false;
    loop {
        let round = cancel.child_token();
        let reload = {
            let serve = serve(&config, store, tokens, &round, hooks, wakeups, reloaded);
            tokio::pin!(serve);
            let reload = tokio::select! {
                () = &mut serve => false,
                Some(()) = reloads.recv() => true,
            };
            if reload {
                info!("reloading the configuration after the messages in flight");
                round.cancel();
                serve.await;
            }
            reload
        };
        if !reload || cancel.is_cancelled() {
            break;
        }
        reloaded = true;
        match load() {
            Ok(new) => {
                for w in &new.warnings {
                    warn!("{w}");
                }
                info!(accounts = new.accounts.len(), "configuration reloaded");
                config = new;
                changed(Reload::Applied(&config));
            }
            Err(e) => {
                warn!("the new configuration is not valid; keeping the old one: {e}");
                changed(Reload::Refused(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with accounts `a0`..`a{n-1}`, every 10 minutes; disabled ones
    /// connect nowhere.
    fn config(dir: &std::path::Path, n: usize, enabled: bool) -> Config {
        let mut text = String::from(
            "[daemon]\nstate-dir = \"state\"\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n",
        );
        for i in 0..n {
            text.push_str(&format!(
                "[[account]]\nname = \"a{i}\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nusername = \"u\"\nauth = {{ method = \"password\", password-file = \"pass\" }}\ndestination = \"home\"\ninterval = \"10m\"\nenabled = {enabled}\n"
            ));
        }
        std::fs::write(dir.join("pass"), "pw").expect("write");
        let path = dir.join(format!("m{n}.toml"));
        std::fs::write(&path, text).expect("write");
        mailferry_config::load(&path).expect("valid")
    }

    fn stored(account: &str, failures: u32, next_run: i64) -> (String, ScheduleRow) {
        let row = ScheduleRow {
            account: account.to_owned(),
            state: if failures > 0 { "backing-off" } else { "ok" }.to_owned(),
            failures,
            next_run: Some(next_run),
            last_run: None,
            last_success: None,
            last_error: None,
            last_hint: None,
            interval_s: 600,
        };
        (account.to_owned(), row)
    }

    fn firsts(slots: &[Slot]) -> Vec<(u64, u32)> {
        slots
            .iter()
            .map(|s| (s.first.as_secs(), s.failures))
            .collect()
    }

    #[test]
    fn a_restart_resumes_the_stored_schedule_and_a_reload_pulls_failing_accounts_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 3, true);
        let now = 1_800_000_000;
        // a0 healthy, next run in 20 min; a1 failed 3 times, next try in 2 h; a2 never ran.
        let rows: HashMap<_, _> = [stored("a0", 0, now + 1200), stored("a1", 3, now + 7200)]
            .into_iter()
            .collect();

        let started = first_slots(&config, &rows, now, false, || 0.5);
        // Due now: spread by up to min(10 s, interval / 10), here half of it.
        assert_eq!(firsts(&started), [(1200, 0), (7200, 3), (5, 0)]);
        assert!(
            started
                .iter()
                .all(|s| s.interval == Duration::from_secs(600))
        );

        let reloaded = first_slots(&config, &rows, now, true, || 0.5);
        // Only the failing account is pulled in, to within a minute, its backoff reset.
        assert_eq!(firsts(&reloaded), [(1200, 0), (60, 0), (5, 0)]);

        // A next run already past is due at once (after the spread).
        let late: HashMap<_, _> = [stored("a0", 0, now - 300)].into_iter().collect();
        assert_eq!(
            firsts(&first_slots(&config, &late, now, false, || 0.0))[0],
            (0, 0)
        );

        let disabled = first_slots(
            &self::config(dir.path(), 1, false),
            &rows,
            now,
            true,
            || 0.5,
        );
        assert!(
            disabled[0].first >= Duration::MAX / 4,
            "a disabled account ran"
        );
    }

    // No sleeps and no clock: each step waits for the outcome of the one before. (Not
    // tokio's paused clock: SQLite works on its own thread, and a paused clock jumps to the
    // pool's acquire timeout while it does.)
    #[tokio::test]
    async fn a_reload_applies_a_valid_file_keeps_the_old_one_for_an_invalid_one_and_cancel_ends_it()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state")).await.expect("store");
        let tokens = TokenKeeper::new(store.clone(), Duration::from_secs(5)).expect("tokens");
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let next = config(dir.path(), 2, false);
        let load = || match loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Ok(next.clone()),
            _ => Err("account[0].name: missing".to_owned()),
        };
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let changed = |r: Reload<'_>| {
            let outcome = match r {
                Reload::Applied(c) => format!("applied {}", c.accounts.len()),
                Reload::Refused(e) => format!("refused: {e}"),
            };
            heard_tx.send(outcome).expect("the test listens");
        };
        let wakeups = Wakeups::default();
        let serving = serve_reloading(
            config(dir.path(), 1, false),
            rx,
            load,
            changed,
            &store,
            &tokens,
            &cancel,
            &(),
            &wakeups,
        );
        let driving = async {
            tx.send(()).await.expect("send");
            let first = heard.recv().await;
            tx.send(()).await.expect("send");
            let second = heard.recv().await;
            cancel.cancel();
            [first, second]
        };
        let ((), outcomes) = tokio::join!(serving, driving);
        assert_eq!(
            outcomes,
            [
                Some("applied 2".to_owned()),
                Some("refused: account[0].name: missing".to_owned())
            ],
            "reloads were not applied in order"
        );
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
