//! Peak memory of a child process.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `cmd` to completion (stdout piped) and returns its output and its peak resident
/// memory (`VmHWM`), sampled every 20 ms, in bytes.
pub fn run_measuring_peak(mut cmd: Command) -> (std::process::Output, u64) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb: u64 = 0;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("output"), peak_kb * 1024)
}
