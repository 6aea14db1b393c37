//! One message's transaction on an open session: the envelope (command by command, or
//! pipelined where the server offers it), the message data, the reply.

use lettre::Address;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use mailferry_core::{RawMessage, Receipt};
use tokio::io::AsyncWriteExt as _;
use tracing::debug;

use super::{Session, SmtpDestination};
use crate::error::{EnvelopeCause, SmtpError, SmtpStep, within};
use crate::replies::{envelope_reply, reply};
use crate::wire::write_data;

impl SmtpDestination {
    pub(super) async fn transaction(
        &self,
        session: &mut Session,
        message: &RawMessage,
    ) -> Result<Receipt, SmtpError> {
        let (from, params, own_sender) = self.envelope(session, message);
        if session.pipelining {
            self.pipelined(session, Mail::new(from, params), own_sender)
                .await?;
        } else {
            self.one_by_one(session, Mail::new(from, params), own_sender)
                .await?;
        }
        // No total limit for the data: the stream fails after io-timeout of silence. The
        // data goes straight to the stream, the reply is read by lettre.
        write_data(&mut session.wire, message.as_bytes())
            .await
            .map_err(|source| SmtpError::Stream {
                step: SmtpStep::MessageData,
                source,
            })?;
        let response = reply(SmtpStep::MessageData, session.conn.read_response().await)?;
        let text = response.message().collect::<Vec<_>>().join(" ");
        Ok(Receipt {
            id: format!("{} {text}", response.code()),
        })
    }

    /// The envelope sender, `MAIL FROM` parameters, and whether the sender is the
    /// message's own.
    fn envelope(
        &self,
        session: &Session,
        message: &RawMessage,
    ) -> (Option<Address>, Vec<MailParameter>, bool) {
        let conn = &session.conn;
        let ascii = |a: &Address| <Address as AsRef<str>>::as_ref(a).is_ascii();
        let smtputf8 = conn.server_info().supports_feature(Extension::SmtpUtfEight);
        let from = match &self.from {
            Some(fixed) => fixed.clone(),
            None => match message
                .envelope_sender()
                .and_then(|a| a.parse::<Address>().ok())
            {
                // Without SMTPUTF8 the server cannot take a UTF-8 sender: the null sender
                // instead (the message itself travels unchanged).
                Some(a) if !ascii(&a) && !smtputf8 => {
                    debug!(
                        "the message's sender is not ASCII and the server has no SMTPUTF8: MAIL FROM:<>"
                    );
                    None
                }
                other => other,
            },
        };
        let mut params = Vec::new();
        if session.size {
            params.push(MailParameter::Size(message.len()));
        }
        if !message.as_bytes().is_ascii()
            && conn.server_info().supports_feature(Extension::EightBitMime)
        {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let utf8 = from.as_ref().is_some_and(|a| !ascii(a)) || self.to.iter().any(|a| !ascii(a));
        if utf8 && smtputf8 {
            params.push(MailParameter::SmtpUtfEight);
        }
        // A sender taken from the message is the message's: its refusal is about this
        // message (a forged domain, SPF), not about the destination.
        let own_sender = self.from.is_none() && from.is_some();
        (from, params, own_sender)
    }

    /// `MAIL`, each `RCPT`, `DATA`: one command, one reply at a time.
    async fn one_by_one(
        &self,
        session: &mut Session,
        mail: Mail,
        own_sender: bool,
    ) -> Result<(), SmtpError> {
        let conn = &mut session.conn;
        self.offer_envelope(conn, mail, self.sender_cause, own_sender)
            .await?;
        data_reply(within(SmtpStep::Data, self.opts.io_timeout, conn.command(Data)).await?)
    }

    /// `MAIL`, then `RCPT` for each recipient, one reply at a time; the first refusal ends
    /// it (`cause`: whose the sender is, for the hint). A delivery goes on with `DATA`,
    /// `check`'s probe takes it back with `RSET`.
    pub(super) async fn offer_envelope(
        &self,
        conn: &mut AsyncSmtpConnection,
        mail: Mail,
        cause: EnvelopeCause,
        own_sender: bool,
    ) -> Result<(), SmtpError> {
        let io = self.opts.io_timeout;
        envelope_reply(
            SmtpStep::Mail,
            cause,
            own_sender,
            within(SmtpStep::Mail, io, conn.command(mail)).await?,
        )?;
        for to in &self.to {
            envelope_reply(
                SmtpStep::Rcpt,
                EnvelopeCause::Recipient,
                own_sender,
                within(
                    SmtpStep::Rcpt,
                    io,
                    conn.command(Rcpt::new(to.clone(), Vec::new())),
                )
                .await?,
            )?;
        }
        Ok(())
    }

    /// `MAIL`, each `RCPT` and `DATA` written at once, then their replies read in order
    /// (RFC 2920): two round trips a message instead of four. Every reply is read whatever
    /// the ones before said, so the session stays in step; the first refusal is the one
    /// reported. A server that accepts `DATA` after refusing the envelope waits for the
    /// message: it gets none, the connection is dropped without the terminator, and so
    /// nothing is delivered (RFC 2920's "a single dot" would deliver an empty message to
    /// any recipient it did accept).
    async fn pipelined(
        &self,
        session: &mut Session,
        mail: Mail,
        own_sender: bool,
    ) -> Result<(), SmtpError> {
        let io = self.opts.io_timeout;
        let mut group = mail.to_string();
        for to in &self.to {
            group.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
        }
        group.push_str(&Data.to_string());
        let wire = &mut session.wire;
        within(SmtpStep::Mail, io, async {
            wire.write_all(group.as_bytes()).await?;
            wire.flush().await
        })
        .await?
        .map_err(|source| SmtpError::Stream {
            step: SmtpStep::Mail,
            source,
        })?;
        let conn = &mut session.conn;
        let mut refused = None;
        let mail = within(SmtpStep::Mail, io, conn.read_response()).await?;
        match envelope_reply(SmtpStep::Mail, self.sender_cause, own_sender, mail) {
            Ok(_) => {}
            Err(e @ SmtpError::Session { .. }) => return Err(e),
            Err(e) => refused = Some(e),
        }
        for _ in &self.to {
            let rcpt = within(SmtpStep::Rcpt, io, conn.read_response()).await?;
            match envelope_reply(SmtpStep::Rcpt, EnvelopeCause::Recipient, own_sender, rcpt) {
                Ok(_) => {}
                Err(e @ SmtpError::Session { .. }) => return Err(e),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        let data = data_reply(within(SmtpStep::Data, io, conn.read_response()).await?);
        match (refused, data) {
            (None, data) => data,
            (Some(e), Ok(())) => {
                session.broken = true;
                Err(e)
            }
            (Some(e), Err(_)) => Err(e),
        }
    }
}

/// What the reply to `DATA` means. A 5xx comes before the message: a policy that may
/// answer every message alike (Exim `acl_smtp_predata`).
fn data_reply(
    r: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Result<(), SmtpError> {
    reply(SmtpStep::Data, r).map(|_| ()).map_err(|e| match e {
        SmtpError::Refused { reply } => SmtpError::Doubtful {
            step: SmtpStep::Data,
            reply,
        },
        e => e,
    })
}
