//! The codec, fed whole sessions at every chunk size.

use super::*;

/// Feeds `input` in chunks of `size` and collects the replies.
fn parse_chunked(input: &[u8], expects: &[Expect], size: usize) -> Vec<Reply> {
    let mut p = Parser::new(1 << 20);
    let mut out = Vec::new();
    let mut chunks = input.chunks(size.max(1));
    let mut i = 0;
    while i < expects.len() {
        match p.parse(expects[i]) {
            Ok(r) => {
                out.push(r);
                i += 1;
            }
            Err(Error::NeedsMoreData) => match chunks.next() {
                Some(c) => p.feed(c),
                None => panic!("ran out of input after {} replies", out.len()),
            },
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(p.buffered(), 0);
    out
}

const SESSION: &[u8] = b"+OK Dovecot ready. <1.2@host>\r\n\
+OK\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN XOAUTH2\r\n.\r\n\
+ \r\n\
-ERR [AUTH] Authentication failed.\r\n\
+OK 2 messages:\r\n1 120\r\n2 5\r\n.\r\n\
+OK\r\n1 000000017f00e1\r\n2 0000001a7f00e1\r\n.\r\n\
+OK 120 octets\r\nSubject: x\r\n\r\n..leading dot\r\n.\r\n\
+OK\r\n.\r\n\
-ERR [LOGIN-DELAY] wait 300 seconds\r\n";

const EXPECTS: &[Expect] = &[
    Expect::Status,
    Expect::MultiLine,
    Expect::SaslOrStatus,
    Expect::SaslOrStatus,
    Expect::MultiLine,
    Expect::MultiLine,
    Expect::MultiLine,
    Expect::MultiLine,
    Expect::Status,
];

#[test]
fn a_session_parses_the_same_at_every_chunk_size() {
    let whole = parse_chunked(SESSION, EXPECTS, SESSION.len());
    for size in 1..=SESSION.len() {
        assert_eq!(
            parse_chunked(SESSION, EXPECTS, size),
            whole,
            "chunk size {size}"
        );
    }
    let Reply::MultiLine { body, .. } = &whole[1] else {
        panic!("CAPA")
    };
    assert_eq!(
        capa_lines(body),
        ["TOP", "UIDL", "PIPELINING", "SASL PLAIN XOAUTH2"]
    );
    assert_eq!(whole[2], Reply::Continue(String::new()));
    assert_eq!(
        whole[3],
        Reply::Status(Status {
            ok: false,
            code: Some("AUTH".into()),
            text: "Authentication failed.".into()
        })
    );
    let Reply::MultiLine { body, .. } = &whole[4] else {
        panic!("LIST")
    };
    assert_eq!(list_lines(body).entries, [(1, 120), (2, 5)]);
    let Reply::MultiLine { body, .. } = &whole[5] else {
        panic!("UIDL")
    };
    assert_eq!(
        uidl_lines(body).entries,
        [
            (1, "000000017f00e1".to_owned()),
            (2, "0000001a7f00e1".to_owned())
        ]
    );
    let Reply::MultiLine { body, .. } = &whole[6] else {
        panic!("RETR")
    };
    assert_eq!(body, b"Subject: x\r\n\r\n.leading dot\r\n");
    assert_eq!(
        whole[7],
        Reply::MultiLine {
            status: Status {
                ok: true,
                code: None,
                text: String::new()
            },
            body: Vec::new()
        }
    );
    let Reply::Status(s) = &whole[8] else {
        panic!("status")
    };
    assert_eq!(s.code.as_deref(), Some("LOGIN-DELAY"));
}

#[test]
fn err_to_a_multiline_command_has_no_body() {
    let out = parse_chunked(
        b"-ERR no such message\r\n+OK\r\n",
        &[Expect::MultiLine, Expect::Status],
        3,
    );
    assert!(matches!(&out[0], Reply::Status(Status { ok: false, .. })));
}

#[test]
fn a_message_stored_with_bare_lfs_ends_and_unstuffs() {
    // What Cyrus sends for a message stored with LF line ends: the lines stay LF, the
    // dots after them are stuffed, the terminator follows the last LF.
    let wire =
        b"+OK Message follows\r\nSubject: lf\nFrom: a@b\n\n..dotline\nlast line\n.\r\n+OK\r\n";
    for size in 1..=wire.len() {
        let got = parse_chunked(wire, &[Expect::MultiLine, Expect::Status], size);
        let Reply::MultiLine { body, .. } = &got[0] else {
            panic!("{got:?}");
        };
        assert_eq!(body, b"Subject: lf\nFrom: a@b\n\n.dotline\nlast line\n");
        assert!(matches!(&got[1], Reply::Status(Status { ok: true, .. })));
    }
}

#[test]
fn stuffing_round_trips_awkward_bodies() {
    let bodies: &[&[u8]] = &[
        b"",
        b".",
        b"..\r\n.\r\n",
        b"a\r\n.\r\nb\r\n",
        b"nul\x00 and 8bit \xff\r\n",
        b"bare\nlf\r\n.x\r\n",
        b"lf only\n.dot after a bare lf\n\n.\nlast\n",
        b"no final newline",
    ];
    for body in bodies {
        let mut wire = b"+OK\r\n".to_vec();
        wire.extend(stuff(body));
        let want = if body.is_empty() || body.ends_with(b"\n") {
            body.to_vec()
        } else {
            [*body, b"\r\n"].concat()
        };
        for size in 1..=wire.len() {
            let got = parse_chunked(&wire, &[Expect::MultiLine], size);
            assert_eq!(
                got[0],
                Reply::MultiLine {
                    status: Status {
                        ok: true,
                        code: None,
                        text: String::new()
                    },
                    body: want.clone()
                }
            );
        }
    }
}

#[test]
fn limits_hold_on_garbage() {
    let mut p = Parser::new(64);
    p.feed(&[b'x'; MAX_LINE + 1]);
    assert_eq!(p.parse(Expect::Status), Err(Error::LineTooLong));
    let mut p = Parser::new(64);
    p.feed(b"+OK\r\n");
    p.feed(&[b'y'; 100]);
    assert_eq!(p.parse(Expect::MultiLine), Err(Error::TooLarge(64)));
    let mut p = Parser::new(64);
    p.feed(b"* OK imap\r\n");
    assert!(matches!(p.parse(Expect::Status), Err(Error::Invalid(_))));
}

#[test]
fn secrets_do_not_show_in_debug() {
    assert_eq!(format!("{:?}", Command::Pass("hunter2")), "PASS <redacted>");
    assert_eq!(
        format!("{:?}", Command::SaslResponse("dG9rZW4=")),
        "<SASL response redacted>"
    );
    assert_eq!(format!("{:?}", Command::Retr(7)), "RETR 7");
    let mut out = Vec::new();
    Command::Auth {
        mechanism: "XOAUTH2",
        initial: None,
    }
    .encode(&mut out);
    assert_eq!(out, b"AUTH XOAUTH2\r\n");
}

#[test]
fn one_odd_line_spoils_only_itself() {
    let body = b"1 abc\r\n2 caf\xe9\r\nnot a line\r\n3 ok\r\n";
    let l = uidl_lines(body);
    assert_eq!(
        l.entries,
        [
            (1, "abc".to_owned()),
            (2, "x-636166e9".to_owned()),
            (3, "ok".to_owned())
        ]
    );
    assert_eq!(l.skipped, ["not a line"]);
    let l = list_lines(b"1 10\r\n2 \xff\r\n3 30\r\n");
    assert_eq!(l.entries, [(1, 10), (3, 30)]);
    assert_eq!(l.skipped.len(), 1);
}

#[test]
fn unstuffing_removes_one_dot_after_every_lf_as_the_rule_reads() {
    // The rule byte by byte: a "." at the start or after an LF is dropped, once.
    fn reference(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in body {
            if !(at_line_start && b == b'.') {
                out.push(b);
            }
            at_line_start = b == b'\n';
        }
        out
    }
    // All 4^8 strings over CR, LF, '.', 'a' up to eight bytes long.
    let alphabet = [b'\r', b'\n', b'.', b'a'];
    for len in 0..=8u32 {
        for n in 0..4usize.pow(len) {
            let raw: Vec<u8> = (0..len)
                .map(|i| alphabet[(n / 4usize.pow(i)) % 4])
                .collect();
            let mut body = raw.clone();
            unstuff_in_place(&mut body);
            assert_eq!(body, reference(&raw), "{raw:?}");
        }
    }
}

#[test]
fn pipelined_replies_of_every_size_arrive_whole_however_they_are_read() {
    // Large and small bodies back to back, as pipelined RETRs bring them: a body is
    // taken with the buffer or copied out, whichever moves fewer bytes.
    let sizes = [70_000, 200, 150_000, 10, 80_000, 3];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let line = format!("line {i} of a body\r\n.dot-stuffed in the wire\r\n");
            line.into_bytes()
                .into_iter()
                .cycle()
                .take(n)
                .collect::<Vec<u8>>()
        })
        .map(|mut b| {
            b.extend_from_slice(b"\r\n");
            b
        })
        .collect();
    let mut wire = Vec::new();
    for b in &bodies {
        wire.extend_from_slice(format!("+OK {} octets\r\n", b.len()).as_bytes());
        let mut stuffed = Vec::new();
        for (i, &c) in b.iter().enumerate() {
            if c == b'.' && (i == 0 || b[i - 1] == b'\n') {
                stuffed.push(b'.');
            }
            stuffed.push(c);
        }
        wire.extend_from_slice(&stuffed);
        wire.extend_from_slice(b".\r\n");
    }
    for chunk in [1_000, 7_001, 65_536, wire.len()] {
        let mut p = Parser::new(1 << 20);
        let mut chunks = wire.chunks(chunk);
        for want in &bodies {
            p.reserve(want.len() + want.len() / 64 + 1024);
            let got = loop {
                match p.parse(Expect::MultiLine) {
                    Ok(Reply::MultiLine { body, .. }) => break body,
                    Ok(other) => panic!("{other:?}"),
                    Err(Error::NeedsMoreData) => p.feed(chunks.next().expect("more input")),
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(&got, want, "chunks of {chunk}");
        }
        assert_eq!(p.buffered(), 0);
    }
}

/// A 300 KB message as `RETR` brings it, followed by another reply: (body, wire).
fn large_reply() -> (Vec<u8>, Vec<u8>) {
    let body: Vec<u8> = b"Subject: x\r\n\r\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'y', 300_000))
        .chain(*b"\r\n")
        .collect();
    let mut wire = b"+OK 300016 octets\r\n".to_vec();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(b".\r\n+OK next\r\n");
    (body, wire)
}

/// A message read over many reads into [`Parser::read_buffer`] stays where it was read:
/// the buffer becomes the body, and only what came with the status line moves (before, the
/// whole body moved over the status line once complete, after a copy out of a read buffer).
#[test]
fn a_body_read_over_many_reads_is_taken_where_it_was_read() {
    let (body, wire) = large_reply();
    let mut p = Parser::new(1 << 20);
    // As the client does: the LIST size, a 64th more for stuffing, and 1 KB.
    p.reserve(body.len() + body.len() / 64 + 1024);
    // Where each read's bytes landed, as (offset in the body, address).
    let mut landed = Vec::new();
    let mut reply = None;
    for chunk in wire.chunks(16 * 1024) {
        let buf = p.read_buffer();
        let at = buf.len();
        buf.extend_from_slice(chunk);
        landed.push((at, buf.as_ptr() as usize + at));
        match p.parse(Expect::MultiLine) {
            Ok(r) => {
                reply = Some(r);
                break;
            }
            Err(Error::NeedsMoreData) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let Some(Reply::MultiLine { body: got, .. }) = reply else {
        panic!("no body");
    };
    assert_eq!(got, body);
    // From the second read on, every read's bytes are where the body has them.
    for &(at, address) in &landed[1..] {
        assert_eq!(got.as_ptr() as usize + at, address, "read at {at} moved");
    }
    assert!(matches!(p.parse(Expect::Status), Ok(Reply::Status(s)) if s.ok));
}

/// A large message that arrives whole in one read (a server that got ahead: the socket held
/// all of it) becomes the body in the buffer it was read into, and the parser keeps none of
/// that room: before, the body was copied out and the buffer kept its capacity, so the
/// message was in memory twice and the room stayed allocated for the messages after it
/// (peak RSS 24 -> 28 MB in `scripts/bench` on a loaded machine).
#[test]
fn a_large_body_read_in_one_piece_is_not_copied() {
    let (body, wire) = large_reply();
    let mut p = Parser::new(1 << 20);
    p.reserve(body.len() + body.len() / 64 + 1024);
    let buf = p.read_buffer();
    buf.extend_from_slice(&wire);
    let (read_into, room) = (buf.as_ptr() as usize, buf.capacity());
    let Ok(Reply::MultiLine { body: got, .. }) = p.parse(Expect::MultiLine) else {
        panic!("no body");
    };
    assert_eq!(got, body);
    assert_eq!(got.as_ptr() as usize, read_into, "the body was copied out");
    assert!(
        p.read_buffer().capacity() < room / 4,
        "the parser kept the message's room"
    );
    assert!(matches!(p.parse(Expect::Status), Ok(Reply::Status(s)) if s.ok));
}
