//! `once`: every account (or one) once, with a summary and a progress bar.

use std::io::IsTerminal;
use std::process::ExitCode;

use mailferry_config::Config;
use mailferry_engine::{AccountReport, Observer, RunOptions, TokenKeeper};
use mailferry_store::Store;
use tokio_util::sync::CancellationToken;

use crate::state::failed;

/// `mailferry once [--account NAME] [--dry-run]`.
pub(crate) async fn command(
    path: &std::path::Path,
    config: &Config,
    account: Option<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    match account.as_deref().map(|n| (n, config.account(n))) {
        Some((name, None)) => {
            let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
            eprintln!(
                "mailferry: --account {name:?}: no such account in {}; known: {}",
                path.display(),
                known.join(", ")
            );
            return Ok(crate::state::bad_config());
        }
        Some((name, Some(a))) if !a.enabled => {
            eprintln!(
                "mailferry: account {name:?} is disabled (enabled = false): set enabled = true to run it"
            );
            return Ok(crate::state::bad_config());
        }
        _ => {}
    }
    // A dry run reads only: it runs beside the service, without the state's lock.
    let store = if dry_run {
        crate::state::open_shared(config).await?
    } else {
        crate::state::open_exclusive(config).await?
    };
    let tokens = TokenKeeper::new(store.clone(), config.daemon.io_timeout)?;
    let cancel = CancellationToken::new();
    tokio::spawn(crate::service::cancel_on_signal(cancel.clone()));
    if !dry_run {
        tokens.keepalive_logged(config).await;
    }
    let opts = RunOptions {
        account,
        dry_run,
        slice: None,
    };
    let code = once(config, &store, &tokens, opts, &cancel).await;
    store.close().await;
    Ok(code)
}

async fn once(
    config: &Config,
    store: &Store,
    tokens: &TokenKeeper,
    opts: RunOptions,
    cancel: &CancellationToken,
) -> ExitCode {
    let bar = Progress::new();
    let reports = mailferry_engine::run_once(config, store, tokens, &opts, &bar, cancel).await;
    bar.finish();
    for r in &reports {
        print_report(r, opts.dry_run);
    }
    if reports.iter().any(AccountReport::failed) {
        failed()
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn print_report(r: &AccountReport, dry_run: bool) {
    if dry_run {
        println!(
            "{}: {} would be delivered (dry run: nothing fetched, delivered or recorded)",
            r.account, r.new
        );
        for p in &r.preview {
            println!("  {}: {}", p.folder, p.count);
            for (date, from, subject) in &p.first {
                println!("    {date}  {from}  {subject}");
            }
            if p.count > p.first.len() as u64 {
                println!("    ... and {} more", p.count - p.first.len() as u64);
            }
        }
    } else {
        let c = &r.counts;
        let mut line = format!(
            "{}: fetched {}, delivered {}, skipped {}, failed {}",
            r.account, c.fetched, c.delivered, c.skipped, c.failed
        );
        if r.moved > 0 {
            line.push_str(&format!(", moved {}", r.moved));
        }
        if r.deleted > 0 {
            line.push_str(&format!(", deleted {}", r.deleted));
        }
        if r.found > 0 {
            line.push_str(&format!(
                " ({} found already delivered after an interrupted attempt)",
                r.found
            ));
        }
        if r.resent > 0 {
            line.push_str(&format!(
                " ({} re-sent after an interrupted attempt)",
                r.resent
            ));
        }
        println!("{line}");
    }
    for (what, problems) in [("deferred", &r.deferred), ("refused", &r.refused)] {
        for p in problems {
            let id = p
                .message_id
                .as_deref()
                .map_or(String::new(), |m| format!(" <{m}>"));
            println!("  {what} {} {}{id}: {}", p.folder, p.key, p.reason);
        }
    }
    if let Some(e) = &r.error {
        println!("  error: account {:?}: {}", r.account, e.message);
        if let Some(h) = &e.hint {
            println!("  hint: {h}");
        }
    }
}

/// A progress bar on a terminal; nothing otherwise.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Self { bar }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn planned(&self, account: &str, folder: &str, _messages: usize, bytes: u64) {
        self.bar.inc_length(bytes);
        self.bar.set_message(format!("{account}/{folder}"));
    }

    fn done(&self, _account: &str, bytes: u64) {
        self.bar.inc(bytes);
    }
}
