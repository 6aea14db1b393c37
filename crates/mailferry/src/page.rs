//! The status page at `/` on the metrics listener: what `status` says, for a browser, with
//! a 30-day chart per account. Read-only (no form, no button, no script), drawn on the
//! server as HTML and inline SVG from maud templates, which escape every interpolated
//! text: account names, addresses, Message-IDs and servers' error texts come out as text.
//! Nothing is fetched from elsewhere; the page works offline and in a text browser (each
//! chart has its numbers in a table beside it).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::LazyLock;

use mailferry_config::Config;
use mailferry_engine::schedule::AccountState;
use mailferry_engine::tokens;
use mailferry_store::{Day, Store};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::status::{AccountStatus, ago, relative};

/// Days in the charts.
const DAYS: i64 = 30;

/// Refused messages listed per account, the most recent; `status` lists them all.
const REFUSALS_SHOWN: usize = 20;

/// The page's one style sheet; the Content-Security-Policy allows exactly it (by hash).
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;color:#1b1f24}\
h1{font-size:1.6rem;margin:0}h2{font-size:1.2rem;margin:1.6rem 0 .4rem}h3{font-size:1rem;margin:1rem 0 .3rem}\
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #d8dee4;vertical-align:top}\
td.n,th.n{text-align:right}code{background:#f0f2f4;padding:0 .25rem;border-radius:3px}\
.state{font-weight:600;white-space:nowrap}.ok{color:#116329}.bad{color:#b3261e}.wait{color:#8a5300}.off{color:#57606a}\
.alert{border:1px solid #b3261e;background:#fff4f2;padding:.5rem .8rem;border-radius:4px}\
section.account{border-top:2px solid #d8dee4;margin-top:1.2rem}figure{margin:.4rem 0}figcaption{font-size:.85rem;color:#57606a}\
details{font-size:.85rem}.meta{color:#57606a}";

/// The policy sent with the page: nothing but its own style.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

/// Where the page's facts come from.
pub struct Sources<'a> {
    pub config: &'a Config,
    /// The configuration file the service read.
    pub config_path: &'a Path,
    pub store: &'a Store,
}

/// The page.
///
/// # Errors
/// When the state database cannot be read.
pub async fn render(src: &Sources<'_>) -> anyhow::Result<String> {
    let now = mailferry_core::unix_now();
    let today = mailferry_store::local_day(now);
    let accounts = crate::status::collect(src.config, src.store).await?;
    let history = src.store.history(today - DAYS + 1).await?;
    let reload = src
        .store
        .config_load()
        .await?
        .and_then(|l| l.error.map(|e| (l.at, e)));
    let destinations = destinations(src, now).await?;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { "mailferry: " (summary(&accounts)) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "mailferry" }
                    p.meta {
                        "version " (env!("CARGO_PKG_VERSION")) " · configuration "
                        code { (src.config_path.display()) }
                        " · " (summary(&accounts)) " · as of " (local_time(now))
                    }
                    @if let Some((at, e)) = &reload {
                        p.alert {
                            "The last reload failed (" (ago(*at, now)) "): the service still runs the configuration it read before. "
                            (e)
                        }
                    }
                }
                @if accounts.is_empty() {
                    section {
                        h2 { "No accounts yet" }
                        p {
                            "Add an " code { "[[account]]" } " to " code { (src.config_path.display()) }
                            " (" code { "mailferry init" } " writes a commented example), sign in an OAuth2 account with "
                            code { "mailferry auth NAME" } ", then " code { "systemctl reload mailferry" } "."
                        }
                    }
                } @else {
                    (overview(&accounts, &history, today, now))
                    @for a in &accounts {
                        (account(a, history.get(&a.account).map_or(&[][..], Vec::as_slice), today, now))
                    }
                }
                @if !destinations.is_empty() {
                    h2 { "Destinations and sign-ins" }
                    table {
                        thead { tr { th { "Destination" } th { "Kind" } th { "Sign-in" } th { "Scopes" } } }
                        tbody {
                            @for d in &destinations {
                                tr { td { (d.name) } td { (d.kind) } td { (d.sign_in) } td { (d.scopes) } }
                            }
                        }
                    }
                }
                footer.meta {
                    p { "Read-only; the same facts as " code { "mailferry status" } ". Never shows secrets, tokens or message content." }
                }
            }
        }
    };
    Ok(page.into_string())
}

/// "3 accounts: 2 ok, 1 needs you".
fn summary(accounts: &[AccountStatus]) -> String {
    let needs = accounts.iter().filter(|a| needs_you(a)).count();
    let mut s = format!(
        "{} account{}",
        accounts.len(),
        if accounts.len() == 1 { "" } else { "s" }
    );
    if needs > 0 {
        let _ = write!(s, ", {needs} need{} you", if needs == 1 { "s" } else { "" });
    }
    s
}

fn needs_you(a: &AccountStatus) -> bool {
    matches!(
        AccountState::from_stored(&a.state),
        Some(AccountState::Parked | AccountState::Failing)
    )
}

/// The state in words, and its colour class.
fn state_words(a: &AccountStatus, now: i64) -> (String, &'static str) {
    match AccountState::from_stored(&a.state) {
        Some(AccountState::Ok) => ("ok".into(), "ok"),
        Some(AccountState::BackingOff) => {
            let throttled = a
                .last_error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains("throttl"));
            let since = a
                .last_success
                .map_or_else(|| "its first run".to_owned(), |t| ago(t, now));
            let what = if throttled { "throttled" } else { "failing" };
            (
                format!(
                    "{what} since {since} ({} runs in a row)",
                    a.failures_in_a_row
                ),
                "wait",
            )
        }
        Some(AccountState::Parked) => (a.state.clone(), "bad"),
        Some(AccountState::Failing) => (a.state.clone(), "bad"),
        None if a.state == "disabled" => ("disabled".into(), "off"),
        None => (a.state.clone(), "off"),
    }
}

fn when_next(a: &AccountStatus, now: i64) -> String {
    if let Some(p) = a.push.iter().find(|p| p.state == "connected") {
        return match p.connected_since {
            Some(t) => format!("pushed, connected since {}", local_time(t)),
            None => "pushed, connected".into(),
        };
    }
    match a.next_run {
        Some(t) if t <= now => "due now".into(),
        Some(t) => relative(t, now),
        None => "—".into(),
    }
}

fn delivered_on(days: &[Day], today: i64) -> u64 {
    days.iter()
        .find(|d| d.day == today)
        .map_or(0, |d| d.delivered)
}

fn overview(
    accounts: &[AccountStatus],
    history: &HashMap<String, Vec<Day>>,
    today: i64,
    now: i64,
) -> Markup {
    html! {
        h2 { "Accounts" }
        table {
            thead {
                tr {
                    th { "Account" } th { "State" } th { "Last success" } th { "Next" }
                    th.n { "Today" } th.n { "Delivered" } th.n { "Deferred" } th.n { "Refused" }
                }
            }
            tbody {
                @for a in accounts {
                    @let (words, class) = state_words(a, now);
                    tr {
                        td { a href={ "#account-" (a.account) } { (a.account) } }
                        td { span.state.(class) { (words) } }
                        td { (a.last_success.map_or_else(|| "never".to_owned(), |t| ago(t, now))) }
                        td { (when_next(a, now)) }
                        td.n { (history.get(&a.account).map_or(0, |d| delivered_on(d, today))) }
                        td.n { (a.delivered_total) }
                        td.n { (a.deferred) }
                        td.n { (a.refused.len()) }
                    }
                }
            }
        }
    }
}

fn account(a: &AccountStatus, days: &[Day], today: i64, now: i64) -> Markup {
    let (words, class) = state_words(a, now);
    let ok = AccountState::from_stored(&a.state) == Some(AccountState::Ok);
    html! {
        section.account id={ "account-" (a.account) } {
            h2 { (a.account) " " span.state.(class) { "(" (words) ")" } }
            @if !ok && a.state != "disabled" {
                @if let Some(e) = &a.last_error { p { strong { "Last error: " } (e) } }
                @if let Some(h) = &a.hint { p { strong { "What fixes it: " } (with_code(h)) } }
            }
            @if let Some(t) = &a.sign_in {
                p.meta {
                    "Signed in as " (t.subject.as_deref().unwrap_or("?"))
                    ", access token expires " (relative(t.access_token_expires_at, now))
                    ", refreshed " (relative(t.refreshed_at, now))
                }
            }
            @for p in &a.push {
                p { (crate::status::push_line(p, now)) }
            }
            @for i in &a.importing {
                p { (crate::status::import_line(i, now)) " " progress max=(i.total) value=(i.done) { (i.done) " of " (i.total) } }
            }
            (chart(&a.account, days, today, !a.push.is_empty()))
            @if !a.refused.is_empty() {
                h3 { "Refused messages (they stay at the source)" }
                table {
                    thead { tr { th { "Folder" } th { "UID" } th { "Message-ID" } th { "Refused" } th { "Reason" } } }
                    tbody {
                        @for r in a.refused.iter().rev().take(REFUSALS_SHOWN) {
                            tr {
                                td { (r.folder) } td { (r.key) }
                                td { (r.message_id.as_deref().map(|m| format!("<{m}>")).unwrap_or_default()) }
                                td { (local_time(r.at)) } td { (r.reason) }
                            }
                        }
                    }
                }
                @if a.refused.len() > REFUSALS_SHOWN {
                    p.meta { "The " (REFUSALS_SHOWN) " most recent of " (a.refused.len()) "; " code { "mailferry status --json" } " lists them all." }
                }
                p {
                    "Once the cause is fixed: " code { "mailferry retry --account " (a.account) " --refused" }
                    " (or one: " code { "mailferry retry --account " (a.account) " KEY" } ")"
                }
            }
        }
    }
}

/// A hint's `commands` as code, the rest as text (both escaped).
fn with_code(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

/// The last [`DAYS`] days: messages delivered per day (bars), failed runs (red marks under
/// the day), and for pushed accounts the slowest arrival-to-delivery time per day; with
/// the numbers in a table for text browsers and screen readers.
fn chart(name: &str, days: &[Day], today: i64, pushed: bool) -> Markup {
    const W: i64 = 10;
    const H: i64 = 60;
    let first = today - DAYS + 1;
    let by_day: HashMap<i64, &Day> = days.iter().map(|d| (d.day, d)).collect();
    let range: Vec<(i64, Day)> = (first..=today)
        .map(|d| (d, by_day.get(&d).map_or_else(Day::default, |x| **x)))
        .collect();
    let most = range
        .iter()
        .map(|(_, d)| d.delivered)
        .max()
        .unwrap_or(0)
        .max(1);
    let slowest = range
        .iter()
        .filter_map(|(_, d)| d.worst_latency_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let total: u64 = range.iter().map(|(_, d)| d.delivered).sum();
    let failed: u64 = range.iter().map(|(_, d)| d.failed_runs).sum();
    let height = |v: u64, max: u64| i64::try_from(v * 50 / max).unwrap_or(50);
    let caption = format!(
        "{name}: {total} delivered in {DAYS} days (at most {most} a day), {failed} failed runs"
    );
    html! {
        figure {
            svg role="img" aria-label=(caption) width=(W * DAYS) height=(H + 8) viewBox={ "0 0 " (W * DAYS) " " (H + 8) } {
                title { (caption) }
                line x1="0" y1=(H) x2=(W * DAYS) y2=(H) stroke="#d8dee4" {}
                @for (i, (_, d)) in range.iter().enumerate() {
                    @let x = i64::try_from(i).unwrap_or(0) * W;
                    @let h = height(d.delivered, most);
                    @if d.delivered > 0 {
                        rect x=(x + 1) y=(H - h) width=(W - 2) height=(h) fill="#2f6fbf" {}
                    }
                    @if d.failed_runs > 0 {
                        rect x=(x + 1) y=(H + 2) width=(W - 2) height="5" fill="#b3261e" {}
                    }
                }
            }
            @if pushed && range.iter().any(|(_, d)| d.worst_latency_ms.is_some()) {
                @let lat = format!("{name}: slowest push delivery per day, at most {:.1} s", slowest as f64 / 1000.0);
                svg role="img" aria-label=(lat) width=(W * DAYS) height=(H) viewBox={ "0 0 " (W * DAYS) " " (H) } {
                    title { (lat) }
                    @for (i, (_, d)) in range.iter().enumerate() {
                        @if let Some(ms) = d.worst_latency_ms {
                            @let h = height(ms, slowest).max(1);
                            rect x=(i64::try_from(i).unwrap_or(0) * W + 1) y=(H - h) width=(W - 2) height=(h) fill="#8a5300" {}
                        }
                    }
                }
            }
            figcaption { (caption) }
            details {
                summary { "The numbers, day by day" }
                table {
                    thead { tr { th { "Day" } th.n { "Delivered" } th.n { "Failed runs" } @if pushed { th.n { "Slowest push (s)" } } } }
                    tbody {
                        @for (day, d) in range.iter().rev() {
                            @if d.delivered > 0 || d.failed_runs > 0 || d.worst_latency_ms.is_some() {
                                tr {
                                    td { (day_name(*day)) }
                                    td.n { (d.delivered) } td.n { (d.failed_runs) }
                                    @if pushed { td.n { (d.worst_latency_ms.map(|ms| format!("{:.1}", ms as f64 / 1000.0)).unwrap_or_default()) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `2026-12-06` for a day number.
fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `2026-12-06 14:03` in local time.
fn local_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

struct DestinationLine {
    name: String,
    kind: &'static str,
    sign_in: String,
    scopes: String,
}

async fn destinations(src: &Sources<'_>, now: i64) -> anyhow::Result<Vec<DestinationLine>> {
    let mut out = Vec::new();
    for d in &src.config.destinations {
        let kind = d.kind_label();
        let (sign_in, scopes) = if d.oauth().is_none() {
            ("password or none (no sign-in)".to_owned(), String::new())
        } else {
            match src.store.token(&tokens::destination_owner(&d.name)).await? {
                None => (
                    format!("not signed in: sign in once with mailferry auth {}", d.name),
                    String::new(),
                ),
                Some(t) if t.parked.is_some() => (
                    format!(
                        "parked: needs auth ({}): sign in again with mailferry auth {}",
                        t.parked.clone().unwrap_or_default(),
                        d.name
                    ),
                    t.scopes.join(" "),
                ),
                Some(t) => (
                    format!(
                        "signed in as {}, access token expires {}",
                        t.subject.as_deref().unwrap_or("?"),
                        relative(t.expires_at, now)
                    ),
                    t.scopes.join(" "),
                ),
            }
        };
        out.push(DestinationLine {
            name: d.name.clone(),
            kind,
            sign_in,
            scopes,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
