//! The source switch: every source adapter behind one [`Source`], picked by the account's
//! `protocol` in one place. A new protocol is a variant here, its arm in
//! [`AnySource::open`], and one arm in each method below (the compiler lists them); the
//! runs and `check` use the switch and never match on the protocol themselves.

use mailferry_config::{AccountConfig, Daemon, Protocol};
use mailferry_core::{
    Classify, ErrorClass, FolderState, ListFrom, MessageKey, RawMessage, Source, SourceAction,
};
use mailferry_imap::{ImapError, ImapSource};
use mailferry_pop3::{Pop3Error, Pop3Source};

use crate::build;
use crate::report::Stop;
use crate::tokens::TokenKeeper;

/// One logged-in session with the account's server, whatever its protocol.
pub(crate) enum AnySource {
    Imap(ImapSource),
    Pop3(Pop3Source),
}

/// The error of whichever adapter runs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
}

impl AnySource {
    /// Connects and logs in to `account`'s server with its protocol.
    pub(crate) async fn open(
        account: &AccountConfig,
        daemon: &Daemon,
        tokens: &TokenKeeper,
    ) -> Result<Self, Stop> {
        Ok(match account.protocol {
            Protocol::Imap => Self::Imap(build::connect(account, daemon, tokens).await?),
            Protocol::Pop3 => Self::Pop3(build::connect(account, daemon, tokens).await?),
        })
    }

    /// What `check` shows of the server: the capabilities that matter to mailferry.
    pub(crate) async fn notable_capabilities(&mut self) -> Vec<String> {
        match self {
            Self::Imap(s) => s
                .capabilities()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|c| {
                    c.starts_with("AUTH=")
                        || matches!(
                            c.as_str(),
                            "IDLE" | "UIDPLUS" | "MOVE" | "SPECIAL-USE" | "CONDSTORE"
                        )
                })
                .collect(),
            Self::Pop3(s) => s.capabilities().to_vec(),
        }
    }
}

/// A protocol's name as providers' settings pages call it ("turn IMAP access on").
pub(crate) fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Imap => "IMAP",
        Protocol::Pop3 => "POP",
    }
}

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Imap(e) => e.class(),
            Self::Pop3(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Imap(e) => e.hint(),
            Self::Pop3(e) => e.hint(),
        }
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            Self::Imap(e) => e.may_have_arrived(),
            Self::Pop3(e) => e.may_have_arrived(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Imap(e) => e.retry_after(),
            Self::Pop3(e) => e.retry_after(),
        }
    }
}

/// Calls the same method on whichever adapter runs, its error made a [`SourceError`].
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnySource::Imap($s) => $call.await.map_err(SourceError::from),
            AnySource::Pop3($s) => $call.await.map_err(SourceError::from),
        }
    };
}

impl Source for AnySource {
    type Error = SourceError;

    async fn open(&mut self, folder: &str) -> Result<FolderState, SourceError> {
        each!(self, s => s.open(folder))
    }

    async fn open_from(
        &mut self,
        folder: &str,
        from: &ListFrom,
    ) -> Result<FolderState, SourceError> {
        each!(self, s => s.open_from(folder, from))
    }

    async fn fetch(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, mailferry_core::Fetched)>, SourceError> {
        each!(self, s => s.fetch(keys))
    }

    async fn settle(
        &mut self,
        folder: &str,
        uidvalidity: u32,
        keys: &[MessageKey],
        action: &SourceAction,
    ) -> Result<(), SourceError> {
        each!(self, s => s.settle(folder, uidvalidity, keys, action))
    }

    async fn check_settle(&mut self, action: &SourceAction) -> Result<(), SourceError> {
        each!(self, s => s.check_settle(action))
    }

    async fn headers(
        &mut self,
        keys: &[MessageKey],
    ) -> Result<Vec<(MessageKey, RawMessage)>, SourceError> {
        each!(self, s => s.headers(keys))
    }

    fn memo(&self) -> Option<String> {
        match self {
            Self::Imap(s) => s.memo(),
            Self::Pop3(s) => s.memo(),
        }
    }

    fn lazy_reads(&self) -> Option<mailferry_core::LazyReads> {
        match self {
            Self::Imap(s) => s.lazy_reads(),
            Self::Pop3(s) => s.lazy_reads(),
        }
    }

    async fn close(self) -> Result<(), SourceError> {
        each!(self, s => s.close())
    }
}
