//! A destination that gives several messages in a row the same refusal is refusing them
//! all: the run stops for it instead of offering it every message.

use mailferry_core::ErrorClass;

use super::record::Outcome;
use crate::report::{ErrorReport, Stop};

/// A destination that answers "not now" to this many messages in a row with the same
/// reply is not taking mail: the run stops for it (the messages stay deferred) instead of
/// offering it every message, which a tarpitting server makes take minutes.
const SAME_DEFERRALS: u32 = 5;

/// Identical refusals in a row from the destination (4xx, or the doubtful 5xx that rest:
/// to `DATA`, to the message's own sender).
#[derive(Default)]
pub(super) struct Streak {
    reason: Option<String>,
    count: u32,
}

/// A reply with what names the message taken out (`<sender@domain>`), so that the same
/// policy answering different senders reads as the same reply.
fn policy_of(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut depth = 0u32;
    for c in reason.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push_str("<>");
                }
            }
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

impl Streak {
    /// Counts `outcome`; the run-ending error once the streak is long enough.
    pub(super) fn count(
        &mut self,
        outcome: &Result<Outcome, Stop>,
        destination: &str,
    ) -> Option<Stop> {
        match outcome {
            Ok(Outcome::DestinationDeferred(p)) => {
                let policy = policy_of(&p.reason);
                if self.reason.as_deref() == Some(policy.as_str()) {
                    self.count += 1;
                } else {
                    self.reason = Some(policy);
                    self.count = 1;
                }
            }
            Ok(Outcome::Delivered | Outcome::Found) => *self = Self::default(),
            _ => {}
        }
        if self.count < SAME_DEFERRALS {
            return None;
        }
        let reason = self.reason.as_deref().unwrap_or_default();
        Some(Stop::Destination(ErrorReport {
            class: ErrorClass::Transient,
            message: format!(
                "the destination {destination} refused {} messages in a row with the same reply ({reason}); that is the destination's answer, not the messages': nothing is settled, they wait for the next run",
                self.count
            ),
            hint: Some(
                "the destination is not taking mail right now; mailferry tries again later (its log says why)"
                    .into(),
            ),
            retry_after: None,
            blames_destination: true,
        }))
    }
}
