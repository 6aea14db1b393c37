//! `[[account]]`: a mailbox to gather from.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::oauth::{OAuthProvider, OAuthSettings, TokenUse};
use super::{Checker, Daemon, Endpoint, TlsMode};
use crate::raw::{RawAccount, RawAuth};
use crate::{Preset, presets};
use mailferry_core::Secret;

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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
    pub push: Option<super::push::Push>,
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

/// `YYYY-MM-DD` (1970 or later) as Unix seconds at 00:00 UTC.
fn parse_day(text: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let t = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
    (t >= 0).then_some(t)
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

impl Checker<'_> {
    pub(super) fn account(
        &mut self,
        key: &str,
        raw: RawAccount,
        daemon: &Daemon,
        destinations: &HashSet<String>,
    ) -> Option<AccountConfig> {
        let name = self.account_name(key, raw.name.clone());
        self.read_secrets = self.scope.covers(name.as_deref());
        let provider = self.provider(key, raw.provider.as_deref());
        let protocol = self.choice(
            format!("{key}.protocol"),
            raw.protocol.as_deref(),
            Protocol::Imap,
            "supported",
            &[("imap", Protocol::Imap), ("pop3", Protocol::Pop3)],
        );
        let (host, tls, port, ca_pem) = self.source_endpoint(key, provider, protocol, &raw);
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
        let folders = self.folders(key, raw.folders, protocol);
        let after_delivery =
            self.after_delivery(key, raw.after_delivery.as_deref(), protocol, &folders);
        let first_run = self.first_run(key, raw.first_run.as_deref(), protocol);
        let push = self.push(
            key,
            super::push::RawPush {
                push: raw.push.as_deref(),
                folders: raw.push_folders,
                refresh: raw.idle_refresh.as_deref(),
            },
            protocol,
            &folders,
        );
        let interval = self.interval(key, raw.interval.as_deref(), daemon);
        let destination = self.destination_ref(key, raw.destination, destinations);
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

    /// Where the account's server is: the host (set, or the provider's for the
    /// protocol), TLS, the port (the protocol's default for the TLS mode), a private CA.
    fn source_endpoint(
        &mut self,
        key: &str,
        provider: Option<&'static presets::Preset>,
        protocol: Protocol,
        raw: &RawAccount,
    ) -> (Option<String>, TlsMode, u16, Option<Vec<u8>>) {
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
        let host = raw.host.clone().or_else(|| preset_host.map(str::to_owned));
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
        (host, tls, port, ca_pem)
    }

    /// `name`: letters, digits, '-', '_' and '.'.
    fn account_name(&mut self, key: &str, name: Option<String>) -> Option<String> {
        let name = self.required(
            format!("{key}.name"),
            name,
            "a short unique name, e.g. \"outlook\"",
        );
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
        name
    }

    /// `provider`: a known preset, or an error that lists them.
    fn provider(&mut self, key: &str, provider: Option<&str>) -> Option<&'static presets::Preset> {
        match provider {
            None => None,
            Some(p) => {
                let found = presets::preset(p);
                if found.is_none() {
                    self.err(format!("{key}.provider"), format!("{p:?} is not a known provider; use one of {} or leave it out and set host", presets::names()));
                }
                found
            }
        }
    }

    /// `folders`: at least one; POP3's one maildrop is INBOX.
    fn folders(
        &mut self,
        key: &str,
        folders: Option<Vec<String>>,
        protocol: Protocol,
    ) -> Vec<String> {
        let folders = folders.unwrap_or_else(|| vec!["INBOX".to_owned()]);
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
        folders
    }

    /// `after-delivery`: keep, delete, and for IMAP mark-seen or move to a folder not read.
    fn after_delivery(
        &mut self,
        key: &str,
        policy: Option<&str>,
        protocol: Protocol,
        folders: &[String],
    ) -> AfterDelivery {
        match policy {
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
        }
    }

    /// `first-run`: all, new-only, or (IMAP, which knows arrival dates) since a day.
    fn first_run(&mut self, key: &str, first_run: Option<&str>, protocol: Protocol) -> FirstRun {
        match first_run {
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
        }
    }

    /// `interval`, never below `daemon.min-interval`.
    fn interval(
        &mut self,
        key: &str,
        interval: Option<&str>,
        daemon: &Daemon,
    ) -> std::time::Duration {
        let mut interval = self.duration(format!("{key}.interval"), interval, daemon.min_interval);
        if interval < daemon.min_interval {
            self.warnings.push(format!(
                "{key}.interval is below daemon.min-interval; using {}",
                humantime::format_duration(daemon.min_interval)
            ));
            interval = daemon.min_interval;
        }
        interval
    }

    /// `destination`: the name of a `[[destination]]`.
    fn destination_ref(
        &mut self,
        key: &str,
        destination: Option<String>,
        destinations: &HashSet<String>,
    ) -> Option<String> {
        let destination = self.required(
            format!("{key}.destination"),
            destination,
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
        destination
    }

    pub(super) fn auth(
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

#[cfg(test)]
#[path = "account_tests.rs"]
mod tests;
