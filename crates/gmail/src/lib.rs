//! The Gmail API as a destination: `users.messages.import` (Gmail's normal classification:
//! spam, categories, no SPF/DMARC trouble) or `users.messages.insert` (like IMAP APPEND),
//! with labels, for messages up to Gmail's 150 MB.
//!
//! - Up to 5 MB a message goes in one `uploadType=multipart` request (multipart/related:
//!   the JSON metadata, then the `message/rfc822` part); above that in a resumable session
//!   whose chunks are slices of the one message buffer, so a 100 MB message costs about
//!   100 MB of memory, not three times that.
//! - Requests pass a rate limiter shared by everything in the process that delivers to the
//!   same mailbox (about 10 imports per second per user is Gmail's quota); 429,
//!   `userRateLimitExceeded`/`rateLimitExceeded` and 5xx are retried with exponential
//!   backoff and jitter, honouring `Retry-After`, which also holds back the other requests.
//! - The caller passes the access token with every call; a 401 is returned as
//!   [`GmailError::Unauthorized`] so that the caller refreshes it and calls again.

#![warn(missing_docs)]

mod error;
mod limiter;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mailferry_core::RawMessage;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing::{debug, warn};

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
    /// Requests per second for this mailbox.
    pub max_rate: f64,
    /// Limit for connecting.
    pub connect_timeout: Duration,
    /// Limit for one request (an upload chunk included).
    pub io_timeout: Duration,
}

/// Where Gmail put a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Gmail's message id.
    pub id: String,
}

/// One Gmail mailbox (`users/me`).
#[derive(Debug)]
pub struct GmailDestination {
    opts: GmailOptions,
    http: reqwest::Client,
    limiter: Arc<RateLimiter>,
    /// Label name -> id, filled from `labels.list` once and by `labels.create`.
    labels: tokio::sync::Mutex<Option<HashMap<String, String>>>,
}

/// An answer: status, `Retry-After`, headers we need, and the body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<String>,
    body: Bytes,
}

impl GmailDestination {
    /// A destination; `limiter_key` names the mailbox, so that every destination object
    /// of one mailbox in this process shares one rate limit.
    ///
    /// # Errors
    /// When the HTTPS client cannot be set up.
    pub fn new(opts: GmailOptions, limiter_key: &str) -> Result<Self, GmailError> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GmailError::Protocol(format!("cannot set up HTTPS: {e}")))?;
        let limiter = RateLimiter::shared(limiter_key, opts.max_rate);
        Ok(Self {
            opts,
            http,
            limiter,
            labels: tokio::sync::Mutex::new(None),
        })
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

    /// Sends one request built by `build`, through the rate limiter, retrying throttling
    /// and server errors. `upload` says whether a failure could mean the message arrived.
    async fn call(
        &self,
        step: &'static str,
        upload: bool,
        token: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, GmailError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            self.limiter.acquire().await;
            let sent = build(&self.http)
                .bearer_auth(token)
                .timeout(self.opts.io_timeout)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(source) => {
                    return Err(GmailError::Network {
                        step,
                        after_upload: upload && !source.is_connect(),
                        source,
                    });
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .bytes()
                .await
                .map_err(|source| GmailError::Network {
                    step,
                    after_upload: upload,
                    source,
                })?;
            let answer = Answer {
                status,
                retry_after,
                location,
                body,
            };
            if status.is_success() || status.as_u16() == 308 {
                return Ok(answer);
            }
            let (reason, message) = error_of(&answer.body);
            let throttled = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && matches!(
                        reason.as_str(),
                        "userRateLimitExceeded" | "rateLimitExceeded"
                    ));
            if throttled || status.is_server_error() {
                let waited = started.elapsed();
                let wait = answer
                    .retry_after
                    .unwrap_or_else(|| backoff(attempt))
                    .min(Duration::from_secs(60));
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
                    "Gmail is busy; retrying"
                );
                // Everybody delivering to this mailbox holds back, not just this request.
                self.limiter.pause(wait).await;
                attempt += 1;
                continue;
            }
            return Err(match status {
                StatusCode::UNAUTHORIZED => GmailError::Unauthorized(message),
                StatusCode::FORBIDDEN => GmailError::Forbidden { reason, message },
                s => GmailError::Refused {
                    status: s.as_u16(),
                    message,
                },
            });
        }
    }

    /// Label ids for `names`: system labels (`INBOX`, `UNREAD`, `SPAM`, ...) as they are,
    /// user labels looked up once and created when missing.
    ///
    /// # Errors
    /// When Gmail refuses to list or create labels.
    pub async fn label_ids(
        &self,
        names: &[String],
        token: &str,
    ) -> Result<Vec<String>, GmailError> {
        let mut cache = self.labels.lock().await;
        if cache.is_none() && names.iter().any(|n| !is_system_label(n)) {
            let answer = self
                .call("labels.list", false, token, |c| c.get(self.api("labels")))
                .await?;
            let v: Value = parse(&answer.body)?;
            let mut map = HashMap::new();
            for l in v["labels"].as_array().into_iter().flatten() {
                if let (Some(id), Some(name)) = (l["id"].as_str(), l["name"].as_str()) {
                    map.insert(name.to_owned(), id.to_owned());
                }
            }
            *cache = Some(map);
        }
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            if is_system_label(name) {
                ids.push(name.clone());
                continue;
            }
            let known = cache.as_ref().and_then(|m| m.get(name)).cloned();
            let id = match known {
                Some(id) => id,
                None => {
                    let body = json!({
                        "name": name,
                        "labelListVisibility": "labelShow",
                        "messageListVisibility": "show",
                    })
                    .to_string();
                    let answer = self
                        .call("labels.create", false, token, |c| {
                            c.post(self.api("labels"))
                                .header("Content-Type", "application/json; charset=UTF-8")
                                .body(body.clone())
                        })
                        .await?;
                    let v: Value = parse(&answer.body)?;
                    let id = v["id"]
                        .as_str()
                        .ok_or_else(|| GmailError::Protocol("labels.create returned no id".into()))?
                        .to_owned();
                    debug!(name, id, "label created");
                    if let Some(m) = cache.as_mut() {
                        m.insert(name.clone(), id.clone());
                    }
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    /// Imports (or inserts) `message` with `label_ids`.
    ///
    /// # Errors
    /// [`GmailError`]; its class says whether the message or the run is affected.
    pub async fn deliver(
        &self,
        message: &RawMessage,
        label_ids: &[String],
        token: &str,
    ) -> Result<Imported, GmailError> {
        if message.len() > MAX_MESSAGE {
            return Err(GmailError::Refused {
                status: 413,
                message: format!(
                    "the message has {} bytes; Gmail takes at most {MAX_MESSAGE}",
                    message.len()
                ),
            });
        }
        let metadata = json!({ "labelIds": label_ids }).to_string();
        let answer = if message.len() <= MULTIPART_LIMIT {
            self.multipart(message, &metadata, token).await?
        } else {
            self.resumable(message, &metadata, token).await?
        };
        let v: Value = parse(&answer.body)?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| GmailError::Protocol("the import returned no message id".into()))?;
        Ok(Imported { id: id.to_owned() })
    }

    async fn multipart(
        &self,
        message: &RawMessage,
        metadata: &str,
        token: &str,
    ) -> Result<Answer, GmailError> {
        let boundary = boundary_for(message.as_bytes());
        let mut body = Vec::with_capacity(message.len() + metadata.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(message.as_bytes());
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = Bytes::from(body);
        let url = self.upload_url("multipart");
        self.call("import", true, token, |c| {
            c.post(&url)
                .header(
                    "Content-Type",
                    format!("multipart/related; boundary={boundary}"),
                )
                .body(body.clone())
        })
        .await
    }

    async fn resumable(
        &self,
        message: &RawMessage,
        metadata: &str,
        token: &str,
    ) -> Result<Answer, GmailError> {
        let url = self.upload_url("resumable");
        let total = message.len();
        let start = self
            .call("starting an upload session", false, token, |c| {
                c.post(&url)
                    .header("Content-Type", "application/json; charset=UTF-8")
                    .header("X-Upload-Content-Type", "message/rfc822")
                    .header("X-Upload-Content-Length", total.to_string())
                    .body(metadata.to_owned())
            })
            .await?;
        let session = start
            .location
            .ok_or_else(|| GmailError::Protocol("the upload session has no Location".into()))?;
        let bytes = message.bytes();
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK).min(total);
            let chunk = bytes.slice(offset..end);
            let range = format!("bytes {offset}-{}/{total}", end - 1);
            let answer = self
                .call("uploading", true, token, |c| {
                    c.put(&session)
                        .header("Content-Range", range.clone())
                        .body(chunk.clone())
                })
                .await?;
            if answer.status.as_u16() != 308 {
                return Ok(answer);
            }
            // 308 Resume Incomplete: the Range header says how much arrived.
            offset = end;
            if offset >= total {
                return Err(GmailError::Protocol(
                    "the upload session wants more than the whole message".into(),
                ));
            }
        }
    }

    /// The id of a message with this Message-ID in the mailbox, if any (spam and trash
    /// included): whether an interrupted import arrived after all.
    ///
    /// # Errors
    /// When the search fails.
    pub async fn find(&self, message_id: &str, token: &str) -> Result<Option<String>, GmailError> {
        let q = format!("rfc822msgid:{}", message_id.trim_matches(['<', '>']));
        let answer = self
            .call("messages.list", false, token, |c| {
                c.get(self.api("messages"))
                    .query(&[("q", q.as_str()), ("includeSpamTrash", "true")])
            })
            .await?;
        let v: Value = parse(&answer.body)?;
        Ok(v["messages"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["id"].as_str())
            .map(str::to_owned))
    }
}

/// Gmail's system labels, which are their own ids.
fn is_system_label(name: &str) -> bool {
    matches!(
        name,
        "INBOX" | "UNREAD" | "SPAM" | "STARRED" | "IMPORTANT" | "TRASH" | "SENT" | "DRAFT"
    ) || name.starts_with("CATEGORY_")
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

/// A multipart boundary that does not occur in `message`.
fn boundary_for(message: &[u8]) -> String {
    let mut n: u64 = fastrand::u64(..);
    loop {
        let b = format!("mailferry_{n:016x}");
        if !message.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        warn!("boundary found in the message; picking another");
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn boundaries_avoid_the_message() {
        let b = boundary_for(b"hello");
        let msg = format!("x\r\n--{b}\r\n");
        assert_ne!(boundary_for(msg.as_bytes()), b);
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
