//! Real servers for mailferry's tests, private to one test and on 127.0.0.1 only:
//!
//! - [`Pki`]: a CA generated per run and a server certificate it signs (rustls refuses a
//!   self-signed certificate used directly as a server certificate);
//! - [`Dovecot`]: a private Dovecot instance (IMAP with TLS) with its own config, state and
//!   Maildir in a temporary directory; never touches `/etc/dovecot`;
//! - [`SmtpReceiver`]: aiosmtpd running `py/smtp_receiver.py`, storing what it accepts;
//! - [`fixtures`]: message bytes for the tests;
//! - [`Machine`]: a throwaway machine with a real systemd, to install and start the unit in.
//!
//! Helpers panic with a message on failure: they only run inside tests.

#![warn(missing_docs)]
#![allow(clippy::missing_panics_doc)]

mod cyrus;
mod fake_imap;
mod fake_pop3;
pub mod fixtures;
mod http_sink;
mod lenient_smtp;
mod machine;
mod peak;
mod postfix;
mod trickle;

pub use cyrus::{CYRUS_USER, Cyrus};
pub use fake_imap::{FakeImap, ImapScript, Log as ImapLog};
pub use fake_pop3::{FakePop3, Pop3Script};
pub use http_sink::{HttpSink, Request};
pub use lenient_smtp::LenientSmtp;
pub use machine::{Machine, Ran};
pub use peak::run_measuring_peak;
pub use postfix::{POSTFIX_DOMAIN, Postfix, holds_unchanged};
pub use trickle::Trickle;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A test CA and a server certificate for `localhost` and `127.0.0.1`.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate (PEM): what clients trust (`tls-ca-file`).
    pub ca_pem: PathBuf,
    /// Server certificate followed by the CA (PEM).
    pub chain_pem: PathBuf,
    /// Server private key (PEM).
    pub key_pem: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and server certificate into `dir`.
    #[must_use]
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mailferry test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let pki = Self {
            ca_pem: dir.join("ca.pem"),
            chain_pem: dir.join("server-chain.pem"),
            key_pem: dir.join("server.key"),
        };
        std::fs::write(&pki.ca_pem, ca_cert.pem()).expect("write CA");
        std::fs::write(
            &pki.chain_pem,
            format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        )
        .expect("write chain");
        std::fs::write(&pki.key_pem, leaf_key.serialize_pem()).expect("write key");
        std::fs::set_permissions(&pki.key_pem, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        pki
    }
}

/// The user every test mailbox belongs to.
pub const USER: &str = "alice@test.example";
/// That user's password.
pub const PASSWORD: &str = "correct horse battery staple";

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

static UNIQUE: AtomicU64 = AtomicU64::new(0);

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
        let home = dir.path().join("home");
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
  args = uid={uid} gid={gid} home={d}/home allow_all_users=yes
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
        let root = self.dir.path().join("home").join("Maildir");
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
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}.M{n}P{}.testkit:2,",
            1_700_000_000 + n,
            std::process::id()
        );
        let path = dir.join("cur").join(name);
        std::fs::write(&path, bytes).expect("write message");
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

pub(crate) fn random_port() -> u16 {
    // Dovecot binds its own sockets, so a port cannot be handed over; start() retries on
    // another port when one is taken, instead of probing first (which races).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let mixed = u64::from(seed)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(n.wrapping_mul(1_442_695_040_888_963_407))
        >> 33;
    20_000 + u16::try_from(mixed % 40_000).expect("port in range")
}

pub(crate) fn wait_listening(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Starts `py/<script>` with `args`; returns the child and the port it printed.
fn spawn_python(script: &str, args: &[&std::ffi::OsStr]) -> (Child, u16) {
    let python = std::env::var("MAILFERRY_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let mut child = Command::new(python)
        .arg(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run python3: scripts/test installs it");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read port");
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("{script} did not start (are its Python modules installed?); it said {line:?}")
        });
    (child, port)
}

/// A fake OAuth2 identity provider (`py/fake_idp.py`) on 127.0.0.1: token, device code
/// and authorize endpoints in Microsoft's shapes, and the tokeninfo endpoint Dovecot's
/// oauth2 passdb asks.
pub struct FakeIdp {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl FakeIdp {
    /// Starts the fake with no valid token.
    #[must_use]
    pub fn start() -> Self {
        let (child, port) = spawn_python("fake_idp.py", &[]);
        Self { child, port }
    }

    /// `http://127.0.0.1:PORT{path}`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Calls a control endpoint; panics unless it answers 200.
    fn control(&self, what: &str, query: &[(&str, &str)]) -> String {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent(v)))
            .collect();
        let (status, body) = http_request(
            self.port,
            "POST",
            &format!("/control/{what}?{}", query.join("&")),
        );
        assert_eq!(status, 200, "fake IdP control {what}: {body}");
        body
    }

    /// Makes `token` a live access token of `email`.
    pub fn grant(&self, token: &str, email: &str) {
        self.control("grant", &[("token", token), ("email", email)]);
    }

    /// Approves the device code `user_code` as `email`, as the user would in a browser.
    pub fn approve(&self, user_code: &str, email: &str) {
        self.control("approve", &[("user_code", user_code), ("email", email)]);
    }

    /// Kills every token of `email`, refresh tokens included.
    pub fn revoke(&self, email: &str) {
        self.control("revoke", &[("email", email)]);
    }

    /// Sets a knob: `access_ttl`, `declared_ttl`, `browser_email`, `slow_down`,
    /// `date_offset`, `interval`.
    pub fn set(&self, key: &str, value: &str) {
        self.control("set", &[(key, value)]);
    }

    /// The next token request fails with this OAuth error.
    pub fn fail_next(&self, error: &str, description: &str) {
        self.control(
            "fail_next",
            &[("error", error), ("description", description)],
        );
    }

    /// Counters and the live refresh tokens.
    #[must_use]
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_request(self.port, "GET", "/control/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats json")
    }
}

/// Percent-encodes a query value.
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request to 127.0.0.1:`port` without a body; returns the status and body.
#[must_use]
pub fn http_request(port: u16, method: &str, target: &str) -> (u16, String) {
    http_request_with_body(port, method, target, b"")
}

/// Like [`http_request`], with a request body.
pub fn http_request_with_body(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // One write: a request split over several segments is legal, but there is no need.
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The headers and body of one HTTP GET of `url` (http://127.0.0.1:PORT/...), without
/// following redirects.
#[must_use]
pub fn http_get_raw(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n",
        if path.is_empty() { "/" } else { path }
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake Gmail API (`py/fake_gmail.py`) on 127.0.0.1, checking bearer tokens at a
/// [`FakeIdp`]'s tokeninfo endpoint.
pub struct FakeGmail {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for FakeGmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGmail")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A message the fake Gmail API holds.
#[derive(Debug, Clone)]
pub struct GmailMessage {
    /// Gmail's id.
    pub id: String,
    /// Labels it was imported with.
    pub label_ids: Vec<String>,
    /// The raw bytes as uploaded.
    pub raw: Vec<u8>,
    /// `import` or `insert`.
    pub mode: String,
    /// `multipart` or `resumable`.
    pub upload_type: String,
    /// The `internalDateSource` parameter.
    pub internal_date_source: Option<String>,
}

impl FakeGmail {
    /// Starts the fake; tokens are checked at `idp`.
    #[must_use]
    pub fn start(idp: &FakeIdp) -> Self {
        let tokeninfo = idp.url("/tokeninfo?access_token=");
        let (child, port) = spawn_python("fake_gmail.py", &[std::ffi::OsStr::new(&tokeninfo)]);
        Self { child, port }
    }

    /// The base URL to configure as `api-url`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets `rate` (per-user quota, requests/s), `storm` (the next N uploads are
    /// throttled), `fail500` (the next N fail with 500) or `retry_after` (seconds).
    pub fn set(&self, key: &str, value: &str) {
        let (status, body) =
            http_request(self.port, "POST", &format!("/control/set?{key}={value}"));
        assert_eq!(status, 200, "{body}");
    }
    /// Creates the user label `name` as if the user had made it; returns its id.
    pub fn label(&self, name: &str) -> String {
        let (code, body) = http_request(self.port, "POST", &format!("/control/label?name={name}"));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Puts `raw` into the mailbox as if the user had it there, with `labels` (e.g.
    /// `SENT`: their own sent copy). Returns its id.
    pub fn add(&self, raw: &[u8], labels: &[&str]) -> String {
        let (code, body) = http_request_with_body(
            self.port,
            "POST",
            &format!("/control/add?labels={}", labels.join(",")),
            raw,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Everything imported or inserted, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<GmailMessage> {
        use base64::Engine as _;
        let (status, body) = http_request(self.port, "GET", "/control/messages");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|m| GmailMessage {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                label_ids: m["labelIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect(),
                raw: base64::engine::general_purpose::STANDARD
                    .decode(m["raw"].as_str().unwrap_or_default())
                    .expect("base64"),
                mode: m["mode"].as_str().unwrap_or_default().to_owned(),
                upload_type: m["uploadType"].as_str().unwrap_or_default().to_owned(),
                internal_date_source: m["internalDateSource"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// `(size, sha256 hex, upload type)` of every message held, without the bytes.
    #[must_use]
    pub fn digests(&self) -> Vec<(u64, String, String)> {
        let (status, body) = http_request(self.port, "GET", "/control/digests");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|m| {
                (
                    m["size"].as_u64().unwrap_or_default(),
                    m["sha256"].as_str().unwrap_or_default().to_owned(),
                    m["uploadType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Counters: uploads, throttled, server_errors, label_creates, searches, chunks, ...
    #[must_use]
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_request(self.port, "GET", "/control/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats json")
    }
}

impl Drop for FakeGmail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The bytes as received, after SMTP's dot-unstuffing.
    pub raw: Vec<u8>,
    /// The envelope sender (`<>` as an empty string).
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// MAIL FROM parameters (e.g. `BODY=8BITMIME`).
    pub mail_options: Vec<String>,
}

/// A real SMTP server (aiosmtpd) on 127.0.0.1 that stores what it accepts.
pub struct SmtpReceiver {
    child: Child,
    dir: TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for SmtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpReceiver")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl SmtpReceiver {
    /// Starts the receiver; with `pki` it offers STARTTLS with that certificate.
    #[must_use]
    pub fn start(pki: Option<&Pki>) -> Self {
        Self::start_with_auth(pki, None)
    }

    /// Like [`SmtpReceiver::start`], requiring AUTH with `(user, password)` when given.
    #[must_use]
    pub fn start_with_auth(pki: Option<&Pki>, auth: Option<(&str, &str)>) -> Self {
        Self::start_with_args(pki, auth, None)
    }

    /// A receiver with STARTTLS that offers and requires only AUTH XOAUTH2, checking bearer
    /// tokens at `tokeninfo_url` (a [`FakeIdp`]'s `/tokeninfo?access_token=`).
    #[must_use]
    pub fn start_with_xoauth2(pki: &Pki, tokeninfo_url: &str) -> Self {
        Self::start_with_args(Some(pki), None, Some(tokeninfo_url))
    }

    /// A receiver with STARTTLS that takes mail only for `known_rcpt` (others: 550 5.1.1)
    /// and, when given, only from `allowed_sender` (others: 553 5.7.1), as Postfix does.
    #[must_use]
    pub fn start_with_policy(pki: &Pki, known_rcpt: &[&str], allowed_sender: Option<&str>) -> Self {
        let mut extra: Vec<std::ffi::OsString> = Vec::new();
        for r in known_rcpt {
            extra.extend(["--known-rcpt".into(), (*r).into()]);
        }
        if let Some(s) = allowed_sender {
            extra.extend(["--allowed-sender".into(), s.into()]);
        }
        Self::start_with_extra(Some(pki), None, None, extra)
    }

    fn start_with_args(
        pki: Option<&Pki>,
        auth: Option<(&str, &str)>,
        tokeninfo_url: Option<&str>,
    ) -> Self {
        Self::start_with_extra(pki, auth, tokeninfo_url, Vec::new())
    }

    fn start_with_extra(
        pki: Option<&Pki>,
        auth: Option<(&str, &str)>,
        tokeninfo_url: Option<&str>,
        extra: Vec<std::ffi::OsString>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailferry-smtp-")
            .tempdir()
            .expect("tempdir");
        let mut args: Vec<std::ffi::OsString> =
            vec![dir.path().into(), "--slow-seconds".into(), "3".into()];
        if let Some(pki) = pki {
            args.extend([
                "--tls-cert".into(),
                pki.chain_pem.clone().into(),
                "--tls-key".into(),
                pki.key_pem.clone().into(),
            ]);
        }
        if let Some((user, password)) = auth {
            args.extend([
                "--auth-user".into(),
                user.into(),
                "--auth-password".into(),
                password.into(),
            ]);
        }
        if let Some(url) = tokeninfo_url {
            args.extend(["--xoauth2-tokeninfo".into(), url.into()]);
        }
        args.extend(extra);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        let (child, port) = spawn_python("smtp_receiver.py", &args);
        Self { child, dir, port }
    }

    /// Everything accepted so far, in arrival order.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read receiver dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let raw = std::fs::read(&p).expect("read message");
                let env: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(p.with_extension("json")).expect("read envelope"),
                )
                .expect("envelope json");
                let strings = |v: &serde_json::Value| -> Vec<String> {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Received {
                    raw,
                    mail_from: env["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: strings(&env["rcpt_tos"]),
                    mail_options: strings(&env["mail_options"]),
                }
            })
            .collect()
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
