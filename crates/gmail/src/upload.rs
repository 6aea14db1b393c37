//! The upload: multipart/related up to 5 MB, resumable sessions in 8 MB chunks beyond.

use bytes::Bytes;
use mailferry_core::RawMessage;
use serde_json::{Value, json};
use tracing::warn;

use crate::labels::names_a_label;
use crate::*;

impl GmailDestination {
    /// Imports (or inserts) `message` with the labels `names` (created when missing). A
    /// label the user deleted since they were listed makes Gmail answer 400 "Invalid
    /// label": the labels are listed again (the missing one created) and the import tried
    /// once more; the message is never refused for it.
    ///
    /// # Errors
    /// As [`Self::deliver`]; [`GmailError::Label`] when Gmail still refuses a label.
    pub async fn deliver_labelled(
        &self,
        message: &RawMessage,
        names: &[String],
        tokens: &dyn AccessToken,
    ) -> Result<Imported, GmailError> {
        let ids = self.label_ids(names, tokens).await?;
        match self.deliver(message, &ids, tokens).await {
            Err(GmailError::Refused {
                status: 400,
                message: why,
            }) if names_a_label(&why) => {
                warn!(
                    why,
                    "Gmail does not know a label it was given (deleted meanwhile?); listing the labels again"
                );
                self.forget_labels().await;
                let ids = self.label_ids(names, tokens).await?;
                self.deliver(message, &ids, tokens)
                    .await
                    .map_err(|e| match e {
                        GmailError::Refused {
                            status: 400,
                            message,
                        } if names_a_label(&message) => GmailError::Label {
                            name: names.join(", "),
                            status: 400,
                            message,
                        },
                        e => e,
                    })
            }
            other => other,
        }
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

    pub(crate) async fn multipart(
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
        self.call("import", true, tokens, Some(&body), |c| {
            c.post(&url).header(
                "Content-Type",
                format!("multipart/related; boundary={boundary}"),
            )
        })
        .await
    }

    /// A resumable upload: a session, then chunks from where the server's `Range` says it
    /// stands. A session that expired (404/410) is started again from the first byte.
    pub(crate) async fn resumable(
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

    pub(crate) async fn one_session(
        &self,
        message: &RawMessage,
        metadata: &str,
        tokens: &dyn AccessToken,
    ) -> Result<Answer, GmailError> {
        let url = self.upload_url("resumable");
        let total = message.len();
        let start = self
            .call("starting an upload session", false, tokens, None, |c| {
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
                .call("uploading", end == total, tokens, Some(&chunk), |c| {
                    c.put(&session).header("Content-Range", range.clone())
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
}

/// The next offset of a resumable upload from a 308's `Range: bytes=0-N`; no header means
/// nothing arrived.
pub(crate) fn resume_offset(range: Option<&str>) -> usize {
    range
        .and_then(|r| r.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1)
}

/// A multipart boundary that does not occur in `message`.
pub(crate) fn boundary_for(message: &[u8]) -> String {
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
