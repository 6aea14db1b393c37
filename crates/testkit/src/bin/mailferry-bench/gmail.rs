//! `--dest gmail` and `--gmail-quota`: the mailbox delivered to the fake Gmail API.

use std::process::Command;

use mailferry_testkit::{Dovecot, USER};

use super::Args;
use super::measure::{report, timed};

/// Delivers the mailbox to the fake Gmail API with Gmail's quota and reports the rate.
pub(crate) fn pass(a: &Args, dovecot: &Dovecot, dir: &std::path::Path, total: usize) {
    let gmail = mailferry_testkit::FakeGmail::start(&dovecot.idp);
    match a.gmail_quota {
        Some(units) => gmail.set("units_per_minute", &units.to_string()),
        None => gmail.set("rate", "10"),
    }
    // Gmail takes a few hundred milliseconds per import; only concurrent uploads reach the
    // quota then.
    gmail.set("latency", "0.5");
    dovecot.idp.grant("bench-token", USER);
    std::fs::write(dir.join("gmail.token"), "bench-token").expect("write");
    let ca = dovecot.pki.ca_pem.display().to_string();
    let config = dir.join("gmail.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
state-dir = "state-gmail"
[[destination]]
name = "gmail"
kind = "gmail-api"
api-url = "{url}"
auth = {{ method = "oauth2", access-token-file = "gmail.token" }}
[[account]]
name = "bench"
host = "127.0.0.1"
port = {imaps}
tls-ca-file = "{ca}"
username = "{USER}"
auth = {{ method = "password", password-file = "pass" }}
destination = "gmail"
"#,
            url = gmail.url(),
            imaps = dovecot.imaps_port,
        ),
    )
    .expect("write config");
    let t = timed(
        Command::new(&a.binary)
            .arg("once")
            .arg("--config")
            .arg(&config),
    );
    let secs = t.secs;
    let stats = gmail.stats();
    let got = gmail.digests().len();
    report("Gmail API", got, total, &t);
    let times: Vec<f64> = stats["upload_times"]
        .as_array()
        .map(|t| t.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        println!(
            "{:>16}: {:.2} imports/s between the first and the last upload (quota 10/s, 0.5 s per import), {} throttled by the fake",
            "Gmail API",
            (times.len() - 1) as f64 / (last - first),
            stats["throttled"]
        );
    }
    if let Some(units) = a.gmail_quota {
        // The quota's floor: 25 units an import.
        let imports = a.messages;
        let floor = imports as f64 * 25.0 * 60.0 / f64::from(units);
        let minutes = secs / 60.0;
        println!(
            "{:>16}: {imports} imports in {secs:.0} s under {units} units/min; the quota's floor is {floor:.0} s ({:.1}%); {} quota refusals ({:.1} a minute)",
            "Gmail quota",
            100.0 * floor / secs,
            stats["quota_refusals"],
            stats["quota_refusals"].as_f64().unwrap_or(0.0) / minutes,
        );
    }
    assert_eq!(got, a.messages, "not every message arrived");
}
