//! `scripts/bench --floor`: the least a program can do to move a mailbox the way the bench's
//! `mailferry IMAP` pass does, to show what the wire alone costs on this machine.
//!
//! One IMAPS connection in (`UID FETCH 1:* (BODY.PEEK[])` with the same rustls and ring as
//! mailferry), one plain SMTP connection out (`MAIL`, `RCPT`, `DATA`, the data as
//! `mailferry_smtp::DataPieces` writes it, each reply awaited: the receiver offers no
//! PIPELINING), blocking sockets on one thread, each message delivered as soon as it has
//! arrived. Nothing else: no ledger, no content hash, no Message-ID, no timeouts, no async
//! runtime, no retry, no recovery. It is not a mail tool (a crash loses track of
//! everything); it is the floor under one, measured like one.
//!
//! `mailferry-floor IMAPS_PORT CA_PEM USER PASSWORD SMTP_PORT RCPT` (all on 127.0.0.1);
//! prints the number of messages delivered.

#![allow(clippy::print_stdout, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use mailferry_smtp::DataPieces;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [imaps, ca, user, pass, smtp, rcpt] = args.as_slice() else {
        panic!("mailferry-floor IMAPS_PORT CA_PEM USER PASSWORD SMTP_PORT RCPT");
    };
    let mut imap = BufReader::with_capacity(64 * 1024, tls(imaps, ca));
    let mut smtp = Smtp::connect(smtp);

    line(&mut imap); // greeting
    command(
        &mut imap,
        &format!("a LOGIN {} {}", quoted(user), quoted(pass)),
    );
    command(&mut imap, "b EXAMINE INBOX");
    imap.get_mut()
        .write_all(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
        .expect("send FETCH");
    imap.get_mut().flush().expect("send FETCH");
    let mut delivered = 0u64;
    loop {
        let l = line(&mut imap);
        if l.starts_with("c ") {
            assert!(l.starts_with("c OK"), "FETCH: {l}");
            break;
        }
        // `* n FETCH (UID u BODY[] {len}`: the literal follows, then `)`.
        let Some(len) = l
            .strip_suffix("}\r\n")
            .and_then(|s| s.rsplit_once('{'))
            .and_then(|(_, n)| n.parse::<usize>().ok())
        else {
            continue;
        };
        let mut message = vec![0; len];
        imap.read_exact(&mut message).expect("literal");
        smtp.deliver(rcpt, &message);
        delivered += 1;
    }
    command(&mut imap, "d LOGOUT");
    smtp.quit();
    println!("{delivered}");
}

fn tls(port: &str, ca: &str) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS");
    let sock =
        TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("IMAPS");
    sock.set_nodelay(true).expect("nodelay");
    rustls::StreamOwned::new(conn, sock)
}

/// An IMAP quoted string (RFC 9051 `quoted`).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    let n = r.read_line(&mut l).expect("read");
    assert!(n > 0, "connection closed");
    l
}

/// Sends a tagged command and reads to its tagged reply, which must be OK.
fn command(imap: &mut BufReader<Tls>, cmd: &str) {
    let tag = cmd.split(' ').next().unwrap_or_default().to_owned();
    let s = imap.get_mut();
    s.write_all(format!("{cmd}\r\n").as_bytes()).expect("send");
    s.flush().expect("send");
    loop {
        let l = line(imap);
        if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
            assert!(rest.starts_with("OK"), "{cmd}: {l}");
            return;
        }
    }
}

struct Smtp {
    out: TcpStream,
    replies: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(port: &str) -> Self {
        let out =
            TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("SMTP");
        out.set_nodelay(true).expect("nodelay");
        let replies = BufReader::new(out.try_clone().expect("clone"));
        let mut s = Self { out, replies };
        s.reply('2');
        s.send(b"EHLO floor.example\r\n", '2');
        s
    }

    /// Reads one reply (its continuation lines too); its code must begin with `class`.
    fn reply(&mut self, class: char) {
        loop {
            let l = line(&mut self.replies);
            assert!(l.starts_with(class), "SMTP: {l}");
            if l.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    fn send(&mut self, bytes: &[u8], class: char) {
        self.out.write_all(bytes).expect("SMTP send");
        self.reply(class);
    }

    fn deliver(&mut self, rcpt: &str, message: &[u8]) {
        self.send(b"MAIL FROM:<floor@home.example>\r\n", '2');
        self.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes(), '2');
        self.send(b"DATA\r\n", '3');
        // As mailferry writes it: long runs as they are, short pieces gathered.
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, &self.out);
        for piece in DataPieces::new(message) {
            w.write_all(piece).expect("data");
        }
        w.flush().expect("data");
        drop(w);
        self.reply('2');
    }

    fn quit(&mut self) {
        self.send(b"QUIT\r\n", '2');
    }
}
