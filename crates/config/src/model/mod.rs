//! The checked configuration and the second stage that builds it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::raw::RawConfig;
use mailferry_core::Secret;

mod account;
mod daemon;
mod destination;
pub(crate) mod oauth;
pub(crate) mod push;

pub use account::{
    AccountConfig, AfterDelivery, DEFAULT_SPAM_FOLDERS, FirstRun, Protocol, SourceAuth,
};
pub use daemon::{Daemon, Notify, url_origin};
pub use destination::{
    DestinationConfig, DestinationKind, GmailAuth, GmailConfig, GmailMode, SmtpAuth, SmtpConfig,
    SmtpSender,
};

/// The whole, checked configuration.
#[derive(Debug, Clone, PartialEq)]
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

pub use mailferry_core::TlsMode;

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

    /// One of a few words: `value` (or `default` when absent) as its `T`; anything else is
    /// an error at `key` that lists the words, and gives `default`.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        key: String,
        value: Option<&str>,
        default: T,
        what: &str,
        choices: &[(&str, T)],
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        if let Some((_, t)) = choices.iter().find(|(word, _)| *word == value) {
            return *t;
        }
        let words: Vec<String> = choices.iter().map(|(w, _)| format!("{w:?}")).collect();
        let listed = match words.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.err(key, format!("{value:?} is not {what}; use {listed}"));
        default
    }

    fn tls(&mut self, key: String, value: Option<&str>, default: TlsMode) -> TlsMode {
        let tls = self.choice(
            key.clone(),
            value,
            default,
            "a TLS mode",
            &[
                ("implicit", TlsMode::Implicit),
                ("starttls", TlsMode::StartTls),
                ("none", TlsMode::None),
            ],
        );
        if value == Some("none") {
            self.warnings.push(format!(
                "{key} = \"none\": passwords and mail cross the network unencrypted"
            ));
        }
        tls
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
}

#[cfg(test)]
mod tests {
    use crate::testing::Sample;

    #[test]
    fn names_are_unique_and_an_account_is_required() {
        let twice = Sample::new().text().replace(
            "[[account]]",
            "[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"h\"\nenvelope-to = [\"a@b.c\"]\n\n[[account]]",
        );
        let errors = crate::testing::load_text(&twice).expect_err("twice");
        assert!(
            errors.contains("destination[1].name: the name \"home\" is used twice"),
            "{errors}"
        );
        let text = Sample::new().text();
        let account = &text[text.find("[[account]]").expect("account")..];
        let errors = crate::testing::load_text(&format!("{text}\n{account}")).expect_err("twice");
        assert!(
            errors.contains("account[1].name: the name \"gmx\" is used twice"),
            "{errors}"
        );
        let none = &text[..text.find("[[account]]").expect("account")];
        let errors = crate::testing::load_text(none).expect_err("no account");
        assert!(errors.contains("no [[account]] is configured"), "{errors}");
    }

    #[test]
    fn a_secret_comes_from_exactly_one_nonempty_place() {
        Sample::new()
            .auth("auth = { method = \"password\", password-file = \"gmx.pass\", password-env = \"GMX\" }")
            .refused("account[0].auth.password-file", "not both");
        Sample::new()
            .auth("auth = { method = \"password\" }")
            .refused(
                "account[0].auth.password-file",
                "missing: set password-file",
            );
        Sample::new()
            .auth(
                "auth = { method = \"password\", password-env = \"MAILFERRY_TEST_SURELY_UNSET\" }",
            )
            .refused(
                "account[0].auth.password-env",
                "MAILFERRY_TEST_SURELY_UNSET is not set or empty",
            );
        Sample::new()
            .auth("auth = { method = \"password\", password-file = \"missing.pass\" }")
            .refused("account[0].auth.password-file", "cannot read");
    }

    #[test]
    fn durations_and_ca_files_say_what_is_wrong() {
        Sample::new()
            .account("interval = \"0s\"")
            .refused("account[0].interval", "must be longer than zero");
        Sample::new().account("interval = \"ten minutes\"").refused(
            "account[0].interval",
            "write e.g. \"90s\", \"15m\" or \"1h\"",
        );
        // gmx.pass exists but holds no certificate.
        Sample::new()
            .account("tls-ca-file = \"gmx.pass\"")
            .refused("account[0].tls-ca-file", "holds no PEM certificate");
        Sample::new()
            .account("tls-ca-file = \"none.pem\"")
            .refused("account[0].tls-ca-file", "cannot read");
    }
}
