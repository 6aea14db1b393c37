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
mod request;
mod upload;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tracing::{info, warn};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::is_system_label;
    use crate::lookup::is_the_copy;
    use crate::request::{Throttle, backoff, error_of, retry_after_header, retry_after_in};
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
    fn a_reload_applies_max_rate_and_concurrency_to_the_shared_mailbox() {
        let first = mailbox("reload-test", 10.0, None, 4);
        assert_eq!(first.gate.available_permits(), 4);
        let again = mailbox("reload-test", 2.0, Some(9.0), 8);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.gate.available_permits(), 8);
        assert!((first.limiter.rate() - 2.0).abs() < 1e-9);
        mailbox("reload-test", 2.0, None, 3);
        assert_eq!(first.gate.available_permits(), 3);
        // A stored rate is where a new mailbox starts.
        let learned = mailbox("restart-test", 10.0, Some(4.0), 4);
        assert!((learned.limiter.rate() - 4.0).abs() < 1e-9);
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
