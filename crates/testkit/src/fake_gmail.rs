//! The fake Gmail API.

use std::process::Child;

use crate::{FakeIdp, http_request, http_request_with_body, spawn_python};

/// A fake Gmail API (`py/fake_gmail.py`) on 127.0.0.1, checking bearer tokens at a
/// [`FakeIdp`]'s tokeninfo endpoint.
pub struct FakeGmail {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl std::fmt::Debug for FakeGmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGmail")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A message the fake Gmail API holds.
#[derive(Debug, Clone)]
pub struct GmailMessage {
    /// Gmail's id.
    pub id: String,
    /// Labels it was imported with.
    pub label_ids: Vec<String>,
    /// The raw bytes as uploaded.
    pub raw: Vec<u8>,
    /// `import` or `insert`.
    pub mode: String,
    /// `multipart` or `resumable`.
    pub upload_type: String,
    /// The `internalDateSource` parameter.
    pub internal_date_source: Option<String>,
}

impl FakeGmail {
    /// Starts the fake; tokens are checked at `idp`.
    #[must_use]
    pub fn start(idp: &FakeIdp) -> Self {
        let tokeninfo = idp.url("/tokeninfo?access_token=");
        let (child, port) = spawn_python("fake_gmail.py", &[std::ffi::OsStr::new(&tokeninfo)]);
        Self { child, port }
    }

    /// The base URL to configure as `api-url`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets `rate` (per-user quota, requests/s), `storm` (the next N uploads are
    /// throttled), `fail500` (the next N fail with 500) or `retry_after` (seconds).
    pub fn set(&self, key: &str, value: &str) {
        let (status, body) =
            http_request(self.port, "POST", &format!("/control/set?{key}={value}"));
        assert_eq!(status, 200, "{body}");
    }
    /// Creates the user label `name` as if the user had made it; returns its id.
    pub fn label(&self, name: &str) -> String {
        let (code, body) = http_request(self.port, "POST", &format!("/control/label?name={name}"));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Deletes the user label `name` as the user would: its id is unknown from then on.
    pub fn delete_label(&self, name: &str) {
        let (code, body) = http_request(
            self.port,
            "POST",
            &format!("/control/delete_label?name={name}"),
        );
        assert_eq!(code, 200, "{body}");
    }

    /// Puts `raw` into the mailbox as if the user had it there, with `labels` (e.g.
    /// `SENT`: their own sent copy). Returns its id.
    pub fn add(&self, raw: &[u8], labels: &[&str]) -> String {
        let (code, body) = http_request_with_body(
            self.port,
            "POST",
            &format!("/control/add?labels={}", labels.join(",")),
            raw,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Everything imported or inserted, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<GmailMessage> {
        use base64::Engine as _;
        let (status, body) = http_request(self.port, "GET", "/control/messages");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|m| GmailMessage {
                id: m["id"].as_str().unwrap_or_default().to_owned(),
                label_ids: m["labelIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect(),
                raw: base64::engine::general_purpose::STANDARD
                    .decode(m["raw"].as_str().unwrap_or_default())
                    .expect("base64"),
                mode: m["mode"].as_str().unwrap_or_default().to_owned(),
                upload_type: m["uploadType"].as_str().unwrap_or_default().to_owned(),
                internal_date_source: m["internalDateSource"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// `(size, sha256 hex, upload type)` of every message held, without the bytes.
    #[must_use]
    pub fn digests(&self) -> Vec<(u64, String, String)> {
        let (status, body) = http_request(self.port, "GET", "/control/digests");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|m| {
                (
                    m["size"].as_u64().unwrap_or_default(),
                    m["sha256"].as_str().unwrap_or_default().to_owned(),
                    m["uploadType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Counters: uploads, throttled, server_errors, label_creates, searches, chunks, ...
    #[must_use]
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_request(self.port, "GET", "/control/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats json")
    }
}

impl Drop for FakeGmail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
