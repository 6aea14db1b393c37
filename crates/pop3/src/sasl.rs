//! SASL initial responses for POP3 `AUTH` ([RFC 4616] PLAIN, Google/Microsoft XOAUTH2).
//!
//! [RFC 4616]: https://www.rfc-editor.org/rfc/rfc4616

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// `PLAIN`: base64 of `\0user\0password`.
#[must_use]
pub fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

/// `XOAUTH2`: base64 of `user=U ^A auth=Bearer T ^A ^A`.
#[must_use]
pub fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// Decodes base64, `None` when it is not base64.
#[must_use]
pub fn decode_base64(data: &str) -> Option<Vec<u8>> {
    STANDARD.decode(data.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_string_has_the_documented_shape() {
        let s = decode_base64(&xoauth2("me@outlook.com", "tok")).expect("base64");
        assert_eq!(s, b"user=me@outlook.com\x01auth=Bearer tok\x01\x01");
        assert_eq!(decode_base64(&plain("u", "p")).expect("base64"), b"\0u\0p");
    }
}
