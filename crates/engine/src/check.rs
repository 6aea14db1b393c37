//! `mailferry check [NAME]`: walks an account's way in step by step (DNS, TCP, TLS and its
//! certificate, capabilities, login, sign-in health, folders) and stops at the first step
//! that fails, with the hint for it. Nothing is fetched or delivered.

use std::time::Duration;

use mailferry_config::{AccountConfig, Config, Protocol, SourceAuth, TlsMode};
use mailferry_core::Source;

use crate::build;
use crate::run::Stop;
use crate::tokens::{self, TokenKeeper};

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `dns`, `tcp`, `tls`, `login`, `capabilities`, `sign-in`, `folder INBOX`, ...
    pub step: String,
    /// Whether it worked.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<String>,
}

impl Finding {
    fn ok(step: &str, detail: String) -> Self {
        Self {
            step: step.to_owned(),
            ok: true,
            detail,
            hint: None,
        }
    }

    fn fail(step: &str, detail: String, hint: Option<String>) -> Self {
        Self {
            step: step.to_owned(),
            ok: false,
            detail,
            hint,
        }
    }
}

/// Checks `account` of `config`; the findings in order, ending at the first failure.
pub async fn account(
    config: &Config,
    account: &AccountConfig,
    tokens: &TokenKeeper,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let e = &account.endpoint;
    let limit = config.daemon.connect_timeout;
    let target = format!("{}:{}", e.host, e.port);

    match tokio::time::timeout(limit, tokio::net::lookup_host(target.clone())).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            out.push(Finding::ok(
                "dns",
                format!("{} -> {}", e.host, addrs.join(", ")),
            ));
        }
        Ok(Err(err)) => {
            out.push(Finding::fail(
                "dns",
                format!("cannot resolve {}: {err}", e.host),
                Some("check the host name (or the provider preset) and this machine's DNS".into()),
            ));
            return out;
        }
        Err(_) => {
            out.push(Finding::fail(
                "dns",
                format!("no answer within {limit:?}"),
                None,
            ));
            return out;
        }
    }

    match mailferry_tls::tcp(&e.host, e.port, limit).await {
        Ok(tcp) => {
            out.push(Finding::ok("tcp", format!("connected to {target}")));
            if e.tls == TlsMode::Implicit {
                let tls = mailferry_tls::client_config(e.ca_pem.as_deref());
                let handshake = match tls {
                    Ok(c) => mailferry_tls::handshake(c, &e.host, tcp, limit)
                        .await
                        .map(drop),
                    Err(err) => Err(err),
                };
                match handshake {
                    Ok(()) => out.push(Finding::ok(
                        "tls",
                        format!("handshake done; the certificate is valid for {}", e.host),
                    )),
                    Err(err) => {
                        out.push(Finding::fail(
                            "tls",
                            err.to_string(),
                            Some("the server's certificate is not trusted for this host name: check host, or set tls-ca-file for a private CA; if the port does not speak TLS at once, set tls = \"starttls\"".into()),
                        ));
                        return out;
                    }
                }
            }
        }
        Err(err) => {
            out.push(Finding::fail(
                "tcp",
                format!("cannot connect to {target}: {err}"),
                Some("check host and port, that the server is up, and that no firewall is in the way".into()),
            ));
            return out;
        }
    }

    if let SourceAuth::OAuth2(_) = &account.auth {
        match tokens
            .store()
            .token(&tokens::account_owner(&account.name))
            .await
        {
            Ok(Some(t)) => {
                let left = t.expires_at - mailferry_oauth::now();
                let who = t.subject.unwrap_or_else(|| "?".into());
                match t.parked {
                    Some(reason) => {
                        out.push(Finding::fail(
                            "sign-in",
                            format!("parked: {reason}"),
                            Some(format!(
                                "sign in again with `mailferry auth {}`",
                                account.name
                            )),
                        ));
                        return out;
                    }
                    None => out.push(Finding::ok(
                        "sign-in",
                        format!(
                            "signed in as {who}; access token {} ; scopes: {}",
                            if left > 0 {
                                format!("valid {} min more", left / 60)
                            } else {
                                "expired (refreshed at the next login)".into()
                            },
                            t.scopes.join(" ")
                        ),
                    )),
                }
            }
            Ok(None) => {
                out.push(Finding::fail(
                    "sign-in",
                    "not signed in yet".into(),
                    Some(format!(
                        "sign in once with `mailferry auth {}`",
                        account.name
                    )),
                ));
                return out;
            }
            Err(err) => {
                out.push(Finding::fail("sign-in", err.to_string(), None));
                return out;
            }
        }
    }

    let login = match account.protocol {
        Protocol::Imap => match build::connect_imap(account, &config.daemon, tokens).await {
            Ok(mut s) => {
                let caps = s.capabilities().await.unwrap_or_default();
                let notable: Vec<&String> = caps
                    .iter()
                    .filter(|c| {
                        c.starts_with("AUTH=")
                            || matches!(
                                c.as_str(),
                                "IDLE" | "UIDPLUS" | "MOVE" | "SPECIAL-USE" | "CONDSTORE"
                            )
                    })
                    .collect();
                out.push(Finding::ok(
                    "login",
                    format!("logged in as {}", account.username),
                ));
                out.push(Finding::ok(
                    "capabilities",
                    notable
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ));
                folders(account, s, &mut out).await;
                Ok(())
            }
            Err(stop) => Err(stop),
        },
        Protocol::Pop3 => match build::connect_pop3(account, &config.daemon, tokens).await {
            Ok(s) => {
                out.push(Finding::ok(
                    "login",
                    format!("logged in as {}", account.username),
                ));
                out.push(Finding::ok("capabilities", s.capabilities().join(" ")));
                folders(account, s, &mut out).await;
                Ok(())
            }
            Err(stop) => Err(stop),
        },
    };
    if let Err(stop) = login {
        let r = stop.report().naming(&account.name);
        let mut hint = r.hint;
        if let Some(p) = account.provider
            && p.name == "outlook"
            && r.class == mailferry_core::ErrorClass::Auth
        {
            hint = Some(format!(
                "{}; also check that {} access is on in Outlook.com (Settings > Mail > Forwarding and IMAP), and if Microsoft asks, sign in once on the web to verify the account",
                hint.unwrap_or_default(),
                if account.protocol == Protocol::Pop3 {
                    "POP"
                } else {
                    "IMAP"
                }
            ));
        }
        out.push(Finding::fail("login", r.message, hint));
    }
    if let SourceAuth::OAuth2(settings) = &account.auth {
        match tokens.oauth().measure_skew(&settings.token_url).await {
            Ok(skew) if skew.abs() <= 300 => out.push(Finding::ok(
                "clock",
                format!("within {} s of the sign-in server's", skew.abs()),
            )),
            Ok(skew) => out.push(Finding::fail(
                "clock",
                format!("this machine's clock is {skew} s off the sign-in server's"),
                Some("tokens are judged by time: enable NTP (`timedatectl set-ntp true`)".into()),
            )),
            Err(e) => out.push(Finding::fail("clock", e.to_string(), None)),
        }
    }
    out
}

/// Opens every configured folder read-only and counts its messages.
async fn folders<S: Source>(account: &AccountConfig, mut source: S, out: &mut Vec<Finding>) {
    for folder in &account.folders {
        let step = format!("folder {folder}");
        match tokio::time::timeout(Duration::from_secs(120), source.open(folder)).await {
            Ok(Ok(state)) => out.push(Finding::ok(
                &step,
                format!("{} messages", state.messages.len()),
            )),
            Ok(Err(e)) => {
                let r = Stop::source(&e).report();
                out.push(Finding::fail(&step, r.message, r.hint));
            }
            Err(_) => out.push(Finding::fail(&step, "no answer".into(), None)),
        }
    }
    let _ = source.close().await;
}
