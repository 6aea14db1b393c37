//! `mailferry auth NAME`: sign in once, interactively, and store the tokens.

use std::process::ExitCode;

use anyhow::bail;
use mailferry_config::{Config, OAuthSettings, SignInFlow, SourceAuth};
use mailferry_engine::tokens::{self, TokenKeeper};
use mailferry_oauth::{BrowserSignIn, TokenSet};

/// How the user asked to sign in.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub paste: bool,
    pub browser: bool,
    pub device: bool,
}

/// The account or destination called `name`, if it signs in with OAuth2: its owner key,
/// registration and login name.
fn target<'a>(
    config: &'a Config,
    name: &str,
) -> anyhow::Result<(String, &'a OAuthSettings, &'a str)> {
    let account = config.account(name);
    let destination = config.destination(name);
    let from_account = account.and_then(|a| match &a.auth {
        SourceAuth::OAuth2(s) => Some((tokens::account_owner(name), s, a.username.as_str())),
        _ => None,
    });
    let from_destination = destination.and_then(|d| {
        d.oauth().map(|(settings, username)| {
            (
                tokens::destination_owner(name),
                settings,
                username.unwrap_or("your mailbox"),
            )
        })
    });
    match (from_account, from_destination) {
        (Some(_), Some(_)) => bail!(
            "{name:?} is both an account and a destination signing in with OAuth2; rename one of them"
        ),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) if account.is_some() || destination.is_some() => bail!(
            "{name:?} does not sign in with OAuth2; set auth = {{ method = \"oauth2\", client-id = \"...\" }} for it (README: \"Outlook.com, Hotmail, Live, MSN (OAuth2)\")"
        ),
        (None, None) => {
            let known: Vec<String> = tokens::oauth_owners(config)
                .into_iter()
                .filter_map(|(o, _)| o.split_once(':').map(|(_, n)| n.to_owned()))
                .collect();
            bail!(
                "no account or destination is named {name:?}; those signing in with OAuth2: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

pub async fn run(config: &Config, name: &str, flags: Flags) -> anyhow::Result<ExitCode> {
    let (owner, settings, username) = target(config, name)?;
    let store = crate::state::open_shared(config).await?;
    let keeper = TokenKeeper::new(store.clone(), config.daemon.io_timeout)?;
    let provider = tokens::provider(settings);
    let flow = if flags.paste || flags.browser {
        SignInFlow::Browser
    } else if flags.device {
        SignInFlow::Device
    } else {
        settings.flow
    };
    let set: TokenSet = match flow {
        SignInFlow::Device => {
            let code = keeper.oauth().start_device(provider).await?;
            println!(
                "To sign in {name} ({username}), open {} in a browser on any device and enter the code {}",
                code.verification_uri(),
                code.user_code()
            );
            println!(
                "Waiting for you to approve it (the code is valid for {} minutes)...",
                code.expires_in().as_secs().div_ceil(60)
            );
            keeper.oauth().finish_device(provider, &code).await?
        }
        SignInFlow::Browser => {
            let sign_in = BrowserSignIn::new(provider, !flags.paste).await?;
            println!(
                "To sign in {name} ({username}), open this URL in a browser:\n\n{}\n",
                sign_in.url()
            );
            if sign_in.listening() {
                println!(
                    "If the browser runs on this machine, that is all. If it runs on another machine, the last page will fail to load: copy the address it ended on and paste it here."
                );
            } else {
                println!(
                    "After you approve, the browser goes to an http://127.0.0.1 address that fails to load. Copy that whole address from the address bar and paste it here."
                );
            }
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            sign_in.finish(keeper.oauth(), provider, stdin).await?
        }
    };
    tokens::save_sign_in(&store, &owner, settings, &set).await?;
    let who = set.subject.as_deref().unwrap_or(username);
    println!("Signed in {name} as {who}.");
    println!("Granted scopes: {}", set.scopes.join(" "));
    if let Some(subject) = &set.subject
        && !subject.eq_ignore_ascii_case(username)
    {
        println!(
            "Note: the configured username is {username}, but you signed in as {subject}; the server will refuse the login unless they are the same mailbox."
        );
    }
    println!(
        "The tokens are stored in {}; mailferry refreshes them from now on.",
        config
            .daemon
            .state_dir
            .join(mailferry_store::DB_FILE)
            .display()
    );
    // The accounts that use this sign-in run now, if the service runs: a parked account
    // does not wait for its next interval.
    let users: Vec<String> = config
        .accounts
        .iter()
        .filter(|a| a.name == name || a.destination == name)
        .map(|a| a.name.clone())
        .collect();
    // Then it says how they went, so that the command that fixes an account also shows
    // that it is fixed (or what is still wrong: scopes, IMAP access switched off).
    let mut code = ExitCode::SUCCESS;
    if let Some(requests) = crate::state::wake(config, &store, &users).await? {
        println!("The service runs {} now...", users.join(", "));
        if !crate::admin::report_runs(&store, &users, &requests, crate::admin::RUN_WAIT).await? {
            code = crate::state::failed();
        }
    }
    store.close().await;
    Ok(code)
}
