//! The Gmail API as Google runs it today: per-minute quotas in units that the user's Cloud
//! project decides (6,000 for projects created since May 2026), labels the user deletes
//! while mailferry runs, and uplinks slower than a message is large.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::{Trickle, fixtures};

use crate::gmail::gmail_bench;
use crate::util::{Bench, sqlite, summary};

/// A new project's quota (6,000 units a minute: 240 imports) against the default
/// `max-rate` (10 a second): the rate is learned from the refusals, few of them, and kept
/// in the store for the next start.
#[test]
fn a_new_projects_quota_is_learned_from_few_refusals_and_remembered() {
    let (b, gmail) = gmail_bench("");
    gmail.set("units_per_minute", "6000");
    for n in 0..300 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let started = Instant::now();
    let run = b.once_ok();
    let took = started.elapsed();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 300, delivered 300, skipped 0, failed 0"
    );
    let stats = gmail.stats();
    let refusals = stats["quota_refusals"].as_u64().unwrap_or(u64::MAX);
    // 300 imports under 240 a minute cannot take less than a minute and a bit; each
    // refusal is a wasted request and a sign of pushing blindly.
    assert!(refusals <= 6, "{refusals} quota refusals: {stats}");
    assert!(took < Duration::from_secs(110), "{took:?}");
    let rate: f64 = sqlite(
        &b.state_dir().join("mailferry.db"),
        "SELECT rate FROM gmail_pace",
    )
    .trim()
    .parse()
    .expect("a learned rate in the store");
    assert!((3.5..=4.2).contains(&rate), "learned {rate}/s for 4/s");
}

/// A label the user deletes in Gmail while an import runs: Gmail answers `400 Invalid
/// label` for its old id; the labels are listed again, the label created anew, and no
/// message is refused.
#[test]
fn a_label_deleted_in_gmail_mid_run_is_created_again_and_nothing_is_refused() {
    let (b, gmail) = gmail_bench("concurrency = 1");
    gmail.set("latency", "0.3");
    for n in 0..12 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let once = spawn_once(&b);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gmail.messages().len() < 2 {
        assert!(Instant::now() < deadline, "no import started");
        std::thread::sleep(Duration::from_millis(20));
    }
    gmail.delete_label("Outlook");
    let out = once.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("src: fetched 12, delivered 12, skipped 0, failed 0"),
        "{stdout}"
    );
    let messages = gmail.messages();
    let first = messages[0].label_ids.clone();
    let last = messages[11].label_ids.clone();
    assert!(first.iter().any(|l| l.starts_with("Label_")), "{first:?}");
    assert!(last.iter().any(|l| l.starts_with("Label_")), "{last:?}");
    assert_ne!(first, last, "the label was not created again");
    let states = b.ledger_states();
    assert_eq!(states, [("delivered".to_owned(), 12)], "{states:?}");
}

/// `io-timeout` limits silence, not the whole request: a 6 MB message through a
/// 100 KB/s uplink takes a minute and must arrive, once.
#[test]
fn a_6_mb_import_through_a_100_kb_per_second_link_arrives() {
    let (b, gmail) = gmail_bench("");
    let slow = Trickle::start(gmail.port, 100_000);
    let config = std::fs::read_to_string(b.config_path()).expect("config");
    // 15 s of silence at most; the upload takes about a minute.
    let config: String = config
        .replace(&gmail.url(), &format!("http://127.0.0.1:{}", slow.port))
        .lines()
        .filter(|l| !l.starts_with("io-timeout"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("[daemon]\n", "[daemon]\nio-timeout = \"15s\"\n");
    std::fs::write(b.config_path(), config).expect("config");
    let big = fixtures::sized(1, 6 * 1024 * 1024);
    b.dovecot.add_message("INBOX", &big);
    let run = b.once_ok();
    assert_eq!(
        summary(&run, "src"),
        "src: fetched 1, delivered 1, skipped 0, failed 0"
    );
    let got = gmail.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].raw, big);
}

/// A long first import can be watched: while it runs, `status` shows per folder how many
/// are done of how many, the rate and when the rest should be in; when it is over, the
/// line goes.
#[test]
fn a_long_import_shows_its_progress_in_status_while_it_runs() {
    let (b, gmail) = gmail_bench("concurrency = 1\nmax-rate = 20");
    gmail.set("latency", "0.05");
    for n in 0..150 {
        b.dovecot.add_message("INBOX", &fixtures::simple(n));
    }
    let once = spawn_once(&b);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let status = b.run(&["status"]).stdout;
        if let Some(line) = status
            .lines()
            .find(|l| l.trim_start().starts_with("importing INBOX: "))
        {
            let done: u64 = line
                .trim_start()
                .trim_start_matches("importing INBOX: ")
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if (25..150).contains(&done) {
                seen = line.to_owned();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = once.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        seen.contains(" of 150 done, "),
        "no progress seen: {seen:?}"
    );
    assert!(seen.contains(" a second, the rest in "), "{seen}");
    assert_eq!(gmail.messages().len(), 150);
    let after = b.run(&["status"]).stdout;
    assert!(!after.contains("importing"), "{after}");
}

/// `mailferry once` in the background, its output kept for the end.
fn spawn_once(b: &Bench) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["once", "--config"])
        .arg(b.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}
