//! Reading the file: `config` layers the file and the environment, serde fills
//! [`RawConfig`], and line numbers come from a spanned parse of the same text.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors};
use crate::model::{Config, SecretScope};
use crate::raw::RawConfig;

/// Environment variables with this prefix override file keys, `__` separating levels:
/// `MAILFERRY__DAEMON__STATE_DIR=/tmp/x`.
const ENV_PREFIX: &str = "MAILFERRY";

/// Reads and checks the configuration file at `path`.
///
/// # Errors
/// Every problem found, each naming its key and, where known, its line.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_scoped(path, &SecretScope::All)
}

/// Reads and checks the configuration file at `path`, reading only the secrets `scope`
/// names (see [`SecretScope`]).
///
/// # Errors
/// Every problem found, each naming its key and, where known, its line.
pub fn load_scoped(path: &Path, scope: &SecretScope) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        path: path.to_owned(),
        errors,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![ConfigError {
            key: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let spans = match DeTable::parse(&text) {
        Ok(table) => table,
        Err(e) => {
            let line = e.span().map(|s| line_of(&text, s.start));
            let message = e.message().to_owned();
            return Err(fail(vec![ConfigError {
                key: String::new(),
                line,
                message: format!("not valid TOML: {message}"),
            }]));
        }
    };

    let layered = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .convert_case(config::Case::Kebab),
        )
        .build()
        .map_err(|e| {
            fail(vec![ConfigError {
                key: String::new(),
                line: None,
                message: e.to_string(),
            }])
        })?;

    let mut unknown = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(layered, |p| unknown.push(key_path(&p)))
        .map_err(|e: config::ConfigError| {
            let mut error = wrong_value(e);
            error.line = find_line(&text, spans.get_ref(), &error.key);
            fail(vec![error])
        })?;

    let mut errors: Vec<ConfigError> = unknown
        .into_iter()
        .map(|key| ConfigError {
            key,
            line: None,
            message: "unknown key: check its spelling against config/mailferry.example.toml".into(),
        })
        .collect();
    let base = path.parent().unwrap_or(Path::new("."));
    let config = Config::from_raw_scoped(raw, base, scope);
    match config {
        Ok(config) if errors.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => errors.extend(more),
    }
    for e in &mut errors {
        e.line = find_line(&text, spans.get_ref(), &e.key);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(fail(errors))
}

/// A value of the wrong type (`port = "many"`), with its key in our notation so that its
/// line can be found. A value under a key that may hold a secret is not repeated.
fn wrong_value(e: config::ConfigError) -> ConfigError {
    let (key, message) = match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => {
            let key = dotted(&key);
            let message = must_be(&key, expected, &unexpected.to_string());
            (key, message)
        }
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => {
            let key = dotted(&key);
            // serde's own words: `invalid type: string "x", expected struct RawAuth`.
            let text = error.to_string();
            let message = match text
                .strip_prefix("invalid type: ")
                .and_then(|t| t.split_once(", expected "))
            {
                Some((found, expected)) => must_be(&key, expected, found),
                None if may_hold_a_secret(&key) => {
                    "is not written as config/mailferry.example.toml shows".to_owned()
                }
                None => text,
            };
            (key, message)
        }
        other => (String::new(), other.to_string()),
    };
    ConfigError {
        key,
        line: None,
        message,
    }
}

/// "must be an integer, not string \"many\"": what the key takes, in the file's words
/// (a `struct` is a table), and what it holds, unless it may be a secret.
fn must_be(key: &str, expected: &str, found: &str) -> String {
    let expected = match expected {
        e if !(e.starts_with("struct ") || e.starts_with("a map")) => e,
        _ if key.ends_with(".auth") => {
            "a table, e.g. { method = \"password\", password-file = \"...\" }"
        }
        _ => "a table",
    };
    if may_hold_a_secret(key) && found.starts_with("string") {
        format!("must be {expected}, not a string")
    } else {
        format!("must be {expected}, not {found}")
    }
}

/// `destination[0]port` (the config crate's notation) as `destination[0].port`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| *n != '[' && *n != '.') {
            out.push('.');
        }
    }
    out
}

fn may_hold_a_secret(key: &str) -> bool {
    ["auth", "password", "secret", "token"]
        .iter()
        .any(|w| key.contains(w))
}

/// Turns serde_ignored's path into our notation: `account[1].auth.pasword-file`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        P::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            key_path(parent)
        }
    }
}

/// The 1-based line where `key` (in our notation) is written, or where its nearest written
/// ancestor is (a missing key is reported at its table).
fn find_line(text: &str, root: &DeTable<'_>, key: &str) -> Option<usize> {
    let mut table = root;
    let mut best = None;
    for segment in key.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match segment.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some((k, v)) = table.get_key_value(name) else {
            return best;
        };
        best = Some(line_of(text, k.span().start));
        let mut value = v.get_ref();
        if let (Some(i), DeValue::Array(items)) = (index, value) {
            let Some(item) = items.get(i) else {
                return best;
            };
            best = Some(line_of(text, item.span().start));
            value = item.get_ref();
        }
        match value {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    best
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{PASSWORD, Sample};

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn good_file_resolves_presets_and_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "gmx.pass", "s3cret\n");
        let cfg = load(&write(dir.path(), "m.toml", &Sample::new().text())).expect("valid");
        let a = &cfg.accounts[0];
        assert_eq!(a.endpoint.host, "imap.gmx.net");
        let crate::SourceAuth::Password(p) = &a.auth else {
            panic!("expected a password login")
        };
        assert_eq!(p.expose(), "s3cret");
        // Relative paths are the file's directory's.
        assert_eq!(cfg.daemon.state_dir, dir.path().join("state"));
        assert!(cfg.warnings.iter().any(|w| w.contains("unencrypted")));
    }

    #[test]
    fn all_errors_at_once_with_keys_and_lines() {
        let sample = Sample::new()
            .account("pasword = \"x\"\ninterval = \"soon\"")
            .edit(
                "password-file = \"gmx.pass\"",
                "password-file = \"nope.pass\"",
            )
            .edit("destination = \"home\"", "destination = \"nowhere\"");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(&write(dir.path(), "m.toml", &sample.text())).expect_err("invalid");
        let shown = err.to_string();
        let keys: Vec<_> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"account[0].pasword"), "{shown}");
        assert!(keys.contains(&"account[0].interval"), "{shown}");
        assert!(keys.contains(&"account[0].auth.password-file"), "{shown}");
        assert!(keys.contains(&"account[0].destination"), "{shown}");
        let typo = err
            .errors
            .iter()
            .find(|e| e.key == "account[0].pasword")
            .expect("typo");
        let line = sample
            .text()
            .lines()
            .position(|l| l.starts_with("pasword"))
            .map(|i| i + 1);
        assert_eq!(typo.line, line, "{shown}");
        assert!(
            shown.contains(&format!(
                "m.toml:{}: account[0].pasword: unknown key",
                line.unwrap_or_default()
            )),
            "{shown}"
        );
        assert!(shown.contains("\"soon\" is not a duration"), "{shown}");
        assert!(
            shown.contains("no [[destination]] is named \"nowhere\""),
            "{shown}"
        );
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let shown = Sample::new()
            .edit("destination = \"home\"", "destination = \"x\"")
            .errors();
        assert!(!shown.contains(PASSWORD), "{shown}");
    }

    #[test]
    fn credentials_directory_is_expanded_and_its_absence_explained() {
        Sample::new()
            .edit(
                "password-file = \"gmx.pass\"",
                "password-file = \"${CREDENTIALS_DIRECTORY}/gmx\"",
            )
            .refused(
                "account[0].auth.password-file",
                "cannot read /run/credentials/CREDENTIALS_DIRECTORY-is-not-set/gmx",
            );
    }

    #[test]
    fn a_scope_reads_only_the_secrets_it_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "gmx.pass", "s3cret\n");
        // A second account whose secret this process cannot read (the service's own).
        let text = format!(
            "{}\n[[account]]\nname = \"other\"\nprovider = \"gmx\"\nusername = \"o@gmx.net\"\nauth = {{ method = \"password\", password-file = \"${{CREDENTIALS_DIRECTORY}}/other.pass\" }}\ndestination = \"home\"\n",
            Sample::new().text()
        );
        let path = write(dir.path(), "m.toml", &text);

        // Every secret: the unreadable one is an error naming its key and path, with a hint.
        let shown = load(&path).expect_err("unreadable secret").to_string();
        assert!(
            shown.contains("account[1].auth.password-file: cannot read /run/credentials/"),
            "{shown}"
        );
        assert!(shown.contains("systemd-run"), "{shown}");

        // No secrets (status): loads, and no password was read.
        let cfg = load_scoped(&path, &SecretScope::None).expect("no secrets read");
        let crate::SourceAuth::Password(p) = &cfg.accounts[0].auth else {
            panic!("expected a password")
        };
        assert_eq!(p.expose(), "");

        // One account (check gmx): its secret is read, the other's is not.
        let cfg = load_scoped(&path, &SecretScope::Only(vec!["gmx".into()])).expect("gmx only");
        let crate::SourceAuth::Password(p) = &cfg.accounts[0].auth else {
            panic!("expected a password")
        };
        assert_eq!(p.expose(), "s3cret");
        let shown = load_scoped(&path, &SecretScope::Only(vec!["other".into()]))
            .expect_err("other's secret is unreadable here")
            .to_string();
        assert!(shown.contains("account[1].auth.password-file"), "{shown}");
        assert!(!shown.contains("account[0]"), "{shown}");

        // The shape of an unread secret is still checked.
        let broken = text.replace(
            r#"password-file = "${CREDENTIALS_DIRECTORY}/other.pass" }"#,
            r#"password-file = "x", password-env = "Y" }"#,
        );
        let shown = load_scoped(&write(dir.path(), "b.toml", &broken), &SecretScope::None)
            .expect_err("both set")
            .to_string();
        assert!(
            shown.contains(
                "account[1].auth.password-file: set either password-file or password-env, not both"
            ),
            "{shown}"
        );
    }

    #[test]
    fn readme_pointers_in_errors_name_sections_that_exist() {
        let readme = include_str!("../../../README.md");
        let headings: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("### ").or_else(|| l.strip_prefix("## ")))
            .collect();
        let sources = [
            include_str!("model/oauth.rs"),
            include_str!("model/mod.rs"),
            include_str!("model/account.rs"),
            include_str!("model/daemon.rs"),
            include_str!("model/destination.rs"),
            include_str!("../../mailferry/src/auth.rs"),
        ];
        let mut found = 0;
        for text in sources {
            // The program's messages, not the tests that quote them.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for piece in code.split("README: \\\"").skip(1) {
                let name = piece.split("\\\"").next().unwrap_or_default();
                found += 1;
                assert!(
                    headings.contains(&name),
                    "the README has no section {name:?}; it has {headings:?}"
                );
            }
        }
        assert!(found >= 3, "no README pointers found ({found})");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            load(&write(dir.path(), "m.toml", "[daemon]\nstate-dir = \n")).expect_err("invalid");
        assert_eq!(err.errors[0].line, Some(2), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_key_and_line() {
        let sample = Sample::new().edit("port = 2525", "port = \"many\"");
        let line = sample.text().lines().position(|l| l == "port = \"many\"");
        let shown = sample.errors();
        assert!(
            shown.contains(&format!(
                "m.toml:{}: destination[0].port: must be an integer, not string \"many\"",
                line.map_or(0, |i| i + 1)
            )),
            "{shown}"
        );
        // A secret written where a table belongs is not repeated.
        let shown = Sample::new().auth("auth = \"hunter2\"").errors();
        assert!(
            shown.contains("account[0].auth: must be a table, e.g. { method = \"password\", password-file = \"...\" }, not a string"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[cfg(test)]
mod example {
    /// The documented example is a valid configuration (its paths moved into a temporary
    /// directory), with push keys and all: documentation that cannot rot unnoticed.
    #[test]
    fn the_example_configuration_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = include_str!("../../../config/mailferry.example.toml");
        let root = dir.path().display().to_string();
        let text = text
            .replace("/var/lib/mailferry", &format!("{root}/state"))
            .replace("/etc/mailferry", &root);
        std::fs::write(dir.path().join("gmx.pass"), "s3cret\n").expect("write");
        let path = dir.path().join("mailferry.toml");
        std::fs::write(&path, text).expect("write");
        let config = crate::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.accounts.is_empty());
    }
}
