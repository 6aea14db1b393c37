//! `mailferry status [--json]`: what the service is doing, from the state database. Works
//! while the service runs.

use std::collections::HashMap;
use std::process::ExitCode;

use mailferry_config::{Config, SourceAuth};
use mailferry_engine::schedule::AccountState;
use mailferry_engine::tokens;
use mailferry_store::Store;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct Refused {
    pub(crate) folder: String,
    pub(crate) key: String,
    pub(crate) message_id: Option<String>,
    pub(crate) reason: String,
    /// When it was refused (Unix seconds).
    pub(crate) at: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct SignIn {
    pub(crate) subject: Option<String>,
    pub(crate) access_token_expires_at: i64,
    pub(crate) refreshed_at: i64,
    pub(crate) scopes: Vec<String>,
    pub(crate) parked: Option<String>,
}

/// A folder watched with IDLE.
#[derive(Debug, Serialize)]
pub(crate) struct PushStatus {
    pub(crate) folder: String,
    /// connected | reconnecting | no idle | stopped
    pub(crate) state: String,
    pub(crate) connected_since: Option<i64>,
    pub(crate) last_event: Option<i64>,
    /// From the server's announcement to the mail delivered, last time.
    pub(crate) last_latency_ms: Option<i64>,
    logins_24h: u32,
    pub(crate) last_error: Option<String>,
}

/// A long import in progress in one folder.
#[derive(Debug, Serialize)]
pub(crate) struct ImportStatus {
    pub(crate) folder: String,
    /// Messages it had to go when its run started, and done since.
    pub(crate) total: u64,
    pub(crate) done: u64,
    pub(crate) remaining: u64,
    /// Messages a second so far.
    pub(crate) rate: Option<f64>,
    /// When it should end at that rate (Unix seconds).
    pub(crate) expected_end: Option<i64>,
    /// When the numbers were written.
    pub(crate) as_of: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AccountStatus {
    pub(crate) account: String,
    /// ok | backing off | parked: needs auth | failing: needs a fix | disabled | not run yet
    pub(crate) state: String,
    pub(crate) last_success: Option<i64>,
    pub(crate) last_run: Option<i64>,
    pub(crate) next_run: Option<i64>,
    pub(crate) failures_in_a_row: u32,
    pub(crate) delivered_total: u64,
    delivered_24h: u64,
    pub(crate) deferred: u64,
    failed_runs_24h: u64,
    pub(crate) refused: Vec<Refused>,
    pub(crate) last_error: Option<String>,
    pub(crate) hint: Option<String>,
    pub(crate) sign_in: Option<SignIn>,
    pub(crate) push: Vec<PushStatus>,
    pub(crate) importing: Vec<ImportStatus>,
}

/// What the store holds for every account, read once: one query per table, so 1,000
/// accounts answer in well under a second.
struct Everyone {
    schedules: HashMap<String, mailferry_store::ScheduleRow>,
    totals: HashMap<String, mailferry_store::Totals>,
    refusals: HashMap<String, Vec<mailferry_store::Refusal>>,
    pushes: HashMap<String, Vec<mailferry_store::PushRow>>,
    progress: HashMap<String, Vec<mailferry_store::Progress>>,
}

impl Everyone {
    async fn read(store: &Store) -> anyhow::Result<Self> {
        let mut pushes = HashMap::<String, Vec<_>>::new();
        for p in store.pushes(None, mailferry_core::unix_now()).await? {
            pushes.entry(p.account.clone()).or_default().push(p);
        }
        let mut progress = HashMap::<String, Vec<_>>::new();
        for p in store.progress(None).await? {
            progress.entry(p.account.clone()).or_default().push(p);
        }
        Ok(Self {
            schedules: store
                .schedules()
                .await?
                .into_iter()
                .map(|s| (s.account.clone(), s))
                .collect(),
            totals: store.all_totals().await?,
            refusals: store.refusals_of(None).await?,
            pushes,
            progress,
        })
    }
}

pub(crate) async fn collect(config: &Config, store: &Store) -> anyhow::Result<Vec<AccountStatus>> {
    let mut all = Everyone::read(store).await?;
    let mut out = Vec::new();
    for a in &config.accounts {
        let row = all.schedules.get(&a.name);
        // An account's own queries only where the service has no schedule row for it yet.
        let totals = match row {
            Some(_) => all.totals.remove(&a.name).unwrap_or_default(),
            None => store.totals(&a.name).await?,
        };
        let sign_in = sign_in(store, a).await?;
        let push = match &a.push {
            None => Vec::new(),
            Some(_) => push_statuses(all.pushes.remove(&a.name).unwrap_or_default()),
        };
        let (state, hint) = state_and_hint(a, row, &totals, sign_in.as_ref(), &push);
        out.push(AccountStatus {
            push,
            importing: imports(all.progress.remove(&a.name).unwrap_or_default()),
            account: a.name.clone(),
            state,
            last_success: row.and_then(|r| r.last_success).or(totals.last_success),
            last_run: row
                .and_then(|r| r.last_run)
                .or(totals.last_run.as_ref().map(|(t, _)| *t)),
            next_run: row.and_then(|r| r.next_run).filter(|_| a.enabled),
            failures_in_a_row: row.map_or(0, |r| r.failures),
            delivered_total: totals.delivered,
            delivered_24h: totals.delivered_24h,
            deferred: totals.deferred,
            failed_runs_24h: totals.failed_runs_24h,
            refused: refusals(all.refusals.remove(&a.name).unwrap_or_default()),
            last_error: row
                .and_then(|r| r.last_error.clone())
                .or_else(|| totals.last_run.as_ref().and_then(|(_, e)| e.clone())),
            hint,
            sign_in,
        });
    }
    Ok(out)
}

async fn sign_in(
    store: &Store,
    a: &mailferry_config::AccountConfig,
) -> anyhow::Result<Option<SignIn>> {
    Ok(match &a.auth {
        SourceAuth::OAuth2(_) => store
            .token(&tokens::account_owner(&a.name))
            .await?
            .map(|t| SignIn {
                subject: t.subject,
                access_token_expires_at: t.expires_at,
                refreshed_at: t.refreshed_at,
                scopes: t.scopes,
                parked: t.parked,
            }),
        _ => None,
    })
}

/// The state in words and the hint: the schedule's, unless the sign-in is missing or
/// parked (then that), or the service has not run the account (then the last `once`).
fn state_and_hint(
    a: &mailferry_config::AccountConfig,
    row: Option<&mailferry_store::ScheduleRow>,
    totals: &mailferry_store::Totals,
    sign_in: Option<&SignIn>,
    push: &[PushStatus],
) -> (String, Option<String>) {
    let mut state = match (a.enabled, row) {
        (false, _) => "disabled".to_owned(),
        (true, Some(r)) => AccountState::from_stored(&r.state)
            .map_or_else(|| r.state.clone(), |s| s.as_str().to_owned()),
        // Not run by the service, but maybe by `mailferry once`.
        (true, None) => match &totals.last_run {
            None => "not run yet".to_owned(),
            Some((_, None)) => "ok".to_owned(),
            Some((_, Some(_))) => "failing".to_owned(),
        },
    };
    let mut hint = row.and_then(|r| r.last_hint.clone());
    if let SourceAuth::OAuth2(_) = &a.auth {
        match sign_in {
            None => {
                state = AccountState::Parked.as_str().into();
                hint = Some(format!("sign in once with `mailferry auth {}`", a.name));
            }
            Some(SignIn {
                parked: Some(_), ..
            }) => {
                state = AccountState::Parked.as_str().into();
                hint = Some(format!("sign in again with `mailferry auth {}`", a.name));
            }
            Some(_) => {}
        }
    }
    // An account whose every folder is pushed has no polls: a connected push is its run.
    if state == "not run yet" && push.iter().any(|p| p.state == "connected") {
        state = AccountState::Ok.as_str().to_owned();
    }
    (state, hint)
}

fn refusals(rows: Vec<mailferry_store::Refusal>) -> Vec<Refused> {
    rows.into_iter()
        .map(|r| Refused {
            folder: r.key.folder,
            key: r.key.key.to_string(),
            message_id: r.message_id,
            reason: r.reason,
            at: r.at,
        })
        .collect()
}

fn push_statuses(rows: Vec<mailferry_store::PushRow>) -> Vec<PushStatus> {
    rows.into_iter()
        .map(|p| PushStatus {
            folder: p.folder,
            state: p.state,
            connected_since: p.connected_since,
            last_event: p.last_event,
            last_latency_ms: p.last_latency_ms,
            logins_24h: p.logins_24h,
            last_error: p.last_error,
        })
        .collect()
}

fn imports(rows: Vec<mailferry_store::Progress>) -> Vec<ImportStatus> {
    rows.into_iter()
        .map(|p| ImportStatus {
            remaining: p.remaining(),
            rate: p.rate(),
            expected_end: p.eta().map(|s| p.updated_at + s),
            folder: p.folder,
            total: p.total,
            done: p.done,
            as_of: p.updated_at,
        })
        .collect()
}

/// `mailferry status [--json] [--health]`.
pub(crate) async fn command(config: &Config, json: bool, health: bool) -> anyhow::Result<ExitCode> {
    if health {
        self::health(config).await
    } else {
        run(config, json).await
    }
}

/// `mailferry status --health`: the rule of `/healthz`, for a container's health check.
pub async fn health(config: &Config) -> anyhow::Result<ExitCode> {
    let store = crate::state::open_shared(config).await?;
    let problems = crate::metrics::Metrics::unhealthy(&store, config).await;
    store.close().await;
    if problems.is_empty() {
        println!("healthy");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("unhealthy: {p}");
    }
    Ok(ExitCode::from(1))
}

/// "3m ago", or "just now", for a time that has passed (never "in 0s").
/// `push INBOX: connected 2 h ago, last new mail 5 min ago (delivered 0.8 s after the
/// announcement), 3 logins in 24 h`.
pub(crate) fn push_line(p: &PushStatus, now: i64) -> String {
    let mut line = format!("push {}: ", p.folder);
    match (p.state.as_str(), p.connected_since) {
        ("connected", Some(t)) => line.push_str(&format!("connected {}", ago(t, now))),
        ("no idle", _) => line.push_str("the server offers no IDLE; polled every interval"),
        (state, _) => line.push_str(state),
    }
    match p.last_event {
        Some(t) => line.push_str(&format!(", last new mail {}", ago(t, now))),
        None => line.push_str(", no new mail announced yet"),
    }
    if let Some(ms) = p.last_latency_ms {
        line.push_str(&format!(
            " (delivered {:.1} s after the announcement)",
            ms as f64 / 1000.0
        ));
    }
    line.push_str(&format!(", {} logins in 24 h", p.logins_24h));
    if p.state != "connected"
        && let Some(e) = &p.last_error
    {
        line.push_str(&format!("; last: {e}"));
    }
    line
}

/// `importing INBOX: 1234 of 20000 done, 4.0 a second, the rest in about 1h 10m (as of
/// just now)`.
pub(crate) fn import_line(i: &ImportStatus, now: i64) -> String {
    let mut line = format!("importing {}: {} of {} done", i.folder, i.done, i.total);
    if let Some(rate) = i.rate {
        line.push_str(&format!(", {rate:.1} a second"));
    }
    if let Some(end) = i.expected_end {
        line.push_str(&format!(", the rest {}", relative(end.max(now), now)));
    }
    line.push_str(&format!(" (as of {})", ago(i.as_of, now)));
    line
}

pub(crate) fn ago(t: i64, now: i64) -> String {
    if now - t < 1 {
        "just now".to_owned()
    } else {
        relative(t, now)
    }
}

/// "3m ago", "in 7m", from a Unix time: the largest unit only (humantime's words).
pub(crate) fn relative(t: i64, now: i64) -> String {
    let d = t - now;
    let mag = d.unsigned_abs();
    let unit = match mag {
        0..90 => 1,
        90..5400 => 60,
        5400..129_600 => 3600,
        _ => 86_400,
    };
    let text = humantime::format_duration(std::time::Duration::from_secs(mag / unit * unit));
    if d >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

pub async fn run(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::state::open_shared(config).await?;
    let all = collect(config, &store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        let now = mailferry_core::unix_now();
        for s in &all {
            print_account(s, now);
        }
        print_destinations(config, &store, now).await?;
    }
    // The service keeps running the configuration it had when the file, read again on a
    // request, could not be used: the file's fix has not taken effect.
    let unread = store
        .config_load()
        .await?
        .and_then(|l| l.error.map(|e| (l.at, e)));
    if !json && let Some((at, e)) = &unread {
        println!(
            "service: still runs the configuration it read before: the file as it is now could not be used ({}):\n  {e}",
            ago(*at, mailferry_core::unix_now())
        );
    }
    store.close().await;
    let trouble = unread.is_some()
        || all
            .iter()
            .filter_map(|s| AccountState::from_stored(&s.state))
            .any(|s| matches!(s, AccountState::Parked | AccountState::Failing));
    Ok(if trouble {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One account's lines of `status`.
fn print_account(s: &AccountStatus, now: i64) {
    let mut line = format!("{}: {}", s.account, s.state);
    match s.last_success {
        Some(t) => line.push_str(&format!(", last success {}", ago(t, now))),
        None => line.push_str(", no successful run yet"),
    }
    if let Some(t) = s.next_run {
        line.push_str(&format!(
            ", next run {}",
            relative(t, now).replace("ago", "ago (due)")
        ));
    }
    println!("{line}");
    println!(
        "  delivered {} ({} in the last 24 h), {} deferred, {} refused, {} failed runs in 24 h",
        s.delivered_total,
        s.delivered_24h,
        s.deferred,
        s.refused.len(),
        s.failed_runs_24h
    );
    if let Some(t) = &s.sign_in {
        println!(
            "  signed in as {}, access token expires {}, refreshed {}",
            t.subject.as_deref().unwrap_or("?"),
            relative(t.access_token_expires_at, now),
            relative(t.refreshed_at, now)
        );
    }
    for p in &s.push {
        println!("  {}", push_line(p, now));
    }
    for i in &s.importing {
        println!("  {}", import_line(i, now));
    }
    for r in &s.refused {
        let id = r
            .message_id
            .as_deref()
            .map_or(String::new(), |m| format!(" <{m}>"));
        println!("  refused {} {}{id}: {}", r.folder, r.key, r.reason);
    }
    if !s.refused.is_empty() {
        println!(
            "  once the cause is fixed: mailferry retry --account {} --refused   (or one: mailferry retry --account {} KEY)",
            s.account, s.account
        );
    }
    let ok = AccountState::from_stored(&s.state) == Some(AccountState::Ok);
    if !ok && let Some(e) = &s.last_error {
        println!("  last error: {e}");
    }
    if !ok && let Some(h) = &s.hint {
        println!("  hint: {h}");
    }
}

/// The OAuth2 destinations' sign-ins.
async fn print_destinations(config: &Config, store: &Store, now: i64) -> anyhow::Result<()> {
    for d in &config.destinations {
        if d.oauth().is_none() {
            continue;
        }
        let line = match store.token(&tokens::destination_owner(&d.name)).await? {
            None => format!(
                "not signed in: sign in once with `mailferry auth {}`",
                d.name
            ),
            Some(t) if t.parked.is_some() => format!(
                "parked: needs auth ({}): sign in again with `mailferry auth {}`",
                t.parked.unwrap_or_default(),
                d.name
            ),
            Some(t) => format!(
                "signed in as {}, access token expires {}, refreshed {}",
                t.subject.as_deref().unwrap_or("?"),
                relative(t.expires_at, now),
                ago(t.refreshed_at, now)
            ),
        };
        println!("destination {}: {line}", d.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ago, relative};

    #[test]
    fn times_read_naturally() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(101, 100), "just now");
        assert_eq!(ago(100, 100 + 180), "3m ago");
        assert_eq!(relative(100, 100), "in 0s");
        assert_eq!(relative(100 + 420, 100), "in 7m");
        assert_eq!(relative(100, 100 + 180), "3m ago");
        assert_eq!(relative(0, 5 * 3600), "5h ago");
        assert_eq!(relative(0, 3 * 86400), "3days ago");
    }
}
