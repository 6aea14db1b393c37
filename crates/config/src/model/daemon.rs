//! `[daemon]` and `[notify]`: process-wide settings.

use std::path::PathBuf;
use std::time::Duration;

use mailferry_core::Secret;

use super::Checker;
use crate::raw::RawDaemon;

/// When and where the user hears that an account broke or recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// A short message into the account's own destination (unless the destination is
    /// what broke).
    pub in_destination: bool,
    /// A JSON POST per notice. A secret: Slack and Discord webhook paths, ntfy topics and
    /// healthchecks.io UUIDs are credentials.
    pub webhook: Option<Secret>,
    /// A GET after every successful run (a secret, like the webhook).
    pub ping_url: Option<Secret>,
    /// Failed runs in a row that make an account "failing".
    pub after: u32,
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    /// Where the SQLite state lives.
    pub state_dir: PathBuf,
    /// No account is polled more often than this.
    pub min_interval: Duration,
    /// DNS + TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Each network read or command round trip.
    pub io_timeout: Duration,
    /// Connections to one server host at once, over all accounts: a safety limit (the
    /// providers' own limits are per mailbox).
    pub max_connections_per_host: usize,
    /// Connections of one account at once: its poll and its pushed folders. Outlook.com
    /// and Gmail allow about 15-20 per mailbox.
    pub max_connections_per_account: usize,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Largest message fetched (bytes); larger ones are refused with the reason, without
    /// being held in memory whole. Gmail's import limit by default.
    pub max_message_size: u64,
}

const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Over all accounts on one host: only a safety limit.
const DEFAULT_CONNECTIONS_PER_HOST: u32 = 200;
/// One account's poll and pushed folders: well under the 15-20 a mailbox may hold at
/// Outlook.com and Gmail.
const DEFAULT_CONNECTIONS_PER_ACCOUNT: u32 = 4;

/// Gmail's import limit: 150 MB.
const DEFAULT_MAX_MESSAGE: u64 = 150 * 1024 * 1024;

/// `scheme://host/…` of a URL: what may be shown of a URL whose path is a secret.
#[must_use]
pub fn url_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // user:password@ is a secret too.
    let host = host.rsplit('@').next().unwrap_or_default();
    if scheme.is_empty() {
        format!("{host}/…")
    } else {
        format!("{scheme}://{host}/…")
    }
}

impl Checker<'_> {
    pub(super) fn notify(&mut self, raw: crate::raw::RawNotify) -> Notify {
        let mut url = |key: &str, value: Option<String>| {
            let v = value?;
            if super::oauth::url_ok(&v) {
                Some(Secret::new(v))
            } else {
                // The path and query are the secret part: only the scheme and host are named.
                self.err(
                    format!("notify.{key}"),
                    format!(
                        "{} must be an https:// URL (plain http only to 127.0.0.1)",
                        url_origin(&v)
                    ),
                );
                None
            }
        };
        let webhook = url("webhook", raw.webhook);
        let ping_url = url("ping-url", raw.ping_url);
        let after = raw.notify_after.unwrap_or(3);
        if after == 0 {
            self.err(
                "notify.notify-after".into(),
                "must be at least 1 (failed runs in a row)".into(),
            );
        }
        Notify {
            in_destination: raw.in_destination.unwrap_or(true),
            webhook,
            ping_url,
            after: after.max(1),
        }
    }

    pub(super) fn daemon(&mut self, raw: RawDaemon) -> Daemon {
        let min_interval = self.duration(
            "daemon.min-interval".into(),
            raw.min_interval.as_deref(),
            DEFAULT_MIN_INTERVAL,
        );
        if min_interval < DEFAULT_MIN_INTERVAL {
            if raw.allow_short_intervals == Some(true) {
                self.warnings.push(format!(
                    "daemon.min-interval = {} is below 10 minutes: providers throttle or block accounts that log in this often (Outlook.com: \"Request is throttled\")",
                    humantime::format_duration(min_interval)
                ));
            } else {
                self.err(
                    "daemon.min-interval".into(),
                    "is below 10 minutes, which providers throttle or block; set daemon.allow-short-intervals = true if you mean it (e.g. for your own server)".into(),
                );
            }
        }
        let max_connections_per_host = raw
            .max_connections_per_host
            .unwrap_or(DEFAULT_CONNECTIONS_PER_HOST);
        if max_connections_per_host == 0 {
            self.err(
                "daemon.max-connections-per-host".into(),
                "must be at least 1".into(),
            );
        }
        let max_connections_per_account = raw
            .max_connections_per_account
            .unwrap_or(DEFAULT_CONNECTIONS_PER_ACCOUNT);
        if max_connections_per_account < 2 {
            self.err(
                "daemon.max-connections-per-account".into(),
                "must be at least 2 (one for the polls, one for a pushed folder)".into(),
            );
        }
        let metrics_listen = raw.metrics_listen.and_then(|a| match a.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    "daemon.metrics-listen".into(),
                    format!("{a:?} is not an address:port; write e.g. \"127.0.0.1:9925\""),
                );
                None
            }
        });
        Daemon {
            state_dir: raw
                .state_dir
                .map_or_else(|| PathBuf::from("/var/lib/mailferry"), |d| self.path(&d)),
            min_interval,
            connect_timeout: self.duration(
                "daemon.connect-timeout".into(),
                raw.connect_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            io_timeout: self.duration(
                "daemon.io-timeout".into(),
                raw.io_timeout.as_deref(),
                Duration::from_secs(120),
            ),
            max_connections_per_host: usize::try_from(max_connections_per_host.max(1))
                .unwrap_or(200),
            max_connections_per_account: usize::try_from(max_connections_per_account.max(2))
                .unwrap_or(4),
            metrics_listen,
            max_message_size: match raw
                .max_message_size
                .as_ref()
                .map(crate::raw::toml_size::Size::bytes)
            {
                None => DEFAULT_MAX_MESSAGE,
                Some(Ok(n)) if n >= 1024 => n,
                Some(Ok(_)) => {
                    self.err(
                        "daemon.max-message-size".into(),
                        "is below 1 KiB; no real message fits".into(),
                    );
                    DEFAULT_MAX_MESSAGE
                }
                Some(Err(e)) => {
                    self.err("daemon.max-message-size".into(), e);
                    DEFAULT_MAX_MESSAGE
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Secret, url_origin};
    use crate::testing::Sample;

    #[test]
    fn an_empty_section_takes_the_documented_defaults() {
        let config = Sample::new().load().expect("valid");
        let d = &config.daemon;
        assert_eq!(d.min_interval, Duration::from_secs(600));
        assert_eq!(d.connect_timeout, Duration::from_secs(30));
        assert_eq!(d.io_timeout, Duration::from_secs(120));
        assert_eq!(d.max_connections_per_host, 200);
        assert_eq!(d.max_connections_per_account, 4);
        assert_eq!(d.metrics_listen, None);
        assert_eq!(d.max_message_size, 150 * 1024 * 1024);
        let n = &config.notify;
        assert!(n.in_destination && n.webhook.is_none() && n.ping_url.is_none());
        assert_eq!(n.after, 3);
    }

    #[test]
    fn polling_more_often_than_every_10_minutes_needs_the_explicit_switch() {
        Sample::new()
            .daemon("min-interval = \"2m\"")
            .refused("daemon.min-interval", "allow-short-intervals = true");
        let config = Sample::new()
            .daemon("min-interval = \"2m\"\nallow-short-intervals = true")
            .load()
            .expect("allowed");
        assert_eq!(config.daemon.min_interval, Duration::from_secs(120));
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("daemon.min-interval = 2m is below 10 minutes")),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn sizes_and_addresses_are_read_with_their_units() {
        let config = Sample::new()
            .daemon("max-message-size = \"25MB\"\nmetrics-listen = \"127.0.0.1:9925\"\nio-timeout = \"90s\"")
            .load()
            .expect("valid");
        assert_eq!(config.daemon.max_message_size, 25_000_000);
        assert_eq!(
            config.daemon.metrics_listen,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9925)))
        );
        assert_eq!(config.daemon.io_timeout, Duration::from_secs(90));
        let config = Sample::new()
            .daemon("max-message-size = 2048")
            .load()
            .expect("bytes");
        assert_eq!(config.daemon.max_message_size, 2048);
    }

    #[test]
    fn daemon_mistakes_name_their_key_and_say_what_to_write() {
        for (lines, key, why) in [
            (
                "max-connections-per-host = 0",
                "daemon.max-connections-per-host",
                "at least 1",
            ),
            (
                "metrics-listen = \"localhost\"",
                "daemon.metrics-listen",
                "\"127.0.0.1:9925\"",
            ),
            (
                "max-message-size = 100",
                "daemon.max-message-size",
                "below 1 KiB",
            ),
            (
                "max-message-size = \"lots\"",
                "daemon.max-message-size",
                "write e.g. \"150MB\"",
            ),
            (
                "max-message-size = \"10 parsecs\"",
                "daemon.max-message-size",
                "is not a unit",
            ),
            (
                "connect-timeout = \"soon\"",
                "daemon.connect-timeout",
                "is not a duration",
            ),
        ] {
            Sample::new().daemon(lines).refused(key, why);
        }
    }

    #[test]
    fn notices_go_only_to_https_or_loopback_and_after_at_least_one_failure() {
        Sample::new()
            .notify("notify-after = 0")
            .refused("notify.notify-after", "at least 1");
        let slack = Sample::new()
            .notify("webhook = \"http://hooks.example.org/services/T0SECRET/B0SECRET/xoxSECRET\"");
        slack.refused(
            "notify.webhook",
            "http://hooks.example.org/… must be an https:// URL",
        );
        // The path of a webhook is its credential: never in an error.
        assert!(!slack.errors().contains("SECRET"), "{}", slack.errors());
        Sample::new()
            .notify("ping-url = \"ftp://127.0.0.1/\"")
            .refused("notify.ping-url", "must be an https:// URL");
        let config = Sample::new()
            .notify("webhook = \"http://127.0.0.1:8080/hook\"\nin-destination = false\nnotify-after = 5")
            .load()
            .expect("valid");
        assert_eq!(
            config.notify.webhook.as_ref().map(Secret::expose),
            Some("http://127.0.0.1:8080/hook")
        );
        assert!(!format!("{config:?}").contains("/hook"));
        assert_eq!(
            url_origin("https://user:pw@hc-ping.com/5f2a-uuid?x=1"),
            "https://hc-ping.com/…"
        );
        assert!(!config.notify.in_destination);
        assert_eq!(config.notify.after, 5);
    }
}
