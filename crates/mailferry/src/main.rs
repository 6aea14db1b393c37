//! The `mailferry` command: parses the command line, sets up logging, loads the
//! configuration, opens the store, and hands over to the engine. Everything else lives in
//! the library crates.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailferry_config::Config;
use tracing::warn;

mod admin;
mod auth;
mod http;
mod init;
mod metrics;
mod notify;
mod once;
mod page;
mod service;
mod state;
mod status;

/// Large message buffers get their pages in one call rather than a fault each
/// (crates/sys populate.rs).
#[global_allocator]
static ALLOCATOR: mailferry_sys::populate::Populating = mailferry_sys::populate::Populating;

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

fn main() -> ExitCode {
    // Before any thread or large buffer exists: memory of large messages goes back to
    // the system after use (crates/sys says why).
    mailferry_sys::tune();
    let Cli {
        config: path,
        log_json,
        command,
    } = Cli::parse();
    // Commands that need no configuration.
    let command = match command {
        Command::Generate { what } => return generate(what),
        Command::Init(answers) => return init::command(&path, answers),
        other => other,
    };
    let config = match load(&command, &path, log_json) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let service = matches!(command, Command::Run);
    let warnings = config.warnings.clone();
    let code = block_on(async {
        match command {
            Command::Run => service::command(&path, config).await,
            Command::Once { account, dry_run } => {
                once::command(&path, &config, account, dry_run).await
            }
            Command::CheckConfig => Ok(check_config(&path, &config)),
            Command::Status { json, health } => status::command(&config, json, health).await,
            Command::Auth {
                name,
                paste,
                browser,
                device,
            } => {
                let flags = auth::Flags {
                    paste,
                    browser,
                    device,
                };
                auth::run(&config, &name, flags).await
            }
            Command::Check { name } => admin::check(&config, name.as_deref()).await,
            Command::RunNow { name, no_wait } => {
                admin::run_now(&config, name.as_deref(), !no_wait).await
            }
            Command::Retry {
                account,
                folder,
                key,
                ..
            } => {
                admin::retry(
                    &config,
                    account.as_deref(),
                    folder.as_deref(),
                    key.as_deref(),
                )
                .await
            }
            // Answered above, before any configuration.
            Command::Generate { .. } | Command::Init(_) => Ok(ExitCode::SUCCESS),
        }
    });
    // The service logged the configuration's warnings as it started; other commands print
    // them after their output, where they are read.
    if !service {
        for w in &warnings {
            eprintln!("mailferry: warning: {w}");
        }
    }
    code
}

/// Logging, the TLS provider, and the configuration `command` needs; the exit code when
/// the configuration is bad.
fn load(command: &Command, path: &std::path::Path, log_json: bool) -> Result<Config, ExitCode> {
    let service = matches!(command, Command::Run);
    init_logging(service, log_json);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        warn!("a TLS crypto provider was already installed");
    }
    let config = load_for(command, path).map_err(|e| {
        eprintln!("mailferry: {e}");
        state::bad_config()
    })?;
    if service {
        for w in &config.warnings {
            warn!("{w}");
        }
    }
    Ok(config)
}

/// Runs `work` to its end on a runtime of one thread; its error is printed, exit code 1.
fn block_on(work: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailferry: cannot start the async runtime: {e}");
            return state::failed();
        }
    };
    let result = runtime.block_on(work);
    // A read of the terminal (`mailferry auth`) may still block a thread; do not wait for it.
    runtime.shutdown_background();
    result.unwrap_or_else(|e| {
        eprintln!("mailferry: {e:#}");
        state::failed()
    })
}

/// `mailferry check-config`: the file loaded; what it holds.
fn check_config(path: &std::path::Path, config: &Config) -> ExitCode {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "{}: ok ({} account{}, {} destination{})",
        path.display(),
        config.accounts.len(),
        plural(config.accounts.len()),
        config.destinations.len(),
        plural(config.destinations.len()),
    );
    ExitCode::SUCCESS
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
            state::failed()
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
