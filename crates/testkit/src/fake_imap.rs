//! A scriptable IMAP server for what Dovecot cannot be made to do on demand: a `BODY[]`
//! that is NIL, an unsolicited `FETCH (FLAGS ...)` (another client's flag change) in the
//! middle of a body fetch, a size that lies. Plain TCP on 127.0.0.1, one folder (INBOX),
//! LOGIN only, the commands mailferry's IMAP source sends.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server does; change it between sessions through [`FakeImap::script`].
#[derive(Debug, Clone, Default)]
pub struct ImapScript {
    /// INBOX: (UID, message), in order.
    pub messages: Vec<(u32, Vec<u8>)>,
    /// UIDs whose `BODY[]` is sent as NIL.
    pub nil_body: Vec<u32>,
    /// Before each body, an unsolicited `FETCH (UID n FLAGS (\Seen))` (no body).
    pub unsolicited_flags: bool,
    /// Sizes announced in the listing instead of the real ones: (UID, size).
    pub announced: Vec<(u32, u64)>,
    /// A listing line without UID (`* 1 FETCH (RFC822.SIZE 10)`) before the others.
    pub listing_without_uid: bool,
    /// UIDs whose `BODY[]` is announced with a syntax no parser knows (`%{n}`), the body
    /// following: the client cannot read the reply, and must not quote it.
    pub garbled: Vec<u32>,
    /// Offer IDLE (`CAPABILITY ... IDLE`); an IDLE ends at the client's `DONE`...
    pub idle: bool,
    /// ...or, 300 ms in, with `* BYE <this>` and a closed connection (Outlook.com's
    /// `Session invalidated - AccessTokenExpired`)...
    pub idle_bye: Option<String>,
    /// ...or never: the server goes silent without closing (a connection dropped
    /// somewhere on the way, no FIN).
    pub idle_silent: bool,
}

/// The server; its thread ends with the test process.
#[derive(Debug)]
pub struct FakeImap {
    /// The port it listens on.
    pub port: u16,
    script: Arc<Mutex<ImapScript>>,
    log: Arc<Mutex<Log>>,
}

/// What the server received and sent.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Every command line (LOGIN's password included: test data only).
    pub commands: Vec<String>,
    /// Bytes sent to clients.
    pub bytes_sent: u64,
}

impl FakeImap {
    /// Starts serving `script`.
    #[must_use]
    pub fn start(script: ImapScript) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = Arc::new(Mutex::new(script));
        let log = Arc::new(Mutex::new(Log::default()));
        let (s, l) = (Arc::clone(&script), Arc::clone(&log));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, l) = (Arc::clone(&s), Arc::clone(&l));
                std::thread::spawn(move || {
                    let _ = session(stream, &s, &l);
                });
            }
        });
        Self { port, script, log }
    }

    /// What the server received and sent so far.
    #[must_use]
    pub fn log(&self) -> Log {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes what the server does from the next command on.
    pub fn script(&self, change: impl FnOnce(&mut ImapScript)) {
        change(
            &mut self
                .script
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

/// The UIDs of a sequence set (`1:3,7`, `5:*`) among `uids`.
fn in_set(set: &str, uids: &[u32]) -> Vec<u32> {
    let max = uids.iter().copied().max().unwrap_or(0);
    let mut out = Vec::new();
    for part in set.split(',') {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let num = |x: &str| {
            if x == "*" {
                max
            } else {
                x.parse().unwrap_or(0)
            }
        };
        let (lo, hi) = (num(a).min(num(b)), num(a).max(num(b)));
        out.extend(uids.iter().copied().filter(|u| (lo..=hi).contains(u)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn session(stream: TcpStream, script: &Mutex<ImapScript>, log: &Mutex<Log>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let idle = script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .idle;
    let caps = if idle {
        "IMAP4rev1 AUTH=PLAIN UIDPLUS IDLE"
    } else {
        "IMAP4rev1 AUTH=PLAIN UIDPLUS"
    };
    out.write_all(format!("* OK [CAPABILITY {caps}] fake IMAP ready\r\n").as_bytes())?;
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(tag), Some(cmd)) = (words.first(), words.get(1)) else {
            continue;
        };
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .commands
            .push(line.trim_end().to_owned());
        let s = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let uids: Vec<u32> = s.messages.iter().map(|(u, _)| *u).collect();
        let mut reply: Vec<u8> = Vec::new();
        match cmd.to_ascii_uppercase().as_str() {
            "CAPABILITY" => reply.extend_from_slice(format!("* CAPABILITY {caps}\r\n").as_bytes()),
            "IDLE" if s.idle => {
                out.write_all(b"+ idling\r\n")?;
                if let Some(text) = &s.idle_bye {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    out.write_all(format!("* BYE {text}\r\n").as_bytes())?;
                    return Ok(());
                }
                let mut done = String::new();
                if s.idle_silent {
                    // Read whatever comes, answer nothing, never close.
                    while lines.read_line(&mut done)? > 0 {
                        done.clear();
                    }
                    return Ok(());
                }
                if lines.read_line(&mut done)? == 0 {
                    return Ok(());
                }
            }
            "LOGIN" | "NOOP" | "CLOSE" => {}
            "EXAMINE" | "SELECT" => reply.extend_from_slice(
                format!(
                    "* {} EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Deleted)\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {}] ok\r\n",
                    s.messages.len(),
                    uids.iter().max().map_or(1, |m| m + 1)
                )
                .as_bytes(),
            ),
            "LOGOUT" => {
                out.write_all(format!("* BYE bye\r\n{tag} OK done\r\n").as_bytes())?;
                return Ok(());
            }
            "UID" if words.get(2).is_some_and(|w| w.eq_ignore_ascii_case("FETCH")) => {
                let set = words.get(3).copied().unwrap_or("");
                let items = words[4..].join(" ").to_ascii_uppercase();
                if s.listing_without_uid && items.contains("RFC822.SIZE") {
                    reply.extend_from_slice(b"* 1 FETCH (RFC822.SIZE 10)\r\n");
                }
                for uid in in_set(set, &uids) {
                    let Some(seq) = s.messages.iter().position(|(u, _)| *u == uid) else {
                        continue;
                    };
                    let seq = seq + 1;
                    let body = &s.messages[seq - 1].1;
                    if items.contains("RFC822.SIZE") {
                        let size = s
                            .announced
                            .iter()
                            .find(|(u, _)| *u == uid)
                            .map_or(body.len() as u64, |(_, n)| *n);
                        reply.extend_from_slice(
                            format!(
                                "* {seq} FETCH (UID {uid} RFC822.SIZE {size} INTERNALDATE \"01-Dec-2026 00:00:00 +0000\")\r\n"
                            )
                            .as_bytes(),
                        );
                    } else if items.contains("BODY.PEEK[HEADER]") {
                        let end = body
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(body.len(), |p| p + 4);
                        reply.extend_from_slice(
                            format!("* {seq} FETCH (UID {uid} BODY[HEADER] {{{end}}}\r\n").as_bytes(),
                        );
                        reply.extend_from_slice(&body[..end]);
                        reply.extend_from_slice(b")\r\n");
                    } else {
                        if s.unsolicited_flags {
                            // As Dovecot sends them during a UID command: with the UID.
                            reply.extend_from_slice(
                                format!("* {seq} FETCH (UID {uid} FLAGS (\\Seen))\r\n").as_bytes(),
                            );
                        }
                        // A partial fetch, BODY.PEEK[]<0.N>: at most N bytes, as servers do.
                        let body: &[u8] = match items
                            .split_once("BODY.PEEK[]<0.")
                            .and_then(|(_, rest)| rest.split('>').next())
                            .and_then(|n| n.parse::<usize>().ok())
                        {
                            Some(n) if n < body.len() => &body[..n],
                            _ => body,
                        };
                        if s.garbled.contains(&uid) {
                            reply.extend_from_slice(
                                format!("* {seq} FETCH (UID {uid} BODY[] %{{{}}}\r\n", body.len())
                                    .as_bytes(),
                            );
                            reply.extend_from_slice(body);
                            reply.extend_from_slice(b")\r\n");
                        } else if s.nil_body.contains(&uid) {
                            reply.extend_from_slice(
                                format!("* {seq} FETCH (UID {uid} BODY[] NIL)\r\n").as_bytes(),
                            );
                        } else {
                            reply.extend_from_slice(
                                format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len())
                                    .as_bytes(),
                            );
                            reply.extend_from_slice(body);
                            reply.extend_from_slice(b")\r\n");
                        }
                    }
                }
            }
            _ => {
                out.write_all(format!("{tag} BAD unknown command\r\n").as_bytes())?;
                continue;
            }
        }
        reply.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bytes_sent += reply.len() as u64;
        out.write_all(&reply)?;
    }
}
