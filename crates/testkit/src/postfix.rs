//! A private Postfix 3.7 receiving on one loopback port: what most home servers run,
//! next to the aiosmtpd receiver. It delivers to a virtual Maildir; nothing can leave
//! (every other transport is `error:`), nothing listens on port 25.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use crate::{Pki, random_port, wait_listening};

/// The domain Postfix takes mail for.
pub const POSTFIX_DOMAIN: &str = "home.example";

/// A running private Postfix; stopped when dropped.
pub struct Postfix {
    dir: TempDir,
    /// The SMTP port (STARTTLS offered, with [`Postfix::pki`]).
    pub port: u16,
    /// The certificate it presents.
    pub pki: Pki,
    running: bool,
}

impl std::fmt::Debug for Postfix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postfix")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Postfix {
    /// Starts an instance that takes mail for `mailboxes` (addresses in
    /// [`POSTFIX_DOMAIN`]), with `main_cf` lines added after the test defaults (later
    /// lines win: `smtputf8_enable = no`, `message_size_limit = ...`, restrictions).
    #[must_use]
    pub fn start(mailboxes: &[&str], main_cf: &[&str]) -> Self {
        assert!(
            std::path::Path::new("/usr/sbin/postfix").exists(),
            "Postfix is not installed: run scripts/test, which installs it"
        );
        let dir = tempfile::Builder::new()
            .prefix("mailferry-postfix-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let pki = Pki::generate(&d);
        for sub in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let mut p = Self {
            dir,
            port: 0,
            pki,
            running: false,
        };
        let maps: String = mailboxes.iter().map(|m| format!("{m} {m}/\n")).collect();
        std::fs::write(d.join("etc/vmailbox"), maps).expect("vmailbox");
        std::fs::copy("/etc/postfix/dynamicmaps.cf", d.join("etc/dynamicmaps.cf"))
            .expect("dynamicmaps.cf");
        run(Command::new("chown").arg("postfix").arg(d.join("data")));
        run(Command::new("chown").arg("65534:65534").arg(d.join("mail")));
        run(Command::new("chmod").arg("755").arg(&d));
        for _ in 0..5 {
            p.port = random_port();
            p.write_config(main_cf);
            let check = Command::new("postfix")
                .arg("-c")
                .arg(d.join("etc"))
                .arg("check")
                .output()
                .expect("postfix check");
            assert!(
                check.status.success(),
                "postfix check: {check:?}\n{}",
                p.log()
            );
            let start = Command::new("postfix")
                .arg("-c")
                .arg(d.join("etc"))
                .arg("start")
                .output()
                .expect("postfix start");
            p.running = start.status.success();
            if p.running && wait_listening(p.port) {
                return p;
            }
            p.stop();
        }
        panic!("Postfix did not start; its log:\n{}", p.log());
    }

    fn write_config(&self, extra: &[&str]) {
        let d = self.dir.path().display();
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = mx.{POSTFIX_DOMAIN}\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             virtual_mailbox_domains = {POSTFIX_DOMAIN}\n\
             virtual_mailbox_base = {d}/mail\n\
             virtual_mailbox_maps = texthash:{d}/etc/vmailbox\n\
             virtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\n\
             default_transport = error:nothing leaves a test machine\n\
             relay_transport = error:nothing leaves a test machine\n\
             alias_maps =\n\
             alias_database =\n\
             maillog_file_prefixes = {d}\n\
             maillog_file = {d}/maillog\n\
             syslog_name = postfix-mailferry-test\n\
             smtpd_tls_cert_file = {chain}\n\
             smtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = may\n\
             smtpd_forbid_bare_newline = reject\n\
             smtpd_forbid_bare_newline_exclusions =\n\
             local_header_rewrite_clients =\n\
             {extra}\n",
            chain = self.pki.chain_pem.display(),
            key = self.pki.key_pem.display(),
            extra = extra.join("\n"),
        );
        std::fs::write(self.dir.path().join("etc/main.cf"), main).expect("main.cf");
        let proto =
            std::fs::read_to_string("/etc/postfix/master.cf.proto").expect("master.cf.proto");
        let master: String = proto
            .lines()
            .map(|l| {
                if l.starts_with("smtp      inet") {
                    format!("127.0.0.1:{} inet n - n - - smtpd", self.port)
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect();
        std::fs::write(self.dir.path().join("etc/master.cf"), master).expect("master.cf");
        run(Command::new("postconf")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("-F")
            .arg("*/*/chroot = n"));
    }

    /// Replaces the added `main.cf` lines and reloads (the same port).
    pub fn reconfigure(&self, main_cf: &[&str]) {
        self.write_config(main_cf);
        run(Command::new("postfix")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("reload"));
        // smtpd processes pick the new settings up at their next connection.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// Stops it (mail in its queue stays there).
    pub fn stop(&mut self) {
        if self.running {
            let _ = Command::new("postfix")
                .arg("-c")
                .arg(self.dir.path().join("etc"))
                .arg("stop")
                .output();
            self.running = false;
        }
    }

    /// The messages delivered to `mailbox` once there are `n` (Postfix delivers from its
    /// queue a moment after its 250), or what is there after 20 s.
    #[must_use]
    pub fn wait_delivered(&self, mailbox: &str, n: usize) -> Vec<Vec<u8>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = self.delivered(mailbox);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The messages delivered to `mailbox` so far, as stored (Postfix's trace headers first).
    #[must_use]
    pub fn delivered(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let new = self.dir.path().join("mail").join(mailbox).join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).expect("read delivered"))
            .collect()
    }

    /// Its log once `ready` holds for it (Postfix writes its log through a daemon, a moment
    /// after the fact), or as it is after 20 s.
    #[must_use]
    pub fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let log = self.log();
            if ready(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Its log file.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// Whether `stored` (as Postfix keeps it: trace headers first, LF line ends, the original
/// Return-Path dropped) holds `original` unchanged otherwise.
#[must_use]
pub fn holds_unchanged(stored: &[u8], original: &[u8]) -> bool {
    let lf = |b: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len());
        for (i, &c) in b.iter().enumerate() {
            if !(c == b'\r' && b.get(i + 1) == Some(&b'\n')) {
                out.push(c);
            }
        }
        out
    };
    let original: Vec<u8> = lf(original)
        .split_inclusive(|&c| c == b'\n')
        .filter(|l| !l.to_ascii_lowercase().starts_with(b"return-path:"))
        .flatten()
        .copied()
        .collect();
    lf(stored).ends_with(&original)
}
