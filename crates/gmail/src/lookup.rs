//! After an unconfirmed upload: is the message in the mailbox? (rfc822msgid search).

use serde_json::Value;
use tracing::debug;

use crate::labels::is_system_label;
use crate::request::parse;
use crate::*;

impl GmailDestination {
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
            .call("messages.list", false, tokens, None, |c| {
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
                .call("messages.get", false, tokens, None, |c| {
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
pub(crate) fn is_the_copy(expected: &Expected<'_>, size: u64, labels: &[&str]) -> bool {
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
