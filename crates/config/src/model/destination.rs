//! `[[destination]]`: where the mail goes (SMTP or the Gmail API).

use std::path::PathBuf;

use super::oauth::{OAuthProvider, OAuthSettings, TokenUse};
use super::{Checker, Endpoint, TlsMode};
use crate::raw::RawDestination;
use mailferry_core::Secret;

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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub enum GmailAuth {
    /// Tokens from `mailferry auth`.
    OAuth2(OAuthSettings),
    /// An access token kept fresh in a file by something else.
    TokenFile(PathBuf),
}

/// The Gmail API destination.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    /// Re-send over SMTP.
    Smtp(SmtpConfig),
    /// Import through the Gmail API.
    Gmail(GmailConfig),
}

/// One `[[destination]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    /// Unique name that accounts refer to.
    pub name: String,
    /// Kind and settings.
    pub kind: DestinationKind,
}

impl DestinationConfig {
    /// The kind as people read it ("SMTP", "Gmail API").
    #[must_use]
    pub fn kind_label(&self) -> &'static str {
        match &self.kind {
            DestinationKind::Smtp(_) => "SMTP",
            DestinationKind::Gmail(_) => "Gmail API",
        }
    }

    /// The server `check` reaches before anything else, when the kind has one of its own.
    #[must_use]
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match &self.kind {
            DestinationKind::Smtp(s) => Some(&s.endpoint),
            DestinationKind::Gmail(_) => None,
        }
    }

    /// The OAuth2 scopes the sign-in must grant, each with what it is for (`labels`: some
    /// account gives this destination labels to set).
    #[must_use]
    pub fn scopes_needed(&self, labels: bool) -> Vec<(&'static str, &'static str)> {
        match &self.kind {
            DestinationKind::Smtp(_) => Vec::new(),
            DestinationKind::Gmail(g) => {
                let mut v = vec![(
                    "https://www.googleapis.com/auth/gmail.insert",
                    "to import (or gmail.modify, or https://mail.google.com/)",
                )];
                if labels {
                    v.push((
                        "https://www.googleapis.com/auth/gmail.labels",
                        "to create the labels",
                    ));
                }
                if g.exactly_once {
                    v.push((
                        "https://www.googleapis.com/auth/gmail.readonly",
                        "to look up an interrupted import (exactly-once; or set exactly-once = false)",
                    ));
                }
                v
            }
        }
    }

    /// The address a notice into this destination is written to: the first envelope
    /// recipient over SMTP; Gmail's own word for the signed-in mailbox ("me").
    #[must_use]
    pub fn notice_address(&self) -> String {
        match &self.kind {
            DestinationKind::Smtp(s) => s.envelope_to.first().cloned().unwrap_or_default(),
            DestinationKind::Gmail(_) => "me".to_owned(),
        }
    }

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

impl Checker<'_> {
    pub(super) fn destination(
        &mut self,
        key: &str,
        mut raw: RawDestination,
    ) -> Option<DestinationConfig> {
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
        self.kind_keys(key, "smtp", &raw);
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
        let auth = self.smtp_auth(
            key,
            raw.username,
            raw.auth,
            raw.password_file,
            raw.password_env,
        );
        let (envelope_to, envelope_from) =
            self.envelope(key, raw.envelope_to, raw.envelope_from.as_deref());
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

    /// An SMTP destination's login: none, a password, or OAuth2 (not both).
    fn smtp_auth(
        &mut self,
        key: &str,
        username: Option<String>,
        auth: Option<crate::raw::RawAuth>,
        password_file: Option<String>,
        password_env: Option<String>,
    ) -> SmtpAuth {
        let has_password = password_file.is_some() || password_env.is_some();
        match (username, auth) {
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
                .secret(&format!("{key}."), password_file, password_env)
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
        }
    }

    /// `envelope-to` (one address at least) and `envelope-from`.
    fn envelope(
        &mut self,
        key: &str,
        envelope_to: Option<Vec<String>>,
        envelope_from: Option<&str>,
    ) -> (Vec<String>, SmtpSender) {
        let envelope_to = envelope_to.unwrap_or_default();
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
        let envelope_from = match envelope_from {
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
        (envelope_to, envelope_from)
    }

    pub(super) fn gmail(&mut self, key: &str, raw: RawDestination) -> Option<GmailConfig> {
        self.kind_keys(key, "gmail-api", &raw);
        let mode = self.choice(
            format!("{key}.mode"),
            raw.mode.as_deref(),
            GmailMode::Import,
            "a mode",
            &[("import", GmailMode::Import), ("insert", GmailMode::Insert)],
        );
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
        if !super::oauth::url_ok(&api_url) {
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
}

/// The keys that belong to one destination kind, and the words for a kind: the one place
/// a new kind's own keys go. A key set on a destination of another kind is an error that
/// names the kind it belongs to.
const KIND_KEYS: &[(&str, &[&str])] = &[
    (
        "smtp",
        &[
            "host",
            "port",
            "tls",
            "envelope-to",
            "envelope-from",
            "username",
            "password-file",
            "password-env",
        ],
    ),
    (
        "gmail-api",
        &[
            "mode",
            "labels",
            "api-url",
            "internal-date-source",
            "never-mark-spam",
            "process-for-calendar",
            "exactly-once",
            "max-rate",
            "concurrency",
        ],
    ),
];

/// How an error names a destination of each kind.
fn kind_words(kind: &str) -> &'static str {
    match kind {
        "gmail-api" => "the Gmail API",
        _ => "an SMTP destination",
    }
}

impl RawDestination {
    /// Whether the kind-specific `key` is set.
    fn is_set(&self, key: &str) -> bool {
        match key {
            "host" => self.host.is_some(),
            "port" => self.port.is_some(),
            "tls" => self.tls.is_some(),
            "envelope-to" => self.envelope_to.is_some(),
            "envelope-from" => self.envelope_from.is_some(),
            "username" => self.username.is_some(),
            "password-file" => self.password_file.is_some(),
            "password-env" => self.password_env.is_some(),
            "mode" => self.mode.is_some(),
            "labels" => self.labels.is_some(),
            "api-url" => self.api_url.is_some(),
            "internal-date-source" => self.internal_date_source.is_some(),
            "never-mark-spam" => self.never_mark_spam.is_some(),
            "process-for-calendar" => self.process_for_calendar.is_some(),
            "exactly-once" => self.exactly_once.is_some(),
            "max-rate" => self.max_rate.is_some(),
            "concurrency" => self.concurrency.is_some(),
            _ => false,
        }
    }
}

impl Checker<'_> {
    /// Reports every key of another kind set on a destination of `kind`.
    fn kind_keys(&mut self, key: &str, kind: &str, raw: &RawDestination) {
        for (owner, keys) in KIND_KEYS {
            if *owner == kind {
                continue;
            }
            for k in keys.iter().filter(|k| raw.is_set(k)) {
                self.err(
                    format!("{key}.{k}"),
                    format!(
                        "belongs to kind = \"{owner}\"; {} does not use it",
                        kind_words(kind)
                    ),
                );
            }
        }
    }
}

/// A light check that catches typos (a missing `@`); the server has the last word.
pub(super) fn looks_like_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace))
}

#[cfg(test)]
#[path = "destination_tests.rs"]
mod tests;
