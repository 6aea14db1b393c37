//! What one pass of the bench measures (GNU time around the process), how it is printed,
//! and, over several rounds and two binaries, the summary that compares them.

use std::process::Command;

/// What GNU time measured of one process.
pub(crate) struct Timed {
    /// Wall seconds.
    pub(crate) secs: f64,
    /// Peak RSS in KiB.
    rss_kb: u64,
    /// CPU seconds in user space and in the kernel.
    user: f64,
    system: f64,
    /// Times the process slept (voluntary context switches) and minor page faults: counts
    /// that show a change of a few percent where this machine's CPU time does not.
    sleeps: f64,
    faults: f64,
}

/// Runs `cmd` under GNU time. `MAILFERRY_BENCH_WRAP` puts a profiler between the two
/// (`perf record -o /tmp/perf.data --`, `strace -c -f -o /tmp/syscalls`).
pub(crate) fn timed(cmd: &mut Command) -> Timed {
    let out_file = tempfile::NamedTempFile::new().expect("tempfile");
    let mut time = Command::new("/usr/bin/time");
    time.arg("-f")
        .arg("%e %M %U %S %w %R")
        .arg("-o")
        .arg(out_file.path());
    if let Ok(wrap) = std::env::var("MAILFERRY_BENCH_WRAP") {
        time.args(wrap.split_whitespace());
    }
    time.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            time.env(k, v);
        }
    }
    let status = time
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run /usr/bin/time (apt-get install time)");
    let text = std::fs::read_to_string(out_file.path()).expect("time output");
    let last = text.lines().last().unwrap_or_default();
    let mut parts = last.split_whitespace();
    let mut number = || {
        parts
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (secs, rss, user, system) = (number(), number(), number(), number());
    let (sleeps, faults) = (number(), number());
    // %M is a whole number of KiB.
    let rss_kb = format!("{rss:.0}").parse().unwrap_or(0);
    if !status.success() {
        println!("  (exit status {status})");
    }
    Timed {
        secs,
        rss_kb,
        user,
        system,
        sleeps,
        faults,
    }
}

pub(crate) fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1_000_000.0
}

pub(crate) fn report(who: &str, messages: usize, bytes: usize, t: &Timed) {
    let gb = bytes as f64 / 1e9;
    println!(
        "{who:>16}: {messages} messages in {:.1}s = {:.0} messages/s, {:.1} MB/s, peak RSS {:.1} MB (target 24 MB); CPU {:.2} s per GB (user {:.2} + system {:.2}; target 4); a message: {:.2} sleeps, {:.1} page faults",
        t.secs,
        messages as f64 / t.secs,
        mb(bytes) / t.secs,
        t.rss_kb as f64 / 1024.0,
        (t.user + t.system) / gb,
        t.user / gb,
        t.system / gb,
        t.sleeps / messages.max(1) as f64,
        t.faults / messages.max(1) as f64,
    );
}

/// One pass's figures, kept for [`summary`].
pub(crate) struct Pass {
    /// Index into the binaries compared.
    pub(crate) binary: usize,
    pub(crate) mode: &'static str,
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
    pub(crate) timed: Timed,
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

/// Per mode and binary: CPU per GB of every round in order and their median, sleeps a
/// message (median) and the largest peak RSS. Rounds alternate the binaries (every other
/// one in the other order), so a slow stretch of the machine falls on both.
pub(crate) fn summary(binaries: &[&std::path::Path], passes: &[Pass]) {
    println!("CPU per GB round by round (median), sleeps a message (median), largest peak RSS:");
    let mut modes: Vec<&str> = Vec::new();
    for p in passes {
        if !modes.contains(&p.mode) {
            modes.push(p.mode);
        }
    }
    for mode in modes {
        let mut first = true;
        for (b, binary) in binaries.iter().enumerate() {
            let mine: Vec<&Pass> = passes
                .iter()
                .filter(|p| p.mode == mode && p.binary == b)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let cpu: Vec<f64> = mine
                .iter()
                .map(|p| (p.timed.user + p.timed.system) / (p.bytes as f64 / 1e9))
                .collect();
            let sleeps = median(
                mine.iter()
                    .map(|p| p.timed.sleeps / p.messages.max(1) as f64)
                    .collect(),
            );
            let rss = mine.iter().map(|p| p.timed.rss_kb).max().unwrap_or(0);
            let rounds: Vec<String> = cpu.iter().map(|c| format!("{c:.2}")).collect();
            println!(
                "{:>16} {}: {} ({:.2}); {sleeps:.2} sleeps; {:.1} MB",
                if std::mem::take(&mut first) { mode } else { "" },
                binary.display(),
                rounds.join(" "),
                median(cpu.clone()),
                rss as f64 / 1024.0,
            );
        }
    }
}
