//! Error classes: what the engine does about a failure.

/// What a failure means for the engine. Adapters map their own errors onto these classes so
/// that the engine never needs to inspect an error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server or the network is unavailable right now (timeout, connection refused,
    /// `[UNAVAILABLE]`, throttling). Stop this account's run; try again later.
    Transient,
    /// This one message was refused for now (an SMTP 4xx). Try it again on the next run and
    /// carry on with the others.
    Deferred,
    /// This one message was refused for good (an SMTP 5xx). Record the reason, report it, and
    /// carry on with the others; never retry it in a loop.
    Refused,
    /// This one message was refused, but the same answer may await every message: a 5xx
    /// to SMTP `DATA` (a policy service), a refusal of the sender taken from the message.
    /// The message rests and is tried again over a day before it is refused for good; the
    /// same answer to several messages in a row is the destination's problem.
    Doubtful,
    /// The credentials were rejected. Retrying will not help until the user acts.
    Auth,
    /// The configuration cannot work (a folder that does not exist, a TLS mode the server
    /// does not offer). Retrying will not help until the user acts.
    Config,
}

impl ErrorClass {
    /// Whether this failure concerns one message only, so the run may carry on.
    #[must_use]
    pub fn is_per_message(self) -> bool {
        matches!(self, Self::Deferred | Self::Refused | Self::Doubtful)
    }
}

/// Implemented by every adapter error.
pub trait Classify {
    /// How the engine should treat this error.
    fn class(&self) -> ErrorClass;

    /// A hint for the user: what to do about this error, if anything specific is known.
    fn hint(&self) -> Option<&'static str> {
        None
    }

    /// For a delivery error: whether the destination may have accepted the message anyway
    /// (the connection broke after the data was sent, before the reply). Such a delivery
    /// stays "attempted" in the ledger and is reported as a possible duplicate when it is
    /// re-sent; every other failure is known not to have delivered.
    fn may_have_arrived(&self) -> bool {
        false
    }

    /// How long the server asked us to stay away (Outlook.com's "Suggested Backoff Time",
    /// POP3's `[LOGIN-DELAY]`), if it said.
    fn retry_after(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Reads a requested pause from a server's words: Microsoft's `Request is throttled.
/// Suggested Backoff Time: N milliseconds`, or a `[LOGIN-DELAY]` reply naming `N seconds`.
#[must_use]
pub fn requested_wait(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let number_after = |rest: &str| -> Option<u64> {
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    if let Some(i) = text.find("Suggested Backoff Time:") {
        return number_after(&text[i + "Suggested Backoff Time:".len()..])
            .map(Duration::from_millis);
    }
    if text.contains("LOGIN-DELAY") {
        let words: Vec<&str> = text.split_whitespace().collect();
        return words
            .windows(2)
            .find_map(|w| {
                (w[1].starts_with("second"))
                    .then(|| number_after(w[0]))
                    .flatten()
            })
            .map(Duration::from_secs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requested_waits_are_read_exactly() {
        assert_eq!(
            requested_wait("NO Request is throttled. Suggested Backoff Time: 154340 milliseconds"),
            Some(Duration::from_millis(154_340))
        );
        assert_eq!(
            requested_wait("-ERR [LOGIN-DELAY] wait 300 seconds"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(requested_wait("-ERR [LOGIN-DELAY] not so soon"), None);
        assert_eq!(requested_wait("NO [AUTHENTICATIONFAILED] nope"), None);
    }
}
