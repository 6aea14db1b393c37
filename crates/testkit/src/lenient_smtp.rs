//! The lenient SMTP receiver SMTP smuggling abuses, for tests.

use std::path::PathBuf;
use std::process::Child;

use tempfile::TempDir;

use crate::spawn_python;

/// A lenient SMTP receiver (`py/lenient_smtp.py`) on 127.0.0.1, plain TCP: it ends DATA at
/// a "." line whatever ends the lines (CRLF, bare LF, bare CR), as the receivers SMTP
/// smuggling abuses do, and logs every command line of every session.
pub struct LenientSmtp {
    child: Child,
    dir: TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for LenientSmtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LenientSmtp")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl LenientSmtp {
    /// Starts the receiver.
    #[must_use]
    pub fn start() -> Self {
        Self::spawn(&[])
    }

    /// Starts the receiver offering STARTTLS with `pki`'s certificate, and answering it
    /// with a plain-text reply injected after its "220" (see `py/lenient_smtp.py`).
    #[must_use]
    pub fn start_injecting_after_starttls(pki: &crate::Pki) -> Self {
        Self::spawn(&[
            "--tls".as_ref(),
            pki.chain_pem.as_os_str(),
            pki.key_pem.as_os_str(),
        ])
    }

    /// Starts the receiver offering PIPELINING, refusing RCPT for any address that holds
    /// "refused" while still taking DATA (see `py/lenient_smtp.py`).
    #[must_use]
    pub fn start_pipelining() -> Self {
        Self::spawn(&["--pipelining".as_ref()])
    }

    fn spawn(options: &[&std::ffi::OsStr]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailferry-lenient-")
            .tempdir()
            .expect("tempdir");
        let mut args = vec![dir.path().as_os_str()];
        args.extend_from_slice(options);
        let (child, port) = spawn_python("lenient_smtp.py", &args);
        Self { child, dir, port }
    }

    /// With PIPELINING offered: how many whole command lines each read from the client
    /// brought, in order.
    #[must_use]
    pub fn lines_per_read(&self) -> Vec<usize> {
        std::fs::read_to_string(self.dir.path().join("reads.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Every command line received, in order (message data excluded).
    #[must_use]
    pub fn commands(&self) -> Vec<String> {
        std::fs::read(self.dir.path().join("commands.log"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The messages accepted, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read receiver dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| std::fs::read(p).expect("read message"))
            .collect()
    }
}

impl Drop for LenientSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
