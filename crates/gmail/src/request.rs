//! One request to the Gmail API: paced, with the current token, retried while Gmail
//! throttles or fails, under the limit of silence, and its failures sorted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, info};

use crate::{AccessToken, Answer, GmailDestination, GmailError, RETRY_BUDGET, watch};

impl GmailDestination {
    /// Sends one request built by `build` (with `body`, sent in slices, when given),
    /// through the rate limiter, with the current access token, retrying throttling (and,
    /// unless the message may have been stored by it, server errors). `upload` says
    /// whether this request carries the message's last bytes, so that a failure after it
    /// may mean the message arrived.
    pub(crate) async fn call(
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
pub(crate) enum Throttle {
    /// The per-minute quota (`429 rateLimitExceeded`, `403 userRateLimitExceeded`).
    Quota,
    /// "Too many concurrent requests for user".
    Concurrency,
    /// The daily quota: nothing until Google resets it.
    Daily,
}

impl Throttle {
    pub(crate) fn of(status: StatusCode, reason: &str, message: &str) -> Option<Self> {
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
pub(crate) fn retry_after_header(value: &str, now: std::time::SystemTime) -> Option<Duration> {
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
pub(crate) fn retry_after_in(message: &str) -> Option<Duration> {
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
pub(crate) fn error_of(body: &[u8]) -> (String, String) {
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

pub(crate) fn parse(body: &[u8]) -> Result<Value, GmailError> {
    serde_json::from_slice(body).map_err(|e| GmailError::Protocol(format!("not JSON: {e}")))
}

/// Exponential backoff with jitter: about 1, 2, 4, ... 32 s. The jitter is random (a
/// seeded generator, not the clock: clock nanoseconds are multiples of 1000 on
/// microsecond clocks, and deliveries that fail together would retry in lockstep).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.min(6));
    base + base.mul_f64(fastrand::f64())
}
