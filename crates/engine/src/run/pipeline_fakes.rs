//! The fakes of the pipeline's tests (`pipeline_tests.rs`, `lazy.rs`): a source and a
//! destination in process, and a real ledger (SQLite in a temporary directory).

use std::sync::{Arc, Mutex};

use mailferry_core::{
    Classify, Destination, ErrorClass, FetchFailure, Fetched, FolderState, LazyReads,
    ListedMessage, Lookup, MessageKey, RawMessage, Receipt, Source, SourceAction,
};
use mailferry_store::{LedgerKey, LedgerState, Store};
use tokio_util::sync::CancellationToken;

use super::{Run, RunOptions, gather_all};
use crate::report::AccountReport;

#[derive(Debug, thiserror::Error)]
#[error("fake: {what}")]
pub(super) struct FakeError {
    what: String,
    class: ErrorClass,
    arrived: bool,
}

impl Classify for FakeError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn may_have_arrived(&self) -> bool {
        self.arrived
    }
}

/// A folder of messages under one UIDVALIDITY; `broken` UIDs are not handed out.
pub(super) struct FakeSource {
    pub(super) uidvalidity: u32,
    pub(super) messages: Vec<(u32, Vec<u8>)>,
    pub(super) broken: Vec<u32>,
    /// Lazy reads for the run to turn on and off, with what each fetch found them.
    pub(super) lazy: Option<(LazyReads, Arc<Mutex<Vec<bool>>>)>,
}

impl Source for FakeSource {
    type Error = FakeError;

    async fn open(&mut self, _folder: &str) -> Result<FolderState, FakeError> {
        Ok(FolderState {
            uidvalidity: self.uidvalidity,
            messages: self
                .messages
                .iter()
                .map(|(u, m)| ListedMessage {
                    key: MessageKey::Uid(*u),
                    size: m.len() as u64,
                    received: None,
                })
                .collect(),
            uidnext: None,
            complete: true,
        })
    }

    fn lazy_reads(&self) -> Option<LazyReads> {
        self.lazy.as_ref().map(|(lazy, _)| lazy.clone())
    }

    async fn fetch(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, Fetched)>, FakeError> {
        if let Some((lazy, seen)) = &self.lazy {
            seen.lock().expect("lock").push(lazy.is_on());
        }
        Ok(keys
            .iter()
            .filter_map(|k| {
                let MessageKey::Uid(u) = k else { return None };
                let (_, m) = self.messages.iter().find(|(x, _)| x == u)?;
                let got = if self.broken.contains(u) {
                    Err(FetchFailure::temporary("NIL body"))
                } else {
                    Ok(RawMessage::new(m.clone()))
                };
                Some((k.clone(), got))
            })
            .collect())
    }

    async fn settle(
        &mut self,
        _: &str,
        _: u32,
        _: &[MessageKey],
        _: &SourceAction,
    ) -> Result<(), FakeError> {
        Ok(())
    }

    async fn close(self) -> Result<(), FakeError> {
        Ok(())
    }
}

/// Keeps what it is given; answers by a marker in the message: `X-Fake: defer`,
/// `refuse`, `unconfirmed` (stored, then an error that may mean it arrived), `down` (the
/// destination fails, nothing stored).
#[derive(Default)]
pub(super) struct FakeDestination {
    pub(super) held: Mutex<Vec<Vec<u8>>>,
    pub(super) looks_up: bool,
    /// What `lookup` says when the message is not held (Absent or TooEarly).
    pub(super) missing: Option<Lookup>,
    /// One delivery at a time (as SMTP): each is recorded by the deliverer, with the
    /// next message's attempt.
    pub(super) one_at_a_time: bool,
    /// Each delivery waits this many times for `peer` to answer (an SMTP session's round
    /// trips: the run is woken from outside, as by a socket).
    pub(super) steps: u32,
    pub(super) peer: Option<Peer>,
    /// The source's lazy reads, with what each delivery found them.
    pub(super) lazy: Option<(LazyReads, Mutex<Vec<bool>>)>,
}

/// A server for [`FakeDestination::peer`]: answers each step a millisecond later, from
/// another thread (as a socket wakes the run).
pub(super) fn peer_answering_later() -> Peer {
    let (peer, mut asks) =
        tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
    std::thread::spawn(move || {
        while let Some(answer) = asks.blocking_recv() {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let _ = answer.send(());
        }
    });
    peer
}

/// Where a [`FakeDestination`] asks its server to answer a step.
pub(super) type Peer = tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>;

impl FakeDestination {
    pub(super) fn held(&self) -> Vec<Vec<u8>> {
        self.held.lock().expect("lock").clone()
    }
}

pub(super) fn err(what: &str, class: ErrorClass, arrived: bool) -> FakeError {
    FakeError {
        what: what.into(),
        class,
        arrived,
    }
}

impl Destination for FakeDestination {
    type Error = FakeError;

    fn concurrency(&self) -> usize {
        if self.one_at_a_time { 1 } else { 2 }
    }

    async fn deliver(&self, message: &RawMessage, _folder: &str) -> Result<Receipt, FakeError> {
        if let Some((lazy, seen)) = &self.lazy {
            seen.lock().expect("lock").push(lazy.is_on());
        }
        for _ in 0..self.steps {
            let (answer, answered) = tokio::sync::oneshot::channel();
            if let Some(peer) = &self.peer {
                peer.send(answer).expect("peer");
            }
            answered.await.expect("answered");
        }
        let text = String::from_utf8_lossy(message.as_bytes()).into_owned();
        if text.contains("X-Fake: defer") {
            return Err(err("451 later", ErrorClass::Deferred, false));
        }
        if text.contains("X-Fake: refuse") {
            return Err(err("550 no", ErrorClass::Refused, false));
        }
        if text.contains("X-Fake: down") {
            return Err(err("connection refused", ErrorClass::Transient, false));
        }
        self.held
            .lock()
            .expect("lock")
            .push(message.as_bytes().to_vec());
        if text.contains("X-Fake: unconfirmed") {
            return Err(err("500 after the upload", ErrorClass::Transient, true));
        }
        Ok(Receipt { id: "ok".into() })
    }

    fn can_look_up(&self) -> bool {
        self.looks_up
    }

    async fn lookup(&self, message: &RawMessage, _: &str, _: i64) -> Result<Lookup, FakeError> {
        if self.held().iter().any(|m| m == message.as_bytes()) {
            return Ok(Lookup::Found("found".into()));
        }
        Ok(self.missing.clone().unwrap_or(Lookup::Absent))
    }
}

pub(super) fn message(n: u32, marker: &str) -> Vec<u8> {
    let extra = if marker.is_empty() {
        String::new()
    } else {
        format!("X-Fake: {marker}\r\n")
    };
    format!("Message-ID: <m{n}@x>\r\nSubject: {n}\r\n{extra}\r\nbody {n}\r\n").into_bytes()
}

pub(super) struct Bench {
    pub(super) _dir: tempfile::TempDir,
    pub(super) store: Store,
    pub(super) config: mailferry_config::Config,
}

pub(super) async fn bench() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p"), "pw").expect("pass");
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        "[daemon]\nstate-dir = \"state\"\n[[destination]]\nname = \"home\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\ntls = \"none\"\nenvelope-to = [\"me@home.example\"]\n[[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\nauth = { method = \"password\", password-file = \"p\" }\ndestination = \"home\"\n",
    )
    .expect("config");
    let config = mailferry_config::load(&path).expect("valid");
    let store = Store::open(&dir.path().join("state")).await.expect("store");
    Bench {
        _dir: dir,
        store,
        config,
    }
}

impl Bench {
    pub(super) async fn run(&self, source: FakeSource, dest: &FakeDestination) -> AccountReport {
        self.run_polled(source, dest).await.0
    }

    /// [`Self::run`], and how many times the run was polled.
    pub(super) async fn run_polled(
        &self,
        source: FakeSource,
        dest: &FakeDestination,
    ) -> (AccountReport, u32) {
        let cancel = CancellationToken::new();
        let opts = RunOptions::default();
        let run = Run {
            until: None,
            account: &self.config.accounts[0],
            max_message: 1 << 20,
            store: &self.store,
            destination: dest,
            destination_name: "home",
            opts: &opts,
            observer: &(),
            cancel: &cancel,
        };
        let mut report = AccountReport::default();
        let mut polls = 0;
        let result = {
            let mut gather = std::pin::pin!(gather_all(&run, source, &mut report));
            std::future::poll_fn(|cx| {
                polls += 1;
                gather.as_mut().poll(cx)
            })
            .await
        };
        if let Err(e) = result {
            report.error = Some(e.report());
        }
        (report, polls)
    }

    pub(super) async fn states(&self) -> Vec<(u32, LedgerState)> {
        let mut out = Vec::new();
        for uid in 1..=9 {
            let key = key(7, uid);
            if let Some(s) = self.store.state_of(&key).await.expect("state") {
                out.push((uid, s));
            }
        }
        out
    }
}

pub(super) fn key(uidvalidity: u32, uid: u32) -> LedgerKey {
    LedgerKey {
        account: "a".into(),
        folder: "INBOX".into(),
        uidvalidity,
        key: MessageKey::Uid(uid),
    }
}

pub(super) fn source(messages: Vec<(u32, Vec<u8>)>) -> FakeSource {
    FakeSource {
        uidvalidity: 7,
        messages,
        broken: Vec::new(),
        lazy: None,
    }
}
