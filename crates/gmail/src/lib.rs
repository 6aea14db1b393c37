//! The Gmail API as a destination: `users.messages.import` (Gmail's normal classification:
//! spam, categories, no SPF/DMARC trouble) or `users.messages.insert` (like IMAP APPEND),
//! with labels, for messages up to Gmail's 150 MB.
//!
//! - Up to 5 MB a message goes in one `uploadType=multipart` request (multipart/related:
//!   the JSON metadata, then the `message/rfc822` part); above that in a resumable session
//!   whose chunks are slices of the one message buffer, so a 100 MB message costs about
//!   100 MB of memory, not three times that. The session follows the server's `Range`
//!   answer, and one that expired (404/410) is started again.
//! - Requests pass a rate limiter shared by everything in the process that delivers to the
//!   same mailbox (about 10 imports per second per user is Gmail's quota); 429,
//!   `userRateLimitExceeded`/`rateLimitExceeded` and 5xx are retried with exponential
//!   backoff and jitter, honouring `Retry-After`, which also holds back the other requests.
//!   "Too many concurrent requests for user" also halves the mailbox's concurrency.
//! - An upload that Gmail may have stored (a 5xx after the bytes went out, a success that
//!   does not parse) is never retried blindly: [`GmailError::Unconfirmed`] leaves it to the
//!   caller, who looks it up with [`GmailDestination::lookup`] once Gmail's search has had
//!   time to index it.
//! - Every request takes the current access token from an [`AccessToken`], so retries that
//!   outlast a token use a refreshed one; a 401 renews it once per token.
//! - Labels are looked up and created once per mailbox for every account that shares it,
//!   matched case-insensitively as Gmail does.

#![warn(missing_docs)]

mod error;
mod labels;
mod limiter;
mod lookup;
mod upload;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, info, warn};

pub use error::GmailError;
pub use limiter::RateLimiter;

/// Messages up to this size go in one multipart request.
pub const MULTIPART_LIMIT: usize = 5 * 1024 * 1024;
/// Gmail's limit for one message.
pub const MAX_MESSAGE: usize = 150 * 1024 * 1024;
/// Resumable uploads go in chunks of this size (a multiple of 256 KiB, as required).
pub const CHUNK: usize = 8 * 1024 * 1024;
/// Give up retrying a throttled or failing request after this long.
const RETRY_BUDGET: Duration = Duration::from_secs(120);
/// How often an expired upload session is started again for one message.
const SESSION_RESTARTS: u32 = 2;

/// `import` or `insert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `users.messages.import`: classified like received mail.
    Import,
    /// `users.messages.insert`: stored as is, like IMAP APPEND.
    Insert,
}

/// Settings of a Gmail destination.
#[derive(Debug, Clone)]
pub struct GmailOptions {
    /// `https://gmail.googleapis.com` (tests: the fake).
    pub base_url: String,
    /// Import or insert.
    pub mode: Mode,
    /// `internalDateSource`: `dateHeader` or `receivedTime`.
    pub internal_date_source: String,
    /// `neverMarkSpam` (import only).
    pub never_mark_spam: bool,
    /// `processForCalendar` (import only).
    pub process_for_calendar: bool,
    /// Requests per second for this mailbox, at most.
    pub max_rate: f64,
    /// The rate learned earlier (the store keeps it across restarts), if any.
    pub start_rate: Option<f64>,
    /// Uploads in flight at once for this mailbox (halved when Gmail says too many).
    pub concurrency: usize,
    /// Limit for connecting.
    pub connect_timeout: Duration,
    /// Limit of silence: no byte sent or received for this long fails the request (a slow
    /// upload that keeps moving does not).
    pub io_timeout: Duration,
}

/// Where Gmail put a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Gmail's message id.
    pub id: String,
}

/// Hands out the access token for each request. (The futures are not required to be
/// `Send`: deliveries run on their account's task.)
pub trait AccessToken: Sync {
    /// The current token; with `rejected`, Gmail has just refused that token: a renewed
    /// one (or the current one, when somebody renewed it meanwhile).
    fn get<'a>(
        &'a self,
        rejected: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<String, GmailError>> + 'a>>;
}

/// What the imported copy of a message looks like, to tell it from other messages with
/// the same Message-ID (the user's own Sent copy, a forward).
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The Message-ID, with or without angle brackets.
    pub message_id: &'a str,
    /// The message's size in bytes.
    pub size: usize,
    /// The user labels mailferry sets (their ids), which the copy must carry.
    pub label_ids: &'a [String],
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The imported copy, with its id.
    Copy(String),
    /// No such copy (as far as Gmail's search knows).
    Nothing,
}

/// Per mailbox, shared by every account that delivers to it in this process.
#[derive(Debug)]
struct Mailbox {
    limiter: RateLimiter,
    /// Uploads in flight.
    gate: tokio::sync::Semaphore,
    /// The gate's current size.
    width: AtomicUsize,
    /// The configured size (`concurrency`), before any narrowing.
    configured: AtomicUsize,
}

static MAILBOXES: OnceLock<Mutex<HashMap<String, Arc<Mailbox>>>> = OnceLock::new();

/// The mailbox `key`, created at `start_rate` (what the store remembers) on first use; a
/// later call with another `max_rate` or `concurrency` (a reload) applies them.
fn mailbox(key: &str, max_rate: f64, start_rate: Option<f64>, concurrency: usize) -> Arc<Mailbox> {
    let map = MAILBOXES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let concurrency = concurrency.max(1);
    if let Some(m) = map.get(key) {
        m.limiter.set_ceiling(max_rate);
        m.resize(concurrency);
        return Arc::clone(m);
    }
    let m = Arc::new(Mailbox {
        limiter: RateLimiter::new(max_rate, start_rate.unwrap_or(max_rate)),
        gate: tokio::sync::Semaphore::new(concurrency),
        width: AtomicUsize::new(concurrency),
        configured: AtomicUsize::new(concurrency),
    });
    map.insert(key.to_owned(), Arc::clone(&m));
    m
}

impl Mailbox {
    /// Gmail said "Too many concurrent requests for user": half as many from now on.
    fn narrow(&self) {
        let width = self.width.load(Ordering::Relaxed);
        let target = (width / 2).max(1);
        if target < width
            && self
                .width
                .compare_exchange(width, target, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let gone = self.gate.forget_permits(width - target);
            info!(
                from = width,
                to = width - gone,
                "Gmail wants fewer concurrent uploads"
            );
        }
    }

    /// A new `concurrency` from the configuration (a reload). Permits in use cannot be
    /// taken back: a smaller size takes what is free now, the next reload the rest.
    fn resize(&self, concurrency: usize) {
        if self.configured.swap(concurrency, Ordering::Relaxed) == concurrency {
            return;
        }
        let width = self.width.load(Ordering::Relaxed);
        let now = if concurrency > width {
            self.gate.add_permits(concurrency - width);
            concurrency
        } else {
            width - self.gate.forget_permits(width - concurrency)
        };
        self.width.store(now, Ordering::Relaxed);
        info!(from = width, to = now, "Gmail upload concurrency changed");
    }
}

/// One Gmail mailbox (`users/me`).
#[derive(Debug)]
pub struct GmailDestination {
    opts: GmailOptions,
    http: reqwest::Client,
    mailbox: Arc<Mailbox>,
    /// Label name (lowercase) -> (name, id), listed once per run (`labels.list`) and
    /// filled by `labels.create`: a label the user deletes is found missing at the next
    /// run, or at once when an import names it.
    labels: tokio::sync::Mutex<Option<HashMap<String, (String, String)>>>,
}

/// An answer: status, `Retry-After`, headers we need, and the body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<String>,
    range: Option<String>,
    body: Bytes,
}

impl GmailDestination {
    /// A destination; `mailbox_key` names the mailbox, so that every destination object
    /// of one mailbox in this process shares one rate limit, one label cache and one
    /// concurrency limit.
    ///
    /// # Errors
    /// When the HTTPS client cannot be set up.
    pub fn new(opts: GmailOptions, mailbox_key: &str) -> Result<Self, GmailError> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            // Sent data unacknowledged this long closes the connection (see watch.rs).
            .tcp_user_timeout(opts.io_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GmailError::Protocol(format!("cannot set up HTTPS: {e}")))?;
        let mailbox = mailbox(
            mailbox_key,
            opts.max_rate,
            opts.start_rate,
            opts.concurrency,
        );
        Ok(Self {
            opts,
            http,
            mailbox,
            labels: tokio::sync::Mutex::new(None),
        })
    }

    /// The mailbox's current import rate (requests per second), as learned so far.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.mailbox.limiter.rate()
    }

    fn api(&self, path: &str) -> String {
        format!(
            "{}/gmail/v1/users/me/{path}",
            self.opts.base_url.trim_end_matches('/')
        )
    }

    fn upload_url(&self, upload_type: &str) -> String {
        let base = self.opts.base_url.trim_end_matches('/');
        let (path, extra) = match self.opts.mode {
            Mode::Import => (
                "messages/import",
                format!(
                    "&neverMarkSpam={}&processForCalendar={}",
                    self.opts.never_mark_spam, self.opts.process_for_calendar
                ),
            ),
            Mode::Insert => ("messages", String::new()),
        };
        format!(
            "{base}/upload/gmail/v1/users/me/{path}?uploadType={upload_type}&internalDateSource={}{extra}",
            self.opts.internal_date_source
        )
    }

    /// Sends one request built by `build` (with `body`, sent in slices, when given),
    /// through the rate limiter, with the current access token, retrying throttling (and,
    /// unless the message may have been stored by it, server errors). `upload` says
    /// whether this request carries the message's last bytes, so that a failure after it
    /// may mean the message arrived.
    async fn call(
        &self,
        step: &'static str,
        upload: bool,
        tokens: &dyn AccessToken,
        body: Option<&Bytes>,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, GmailError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut token = tokens.get(None).await?;
        // A 401 renews the token once per token: twice refused is a dead sign-in.
        let mut renewed_after_401 = false;
        loop {
            self.mailbox.limiter.acquire().await;
            let answer = self
                .send_once(step, upload, build(&self.http).bearer_auth(&token), body)
                .await?;
            let status = answer.status;
            if status.is_success() || status.as_u16() == 308 {
                self.mailbox.limiter.accepted();
                return Ok(answer);
            }
            let (reason, message) = error_of(&answer.body);
            if status == StatusCode::UNAUTHORIZED {
                if renewed_after_401 {
                    return Err(GmailError::Unauthorized(message));
                }
                info!(step, "Gmail refused the access token; renewing it");
                token = tokens.get(Some(&token)).await?;
                renewed_after_401 = true;
                continue;
            }
            let throttle = Throttle::of(status, &reason, &message);
            if throttle == Some(Throttle::Daily) {
                return Err(GmailError::Quota { reason, message });
            }
            if throttle == Some(Throttle::Concurrency) {
                self.mailbox.narrow();
            }
            if status.is_server_error() && upload {
                // The bytes went out: Gmail may have stored the message before failing.
                return Err(GmailError::Unconfirmed {
                    what: format!("HTTP {} after the upload: {message}", status.as_u16()),
                });
            }
            if throttle.is_none() && !status.is_server_error() {
                return Err(match status {
                    StatusCode::FORBIDDEN => GmailError::Forbidden { reason, message },
                    s => GmailError::Refused {
                        status: s.as_u16(),
                        message,
                    },
                });
            }
            // Gmail's own word on when (Retry-After, "Retry after <time>"), else what the
            // quota's minute allows, else backoff. Everybody delivering to this mailbox
            // holds back, not just this request.
            let asked = answer.retry_after.or_else(|| retry_after_in(&message));
            let wait = match (asked, throttle) {
                (Some(d), _) => {
                    self.mailbox.limiter.pause(d);
                    d
                }
                (None, Some(Throttle::Quota)) => self.mailbox.limiter.quota_refused(),
                (None, _) => {
                    let d = backoff(attempt);
                    self.mailbox.limiter.pause(d);
                    d
                }
            };
            let waited = started.elapsed();
            if waited + wait > RETRY_BUDGET {
                return Err(GmailError::Busy {
                    status: status.as_u16(),
                    message,
                    waited,
                });
            }
            debug!(
                status = status.as_u16(),
                reason,
                ?wait,
                rate = self.mailbox.limiter.rate(),
                "Gmail is busy; retrying"
            );
            attempt += 1;
            // The wait may have outlived the token: take the current one.
            let current = tokens.get(None).await?;
            if current != token {
                token = current;
                renewed_after_401 = false;
            }
        }
    }

    /// One request and its whole answer, under the limit of silence.
    async fn send_once(
        &self,
        step: &'static str,
        upload: bool,
        request: reqwest::RequestBuilder,
        body: Option<&Bytes>,
    ) -> Result<Answer, GmailError> {
        let watch = watch::Watch::new();
        let request = match body {
            Some(b) => request
                .header(reqwest::header::CONTENT_LENGTH, b.len())
                .body(watch.body(b.clone())),
            None => request,
        };
        let exchange = async {
            let mut response = request.send().await?;
            watch.answered();
            let header = |name: reqwest::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header(reqwest::header::RETRY_AFTER)
                .and_then(|v| retry_after_header(&v, std::time::SystemTime::now()));
            let location = header(reqwest::header::LOCATION);
            let range = header(reqwest::header::RANGE);
            let status = response.status();
            let mut body = Vec::new();
            while let Some(piece) = response.chunk().await? {
                watch.alive();
                body.extend_from_slice(&piece);
            }
            Ok::<_, reqwest::Error>(Answer {
                status,
                retry_after,
                location,
                range,
                body: Bytes::from(body),
            })
        };
        match watch.guard(self.opts.io_timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(GmailError::Network {
                step,
                after_upload: upload && !source.is_connect(),
                source,
            }),
            Err(silent) => Err(GmailError::Silent {
                step,
                after: self.opts.io_timeout,
                after_upload: upload && silent.sent_all,
            }),
        }
    }
}

/// Why Gmail is holding back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Throttle {
    /// The per-minute quota (`429 rateLimitExceeded`, `403 userRateLimitExceeded`).
    Quota,
    /// "Too many concurrent requests for user".
    Concurrency,
    /// The daily quota: nothing until Google resets it.
    Daily,
}

impl Throttle {
    fn of(status: StatusCode, reason: &str, message: &str) -> Option<Self> {
        if message.contains("Too many concurrent requests") {
            return Some(Self::Concurrency);
        }
        match (status, reason) {
            (StatusCode::FORBIDDEN, "dailyLimitExceeded" | "quotaExceeded") => Some(Self::Daily),
            (StatusCode::TOO_MANY_REQUESTS, _)
            | (StatusCode::FORBIDDEN, "userRateLimitExceeded" | "rateLimitExceeded") => {
                Some(Self::Quota)
            }
            _ => None,
        }
    }
}

/// A `Retry-After` header: seconds, or an HTTP date (RFC 9110 10.2.3).
fn retry_after_header(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Gmail's "User-rate limit exceeded.  Retry after 2026-12-05T23:41:07.123Z" (GAMADV-XTD3
/// #337): how long until then.
fn retry_after_in(message: &str) -> Option<Duration> {
    let (_, rest) = message.split_once("Retry after ")?;
    let stamp = rest.split_whitespace().next()?.trim_end_matches(['.', ',']);
    let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// `(errors[0].reason, error.message)` of a Google API error body.
fn error_of(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = v["error"]["errors"][0]["reason"]
        .as_str()
        .or_else(|| v["error"]["status"].as_str())
        .unwrap_or_default()
        .to_owned();
    let message = v["error"]["message"].as_str().map_or_else(
        || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        str::to_owned,
    );
    (reason, message)
}

fn parse(body: &[u8]) -> Result<Value, GmailError> {
    serde_json::from_slice(body).map_err(|e| GmailError::Protocol(format!("not JSON: {e}")))
}

/// Exponential backoff with jitter: about 1, 2, 4, ... 32 s. The jitter is random (a
/// seeded generator, not the clock: clock nanoseconds are multiples of 1000 on
/// microsecond clocks, and deliveries that fail together would retry in lockstep).
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.min(6));
    base + base.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::is_system_label;
    use crate::lookup::is_the_copy;
    use crate::upload::{boundary_for, resume_offset};

    #[test]
    fn google_errors_are_read() {
        let body = br#"{"error":{"code":429,"message":"Too many","errors":[{"reason":"rateLimitExceeded"}],"status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(
            error_of(body),
            ("rateLimitExceeded".to_owned(), "Too many".to_owned())
        );
        assert_eq!(error_of(b"<html>").1, "<html>");
    }

    #[test]
    fn retry_after_is_read_as_seconds_an_http_date_or_gmails_words() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_450);
        assert_eq!(
            retry_after_header("120", now),
            Some(Duration::from_secs(120))
        );
        // RFC 9110's example date, 30 s after `now`.
        assert_eq!(
            retry_after_header("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after_header("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_header("soon", now), None);
        let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(90))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let wait = retry_after_in(&format!("User-rate limit exceeded.  Retry after {at}"))
            .expect("a time");
        assert!(
            wait > Duration::from_secs(85) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        assert_eq!(retry_after_in("Rate Limit Exceeded"), None);
    }

    #[test]
    fn quota_refusals_are_told_from_concurrency_and_the_daily_limit() {
        let quota = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'gmail.googleapis.com'";
        assert_eq!(
            Throttle::of(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded", quota),
            Some(Throttle::Quota)
        );
        assert_eq!(
            Throttle::of(StatusCode::FORBIDDEN, "userRateLimitExceeded", "x"),
            Some(Throttle::Quota)
        );
        assert_eq!(
            Throttle::of(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "Too many concurrent requests for user"
            ),
            Some(Throttle::Concurrency)
        );
        assert_eq!(
            Throttle::of(StatusCode::FORBIDDEN, "dailyLimitExceeded", "x"),
            Some(Throttle::Daily)
        );
        assert_eq!(
            Throttle::of(StatusCode::BAD_REQUEST, "invalidArgument", "x"),
            None
        );
        assert!(crate::labels::names_a_label("Invalid label: Label_12"));
        assert!(!crate::labels::names_a_label("Invalid From header"));
    }

    #[test]
    fn boundaries_avoid_the_message() {
        let b = boundary_for(b"hello");
        let msg = format!("x\r\n--{b}\r\n");
        assert_ne!(boundary_for(msg.as_bytes()), b);
    }

    #[test]
    fn the_copy_is_told_from_other_messages_with_its_message_id() {
        let labels = vec!["INBOX".to_owned(), "Label_7".to_owned()];
        let e = Expected {
            message_id: "<a@x>",
            size: 10_000,
            label_ids: &labels,
        };
        assert!(is_the_copy(&e, 10_000, &["Label_7", "UNREAD"]));
        // Archived and read since: still the copy.
        assert!(is_the_copy(&e, 10_010, &["Label_7"]));
        // The user's own sent copy, another size, or without mailferry's label: not it.
        assert!(!is_the_copy(&e, 10_000, &["SENT", "Label_7"]));
        assert!(!is_the_copy(&e, 4_000, &["Label_7"]));
        assert!(!is_the_copy(&e, 10_000, &["INBOX"]));
    }

    #[test]
    fn uploads_resume_where_the_server_says() {
        assert_eq!(resume_offset(Some("bytes=0-4194303")), 4_194_304);
        assert_eq!(resume_offset(None), 0);
        assert_eq!(resume_offset(Some("garbage")), 0);
    }

    #[test]
    fn ten_retries_at_the_same_moment_spread_out() {
        let waits: Vec<Duration> = (0..10).map(|_| backoff(2)).collect();
        let mut distinct = waits.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 10, "{waits:?}");
        let spread = distinct[9] - distinct[0];
        assert!(spread > Duration::from_millis(200), "{waits:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= Duration::from_millis(500));
        assert!(backoff(0) < Duration::from_secs(1));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(30) <= Duration::from_secs(64));
        assert!(is_system_label("CATEGORY_UPDATES") && !is_system_label("Outlook"));
    }
}
