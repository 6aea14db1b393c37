//! Real servers for mailferry's tests, private to one test and on 127.0.0.1 only, and
//! scriptable fakes for what real servers cannot be made to do. One module each:
//!
//! - [`Pki`]: a CA generated per run and a server certificate it signs (rustls refuses a
//!   self-signed certificate used directly as a server certificate);
//! - [`Dovecot`]: a private Dovecot (IMAP and POP3, password and oauth2 passdbs) with its own
//!   config, state and Maildir in a temporary directory; never touches `/etc/dovecot`;
//! - [`Cyrus`]: a private Cyrus imapd (IMAP and POP3), run from its unpacked packages;
//! - [`SmtpReceiver`]: aiosmtpd running `py/smtp_receiver.py`, storing what it accepts;
//! - [`Postfix`]: a private Postfix delivering to a virtual Maildir;
//! - [`LenientSmtp`]: a receiver that takes a bare LF or CR as a line end (smuggling tests);
//! - [`FakeIdp`]: Microsoft's and Google's OAuth2 endpoints, with their documented shapes;
//! - [`FakeGmail`]: the Gmail API (import, insert, labels, messages.list/get), with quotas;
//! - [`FakeImap`], [`FakePop3`]: scriptable servers that misbehave on request (NIL bodies,
//!   unsolicited FETCHes, lying sizes, garbled replies, IDLE that ends in BYE or silence,
//!   `-ERR` to UIDL);
//! - [`HttpSink`]: records webhook calls; [`Trickle`]: a slow link between two ports;
//! - [`fixtures`]: message bytes for the tests;
//! - [`Machine`]: a throwaway machine with a real systemd, to install and start the unit in.
//!
//! Helpers panic with a message on failure: they only run inside tests.

#![warn(missing_docs)]
#![allow(clippy::missing_panics_doc)]

mod cyrus;
mod dovecot;
mod fake_gmail;
mod fake_idp;
mod fake_imap;
mod fake_pop3;
pub mod fixtures;
mod http_sink;
mod lenient_smtp;
mod machine;
mod peak;
mod pki;
mod postfix;
mod smtp_receiver;
mod trickle;

pub use cyrus::{CYRUS_USER, Cyrus};
pub use dovecot::Dovecot;
pub use fake_gmail::{FakeGmail, GmailMessage};
pub use fake_idp::{FakeIdp, http_get_raw, http_request, http_request_with_body};
pub use fake_imap::{
    Command as ImapCommand, FakeImap, ImapScript, Log as ImapLog, Refusal as ImapRefusal,
};
pub use fake_pop3::{FakePop3, Pop3Script};
pub use http_sink::{HttpSink, Request};
pub use lenient_smtp::LenientSmtp;
pub use machine::{Machine, Ran};
pub use peak::run_measuring_peak;
pub use pki::Pki;
pub use postfix::{POSTFIX_DOMAIN, Postfix, holds_unchanged};
pub use smtp_receiver::{Received, SmtpReceiver};
pub use trickle::Trickle;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Makes names unique within one test process (Dovecot instance names, ...).
pub(crate) static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// The user every test mailbox belongs to.
pub const USER: &str = "alice@test.example";
/// That user's password.
pub const PASSWORD: &str = "correct horse battery staple";

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

/// How a fake server sends a reply: in one write, or (`Some((size, pause))`) in pieces of
/// `size` bytes, `pause` apart, as a server sends a large message: a stream of small
/// writes (Dovecot 2.3 sends a body as TLS records of 4 KB, one write each: strace of
/// `scripts/bench`), not one burst.
pub(crate) fn write_in_pieces(
    out: &mut impl std::io::Write,
    reply: &[u8],
    pieces: Option<(usize, std::time::Duration)>,
) -> std::io::Result<()> {
    let Some((size, pause)) = pieces else {
        return out.write_all(reply);
    };
    for piece in reply.chunks(size.max(1)) {
        out.write_all(piece)?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// This thread's voluntary context switches so far: the times it waited for something (a
/// socket, another thread). Tests that bound how often a step sleeps read it before and
/// after, on a current-thread runtime.
///
/// # Panics
/// Where `/proc/thread-self/status` does not say (not Linux).
#[must_use]
pub fn waits_of_this_thread() -> u64 {
    this_thread("status", "voluntary_ctxt_switches:")
}

/// This thread's write system calls so far (`write`, `pwrite`, `writev`, ...): tests that
/// bound how many a step makes read it before and after, on a current-thread runtime.
///
/// # Panics
/// Where `/proc/thread-self/io` does not say (not Linux, or no task I/O accounting).
#[must_use]
pub fn writes_of_this_thread() -> u64 {
    this_thread("io", "syscw:")
}

/// This thread's read system calls so far (`read`, `pread`, ...): a connection whose cache
/// another connection's write made stale reads its pages again.
///
/// # Panics
/// Where `/proc/thread-self/io` does not say (not Linux, or no task I/O accounting).
#[must_use]
pub fn reads_of_this_thread() -> u64 {
    this_thread("io", "syscr:")
}

/// The number after `field` in `/proc/thread-self/FILE`.
fn this_thread(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/thread-self/{file}")).expect(file);
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .expect(field)
}
