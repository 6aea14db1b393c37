//! Destinations as the pipeline sees them: SMTP or the Gmail API, each with its way of
//! getting (and renewing) an OAuth2 token, its labels, its concurrency, and whether it can
//! tell if an interrupted delivery arrived after all.

use std::sync::Mutex;

use mailferry_config::{
    AccountConfig, Daemon, DestinationConfig, DestinationKind, GmailAuth, GmailConfig, GmailMode,
    OAuthSettings, SmtpAuth, SmtpConfig, SmtpSender,
};
use mailferry_core::{Classify, Destination, ErrorClass, Lookup, RawMessage, Receipt, Secret};
use mailferry_gmail::{
    AccessToken, Expected, Found, GmailDestination, GmailError, GmailOptions, Mode,
};
use mailferry_smtp::{Login, Sender, SmtpDestination, SmtpError, SmtpOptions};
use tracing::{info, warn};

use crate::build::read_token;
use crate::tokens::{TokenError, TokenKeeper, destination_owner};

/// How long Gmail's search may take to find a message it imported. A lookup of an attempt
/// younger than this that finds nothing is no answer: the attempt stays open and is looked
/// up again at a later run. Gmail indexes imports asynchronously, usually within seconds,
/// under load within minutes; ten minutes is also the shortest polling interval, so an
/// attempt left open by one run is decided by the next.
pub(crate) const INDEX_LAG: i64 = 10 * 60;

/// A failed delivery: the destination's error, or no token to log in with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error(transparent)]
    Gmail(#[from] GmailError),
    #[error("destination {destination:?}: {source}")]
    Token {
        destination: String,
        #[source]
        source: TokenError,
    },
}

impl Classify for DeliveryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Smtp(e) => e.class(),
            Self::Gmail(e) => e.class(),
            Self::Token { source, .. } => source.class(),
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Smtp(e) => e.hint(),
            Self::Gmail(e) => e.hint(),
            Self::Token { source, .. } => source.hint(),
        }
    }

    fn may_have_arrived(&self) -> bool {
        match self {
            Self::Smtp(e) => e.may_have_arrived(),
            Self::Gmail(e) => e.may_have_arrived(),
            Self::Token { .. } => false,
        }
    }
}

/// The Gmail client's view of a destination's tokens: the current one for every request.
/// Owns what it needs, so that its futures are `Send` for any lifetime.
struct GmailTokens<'k> {
    keeper: &'k TokenKeeper,
    destination: String,
    source: OwnedTokenSource,
}

enum OwnedTokenSource {
    Keeper {
        owner: String,
        settings: Box<OAuthSettings>,
    },
    File(std::path::PathBuf),
}

impl AccessToken for GmailTokens<'_> {
    fn get<'s>(
        &'s self,
        rejected: Option<&'s str>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, GmailError>> + 's>> {
        Box::pin(async move {
            match &self.source {
                OwnedTokenSource::Keeper { owner, settings } => {
                    let rejected = rejected.map(|r| Secret::new(r.to_owned()));
                    let got = match &rejected {
                        None => self.keeper.access_token(owner, settings).await,
                        Some(r) => self.keeper.after_rejection(owner, settings, r).await,
                    };
                    got.map(|t| t.expose().to_owned()).map_err(|e| {
                        let e = DeliveryError::Token {
                            destination: self.destination.clone(),
                            source: e,
                        };
                        GmailError::Token {
                            message: e.to_string(),
                            class: e.class(),
                            hint: e.hint(),
                        }
                    })
                }
                OwnedTokenSource::File(p) => {
                    read_token(p).map_err(|e| GmailError::Unauthorized(e.to_string()))
                }
            }
        })
    }
}

/// The pipeline's view: the one [`Destination`] trait, over the SMTP and Gmail adapters.
impl Destination for AnyDestination<'_> {
    type Error = DeliveryError;

    fn concurrency(&self) -> usize {
        AnyDestination::concurrency(self)
    }

    fn deliver(
        &self,
        message: &RawMessage,
        folder: &str,
    ) -> impl Future<Output = Result<Receipt, DeliveryError>> {
        AnyDestination::deliver(self, message, folder)
    }

    fn can_look_up(&self) -> bool {
        AnyDestination::can_look_up(self)
    }

    fn lookup(
        &self,
        message: &RawMessage,
        folder: &str,
        since: i64,
    ) -> impl Future<Output = Result<Lookup, DeliveryError>> {
        AnyDestination::lookup(self, message, folder, since)
    }

    fn close(&self) -> impl Future<Output = ()> {
        AnyDestination::close(self)
    }
}

/// Where an access token comes from.
enum TokenSource<'a> {
    Keeper {
        owner: String,
        settings: &'a OAuthSettings,
    },
    File(&'a std::path::Path),
}

enum Kind<'a> {
    Smtp {
        smtp: Box<SmtpDestination>,
        /// Owner, registration, and the token the current login uses.
        oauth: Option<(String, &'a OAuthSettings, Mutex<Secret>)>,
    },
    Gmail {
        gmail: Box<GmailDestination>,
        config: &'a GmailConfig,
        token: TokenSource<'a>,
        /// The key its pace is remembered under.
        mailbox: String,
    },
}

/// The destination switch: one account's destination for one run, whatever its kind,
/// behind the one [`Destination`] trait. A new kind is a variant of [`Kind`], its arm in
/// [`AnyDestination::new`], and one arm in each method that matches on `kind` (the
/// compiler lists them); the runs, `check` and the notices use this and never match on
/// the kind themselves.
pub(crate) struct AnyDestination<'a> {
    name: String,
    kind: Kind<'a>,
    tokens: &'a TokenKeeper,
    /// Gmail: labels for ordinary folders and for spam folders, resolved on first use.
    account: &'a AccountConfig,
}

impl<'a> AnyDestination<'a> {
    /// Builds `dest` for `account`'s run.
    pub(crate) async fn new(
        dest: &'a DestinationConfig,
        account: &'a AccountConfig,
        daemon: &Daemon,
        tokens: &'a TokenKeeper,
    ) -> Result<Self, DeliveryError> {
        let kind = match &dest.kind {
            DestinationKind::Smtp(s) => smtp(dest, s, daemon, tokens).await?,
            DestinationKind::Gmail(g) => gmail(dest, g, daemon, tokens).await?,
        };
        Ok(Self {
            name: dest.name.clone(),
            kind,
            tokens,
            account,
        })
    }

    /// How many deliveries may be in flight at once.
    pub(crate) fn concurrency(&self) -> usize {
        match &self.kind {
            Kind::Smtp { .. } => 1,
            Kind::Gmail { config, .. } => config.concurrency,
        }
    }

    fn token_error(&self, source: TokenError) -> DeliveryError {
        DeliveryError::Token {
            destination: self.name.clone(),
            source,
        }
    }

    /// Delivers `message` from `folder`; when the server refuses the OAuth2 token, renews
    /// it and tries once more.
    pub(crate) async fn deliver(
        &self,
        message: &RawMessage,
        folder: &str,
    ) -> Result<Receipt, DeliveryError> {
        match &self.kind {
            Kind::Smtp { smtp, oauth } => match smtp.deliver(message, folder).await {
                Err(e) if e.class() == ErrorClass::Auth => {
                    let Some((owner, settings, current)) = oauth else {
                        return Err(e.into());
                    };
                    info!(cause = %e, "the SMTP server refused the access token; refreshing it and trying once more");
                    let rejected = current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    let fresh = self
                        .tokens
                        .after_rejection(owner, settings, &rejected)
                        .await
                        .map_err(|e| self.token_error(e))?;
                    smtp.set_token(fresh.expose());
                    *current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                    Ok(smtp.deliver(message, folder).await?)
                }
                other => Ok(other?),
            },
            Kind::Gmail {
                gmail,
                config,
                token,
                ..
            } => {
                // Every request takes the current token: retries that outlast one use its
                // successor, and a 401 renews it (see `GmailDestination::call`).
                let tokens = self.gmail_tokens(token);
                let names = self.labels(config, folder);
                let imported = gmail.deliver_labelled(message, &names, &tokens).await?;
                Ok(Receipt { id: imported.id })
            }
        }
    }

    /// Label names for a message from `folder`: the destination's labels with `INBOX`
    /// replaced by `SPAM` for spam folders, then the account's own.
    fn labels(&self, config: &GmailConfig, folder: &str) -> Vec<String> {
        let spam = self.account.is_spam_folder(folder);
        let mut names: Vec<String> = config
            .labels
            .iter()
            .map(|l| {
                if spam && l == "INBOX" {
                    "SPAM".to_owned()
                } else {
                    l.clone()
                }
            })
            .collect();
        if spam && !names.iter().any(|l| l == "SPAM") {
            names.push("SPAM".into());
        }
        for l in &self.account.labels {
            if !names.contains(l) {
                names.push(l.clone());
            }
        }
        names
    }

    fn gmail_tokens(&self, source: &TokenSource<'_>) -> GmailTokens<'a> {
        GmailTokens {
            keeper: self.tokens,
            destination: self.name.clone(),
            source: match source {
                TokenSource::Keeper { owner, settings } => OwnedTokenSource::Keeper {
                    owner: owner.clone(),
                    settings: Box::new((*settings).clone()),
                },
                TokenSource::File(p) => OwnedTokenSource::File(p.to_path_buf()),
            },
        }
    }

    /// `mailferry check`'s walk through this destination, adding what it finds to `out`.
    pub(crate) async fn probe(
        &self,
        out: &mut Vec<crate::report::Finding>,
    ) -> Result<(), DeliveryError> {
        use crate::report::Finding;
        match &self.kind {
            Kind::Smtp { smtp, .. } => {
                let features = smtp.probe().await?;
                if let (mailferry_smtp::TlsMode::StartTls, host) = smtp.tls() {
                    out.push(Finding::ok(
                        "tls",
                        format!("STARTTLS done; the certificate is valid for {host}"),
                    ));
                }
                out.push(Finding::ok(
                    "login",
                    format!("session ready; {}", features.join(" ")),
                ));
                out.push(Finding::ok(
                    "envelope",
                    "MAIL FROM and RCPT TO accepted (taken back with RSET; nothing sent)".into(),
                ));
            }
            Kind::Gmail {
                gmail,
                config,
                token,
                ..
            } => {
                let tokens = self.gmail_tokens(token);
                let email = gmail.profile(&tokens).await?;
                out.push(Finding::ok(
                    "api",
                    format!("the Gmail API answers for {email}"),
                ));
                let have = gmail.label_names(&tokens).await?;
                let wanted: Vec<String> = self
                    .labels(config, "INBOX")
                    .into_iter()
                    .filter(|l| !have.iter().any(|h| h.eq_ignore_ascii_case(l)))
                    .collect();
                out.push(Finding::ok(
                    "labels",
                    if wanted.is_empty() {
                        format!("{} labels; every label to set exists", have.len())
                    } else {
                        format!(
                            "{} labels; created at the first import: {}",
                            have.len(),
                            wanted.join(", ")
                        )
                    },
                ));
            }
        }
        Ok(())
    }

    /// Whether this destination can tell if an unconfirmed delivery arrived.
    pub(crate) fn can_look_up(&self) -> bool {
        matches!(&self.kind, Kind::Gmail { config, .. } if config.exactly_once)
    }

    /// For an earlier attempt (begun at `since`) that was not confirmed: whether it
    /// arrived. Only the Gmail API can tell (by an exact Message-ID search); SMTP cannot,
    /// and a message without a Message-ID cannot be found, so those are sent again.
    pub(crate) async fn lookup(
        &self,
        message: &RawMessage,
        folder: &str,
        since: i64,
    ) -> Result<Lookup, DeliveryError> {
        let (
            Kind::Gmail {
                gmail,
                config,
                token,
                ..
            },
            Some(mid),
        ) = (&self.kind, message.message_id())
        else {
            return Ok(Lookup::Absent);
        };
        if !config.exactly_once {
            return Ok(Lookup::Absent);
        }
        let tokens = self.gmail_tokens(token);
        let label_ids = gmail
            .label_ids(&self.labels(config, folder), &tokens)
            .await?;
        let expected = Expected {
            message_id: &mid,
            size: message.len(),
            label_ids: &label_ids,
        };
        Ok(match gmail.lookup(&expected, &tokens).await? {
            Found::Copy(id) => Lookup::Found(id),
            Found::Nothing if mailferry_core::unix_now() - since < INDEX_LAG => Lookup::TooEarly,
            Found::Nothing => Lookup::Absent,
        })
    }

    pub(crate) async fn close(&self) {
        match &self.kind {
            Kind::Smtp { smtp, .. } => smtp.close().await,
            Kind::Gmail { gmail, mailbox, .. } => {
                if let Err(e) = self
                    .tokens
                    .store()
                    .save_gmail_rate(mailbox, gmail.rate())
                    .await
                {
                    warn!(cause = %e, "cannot remember the learned Gmail rate");
                }
            }
        }
    }
}

/// An SMTP destination, logged in with its password or a fresh OAuth2 token.
async fn smtp<'a>(
    dest: &DestinationConfig,
    s: &'a SmtpConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<Kind<'a>, DeliveryError> {
    let (login, oauth) = match &s.auth {
        SmtpAuth::None => (None, None),
        SmtpAuth::Password { username, password } => (
            Some(Login::Password {
                username: username.clone(),
                password: password.expose().to_owned(),
            }),
            None,
        ),
        SmtpAuth::OAuth2 { username, settings } => {
            let owner = destination_owner(&dest.name);
            let token = tokens
                .access_token(&owner, settings)
                .await
                .map_err(|source| DeliveryError::Token {
                    destination: dest.name.clone(),
                    source,
                })?;
            (
                Some(Login::OAuth2 {
                    username: username.clone(),
                    token: token.expose().to_owned(),
                }),
                Some((owner, settings, Mutex::new(token))),
            )
        }
    };
    let smtp = SmtpDestination::new(SmtpOptions {
        host: s.endpoint.host.clone(),
        port: s.endpoint.port,
        tls: s.endpoint.tls,
        ca_pem: s.endpoint.ca_pem.clone(),
        login,
        envelope_to: s.envelope_to.clone(),
        envelope_from: match &s.envelope_from {
            SmtpSender::FromMessage => Sender::FromMessage,
            SmtpSender::Null => Sender::Null,
            SmtpSender::Recipient => Sender::Recipient,
            SmtpSender::Fixed(a) => Sender::Address(a.clone()),
        },
        hello_name: s.hello_name.clone(),
        connect_timeout: daemon.connect_timeout,
        io_timeout: daemon.io_timeout,
    })?;
    Ok(Kind::Smtp {
        smtp: Box::new(smtp),
        oauth,
    })
}

/// A Gmail API destination, starting at the rate learned before.
async fn gmail<'a>(
    dest: &DestinationConfig,
    g: &'a GmailConfig,
    daemon: &Daemon,
    tokens: &TokenKeeper,
) -> Result<Kind<'a>, DeliveryError> {
    let mailbox = format!("{}#{}", g.api_url, dest.name);
    // The rate learned from Gmail's refusals, remembered across restarts.
    let start_rate = match tokens.store().gmail_rate(&mailbox).await {
        Ok(rate) => rate,
        Err(e) => {
            warn!(cause = %e, "cannot read the learned Gmail rate; starting at max-rate");
            None
        }
    };
    let gmail = GmailDestination::new(
        GmailOptions {
            base_url: g.api_url.clone(),
            mode: match g.mode {
                GmailMode::Import => Mode::Import,
                GmailMode::Insert => Mode::Insert,
            },
            internal_date_source: g.internal_date_source.clone(),
            never_mark_spam: g.never_mark_spam,
            process_for_calendar: g.process_for_calendar,
            max_rate: g.max_rate,
            start_rate,
            concurrency: g.concurrency,
            connect_timeout: daemon.connect_timeout,
            io_timeout: daemon.io_timeout,
        },
        &mailbox,
    )?;
    let token = match &g.auth {
        GmailAuth::OAuth2(settings) => TokenSource::Keeper {
            owner: destination_owner(&dest.name),
            settings,
        },
        GmailAuth::TokenFile(p) => TokenSource::File(p),
    };
    Ok(Kind::Gmail {
        gmail: Box::new(gmail),
        config: g,
        token,
        mailbox,
    })
}
