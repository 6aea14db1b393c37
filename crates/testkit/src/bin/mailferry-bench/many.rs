//! `--accounts N`: how far one box goes. N accounts on one Dovecot (one user each): 200
//! pushed (IMAP IDLE), half of them polled every 10 minutes, the rest hourly. Measures the
//! start-up until every account has run and every pushed one is connected, then a steady
//! state of `--seconds` with a message arriving every 10 s at a pushed account (the time
//! to its delivery) and one at a polled account: peak RSS, CPU, open files, the state's
//! size; then, with a year of history written into the state (30 days of runs, 200
//! messages an account), how fast `status`, `/metrics` and the status page answer.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::{Dovecot, PASSWORD, SmtpReceiver, fixtures};

use super::Args;

/// Pushed accounts (fewer when N is smaller).
const PUSHED: usize = 200;

/// What /proc says about a process.
pub(crate) struct Proc(pub(crate) u32);

impl Proc {
    /// utime + stime in clock ticks (100 per second on Linux).
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    }

    /// Resident set in KiB.
    pub(crate) fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// (open files, of which sockets).
    pub(crate) fn files(&self) -> (usize, usize) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.0)) else {
            return (0, 0);
        };
        let links: Vec<String> = dir
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        let sockets = links.iter().filter(|l| l.starts_with("socket:")).count();
        (links.len(), sockets)
    }
}

fn config(dovecot: &Dovecot, smtp: &SmtpReceiver, users: &[String], metrics: u16) -> String {
    let ca = dovecot.pki.ca_pem.display();
    let mut config = format!(
        "[daemon]\nstate-dir = \"state\"\nmetrics-listen = \"127.0.0.1:{metrics}\"\nmax-connections-per-host = 2000\n[notify]\nin-destination = false\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n",
        smtp.port
    );
    let pushed = PUSHED.min(users.len() / 2);
    for (i, user) in users.iter().enumerate() {
        let schedule = if i < pushed {
            "push = \"idle\"\ninterval = \"6h\"\n"
        } else if i < pushed + users.len() / 2 {
            "interval = \"10m\"\n"
        } else {
            "interval = \"1h\"\n"
        };
        config.push_str(&format!(
            "[[account]]\nname = \"a{i}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\ntls-ca-file = \"{ca}\"\nusername = \"{user}\"\nauth = {{ method = \"password\", password-file = \"pass\" }}\ndestination = \"home\"\n{schedule}",
            dovecot.imaps_port,
        ));
    }
    config
}

/// One HTTP/1.0 GET on loopback: (seconds to the whole answer, bytes).
fn get(port: u16, path: &str) -> (f64, usize) {
    let t = Instant::now();
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (f64::NAN, 0);
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    (t.elapsed().as_secs_f64(), body.len())
}

fn count(db: &std::path::Path, sql: &str) -> usize {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn message_id(raw: &[u8]) -> Option<String> {
    String::from_utf8_lossy(raw)
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(str::to_owned)
}

/// Dovecot watches each IDLE mailbox with an inotify instance of its own; past the
/// kernel's per-user limit (128 by default) it polls every 30 s instead, which would be
/// measured as mailferry's push latency. Raised for the bench where it can be.
fn inotify_room(n: usize) {
    let path = "/proc/sys/fs/inotify/max_user_instances";
    let now: usize = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if now >= 2 * n {
        return;
    }
    match std::fs::write(path, (2 * n).to_string()) {
        Ok(()) => println!("raised {path} from {now} to {} for Dovecot's IDLE", 2 * n),
        Err(e) => println!(
            "{path} is {now} and cannot be raised ({e}): Dovecot polls IDLE mailboxes past it every 30 s, which shows as push latency"
        ),
    }
}

pub(crate) fn accounts(a: &Args, n: usize) {
    inotify_room(n);
    let dovecot = Dovecot::start();
    let users = dovecot.add_users(n);
    let smtp = SmtpReceiver::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pass"), PASSWORD).expect("write");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config(&dovecot, &smtp, &users, metrics)).expect("config");
    let pushed = PUSHED.min(n / 2);
    let log = std::fs::File::create(dir.path().join("service.log")).expect("log");
    let t0 = Instant::now();
    let mut child = Command::new(&a.binary)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run mailferry");
    let me = Proc(child.id());
    let db = dir.path().join("state/mailferry.db");
    let mut peak = 0;
    // Start-up: every account has finished a run, every pushed one holds its IDLE.
    loop {
        peak = peak.max(me.rss_kb());
        let ran = count(
            &db,
            "SELECT COUNT(DISTINCT account) FROM runs WHERE finished_at IS NOT NULL",
        );
        let idle = count(&db, "SELECT COUNT(DISTINCT account) FROM push_logins");
        if ran >= n - pushed && idle >= pushed {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "start-up did not finish: {ran} accounts ran, {idle} pushed connected; the log is {}",
            dir.path().join("service.log").display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let startup = t0.elapsed().as_secs_f64();
    println!(
        "{n} accounts ({pushed} pushed): all ran once and every pushed folder connected after {startup:.1}s (peak RSS so far {:.1} MB)",
        peak as f64 / 1024.0
    );

    // Steady state: a message every 10 s at a pushed account and at a polled one.
    let (cpu0, t1) = (me.cpu_ticks(), Instant::now());
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut seen = smtp.messages().len();
    let mut next_mail = Instant::now();
    let mut i = 0usize;
    let mut max_files = (0, 0);
    while t1.elapsed().as_secs() < a.seconds {
        if Instant::now() >= next_mail {
            i += 1;
            let id = 1_000_000 + i;
            dovecot.add_message_for(&users[(i * 7) % pushed.max(1)], &fixtures::simple(id));
            sent.insert(format!("<msg{id}@origin.example>"), Instant::now());
            dovecot.add_message_for(
                &users[pushed + (i * 13) % (n - pushed)],
                &fixtures::simple(2_000_000 + i),
            );
            next_mail += Duration::from_secs(10);
        }
        let got = smtp.messages();
        for m in &got[seen..] {
            if let Some(at) = message_id(&m.raw).and_then(|id| sent.remove(&id)) {
                latencies.push(at.elapsed().as_secs_f64());
            }
        }
        seen = got.len();
        peak = peak.max(me.rss_kb());
        let f = me.files();
        max_files = (max_files.0.max(f.0), max_files.1.max(f.1));
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t1.elapsed().as_secs_f64();
    let cpu = (me.cpu_ticks() - cpu0) as f64 / 100.0;
    latencies.sort_by(f64::total_cmp);
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let worst = latencies.last().copied().unwrap_or(f64::NAN);
    println!(
        "steady state {secs:.0}s: peak RSS {:.1} MB (target 150), CPU {:.2}% of one core (target 2), open files at most {} ({} sockets)",
        peak as f64 / 1024.0,
        100.0 * cpu / secs,
        max_files.0,
        max_files.1
    );
    println!(
        "pushed mail: {} of {} delivered; arrival to delivery median {median:.2}s, worst {worst:.2}s (target 2 s)",
        latencies.len(),
        latencies.len() + sent.len()
    );
    let wal = std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    let size = std::fs::metadata(&db).map_or(0, |m| m.len());
    println!(
        "state: {:.1} MB database + {:.1} MB WAL",
        size as f64 / 1e6,
        wal as f64 / 1e6
    );
    // What a year leaves (runs are kept 30 days): 30 days of 10-minute polls for every
    // account, a year's 200 messages each, and 30 days of chart rows.
    let t = Instant::now();
    let seeded = Command::new("sqlite3")
        // The shell's own wait for a lock (a PRAGMA would print its value).
        .args(["-cmd", ".timeout 60000"])
        .arg(&db)
        .arg(format!(
            "BEGIN; \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {runs}) \
             INSERT INTO runs (account, started_at, finished_at, fetched, delivered, error) \
             SELECT 'a' || (i % {n}), unixepoch() - 2592000 + (i / {n}) * 600, unixepoch() - 2592000 + (i / {n}) * 600 + 2, \
             0, 0, CASE WHEN i % 50 = 7 THEN 'boom' ELSE NULL END FROM k; \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {msgs}) \
             INSERT INTO ledger (account, folder, uidvalidity, uid, uidl, message_id, content_hash, size, state, attempts, destination, first_seen, updated_at, last_error) \
             SELECT 'a' || (i % {n}), 'Archive', 1, i, '', 'old' || i || '@x', 'h' || i, 1000, \
             CASE WHEN i % 97 = 3 THEN 'refused' ELSE 'delivered' END, 1, 'home', unixepoch() - i * 150, unixepoch() - i * 150, \
             CASE WHEN i % 97 = 3 THEN '550 no' ELSE NULL END FROM k; \
             WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {days}) \
             INSERT OR IGNORE INTO daily (account, day, delivered, failed_runs) \
             SELECT 'a' || (i % {n}), unixepoch() / 86400 - 1 - (i / {n}), 20, 1 FROM k; COMMIT;",
            runs = n * 144 * 30 - 1,
            msgs = n * 200 - 1,
            days = n * 29 - 1,
        ))
        .status()
        .expect("sqlite3");
    assert!(seeded.success(), "seeding a year of history failed");
    println!(
        "seeded a year of history ({} runs, {} messages) in {:.1}s",
        n * 144 * 30,
        n * 200,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let status = Command::new(&a.binary)
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .expect("status");
    let status_secs = t.elapsed().as_secs_f64();
    let (metrics_secs, metrics_bytes) = get(metrics, "/metrics");
    println!(
        "`mailferry status` (a new process, {} lines): {:.0} ms; GET /metrics ({} KB): {:.0} ms (target 200 ms each)",
        String::from_utf8_lossy(&status.stdout).lines().count(),
        status_secs * 1000.0,
        metrics_bytes / 1024,
        metrics_secs * 1000.0
    );
    let (page_secs, page_bytes) = get(metrics, "/");
    println!(
        "GET / ({} KB): {:.0} ms",
        page_bytes / 1024,
        page_secs * 1000.0
    );
    let _ = Command::new("kill").arg(me.0.to_string()).status();
    let _ = child.wait();
}
