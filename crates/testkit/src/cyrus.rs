//! A private Cyrus imapd 3.6 (IMAP and POP3) on loopback: a second real source next to
//! Dovecot, with its own habits (folders under `INBOX.`, binary literals for messages with
//! NUL bytes, stored LF line ends served as they are over POP3).
//!
//! Debian's `cyrus-imapd`/`cyrus-pop3d` conflict with Dovecot's packages, so the server
//! binaries come unpacked from those packages (`scripts/test` puts them under
//! `$MAILFERRY_TEST_CYRUS`); `master`, `reconstruct`, `mbpath` and `saslpasswd2` come from
//! the non-conflicting `cyrus-common` and `sasl2-bin`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{PASSWORD, Pki, random_port, wait_listening};

/// The user of the Cyrus mailbox (Cyrus without virtual domains: no `@domain`).
pub const CYRUS_USER: &str = "alice";
/// Cyrus' administrator, who creates mailboxes.
const ADMIN: &str = "cyrus";
const ADMIN_PASSWORD: &str = "admin secret";
/// Where `cyrus-common` keeps its tools.
const TOOLS: &str = "/usr/lib/cyrus/bin";

/// A running private Cyrus; stopped when dropped.
pub struct Cyrus {
    dir: TempDir,
    /// The certificates Cyrus presents.
    pub pki: Pki,
    /// IMAP with implicit TLS.
    pub imaps_port: u16,
    /// IMAP in the clear (and STARTTLS).
    pub imap_port: u16,
    /// POP3 with implicit TLS.
    pub pop3s_port: u16,
    /// POP3 in the clear (and STLS).
    pub pop3_port: u16,
    master: Option<Child>,
}

impl std::fmt::Debug for Cyrus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cyrus")
            .field("dir", &self.dir.path())
            .field("imaps_port", &self.imaps_port)
            .finish_non_exhaustive()
    }
}

/// The directory holding the unpacked `cyrus-imapd` and `cyrus-pop3d` packages.
fn server_bin() -> PathBuf {
    let root = std::env::var_os("MAILFERRY_TEST_CYRUS")
        .map_or_else(|| PathBuf::from("/var/tmp/mailferry-cyrus"), PathBuf::from);
    let bin = root.join("usr/lib/cyrus/bin");
    assert!(
        bin.join("imapd").exists() && Path::new(TOOLS).join("master").exists(),
        "Cyrus is not installed where the tests look ({}, {TOOLS}): run scripts/test, which installs cyrus-common and unpacks cyrus-imapd/cyrus-pop3d there",
        bin.display()
    );
    bin
}

impl Cyrus {
    /// Starts a private instance with the user [`CYRUS_USER`] (password
    /// [`crate::PASSWORD`]) and an empty INBOX; panics if it does not come up.
    #[must_use]
    pub fn start() -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("mailferry-cyrus-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        let pki = Pki::generate(&d);
        for sub in ["conf", "part", "run", "lock", "sieve"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let mut c = Self {
            dir,
            pki,
            imaps_port: 0,
            imap_port: 0,
            pop3s_port: 0,
            pop3_port: 0,
            master: None,
        };
        let conf = d.join("imapd.conf");
        std::fs::write(
            &conf,
            format!(
                "configdirectory: {d}/conf\npartition-default: {d}/part\nproc_path: {d}/run/proc\n\
                 mboxname_lockpath: {d}/lock\nlmtpsocket: {d}/run/lmtp\nidlesocket: {d}/run/idle\n\
                 notifysocket: {d}/run/notify\nsievedir: {d}/sieve\nservername: localhost\n\
                 admins: {ADMIN}\nallowplaintext: yes\nsasl_pwcheck_method: auxprop\n\
                 sasl_auxprop_plugin: sasldb\nsasl_sasldb_path: {d}/sasldb2\n\
                 sasl_mech_list: PLAIN LOGIN\ntls_server_cert: {chain}\ntls_server_key: {key}\n\
                 altnamespace: no\nunixhierarchysep: no\npopminpoll: 0\n",
                d = d.display(),
                chain = c.pki.chain_pem.display(),
                key = c.pki.key_pem.display(),
            ),
        )
        .expect("imapd.conf");
        for (user, password) in [(CYRUS_USER, PASSWORD), (ADMIN, ADMIN_PASSWORD)] {
            let mut child = Command::new("saslpasswd2")
                .args(["-p", "-c", "-f"])
                .arg(d.join("sasldb2"))
                .args(["-u", "localhost", user])
                .stdin(Stdio::piped())
                .spawn()
                .expect("saslpasswd2 (sasl2-bin; scripts/test installs it)");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(password.as_bytes())
                .expect("password");
            assert!(child.wait().expect("saslpasswd2").success());
        }
        run(Command::new("chown").arg("-R").arg("cyrus:mail").arg(&d));
        run(Command::new("chmod").arg("755").arg(&d));
        for _ in 0..5 {
            c.imaps_port = random_port();
            c.imap_port = random_port();
            c.pop3s_port = random_port();
            c.pop3_port = random_port();
            let service = |name: &str, cmd: &str, port: u16| {
                format!(
                    "  {name} cmd=\"{} -C {}\" listen=\"127.0.0.1:{port}\" prefork=0\n",
                    bin.join(cmd).display(),
                    conf.display()
                )
            };
            std::fs::write(
                d.join("cyrus.conf"),
                format!(
                    "START {{\n  recover cmd=\"ctl_cyrusdb -r -C {conf}\"\n}}\nSERVICES {{\n{}{}{}{}}}\nEVENTS {{\n}}\n",
                    service("imap", "imapd", c.imap_port),
                    service("imaps", "imapd -s", c.imaps_port),
                    service("pop3", "pop3d", c.pop3_port),
                    service("pop3s", "pop3d -s", c.pop3s_port),
                    conf = conf.display(),
                ),
            )
            .expect("cyrus.conf");
            let master = Command::new(Path::new(TOOLS).join("master"))
                .arg("-C")
                .arg(&conf)
                .arg("-M")
                .arg(d.join("cyrus.conf"))
                .arg("-p")
                .arg(d.join("master.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cyrus master");
            c.master = Some(master);
            let ports = [c.imaps_port, c.imap_port, c.pop3s_port, c.pop3_port];
            if ports.iter().all(|p| wait_listening(*p)) {
                c.admin(&[&format!("CREATE user.{CYRUS_USER}")]);
                return c;
            }
            c.stop();
        }
        panic!("Cyrus did not start (it logs to syslog only)");
    }

    fn stop(&mut self) {
        if let Some(mut m) = self.master.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        // The services it started exit with their connections; the pid file goes too.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.dir.path().join("imapd.conf"))
            .status();
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("imapd.conf")
    }

    /// Runs IMAP commands as the administrator; panics on a refusal.
    fn admin(&self, commands: &[&str]) {
        let mut s = ImapLine::login(self.imap_port, ADMIN, ADMIN_PASSWORD);
        for c in commands {
            s.ok(c);
        }
    }

    /// Creates the user's folder `name` (`INBOX.name` in Cyrus' default namespace).
    pub fn create_folder(&self, name: &str) {
        self.admin(&[&format!("CREATE user.{CYRUS_USER}.{name}")]);
    }

    /// Appends `bytes` to the user's `folder` over IMAP, as a client would.
    pub fn append(&self, folder: &str, bytes: &[u8]) {
        let mut s = ImapLine::login(self.imap_port, CYRUS_USER, PASSWORD);
        s.append(folder, bytes);
    }

    /// Puts messages into `folder` the way a restore does (files in the mailbox directory,
    /// then `reconstruct`): Cyrus refuses NUL bytes and bare LFs at APPEND, yet mailboxes
    /// that came from elsewhere hold them. `folder` is `INBOX` or a name under it.
    pub fn spool(&self, folder: &str, messages: &[Vec<u8>]) {
        let mailbox = if folder == "INBOX" {
            format!("user.{CYRUS_USER}")
        } else {
            format!("user.{CYRUS_USER}.{}", folder.trim_start_matches("INBOX."))
        };
        let out = Command::new(Path::new(TOOLS).join("mbpath"))
            .arg("-C")
            .arg(self.conf())
            .arg(&mailbox)
            .output()
            .expect("mbpath");
        assert!(out.status.success(), "mbpath {mailbox}: {out:?}");
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let mut next = std::fs::read_dir(&path)
            .expect("mailbox dir")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix('.')?.parse::<u32>().ok()
            })
            .max()
            .unwrap_or(0);
        // Above every UID the index already gave out (a restore would be).
        next = next.max(self.uid_next(folder).saturating_sub(1));
        for m in messages {
            next += 1;
            std::fs::write(path.join(format!("{next}.")), m).expect("spool file");
        }
        run(Command::new("chown").arg("-R").arg("cyrus:mail").arg(&path));
        run(Command::new("runuser")
            .args(["-u", "cyrus", "--"])
            .arg(Path::new(TOOLS).join("reconstruct"))
            .arg("-C")
            .arg(self.conf())
            .arg(&mailbox));
    }

    /// `STATUS folder (UIDNEXT)` as the user.
    fn uid_next(&self, folder: &str) -> u32 {
        self.status(folder, "UIDNEXT")
    }

    /// The number of messages in `folder`, as the user sees it.
    #[must_use]
    pub fn count(&self, folder: &str) -> u32 {
        self.status(folder, "MESSAGES")
    }

    fn status(&self, folder: &str, item: &str) -> u32 {
        let mut s = ImapLine::login(self.imap_port, CYRUS_USER, PASSWORD);
        let lines = s.ok(&format!("STATUS {folder} ({item})"));
        lines
            .iter()
            .find_map(|l| {
                let at = l.find(item)? + item.len();
                l[at..]
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {item} in {lines:?}"))
    }

    /// The flags of every message in `folder`, in UID order.
    #[must_use]
    pub fn flags(&self, folder: &str) -> Vec<String> {
        let mut s = ImapLine::login(self.imap_port, CYRUS_USER, PASSWORD);
        s.ok(&format!("EXAMINE {folder}"));
        s.ok("UID FETCH 1:* (FLAGS)")
            .into_iter()
            .filter(|l| l.starts_with("* "))
            .collect()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A line-at-a-time IMAP client for setting up tests (plain TCP on loopback).
struct ImapLine {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

impl ImapLine {
    fn login(port: u16, user: &str, password: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Cyrus");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut s = Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            tag: 0,
        };
        let mut greeting = String::new();
        s.reader.read_line(&mut greeting).expect("greeting");
        s.ok(&format!("LOGIN {user} \"{password}\""));
        s
    }

    /// Sends `command`, returns the untagged lines; panics unless the reply is OK.
    fn ok(&mut self, command: &str) -> Vec<String> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("write");
        self.finish(&tag, command)
    }

    fn finish(&mut self, tag: &str, what: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            self.reader.read_until(b'\n', &mut raw).expect("read");
            assert!(!raw.is_empty(), "Cyrus closed the connection at {what}");
            let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            // A literal in a reply: read its bytes and the rest of the line.
            if let Some(n) = line
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut skip = vec![0; n];
                self.reader.read_exact(&mut skip).expect("literal");
            }
            if let Some(rest) = line.strip_prefix(tag) {
                assert!(rest.trim_start().starts_with("OK"), "{what}: {line}");
                return lines;
            }
            lines.push(line);
        }
    }

    fn append(&mut self, folder: &str, bytes: &[u8]) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.writer
            .write_all(format!("{tag} APPEND {folder} {{{}+}}\r\n", bytes.len()).as_bytes())
            .expect("write");
        self.writer.write_all(bytes).expect("write");
        self.writer.write_all(b"\r\n").expect("write");
        self.finish(&tag, "APPEND");
    }
}
