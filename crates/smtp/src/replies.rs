//! What the server's replies mean for the message, the run or the configuration.

use crate::error::{EnvelopeCause, SmtpError, SmtpStep};

/// 421: the server is closing the channel (the session's trouble, not the message's).
pub(crate) const CLOSING: u16 = 421;

/// What a reply to MAIL or RCPT means. A refusal of the message itself (its size: 552, or
/// the enhanced code 5.3.4) settles the message; a refusal of the sender taken from the
/// message (`own_sender`: at MAIL, or at RCPT when the reply names the sender, as Postfix
/// does with `smtpd_delay_reject`) defers it or makes it doubtful; any other refusal is
/// about the envelope, the same for every message: the run stops and nothing is settled.
pub(crate) fn envelope_reply(
    step: SmtpStep,
    cause: EnvelopeCause,
    own_sender: bool,
    r: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Result<lettre::transport::smtp::response::Response, SmtpError> {
    let e = match r {
        Ok(response) => return Ok(response),
        Err(e) => e,
    };
    let Some(code) = e.status() else {
        return Err(SmtpError::Session { step, source: e });
    };
    let code = u16::from(code);
    let text = e.to_string();
    if code == CLOSING {
        return Err(SmtpError::Session { step, source: e });
    }
    if code == 552 || text.contains("5.3.4") {
        return Err(SmtpError::Refused { reply: text });
    }
    let needs_login = code == 530 || text.contains("5.7.0");
    if own_sender && !needs_login && (step == SmtpStep::Mail || names_the_sender(&text)) {
        return Err(if e.is_transient() {
            SmtpError::Deferred { reply: text }
        } else {
            SmtpError::Doubtful { step, reply: text }
        });
    }
    let cause = if e.is_transient() {
        EnvelopeCause::Temporary
    } else if needs_login {
        EnvelopeCause::NeedsLogin
    } else if text.contains("Helo command rejected") {
        EnvelopeCause::HeloName
    } else {
        cause
    };
    Err(SmtpError::Envelope {
        step,
        reply: text,
        cause,
    })
}

/// Whether a refusal at RCPT is about the sender: Postfix's "Sender address rejected"
/// (reported at RCPT under its default `smtpd_delay_reject = yes`), Exim's "Sender verify
/// failed", or the enhanced codes for a bad sender (RFC 3463 X.1.7, X.1.8) and a failed
/// SPF check (RFC 7372 X.7.23).
fn names_the_sender(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("sender address rejected")
        || lower.contains("sender verify failed")
        || [".1.7 ", ".1.8 ", ".7.23 "]
            .iter()
            .any(|c| text.contains(&format!("4{c}")) || text.contains(&format!("5{c}")))
}

/// What a reply means at this point of the transaction.
pub(crate) fn reply(
    step: SmtpStep,
    r: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Result<lettre::transport::smtp::response::Response, SmtpError> {
    r.map_err(|e| match e.status() {
        // 421: the server is closing the channel; the connection is gone, not the message.
        Some(code) if u16::from(code) == CLOSING => SmtpError::Session { step, source: e },
        Some(_) if e.is_transient() => SmtpError::Deferred {
            reply: e.to_string(),
        },
        Some(_) => SmtpError::Refused {
            reply: e.to_string(),
        },
        None => SmtpError::Session { step, source: e },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_naming_the_sender_are_told_from_recipient_refusals() {
        // Postfix reject_unknown_sender_domain under smtpd_delay_reject (reported at RCPT).
        assert!(names_the_sender(
            "450 4.1.8 <x@forged.example>: Sender address rejected: Domain not found"
        ));
        assert!(names_the_sender("550 Sender verify failed"));
        assert!(names_the_sender(
            "550 5.7.23 Message rejected due to: SPF fail"
        ));
        assert!(!names_the_sender(
            "550 5.1.1 <bob@home.example>: Recipient address rejected: User unknown"
        ));
        assert!(!names_the_sender(
            "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
        ));
    }
}
