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
    let data: Cow<'_, [u8]> = match first_bare(raw, 0) {
        None => Cow::Borrowed(raw),
        Some(mut at) => {
            // Whole runs between bare line ends are copied at once (memchr finds them), not
            // byte by byte: this runs over every byte of every message.
            let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
            let mut done = 0;
            loop {
                out.extend_from_slice(&raw[done..at]);
                out.extend_from_slice(b"\r\n");
                done = at + 1;
                match first_bare(raw, done) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            out.extend_from_slice(&raw[done..]);
            Cow::Owned(out)
        }
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

/// The first bare CR or LF at or after `from`, which must not be inside a CRLF pair.
/// A CRLF pair is skipped as one, so an LF found is never preceded by a CR.
fn first_bare(raw: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(found) = memchr::memchr2(b'\r', b'\n', &raw[i..]) {
        let at = i + found;
        if raw[at] == b'\r' && raw.get(at + 1) == Some(&b'\n') {
            i = at + 2;
        } else {
            return Some(at);
        }
    }
    None
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

    /// Byte by byte, as the rule reads: a CR not before an LF, and an LF not after a CR,
    /// each become CRLF; then one final CRLF goes.
    fn reference(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'\n' if i == 0 || raw[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
                b'\r' if raw.get(i + 1) != Some(&b'\n') => out.extend_from_slice(b"\r\n"),
                _ => out.push(b),
            }
        }
        if out.ends_with(b"\r\n") {
            out.truncate(out.len() - 2);
        }
        out
    }

    #[test]
    fn every_short_mix_of_line_ends_converts_as_the_rule_reads() {
        // All 4^7 strings over CR, LF, '.', 'a' up to seven bytes long.
        let alphabet = [b'\r', b'\n', b'.', b'a'];
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let raw: Vec<u8> = (0..len)
                    .map(|i| alphabet[(n / 4usize.pow(i)) % 4])
                    .collect();
                assert_eq!(
                    to_smtp_data(&raw).as_ref(),
                    reference(&raw).as_slice(),
                    "{raw:?}"
                );
            }
        }
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
