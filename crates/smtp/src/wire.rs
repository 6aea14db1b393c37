//! The only changes SMTP forces on a message's bytes.

use std::borrow::Cow;

/// Turns raw message bytes into what is handed to lettre's DATA writer, which dot-stuffs
/// and appends `CRLF . CRLF` itself:
///
/// - every line ends in CRLF: a bare LF and a bare CR each become CRLF. SMTP lines end in
///   CRLF, and receivers disagree about the others: a lenient one that ends lines at a
///   bare LF or CR would take `<LF>.<LF>` or `<CR>.<CR><LF>` for the end of DATA and run
///   what follows as commands in mailferry's session (SMTP smuggling, CVE-2023-51764 and
///   kin). After this, the only "." line is the one lettre sends, and lettre's
///   dot-stuffing covers every line start;
/// - one trailing CRLF is removed, because the terminator supplies it: a message that
///   ended in CRLF arrives byte-identical, and one without a final line break arrives with
///   one added, as SMTP requires.
///
/// Borrows when nothing needs converting, so large messages are not copied.
#[must_use]
pub fn to_smtp_data(raw: &[u8]) -> Cow<'_, [u8]> {
    let bare = |i: usize, b: u8| match b {
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        _ => false,
    };
    let needs_work = raw.iter().enumerate().any(|(i, &b)| bare(i, b));
    let data: Cow<'_, [u8]> = if needs_work {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'\n' if bare(i, b) => out.extend_from_slice(b"\r\n"),
                b'\r' if bare(i, b) => out.extend_from_slice(b"\r\n"),
                _ => out.push(b),
            }
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
    fn bare_lf_and_bare_cr_become_crlf() {
        assert_eq!(&*to_smtp_data(b"A: b\n\nx\ry\n"), b"A: b\r\n\r\nx\r\ny");
        assert_eq!(&*to_smtp_data(b"\n"), b"");
        assert_eq!(&*to_smtp_data(b"\r"), b"");
        assert_eq!(&*to_smtp_data(b"no newline"), b"no newline");
        assert_eq!(&*to_smtp_data(b"mixed\r\nlf\nend"), b"mixed\r\nlf\r\nend");
        assert_eq!(&*to_smtp_data(b"a\r\r\nb"), b"a\r\n\r\nb");
        assert_eq!(&*to_smtp_data(b"a\n\rb"), b"a\r\n\r\nb");
    }

    #[test]
    fn no_dot_line_survives_but_at_a_crlf_line_start() {
        // The smuggling shapes: after conversion every "." sits after CRLF, where lettre
        // dot-stuffs it.
        for raw in [
            &b"x\r\n\r.\r\nMAIL FROM:<e@x>\r\n"[..],
            b"x\n.\nMAIL FROM:<e@x>\n",
            b"x\r.\rMAIL FROM:<e@x>\r",
            b"x\r\n.\nMAIL FROM:<e@x>",
        ] {
            let out = to_smtp_data(raw);
            for (i, _) in out.iter().enumerate().filter(|&(_, &b)| b == b'.') {
                assert!(
                    i >= 2 && &out[i - 2..i] == b"\r\n",
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            for (i, &b) in out.iter().enumerate() {
                match b {
                    b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n')),
                    b'\n' => assert!(i > 0 && out[i - 1] == b'\r'),
                    _ => {}
                }
            }
        }
    }
}
