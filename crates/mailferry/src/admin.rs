//! `run-now`, `retry` and `check`: commands beside the service.

use std::process::ExitCode;

use mailferry_config::Config;
use mailferry_engine::TokenKeeper;

use crate::state::{bad_config, failed, open_shared, wake};

/// How long `run-now` and `auth` wait for the runs they started before leaving them to
/// `status`.
pub(crate) const RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `mailferry run-now [NAME] [--no-wait]`: the service runs the accounts now (reading the
/// configuration again first if it changed on disk), and unless `wait` is off this says
/// how each run went.
pub(crate) async fn run_now(
    config: &Config,
    name: Option<&str>,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let accounts: Vec<String> = match name.map(|n| (n, config.account(n))) {
        Some((n, None)) => {
            let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
            eprintln!(
                "mailferry: no account is named {n:?}; known: {}",
                known.join(", ")
            );
            return Ok(bad_config());
        }
        Some((n, Some(a))) if !a.enabled => {
            eprintln!(
                "mailferry: account {n:?} is disabled (enabled = false): set enabled = true, then `mailferry run-now {n}`"
            );
            return Ok(bad_config());
        }
        Some((n, Some(_))) => vec![n.to_owned()],
        None => config
            .accounts
            .iter()
            .filter(|a| a.enabled)
            .map(|a| a.name.clone())
            .collect(),
    };
    if accounts.is_empty() {
        eprintln!("mailferry: no account is enabled in the configuration");
        return Ok(bad_config());
    }
    let store = open_shared(config).await?;
    let read_before = store.config_load().await?.map(|l| l.serial);
    let Some(requests) = wake(config, &store, &accounts).await? else {
        store.close().await;
        eprintln!(
            "mailferry: the service is not running on {}; `mailferry once{}` runs now without it",
            config.daemon.state_dir.display(),
            name.map_or(String::new(), |n| format!(" --account {n}"))
        );
        return Ok(failed());
    };
    let mut code = ExitCode::SUCCESS;
    if wait {
        println!("The service runs {} now...", accounts.join(", "));
        if !report_runs(&store, &accounts, &requests, RUN_WAIT).await? {
            code = failed();
        }
        // The service read the file when it got the request; if it could not use it, the
        // runs above used the configuration it had, whatever was fixed on disk.
        if let Some(load) = store.config_load().await?
            && Some(load.serial) != read_before
            && let Some(e) = load.error
        {
            println!(
                "The service could not use the configuration as it is now, so it ran with the one it had:\n  {e}\n  Fix that (`mailferry check-config`, run as the service's user, shows it), then `mailferry run-now` again."
            );
            code = failed();
        }
    } else {
        println!(
            "The service runs {} now; `mailferry status` shows how it went.",
            accounts.join(", ")
        );
    }
    store.close().await;
    Ok(code)
}

/// Waits up to `limit` for the runs that answer `requests` (one per account, from
/// [`wake`]), and prints how each went: the run the request caused, never another one
/// that happened to end meanwhile (a push delivery, a run begun before the request).
/// `true` when every one ended without an error; a run still going at the limit is left
/// to `mailferry status`.
pub(crate) async fn report_runs(
    store: &mailferry_store::Store,
    accounts: &[String],
    requests: &[i64],
    limit: std::time::Duration,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut waiting: Vec<&String> = accounts.iter().collect();
    let mut all_ok = true;
    while !waiting.is_empty() {
        for run in store.answers(requests).await? {
            let Some(i) = waiting.iter().position(|a| **a == run.account) else {
                continue;
            };
            waiting.remove(i);
            let c = &run.counts;
            match &run.error {
                None => println!(
                    "{}: ran: {} delivered, {} already there, {} failed.",
                    run.account, c.delivered, c.skipped, c.failed
                ),
                Some(e) => {
                    all_ok = false;
                    println!(
                        "{}: the run failed: {e}\n  `mailferry status` says what to do.",
                        run.account
                    );
                }
            }
        }
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for a in waiting {
                println!(
                    "{a}: still running after {}; `mailferry status` shows how it went.",
                    humantime::format_duration(limit)
                );
            }
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(all_ok)
}

/// `mailferry retry`: refused messages back to the queue.
pub(crate) async fn retry(
    config: &Config,
    account: Option<&str>,
    folder: Option<&str>,
    key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if let Some(a) = account
        && config.account(a).is_none()
    {
        let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        eprintln!(
            "mailferry: --account {a:?}: no such account; known: {}",
            known.join(", ")
        );
        return Ok(bad_config());
    }
    let store = open_shared(config).await?;
    let n = store.retry_refused(account, folder, key).await?;
    store.close().await;
    if n == 0 {
        println!("no refused message matches; `mailferry status` lists them");
        return Ok(failed());
    }
    println!(
        "{n} refused message{} back in the queue: the account's next run delivers {} again",
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" },
    );
    Ok(ExitCode::SUCCESS)
}

/// `mailferry check [NAME]`.
pub(crate) async fn check(config: &Config, name: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(n) = name
        && config.account(n).is_none()
        && config.destination(n).is_none()
    {
        let known: Vec<_> = config
            .accounts
            .iter()
            .map(|a| a.name.as_str())
            .chain(config.destinations.iter().map(|d| d.name.as_str()))
            .collect();
        anyhow::bail!(
            "no account or destination is named {n:?}; known: {}",
            known.join(", ")
        );
    }
    let store = open_shared(config).await?;
    let tokens = TokenKeeper::new(store.clone(), config.daemon.io_timeout)?;
    let mut failed = false;
    let print = |findings: Vec<mailferry_engine::check::Finding>| {
        let mut failed = false;
        for f in findings {
            println!(
                "  {:<5} {}: {}",
                if f.ok { "ok" } else { "FAIL" },
                f.step,
                f.detail
            );
            if let Some(h) = &f.hint {
                println!("        hint: {h}");
            }
            failed |= !f.ok;
        }
        failed
    };
    for account in config
        .accounts
        .iter()
        .filter(|a| name.is_none_or(|n| n == a.name))
    {
        println!("{}:", account.name);
        failed |= print(mailferry_engine::check::account(config, account, &tokens).await);
    }
    // The way out too: every destination, or the one of the account (or the one) named.
    for dest in config.destinations.iter().filter(|d| {
        name.is_none_or(|n| {
            n == d.name || config.account(n).is_some_and(|a| a.destination == d.name)
        })
    }) {
        println!("destination {}:", dest.name);
        failed |= print(mailferry_engine::check::destination(config, dest, &tokens).await);
    }
    store.close().await;
    Ok(if failed {
        crate::state::failed()
    } else {
        ExitCode::SUCCESS
    })
}
