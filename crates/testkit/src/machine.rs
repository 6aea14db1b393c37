//! A throwaway machine with a real systemd as its PID 1 (`scripts/systemd-machine`): private
//! PID, mount, UTS, IPC and cgroup namespaces over a copy-on-write view of `/`, sharing the
//! host's network. Tests install the Debian package in it and start the unit the way a user
//! does; nothing they write reaches the host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A booted machine. Powered off (and its cgroup removed) on drop.
#[derive(Debug)]
pub struct Machine {
    pid: u32,
    launcher: Child,
    cgroup: String,
    /// A host directory visible at the same path inside the machine.
    pub share: TempDir,
}

/// What a command in the machine did.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-machine")
}

impl Machine {
    /// Boots a machine and waits until its systemd reports `running` (or `degraded`).
    ///
    /// # Errors
    /// Why it could not boot (no root, no cgroup2, a kernel that refuses the namespaces),
    /// with what the launcher printed.
    pub fn boot() -> Result<Self, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let cgroup = format!(
            "mailferry-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let share = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let log = share.path().join("console.log");
        let console = std::fs::File::create(&log).map_err(|e| format!("console log: {e}"))?;
        let console2 = console.try_clone().map_err(|e| e.to_string())?;
        let launcher = Command::new(script())
            .arg(&cgroup)
            .arg(share.path())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", script().display()))?;
        let mut m = Self {
            pid: 0,
            launcher,
            cgroup,
            share,
        };
        let said = |m: &Self| std::fs::read_to_string(&log).unwrap_or_default() + &m.cgroup;
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid_file = m.share.path().join("systemd.pid");
        while m.pid == 0 {
            if let Ok(Some(status)) = m.launcher.try_wait() {
                return Err(format!(
                    "the machine did not boot ({status}):\n{}",
                    said(&m)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("systemd did not start in 60 s:\n{}", said(&m)));
            }
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                m.pid = pid;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let state = m.sh("systemctl is-system-running || true").stdout;
            match state.trim() {
                "running" | "degraded" => return Ok(m),
                _ if Instant::now() > deadline => {
                    return Err(format!("systemd is {state:?} after 60 s:\n{}", said(&m)));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `/bin/sh -c script` inside the machine, as root, with a clean environment.
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8");
        c
    }

    /// Runs `script` with `/bin/sh -c` inside the machine, as root.
    pub fn sh(&self, script: &str) -> Ran {
        self.command(script)
            .output()
            .map(Ran::from)
            .unwrap_or_else(|e| panic!("nsenter: {e}"))
    }

    /// Starts `script` with `/bin/sh -c` inside the machine, as root, with its standard
    /// input, output and error piped.
    pub fn spawn(&self, script: &str) -> Child {
        self.command(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("nsenter: {e}"))
    }

    /// Runs `script` and panics with its output unless it succeeds; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let ran = self.sh(script);
        assert_eq!(ran.code, 0, "`{script}` failed in the machine: {ran:?}");
        ran.stdout
    }

    /// Waits until `script` succeeds, or panics after `limit` with its last output and
    /// the unit's journal.
    pub fn wait_until(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let ran = self.sh(script);
            if ran.code == 0 {
                return;
            }
            if Instant::now() > deadline {
                let journal = self.sh("journalctl --no-pager -n 60 -u mailferry").stdout;
                panic!("timed out waiting for {what}: {ran:?}\njournal:\n{journal}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SIGRTMIN+4: systemd powers off.
            let _ = Command::new("kill")
                .args(["-s", "SIGRTMIN+4", &self.pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.launcher.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
            let dir = Path::new(root).join(&self.cgroup);
            if dir.is_dir() {
                let _ = Command::new("find")
                    .arg(&dir)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .status();
            }
        }
    }
}
