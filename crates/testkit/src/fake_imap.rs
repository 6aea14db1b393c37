//! A scriptable IMAP server for what Dovecot cannot be made to do on demand: a `BODY[]`
//! that is NIL, an unsolicited `FETCH (FLAGS ...)` (another client's flag change) in the
//! middle of a body fetch, a size that lies; and the providers' behaviours as public
//! reports show them ([`ImapScript::outlook`], [`ImapScript::yahoo`], [`ImapScript::gmx`]:
//! refusals, throttling, body-less answers, a UIDNEXT that goes backwards, a command
//! length limit, a `BYE` mid-fetch). Plain TCP on 127.0.0.1, one folder (INBOX), LOGIN
//! only, the commands mailferry's IMAP source sends.

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
    /// The greeting's text (after `* OK `); the default names no server.
    pub greeting: Option<String>,
    /// The capabilities, exactly; the default is `IMAP4rev1 AUTH=PLAIN UIDPLUS` (+ IDLE).
    pub capabilities: Option<String>,
    /// Commands answered with a refusal instead (first match wins).
    pub refusals: Vec<Refusal>,
    /// UIDs whose body fetch is answered `* n FETCH (UID n)`, no body, and `OK`.
    pub bodiless: Vec<u32>,
    /// UIDNEXT is reported this much lower than the truth.
    pub uidnext_behind: u32,
    /// Command lines longer than this get `BAD Command Error. 10`.
    pub max_command: Option<usize>,
    /// In the next body fetch, after this many bodies: `* BYE <text>`, and the
    /// connection closes. Taken once.
    pub bye_after: Option<(usize, String)>,
    /// UIDs flagged `\Seen` (the listing shows them; `UID STORE +FLAGS (\Seen)` adds).
    pub seen: Vec<u32>,
    /// Replies go out in pieces of this many bytes, this long apart (see
    /// `write_in_pieces`).
    pub pieces: Option<(usize, std::time::Duration)>,
}

/// Which commands a [`Refusal`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `LOGIN`.
    Login,
    /// `EXAMINE` and `SELECT`.
    Open,
    /// The listing: `UID FETCH ... (UID RFC822.SIZE ...)`.
    Listing,
    /// A body fetch: `UID FETCH ... (UID BODY.PEEK[]...)`.
    Body,
    /// `UID STORE`.
    Store,
}

/// A refusal the server gives instead of doing a command.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The command it answers.
    pub command: Command,
    /// Only when the command's UID set names one of these (empty: any).
    pub uids: Vec<u32>,
    /// Skip this many matching commands first.
    pub skip: u32,
    /// Answer this many matching commands so (`None`: every one).
    pub times: Option<u32>,
    /// The tagged reply after the tag: `NO ...` or `BAD ...`.
    pub reply: String,
    /// Close the connection after the reply (Exchange does after throttling).
    pub hang_up: bool,
}

impl Refusal {
    /// Every `command` refused with `reply`.
    #[must_use]
    pub fn always(command: Command, reply: &str) -> Self {
        Self {
            command,
            uids: Vec::new(),
            skip: 0,
            times: None,
            reply: reply.to_owned(),
            hang_up: false,
        }
    }

    /// The next `command` refused with `reply`, once.
    #[must_use]
    pub fn once(command: Command, reply: &str) -> Self {
        Self {
            times: Some(1),
            ..Self::always(command, reply)
        }
    }
}

impl ImapScript {
    /// Outlook.com (Exchange Online) as it greets and what it offers: exactly these
    /// capabilities, no OAUTHBEARER, no CONDSTORE (a session seen by the
    /// email-oauth2-proxy and imapsync reports). Its behaviours (DESIGN.md, "What servers
    /// actually send") are added per test: `NO`/`BAD Request is throttled. Suggested
    /// Backoff Time: N milliseconds` and a hang-up (emailengine, imapsync), `BAD User is
    /// authenticated but not connected.` (email-oauth2-proxy, MailKit), body-less FETCH
    /// answers for messages it cannot render yet (OfflineIMAP/offlineimap #62, MailKit
    /// #1615, postalsys/emailengine #53), `BAD Command Error. 10` past its MaxCommandSize
    /// of about 10 KB, `* BYE Session invalidated - AccessTokenExpired` (email-oauth2-proxy).
    #[must_use]
    pub fn outlook(messages: Vec<(u32, Vec<u8>)>) -> Self {
        Self {
            messages,
            greeting: Some("The Microsoft Exchange IMAP4 service is ready.".into()),
            capabilities: Some(
                "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
                    .into(),
            ),
            max_command: Some(10 * 1024),
            idle: true,
            ..Self::default()
        }
    }

    /// Yahoo: always `NO [UNAVAILABLE] UID FETCH Server error while fetching messages` to
    /// a fetch that names one of `refused` (MailKit #358, imapsync #119). Its refusal of a
    /// listing under load, `NO [UNAVAILABLE] UID FETCH Server error - Please try again
    /// later` (emailjs-imap-client #60), is added per test as a [`Refusal`].
    #[must_use]
    pub fn yahoo(messages: Vec<(u32, Vec<u8>)>, refused: &[u32]) -> Self {
        let mut s = Self {
            messages,
            greeting: Some("IMAP4rev1 server ready".into()),
            capabilities: Some("IMAP4rev1 ID MOVE NAMESPACE XYMHIGHESTMODSEQ UIDPLUS LITERAL+ CHILDREN X-MSG-EXT UNSELECT OBJECTID".into()),
            ..Self::default()
        };
        if !refused.is_empty() {
            s.refusals.push(Refusal {
                uids: refused.to_vec(),
                ..Refusal::always(
                    Command::Body,
                    "NO [UNAVAILABLE] UID FETCH Server error while fetching messages",
                )
            });
        }
        s
    }

    /// GMX: UIDNEXT reported below the truth without a UIDVALIDITY change (deltachat core
    /// #2188); set [`Self::uidnext_behind`] to make it so.
    #[must_use]
    pub fn gmx(messages: Vec<(u32, Vec<u8>)>) -> Self {
        Self {
            messages,
            greeting: Some("IMAP server ready".into()),
            capabilities: Some("IMAP4rev1 CHILDREN ENABLE ID IDLE LITERAL+ MOVE NAMESPACE SPECIAL-USE UIDPLUS UNSELECT AUTH=PLAIN".into()),
            ..Self::default()
        }
    }
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
    /// When each command arrived (same order).
    pub times: Vec<std::time::Instant>,
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

/// The refusal (if any) that answers `command` naming `uids`, counted as used.
fn refusal(script: &Mutex<ImapScript>, command: Command, uids: &[u32]) -> Option<Refusal> {
    let mut s = script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for r in &mut s.refusals {
        if r.command != command
            || (!r.uids.is_empty() && !uids.iter().any(|u| r.uids.contains(u)))
            || r.times == Some(0)
        {
            continue;
        }
        if r.skip > 0 {
            r.skip -= 1;
            continue;
        }
        if let Some(t) = &mut r.times {
            *t -= 1;
        }
        return Some(r.clone());
    }
    None
}

fn session(stream: TcpStream, script: &Mutex<ImapScript>, log: &Mutex<Log>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let first = script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let caps = first.capabilities.clone().unwrap_or_else(|| {
        if first.idle {
            "IMAP4rev1 AUTH=PLAIN UIDPLUS IDLE".to_owned()
        } else {
            "IMAP4rev1 AUTH=PLAIN UIDPLUS".to_owned()
        }
    });
    let greeting = first
        .greeting
        .clone()
        .unwrap_or_else(|| "fake IMAP ready".to_owned());
    out.write_all(format!("* OK [CAPABILITY {caps}] {greeting}\r\n").as_bytes())?;
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(tag), Some(cmd)) = (words.first(), words.get(1)) else {
            continue;
        };
        {
            let mut l = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            l.commands.push(line.trim_end().to_owned());
            l.times.push(std::time::Instant::now());
        }
        let s = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if s.max_command.is_some_and(|max| line.len() > max) {
            // Exchange past its MaxCommandSize.
            out.write_all(format!("{tag} BAD Command Error. 10\r\n").as_bytes())?;
            continue;
        }
        let uids: Vec<u32> = s.messages.iter().map(|(u, _)| *u).collect();
        let upper = cmd.to_ascii_uppercase();
        let is_uid = |w: &str| words.get(2).is_some_and(|x| x.eq_ignore_ascii_case(w));
        let set = words.get(3).copied().unwrap_or("");
        let items = words
            .get(4..)
            .map(|w| w.join(" "))
            .unwrap_or_default()
            .to_ascii_uppercase();
        let command = match upper.as_str() {
            "LOGIN" => Some(Command::Login),
            "EXAMINE" | "SELECT" => Some(Command::Open),
            "UID" if is_uid("FETCH") && items.contains("RFC822.SIZE") => Some(Command::Listing),
            "UID" if is_uid("FETCH") && items.contains("BODY.PEEK[]") => Some(Command::Body),
            "UID" if is_uid("STORE") => Some(Command::Store),
            _ => None,
        };
        let named = if matches!(
            command,
            Some(Command::Listing | Command::Body | Command::Store)
        ) {
            in_set(set, &uids)
        } else {
            Vec::new()
        };
        if let Some(r) = command.and_then(|c| refusal(script, c, &named)) {
            out.write_all(format!("{tag} {}\r\n", r.reply).as_bytes())?;
            if r.hang_up {
                return Ok(());
            }
            continue;
        }
        let mut reply: Vec<u8> = Vec::new();
        match upper.as_str() {
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
                    uids.iter().max().map_or(1, |m| m + 1).saturating_sub(s.uidnext_behind).max(1)
                )
                .as_bytes(),
            ),
            "LOGOUT" => {
                out.write_all(format!("* BYE bye\r\n{tag} OK done\r\n").as_bytes())?;
                return Ok(());
            }
            "UID" if is_uid("STORE") => {
                if items.contains("\\SEEN") {
                    let mut all = script
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for uid in &named {
                        if !all.seen.contains(uid) {
                            all.seen.push(*uid);
                        }
                    }
                }
            }
            "UID" if is_uid("EXPUNGE") || is_uid("MOVE") || is_uid("COPY") => {}
            "UID" if is_uid("FETCH") => {
                if s.listing_without_uid && items.contains("RFC822.SIZE") {
                    reply.extend_from_slice(b"* 1 FETCH (RFC822.SIZE 10)\r\n");
                }
                let mut bodies = 0usize;
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
                        let flags = if s.seen.contains(&uid) { "\\Seen" } else { "" };
                        reply.extend_from_slice(
                            format!(
                                "* {seq} FETCH (UID {uid} RFC822.SIZE {size} FLAGS ({flags}) INTERNALDATE \"01-Dec-2026 00:00:00 +0000\")\r\n"
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
                        if let Some((after, text)) = &s.bye_after
                            && bodies == *after
                        {
                            script
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .bye_after = None;
                            reply.extend_from_slice(format!("* BYE {text}\r\n").as_bytes());
                            out.write_all(&reply)?;
                            return Ok(());
                        }
                        bodies += 1;
                        body_reply(&s, seq, uid, body, &items, &mut reply);
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
        crate::write_in_pieces(&mut out, &reply, s.pieces)?;
    }
}

/// One message's answer to a body fetch, as the script says to give it.
fn body_reply(s: &ImapScript, seq: usize, uid: u32, body: &[u8], items: &str, reply: &mut Vec<u8>) {
    if s.unsolicited_flags {
        // As Dovecot sends them during a UID command: with the UID.
        reply.extend_from_slice(format!("* {seq} FETCH (UID {uid} FLAGS (\\Seen))\r\n").as_bytes());
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
    if s.bodiless.contains(&uid) {
        // Exchange, for a message it cannot render yet: the UID and nothing else.
        reply.extend_from_slice(format!("* {seq} FETCH (UID {uid})\r\n").as_bytes());
    } else if s.garbled.contains(&uid) {
        reply.extend_from_slice(
            format!("* {seq} FETCH (UID {uid} BODY[] %{{{}}}\r\n", body.len()).as_bytes(),
        );
        reply.extend_from_slice(body);
        reply.extend_from_slice(b")\r\n");
    } else if s.nil_body.contains(&uid) {
        reply.extend_from_slice(format!("* {seq} FETCH (UID {uid} BODY[] NIL)\r\n").as_bytes());
    } else {
        reply.extend_from_slice(
            format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len()).as_bytes(),
        );
        reply.extend_from_slice(body);
        reply.extend_from_slice(b")\r\n");
    }
}
