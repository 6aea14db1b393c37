//! What the commands share: the exit codes, opening the state directory, and waking the
//! running service.

use std::process::ExitCode;

use anyhow::Context as _;
use mailferry_config::Config;
use mailferry_store::Store;

/// Exit codes: 0 all good, 1 something failed (details printed), 2 bad configuration.
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_CONFIG: u8 = 2;

/// Exit code 1.
pub(crate) fn failed() -> ExitCode {
    ExitCode::from(EXIT_FAILED)
}

/// Exit code 2.
pub(crate) fn bad_config() -> ExitCode {
    ExitCode::from(EXIT_CONFIG)
}

fn context(config: &Config) -> String {
    format!(
        "cannot open the state in {}",
        config.daemon.state_dir.display()
    )
}

/// Opens the state for fetching and delivering, with its exclusive lock (`once`, `run`).
pub(crate) async fn open_exclusive(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.daemon.state_dir)
        .await
        .with_context(|| context(config))
}

/// Opens the state beside a running service (for `auth`, `status`, `check`).
pub(crate) async fn open_shared(config: &Config) -> anyhow::Result<Store> {
    Store::open_shared(&config.daemon.state_dir)
        .await
        .with_context(|| context(config))
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
