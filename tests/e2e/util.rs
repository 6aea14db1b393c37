//! The test bench: servers, a config file, and a way to run the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailferry_testkit::{Dovecot, PASSWORD, SmtpReceiver, USER};
use tempfile::TempDir;

/// The `[daemon]` table every test config starts with.
pub const DAEMON: &str =
    "[daemon]\nstate-dir = \"state\"\nconnect-timeout = \"5s\"\nio-timeout = \"30s\"\n";

/// The envelope recipient every test destination uses.
pub const RCPT: &str = "gathered@home.example";

/// Dovecot + receiver + a config for one account "src" delivering to "home".
pub struct Bench {
    pub dovecot: Dovecot,
    pub smtp: SmtpReceiver,
    pub dir: TempDir,
    /// Extra lines for the `[[destination]]` block.
    dest_extra: String,
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Bench {
    pub fn start() -> Self {
        Self::start_with_smtp_auth(None)
    }

    /// A bench whose SMTP receiver requires AUTH as `(user, password)`; the destination
    /// logs in as `user` with the password in `smtp.pass` (written by the test).
    pub fn start_with_smtp_auth(auth: Option<(&str, &str)>) -> Self {
        let dovecot = Dovecot::start();
        let smtp = SmtpReceiver::start_with_auth(Some(&dovecot.pki), auth);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("src.pass"), format!("{PASSWORD}\n"))
            .expect("password file");
        let dest_extra = auth.map_or(String::new(), |(user, _)| {
            format!("username = \"{user}\"\npassword-file = \"smtp.pass\"\n")
        });
        let b = Self {
            dovecot,
            smtp,
            dir,
            dest_extra,
        };
        b.write_config(&[b.account("src", b.dovecot.imaps_port, "implicit", "src.pass")]);
        b
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mailferry.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// An `[[account]]` block reading this bench's Dovecot.
    pub fn account(&self, name: &str, port: u16, tls: &str, password_file: &str) -> String {
        format!(
            r#"
[[account]]
name = "{name}"
host = "127.0.0.1"
port = {port}
tls = "{tls}"
tls-ca-file = "{ca}"
username = "{USER}"
auth = {{ method = "password", password-file = "{password_file}" }}
folders = ["INBOX"]
destination = "home"
"#,
            ca = self.dovecot.pki.ca_pem.display()
        )
    }

    /// An `[[account]]` block reading this bench's Dovecot over POP3; `auth` is the inline
    /// table, `extra` more lines.
    pub fn pop3_account(
        &self,
        name: &str,
        port: u16,
        tls: &str,
        auth: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"
[[account]]
name = "{name}"
protocol = "pop3"
host = "127.0.0.1"
port = {port}
tls = "{tls}"
tls-ca-file = "{ca}"
username = "{USER}"
auth = {auth}
destination = "home"
{extra}
"#,
            ca = self.dovecot.pki.ca_pem.display()
        )
    }

    /// A `[[destination]]` block: the SMTP receiver on `port` over STARTTLS with this
    /// bench's CA, delivering to [`RCPT`].
    pub fn smtp_destination(&self, name: &str, port: u16) -> String {
        format!(
            r#"[[destination]]
name = "{name}"
kind = "smtp"
host = "localhost"
port = {port}
tls = "starttls"
tls-ca-file = "{ca}"
envelope-to = ["{RCPT}"]
"#,
            ca = self.dovecot.pki.ca_pem.display(),
        )
    }

    /// Writes a config of the test `[daemon]` table, `destination` and `accounts`.
    pub fn write_raw(&self, destination: &str, accounts: &[String]) {
        let text = format!("{DAEMON}\n{destination}{}", accounts.join("\n"));
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Writes the config: daemon, the SMTP destination (STARTTLS), and `accounts`.
    pub fn write_config(&self, accounts: &[String]) {
        let destination = self.smtp_destination("home", self.smtp.port) + &self.dest_extra;
        self.write_raw(&destination, accounts);
    }

    /// `mailferry once`, which must succeed (exit 0); the whole run is printed when not.
    pub fn once_ok(&self) -> Run {
        once_ok_with_config(&self.config_path())
    }

    /// Runs `mailferry ARGS --config <bench config>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        run_with_config(&self.config_path(), args)
    }

    /// Counts ledger rows by state, read straight from the SQLite file.
    /// Starts `mailferry once` with this bench's config, waits until the ledger shows
    /// exactly `delivered` delivered messages and one attempted (the process is then waiting
    /// for the receiver's slow reply), and kills it with SIGKILL.
    pub fn kill_once_while_delivering(&self, delivered: i64) {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(["once", "--config"])
            .arg(self.config_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let want = [
            ("attempt".to_owned(), 1),
            ("delivered".to_owned(), delivered),
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // One snapshot of the ledger per poll: two reads could straddle a commit.
        while self.ledger_states() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow delivery never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
    }

    /// Empty while the database is still being created (tests poll this during a run).
    pub fn ledger_states(&self) -> Vec<(String, i64)> {
        try_sqlite(
            &self.state_dir().join("mailferry.db"),
            "SELECT state, COUNT(*) FROM ledger GROUP BY state ORDER BY state",
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('|')
                .map(|(s, n)| (s.to_owned(), n.parse().unwrap_or(-1)))
        })
        .collect()
    }
}

/// `mailferry once --config CONFIG`, which must succeed (exit 0); the whole run is
/// printed when not.
pub fn once_ok_with_config(config: &Path) -> Run {
    let run = run_with_config(config, &["once"]);
    assert_eq!(run.code, 0, "{run:?}");
    run
}

/// Runs `mailferry ARGS --config CONFIG` to completion (MAILFERRY_LOG unset).
pub fn run_with_config(config: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("MAILFERRY_LOG")
        .output()
        .expect("run mailferry");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a query with the sqlite3 shell (installed by scripts/test).
pub fn sqlite(db: &Path, sql: &str) -> String {
    try_sqlite(db, sql).unwrap_or_else(|e| panic!("sqlite3: {e}"))
}

/// Like [`sqlite`], but an error (no such table yet, say) is returned, not fatal.
pub fn try_sqlite(db: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (scripts/test installs it)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asserts the summary line of an account in a run's stdout, printing the whole run when
/// it differs: `assert_summary!(run, "src", fetched 3, delivered 3, skipped 0, failed 0)`.
macro_rules! assert_summary {
    ($run:expr, $account:expr, fetched $f:expr, delivered $d:expr, skipped $s:expr, failed $x:expr) => {
        assert_eq!(
            $crate::util::summary(&$run, $account),
            format!(
                "{}: fetched {}, delivered {}, skipped {}, failed {}",
                $account, $f, $d, $s, $x
            ),
            "{:?}",
            $run
        )
    };
}

/// The summary line of `account` in a run's stdout.
pub fn summary<'a>(run: &'a Run, account: &str) -> &'a str {
    let prefix = format!("{account}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary for {account}: {run:?}"))
}
