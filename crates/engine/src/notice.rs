//! Telling the user: when an account breaks (parked for a sign-in, or failing for
//! `notify-after` runs in a row) and when it recovers, one notice per change, into the
//! account's own destination (unless that is what broke) and to a webhook; and a ping after
//! every successful run (a dead man's switch).

use mailferry_config::{AccountConfig, Config, Secret, url_origin};
use mailferry_core::RawMessage;
use mailferry_store::Store;
use serde_json::json;
use tracing::{info, warn};

use crate::deliver::AnyDestination;
use crate::report::AccountReport;
use crate::schedule::AccountState;
use crate::tokens::TokenKeeper;

/// What the user hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Parked,
    Failing,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Failing => "failing",
        }
    }

    fn from_str(s: &str) -> Option<Self> {
        match s {
            "parked" => Some(Self::Parked),
            "failing" => Some(Self::Failing),
            _ => None,
        }
    }
}

/// After each scheduled run of `account`: notices on a change of condition, and the ping.
pub async fn after_run(
    config: &Config,
    account: &AccountConfig,
    store: &Store,
    tokens: &TokenKeeper,
    report: &AccountReport,
    state: AccountState,
    failures: u32,
) {
    let n = &config.notify;
    if report.error.is_none()
        && let Some(url) = &n.ping_url
    {
        ping(url, config).await;
    }
    let before = match store.notified(&account.name).await {
        Ok(v) => v.as_deref().and_then(Condition::from_str),
        Err(e) => {
            warn!(cause = %e, "cannot read what the user was told; no notice this time");
            return;
        }
    };
    let now = match (&report.error, state) {
        (_, AccountState::Parked) => Some(Condition::Parked),
        (Some(_), _) if failures >= n.after => Some(Condition::Failing),
        // Failing, but not for long enough yet: as before.
        (Some(_), _) => before,
        (None, _) => None,
    };
    if now == before {
        return;
    }
    let since = store
        .schedules()
        .await
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.account == account.name))
        .and_then(|r| r.last_success);
    let notice = Notice::new(account, report, now, since);
    info!(account = %account.name, event = notice.event, "telling the user");
    // Into the destination, unless it is what broke: a notice must not loop on it.
    let destination_broke = report.error.as_ref().is_some_and(|e| e.blames_destination);
    if n.in_destination && !destination_broke {
        deliver_notice(config, account, tokens, &notice).await;
    }
    if let Some(url) = &n.webhook {
        webhook(url, config, &notice).await;
    }
    if let Err(e) = store
        .set_notified(&account.name, now.map(Condition::as_str))
        .await
    {
        warn!(cause = %e, "cannot record the notice");
    }
}

/// One notice, in words and as JSON.
struct Notice {
    event: &'static str,
    account: String,
    subject: String,
    text: String,
    json: serde_json::Value,
}

impl Notice {
    fn new(
        account: &AccountConfig,
        report: &AccountReport,
        now: Option<Condition>,
        since: Option<i64>,
    ) -> Self {
        let name = &account.name;
        let since_text = since
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or_else(
                || "no successful run yet".to_owned(),
                |t| format!("last success {}", t.format("%Y-%m-%d %H:%M UTC")),
            );
        let error = report.error.as_ref();
        let words = error.map_or("", |e| e.message.as_str());
        let hint = error.and_then(|e| e.hint.clone()).unwrap_or_default();
        let (event, subject, what, command) = match now {
            Some(Condition::Parked)
                if matches!(account.auth, mailferry_config::SourceAuth::Password(_)) =>
            {
                (
                    "parked",
                    format!("mailferry: {name} cannot log in"),
                    "the account is parked: the server refuses its password, and mailferry does not try again until you fix it",
                    format!(
                        "fix the password file, then: mailferry run-now {name}   (it reads the new password and says how the run went)"
                    ),
                )
            }
            Some(Condition::Parked) => (
                "parked",
                format!("mailferry: {name} needs a new sign-in"),
                "the account is parked: its sign-in is no longer accepted, and mailferry does not try again until you sign in",
                format!(
                    "mailferry auth {name}   (as the service's user, e.g. sudo -u mailferry mailferry auth {name})"
                ),
            ),
            Some(Condition::Failing) => (
                "failing",
                format!("mailferry: {name} keeps failing"),
                "the account failed several runs in a row",
                format!("mailferry check {name}   then, once fixed: mailferry run-now {name}"),
            ),
            None => (
                "recovered",
                format!("mailferry: {name} works again"),
                "the account fetches and delivers again",
                String::new(),
            ),
        };
        let mut text = format!(
            "mailferry, account {name} ({}): {what}.\r\n\r\n{since_text}.\r\n",
            account.username
        );
        if !words.is_empty() {
            text.push_str(&format!("\r\nThe last error: {words}\r\n"));
        }
        if !hint.is_empty() {
            text.push_str(&format!("What to do: {hint}\r\n"));
        }
        if !command.is_empty() {
            text.push_str(&format!("\r\nRun: {command}\r\n"));
        }
        text.push_str("\r\n-- \r\nmailferry (you get one such message per change of state)\r\n");
        let json = json!({
            "account": name,
            "event": event,
            "title": subject,
            "message": text.replace("\r\n", "\n").trim_end(),
            "error": words,
            "hint": hint,
            "command": command,
            "last_success": since,
        });
        Self {
            event,
            account: name.clone(),
            subject,
            text,
            json,
        }
    }

    /// The notice as a message: plain text, from mailferry, auto-generated.
    fn message(&self, to: &str) -> RawMessage {
        let now = chrono::Utc::now();
        let id = format!(
            "<mailferry-notice.{}.{}.{}@mailferry.invalid>",
            self.account,
            now.timestamp(),
            fastrand::u32(..)
        );
        RawMessage::new(format!(
            "From: mailferry <mailferry@localhost>\r\nTo: {to}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: {id}\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
            self.subject,
            now.to_rfc2822(),
            self.text
        ))
    }
}

async fn deliver_notice(
    config: &Config,
    account: &AccountConfig,
    tokens: &TokenKeeper,
    notice: &Notice,
) {
    let Some(dest) = config.destination(&account.destination) else {
        return;
    };
    let to = dest.notice_address();
    let message = notice.message(&to);
    match AnyDestination::new(dest, account, &config.daemon, tokens).await {
        Ok(d) => {
            if let Err(e) = d.deliver(&message, "INBOX").await {
                warn!(cause = %e, "cannot deliver the notice");
            }
            d.close().await;
        }
        Err(e) => warn!(cause = %e, "cannot deliver the notice"),
    }
}

fn http(config: &Config) -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.daemon.io_timeout)
        .connect_timeout(config.daemon.connect_timeout)
        .user_agent(concat!("mailferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| warn!(cause = %e, "cannot set up HTTPS for notices"))
        .ok()
}

async fn webhook(url: &Secret, config: &Config, notice: &Notice) {
    let Some(client) = http(config) else { return };
    // The URL is a credential (a Slack or Discord webhook path, an ntfy topic): errors
    // name its host only.
    let at = url_origin(url.expose());
    match client
        .post(url.expose())
        .header("Title", &notice.subject)
        .header("Content-Type", "application/json")
        .body(notice.json.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => warn!(
            status = r.status().as_u16(),
            at, "the notify webhook refused the notice"
        ),
        Err(e) => warn!(cause = %e.without_url(), at, "cannot reach the notify webhook"),
    }
}

async fn ping(url: &Secret, config: &Config) {
    let Some(client) = http(config) else { return };
    match client.get(url.expose()).send().await {
        Ok(r) if !r.status().is_success() => warn!(
            status = r.status().as_u16(),
            at = url_origin(url.expose()),
            "the ping URL refused the ping"
        ),
        Ok(_) => {}
        Err(e) => warn!(
            cause = %e.without_url(),
            at = url_origin(url.expose()),
            "cannot reach the ping URL"
        ),
    }
}
