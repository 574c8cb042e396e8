//! Running gateway-agent (and other long-lived programs) as child processes.
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// A child process, stopped with SIGTERM (then SIGKILL) on drop, its stderr in a file.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Result<Process> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { name: name.to_string(), child: Some(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process already exited (with its log, to say why).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("{} exited ({status}); its log:\n{}", self.name, self.logs());
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and returns at once (see `wait_exit`).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }

    /// SIGKILL, as a crash would: no clean-up of any kind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL. Returns whether it exited by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        // A failing test shows what the process said (the test harness prints
        // a failed test's captured output, and only then).
        if std::thread::panicking() {
            let logs = self.logs();
            // Backtrace frames crowd out the lines that say what happened.
            let frame = |l: &&str| {
                let t = l.trim_start();
                t.starts_with("at ") || t.split_once(": ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
            };
            let lines: Vec<&str> = logs.lines().filter(|l| !frame(l)).collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            // The log's directory goes with the test: keep a copy to read whole.
            let kept = std::env::temp_dir().join(format!("sockgate-failed-{}-{}.log", self.name, std::process::id()));
            let _ = std::fs::write(&kept, &logs);
            eprintln!("--- the last {} lines of {} (whole log kept in {}) ---\n{}", tail.len(), self.name, kept.display(), tail.join("\n"));
        }
    }
}

/// Waits until `addr` accepts connections from inside `ns`.
pub fn wait_for_port(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())?;
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} did not accept connections within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `process`'s log contains `needle`.
pub fn wait_for_log(process: &mut Process, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if process.logs().contains(needle) {
            return Ok(());
        }
        process.ensure_running()?;
        if Instant::now() > deadline {
            bail!("{} did not log {needle:?} within {timeout:?}; its log:\n{}", process.name, process.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
