//! Raw messages as they came from the source.

use std::fmt;
use std::sync::LazyLock;

use bytes::Bytes;
use mail_parser::{HeaderName, MessageParser};
use sha2::{Digest, Sha256};

/// What begins every [`RawMessage::content_hash`]; a ledger fingerprint without it is a
/// SHA-256 written before.
pub const CONTENT_HASH_PREFIX: &str = "blake3:";

/// A parser of `Message-ID` alone, built once: the ledger reads it from every message, and
/// a parser of every field (mail-parser's default) parsed each address, date and encoded
/// word of the header to throw them away. Other fields are passed over as they are.
static MESSAGE_ID_ONLY: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_id(HeaderName::MessageId)
        .default_header_ignore()
});

/// One message's bytes exactly as the source served them. mailferry never rewrites them;
/// only a destination's wire format may transform them on the way out (SMTP's CRLF and
/// dot-stuffing rules), and must undo that on the other side.
///
/// The bytes are a [`Bytes`], so that an adapter can hand over the buffer it received them
/// in (the IMAP response itself) instead of copying a message of many megabytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RawMessage {
    bytes: Bytes,
}

impl RawMessage {
    /// Wraps the bytes of a message.
    #[must_use]
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
        }
    }

    /// The message's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as a shared buffer (a cheap clone, no copy), for zero-copy uploads.
    #[must_use]
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the message has no bytes at all (real mailboxes hold such messages).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether there is nothing to deliver: no bytes, or only line breaks (a POP3 server
    /// serves an empty file as one empty line). Such a message is refused before any
    /// destination sees it, whatever the source.
    #[must_use]
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(|&b| b == b'\r' || b == b'\n')
    }

    /// The ledger's fingerprint of the bytes: `blake3:` and the BLAKE3 hash as lowercase
    /// hex. Together with the Message-ID it recognises a message seen before under another
    /// UIDVALIDITY. BLAKE3 rather than SHA-256: every message is hashed once, and SHA-256
    /// was a fifth of mailferry's CPU per gigabyte (0.88 s per GB with the CPU's SHA
    /// instructions, BLAKE3 0.19 s on the same machine). The prefix tells these apart
    /// from the bare SHA-256 hex that ledgers written before it hold ([`Self::sha256_hex`]).
    #[must_use]
    pub fn content_hash(&self) -> String {
        format!(
            "{CONTENT_HASH_PREFIX}{}",
            blake3::hash(&self.bytes).to_hex()
        )
    }

    /// The SHA-256 of the bytes, as lowercase hex: the fingerprint ledgers held before
    /// [`Self::content_hash`], and the POP3 stand-in key of servers without UIDL.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }

    /// The Message-ID header without angle brackets, if the message has a parseable one.
    #[must_use]
    pub fn message_id(&self) -> Option<String> {
        MESSAGE_ID_ONLY
            .parse_headers(&self.bytes)
            .and_then(|m| m.message_id().map(str::to_owned))
    }

    /// The address to use as the envelope sender when re-sending: the `Return-Path` if there
    /// is one, else the first `From` address. `None` when neither holds an address.
    #[must_use]
    pub fn envelope_sender(&self) -> Option<String> {
        let msg = self.header_message()?;
        msg.return_address()
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
    }

    /// `(Date, From, Subject)` as a person reads them, for previews; empty when missing.
    #[must_use]
    pub fn summary(&self) -> (String, String, String) {
        let Some(m) = self.header_message() else {
            return Default::default();
        };
        let date = m.date().map(|d| d.to_rfc3339()).unwrap_or_default();
        let from = m
            .from()
            .and_then(|a| a.first())
            .map(|a| match (a.name(), a.address()) {
                (Some(n), Some(addr)) => format!("{n} <{addr}>"),
                (None, Some(addr)) => addr.to_owned(),
                (Some(n), None) => n.to_owned(),
                (None, None) => String::new(),
            })
            .unwrap_or_default();
        let subject = m.subject().unwrap_or_default().to_owned();
        (date, from, subject)
    }

    /// Parses the header block only; the body is never needed here.
    fn header_message(&self) -> Option<mail_parser::Message<'_>> {
        MessageParser::new().parse_headers(&self.bytes)
    }
}

impl fmt::Debug for RawMessage {
    /// Never prints the content: bodies and headers are private.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMessage")
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_and_sender_come_from_headers() {
        let m = RawMessage::new(
            b"Return-Path: <bounce@a.example>\r\nFrom: Ann <ann@a.example>\r\nMessage-ID: <x1@a.example>\r\n\r\nhi\r\n"
                .to_vec(),
        );
        assert_eq!(m.message_id().as_deref(), Some("x1@a.example"));
        assert_eq!(m.envelope_sender().as_deref(), Some("bounce@a.example"));
    }

    #[test]
    fn sender_falls_back_to_from_and_then_none() {
        let m = RawMessage::new(b"From: ann@a.example\r\n\r\nhi".to_vec());
        assert_eq!(m.envelope_sender().as_deref(), Some("ann@a.example"));
        assert_eq!(m.message_id(), None);
        let empty = RawMessage::new(Vec::new());
        assert_eq!(empty.envelope_sender(), None);
        assert!(empty.is_empty());
    }

    /// The Message-ID as mail-parser's parser of every field finds it, from headers made
    /// to trip a parser that passes over the other fields.
    #[test]
    fn message_id_alone_is_found_as_the_whole_header_parse_finds_it() {
        let headers: &[&[u8]] = &[
            b"Message-ID: <a@b>\r\n\r\nbody",
            b"Message-ID:\r\n <folded@b>\r\n\r\n",
            b"Message-Id: bare@b\r\n\r\n",
            b"message-id: <lower@b>\n\n",
            b"Message-ID: <first@b>\r\nMessage-ID: <second@b>\r\n\r\n",
            b"Subject: =?utf-8?q?Message-ID:_<no@b>?=\r\n Message-ID: <in-a-fold@b>\r\nMessage-ID: <real@b>\r\n\r\n",
            b"From: \"Message-ID: <quoted@b>\" <a@b>,\r\n\tc@d\r\nReceived: from x (y [1.2.3.4]); Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <after@b>\r\n\r\n",
            b"Garbage line without colon\r\nMessage-ID: <after-garbage@b>\r\n\r\n",
            b"To: a@b\r\n\r\nMessage-ID: <in-the-body@b>\r\n",
            b"Message-ID: <>\r\n\r\n",
            b"Message-ID: <a@b> (comment)\r\n\r\n",
            b"",
            b"\r\n\r\n",
        ];
        for &h in headers {
            let whole = MessageParser::new()
                .parse_headers(h)
                .and_then(|m| m.message_id().map(str::to_owned));
            assert_eq!(
                RawMessage::new(h.to_vec()).message_id(),
                whole,
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
    }

    #[test]
    fn debug_hides_content() {
        let m = RawMessage::new(b"Subject: secret\r\n\r\n".to_vec());
        assert!(!format!("{m:?}").contains("secret"));
    }
}
