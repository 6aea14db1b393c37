//! A simulated year of the service's bookkeeping, in seconds of real time: the schedule
//! and its backoff (`schedule::drive`, `first_slots`), the token keeper (refreshes and the
//! keepalive against the fake IdP, whose refresh tokens die after 90 days unused and whose
//! access tokens live an hour), notices (`notice::after_run`, to a webhook), and pruning
//! (runs, and the ledger of a POP3 maildrop that keeps only its newest messages).
//!
//! Time is mailferry's one clock (`core::unix_now`) moved on by a driver, which also stands
//! in for tokio's timer: each task's sleep is registered with it, and it steps to the next
//! deadline only when every task sleeps (SQLite's own threads make tokio's paused clock
//! unusable). The sessions are simulated in-process: a run logs in (for OAuth2, with a
//! real access token from the keeper), records its run, and for the POP3 maildrop records
//! its messages as the pipeline does; everything else is the service's own code.
//!
//! This is the only test in its process: it moves the process's clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mailferry_config::{Config, SourceAuth};
use mailferry_core::{ErrorClass, MessageKey};
use mailferry_engine::schedule::{AccountState, Runner, Verdict};
use mailferry_engine::tokens::{account_owner, oauth_owners};
use mailferry_engine::{AccountReport, ErrorReport, TokenKeeper};
use mailferry_store::{IssuedTokens, LedgerKey, MessageFacts, RunCounts, Store};
use mailferry_testkit::{FakeIdp, HttpSink};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400;
const YEAR: i64 = 365 * DAY;
/// Every account runs once a day (the floor is 10 minutes; a day keeps a year at about
/// 7,000 runs).
const INTERVAL: i64 = 24 * 3600;
/// The account that fails for a week, and when.
const FLAKY: (i64, i64) = (100 * DAY, 107 * DAY);
/// The account whose sign-in is revoked, and when it is signed in again.
const PARKED: (i64, i64) = (200 * DAY, 203 * DAY);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stepping clock: virtual seconds since the start, and the tasks asleep.
#[derive(Default)]
struct Clock {
    state: Mutex<ClockState>,
    idle: Notify,
}

#[derive(Default)]
struct ClockState {
    now: i64,
    seq: u64,
    sleepers: BTreeMap<(i64, u64), oneshot::Sender<()>>,
    /// Tasks running (not asleep).
    busy: usize,
}

impl Clock {
    fn now(&self) -> i64 {
        lock(&self.state).now
    }

    async fn sleep(&self, pause: Duration) {
        let (tx, rx) = oneshot::channel();
        let key = {
            let mut s = lock(&self.state);
            let secs = i64::try_from(pause.as_secs()).unwrap_or(i64::MAX / 4);
            let at = s.now.saturating_add(secs.max(1));
            s.seq += 1;
            let key = (at, s.seq);
            s.sleepers.insert(key, tx);
            s.busy -= 1;
            if s.busy == 0 {
                self.idle.notify_one();
            }
            key
        };
        let guard = Asleep { clock: self, key };
        let _ = rx.await;
        std::mem::forget(guard);
    }

    /// Waits until every task sleeps.
    async fn quiet(&self) {
        loop {
            if lock(&self.state).busy == 0 {
                return;
            }
            self.idle.notified().await;
        }
    }
}

/// A sleep given up (the task was rung instead): its deadline goes.
struct Asleep<'a> {
    clock: &'a Clock,
    key: (i64, u64),
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        lock(&self.clock.state).sleepers.remove(&self.key);
    }
}

/// What the simulated sessions did.
#[derive(Default)]
struct Log {
    /// Per account, the virtual times of its runs.
    runs: HashMap<String, Vec<i64>>,
    /// Per account, whether each run was asked for (rung).
    rung: HashMap<String, Vec<bool>>,
    /// Per OAuth2 owner, the virtual times its refresh token changed.
    refreshed: HashMap<String, Vec<i64>>,
}

struct Sim<'a> {
    idp: &'a FakeIdp,
    /// The real clock when the year began.
    start: i64,
    config: &'a Config,
    store: &'a Store,
    tokens: &'a TokenKeeper,
    clock: &'a Clock,
    bells: Vec<Notify>,
    rung: Mutex<HashSet<usize>>,
    last: Mutex<HashMap<usize, AccountReport>>,
    log: Mutex<Log>,
    rng: Mutex<fastrand::Rng>,
    /// The POP3 maildrop's next message number.
    mail: Mutex<u64>,
}

impl Sim<'_> {
    /// The fake IdP's clock follows the simulation's (before anything that asks it).
    fn sync_idp(&self) {
        self.idp.set(
            "clock_offset",
            &(mailferry_core::unix_now() - self.start).to_string(),
        );
    }

    /// A session of account `i`: log in (OAuth2: a real access token from the keeper),
    /// and for `pop0`, three new messages a run into a maildrop that keeps its newest ten.
    async fn session(&self, i: usize) -> Result<(), ErrorReport> {
        let account = &self.config.accounts[i];
        let t = self.clock.now();
        if account.name == "flaky" && (FLAKY.0..FLAKY.1).contains(&t) {
            return Err(ErrorReport {
                class: ErrorClass::Transient,
                message: "cannot connect to imap.example.org:993: connection refused".into(),
                hint: None,
                retry_after: None,
                blames_destination: false,
            });
        }
        if let SourceAuth::OAuth2(settings) = &account.auth {
            // (The IdP's clock is moved at each housekeeping step, every 6 hours: what it
            // stamps on a refresh token meanwhile is at most 6 hours early, which only
            // matters for a token unused for 90 days.)
            self.tokens
                .access_token(&account_owner(&account.name), settings)
                .await
                .map_err(|e| ErrorReport::from_error(&e))?;
        }
        if account.name == "pop0" {
            self.deliver_mail(&account.name).await;
        }
        Ok(())
    }

    /// Three new messages delivered and recorded, the older ones deleted at the source
    /// beyond the newest ten; the complete listing told to the ledger.
    async fn deliver_mail(&self, account: &str) {
        let first = {
            let mut n = lock(&self.mail);
            *n += 3;
            *n - 3
        };
        let key = |n: u64| LedgerKey {
            account: account.into(),
            folder: "INBOX".into(),
            uidvalidity: 0,
            key: MessageKey::Uidl(format!("m{n}")),
        };
        for n in first..first + 3 {
            let sha = format!("sha{n}");
            let facts = MessageFacts {
                message_id: None,
                content_hash: &sha,
                sha256: None,
                size: 100,
                destination: "home",
            };
            self.store
                .begin_attempt(&key(n), &facts)
                .await
                .expect("begin");
            self.store
                .mark_delivered(&key(n), "250 ok")
                .await
                .expect("mark");
        }
        let present: HashSet<MessageKey> = (first.saturating_sub(7)..first + 3)
            .map(|n| key(n).key)
            .collect();
        self.store
            .note_listing(account, "INBOX", 0, &present, mailferry_core::unix_now())
            .await
            .expect("note listing");
    }
}

impl Runner for Sim<'_> {
    async fn run(&self, i: usize) -> Verdict {
        let account = &self.config.accounts[i];
        let rung = lock(&self.rung).remove(&i);
        {
            let mut log = lock(&self.log);
            log.runs
                .entry(account.name.clone())
                .or_default()
                .push(self.clock.now());
            log.rung.entry(account.name.clone()).or_default().push(rung);
        }
        let id = self.store.start_run(&account.name).await.expect("run");
        let result = self.session(i).await;
        let error = result.as_ref().err().map(|e| e.message.clone());
        self.store
            .finish_run(id, &RunCounts::default(), error.as_deref())
            .await
            .expect("finish");
        let report = AccountReport {
            account: account.name.clone(),
            error: result.err(),
            run_id: Some(id),
            ..AccountReport::default()
        };
        let verdict = match &report.error {
            None => Verdict::Success,
            Some(e) => Verdict::Failed {
                class: e.class,
                retry_after: e.retry_after,
            },
        };
        lock(&self.last).insert(i, report);
        verdict
    }

    /// As the service records a run: the schedule row, then notices (its own code).
    async fn scheduled(&self, i: usize, state: AccountState, failures: u32, pause: Duration) {
        let account = &self.config.accounts[i];
        let report = lock(&self.last).remove(&i).unwrap_or_default();
        mailferry_engine::daemon::record_run(
            self.config,
            self.store,
            self.tokens,
            account,
            &report,
            (state, failures, pause),
        )
        .await;
    }

    fn unit(&self) -> f64 {
        lock(&self.rng).f64()
    }

    fn sleep(&self, pause: Duration) -> impl Future<Output = ()> {
        self.clock.sleep(pause)
    }

    async fn woken(&self, i: usize) {
        if !self.config.accounts[i].enabled {
            return std::future::pending().await;
        }
        self.bells[i].notified().await;
    }
}

fn config_text(dir: &std::path::Path, idp: &FakeIdp, hook: &HttpSink) -> String {
    let oauth = |scope: &str| {
        format!(
            "{{ method = \"oauth2\", provider = \"custom\", client-id = \"sim-client\", token-url = \"{}\", device-url = \"{}\", authorize-url = \"{}\", scopes = [\"{scope}\", \"offline_access\"] }}",
            idp.url("/token"),
            idp.url("/devicecode"),
            idp.url("/authorize"),
        )
    };
    let mut text = format!(
        "[daemon]\nstate-dir = \"{}\"\n\n[notify]\nin-destination = false\nnotify-after = 3\nwebhook = \"{}\"\n\n\
         [[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n\n\
         [[destination]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\nusername = \"relay@test.example\"\nauth = {}\n",
        dir.join("state").display(),
        hook.url("/hook"),
        oauth("smtp"),
    );
    std::fs::write(dir.join("pass"), "secret\n").expect("pass");
    let account = |name: &str, protocol: &str, auth: &str, extra: &str| {
        format!(
            "\n[[account]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nusername = \"{name}@test.example\"\nauth = {auth}\ndestination = \"home\"\ninterval = \"24h\"\n{extra}"
        )
    };
    let password = format!(
        "{{ method = \"password\", password-file = \"{}\" }}",
        dir.join("pass").display()
    );
    for n in 0..9 {
        text += &account(&format!("imap{n}"), "imap", &password, "");
    }
    for n in 0..4 {
        text += &account(&format!("pop{n}"), "pop3", &password, "");
    }
    for n in 0..4 {
        text += &account(&format!("oauth{n}"), "imap", &oauth("imap"), "");
    }
    text += &account("parked", "imap", &oauth("imap"), "");
    text += &account("flaky", "imap", &password, "");
    text += &account("off", "imap", &password, "enabled = false\n");
    text
}

/// Signs `owner` in with fresh tokens from the IdP (as `mailferry auth` would store them).
async fn sign_in(store: &Store, idp: &FakeIdp, owner: &str) {
    let email = format!("{}@test.example", owner.replace(':', "-"));
    let t = idp.mint(&email, "sim-client", "imap offline_access");
    let scopes = vec!["imap".to_owned()];
    let issued = IssuedTokens {
        access_token: t["access_token"].as_str().expect("access"),
        refresh_token: t["refresh_token"].as_str().expect("refresh"),
        expires_at: mailferry_core::unix_now() + t["expires_in"].as_i64().unwrap_or(3600),
        scopes: &scopes,
        subject: Some(&email),
    };
    store
        .save_sign_in(owner, "sim-client", &idp.url("/token"), issued)
        .await
        .expect("sign in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_year_keeps_sign_ins_alive_notices_once_and_the_state_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = FakeIdp::start();
    idp.set("refresh_idle", &(90 * DAY).to_string());
    let hook = HttpSink::start();
    let path = dir.path().join("mailferry.toml");
    std::fs::write(&path, config_text(dir.path(), &idp, &hook)).expect("config");
    let config = mailferry_config::load(&path).expect("a valid configuration");
    let store = Store::open(&config.daemon.state_dir).await.expect("store");
    let tokens = TokenKeeper::new(store.clone(), Duration::from_secs(10)).expect("keeper");
    let owners: Vec<String> = oauth_owners(&config).into_iter().map(|(o, _)| o).collect();
    assert_eq!(owners.len(), 6, "{owners:?}");
    for owner in &owners {
        sign_in(&store, &idp, owner).await;
    }
    let clock = Clock::default();
    let start = mailferry_core::unix_now();
    let sim = Sim {
        idp: &idp,
        start,
        config: &config,
        store: &store,
        tokens: &tokens,
        clock: &clock,
        bells: config.accounts.iter().map(|_| Notify::new()).collect(),
        rung: Mutex::new(HashSet::new()),
        last: Mutex::new(HashMap::new()),
        log: Mutex::new(Log::default()),
        rng: Mutex::new(fastrand::Rng::with_seed(7)),
        mail: Mutex::new(0),
    };
    let seed = Mutex::new(fastrand::Rng::with_seed(11));
    let slots = mailferry_engine::daemon::first_slots(
        &config,
        &HashMap::new(),
        mailferry_core::unix_now(),
        false,
        || lock(&seed).f64(),
    );
    lock(&clock.state).busy = slots.len();
    let cancel = CancellationToken::new();
    let parked = config
        .accounts
        .iter()
        .position(|a| a.name == "parked")
        .expect("parked");
    let started = std::time::Instant::now();
    let driver = async {
        // The service's housekeeping every 6 hours: keepalive, then pruning.
        let mut housekeeping = 6 * 3600;
        let mut revoked = false;
        let mut fixed = false;
        loop {
            clock.quiet().await;
            let (next, sleeping) = {
                let s = lock(&clock.state);
                let next = s.sleepers.keys().next().map_or(i64::MAX, |k| k.0);
                (next.min(housekeeping), s.now)
            };
            let next = next
                .min(if revoked { i64::MAX } else { PARKED.0 })
                .min(if fixed { i64::MAX } else { PARKED.1 });
            if next >= YEAR {
                break;
            }
            mailferry_core::shift_clock(next - sleeping);
            lock(&clock.state).now = next;
            if next == housekeeping {
                sim.sync_idp();
                for (owner, result) in tokens.keepalive(&config, mailferry_core::unix_now()).await {
                    result.unwrap_or_else(|e| panic!("keepalive of {owner}: {e}"));
                }
                store
                    .prune_runs(mailferry_core::unix_now())
                    .await
                    .expect("prune");
                housekeeping += 6 * 3600;
                // Who refreshed since the last look.
                for owner in &owners {
                    if let Ok(Some(row)) = store.token(owner).await {
                        let mut log = lock(&sim.log);
                        let times = log.refreshed.entry(owner.clone()).or_default();
                        let at = row.refreshed_at.max(row.signed_in_at);
                        if times.last() != Some(&at) {
                            times.push(at);
                        }
                    }
                }
            }
            if !revoked && next == PARKED.0 {
                sim.sync_idp();
                idp.revoke("account-parked@test.example");
                revoked = true;
            }
            if !fixed && next == PARKED.1 {
                // `mailferry auth parked`: a new sign-in, and the account is rung.
                sim.sync_idp();
                sign_in(&store, &idp, &account_owner("parked")).await;
                lock(&sim.rung).insert(parked);
                lock(&clock.state).busy += 1;
                sim.bells[parked].notify_one();
                fixed = true;
            }
            let mut s = lock(&clock.state);
            let due: Vec<(i64, u64)> = s
                .sleepers
                .range(..=(next, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            for k in due {
                if let Some(tx) = s.sleepers.remove(&k) {
                    s.busy += 1;
                    let _ = tx.send(());
                }
            }
            drop(s);
        }
        // The year is over: every task sleeps, and sees the cancel instead of its timer.
        cancel.cancel();
    };
    tokio::join!(
        mailferry_engine::schedule::drive(&slots, &sim, &cancel),
        driver
    );
    let took = started.elapsed();
    let log = std::mem::take(&mut *lock(&sim.log));

    // 1. Every sign-in is alive at the end: one more access token for each owner, each
    // refreshed at least every 31 days (90 days would kill it).
    for (owner, settings) in oauth_owners(&config) {
        let row = store
            .token(&owner)
            .await
            .expect("token")
            .expect("signed in");
        assert!(
            row.parked.is_none(),
            "{owner} parked at the end: {:?}",
            row.parked
        );
        let refreshes = log.refreshed.get(&owner).cloned().unwrap_or_default();
        let longest = refreshes
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(YEAR);
        assert!(
            longest <= 31 * DAY,
            "{owner}: {longest} s between refreshes"
        );
        // Past the year's end, an hour later: the access token is refreshed once more.
        mailferry_core::shift_clock(2 * 3600);
        idp.set(
            "clock_offset",
            &(mailferry_core::unix_now() - start).to_string(),
        );
        tokens
            .access_token(&owner, settings)
            .await
            .unwrap_or_else(|e| panic!("{owner} is not alive after a year: {e}"));
    }

    // 2. Notices: the flaky week once failing, once recovered; the parked account once
    // parked, once recovered; nobody else.
    let notices: Vec<(String, String)> = hook
        .requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
            (
                v["account"].as_str().unwrap_or_default().to_owned(),
                v["event"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("flaky", "failing"),
        ("flaky", "recovered"),
        ("parked", "parked"),
        ("parked", "recovered"),
    ]
    .iter()
    .map(|(a, e)| ((*a).to_owned(), (*e).to_owned()))
    .collect();
    assert_eq!(notices, expected);

    // 3. The flaky account is back within one interval (and its jitter) of its fix; the
    // parked one at once when rung.
    let flaky = &log.runs["flaky"];
    let back = flaky
        .iter()
        .find(|t| **t >= FLAKY.1)
        .expect("a run after the fix");
    assert!(
        *back - FLAKY.1 <= INTERVAL + INTERVAL / 10,
        "{} s",
        back - FLAKY.1
    );
    let parked_runs = &log.runs["parked"];
    assert!(parked_runs.contains(&PARKED.1), "not run when rung");

    // 4. The disabled account never ran; nobody ran more often than its interval (but
    // when rung by a sign-in).
    assert!(!log.runs.contains_key("off"), "the disabled account ran");
    for (name, times) in &log.runs {
        let rung = &log.rung[name];
        for (k, w) in times.windows(2).enumerate() {
            if !rung[k + 1] {
                assert!(
                    w[1] - w[0] >= INTERVAL,
                    "{name} ran {} s after its last run (run {} of {:?})",
                    w[1] - w[0],
                    k + 1,
                    &times[k.saturating_sub(3)..(k + 3).min(times.len())]
                );
            }
        }
        if name != "flaky" && name != "parked" {
            assert!(times.len() >= 330, "{name} ran only {} times", times.len());
        }
    }

    // 5. The state stays bounded: 30 days of runs, the maildrop's recent messages.
    let runs: usize = log.runs.values().map(Vec::len).sum();
    let (kept_runs, ledger) = store.row_counts().await.expect("counts");
    store.close().await;
    let state = config.daemon.state_dir.clone();
    let size: u64 = ["mailferry.db", "mailferry.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state.join(f)).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "simulated year: {runs} runs, {} token refreshes, {} notices, {kept_runs} runs and {ledger} ledger rows kept, state {size} bytes, in {took:?}",
        idp.stats()["refreshes"],
        notices.len()
    );
    assert!(kept_runs <= 20 * 32 + 40, "{kept_runs} runs kept");
    assert!(ledger <= 3 * 31 + 10, "{ledger} ledger rows kept");
    assert!(size < 2 * 1024 * 1024, "state {size} bytes");
    assert!(took < Duration::from_secs(60), "a year took {took:?}");
}
