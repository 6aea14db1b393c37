//! What one run of one account did.

use mailferry_core::{Classify, ErrorClass};
use mailferry_store::RunCounts;
use mailferry_store::StoreError;

/// A message that was not delivered in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageProblem {
    /// Folder it is in.
    pub folder: String,
    /// Its UID or UIDL.
    pub key: mailferry_core::MessageKey,
    /// Its Message-ID, if any.
    pub message_id: Option<String>,
    /// The destination's words.
    pub reason: String,
}

/// An error that ended an account's run early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// How it is handled.
    pub class: ErrorClass,
    /// The full chain of causes, `: `-separated.
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
    /// How long the server asked us to stay away, if it said.
    pub retry_after: Option<std::time::Duration>,
    /// Whether the destination is what failed (then a notice cannot go into it).
    pub blames_destination: bool,
}

/// What a dry run found in one folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderPreview {
    /// The folder.
    pub folder: String,
    /// Messages that would be delivered.
    pub count: u64,
    /// The first few: (date, from, subject).
    pub first: Vec<(String, String, String)>,
}

impl ErrorReport {
    /// Captures `err` with its chain of causes.
    pub fn from_error<E: std::error::Error + Classify>(err: &E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        Self {
            class: err.class(),
            message,
            hint: err.hint().map(str::to_owned),
            retry_after: err.retry_after(),
            blames_destination: false,
        }
    }

    /// Puts the account's or destination's name where a hint says `NAME`.
    #[must_use]
    pub fn naming(mut self, name: &str) -> Self {
        self.hint = self.hint.map(|h| h.replace("NAME", name));
        self
    }
}

/// The outcome of one account's run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountReport {
    /// Dry run: per folder, what would be delivered (count, and the first few).
    pub preview: Vec<FolderPreview>,
    /// Account name.
    pub account: String,
    /// The counts stored in the `runs` table.
    pub counts: RunCounts,
    /// Messages found new at the source (the only count in a dry run).
    pub new: u64,
    /// Delivered messages removed from the source (`after-delivery = "delete"`).
    pub deleted: u64,
    /// Deliveries repeated because an earlier attempt's outcome was never recorded.
    pub resent: u64,
    /// Messages whose interrupted delivery turned out to have arrived (found at the
    /// destination by Message-ID); counted as skipped, not sent again.
    pub found: u64,
    /// Bytes of the messages delivered.
    pub bytes: u64,
    /// Messages moved to another folder after delivery.
    pub moved: u64,
    /// How long the run took.
    pub elapsed: std::time::Duration,
    /// How often the source asked for a pause (throttling) in this run, the pause that
    /// ended it included.
    pub throttled: u64,
    /// Messages refused for now; tried again next run.
    pub deferred: Vec<MessageProblem>,
    /// Messages refused for good; they stay at the source.
    pub refused: Vec<MessageProblem>,
    /// Why the run ended early, if it did.
    pub error: Option<ErrorReport>,
    /// The run's row in the store (none in a dry run).
    pub run_id: Option<i64>,
    /// The run ended at its slice with messages left ([`crate::RunOptions::slice`]).
    pub more: bool,
}

impl AccountReport {
    /// Whether anything in this run needs the user's attention.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.error.is_some() || !self.deferred.is_empty() || !self.refused.is_empty()
    }
}

/// Why an account's run ended early.
pub(crate) enum Stop {
    Source(ErrorReport),
    Destination(ErrorReport),
    Store(StoreError),
}

impl Stop {
    pub(crate) fn source<E: std::error::Error + Classify>(e: &E) -> Self {
        Self::Source(ErrorReport::from_error(e))
    }

    pub(crate) fn destination<E: std::error::Error + Classify>(e: &E) -> Self {
        Self::Destination(ErrorReport::from_error(e))
    }

    pub(crate) fn report(&self) -> ErrorReport {
        match self {
            Self::Source(r) | Self::Destination(r) => r.clone(),
            Self::Store(e) => {
                let mut r = ErrorReport::from_error(&StoreFailure(e));
                r.hint = Some("check the state directory's disk space and permissions".into());
                r
            }
        }
    }
}

/// Gives store errors a class so they report like the others.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct StoreFailure<'a>(&'a StoreError);

impl Classify for StoreFailure<'_> {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `dns`, `tcp`, `tls`, `login`, `capabilities`, `sign-in`, `folder INBOX`, ...
    pub step: String,
    /// Whether it worked.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<String>,
}

impl Finding {
    pub(crate) fn ok(step: &str, detail: String) -> Self {
        Self {
            step: step.to_owned(),
            ok: true,
            detail,
            hint: None,
        }
    }

    pub(crate) fn fail(step: &str, detail: String, hint: Option<String>) -> Self {
        Self {
            step: step.to_owned(),
            ok: false,
            detail,
            hint,
        }
    }
}

/// Told about every finished run (metrics, the service manager's status line).
pub trait Hooks: Sync {
    /// `report` finished; the account is now in `state` and runs next after `next`.
    fn after_run(
        &self,
        report: &AccountReport,
        state: crate::schedule::AccountState,
        next: std::time::Duration,
    ) {
        let _ = (report, state, next);
    }
    /// A delivery pass on a push connection finished (`push = "idle"`).
    fn after_push(&self, report: &AccountReport) {
        let _ = report;
    }
}

impl Hooks for () {}
