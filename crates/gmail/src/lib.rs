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
mod limiter;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mailferry_core::RawMessage;
use reqwest::StatusCode;
use serde_json::{Value, json};
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
    /// Requests per second for this mailbox.
    pub max_rate: f64,
    /// Uploads in flight at once for this mailbox (halved when Gmail says too many).
    pub concurrency: usize,
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
    limiter: Arc<RateLimiter>,
    /// Label name (lowercase) -> (name, id), filled from `labels.list` once and by
    /// `labels.create`.
    labels: tokio::sync::Mutex<Option<HashMap<String, (String, String)>>>,
    /// Uploads in flight.
    gate: tokio::sync::Semaphore,
    /// The gate's current size.
    width: AtomicUsize,
}

static MAILBOXES: OnceLock<Mutex<HashMap<String, Arc<Mailbox>>>> = OnceLock::new();

fn mailbox(key: &str, max_rate: f64, concurrency: usize) -> Arc<Mailbox> {
    let map = MAILBOXES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(key.to_owned()).or_insert_with(|| {
        let width = concurrency.max(1);
        Arc::new(Mailbox {
            limiter: RateLimiter::shared(key, max_rate),
            labels: tokio::sync::Mutex::new(None),
            gate: tokio::sync::Semaphore::new(width),
            width: AtomicUsize::new(width),
        })
    }))
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
}

/// One Gmail mailbox (`users/me`).
#[derive(Debug)]
pub struct GmailDestination {
    opts: GmailOptions,
    http: reqwest::Client,
    mailbox: Arc<Mailbox>,
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
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GmailError::Protocol(format!("cannot set up HTTPS: {e}")))?;
        let mailbox = mailbox(mailbox_key, opts.max_rate, opts.concurrency);
        Ok(Self {
            opts,
            http,
            mailbox,
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

    /// Sends one request built by `build`, through the rate limiter, with the current
    /// access token, retrying throttling (and, unless the message may have been stored by
    /// it, server errors). `upload` says whether this request carries the message's last
    /// bytes, so that a failure after it may mean the message arrived.
    async fn call(
        &self,
        step: &'static str,
        upload: bool,
        tokens: &dyn AccessToken,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, GmailError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut token = tokens.get(None).await?;
        // A 401 renews the token once per token: twice refused is a dead sign-in.
        let mut renewed_after_401 = false;
        loop {
            self.mailbox.limiter.acquire().await;
            let sent = build(&self.http)
                .bearer_auth(&token)
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
            let header = |name: reqwest::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let location = header(reqwest::header::LOCATION);
            let range = header(reqwest::header::RANGE);
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
                range,
                body,
            };
            if status.is_success() || status.as_u16() == 308 {
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
            if status == StatusCode::FORBIDDEN
                && matches!(reason.as_str(), "dailyLimitExceeded" | "quotaExceeded")
            {
                return Err(GmailError::Quota { reason, message });
            }
            let too_many_at_once = message.contains("Too many concurrent requests");
            if too_many_at_once {
                self.mailbox.narrow();
            }
            let throttled = status == StatusCode::TOO_MANY_REQUESTS
                || too_many_at_once
                || (status == StatusCode::FORBIDDEN
                    && matches!(
                        reason.as_str(),
                        "userRateLimitExceeded" | "rateLimitExceeded"
                    ));
            if status.is_server_error() && upload {
                // The bytes went out: Gmail may have stored the message before failing.
                return Err(GmailError::Unconfirmed {
                    what: format!("HTTP {} after the upload: {message}", status.as_u16()),
                });
            }
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
                self.mailbox.limiter.pause(wait).await;
                attempt += 1;
                // The wait may have outlived the token: take the current one.
                let current = tokens.get(None).await?;
                if current != token {
                    token = current;
                    renewed_after_401 = false;
                }
                continue;
            }
            return Err(match status {
                StatusCode::FORBIDDEN => GmailError::Forbidden { reason, message },
                s => GmailError::Refused {
                    status: s.as_u16(),
                    message,
                },
            });
        }
    }

    async fn list_labels(
        &self,
        tokens: &dyn AccessToken,
    ) -> Result<HashMap<String, (String, String)>, GmailError> {
        let answer = self
            .call("labels.list", false, tokens, |c| c.get(self.api("labels")))
            .await?;
        let v: Value = parse(&answer.body)?;
        let mut map = HashMap::new();
        for l in v["labels"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (l["id"].as_str(), l["name"].as_str()) {
                map.insert(name.to_lowercase(), (name.to_owned(), id.to_owned()));
            }
        }
        Ok(map)
    }

    /// The mailbox's address (`users.getProfile`): whether the API answers with this sign-in.
    ///
    /// # Errors
    /// As any call.
    pub async fn profile(&self, tokens: &dyn AccessToken) -> Result<String, GmailError> {
        let answer = self
            .call("getProfile", false, tokens, |c| c.get(self.api("profile")))
            .await?;
        let v: Value = parse(&answer.body)?;
        Ok(v["emailAddress"].as_str().unwrap_or_default().to_owned())
    }

    /// The names of the mailbox's labels (`labels.list`).
    ///
    /// # Errors
    /// As any call.
    pub async fn label_names(&self, tokens: &dyn AccessToken) -> Result<Vec<String>, GmailError> {
        let mut names: Vec<String> = self
            .list_labels(tokens)
            .await?
            .into_values()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Label ids for `names`: system labels (`INBOX`, `UNREAD`, `SPAM`, ...) as they are,
    /// user labels looked up once per mailbox (case-insensitively, as Gmail compares
    /// them) and created when missing. A creation that conflicts (another process, a
    /// name differing in case) lists the labels again and takes the existing one.
    ///
    /// # Errors
    /// When Gmail refuses to list or create labels; [`GmailError::Label`] for a name it
    /// does not accept.
    pub async fn label_ids(
        &self,
        names: &[String],
        tokens: &dyn AccessToken,
    ) -> Result<Vec<String>, GmailError> {
        if names.iter().all(|n| is_system_label(n)) {
            return Ok(names.to_vec());
        }
        let mut cache = self.mailbox.labels.lock().await;
        if cache.is_none() {
            *cache = Some(self.list_labels(tokens).await?);
        }
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            if is_system_label(name) {
                ids.push(name.clone());
                continue;
            }
            let key = name.to_lowercase();
            if let Some((_, id)) = cache.as_ref().and_then(|m| m.get(&key)) {
                ids.push(id.clone());
                continue;
            }
            let body = json!({
                "name": name,
                "labelListVisibility": "labelShow",
                "messageListVisibility": "show",
            })
            .to_string();
            let created = self
                .call("labels.create", false, tokens, |c| {
                    c.post(self.api("labels"))
                        .header("Content-Type", "application/json; charset=UTF-8")
                        .body(body.clone())
                })
                .await;
            let id = match created {
                Ok(answer) => {
                    let v: Value = parse(&answer.body)?;
                    let id = v["id"]
                        .as_str()
                        .ok_or_else(|| GmailError::Protocol("labels.create returned no id".into()))?
                        .to_owned();
                    debug!(name, id, "label created");
                    id
                }
                Err(GmailError::Refused { status: 409, .. }) => {
                    let fresh = self.list_labels(tokens).await?;
                    let found = fresh.get(&key).map(|(_, id)| id.clone());
                    *cache = Some(fresh);
                    found.ok_or_else(|| GmailError::Label {
                        name: name.clone(),
                        status: 409,
                        message: "Gmail says the label exists, but it is not listed".into(),
                    })?
                }
                Err(GmailError::Refused { status, message }) => {
                    return Err(GmailError::Label {
                        name: name.clone(),
                        status,
                        message,
                    });
                }
                Err(e) => return Err(e),
            };
            if let Some(m) = cache.as_mut() {
                m.insert(key, (name.clone(), id.clone()));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Imports (or inserts) `message` with `label_ids`.
    ///
    /// # Errors
    /// [`GmailError`]; its class says whether the message or the run is affected, and
    /// [`GmailError::Unconfirmed`] that the message may have arrived.
    pub async fn deliver(
        &self,
        message: &RawMessage,
        label_ids: &[String],
        tokens: &dyn AccessToken,
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
        let _slot = self
            .mailbox
            .gate
            .acquire()
            .await
            .map_err(|_| GmailError::Protocol("the upload gate closed".into()))?;
        let metadata = json!({ "labelIds": label_ids }).to_string();
        let answer = if message.len() <= MULTIPART_LIMIT {
            self.multipart(message, &metadata, tokens).await?
        } else {
            self.resumable(message, &metadata, tokens).await?
        };
        // A success whose body does not say where the message went: it may be stored.
        let id = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| GmailError::Unconfirmed {
                what: format!(
                    "HTTP {} without a message id in its answer",
                    answer.status.as_u16()
                ),
            })?;
        Ok(Imported { id })
    }

    async fn multipart(
        &self,
        message: &RawMessage,
        metadata: &str,
        tokens: &dyn AccessToken,
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
        self.call("import", true, tokens, |c| {
            c.post(&url)
                .header(
                    "Content-Type",
                    format!("multipart/related; boundary={boundary}"),
                )
                .body(body.clone())
        })
        .await
    }

    /// A resumable upload: a session, then chunks from where the server's `Range` says it
    /// stands. A session that expired (404/410) is started again from the first byte.
    async fn resumable(
        &self,
        message: &RawMessage,
        metadata: &str,
        tokens: &dyn AccessToken,
    ) -> Result<Answer, GmailError> {
        let mut restarts = 0;
        loop {
            match self.one_session(message, metadata, tokens).await {
                Err(GmailError::Refused {
                    status: 404 | 410,
                    message: why,
                }) if restarts < SESSION_RESTARTS => {
                    restarts += 1;
                    warn!(why, "the upload session expired; starting a new one");
                }
                other => return other,
            }
        }
    }

    async fn one_session(
        &self,
        message: &RawMessage,
        metadata: &str,
        tokens: &dyn AccessToken,
    ) -> Result<Answer, GmailError> {
        let url = self.upload_url("resumable");
        let total = message.len();
        let start = self
            .call("starting an upload session", false, tokens, |c| {
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
                .call("uploading", end == total, tokens, |c| {
                    c.put(&session)
                        .header("Content-Range", range.clone())
                        .body(chunk.clone())
                })
                .await?;
            if answer.status.as_u16() != 308 {
                return Ok(answer);
            }
            // 308 Resume Incomplete: `Range: bytes=0-N` says what arrived; go on from N+1,
            // not from where this chunk ended (the server may have kept less).
            offset = resume_offset(answer.range.as_deref());
            if offset >= total {
                return Err(GmailError::Protocol(
                    "the upload session has every byte but does not finish".into(),
                ));
            }
        }
    }

    /// Whether the imported copy of a message is in the mailbox (spam and trash included):
    /// a search for its Message-ID (quoted), then each hit checked against `expected`:
    /// its size, the user labels mailferry sets, and not the user's own sent or draft
    /// copy. A message without a Message-ID is never found.
    ///
    /// # Errors
    /// When the search fails.
    pub async fn lookup(
        &self,
        expected: &Expected<'_>,
        tokens: &dyn AccessToken,
    ) -> Result<Found, GmailError> {
        let id = expected.message_id.trim().trim_matches(['<', '>']);
        if id.is_empty() {
            return Ok(Found::Nothing);
        }
        let q = format!("rfc822msgid:\"{}\"", id.replace('"', ""));
        let answer = self
            .call("messages.list", false, tokens, |c| {
                c.get(self.api("messages"))
                    .query(&[("q", q.as_str()), ("includeSpamTrash", "true")])
            })
            .await?;
        let v: Value = parse(&answer.body)?;
        let hits: Vec<String> = v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        for hit in hits {
            let path = format!("messages/{hit}");
            let answer = self
                .call("messages.get", false, tokens, |c| {
                    c.get(self.api(&path)).query(&[("format", "minimal")])
                })
                .await?;
            let m: Value = parse(&answer.body)?;
            let labels: Vec<&str> = m["labelIds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let size = m["sizeEstimate"].as_u64().unwrap_or(0);
            if is_the_copy(expected, size, &labels) {
                return Ok(Found::Copy(hit));
            }
            debug!(
                hit,
                size,
                ?labels,
                "a message with this Message-ID that mailferry did not import"
            );
        }
        Ok(Found::Nothing)
    }
}

/// Whether a hit of the Message-ID search is the copy mailferry imported: about its size
/// (Gmail's `sizeEstimate` of an imported message is its raw size; a little slack for
/// line-end normalisation), every user label mailferry sets, and not the user's own
/// sent or draft copy (which carry `SENT`/`DRAFT`).
fn is_the_copy(expected: &Expected<'_>, size: u64, labels: &[&str]) -> bool {
    let want = expected.size as u64;
    let slack = want / 50 + 64;
    let size_ok = size.abs_diff(want) <= slack;
    let own = labels.iter().any(|l| matches!(*l, "SENT" | "DRAFT"));
    let labelled = expected
        .label_ids
        .iter()
        .filter(|l| !is_system_label(l))
        .all(|l| labels.contains(&l.as_str()));
    size_ok && !own && labelled
}

/// The next offset of a resumable upload from a 308's `Range: bytes=0-N`; no header means
/// nothing arrived.
fn resume_offset(range: Option<&str>) -> usize {
    range
        .and_then(|r| r.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1)
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
