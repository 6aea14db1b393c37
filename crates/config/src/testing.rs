//! What the configuration's tests share: a small valid file (an SMTP destination, one GMX
//! account) and a builder for variations of it, loaded in a fresh directory that holds the
//! secrets the sample names.

use crate::Config;

/// The sample's `[daemon]` body.
const DAEMON: &str = "state-dir = \"state\"\n";

/// The sample's `[[destination]]` body, after `name = "home"`.
const SMTP: &str = "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n";

/// The sample's `[[account]]` body, after `name = "gmx"` and its provider line.
const ACCOUNT: &str = "username = \"me@gmx.net\"\nauth = { method = \"password\", password-file = \"gmx.pass\" }\ndestination = \"home\"\n";

/// The password in `gmx.pass`.
pub(crate) const PASSWORD: &str = "s3cret";

/// A configuration file to load: the sample, with changes.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    daemon: String,
    notify: String,
    destination: String,
    provider: String,
    account: String,
    edits: Vec<(String, String)>,
}

impl Sample {
    /// The valid sample.
    pub(crate) fn new() -> Self {
        Self {
            daemon: DAEMON.to_owned(),
            notify: String::new(),
            destination: SMTP.to_owned(),
            provider: "provider = \"gmx\"\n".to_owned(),
            account: ACCOUNT.to_owned(),
            edits: Vec::new(),
        }
    }

    /// Adds lines to `[daemon]`.
    pub(crate) fn daemon(mut self, lines: &str) -> Self {
        self.daemon.push_str(lines);
        self.daemon.push('\n');
        self
    }

    /// Adds a `[notify]` section with `lines`.
    pub(crate) fn notify(mut self, lines: &str) -> Self {
        self.notify.push_str(lines);
        self.notify.push('\n');
        self
    }

    /// Adds lines to the SMTP destination.
    pub(crate) fn destination(mut self, lines: &str) -> Self {
        self.destination.push_str(lines);
        self.destination.push('\n');
        self
    }

    /// Makes the destination a Gmail API one with `lines` (after `kind`).
    pub(crate) fn gmail(mut self, lines: &str) -> Self {
        self.destination = format!("kind = \"gmail-api\"\n{lines}\n");
        self
    }

    /// Replaces the account's `provider = "gmx"` line with `lines` (another provider, or a
    /// host and port).
    pub(crate) fn source(mut self, lines: &str) -> Self {
        self.provider = format!("{lines}\n");
        self
    }

    /// Adds lines to the account.
    pub(crate) fn account(mut self, lines: &str) -> Self {
        self.account.push_str(lines);
        self.account.push('\n');
        self
    }

    /// Replaces the account's `auth = ...` line.
    pub(crate) fn auth(mut self, line: &str) -> Self {
        self.account = ACCOUNT.replace(
            "auth = { method = \"password\", password-file = \"gmx.pass\" }",
            line,
        ) + &self.account[ACCOUNT.len()..];
        self
    }

    /// Replaces `from` (which must be in the file) with `to`, for the lines the other
    /// methods cannot reach (the sample's own name, port or kind).
    pub(crate) fn edit(mut self, from: &str, to: &str) -> Self {
        self.edits.push((from.to_owned(), to.to_owned()));
        self
    }

    /// The file's text.
    pub(crate) fn text(&self) -> String {
        let notify = if self.notify.is_empty() {
            String::new()
        } else {
            format!("\n[notify]\n{}", self.notify)
        };
        let mut text = format!(
            "[daemon]\n{}{notify}\n[[destination]]\nname = \"home\"\n{}\n[[account]]\nname = \"gmx\"\n{}{}",
            self.daemon, self.destination, self.provider, self.account
        );
        for (from, to) in &self.edits {
            assert!(text.contains(from.as_str()), "{from:?} is not in:\n{text}");
            text = text.replacen(from.as_str(), to, 1);
        }
        text
    }

    /// Loads the file (see [`load_text`]).
    pub(crate) fn load(&self) -> Result<Config, String> {
        load_text(&self.text())
    }

    /// The errors of a file that must not load.
    pub(crate) fn errors(&self) -> String {
        match self.load() {
            Ok(_) => panic!("this file loaded but should not:\n{}", self.text()),
            Err(e) => e,
        }
    }

    /// Asserts that the file does not load and that an error names `key` and says `why`.
    #[track_caller]
    pub(crate) fn refused(&self, key: &str, why: &str) {
        let errors = self.errors();
        assert!(
            errors
                .lines()
                .any(|l| l.contains(&format!(" {key}: ")) && l.contains(why)),
            "no error for {key} saying {why:?}:\n{errors}\n--- file:\n{}",
            self.text()
        );
    }
}

/// Loads `text` as a file beside `gmx.pass` and `client.secret`: the configuration, or
/// every error as the user sees them.
pub(crate) fn load_text(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gmx.pass"), format!("{PASSWORD}\n")).expect("write");
    std::fs::write(dir.path().join("client.secret"), "client-secret\n").expect("write");
    let path = dir.path().join("m.toml");
    std::fs::write(&path, text).expect("write");
    crate::load(&path).map_err(|e| e.to_string())
}
