//! A scriptable POP3 server for what Dovecot cannot be made to do: `-ERR` to `UIDL` while
//! announcing it, unique ids listed twice, listing lines that are not UTF-8 or not lines,
//! a CAPA that changes between sessions. Plain TCP on 127.0.0.1, one session at a time,
//! every command line recorded.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server does; change it between sessions through [`FakePop3::script`].
#[derive(Debug, Clone, Default)]
pub struct Pop3Script {
    /// The maildrop: (unique id as raw bytes, message).
    pub messages: Vec<(Vec<u8>, Vec<u8>)>,
    /// CAPA lines; empty: CAPA is answered `-ERR`.
    pub capa: Vec<String>,
    /// The next this many `UIDL` commands get `-ERR`.
    pub uidl_err: u32,
    /// Lines added to the UIDL listing as they are (garbage a server may send).
    pub extra_uidl_lines: Vec<Vec<u8>>,
    /// Message numbers whose `RETR` gets `-ERR`.
    pub retr_err: Vec<usize>,
    /// `LIST` sizes are the real ones times `.0 / .1` (Exchange's estimates).
    pub list_scale: Option<(u64, u64)>,
    /// The greeting's text after `+OK`.
    pub greeting: Option<String>,
    /// The next this many `PASS` commands get this reply (`-ERR ...`).
    pub pass_err: Option<(u32, String)>,
    /// Replies go out in pieces of this many bytes, this long apart (see
    /// `write_in_pieces`).
    pub pieces: Option<(usize, std::time::Duration)>,
}

impl Pop3Script {
    /// Outlook.com's POP3 (Exchange Online): `LIST` sizes are estimates, unless an admin
    /// switched `EnableExactRFC822Size` on, which is off by default (Microsoft KB Q191504;
    /// stalwartlabs/vandelay #12 saw bodies about a third of the size announced); here
    /// 1.3 times the real size. `-ERR Server Unavailable. 21` is set per test
    /// ([`Self::pass_err`]).
    #[must_use]
    pub fn outlook(messages: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            messages,
            capa: vec![
                "TOP".into(),
                "UIDL".into(),
                "SASL PLAIN XOAUTH2".into(),
                "USER".into(),
            ],
            list_scale: Some((13, 10)),
            greeting: Some("The Microsoft Exchange POP3 service is ready.".into()),
            ..Self::default()
        }
    }
}

/// The server; stops when dropped (its thread ends with the test process).
#[derive(Debug)]
pub struct FakePop3 {
    /// The port it listens on.
    pub port: u16,
    script: Arc<Mutex<Pop3Script>>,
    commands: Arc<Mutex<Vec<String>>>,
}

impl FakePop3 {
    /// Starts serving `script`.
    #[must_use]
    pub fn start(script: Pop3Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(script));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (Arc::clone(&script), Arc::clone(&commands));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = session(stream, &s, &c);
            }
        });
        Self {
            port,
            script,
            commands,
        }
    }

    /// Changes what the server does from the next command on.
    pub fn script(&self, change: impl FnOnce(&mut Pop3Script)) {
        change(
            &mut self
                .script
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// Every command line received so far (passwords included: test data only).
    #[must_use]
    pub fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn session(
    stream: TcpStream,
    script: &Mutex<Pop3Script>,
    commands: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let greeting = script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .greeting
        .clone()
        .unwrap_or_else(|| "fake POP3 ready".into());
    out.write_all(format!("+OK {greeting}\r\n").as_bytes())?;
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line.clone());
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut s = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = |i: usize| -> Option<usize> {
            words
                .get(i)
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|n| (1..=s.messages.len()).contains(n))
        };
        let reply: Vec<u8> = match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("CAPA") if s.capa.is_empty() => b"-ERR unknown command\r\n".to_vec(),
            Some("CAPA") => {
                let mut r = b"+OK\r\n".to_vec();
                for c in &s.capa {
                    r.extend_from_slice(c.as_bytes());
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            Some("PASS") if s.pass_err.as_ref().is_some_and(|(n, _)| *n > 0) => {
                let (n, text) = s.pass_err.clone().unwrap_or_default();
                s.pass_err = Some((n - 1, text.clone()));
                format!("{text}\r\n").into_bytes()
            }
            Some("USER" | "PASS" | "NOOP" | "DELE") => b"+OK\r\n".to_vec(),
            Some("LIST") => {
                let mut r = b"+OK\r\n".to_vec();
                let (num, den) = s.list_scale.unwrap_or((1, 1));
                for (i, (_, m)) in s.messages.iter().enumerate() {
                    let size = m.len() as u64 * num / den.max(1);
                    r.extend_from_slice(format!("{} {size}\r\n", i + 1).as_bytes());
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            Some("UIDL") if s.uidl_err > 0 => {
                s.uidl_err -= 1;
                b"-ERR [SYS/TEMP] unique-id listing unavailable, try later\r\n".to_vec()
            }
            Some("UIDL") => {
                let mut r = b"+OK\r\n".to_vec();
                for (i, (u, _)) in s.messages.iter().enumerate() {
                    r.extend_from_slice(format!("{} ", i + 1).as_bytes());
                    r.extend_from_slice(u);
                    r.extend_from_slice(b"\r\n");
                }
                for extra in &s.extra_uidl_lines {
                    r.extend_from_slice(extra);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b".\r\n");
                r
            }
            Some("TOP") => match n(1) {
                Some(i) => {
                    let m = &s.messages[i - 1].1;
                    let end = m
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(m.len(), |p| p + 4);
                    [b"+OK\r\n".as_slice(), &stuffed(&m[..end])].concat()
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            Some("RETR") => match n(1) {
                Some(i) if s.retr_err.contains(&i) => {
                    b"-ERR [SYS/PERM] message is corrupt on this server\r\n".to_vec()
                }
                Some(i) => [b"+OK\r\n".as_slice(), &stuffed(&s.messages[i - 1].1)].concat(),
                None => b"-ERR no such message\r\n".to_vec(),
            },
            Some("QUIT") => {
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => b"-ERR what\r\n".to_vec(),
        };
        let pieces = s.pieces;
        drop(s);
        crate::write_in_pieces(&mut out, &reply, pieces)?;
    }
}
