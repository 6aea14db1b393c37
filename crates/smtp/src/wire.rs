//! The only changes SMTP forces on a message's bytes.

use std::borrow::Cow;

/// Turns raw message bytes into what is handed to lettre's DATA writer, which dot-stuffs
/// and appends `CRLF . CRLF` itself:
///
/// - a bare LF becomes CRLF (SMTP lines end in CRLF); bare CR and every other byte stay;
/// - one trailing CRLF is removed, because the terminator supplies it: a message that
///   ended in CRLF arrives byte-identical, and one without a final line break arrives with
///   one added, as SMTP requires.
///
/// Borrows when nothing needs converting, so large messages are not copied.
#[must_use]
pub fn to_smtp_data(raw: &[u8]) -> Cow<'_, [u8]> {
    let has_bare_lf = raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
    let data: Cow<'_, [u8]> = if has_bare_lf {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
        let mut prev = 0u8;
        for &b in raw {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    };
    match data {
        Cow::Borrowed(d) => Cow::Borrowed(d.strip_suffix(b"\r\n").unwrap_or(d)),
        Cow::Owned(mut d) => {
            if d.ends_with(b"\r\n") {
                d.truncate(d.len() - 2);
            }
            Cow::Owned(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_smtp_data;

    #[test]
    fn crlf_messages_are_borrowed_and_lose_only_the_final_crlf() {
        let raw = b"A: b\r\n\r\nbody\r\n";
        let out = to_smtp_data(raw);
        assert!(matches!(out, std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*out, b"A: b\r\n\r\nbody");
    }

    #[test]
    fn bare_lf_becomes_crlf_bare_cr_stays() {
        assert_eq!(&*to_smtp_data(b"A: b\n\nx\ry\n"), b"A: b\r\n\r\nx\ry");
        assert_eq!(&*to_smtp_data(b"\n"), b"");
        assert_eq!(&*to_smtp_data(b"no newline"), b"no newline");
        assert_eq!(&*to_smtp_data(b"mixed\r\nlf\nend"), b"mixed\r\nlf\r\nend");
    }
}
