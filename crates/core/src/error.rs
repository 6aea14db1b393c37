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
        matches!(self, Self::Deferred | Self::Refused)
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
}
