//! The SMTP receiver (aiosmtpd) that stores what it accepts.

use std::path::PathBuf;
use std::process::Child;

use tempfile::TempDir;

use crate::{Pki, spawn_python};

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

    /// Starts a receiver speaking TLS from the first byte (port 465, RFC 8314) with `pki`'s
    /// certificate, wanting `auth` (user, password) if given.
    #[must_use]
    pub fn start_implicit_tls(pki: &Pki, auth: Option<(&str, &str)>) -> Self {
        Self::start_with_extra(Some(pki), auth, None, vec!["--implicit-tls".into()])
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

    /// The files in the receiver's directory with this extension.
    fn files(&self, extension: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .expect("read receiver dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect()
    }

    /// How many messages were accepted so far (without reading them).
    #[must_use]
    pub fn count(&self) -> usize {
        self.files("eml").len()
    }

    /// Forgets every message accepted so far (a benchmark's passes would otherwise fill
    /// the disk).
    pub fn clear(&self) {
        for p in self.files("eml").into_iter().chain(self.files("json")) {
            std::fs::remove_file(&p).expect("remove a received message");
        }
    }

    /// Everything accepted so far, in arrival order.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        let mut names = self.files("eml");
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
