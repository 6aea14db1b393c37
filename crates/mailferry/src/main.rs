//! The `mailferry` command: parses the command line, sets up logging, loads the
//! configuration, opens the store, and hands over to the engine. Everything else lives in
//! the library crates.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailferry_config::Config;
use mailferry_engine::{RunOptions, TokenKeeper};
use mailferry_store::Store;
use tokio_util::sync::CancellationToken;

use tracing::warn;

mod admin;
mod once;
mod service;
use admin::{check, retry, run_now};
use once::once;
use service::{STOP_DEADLINE, cancel_on_signal, service};
mod auth;
mod init;
mod metrics;
mod notify;
mod page;
mod status;

/// Gathers mail from your other mailboxes into the one you read.
#[derive(Debug, Parser)]
#[command(name = "mailferry", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "MAILFERRY_CONFIG",
        default_value = "/etc/mailferry/mailferry.toml"
    )]
    config: PathBuf,
    /// Log as JSON lines instead of text (logs go to stderr; never secrets).
    #[arg(long, global = true, env = "MAILFERRY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as a service: fetch every account at its interval until stopped.
    Run,
    /// Fetch every account (or one) once, print a summary per account, and exit.
    Once {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Show what is new without fetching, delivering or recording anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the configuration file and exit.
    CheckConfig,
    /// Check each account (or NAME) step by step: DNS, TCP, TLS and certificate,
    /// capabilities, sign-in, login, folders; say what to fix. Exit 1 if something fails.
    Check {
        /// Only this account.
        name: Option<String>,
    },
    /// Show every account's state, last success, next run, counts, refused messages and
    /// last error with a hint. Works while the service runs. Exit 1 if an account needs you.
    Status {
        /// Print JSON, for scripts.
        #[arg(long, conflicts_with = "health")]
        json: bool,
        /// Only say whether the service is healthy (the rule of /healthz: no account
        /// parked, none without a success for three intervals); exit 1 if not. For
        /// container health checks.
        #[arg(long)]
        health: bool,
    },
    /// Sign in an account or destination that uses OAuth2, once; the tokens are stored and
    /// refreshed from then on. Works while the service runs.
    Auth {
        /// The account's or destination's name.
        name: String,
        /// Browser flow without the loopback listener: paste the URL the browser ends on.
        #[arg(long, conflicts_with = "device")]
        paste: bool,
        /// Use the browser flow (authorization code with PKCE and a loopback redirect).
        #[arg(long, conflicts_with = "device")]
        browser: bool,
        /// Use the device code flow.
        #[arg(long)]
        device: bool,
    },
    /// Ask the running service to run every enabled account (or NAME) now, its backoff
    /// reset, and say how each run went: after a fix (a password file, the configuration,
    /// IMAP switched on at the provider). The service reads the configuration again first
    /// if it changed. (SIGUSR1 to the service does the same for every account.)
    RunNow {
        /// Only this account.
        name: Option<String>,
        /// Return once the service has been asked, without waiting for the runs.
        #[arg(long)]
        no_wait: bool,
    },
    /// Return refused messages to the queue, after fixing what made the destination refuse
    /// them (an attachment policy, a size limit); the next run delivers them again.
    /// Works while the service runs.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["key", "refused"])))]
    Retry {
        /// Only this account's messages.
        #[arg(long)]
        account: Option<String>,
        /// Only this folder's messages.
        #[arg(long)]
        folder: Option<String>,
        /// One message: its UID, its UIDL or its Message-ID, as `status` lists it.
        key: Option<String>,
        /// Every refused message (of the account and folder, when given).
        #[arg(long)]
        refused: bool,
    },
    /// Write a first configuration (at --config) for one source and one destination, from
    /// flags or questions on a terminal; never over an existing file. Says what to run next.
    Init(init::Answers),
    /// Write the man page or a shell completion script to standard output (for packagers).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: Generated,
    },
}

/// What `mailferry generate` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Generated {
    /// The man page, mailferry(1), in roff.
    Man,
    /// Completions for bash.
    Bash,
    /// Completions for zsh.
    Zsh,
    /// Completions for fish.
    Fish,
}

/// Exit codes: 0 all good, 1 something failed (details printed), 2 bad configuration.
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate { what } = cli.command {
        return generate(what);
    }
    if let Command::Init(answers) = cli.command {
        return match init::run(&cli.config, answers) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("mailferry: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    init_logging(matches!(cli.command, Command::Run), cli.log_json);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        warn!("a TLS crypto provider was already installed");
    }
    let config = match load_for(&cli.command, &cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailferry: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The service logs the configuration's warnings; other commands print them after their
    // output, where they are read.
    let warnings = config.warnings.clone();
    let service = matches!(cli.command, Command::Run);
    if service {
        for w in &warnings {
            warn!("{w}");
        }
    }
    let code = main_with(cli, config);
    if !service {
        for w in &warnings {
            eprintln!("mailferry: warning: {w}");
        }
    }
    code
}

fn main_with(cli: Cli, config: Config) -> ExitCode {
    if matches!(cli.command, Command::CheckConfig) {
        println!(
            "{}: ok ({} account{}, {} destination{})",
            cli.config.display(),
            config.accounts.len(),
            if config.accounts.len() == 1 { "" } else { "s" },
            config.destinations.len(),
            if config.destinations.len() == 1 {
                ""
            } else {
                "s"
            },
        );
        return ExitCode::SUCCESS;
    }
    if let Command::Once {
        account: Some(name),
        ..
    } = &cli.command
        && config.account(name).is_none()
    {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        eprintln!(
            "mailferry: --account {name:?}: no such account in {}; known: {}",
            cli.config.display(),
            known.join(", ")
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailferry: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(run(cli.command, config, cli.config.clone()));
    // A read of the terminal (`mailferry auth`) may still block a thread; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailferry: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Loads the configuration with only the secrets `command` needs: none for `status`, the
/// named account's and its destination's for `check NAME`, `auth NAME` and
/// `once --account NAME`, all of them otherwise. A secret only the service can read (a
/// `LoadCredential=` file) then stops only the commands that need it.
fn load_for(
    command: &Command,
    path: &std::path::Path,
) -> Result<Config, mailferry_config::ConfigErrors> {
    use mailferry_config::SecretScope;
    let owner = match command {
        Command::Status { .. } | Command::Retry { .. } | Command::RunNow { .. } => {
            return mailferry_config::load_scoped(path, &SecretScope::None);
        }
        Command::Auth { name, .. }
        | Command::Check { name: Some(name) }
        | Command::Once {
            account: Some(name),
            ..
        } => name,
        _ => return mailferry_config::load(path),
    };
    let outline = mailferry_config::load_scoped(path, &SecretScope::None)?;
    let mut names = vec![owner.clone()];
    if let Some(a) = outline.account(owner) {
        names.push(a.destination.clone());
    }
    mailferry_config::load_scoped(path, &SecretScope::Only(names))
}

/// `mailferry generate`: the man page and shell completions, from the CLI's definition.
fn generate(what: Generated) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generated::Man => clap_mangen::Man::new(cmd).render(&mut out),
        Generated::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "mailferry", &mut out);
            Ok(())
        }
        Generated::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "mailferry", &mut out);
            Ok(())
        }
        Generated::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "mailferry", &mut out);
            Ok(())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailferry: cannot write: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn init_logging(service: bool, json: bool) {
    let default = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One JSON object per line, for log shippers.
        builder.json().with_current_span(true).init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        // journald adds its own timestamps.
        builder.with_ansi(false).without_time().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn run(command: Command, config: Config, path: PathBuf) -> anyhow::Result<ExitCode> {
    if let Command::Auth {
        name,
        paste,
        browser,
        device,
    } = &command
    {
        let flags = auth::Flags {
            paste: *paste,
            browser: *browser,
            device: *device,
        };
        return auth::run(&config, name, flags).await;
    }
    if let Command::Check { name } = &command {
        return check(&config, name.as_deref()).await;
    }
    if let Command::RunNow { name, no_wait } = &command {
        return run_now(&config, name.as_deref(), !no_wait).await;
    }
    if let Command::Retry {
        account,
        folder,
        key,
        ..
    } = &command
    {
        return retry(
            &config,
            account.as_deref(),
            folder.as_deref(),
            key.as_deref(),
        )
        .await;
    }
    if let Command::Status { json, health } = &command {
        if *health {
            return status::health(&config).await;
        }
        return status::run(&config, *json).await;
    }
    // A dry run reads only: it runs beside the service, without the state's lock.
    let store = if matches!(command, Command::Once { dry_run: true, .. }) {
        open_shared(&config).await?
    } else {
        Store::open(&config.daemon.state_dir)
            .await
            .with_context(|| state_context(&config))?
    };
    let tokens = TokenKeeper::new(store.clone(), config.daemon.io_timeout)?;
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let code = match command {
        Command::Once { account, dry_run } => {
            if let Some(a) = account.as_deref().and_then(|n| config.account(n))
                && !a.enabled
            {
                eprintln!(
                    "mailferry: account {:?} is disabled (enabled = false): set enabled = true to run it",
                    a.name
                );
                store.close().await;
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            if !dry_run {
                tokens.keepalive_logged(&config).await;
            }
            let opts = RunOptions {
                account,
                dry_run,
                slice: None,
            };
            once(&config, &store, &tokens, opts, &cancel).await
        }
        Command::Run => {
            let run = service(&path, config, &store, &tokens, &cancel);
            tokio::pin!(run);
            tokio::select! {
                () = &mut run => {}
                () = async { cancel.cancelled().await; tokio::time::sleep(STOP_DEADLINE).await } => {
                    warn!("the runs in progress did not stop within {STOP_DEADLINE:?}; exiting anyway (the ledger stays consistent)");
                }
            }
            store.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CheckConfig
        | Command::Generate { .. }
        | Command::Init(_)
        | Command::Retry { .. }
        | Command::RunNow { .. }
        | Command::Auth { .. }
        | Command::Status { .. }
        | Command::Check { .. } => ExitCode::SUCCESS,
    };
    store.close().await;
    Ok(code)
}

fn state_context(config: &Config) -> String {
    format!(
        "cannot open the state in {}",
        config.daemon.state_dir.display()
    )
}

/// Opens the state beside a running service (for `auth`, `status`, `check`).
pub(crate) async fn open_shared(config: &Config) -> anyhow::Result<Store> {
    Store::open_shared(&config.daemon.state_dir)
        .await
        .with_context(|| state_context(config))
}

/// Asks the running service to run `accounts` now: records the requests and sends the
/// service SIGUSR1. The requests' numbers (for `report_runs`), or `None` when no service
/// runs on this state.
pub(crate) async fn wake(
    config: &Config,
    store: &Store,
    accounts: &[String],
) -> anyhow::Result<Option<Vec<i64>>> {
    let Some(pid) = mailferry_store::service_pid(&config.daemon.state_dir) else {
        return Ok(None);
    };
    let requests = store.request_wakeup(accounts).await?;
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("the service's process id is not valid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).with_context(|| {
        format!("cannot signal the service (process {pid:?}); run this as the service's user")
    })?;
    Ok(Some(requests))
}
