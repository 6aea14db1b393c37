//! The only changes SMTP forces on a message's bytes, and writing them after `DATA`.

use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// What goes out after `DATA` is written through a buffer of this size: short pieces
/// (a line end, a stuffed dot) are gathered, runs longer than this go out at once.
const WRITE_BUFFER: usize = 64 * 1024;

/// Bytes checked at once for "nothing to change here" before looking line by line.
const WINDOW: usize = 4096;

/// The bytes of a message as they go after `DATA`, terminator included, as a sequence of
/// pieces: long runs of the message itself (borrowed, never copied) and the few bytes SMTP
/// adds between them. It is [RFC 5321]'s rules in one pass:
///
/// - every line ends in CRLF: a bare LF and a bare CR each become CRLF. SMTP lines end in
///   CRLF, and receivers disagree about the others: a lenient one that ends lines at a
///   bare LF or CR would take `<LF>.<LF>` or `<CR>.<CR><LF>` for the end of DATA and run
///   what follows as commands in mailferry's session (SMTP smuggling, CVE-2023-51764 and
///   kin). After this, the only "." line is the terminator;
/// - a line that begins with "." gets another in front (dot-stuffing, §4.5.2);
/// - the data ends with CRLF (one is added to a message without a final line break, as
///   SMTP requires), then `.` CRLF: a message that ended in CRLF arrives byte-identical.
///
/// Where nothing needs changing (most mail: CRLF lines, few lines that begin with a dot),
/// a message is one or a few pieces. Whole windows of 4 KB are checked at once with a
/// loop the compiler vectorises, and only a window that holds something to change is
/// looked at line by line (with `memchr`): a call per line cost more than the check.
///
/// [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2
#[derive(Debug)]
pub struct DataPieces<'a> {
    raw: &'a [u8],
    /// Start of the run of `raw` not handed out yet.
    from: usize,
    /// Where to look for the next line end.
    scan: usize,
    /// Added bytes to hand out before the next run.
    queued: Option<&'static [u8]>,
    ended: bool,
    /// Below this, a window was found to need changes: look line by line.
    dirty_until: usize,
    window: usize,
}

impl<'a> DataPieces<'a> {
    /// The pieces of `raw` after `DATA`.
    #[must_use]
    pub fn new(raw: &'a [u8]) -> Self {
        Self {
            raw,
            from: 0,
            scan: 0,
            // The data begins a line: a leading dot is stuffed too.
            queued: raw.first().is_some_and(|&b| b == b'.').then_some(&b"."[..]),
            ended: false,
            dirty_until: 0,
            window: WINDOW,
        }
    }

    /// Moves `scan` past whole windows that need no change. A window never ends between
    /// the CR and LF of a pair, so `scan` stays at a place where a line end can be judged
    /// by what follows.
    fn skip_clean(&mut self) {
        let raw = self.raw;
        while self.scan >= 1 && self.scan >= self.dirty_until && self.scan + self.window < raw.len()
        {
            let mut to = self.scan + self.window;
            if raw[to - 1] == b'\r' {
                to -= 1;
            }
            if to <= self.scan {
                return;
            }
            if clean(raw, self.scan, to) {
                self.scan = to;
            } else {
                self.dirty_until = to;
                return;
            }
        }
    }
}

/// Whether no byte of `raw[from..to]` needs a change: every CR is followed by an LF, and
/// every LF follows a CR and is not followed by a ".". Looks one byte either side, so
/// `1 <= from < to < raw.len()`. No early exit: the loop is vectorised.
fn clean(raw: &[u8], from: usize, to: usize) -> bool {
    let (prev, here, next) = (&raw[from - 1..to - 1], &raw[from..to], &raw[from + 1..=to]);
    let mut change = false;
    for ((&p, &c), &n) in prev.iter().zip(here).zip(next) {
        change |= (c == b'\r') & (n != b'\n') | (c == b'\n') & ((p != b'\r') | (n == b'.'));
    }
    !change
}

impl<'a> Iterator for DataPieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(q) = self.queued.take() {
            return Some(q);
        }
        if self.ended {
            return None;
        }
        let raw = self.raw;
        loop {
            self.skip_clean();
            let Some(found) = memchr::memchr2(b'\r', b'\n', &raw[self.scan..]) else {
                break;
            };
            let at = self.scan + found;
            let pair = raw[at] == b'\r' && raw.get(at + 1) == Some(&b'\n');
            // The line end is kept as it is (CRLF) or becomes CRLF (a bare CR or LF).
            let next = if pair { at + 2 } else { at + 1 };
            let dot = raw.get(next) == Some(&b'.');
            self.scan = next;
            if pair && !dot {
                continue;
            }
            let run = &raw[self.from..if pair { next } else { at }];
            self.from = next;
            self.queued = Some(match (pair, dot) {
                (true, _) => b".",
                (false, true) => b"\r\n.",
                (false, false) => b"\r\n",
            });
            return if run.is_empty() {
                self.next()
            } else {
                Some(run)
            };
        }
        self.ended = true;
        // A message whose last byte is a line end ends with CRLF now (a bare one became
        // CRLF); else a CRLF comes before the terminator.
        let terminator: &'static [u8] = match raw.last() {
            Some(b'\r' | b'\n') => b".\r\n",
            _ => b"\r\n.\r\n",
        };
        let run = &raw[self.from..];
        self.from = raw.len();
        if run.is_empty() {
            Some(terminator)
        } else {
            self.queued = Some(terminator);
            Some(run)
        }
    }
}

/// Writes `raw` as the message data after `DATA` (see [`DataPieces`]), terminator
/// included, and flushes. Long runs of the message go to `w` as they are: a 5 MB message
/// with CRLF lines is two writes, not a copy and eighty.
///
/// # Errors
/// The stream's.
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, raw: &[u8]) -> std::io::Result<()> {
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, w);
    for piece in DataPieces::new(raw) {
        out.write_all(piece).await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::{DataPieces, write_data};

    fn data(raw: &[u8]) -> Vec<u8> {
        DataPieces::new(raw).collect::<Vec<_>>().concat()
    }

    /// With windows of `window` bytes, so that short strings cross window edges.
    fn data_in_windows(raw: &[u8], window: usize) -> Vec<u8> {
        let mut pieces = DataPieces::new(raw);
        pieces.window = window;
        pieces.collect::<Vec<_>>().concat()
    }

    /// Byte by byte, as the rules read: a CR not before an LF, and an LF not after a CR,
    /// each become CRLF; then one final CRLF goes (the terminator brings it back); then
    /// every "." that begins a line gets another (the state machine of lettre's
    /// `ClientCodec`, which wrote the data before), and `CRLF . CRLF` ends it.
    fn reference(raw: &[u8]) -> Vec<u8> {
        let mut lines = Vec::new();
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'\n' if i == 0 || raw[i - 1] != b'\r' => lines.extend_from_slice(b"\r\n"),
                b'\r' if raw.get(i + 1) != Some(&b'\n') => lines.extend_from_slice(b"\r\n"),
                _ => lines.push(b),
            }
        }
        if lines.ends_with(b"\r\n") {
            lines.truncate(lines.len() - 2);
        }
        let mut out = Vec::new();
        let (mut line_start, mut after_cr) = (true, false);
        for &b in &lines {
            if b == b'.' && line_start {
                out.push(b'.');
            }
            out.push(b);
            line_start = after_cr && b == b'\n';
            after_cr = b == b'\r';
        }
        out.extend_from_slice(b"\r\n.\r\n");
        out
    }

    #[test]
    fn every_short_mix_of_line_ends_and_dots_goes_out_as_the_rules_read() {
        // All 5^7 strings over CR, LF, '.', 'a', 'b' up to seven bytes long.
        let alphabet = [b'\r', b'\n', b'.', b'a', b'b'];
        for len in 0..=7u32 {
            for n in 0..5usize.pow(len) {
                let raw: Vec<u8> = (0..len)
                    .map(|i| alphabet[(n / 5usize.pow(i)) % 5])
                    .collect();
                let want = reference(&raw);
                assert_eq!(data(&raw), want, "{raw:?}");
                for window in 1..=3 {
                    assert_eq!(data_in_windows(&raw, window), want, "{raw:?} {window}");
                }
            }
        }
    }

    #[test]
    fn a_crlf_message_goes_out_in_one_borrowed_piece_and_the_terminator() {
        let raw = b"A: b\r\n\r\nbody\r\n";
        let pieces: Vec<&[u8]> = DataPieces::new(raw).collect();
        assert_eq!(pieces, [&raw[..], b".\r\n"]);
        assert!(std::ptr::eq(pieces[0].as_ptr(), raw.as_ptr()));
        // A dot line splits it once.
        let raw = b"A: b\r\n\r\n.x\r\n";
        let pieces: Vec<&[u8]> = DataPieces::new(raw).collect();
        assert_eq!(pieces, [&b"A: b\r\n\r\n"[..], b".", b".x\r\n", b".\r\n"]);
    }

    #[test]
    fn bare_lf_and_bare_cr_become_crlf_and_a_final_line_end_is_added() {
        assert_eq!(data(b"A: b\n\nx\ry\n"), b"A: b\r\n\r\nx\r\ny\r\n.\r\n");
        assert_eq!(data(b"\n"), b"\r\n.\r\n");
        assert_eq!(data(b"\r"), b"\r\n.\r\n");
        assert_eq!(data(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(data(b"mixed\r\nlf\nend"), b"mixed\r\nlf\r\nend\r\n.\r\n");
        assert_eq!(data(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(data(b"a\n\rb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(data(b".lead\n.\n"), b"..lead\r\n..\r\n.\r\n");
    }

    #[test]
    fn no_line_is_a_lone_dot_but_the_terminator() {
        // The smuggling shapes: after conversion every line end is CRLF and every "." that
        // begins a line is doubled, so only the last line is ".".
        for raw in [
            &b"x\r\n\r.\r\nMAIL FROM:<e@x>\r\n"[..],
            b"x\n.\nMAIL FROM:<e@x>\n",
            b"x\r.\rMAIL FROM:<e@x>\r",
            b"x\r\n.\nMAIL FROM:<e@x>",
            b".\r\n",
        ] {
            let out = data(raw);
            let text = String::from_utf8_lossy(&out);
            for (i, &b) in out.iter().enumerate() {
                match b {
                    b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "{text:?}"),
                    b'\n' => assert!(i > 0 && out[i - 1] == b'\r', "{text:?}"),
                    _ => {}
                }
            }
            let lines: Vec<&str> = text.split("\r\n").collect();
            let dots = lines.iter().filter(|l| **l == ".").count();
            assert_eq!(dots, 1, "{text:?}");
            assert!(text.ends_with("\r\n.\r\n"), "{text:?}");
        }
    }

    #[tokio::test]
    async fn write_data_writes_long_runs_whole_and_gathers_short_pieces() {
        /// Records each write's length.
        struct Recorder(Vec<u8>, Vec<usize>);
        impl tokio::io::AsyncWrite for Recorder {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.0.extend_from_slice(buf);
                self.1.push(buf.len());
                std::task::Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let big: Vec<u8> =
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,\r\n".repeat(80_000);
        let mut rec = Recorder(Vec::new(), Vec::new());
        write_data(&mut rec, &big).await.expect("test");
        assert_eq!(rec.0, reference(&big));
        assert_eq!(
            rec.1,
            [big.len(), 3],
            "one write for the message, one for the end"
        );
        // A message of bare LF lines: thousands of pieces, gathered into 64 KB writes.
        let lf: Vec<u8> = b"a line that ends in a bare LF\n".repeat(10_000);
        let mut rec = Recorder(Vec::new(), Vec::new());
        write_data(&mut rec, &lf).await.expect("test");
        assert_eq!(rec.0, reference(&lf));
        assert!(rec.1.len() <= 6, "{:?}", rec.1);
    }
}
