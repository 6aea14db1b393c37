//! IMAP IDLE ([RFC 2177]): one folder watched on a logged-in session until the server
//! announces a change or the refresh time passes.
//!
//! [RFC 2177]: https://www.rfc-editor.org/rfc/rfc2177

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{MailboxDatum, Response, Status};
use async_imap::types::UnsolicitedResponse;

use crate::connect::timed;
use crate::error::ImapError;
use crate::source::ImapSource;

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleEvent {
    /// The folder changed (`EXISTS`, `RECENT`, `EXPUNGE`, `FETCH`), or it already had mail
    /// the last listing did not see.
    Changed,
    /// The refresh time passed without news; `DONE` was answered, the session is alive.
    Refreshed,
}

impl ImapSource {
    /// Whether the server offers IDLE.
    ///
    /// # Errors
    /// When the server does not answer `CAPABILITY`.
    pub async fn can_idle(&mut self) -> Result<bool, ImapError> {
        Ok(self
            .capabilities()
            .await?
            .iter()
            .any(|c| c.eq_ignore_ascii_case("IDLE")))
    }

    /// Opens `folder` read-only and waits in IDLE until the server announces a change or
    /// `refresh` passes, then ends the IDLE with `DONE`. Returns at once with
    /// [`IdleEvent::Changed`] when the folder's UIDNEXT moved since it was last listed on
    /// this session (mail that came between the listing and the IDLE). The session is
    /// handed back for the next listing or wait.
    ///
    /// The stream's silence limit is `refresh` plus io-timeout while waiting; a dead
    /// connection shows when `DONE` goes unanswered.
    ///
    /// # Errors
    /// [`ImapError::Closed`] when the server ends the session (`BYE`, e.g. Outlook.com's
    /// `Session invalidated - AccessTokenExpired`, or EOF); timeouts and other session
    /// errors as usual. The session is gone then.
    pub async fn idle(
        mut self,
        folder: &str,
        refresh: Duration,
    ) -> Result<(Self, IdleEvent), ImapError> {
        let io = self.io_timeout;
        self.usable()?;
        let mailbox = self.examine(folder).await?;
        let unsolicited = self.session.unsolicited_responses.clone();
        while unsolicited.try_recv().is_ok() {}
        match self.listed_uidnext.get(folder) {
            Some(listed) if *listed == mailbox.uid_next => {}
            _ => return Ok((self, IdleEvent::Changed)),
        }
        let Self {
            session,
            io_timeout,
            announced,
            max_message,
            ended,
            replies,
            seen,
            limit,
            listed_uidnext,
            lazy,
        } = self;
        let mut handle = session.idle();
        timed("IDLE", io, handle.init()).await?;
        // What came between EXAMINE and the server's "+" went to the unsolicited queue.
        let mut event = None;
        while let Ok(r) = unsolicited.try_recv() {
            if matches!(
                r,
                UnsolicitedResponse::Exists(_)
                    | UnsolicitedResponse::Recent(_)
                    | UnsolicitedResponse::Expunge(_)
            ) {
                event = Some(IdleEvent::Changed);
            }
        }
        if event.is_none() {
            limit.set(refresh + io);
            let waited = tokio::time::timeout(refresh, async {
                let (wait, _stop) = handle.wait_with_timeout(refresh + io);
                wait.await
            })
            .await;
            limit.set(io);
            event = Some(match waited {
                Err(_) | Ok(Ok(IdleResponse::Timeout)) => IdleEvent::Refreshed,
                Ok(Ok(IdleResponse::NewData(data))) => match data.parsed() {
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => {
                        return Err(ImapError::Closed(
                            outcome
                                .information
                                .as_deref()
                                .map_or_else(String::new, crate::error::excerpt),
                        ));
                    }
                    Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
                    | Response::Expunge(_)
                    | Response::Fetch(..) => IdleEvent::Changed,
                    // Anything else: look, to be sure.
                    _ => IdleEvent::Changed,
                },
                // The stream ended: the server closed the connection.
                Ok(Ok(IdleResponse::ManualInterrupt)) => {
                    return Err(ImapError::Closed("the connection ended during IDLE".into()));
                }
                Ok(Err(e)) => return Err(e.into()),
            });
        }
        let session = timed("DONE", io, handle.done()).await?;
        let source = Self {
            session,
            io_timeout,
            announced,
            max_message,
            ended,
            replies,
            seen,
            limit,
            listed_uidnext,
            lazy,
        };
        Ok((source, event.unwrap_or(IdleEvent::Changed)))
    }
}
