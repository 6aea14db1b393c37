//! The checked configuration and the second stage that builds it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::oauth::{OAuthProvider, OAuthSettings, TokenUse};
use crate::raw::{RawAccount, RawAuth, RawConfig, RawDaemon, RawDestination};
use crate::{Preset, presets};
use mailferry_core::Secret;

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[daemon]`
    pub daemon: Daemon,
    /// Every `[[destination]]`, names unique.
    pub destinations: Vec<DestinationConfig>,
    /// Every `[[account]]`, names unique, each referring to an existing destination.
    pub accounts: Vec<AccountConfig>,
    /// `[notify]`
    pub notify: Notify,
    /// Things that work but that the user should hear about (logged at start).
    pub warnings: Vec<String>,
}

/// When and where the user hears that an account broke or recovered.
#[derive(Debug, Clone)]
pub struct Notify {
    /// A short message into the account's own destination (unless the destination is
    /// what broke).
    pub in_destination: bool,
    /// A JSON POST per notice.
    pub webhook: Option<String>,
    /// A GET after every successful run.
    pub ping_url: Option<String>,
    /// Failed runs in a row that make an account "failing".
    pub after: u32,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Where the SQLite state lives.
    pub state_dir: PathBuf,
    /// No account is polled more often than this.
    pub min_interval: Duration,
    /// DNS + TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Each network read or command round trip.
    pub io_timeout: Duration,
    /// Connections to one server host at once, over all accounts.
    pub max_connections_per_host: usize,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Largest message fetched (bytes); larger ones are refused with the reason, without
    /// being held in memory whole. Gmail's import limit by default.
    pub max_message_size: u64,
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (IMAP 993, SMTP 465).
    Implicit,
    /// Plain text, then STARTTLS before anything else is sent (IMAP 143, SMTP 587).
    StartTls,
    /// No TLS at all. Only for loopback tests; logs a warning.
    None,
}

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address; also the name the certificate must carry.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: TlsMode,
    /// PEM bytes of extra CA certificates to trust, read from `tls-ca-file`.
    pub ca_pem: Option<Vec<u8>>,
}

/// The protocol an account is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// IMAP4rev1.
    Imap,
    /// POP3: one maildrop, messages keyed by UIDL.
    Pop3,
}

/// What happens at the source once a delivery is committed in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterDelivery {
    /// Leave the message as it is (like Gmail's "leave a copy on the server").
    Keep,
    /// Set `\Seen` (IMAP).
    MarkSeen,
    /// Move it to this folder (IMAP).
    Move(String),
    /// Remove it (IMAP: expunged; POP3: `DELE`, committed by `QUIT`).
    Delete,
}

/// How a source logs in.
#[derive(Debug, Clone)]
pub enum SourceAuth {
    /// LOGIN with a password (or an app password).
    Password(Secret),
    /// SASL XOAUTH2 with an OAuth2 access token kept in a file by something else. The file
    /// is read at every login, so a token refreshed there is picked up without a restart.
    OAuth2TokenFile(PathBuf),
    /// SASL XOAUTH2/OAUTHBEARER with tokens that mailferry gets (`mailferry auth`) and
    /// refreshes itself.
    OAuth2(OAuthSettings),
}

/// One `[[account]]`: a mailbox to gather from.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// Unique name, used in logs, the ledger and the CLI.
    pub name: String,
    /// The preset applied, if any.
    pub provider: Option<&'static Preset>,
    /// How the mailbox is read.
    pub protocol: Protocol,
    /// The server.
    pub endpoint: Endpoint,
    /// Login name.
    pub username: String,
    /// Login method and secret.
    pub auth: SourceAuth,
    /// Folders to gather, in order.
    pub folders: Vec<String>,
    /// How often the daemon polls (never below `min-interval`).
    pub interval: Duration,
    /// Name of the destination (checked to exist).
    pub destination: String,
    /// What happens at the source after delivery.
    pub after_delivery: AfterDelivery,
    /// POP3: pipeline RETR commands when the server offers PIPELINING.
    pub pipelining: bool,
    /// Gmail destination: extra labels (names) for this account's messages.
    pub labels: Vec<String>,
    /// Folders whose messages are spam (compared without case).
    pub spam_folders: Vec<String>,
    /// Whether the service runs this account (`enabled = false` keeps it idle).
    pub enabled: bool,
    /// What the first run of each folder delivers.
    pub first_run: FirstRun,
    /// IMAP IDLE on some folders (`push = "idle"`).
    pub push: Option<crate::push::Push>,
}

/// What the first run of a folder delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// Everything in it.
    All,
    /// Nothing: what is there now is recorded, only later mail is delivered.
    NewOnly,
    /// Only what the server received on or after this day (Unix seconds, 00:00 UTC).
    Since(i64),
}

/// `YYYY-MM-DD` as Unix seconds at 00:00 UTC.
fn parse_day(text: &str) -> Option<i64> {
    let mut it = text.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

/// The junk folder names of the common providers.
pub const DEFAULT_SPAM_FOLDERS: &[&str] = &[
    "Junk",
    "Junk Email",
    "Junk E-mail",
    "Spam",
    "Bulk Mail",
    "[Gmail]/Spam",
];

impl AccountConfig {
    /// Whether `folder` is one of this account's spam folders.
    #[must_use]
    pub fn is_spam_folder(&self, folder: &str) -> bool {
        self.spam_folders
            .iter()
            .any(|f| f.eq_ignore_ascii_case(folder))
    }
}

/// The envelope sender used when re-sending over SMTP: where the destination sends the
/// bounce of a message it accepted and could not deliver after all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpSender {
    /// `envelope-from = "return-path"`: the message's own `Return-Path`, else its `From`,
    /// else the null sender `<>` (bounces go to the original sender, a third party).
    FromMessage,
    /// `envelope-from = "<>"`: the null sender (bounces are dropped).
    Null,
    /// Always this address.
    Fixed(String),
    /// No `envelope-from`: the first `envelope-to`, so that bounces reach the user.
    Recipient,
}

/// An SMTP destination.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The server.
    pub endpoint: Endpoint,
    /// SMTP AUTH, when the server needs it.
    pub auth: SmtpAuth,
    /// Envelope recipients: the mailbox that gathers the mail.
    pub envelope_to: Vec<String>,
    /// Envelope sender policy.
    pub envelope_from: SmtpSender,
    /// Name sent with EHLO.
    pub hello_name: Option<String>,
}

/// How mailferry logs in to an SMTP destination.
#[derive(Debug, Clone)]
pub enum SmtpAuth {
    /// No AUTH (a local MTA that trusts this host).
    None,
    /// AUTH PLAIN/LOGIN.
    Password {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// AUTH XOAUTH2 with tokens from `mailferry auth`.
    OAuth2 {
        /// User name (the mailbox's address).
        username: String,
        /// The app registration.
        settings: OAuthSettings,
    },
}

/// `import` or `insert` into Gmail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GmailMode {
    /// `users.messages.import`: Gmail classifies the message like received mail.
    Import,
    /// `users.messages.insert`: stored as is, like IMAP APPEND.
    Insert,
}

/// How the Gmail destination gets its access token.
#[derive(Debug, Clone)]
pub enum GmailAuth {
    /// Tokens from `mailferry auth`.
    OAuth2(OAuthSettings),
    /// An access token kept fresh in a file by something else.
    TokenFile(PathBuf),
}

/// The Gmail API destination.
#[derive(Debug, Clone)]
pub struct GmailConfig {
    /// Base URL of the API.
    pub api_url: String,
    /// Import or insert.
    pub mode: GmailMode,
    /// Labels every message gets; `INBOX` becomes `SPAM` for spam folders.
    pub labels: Vec<String>,
    /// `dateHeader` or `receivedTime`.
    pub internal_date_source: String,
    /// Import: never mark as spam.
    pub never_mark_spam: bool,
    /// Import: process calendar invitations.
    pub process_for_calendar: bool,
    /// Look an interrupted import up by Message-ID before importing again.
    pub exactly_once: bool,
    /// Requests per second to this mailbox.
    pub max_rate: f64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Sign-in.
    pub auth: GmailAuth,
}

/// What kind of destination, with its settings.
#[derive(Debug, Clone)]
pub enum DestinationKind {
    /// Re-send over SMTP.
    Smtp(SmtpConfig),
    /// Import through the Gmail API.
    Gmail(GmailConfig),
}

/// One `[[destination]]`.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Unique name that accounts refer to.
    pub name: String,
    /// Kind and settings.
    pub kind: DestinationKind,
}

impl DestinationConfig {
    /// The OAuth2 registration this destination signs in with, and its login name when it
    /// has one.
    #[must_use]
    pub fn oauth(&self) -> Option<(&OAuthSettings, Option<&str>)> {
        match &self.kind {
            DestinationKind::Smtp(SmtpConfig {
                auth: SmtpAuth::OAuth2 { username, settings },
                ..
            }) => Some((settings, Some(username))),
            DestinationKind::Gmail(GmailConfig {
                auth: GmailAuth::OAuth2(settings),
                ..
            }) => Some((settings, None)),
            _ => None,
        }
    }
}

impl Config {
    /// The account called `name`.
    #[must_use]
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The destination called `name`.
    #[must_use]
    pub fn destination(&self, name: &str) -> Option<&DestinationConfig> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// Second stage: checks everything in `raw` and resolves presets, durations and
    /// secrets. Relative `*-file` paths are taken relative to `base` (the config file's
    /// directory). Returns all problems, never just the first.
    ///
    /// # Errors
    /// Every problem found, each with its key path.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Self, Vec<ConfigError>> {
        Self::from_raw_scoped(raw, base, &SecretScope::All)
    }

    /// [`Config::from_raw`], reading only the secrets `scope` asks for. A secret left
    /// unread is still checked for its shape (exactly one of `*-file`/`*-env`), but its
    /// file is not opened: it holds an empty value that must not be used.
    ///
    /// # Errors
    /// Every problem found, each with its key path.
    pub fn from_raw_scoped(
        raw: RawConfig,
        base: &Path,
        scope: &SecretScope,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut cx = Checker {
            base,
            errors: Vec::new(),
            warnings: Vec::new(),
            scope,
            read_secrets: true,
        };
        let daemon = cx.daemon(raw.daemon.unwrap_or_default());
        let notify = cx.notify(raw.notify.unwrap_or_default());

        let mut destinations = Vec::new();
        let mut names = HashSet::new();
        for (i, d) in raw.destination.into_iter().enumerate() {
            let key = format!("destination[{i}]");
            if let Some(d) = cx.destination(&key, d) {
                if !names.insert(d.name.clone()) {
                    cx.err(
                        format!("{key}.name"),
                        format!("the name {:?} is used twice", d.name),
                    );
                }
                destinations.push(d);
            }
        }

        let mut accounts = Vec::new();
        let mut account_names = HashSet::new();
        for (i, a) in raw.account.into_iter().enumerate() {
            let key = format!("account[{i}]");
            if let Some(a) = cx.account(&key, a, &daemon, &names) {
                if !account_names.insert(a.name.clone()) {
                    cx.err(
                        format!("{key}.name"),
                        format!("the name {:?} is used twice", a.name),
                    );
                }
                accounts.push(a);
            }
        }
        if accounts.is_empty() && cx.errors.is_empty() {
            cx.err(
                String::new(),
                "no [[account]] is configured: add one (see config/mailferry.example.toml)".into(),
            );
        }

        if cx.errors.is_empty() {
            Ok(Self {
                daemon,
                destinations,
                accounts,
                notify,
                warnings: cx.warnings,
            })
        } else {
            Err(cx.errors)
        }
    }
}

/// Which secrets (`password-file`, `client-secret-file`, `access-token-file`, their `-env`
/// twins) a command reads. `status` needs none, `check NAME` and `auth NAME` only NAME's
/// (and its destination's): a secret that only the service can read (a `LoadCredential=`
/// file, a file of the service user's) must not stop the other commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretScope {
    /// Every account's and destination's secrets (`run`, `once`, `check-config`).
    All,
    /// No secrets at all.
    None,
    /// Only the secrets of the accounts and destinations with these names.
    Only(Vec<String>),
}

impl SecretScope {
    fn covers(&self, owner: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Only(names) => owner.is_some_and(|o| names.iter().any(|n| n == o)),
        }
    }
}

/// Expands to systemd's credentials directory in `*-file` paths.
const CREDENTIALS: &str = "${CREDENTIALS_DIRECTORY}";

/// Collects errors while checking the raw configuration.
pub(crate) struct Checker<'a> {
    base: &'a Path,
    errors: Vec<ConfigError>,
    pub(crate) warnings: Vec<String>,
    scope: &'a SecretScope,
    /// Whether the account or destination being checked is one whose secrets are read.
    read_secrets: bool,
}

const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Gmail's import limit: 150 MB.
const DEFAULT_MAX_MESSAGE: u64 = 150 * 1024 * 1024;

impl Checker<'_> {
    pub(crate) fn err(&mut self, key: String, message: String) {
        self.errors.push(ConfigError {
            key,
            line: None,
            message,
        });
    }

    fn required<T>(&mut self, key: String, value: Option<T>, what: &str) -> Option<T> {
        if value.is_none() {
            self.err(key, format!("missing: set it to {what}"));
        }
        value
    }

    pub(crate) fn duration(
        &mut self,
        key: String,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.err(key, "must be longer than zero".into());
                    default
                }
                Err(e) => {
                    self.err(key, format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"15m\" or \"1h\""));
                    default
                }
            },
        }
    }

    /// Resolves a path from the file: `${CREDENTIALS_DIRECTORY}` expands to systemd's
    /// credentials directory (`LoadCredential=`), and relative paths are taken relative to
    /// the configuration file's directory.
    pub(crate) fn path(&self, value: &str) -> PathBuf {
        let expanded;
        let value = if value.contains(CREDENTIALS) {
            let dir = std::env::var("CREDENTIALS_DIRECTORY")
                .unwrap_or_else(|_| "/run/credentials/CREDENTIALS_DIRECTORY-is-not-set".into());
            expanded = value.replace(CREDENTIALS, &dir);
            expanded.as_str()
        } else {
            value
        };
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// Reads a password from `password-file` or `password-env`; exactly one must be set.
    fn secret(&mut self, key: &str, file: Option<String>, env: Option<String>) -> Option<Secret> {
        self.named_secret(key, "password", file, env)
    }

    /// Reads a secret from `{stem}-file` or `{stem}-env`; exactly one of them must be set.
    pub(crate) fn named_secret(
        &mut self,
        key: &str,
        stem: &str,
        file: Option<String>,
        env: Option<String>,
    ) -> Option<Secret> {
        match (file, env) {
            (Some(_), Some(_)) => {
                self.err(
                    format!("{key}{stem}-file"),
                    format!("set either {stem}-file or {stem}-env, not both"),
                );
                None
            }
            (Some(_), None) | (None, Some(_)) if !self.read_secrets => {
                Some(Secret::new(String::new()))
            }
            (Some(file), None) => {
                let path = self.path(&file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let value = text.trim_end_matches(['\r', '\n']).to_owned();
                        if value.is_empty() {
                            self.err(
                                format!("{key}{stem}-file"),
                                format!("{} is empty", path.display()),
                            );
                            None
                        } else {
                            Some(Secret::new(value))
                        }
                    }
                    Err(e) => {
                        let hint = if file.contains(CREDENTIALS)
                            && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
                        {
                            format!(
                                "; {CREDENTIALS} is set only inside the service (LoadCredential=): run this command in the unit's context, e.g. `systemd-run --pty --wait -p User=mailferry -p LoadCredential=NAME:/etc/mailferry/NAME mailferry ...`, or keep the secret in a file the mailferry user may read"
                            )
                        } else {
                            String::new()
                        };
                        self.err(
                            format!("{key}{stem}-file"),
                            format!("cannot read {}: {e}{hint}", path.display()),
                        );
                        None
                    }
                }
            }
            (None, Some(var)) => match std::env::var(&var) {
                Ok(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    self.err(
                        format!("{key}{stem}-env"),
                        format!("the environment variable {var} is not set or empty"),
                    );
                    None
                }
            },
            (None, None) => {
                self.err(
                    format!("{key}{stem}-file"),
                    format!(
                        "missing: set {stem}-file (a file holding only the {stem}) or {stem}-env"
                    ),
                );
                None
            }
        }
    }

    fn tls(&mut self, key: String, value: Option<&str>, default: TlsMode) -> TlsMode {
        match value {
            None => default,
            Some("implicit") => TlsMode::Implicit,
            Some("starttls") => TlsMode::StartTls,
            Some("none") => {
                self.warnings.push(format!(
                    "{key} = \"none\": passwords and mail cross the network unencrypted"
                ));
                TlsMode::None
            }
            Some(other) => {
                self.err(
                    key,
                    format!(
                        "{other:?} is not a TLS mode; use \"implicit\", \"starttls\" or \"none\""
                    ),
                );
                default
            }
        }
    }

    fn ca_file(&mut self, key: String, value: Option<&str>) -> Option<Vec<u8>> {
        let path = self.path(value?);
        match std::fs::read(&path) {
            Ok(pem) if pem.windows(17).any(|w| w == b"BEGIN CERTIFICATE") => Some(pem),
            Ok(_) => {
                self.err(key, format!("{} holds no PEM certificate", path.display()));
                None
            }
            Err(e) => {
                self.err(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn notify(&mut self, raw: crate::raw::RawNotify) -> Notify {
        let mut url = |key: &str, value: Option<String>| {
            let v = value?;
            if crate::oauth::url_ok(&v) {
                Some(v)
            } else {
                self.err(
                    format!("notify.{key}"),
                    format!("{v:?} must be an https:// URL (plain http only to 127.0.0.1)"),
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

    fn daemon(&mut self, raw: RawDaemon) -> Daemon {
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
        let max_connections_per_host = raw.max_connections_per_host.unwrap_or(20);
        if max_connections_per_host == 0 {
            self.err(
                "daemon.max-connections-per-host".into(),
                "must be at least 1".into(),
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
                .unwrap_or(20),
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

    fn destination(&mut self, key: &str, mut raw: RawDestination) -> Option<DestinationConfig> {
        let name = self.required(
            format!("{key}.name"),
            raw.name.take(),
            "a name that accounts refer to",
        );
        self.read_secrets = self.scope.covers(name.as_deref());
        match raw.kind.as_deref() {
            Some("smtp") => {}
            Some("gmail-api") => {
                let kind = self.gmail(key, raw)?;
                return Some(DestinationConfig {
                    name: name?,
                    kind: DestinationKind::Gmail(kind),
                });
            }
            Some(other) => {
                self.err(
                    format!("{key}.kind"),
                    format!("{other:?} is not a destination kind; use \"gmail-api\" or \"smtp\""),
                );
                return None;
            }
            None => {
                self.err(
                    format!("{key}.kind"),
                    "missing: set it to \"gmail-api\" or \"smtp\"".into(),
                );
                return None;
            }
        }
        for (k, set) in [
            ("mode", raw.mode.is_some()),
            ("labels", raw.labels.is_some()),
            ("api-url", raw.api_url.is_some()),
            ("internal-date-source", raw.internal_date_source.is_some()),
            ("never-mark-spam", raw.never_mark_spam.is_some()),
            ("process-for-calendar", raw.process_for_calendar.is_some()),
            ("exactly-once", raw.exactly_once.is_some()),
            ("max-rate", raw.max_rate.is_some()),
            ("concurrency", raw.concurrency.is_some()),
        ] {
            if set {
                self.err(
                    format!("{key}.{k}"),
                    "belongs to kind = \"gmail-api\"; an SMTP destination does not use it".into(),
                );
            }
        }
        let host = self.required(
            format!("{key}.host"),
            raw.host,
            "the SMTP server's host name",
        );
        let tls = self.tls(format!("{key}.tls"), raw.tls.as_deref(), TlsMode::StartTls);
        let port = raw.port.unwrap_or(match tls {
            TlsMode::Implicit => 465,
            TlsMode::StartTls => 587,
            TlsMode::None => 25,
        });
        let ca_pem = self.ca_file(format!("{key}.tls-ca-file"), raw.tls_ca_file.as_deref());
        let has_password = raw.password_file.is_some() || raw.password_env.is_some();
        let auth = match (raw.username, raw.auth) {
            (Some(_), Some(_)) if has_password => {
                self.err(
                    format!("{key}.auth"),
                    "set either a password or auth = { method = \"oauth2\", ... }, not both".into(),
                );
                SmtpAuth::None
            }
            (Some(username), Some(auth)) => {
                if auth.method.as_deref() != Some("oauth2") {
                    self.err(
                        format!("{key}.auth.method"),
                        "set it to \"oauth2\" (a password goes in password-file)".into(),
                    );
                }
                match self.oauth(&format!("{key}.auth"), auth, None, TokenUse::Smtp) {
                    Some(settings) => SmtpAuth::OAuth2 { username, settings },
                    None => SmtpAuth::None,
                }
            }
            (Some(username), None) => self
                .secret(&format!("{key}."), raw.password_file, raw.password_env)
                .map_or(SmtpAuth::None, |password| SmtpAuth::Password {
                    username,
                    password,
                }),
            (None, auth) => {
                if has_password || auth.is_some() {
                    self.err(
                        format!("{key}.username"),
                        "missing: SMTP AUTH is configured, so set the SMTP user name too".into(),
                    );
                }
                SmtpAuth::None
            }
        };
        let envelope_to = raw.envelope_to.unwrap_or_default();
        if envelope_to.is_empty() {
            self.err(format!("{key}.envelope-to"), "missing: set it to the address(es) that should receive the mail, e.g. [\"me@example.org\"]".into());
        }
        for (i, addr) in envelope_to.iter().enumerate() {
            if !looks_like_address(addr) {
                self.err(
                    format!("{key}.envelope-to[{i}]"),
                    format!("{addr:?} is not an email address"),
                );
            }
        }
        let envelope_from = match raw.envelope_from.as_deref() {
            // Bounces of a personal forwarder belong to its user: the mailbox it fills.
            None => SmtpSender::Recipient,
            Some("return-path") => SmtpSender::FromMessage,
            Some("<>") => SmtpSender::Null,
            Some(a) if looks_like_address(a) => SmtpSender::Fixed(a.to_owned()),
            Some(a) => {
                self.err(
                    format!("{key}.envelope-from"),
                    format!("{a:?} is not an email address, \"return-path\" or \"<>\""),
                );
                SmtpSender::Null
            }
        };
        Some(DestinationConfig {
            name: name?,
            kind: DestinationKind::Smtp(SmtpConfig {
                endpoint: Endpoint {
                    host: host?,
                    port,
                    tls,
                    ca_pem,
                },
                auth,
                envelope_to,
                envelope_from,
                hello_name: raw.hello_name,
            }),
        })
    }

    fn gmail(&mut self, key: &str, raw: RawDestination) -> Option<GmailConfig> {
        for (k, set) in [
            ("host", raw.host.is_some()),
            ("port", raw.port.is_some()),
            ("tls", raw.tls.is_some()),
            ("envelope-to", raw.envelope_to.is_some()),
            ("envelope-from", raw.envelope_from.is_some()),
            ("username", raw.username.is_some()),
            ("password-file", raw.password_file.is_some()),
            ("password-env", raw.password_env.is_some()),
        ] {
            if set {
                self.err(
                    format!("{key}.{k}"),
                    "belongs to kind = \"smtp\"; the Gmail API does not use it".into(),
                );
            }
        }
        let mode = match raw.mode.as_deref() {
            None | Some("import") => GmailMode::Import,
            Some("insert") => GmailMode::Insert,
            Some(other) => {
                self.err(
                    format!("{key}.mode"),
                    format!("{other:?} is not a mode; use \"import\" or \"insert\""),
                );
                GmailMode::Import
            }
        };
        let internal_date_source = match raw.internal_date_source.as_deref() {
            None => "dateHeader".to_owned(),
            Some(v @ ("dateHeader" | "receivedTime")) => v.to_owned(),
            Some(other) => {
                self.err(
                    format!("{key}.internal-date-source"),
                    format!("{other:?}: use \"dateHeader\" or \"receivedTime\""),
                );
                "dateHeader".to_owned()
            }
        };
        let exactly_once = raw.exactly_once.unwrap_or(true);
        let max_rate = raw.max_rate.unwrap_or(10.0);
        if !(max_rate > 0.0 && max_rate <= 100.0) {
            self.err(
                format!("{key}.max-rate"),
                "must be between 0 and 100 requests per second (Gmail allows about 10)".into(),
            );
        }
        let concurrency = raw.concurrency.unwrap_or(10);
        if concurrency == 0 || concurrency > 50 {
            self.err(
                format!("{key}.concurrency"),
                "must be between 1 and 50".into(),
            );
        }
        let api_url = raw
            .api_url
            .unwrap_or_else(|| "https://gmail.googleapis.com".into());
        if !crate::oauth::url_ok(&api_url) {
            self.err(
                format!("{key}.api-url"),
                format!("{api_url:?} must be an https:// URL (plain http only to 127.0.0.1)"),
            );
        }
        let auth = match raw.auth {
            None => {
                self.err(
                    format!("{key}.auth"),
                    "missing: set it to { method = \"oauth2\", client-id = \"...\", client-secret-file = \"...\" } (README: \"Into Gmail, through the Gmail API (recommended for Gmail)\")".into(),
                );
                None
            }
            Some(a) if a.method.as_deref() != Some("oauth2") => {
                self.err(
                    format!("{key}.auth.method"),
                    "the Gmail API takes only OAuth2: set it to \"oauth2\"".into(),
                );
                None
            }
            Some(a) => match a.access_token_file.clone() {
                Some(file) => Some(GmailAuth::TokenFile(self.path(&file))),
                None => self
                    .oauth(
                        &format!("{key}.auth"),
                        a,
                        Some(OAuthProvider::Google),
                        TokenUse::GmailApi(exactly_once),
                    )
                    .map(GmailAuth::OAuth2),
            },
        };
        Some(GmailConfig {
            api_url,
            mode,
            labels: raw
                .labels
                .unwrap_or_else(|| vec!["INBOX".into(), "UNREAD".into()]),
            internal_date_source,
            never_mark_spam: raw.never_mark_spam.unwrap_or(false),
            process_for_calendar: raw.process_for_calendar.unwrap_or(false),
            exactly_once,
            max_rate,
            concurrency: usize::try_from(concurrency).unwrap_or(10),
            auth: auth?,
        })
    }

    fn account(
        &mut self,
        key: &str,
        raw: RawAccount,
        daemon: &Daemon,
        destinations: &HashSet<String>,
    ) -> Option<AccountConfig> {
        let name = self.required(
            format!("{key}.name"),
            raw.name,
            "a short unique name, e.g. \"outlook\"",
        );
        self.read_secrets = self.scope.covers(name.as_deref());
        if let Some(n) = &name
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            self.err(
                format!("{key}.name"),
                format!("{n:?} may hold only letters, digits, '-', '_' and '.'"),
            );
        }
        let provider = match raw.provider.as_deref() {
            None => None,
            Some(p) => {
                let found = presets::preset(p);
                if found.is_none() {
                    self.err(format!("{key}.provider"), format!("{p:?} is not a known provider; use one of {} or leave it out and set host", presets::names()));
                }
                found
            }
        };
        let protocol = match raw.protocol.as_deref() {
            None | Some("imap") => Protocol::Imap,
            Some("pop3") => Protocol::Pop3,
            Some(other) => {
                self.err(
                    format!("{key}.protocol"),
                    format!("{other:?} is not supported; use \"imap\" or \"pop3\""),
                );
                Protocol::Imap
            }
        };
        let preset_host = provider.and_then(|p| match protocol {
            Protocol::Imap => Some(p.imap_host),
            Protocol::Pop3 => Some(p.pop3_host).filter(|h| !h.is_empty()),
        });
        if let (Some(p), None, Protocol::Pop3, None) = (provider, preset_host, protocol, &raw.host)
        {
            self.err(
                format!("{key}.protocol"),
                format!("{} offers no POP3; use \"imap\"", p.name),
            );
        }
        let host = raw.host.or_else(|| preset_host.map(str::to_owned));
        let host = self.required(
            format!("{key}.host"),
            host,
            "the server's host name (or set provider)",
        );
        let tls = self.tls(format!("{key}.tls"), raw.tls.as_deref(), TlsMode::Implicit);
        let port = raw.port.unwrap_or(match (protocol, tls) {
            (Protocol::Imap, TlsMode::Implicit) => 993,
            (Protocol::Imap, TlsMode::StartTls | TlsMode::None) => 143,
            (Protocol::Pop3, TlsMode::Implicit) => 995,
            (Protocol::Pop3, TlsMode::StartTls | TlsMode::None) => 110,
        });
        let ca_pem = self.ca_file(format!("{key}.tls-ca-file"), raw.tls_ca_file.as_deref());
        let username = self.required(
            format!("{key}.username"),
            raw.username,
            "the login name, usually the email address",
        );
        let implied = provider.and_then(|p| match p.name {
            "outlook" => Some(OAuthProvider::Microsoft),
            "gmail" => Some(OAuthProvider::Google),
            _ => None,
        });
        let usage = match protocol {
            Protocol::Imap => TokenUse::Imap,
            Protocol::Pop3 => TokenUse::Pop3,
        };
        let auth = self.auth(&format!("{key}.auth"), raw.auth, implied, usage);
        if let (Some(p), Some(SourceAuth::Password(_))) = (provider, &auth)
            && p.password_login_refused
        {
            self.warnings.push(format!(
                "{key}: {} refuses password logins, app passwords included (\"Basic authentication is disabled\"); this account needs OAuth2",
                p.name
            ));
        }
        let folders = raw.folders.unwrap_or_else(|| vec!["INBOX".to_owned()]);
        if folders.is_empty() {
            self.err(
                format!("{key}.folders"),
                "is empty: list at least one folder, e.g. [\"INBOX\"]".into(),
            );
        }
        if protocol == Protocol::Pop3 && folders != ["INBOX"] {
            self.err(
                format!("{key}.folders"),
                "POP3 has one maildrop and no folders: leave folders out (or [\"INBOX\"])".into(),
            );
        }
        let after_delivery = match raw.after_delivery.as_deref() {
            None | Some("keep") => AfterDelivery::Keep,
            Some("delete") => AfterDelivery::Delete,
            Some("mark-seen") if protocol == Protocol::Imap => AfterDelivery::MarkSeen,
            Some(m) if m.starts_with("move:") && protocol == Protocol::Imap => {
                let to = m["move:".len()..].trim();
                if to.is_empty() {
                    self.err(
                        format!("{key}.after-delivery"),
                        "name the folder to move to, e.g. \"move:Archive\"".into(),
                    );
                } else if folders.iter().any(|f| f.eq_ignore_ascii_case(to)) {
                    // Moved mail would be found there and delivered again, every run.
                    self.err(
                        format!("{key}.after-delivery"),
                        format!("{to:?} is also in folders: mail moved there would be delivered again; move it to a folder mailferry does not read, or remove {to:?} from folders"),
                    );
                }
                AfterDelivery::Move(to.to_owned())
            }
            Some(m) if m == "mark-seen" || m.starts_with("move:") => {
                self.err(
                    format!("{key}.after-delivery"),
                    format!("{m:?} needs IMAP; POP3 can only \"keep\" or \"delete\""),
                );
                AfterDelivery::Keep
            }
            Some(other) => {
                self.err(
                    format!("{key}.after-delivery"),
                    format!("{other:?} is not a policy; use \"keep\", \"mark-seen\", \"move:FOLDER\" or \"delete\""),
                );
                AfterDelivery::Keep
            }
        };
        let first_run = match raw.first_run.as_deref() {
            None | Some("all") => FirstRun::All,
            Some("new-only") => FirstRun::NewOnly,
            Some(v) if v.starts_with("since:") && protocol == Protocol::Pop3 => {
                self.err(
                    format!("{key}.first-run"),
                    "POP3 does not say when mail arrived: use \"all\" or \"new-only\"".into(),
                );
                FirstRun::All
            }
            Some(v) if v.starts_with("since:") => {
                match parse_day(&v["since:".len()..]) {
                    Some(t) => FirstRun::Since(t),
                    None => {
                        self.err(
                        format!("{key}.first-run"),
                        format!("{v:?}: write the day as since:YYYY-MM-DD, e.g. \"since:2025-01-01\""),
                    );
                        FirstRun::All
                    }
                }
            }
            Some(other) => {
                self.err(
                    format!("{key}.first-run"),
                    format!("{other:?} is not a choice; use \"all\", \"new-only\" or \"since:YYYY-MM-DD\""),
                );
                FirstRun::All
            }
        };
        let push = self.push(
            key,
            crate::push::RawPush {
                push: raw.push.as_deref(),
                folders: raw.push_folders,
                refresh: raw.idle_refresh.as_deref(),
            },
            protocol,
            &folders,
        );
        let mut interval = self.duration(
            format!("{key}.interval"),
            raw.interval.as_deref(),
            daemon.min_interval,
        );
        if interval < daemon.min_interval {
            self.warnings.push(format!(
                "{key}.interval is below daemon.min-interval; using {}",
                humantime::format_duration(daemon.min_interval)
            ));
            interval = daemon.min_interval;
        }
        let destination = self.required(
            format!("{key}.destination"),
            raw.destination,
            "the name of a [[destination]]",
        );
        if let Some(d) = &destination
            && !destinations.contains(d)
        {
            let mut known: Vec<_> = destinations.iter().map(String::as_str).collect();
            known.sort_unstable();
            let known = if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            };
            self.err(
                format!("{key}.destination"),
                format!("no [[destination]] is named {d:?}; known: {known}"),
            );
        }
        Some(AccountConfig {
            name: name?,
            provider,
            protocol,
            endpoint: Endpoint {
                host: host?,
                port,
                tls,
                ca_pem,
            },
            username: username?,
            auth: auth?,
            folders,
            interval,
            destination: destination?,
            after_delivery,
            pipelining: raw.pipelining.unwrap_or(true),
            labels: raw.labels.unwrap_or_default(),
            enabled: raw.enabled.unwrap_or(true),
            first_run,
            push,
            spam_folders: raw
                .spam_folders
                .unwrap_or_else(|| DEFAULT_SPAM_FOLDERS.iter().map(|&f| f.to_owned()).collect()),
        })
    }

    fn auth(
        &mut self,
        key: &str,
        raw: Option<RawAuth>,
        implied: Option<OAuthProvider>,
        usage: TokenUse,
    ) -> Option<SourceAuth> {
        let Some(raw) = raw else {
            self.err(
                key.to_owned(),
                "missing: set it to { method = \"password\", password-file = \"...\" }".into(),
            );
            return None;
        };
        match raw.method.as_deref() {
            Some("password") => self
                .secret(&format!("{key}."), raw.password_file, raw.password_env)
                .map(SourceAuth::Password),
            Some("oauth2") => {
                let Some(file) = raw.access_token_file.clone() else {
                    return self.oauth(key, raw, implied, usage).map(SourceAuth::OAuth2);
                };
                if raw.client_id.is_some() {
                    self.err(
                        format!("{key}.access-token-file"),
                        "set either client-id (mailferry signs in and refreshes) or access-token-file (something else does), not both".into(),
                    );
                }
                let path = self.path(&file);
                if !self.read_secrets {
                    return Some(SourceAuth::OAuth2TokenFile(path));
                }
                match std::fs::read_to_string(&path) {
                    Ok(t) if !t.trim().is_empty() => Some(SourceAuth::OAuth2TokenFile(path)),
                    Ok(_) => {
                        self.err(
                            format!("{key}.access-token-file"),
                            format!("{} is empty", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.err(
                            format!("{key}.access-token-file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            Some(other) => {
                self.err(
                    format!("{key}.method"),
                    format!("{other:?} is not supported; use \"password\" or \"oauth2\""),
                );
                None
            }
            None => {
                self.err(
                    format!("{key}.method"),
                    "missing: set it to \"password\"".into(),
                );
                None
            }
        }
    }
}

/// A light check that catches typos (a missing `@`); the server has the last word.
fn looks_like_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace))
}
