//! Labels: listed once per mailbox, created when missing, system labels by their ids.

use std::collections::HashMap;

use serde_json::{Value, json};
use tracing::debug;

use crate::request::parse;
use crate::*;

impl GmailDestination {
    pub(crate) async fn list_labels(
        &self,
        tokens: &dyn AccessToken,
    ) -> Result<HashMap<String, (String, String)>, GmailError> {
        let answer = self
            .call("labels.list", false, tokens, None, |c| {
                c.get(self.api("labels"))
            })
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
            .call("getProfile", false, tokens, None, |c| {
                c.get(self.api("profile"))
            })
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
    /// user labels looked up once per run (case-insensitively, as Gmail compares
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
        let mut cache = self.labels.lock().await;
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
                .call("labels.create", false, tokens, None, |c| {
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
}

/// Gmail's system labels, which are their own ids.
pub(crate) fn is_system_label(name: &str) -> bool {
    matches!(
        name,
        "INBOX" | "UNREAD" | "SPAM" | "STARRED" | "IMPORTANT" | "TRASH" | "SENT" | "DRAFT"
    ) || name.starts_with("CATEGORY_")
}

/// Whether Gmail's 400 is about a label id it does not know (one the user deleted since
/// the labels were listed), not about the message.
pub(crate) fn names_a_label(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains("invalid label") || (why.contains("label") && why.contains("not found"))
}

impl GmailDestination {
    /// Forgets the labels listed: the next [`Self::label_ids`] lists them again.
    pub(crate) async fn forget_labels(&self) {
        *self.labels.lock().await = None;
    }
}
