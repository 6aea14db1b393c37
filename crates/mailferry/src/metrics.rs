//! `[daemon] metrics-listen`: Prometheus text exposition on `/metrics`, and `/healthz`,
//! which fails while an account is parked or has not succeeded for three intervals.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use mailferry_config::Config;
use mailferry_engine::AccountReport;
use mailferry_engine::daemon::Hooks;
use mailferry_engine::schedule::AccountState;
use mailferry_store::Store;

#[derive(Debug, Default, Clone)]
struct Account {
    fetched: u64,
    delivered: u64,
    failed: u64,
    refused: u64,
    bytes: u64,
    throttled: u64,
    runs_ok: u64,
    runs_failed: u64,
    duration_sum: f64,
    last_success: Option<i64>,
    state: Option<AccountState>,
}

/// Counters since start, per account.
#[derive(Debug, Default)]
pub struct Metrics {
    accounts: Mutex<BTreeMap<String, Account>>,
    /// The last status line, for the service manager.
    pub status: Mutex<String>,
}

impl Account {
    /// Adds a report's messages and bytes (a run's, or a push delivery's).
    fn count(&mut self, r: &AccountReport) {
        self.fetched += r.counts.fetched;
        self.delivered += r.counts.delivered;
        self.failed += r.counts.failed;
        self.refused += r.refused.len() as u64;
        self.bytes += r.bytes;
        self.throttled += r.throttled;
    }
}

impl Hooks for Metrics {
    fn after_push(&self, r: &AccountReport) {
        let mut all = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(r.account.clone()).or_default().count(r);
    }

    fn after_run(&self, r: &AccountReport, state: AccountState, next: Duration) {
        let mut all = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let a = all.entry(r.account.clone()).or_default();
        a.count(r);
        a.duration_sum += r.elapsed.as_secs_f64();
        if r.error.is_none() {
            a.runs_ok += 1;
            a.last_success = Some(mailferry_core::unix_now());
        } else {
            a.runs_failed += 1;
        }
        a.state = Some(state);
        let ok = all
            .values()
            .filter(|a| a.state == Some(AccountState::Ok))
            .count();
        let line = format!(
            "{ok}/{} accounts ok; last: {} delivered {} ({}), next in {}s",
            all.len(),
            r.account,
            r.counts.delivered,
            state.as_str(),
            next.as_secs()
        );
        drop(all);
        crate::notify::notify(&format!("STATUS={line}"));
        if let Ok(mut s) = self.status.lock() {
            *s = line;
        }
    }
}

/// A counter's name, help text and value.
type Counter = (&'static str, &'static str, fn(&Account) -> u64);

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge's name, help and value for one pushed folder.
type PushGauge = (
    &'static str,
    &'static str,
    fn(&mailferry_store::PushRow) -> Option<f64>,
);

/// Messages a long import still has to go, per account and folder.
async fn import_gauges(out: &mut String, store: &Store) {
    let rows = store.progress(None).await.unwrap_or_default();
    let name = "mailferry_import_remaining_messages";
    let _ = writeln!(
        out,
        "# HELP {name} Messages a long import still has to go.\n# TYPE {name} gauge"
    );
    for p in rows {
        let _ = writeln!(
            out,
            "{name}{{account=\"{}\",folder=\"{}\"}} {}",
            label(&p.account),
            label(&p.folder),
            p.remaining()
        );
    }
}

/// Gauges of the folders watched with IDLE (`push = "idle"`).
async fn push_gauges(out: &mut String, store: &Store) {
    let now = mailferry_core::unix_now();
    let rows = store.pushes(None, now).await.unwrap_or_default();
    let gauges: [PushGauge; 5] = [
        (
            "mailferry_push_connected",
            "Whether the folder's IDLE connection is up.",
            |r| Some(if r.state == "connected" { 1.0 } else { 0.0 }),
        ),
        (
            "mailferry_push_connected_since_timestamp_seconds",
            "When the folder's IDLE connection was made.",
            |r| r.connected_since.map(|t| t as f64),
        ),
        (
            "mailferry_push_last_event_timestamp_seconds",
            "When the server last announced a change in the folder.",
            |r| r.last_event.map(|t| t as f64),
        ),
        (
            "mailferry_push_last_latency_seconds",
            "From the server's announcement to the new mail delivered, last time.",
            |r| r.last_latency_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "mailferry_push_logins_24h",
            "Push logins in the last 24 hours (the login budget counts these).",
            |r| Some(f64::from(r.logins_24h)),
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for r in &rows {
            if let Some(v) = get(r) {
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{}\",folder=\"{}\"}} {v}",
                    label(&r.account),
                    label(&r.folder)
                );
            }
        }
    }
}

impl Metrics {
    pub(crate) async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let all = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        counter_families(&mut out, &all);
        schedule_gauges(&mut out, store).await;
        let _ = writeln!(
            out,
            "# HELP mailferry_token_expiry_timestamp_seconds When the stored OAuth2 access token expires.\n# TYPE mailferry_token_expiry_timestamp_seconds gauge"
        );
        push_gauges(&mut out, store).await;
        import_gauges(&mut out, store).await;
        for owner in store.token_owners().await.unwrap_or_default() {
            if let Ok(Some(t)) = store.token(&owner).await {
                let _ = writeln!(
                    out,
                    "mailferry_token_expiry_timestamp_seconds{{owner=\"{}\"}} {}",
                    label(&owner),
                    t.expires_at
                );
            }
        }
        out
    }

    /// Problems that make `/healthz` fail: parked accounts, and accounts without a
    /// success for three intervals.
    pub async fn unhealthy(store: &Store, config: &Config) -> Vec<String> {
        let now = mailferry_core::unix_now();
        let schedules = store.schedules().await.unwrap_or_default();
        let mut problems = Vec::new();
        for a in &config.accounts {
            let Some(s) = schedules.iter().find(|s| s.account == a.name) else {
                continue;
            };
            let state = AccountState::from_stored(&s.state);
            if state == Some(AccountState::Parked) {
                problems.push(format!("{}: {}", a.name, AccountState::Parked.as_str()));
                continue;
            }
            let limit = 3 * i64::try_from(a.interval.as_secs()).unwrap_or(i64::MAX / 4);
            let since = s.last_success.or(s.last_run).unwrap_or(now);
            if state != Some(AccountState::Ok) && now - since > limit {
                problems.push(format!(
                    "{}: no successful run for {} s",
                    a.name,
                    now - since
                ));
            }
        }
        problems
    }
}

/// The counters kept since the service started, per account.
fn counter_families(out: &mut String, all: &BTreeMap<String, Account>) {
    let counters: [Counter; 6] = [
        (
            "mailferry_messages_fetched_total",
            "Messages fetched from the source.",
            |a| a.fetched,
        ),
        (
            "mailferry_messages_delivered_total",
            "Messages the destination accepted.",
            |a| a.delivered,
        ),
        (
            "mailferry_messages_failed_total",
            "Messages deferred or refused.",
            |a| a.failed,
        ),
        (
            "mailferry_messages_refused_total",
            "Messages refused for good.",
            |a| a.refused,
        ),
        (
            "mailferry_delivered_bytes_total",
            "Bytes of the messages delivered.",
            |a| a.bytes,
        ),
        (
            "mailferry_source_throttled_total",
            "Times the source asked mailferry to pause (throttling, server unavailable).",
            |a| a.throttled,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (acc, a) in all {
            let _ = writeln!(out, "{name}{{account=\"{}\"}} {}", label(acc), get(a));
        }
    }
    let _ = writeln!(
        out,
        "# HELP mailferry_runs_total Runs by result.\n# TYPE mailferry_runs_total counter"
    );
    for (acc, a) in all {
        let acc = label(acc);
        let _ = writeln!(
            out,
            "mailferry_runs_total{{account=\"{acc}\",result=\"ok\"}} {}",
            a.runs_ok
        );
        let _ = writeln!(
            out,
            "mailferry_runs_total{{account=\"{acc}\",result=\"error\"}} {}",
            a.runs_failed
        );
    }
    let _ = writeln!(
        out,
        "# HELP mailferry_run_duration_seconds Time spent in runs.\n# TYPE mailferry_run_duration_seconds summary"
    );
    for (acc, a) in all {
        let acc = label(acc);
        let _ = writeln!(
            out,
            "mailferry_run_duration_seconds_sum{{account=\"{acc}\"}} {:.3}",
            a.duration_sum
        );
        let _ = writeln!(
            out,
            "mailferry_run_duration_seconds_count{{account=\"{acc}\"}} {}",
            a.runs_ok + a.runs_failed
        );
    }
}

/// What the service's schedule says of each account: its last success, whether it is ok.
async fn schedule_gauges(out: &mut String, store: &Store) {
    let schedules = store.schedules().await.unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP mailferry_last_success_timestamp_seconds End of the last successful run.\n# TYPE mailferry_last_success_timestamp_seconds gauge"
    );
    for s in &schedules {
        if let Some(t) = s.last_success {
            let _ = writeln!(
                out,
                "mailferry_last_success_timestamp_seconds{{account=\"{}\"}} {t}",
                label(&s.account)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mailferry_account_ok Whether the account's last run succeeded.\n# TYPE mailferry_account_ok gauge"
    );
    for s in &schedules {
        let _ = writeln!(
            out,
            "mailferry_account_ok{{account=\"{}\"}} {}",
            label(&s.account),
            u8::from(AccountState::from_stored(&s.state) == Some(AccountState::Ok))
        );
    }
}
