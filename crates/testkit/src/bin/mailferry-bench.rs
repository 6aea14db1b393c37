//! `scripts/bench`: imports N messages of mixed sizes from the test Dovecot to the test SMTP
//! receiver with the release `mailferry` binary and prints messages/s, MB/s and peak RSS.
//! With `--fetchmail`, runs Debian's fetchmail over the same mailbox for comparison.
//! With `--dest gmail`, delivers to the fake Gmail API instead, whose per-user quota is set
//! to Gmail's (10 imports/s), and shows whether the delivery rate sits at the quota.
//! With `--postfix`, delivers to a private Postfix (which offers PIPELINING) instead of
//! aiosmtpd.
//! With `--floor` (and `--plain-smtp`), each round also runs `mailferry-floor`: the least a
//! program can do to move the mailbox over the same connections, to show what the wire
//! alone costs on this machine.
//! A benchmark, not a test: it asserts only that everything arrived.

#![allow(clippy::print_stdout, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use mailferry_testkit::{Dovecot, PASSWORD, SmtpReceiver, USER, fixtures};

#[path = "mailferry-bench/gmail.rs"]
mod gmail;
#[path = "mailferry-bench/many.rs"]
mod many;
#[path = "mailferry-bench/measure.rs"]
mod measure;

use measure::{Pass, mb, report, timed};

struct Args {
    messages: usize,
    binary: PathBuf,
    /// `--against PATH`: another build (the code before a change), run in alternation.
    against: Option<PathBuf>,
    /// `--rounds N`: every pass this many times (binaries alternating), then a summary.
    rounds: usize,
    fetchmail: bool,
    /// `--floor`: a pass of `mailferry-floor` each round (IMAP to plain SMTP).
    floor: bool,
    plain_smtp: bool,
    /// `--postfix`: deliver to a private Postfix (PIPELINING, STARTTLS) instead of aiosmtpd.
    postfix: bool,
    pop3: bool,
    small: bool,
    gmail: bool,
    /// `--gmail-quota UNITS`: the fake enforces UNITS per user per minute (Gmail's real
    /// quota shape) instead of 10 requests a second.
    gmail_quota: Option<u32>,
    second_poll: bool,
    /// `--push N`: N accounts watching with IDLE.
    push: Option<usize>,
    /// `--seconds S`: how long the push footprint (or the many accounts' steady state) is
    /// measured.
    seconds: u64,
    /// `--accounts N`: N accounts on one Dovecot (200 pushed, half polled every 10 minutes,
    /// the rest hourly).
    accounts: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        messages: 10_000,
        binary: PathBuf::from("target/release/mailferry"),
        against: None,
        rounds: 0,
        fetchmail: false,
        floor: false,
        plain_smtp: false,
        postfix: false,
        pop3: false,
        small: false,
        gmail: false,
        gmail_quota: None,
        second_poll: false,
        push: None,
        seconds: 600,
        accounts: None,
    };
    let mut messages_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => {
                a.messages = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--messages N");
                messages_given = true;
            }
            "--binary" => a.binary = it.next().map(PathBuf::from).expect("--binary PATH"),
            "--against" => a.against = it.next().map(PathBuf::from),
            "--rounds" => {
                a.rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--rounds N (1 or more)");
            }
            "--fetchmail" => a.fetchmail = true,
            "--floor" => a.floor = true,
            "--plain-smtp" => a.plain_smtp = true,
            "--postfix" => a.postfix = true,
            "--pop3" => a.pop3 = true,
            "--small" => a.small = true,
            "--second-poll" => a.second_poll = true,
            "--push" => a.push = it.next().and_then(|n| n.parse().ok()).or(Some(20)),
            "--accounts" => {
                a.accounts = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .expect("--accounts N"),
                );
            }
            "--seconds" => {
                a.seconds = it.next().and_then(|n| n.parse().ok()).expect("--seconds S");
            }
            "--gmail-quota" => {
                a.gmail = true;
                a.gmail_quota = it.next().and_then(|n| n.parse().ok());
                assert!(a.gmail_quota.is_some(), "--gmail-quota UNITS_PER_MINUTE");
            }
            "--dest" => match it.next().as_deref() {
                Some("gmail") => a.gmail = true,
                Some("smtp") => a.gmail = false,
                other => panic!("--dest gmail|smtp, not {other:?}"),
            },
            other => {
                panic!("unknown argument {other}; use --messages N, --binary PATH, --fetchmail")
            }
        }
    }
    if a.rounds == 0 {
        // Two rounds when comparing: one alone says little on a noisy machine.
        a.rounds = if a.against.is_some() { 2 } else { 1 };
    }
    assert!(
        !a.floor || (a.plain_smtp && !a.postfix),
        "--floor delivers to aiosmtpd without TLS: add --plain-smtp, leave out --postfix"
    );
    if a.gmail && !messages_given {
        // At Gmail's 10 imports/s, 10,000 messages take 17 minutes.
        a.messages = 300;
    }
    a
}

/// Sizes between 1 KB and 5 MB averaging about 100 KB, the same for every run.
fn sizes(n: usize) -> Vec<usize> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |max: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % max).expect("fits")
    };
    (0..n)
        .map(|_| match next(100) {
            0 => 1_000_000 + next(4_000_000),
            1..=9 => 100_000 + next(900_000),
            _ => 1_000 + next(49_000),
        })
        .collect()
}

/// The second poll of a large folder with nothing new: what it costs listed in full (as
/// every poll did before incremental listing) and listed from the last UIDNEXT on.
fn second_poll(a: &Args) {
    use mailferry_testkit::{FakeImap, ImapScript};
    let n = if a.messages == 10_000 {
        100_000
    } else {
        a.messages
    };
    let messages: Vec<(u32, Vec<u8>)> = (1..=u32::try_from(n).expect("fits"))
        .map(|u| (u, fixtures::simple(u as usize)))
        .collect();
    let fake = FakeImap::start(ImapScript {
        messages,
        ..ImapScript::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pass"), PASSWORD).expect("write");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate-dir = \"state\"\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n[[account]]\nname = \"big\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{}\"\nauth = {{ method = \"password\", password-file = \"pass\" }}\ndestination = \"home\"\nfirst-run = \"new-only\"\n",
            fake.port,
            mailferry_testkit::USER
        ),
    )
    .expect("config");
    let poll = |what: &str| {
        let bytes = fake.log().bytes_sent;
        let t = Instant::now();
        let out = Command::new(&a.binary)
            .args(["once", "--config"])
            .arg(&config)
            .output()
            .expect("run mailferry");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let secs = t.elapsed().as_secs_f64();
        let read = fake.log().bytes_sent - bytes;
        println!(
            "{what}: {secs:.2}s, {:.2} MB read from the server",
            read as f64 / 1e6
        );
    };
    poll(&format!(
        "first poll of {n} messages (first-run = new-only, nothing delivered)"
    ));
    poll("second poll, nothing new, listed from the last UIDNEXT (now)");
    let db = dir.path().join("state/mailferry.db");
    let forget = Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE folders_seen SET uidnext = NULL")
        .status()
        .expect("sqlite3");
    assert!(forget.success());
    poll("second poll, nothing new, listed in full (every poll before)");
}

/// `--push N`: the footprint of N accounts held in IDLE for `--seconds` (RSS, CPU,
/// connections, logins), then the latency of one pushed message per account.
fn push(a: &Args, n: usize) {
    let dovecot = Dovecot::start();
    let smtp = SmtpReceiver::start(Some(&dovecot.pki));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pass"), PASSWORD).expect("write");
    let mut config = format!(
        "[daemon]\nstate-dir = \"state\"\nmax-connections-per-host = 40\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\ntls-ca-file = \"{}\"\nenvelope-to = [\"me@home.example\"]\n",
        smtp.port,
        dovecot.pki.ca_pem.display()
    );
    for i in 0..n {
        config.push_str(&format!(
            "[[account]]\nname = \"a{i}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\ntls-ca-file = \"{}\"\nusername = \"{USER}\"\nauth = {{ method = \"password\", password-file = \"pass\" }}\ndestination = \"home\"\npush = \"idle\"\ninterval = \"6h\"\nfirst-run = \"new-only\"\n",
            dovecot.imaps_port,
            dovecot.pki.ca_pem.display()
        ));
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new(&a.binary)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run mailferry");
    let pid = child.id();
    let status = || {
        let out = Command::new(&a.binary)
            .args(["status", "--config"])
            .arg(&path)
            .output()
            .expect("status");
        String::from_utf8_lossy(&out.stdout)
            .matches("push INBOX: connected")
            .count()
    };
    let t = Instant::now();
    while status() < n {
        assert!(
            t.elapsed().as_secs() < 120,
            "the push connections did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    println!(
        "{n} accounts pushing after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let me = many::Proc(pid);
    let (cpu, rss, sockets) = (|| me.cpu_ticks(), || me.rss_kb(), || me.files().1);
    let db = dir.path().join("state/mailferry.db");
    let logins = || {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT COUNT(*) FROM push_logins")
            .output()
            .expect("sqlite3");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let (cpu0, logins0, t0) = (cpu(), logins(), Instant::now());
    let mut peak = rss();
    while t0.elapsed().as_secs() < a.seconds {
        std::thread::sleep(std::time::Duration::from_secs(1));
        peak = peak.max(rss());
    }
    let secs = t0.elapsed().as_secs_f64();
    let used = (cpu() - cpu0) as f64 / 100.0;
    println!(
        "idle {secs:.0}s: RSS {} kB (peak {peak} kB), CPU {used:.2}s ({:.3}% of one core), {} sockets open, {} logins during the window ({:.1}/hour)",
        rss(),
        100.0 * used / secs,
        sockets(),
        logins() - logins0,
        (logins() - logins0) as f64 * 3600.0 / secs
    );
    // Then one message: every account delivers it (each reads the same mailbox).
    let t = Instant::now();
    dovecot.add_message("INBOX", &fixtures::simple(1));
    while smtp.messages().len() < n {
        assert!(t.elapsed().as_secs() < 60, "pushed mail did not arrive");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!(
        "one new message, delivered by all {n} accounts in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
}

/// The mailbox the `--postfix` pass delivers to.
const POSTFIX_RCPT: &str = "bench@home.example";

fn main() {
    let a = args();
    if a.second_poll {
        second_poll(&a);
        return;
    }
    if let Some(n) = a.push {
        push(&a, n);
        return;
    }
    if let Some(n) = a.accounts {
        many::accounts(&a, n);
        return;
    }
    let dovecot = Dovecot::start();
    // The receiver is Python: with STARTTLS it is usually the slowest part of the bench.
    // --plain-smtp removes its TLS cost to show how fast mailferry itself can go.
    let smtp = SmtpReceiver::start((!a.plain_smtp).then_some(&dovecot.pki));
    let smtp_tls = if a.plain_smtp { "none" } else { "starttls" };
    // --postfix: what most home servers run, with PIPELINING (aiosmtpd has none).
    let postfix = a
        .postfix
        .then(|| mailferry_testkit::Postfix::start(&[POSTFIX_RCPT], &[]));
    let (smtp_port, smtp_ca, rcpt) = match &postfix {
        Some(p) => (
            p.port,
            p.pki.ca_pem.display().to_string(),
            POSTFIX_RCPT.to_owned(),
        ),
        None => (
            smtp.port,
            dovecot.pki.ca_pem.display().to_string(),
            "bench@home.example".to_owned(),
        ),
    };
    // --small: 1-5 KB messages, where round trips rather than bytes set the pace.
    let sizes = if a.small {
        sizes(a.messages)
            .iter()
            .map(|s| 1_000 + s % 4_000)
            .collect()
    } else {
        sizes(a.messages)
    };
    let total: usize = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let t = Instant::now();
    for (i, &size) in sizes.iter().enumerate() {
        dovecot.add_message("INBOX", &fixtures::sized(i, size));
    }
    println!(
        "seeded {} messages, {:.1} MB (largest {:.1} MB) in {:.1}s",
        a.messages,
        mb(total),
        mb(largest),
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pass"), PASSWORD).expect("write");
    let ca = dovecot.pki.ca_pem.display().to_string();
    let imap = format!("port = {}", dovecot.imaps_port);
    let mut passes = vec![("mailferry IMAP", imap)];
    if a.pop3 {
        let pop3 = format!("protocol = \"pop3\"\nport = {}", dovecot.pop3s_port);
        passes.push(("POP3 pipelined", pop3.clone()));
        passes.push(("POP3 one by one", format!("{pop3}\npipelining = false")));
    }
    if a.gmail {
        gmail::pass(&a, &dovecot, dir.path(), total);
        return;
    }
    let mut received = 0;
    let binaries: Vec<&std::path::Path> = std::iter::once(a.binary.as_path())
        .chain(a.against.as_deref())
        .collect();
    let compare = binaries.len() > 1 || a.rounds > 1 || a.floor;
    // Beside this program: `scripts/bench` builds the test kit's binaries together.
    let floor = std::env::current_exe()
        .expect("own path")
        .with_file_name("mailferry-floor");
    let mut results = Vec::new();
    let mut n = 0;
    for round in 1..=a.rounds {
        // Every other round in the other order (A B, B A, ...): a machine that speeds up or
        // slows down during the run favours neither build.
        let mut order: Vec<(usize, &std::path::Path)> =
            binaries.iter().copied().enumerate().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for (b, binary) in order {
            if compare {
                println!("round {round}: {}", binary.display());
            }
            for (label, account) in &passes {
                n += 1;
                // A fresh state per pass: each pass imports the whole mailbox (kept at the source).
                let config = dir.path().join(format!("bench{n}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        r#"[daemon]
state-dir = "state{n}"
[[destination]]
name = "rx"
kind = "smtp"
host = "localhost"
port = {smtp_port}
tls = "{smtp_tls}"
tls-ca-file = "{smtp_ca}"
envelope-to = ["{rcpt}"]
[[account]]
name = "bench"
host = "127.0.0.1"
{account}
tls-ca-file = "{ca}"
username = "{USER}"
auth = {{ method = "password", password-file = "pass" }}
destination = "rx"
"#,
                    ),
                )
                .expect("write config");
                let t = timed(
                    Command::new(binary)
                        .arg("once")
                        .arg("--config")
                        .arg(&config),
                );
                let now = match &postfix {
                    Some(p) => p.wait_delivered(POSTFIX_RCPT, received + a.messages).len(),
                    None => smtp.count(),
                };
                report(label, now - received, total, &t);
                assert_eq!(
                    now - received,
                    a.messages,
                    "{label}: not every message arrived"
                );
                received = now;
                if postfix.is_none() {
                    // A GB a pass: gone before the next.
                    smtp.clear();
                    received = 0;
                }
                results.push(Pass {
                    binary: b,
                    mode: label,
                    messages: a.messages,
                    bytes: total,
                    timed: t,
                });
            }
        }
        if a.floor {
            let t = timed(Command::new(&floor).args([
                dovecot.imaps_port.to_string(),
                ca.clone(),
                USER.to_owned(),
                PASSWORD.to_owned(),
                smtp.port.to_string(),
                rcpt.clone(),
            ]));
            let got = smtp.count();
            report("floor IMAP", got, total, &t);
            assert_eq!(got, a.messages, "floor IMAP: not every message arrived");
            smtp.clear();
            results.push(Pass {
                binary: binaries.len(),
                mode: "floor IMAP",
                messages: a.messages,
                bytes: total,
                timed: t,
            });
        }
    }
    if compare {
        let mut all = binaries.clone();
        if a.floor {
            all.push(&floor);
        }
        measure::summary(&all, &results);
    }

    if a.fetchmail {
        let rc = dir.path().join("fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "set no syslog\nset postmaster \"bench\"\npoll 127.0.0.1 service {imaps} protocol IMAP\n  user \"{USER}\" there with password \"{PASSWORD}\" is \"bench@home.example\" here\n  ssl sslcertck sslcertfile \"{ca}\" sslcommonname \"localhost\"\n  smtphost \"localhost/{smtp}\" keep fetchall limit 0 fetchsizelimit 0\n",
                imaps = dovecot.imaps_port,
                smtp = smtp.port,
            ),
        )
        .expect("write fetchmailrc");
        std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let t = timed(
            Command::new("fetchmail")
                .arg("-f")
                .arg(&rc)
                .arg("--nodetach")
                .arg("--silent")
                .arg("--pidfile")
                .arg(dir.path().join("fetchmail.pid"))
                .env("HOME", dir.path()),
        );
        let got = smtp.count() - received;
        report("fetchmail", got, total * got / a.messages.max(1), &t);
    }
}
