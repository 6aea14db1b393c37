//! `push`, `push-folders` and `idle-refresh` of an account: IMAP IDLE.

use std::time::Duration;

use super::{Checker, Protocol};

/// How an account is pushed: the folders watched with IMAP IDLE, and how often each
/// wait is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Folders watched, one connection each (a subset of `folders`).
    pub folders: Vec<String>,
    /// `DONE` and a new `IDLE` at least this often (default 25 minutes).
    pub refresh: Duration,
}

/// RFC 2177: servers may end an IDLE after 30 minutes; Outlook.com drops quiet sessions
/// silently after one to two hours.
const DEFAULT_REFRESH: Duration = Duration::from_secs(25 * 60);
const MAX_REFRESH: Duration = Duration::from_secs(29 * 60);
const MIN_REFRESH: Duration = Duration::from_secs(2);

/// The raw keys of one account that concern push.
pub(crate) struct RawPush<'a> {
    pub(crate) push: Option<&'a str>,
    pub(crate) folders: Option<Vec<String>>,
    pub(crate) refresh: Option<&'a str>,
}

impl Checker<'_> {
    /// Checks the push keys of the account at `key`.
    pub(crate) fn push(
        &mut self,
        key: &str,
        raw: RawPush<'_>,
        protocol: Protocol,
        folders: &[String],
    ) -> Option<Push> {
        let on = self.choice(
            format!("{key}.push"),
            raw.push,
            false,
            "a choice",
            &[("idle", true), ("off", false)],
        );
        if on && protocol == Protocol::Pop3 {
            self.err(
                format!("{key}.push"),
                "POP3 has no push: the protocol cannot announce new mail, so the account is polled; remove push, or read the mailbox over IMAP (protocol = \"imap\")".into(),
            );
            return None;
        }
        if !on {
            if raw.folders.is_some() || raw.refresh.is_some() {
                let which = if raw.folders.is_some() {
                    "push-folders"
                } else {
                    "idle-refresh"
                };
                self.err(
                    format!("{key}.{which}"),
                    "only means something with push = \"idle\"".into(),
                );
            }
            return None;
        }
        let pushed = raw.folders.unwrap_or_else(|| vec!["INBOX".to_owned()]);
        if pushed.is_empty() {
            self.err(
                format!("{key}.push-folders"),
                "is empty: list the folders to watch, e.g. [\"INBOX\"], or set push = \"off\""
                    .into(),
            );
        }
        for (i, f) in pushed.iter().enumerate() {
            if !folders.contains(f) {
                self.err(
                    format!("{key}.push-folders[{i}]"),
                    format!(
                        "{f:?} is not one of the account's folders ({}); add it to folders first",
                        folders.join(", ")
                    ),
                );
            }
        }
        let refresh = self.duration(format!("{key}.idle-refresh"), raw.refresh, DEFAULT_REFRESH);
        if !(MIN_REFRESH..=MAX_REFRESH).contains(&refresh) {
            self.err(
                format!("{key}.idle-refresh"),
                "must be between 2s and 29m: servers may end an IDLE after 30 minutes (RFC 2177)"
                    .into(),
            );
        }
        Some(Push {
            folders: pushed,
            refresh,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The sample with `extra` lines in its account; the errors' text when it fails.
    fn load(extra: &str) -> Result<crate::Config, String> {
        crate::testing::Sample::new().account(extra).load()
    }

    #[test]
    fn push_defaults_to_inbox_every_25_minutes_and_is_off_unless_asked() {
        let off = load("").expect("valid");
        assert_eq!(off.accounts[0].push, None);
        let on = load("push = \"idle\"").expect("valid");
        let push = on.accounts[0].push.as_ref().expect("push");
        assert_eq!(push.folders, ["INBOX"]);
        assert_eq!(push.refresh, Duration::from_secs(25 * 60));
    }

    #[test]
    fn push_mistakes_name_their_key_and_say_why() {
        for (extra, key, why) in [
            ("push = \"always\"", "push", "use \"idle\" or \"off\""),
            (
                "push = \"idle\"\nprotocol = \"pop3\"",
                "push",
                "POP3 has no push",
            ),
            (
                "push = \"idle\"\npush-folders = [\"Junk\"]",
                "push-folders[0]",
                "not one of the account's folders",
            ),
            (
                "push = \"idle\"\nidle-refresh = \"45m\"",
                "idle-refresh",
                "29m",
            ),
            (
                "push-folders = [\"INBOX\"]",
                "push-folders",
                "push = \"idle\"",
            ),
        ] {
            let err = load(extra).expect_err(extra);
            assert!(err.contains(key) && err.contains(why), "{extra}: {err}");
        }
    }
}
