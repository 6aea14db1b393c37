//! `mailferry check [NAME]`: walks an account's way in step by step (DNS, TCP, TLS and its
//! certificate, capabilities, login, sign-in health, folders) and stops at the first step
//! that fails, with the hint for it. Nothing is fetched or delivered.

use std::time::Duration;

use mailferry_config::{AccountConfig, Config, DestinationConfig, Endpoint, SourceAuth, TlsMode};
use mailferry_core::{Source, SourceAction};

use crate::deliver::AnyDestination;
use crate::report::ErrorReport;
pub use crate::report::Finding;
use crate::report::Stop;
use crate::source::AnySource;
use crate::tokens::{self, TokenKeeper};

/// Checks `account` of `config`; the findings in order, ending at the first failure.
pub async fn account(
    config: &Config,
    account: &AccountConfig,
    tokens: &TokenKeeper,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !reach(&account.endpoint, config.daemon.connect_timeout, &mut out).await {
        return out;
    }

    if let SourceAuth::OAuth2(_) = &account.auth
        && !account_sign_in(account, tokens, &mut out).await
    {
        return out;
    }
    let login = match AnySource::open(account, &config.daemon, tokens).await {
        Ok(mut s) => {
            let notable = s.notable_capabilities().await;
            starttls(&account.endpoint, &mut out);
            out.push(Finding::ok(
                "login",
                format!("logged in as {}", account.username),
            ));
            out.push(Finding::ok("capabilities", notable.join(" ")));
            folders(account, s, &mut out).await;
            Ok(())
        }
        Err(stop) => Err(stop),
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
                crate::source::protocol_name(account.protocol)
            ));
        }
        out.push(Finding::fail("login", r.message, hint));
    }
    if let SourceAuth::OAuth2(settings) = &account.auth {
        match tokens
            .oauth()
            .measure_skew(&settings.client.token_url)
            .await
        {
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

/// The stored sign-in of an OAuth2 account: who, until when, which scopes; `false` when
/// there is none to log in with (not signed in, parked, unreadable).
async fn account_sign_in(
    account: &AccountConfig,
    tokens: &TokenKeeper,
    out: &mut Vec<Finding>,
) -> bool {
    match tokens
        .store()
        .token(&tokens::account_owner(&account.name))
        .await
    {
        Ok(Some(t)) => {
            let left = t.expires_at - mailferry_core::unix_now();
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
                    return false;
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
            return false;
        }
        Err(err) => {
            out.push(Finding::fail("sign-in", err.to_string(), None));
            return false;
        }
    }
    true
}

/// DNS, TCP and (for implicit TLS) the handshake to `e`; `false` after a failure.
async fn reach(e: &Endpoint, limit: Duration, out: &mut Vec<Finding>) -> bool {
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
            return false;
        }
        Err(_) => {
            out.push(Finding::fail(
                "dns",
                format!("no answer within {limit:?}"),
                None,
            ));
            return false;
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
                        return false;
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
            return false;
        }
    }

    true
}

/// The `tls` line of an endpoint whose TLS came after the greeting (STARTTLS), once the
/// session that needed it is up; a plain endpoint gets a warning line.
fn starttls(e: &Endpoint, out: &mut Vec<Finding>) {
    match e.tls {
        TlsMode::StartTls => out.push(Finding::ok(
            "tls",
            format!("STARTTLS done; the certificate is valid for {}", e.host),
        )),
        TlsMode::None => out.push(Finding::ok(
            "tls",
            "none: tls = \"none\", passwords and mail cross the network readable".into(),
        )),
        TlsMode::Implicit => {}
    }
}

/// Opens every configured folder read-only and counts its messages; checks that the
/// after-delivery policy can be carried out (a `move:` target exists).
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
    if let Some(action) = crate::run::settle_action(account) {
        let step = "after-delivery";
        match tokio::time::timeout(Duration::from_secs(120), source.check_settle(&action)).await {
            Ok(Ok(())) => out.push(Finding::ok(
                step,
                match &action {
                    SourceAction::MarkSeen => "mark-seen: possible".to_owned(),
                    SourceAction::Move(to) => format!("move:{to}: the folder exists"),
                    SourceAction::Delete => "delete: possible".to_owned(),
                },
            )),
            Ok(Err(e)) => {
                let r = Stop::source(&e).report();
                out.push(Finding::fail(step, r.message, r.hint));
            }
            Err(_) => out.push(Finding::fail(step, "no answer".into(), None)),
        }
    }
    let _ = source.close().await;
}

/// Checks the way out: `dest`, as the first account delivering there uses it. SMTP: DNS,
/// TCP, TLS, login, and the envelope (`MAIL FROM`/`RCPT TO`, then `RSET`: nothing is
/// sent). Gmail API: the sign-in and its scopes, `getProfile`, the labels.
pub async fn destination(
    config: &Config,
    dest: &DestinationConfig,
    tokens: &TokenKeeper,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(account) = config.accounts.iter().find(|a| a.destination == dest.name) else {
        out.push(Finding::ok("use", "no account delivers here".into()));
        return out;
    };
    let owner = tokens::destination_owner(&dest.name);
    if let Some(endpoint) = dest.endpoint()
        && !reach(endpoint, config.daemon.connect_timeout, &mut out).await
    {
        return out;
    }
    let needed = dest.scopes_needed(!account.labels.is_empty());
    if dest.oauth().is_some() && !sign_in(tokens, &owner, &dest.name, &needed, &mut out).await {
        return out;
    }
    let delivery = match AnyDestination::new(dest, account, &config.daemon, tokens).await {
        Ok(d) => d,
        Err(e) => {
            let r = ErrorReport::from_error(&e).naming(&dest.name);
            out.push(Finding::fail("setup", r.message, r.hint));
            return out;
        }
    };
    match delivery.probe(&mut out).await {
        Ok(()) => {}
        Err(e) => {
            let r = ErrorReport::from_error(&e).naming(&dest.name);
            out.push(Finding::fail("probe", r.message, r.hint));
        }
    }
    delivery.close().await;
    out
}

/// The stored sign-in of `owner`, and whether it grants `needed` (scope, what for).
async fn sign_in(
    tokens: &TokenKeeper,
    owner: &str,
    name: &str,
    needed: &[(&str, &str)],
    out: &mut Vec<Finding>,
) -> bool {
    match tokens.store().token(owner).await {
        Ok(Some(t)) => {
            if let Some(reason) = t.parked {
                out.push(Finding::fail(
                    "sign-in",
                    format!("parked: {reason}"),
                    Some(format!("sign in again with `mailferry auth {name}`")),
                ));
                return false;
            }
            let who = t.subject.clone().unwrap_or_else(|| "?".into());
            out.push(Finding::ok(
                "sign-in",
                format!("signed in as {who}; scopes: {}", t.scopes.join(" ")),
            ));
            let broad = |s: &str| {
                matches!(
                    s,
                    "https://mail.google.com/" | "https://www.googleapis.com/auth/gmail.modify"
                )
            };
            let missing: Vec<String> = needed
                .iter()
                .filter(|(scope, _)| !t.scopes.iter().any(|g| g == scope || broad(g)))
                .map(|(scope, why)| format!("{scope} ({why})"))
                .collect();
            if missing.is_empty() {
                true
            } else {
                out.push(Finding::fail(
                    "scopes",
                    format!("the sign-in lacks {}", missing.join(", ")),
                    Some(format!(
                        "add the scope to the app (Google: OAuth consent screen > Data access), then `mailferry auth {name}` and accept every scope"
                    )),
                ));
                false
            }
        }
        Ok(None) => {
            out.push(Finding::fail(
                "sign-in",
                "not signed in yet".into(),
                Some(format!("sign in once with `mailferry auth {name}`")),
            ));
            false
        }
        Err(e) => {
            out.push(Finding::fail("sign-in", e.to_string(), None));
            false
        }
    }
}
