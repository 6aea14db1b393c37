//! End-to-end tests: the `mailferry` binary against a private Dovecot and a real SMTP
//! receiver (aiosmtpd), all on 127.0.0.1. `scripts/test` installs both.

#[macro_use]
mod util;

mod blame;
mod check;
mod config_errors;
mod container;
mod crash;
mod cyrus;
mod gmail;
mod gmail_quota;
mod imap_oauth2;
mod imap_to_smtp;
mod misbehaving;
mod oauth;
pub(crate) mod odd_mail;
mod page;
mod policy;
mod pop3;
mod postfix;
mod providers;
mod push;
mod service;
mod systemd;
