//! A private Dovecot (IMAP and POP3, password and oauth2 passdbs) on loopback.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{FakeIdp, PASSWORD, Pki, UNIQUE, USER, random_port, wait_listening};

/// A private Dovecot serving IMAP over implicit TLS, IMAP with STARTTLS, on 127.0.0.1.
pub struct Dovecot {
    dir: TempDir,
    /// The certificates Dovecot presents.
    pub pki: Pki,
    /// Port of IMAP with implicit TLS.
    pub imaps_port: u16,
    /// Port of IMAP with STARTTLS.
    pub imap_port: u16,
    /// Port of POP3 with implicit TLS.
    pub pop3s_port: u16,
    /// Port of POP3 with STLS.
    pub pop3_port: u16,
    /// The fake identity provider Dovecot's oauth2 passdb asks about bearer tokens.
    pub idp: FakeIdp,
    uid: u32,
    gid: u32,
    /// The SASL mechanisms offered.
    mechanisms: String,
}

impl std::fmt::Debug for Dovecot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dovecot")
            .field("dir", &self.dir.path())
            .field("imaps_port", &self.imaps_port)
            .finish_non_exhaustive()
    }
}

impl Dovecot {
    /// Starts a private instance; panics with Dovecot's log if it does not come up.
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailferry-dovecot-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let pki = Pki::generate(dir.path());
        // Dovecot refuses to deliver mail as root; when the tests run as root, mail
        // belongs to nobody, otherwise to the current user.
        let me = std::fs::metadata(dir.path()).expect("meta");
        let (uid, gid) = if me.uid() == 0 {
            (65534, 65534)
        } else {
            (me.uid(), me.gid())
        };
        let home = dir.path().join("homes").join(USER);
        std::fs::create_dir_all(home.join("Maildir").join("cur")).expect("mkdir");
        for sub in ["new", "tmp"] {
            std::fs::create_dir_all(home.join("Maildir").join(sub)).expect("mkdir");
        }
        // One password file per service (%s), so that a test can switch a protocol off.
        for service in ["imap", "pop3"] {
            std::fs::write(
                dir.path().join(format!("passwd.{service}")),
                format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
            )
            .expect("passwd");
        }
        let idp = FakeIdp::start();
        let mut d = Self {
            dir,
            pki,
            imaps_port: 0,
            imap_port: 0,
            pop3s_port: 0,
            pop3_port: 0,
            idp,
            uid,
            gid,
            mechanisms: "plain login xoauth2 oauthbearer".into(),
        };
        d.chown_tree(&home);
        let mut last_log = String::new();
        for _ in 0..8 {
            d.imaps_port = random_port();
            d.imap_port = random_port();
            d.pop3s_port = random_port();
            d.pop3_port = random_port();
            d.write_config();
            let status = Command::new("dovecot")
                .arg("-c")
                .arg(d.dir.path().join("dovecot.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("cannot run dovecot: install dovecot-imapd (scripts/test does)");
            let ports = [d.imaps_port, d.imap_port, d.pop3s_port, d.pop3_port];
            if status.success() && ports.iter().all(|p| wait_listening(*p)) {
                return d;
            }
            last_log = d.log();
            d.stop();
        }
        panic!("dovecot did not start; its log:\n{last_log}");
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let conf = format!(
            r#"# private test instance written by mailferry-testkit
instance_name = mailferry-test-{pid}-{n}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap pop3
pop3_uidl_format = %08Xu%08Xv
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/server-chain.pem
ssl_key = <{d}/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = {mechanisms}
auth_cache_size = 0
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_fsync = never
passdb {{
  driver = passwd-file
  args = {d}/passwd.%s
  mechanisms = plain login
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/homes/%u allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
protocol imap {{
  # The push footprint bench keeps 20 IDLE connections of one user.
  mail_max_userip_connections = 100
}}
# The 1,000-account bench holds hundreds of connections at once (the defaults: 100).
default_process_limit = 2000
default_client_limit = 4000
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"#,
            pid = std::process::id(),
            uid = self.uid,
            gid = self.gid,
            imap = self.imap_port,
            imaps = self.imaps_port,
            pop3 = self.pop3_port,
            pop3s = self.pop3s_port,
            mechanisms = self.mechanisms,
        );
        let oauth2 = format!(
            "tokeninfo_url = http://127.0.0.1:{}/tokeninfo?access_token=\nusername_attribute = email\nactive_attribute = active\nactive_value = true\n",
            self.idp.port
        );
        std::fs::write(self.dir.path().join("oauth2.conf.ext"), oauth2)
            .expect("write oauth2.conf.ext");
        std::fs::write(self.dir.path().join("dovecot.conf"), conf).expect("write dovecot.conf");
    }

    /// The Maildir directory of `folder` (`INBOX` is the Maildir root).
    #[must_use]
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        let root = self.dir.path().join("homes").join(USER).join("Maildir");
        if folder == "INBOX" {
            root
        } else {
            root.join(format!(".{folder}"))
        }
    }

    /// Puts `bytes` into `folder` as an unread message, exactly as given.
    pub fn add_message(&self, folder: &str, bytes: &[u8]) {
        let dir = self.folder_dir(folder);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let path = write_maildir_message(&dir, bytes);
        for p in [
            dir.clone(),
            dir.join("cur"),
            dir.join("new"),
            dir.join("tmp"),
            path,
        ] {
            std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).expect("chown");
        }
    }

    /// Adds `n` users (`bench0@test.example`, ...) with [`PASSWORD`] and an empty INBOX
    /// each, for benches with many accounts; returns their names.
    pub fn add_users(&self, n: usize) -> Vec<String> {
        let users: Vec<String> = (0..n).map(|i| format!("bench{i}@test.example")).collect();
        for service in ["imap", "pop3"] {
            let path = self.dir.path().join(format!("passwd.{service}"));
            let mut text = std::fs::read_to_string(&path).expect("passwd");
            for u in &users {
                text.push_str(&format!("{u}:{{PLAIN}}{PASSWORD}::::::\n"));
            }
            std::fs::write(&path, text).expect("passwd");
        }
        for u in &users {
            let maildir = self.dir.path().join("homes").join(u).join("Maildir");
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub)).expect("mkdir");
            }
            self.chown_tree(&self.dir.path().join("homes").join(u));
        }
        users
    }

    /// Puts `bytes` into `user`'s INBOX as an unread message.
    pub fn add_message_for(&self, user: &str, bytes: &[u8]) {
        let dir = self.dir.path().join("homes").join(user).join("Maildir");
        let path = write_maildir_message(&dir, bytes);
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid)).expect("chown");
    }

    /// Maildir file names in `folder`'s `cur/`, to check flags (`:2,` = unread, no flags).
    #[must_use]
    pub fn message_files(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.folder_dir(folder).join("cur"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// How many messages sit in `folder`'s `new/` (where Dovecot may move nothing, but
    /// a delivery agent would put mail).
    #[must_use]
    pub fn new_files(&self, folder: &str) -> usize {
        std::fs::read_dir(self.folder_dir(folder).join("new")).map_or(0, Iterator::count)
    }

    /// The contents of every message in `folder` (`cur/` and `new/`), lossily decoded.
    #[must_use]
    pub fn maildrop(&self, folder: &str) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["cur", "new"] {
            if let Ok(rd) = std::fs::read_dir(self.folder_dir(folder).join(sub)) {
                for e in rd.filter_map(Result::ok) {
                    out.push(
                        String::from_utf8_lossy(&std::fs::read(e.path()).expect("read message"))
                            .into_owned(),
                    );
                }
            }
        }
        out
    }

    /// Forgets `folder`'s UIDs (its uidlist and indexes), as when a mailbox is recreated: the
    /// same messages come back under a new UIDVALIDITY. Waits past the current second,
    /// since Dovecot derives a new UIDVALIDITY from the clock.
    pub fn reset_uidvalidity(&self, folder: &str) {
        let dir = self.folder_dir(folder);
        for entry in std::fs::read_dir(&dir)
            .expect("read folder")
            .filter_map(Result::ok)
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot") {
                std::fs::remove_file(entry.path()).expect("remove index");
            }
        }
        std::thread::sleep(Duration::from_millis(1100));
    }

    /// Hands `path` (and everything below it) to the mail user.
    fn chown_tree(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).expect("chown");
        if path.is_dir() {
            for entry in std::fs::read_dir(path)
                .expect("read dir")
                .filter_map(Result::ok)
            {
                self.chown_tree(&entry.path());
            }
        }
    }

    /// Switches `service` (`imap` or `pop3`) off for the test user, as a provider does when
    /// POP or IMAP access is off in the account's settings: logins are refused with
    /// `reason` (no spaces).
    pub fn disable_service(&self, service: &str, reason: &str) {
        std::fs::write(
            self.dir.path().join(format!("passwd.{service}")),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::nologin reason={reason}\n"),
        )
        .expect("passwd");
    }

    /// Disconnects every session of `user`, as a server does when it invalidates a session
    /// (Outlook.com: when the access token it was opened with expires).
    pub fn kick(&self, user: &str) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args(["kick", user])
            .output()
            .expect("doveadm");
        assert!(
            out.status.success(),
            "doveadm kick: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Offers only `mechanisms` (e.g. `"plain login xoauth2"`, like Outlook.com) from now
    /// on: rewrites the configuration and reloads the running instance.
    pub fn offer_mechanisms(&mut self, mechanisms: &str) {
        mechanisms.clone_into(&mut self.mechanisms);
        self.write_config();
        let pid_file = self.dir.path().join("run").join("master.pid");
        let pid = std::fs::read_to_string(pid_file).expect("master.pid");
        let ok = Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill -HUP");
        assert!(ok.success(), "cannot reload dovecot");
        // The reload replaces the auth and login processes; give it a moment.
        std::thread::sleep(Duration::from_millis(1500));
    }

    fn stop(&self) {
        let pid_file = self.dir.path().join("run").join("master.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").arg(&pid).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Dovecot's log so far, for assertion messages.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `bytes` as an unread message into the Maildir `dir`'s `cur/` under a unique
/// name; returns its path.
fn write_maildir_message(dir: &Path, bytes: &[u8]) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{}.M{n}P{}.testkit:2,",
        1_700_000_000 + n,
        std::process::id()
    );
    let path = dir.join("cur").join(name);
    std::fs::write(&path, bytes).expect("write message");
    path
}
