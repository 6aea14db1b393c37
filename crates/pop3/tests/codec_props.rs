//! Property tests of the POP3 codec: it never panics and never grows without bound on
//! garbage, and any body survives the server's dot-stuffing and our unstuffing whatever
//! the chunking.

use mailferry_pop3::codec::{Error, Expect, MAX_LINE, Parser, Reply, stuff};
use proptest::prelude::*;

const LIMIT: usize = 64 * 1024;

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Status),
        Just(Expect::MultiLine),
        Just(Expect::SaslOrStatus)
    ]
}

/// Bytes that look a little like POP3, so that the parser gets past the first line often.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"+OK".to_vec()),
        Just(b"-ERR [AUTH] no".to_vec()),
        Just(b"+ ".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"..".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_never_panics_and_stays_bounded(
        input in noise(),
        chunk in 1usize..64,
        expects in proptest::collection::vec(expect(), 1..16),
    ) {
        let mut p = Parser::new(LIMIT);
        let mut chunks = input.chunks(chunk);
        let mut i = 0;
        loop {
            match p.parse(expects[i % expects.len()]) {
                Ok(_) => i += 1,
                Err(Error::NeedsMoreData) => match chunks.next() {
                    Some(c) => p.feed(c),
                    None => break,
                },
                Err(_) => break,
            }
            prop_assert!(p.buffered() <= input.len());
            prop_assert!(p.buffered() <= LIMIT + MAX_LINE + 64);
        }
    }

    #[test]
    fn any_body_round_trips_at_any_chunk_size(
        lines in proptest::collection::vec(
            prop_oneof![
                Just(b".".to_vec()),
                Just(b"..".to_vec()),
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..30),
            ],
            0..30,
        ),
        chunk in 1usize..50,
    ) {
        let body: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
        let mut wire = b"+OK message follows\r\n".to_vec();
        wire.extend(stuff(&body));
        let mut p = Parser::new(LIMIT);
        let mut chunks = wire.chunks(chunk);
        let reply = loop {
            match p.parse(Expect::MultiLine) {
                Ok(r) => break r,
                Err(Error::NeedsMoreData) => p.feed(chunks.next().expect("terminator reached")),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
        };
        let Reply::MultiLine { body: got, .. } = reply else {
            return Err(TestCaseError::fail("not multi-line"));
        };
        prop_assert_eq!(got, body);
        prop_assert!(chunks.next().is_none());
    }
}
